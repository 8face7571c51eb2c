// A compaction of a month with N batch objects (s3_append_mode=batches),
// against a running Ceph RGW (scripts/bench.sh compaction starts one): the
// batch objects are written as writers write them (their own spools' names,
// 8 lines each), then one compaction folds them into the monthly file while
// a reader reads the month over and over (BatchObjects::read_month).
// Reported: the compaction's time and requests by kind, and what the reader
// saw: how many reads, how long each took, and whether every one of them had
// every line exactly once.
//
// Environment: TDO_BENCH_ENDPOINT (http://127.0.0.1:7480), TDO_BENCH_ACCESS_KEY
// (testkey), TDO_BENCH_SECRET_KEY (testsecret). Arguments: [batch objects]
// (10000) [writers' spools] (100).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "append/batch_objects.hpp"
#include "bench_server.hpp"
#include "s3/curl_s3_sink.hpp"

namespace to = training_output;
using Clock = std::chrono::steady_clock;

namespace {

const std::string kKey = "training/metabolic_diabetes/2025/11/health_journal_2025_11.jsonl";
constexpr int kLinesPerBatch = 8;

std::string line(int batch, int i) {
    return "{\"instruction\":\"Summarize the glucose readings.\",\"input\":\"batch " + std::to_string(batch) +
           " line " + std::to_string(i) + "\",\"output\":\"Glucose stayed between 90 and 140 mg/dL over the day, " +
           "with one post-meal peak; no readings below 70 mg/dL.\"}\n";
}

std::string spool_id(int s) {
    char buf[33];
    std::snprintf(buf, sizeof buf, "%032x", s + 1);
    return buf;
}

bool every_line_once(const std::string& body, std::size_t expected) {
    std::set<std::string> seen;
    std::size_t n = 0;
    for (std::size_t at = 0; at < body.size();) {
        std::size_t end = body.find('\n', at);
        if (end == std::string::npos) end = body.size();
        seen.insert(body.substr(at, end - at));
        ++n;
        at = end + 1;
    }
    return n == expected && seen.size() == expected;
}

}  // namespace

int main(int argc, char** argv) {
    const int objects = argc > 1 ? std::atoi(argv[1]) : 10000;
    const int spools = argc > 2 ? std::atoi(argv[2]) : 100;
    const std::string bucket = bench::make_bucket("compaction");
    to::CurlS3Sink writer(bench::sink_options(bucket));
    to::ObjectAppender writer_appender(writer, to::AppendOptions{});
    to::BatchObjects batches(writer, writer_appender, to::BatchObjectsOptions{});
    // The batch objects, 16 at a time.
    const auto w0 = Clock::now();
    std::atomic<int> next{0}, failed{0};
    std::vector<std::thread> pool;
    for (int t = 0; t < 16; ++t) {
        pool.emplace_back([&] {
            for (int b; (b = next++) < objects;) {
                std::string body;
                for (int i = 0; i < kLinesPerBatch; ++i) body += line(b, i);
                const int spool = b % spools;
                try {
                    batches.land(
                        kKey, to::batch_objects::key(kKey, spool_id(spool), 1 + std::uint64_t(b / spools) * 100), body);
                } catch (const std::exception& e) {
                    if (failed++ == 0) std::fprintf(stderr, "land: %s\n", e.what());
                }
            }
        });
    }
    for (auto& t : pool) t.join();
    const std::size_t expected = static_cast<std::size_t>(objects) * kLinesPerBatch;
    std::printf("%d batch objects (%d lines, %d spools) written in %.1f s\n", objects, objects * kLinesPerBatch, spools,
                std::chrono::duration<double>(Clock::now() - w0).count());

    // A reader, reading the month over and over while the compaction runs.
    to::CurlS3Sink reader_sink(bench::sink_options(bucket));
    to::ObjectAppender reader_appender(reader_sink, to::AppendOptions{});
    to::BatchObjects reader(reader_sink, reader_appender, to::BatchObjectsOptions{});
    const bool before_ok = every_line_once(reader.read_month(kKey), expected);
    std::atomic<bool> done{false};
    int reads = 0, bad_reads = 0, read_errors = 0;
    double slowest_read = 0, total_read = 0;
    std::thread reading([&] {
        while (!done) {
            const auto r0 = Clock::now();
            try {
                if (!every_line_once(reader.read_month(kKey), expected)) ++bad_reads;
            } catch (const std::exception& e) {
                if (read_errors++ == 0) std::fprintf(stderr, "read: %s\n", e.what());
            }
            const double took = std::chrono::duration<double>(Clock::now() - r0).count();
            slowest_read = std::max(slowest_read, took);
            total_read += took;
            ++reads;
        }
    });

    to::CurlS3Sink compactor_sink(bench::sink_options(bucket));
    to::ObjectAppender compactor_appender(compactor_sink, to::AppendOptions{});
    to::BatchObjects compactor(compactor_sink, compactor_appender, to::BatchObjectsOptions{});
    const auto s0 = compactor_sink.stats();
    const auto c0 = Clock::now();
    to::CompactionResult r;
    std::string error;
    try {
        r = compactor.compact(kKey);
    } catch (const std::exception& e) {
        error = e.what();
    }
    const double took = std::chrono::duration<double>(Clock::now() - c0).count();
    const auto s1 = compactor_sink.stats();
    // One more read after it.
    while (reads < 1) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    done = true;
    reading.join();
    const auto file = reader_sink.get(kKey);
    const bool file_ok = file.ok() && every_line_once(file.body, expected);
    to::ListPage page;
    reader_sink.list(to::batch_objects::prefix(kKey), "", page);

    std::printf("compaction: %.2f s, %llu folds, %llu batch objects, %.1f MB appended, %llu removed%s%s\n", took,
                static_cast<unsigned long long>(r.folds), static_cast<unsigned long long>(r.batches),
                double(r.bytes) / 1e6, static_cast<unsigned long long>(r.deleted),
                error.empty() ? "" : "; error: ", error.c_str());
    std::printf("  requests %llu (%.2f per batch object), %.1f MB sent\n",
                static_cast<unsigned long long>(s1.requests - s0.requests),
                double(s1.requests - s0.requests) / std::max(1, objects), double(s1.bytes_sent - s0.bytes_sent) / 1e6);
    std::printf(
        "readers: before it, every line once: %s; during it: %d reads (%.2f s average, %.2f s slowest), "
        "%d with a line lost or twice, %d failed\n",
        before_ok ? "yes" : "NO", reads, total_read / std::max(1, reads), slowest_read, bad_reads, read_errors);
    std::printf("after it: the monthly file alone has every line once: %s; batch objects left: %zu\n",
                file_ok ? "yes" : "NO", page.objects.size());
    return error.empty() && failed == 0 && before_ok && bad_reads == 0 && read_errors == 0 && file_ok &&
                   page.objects.empty()
               ? 0
               : 1;
}
