// A fleet sharing one key, against a running Ceph RGW (scripts/bench.sh fleet
// starts one): W writers in one process, each with its own spool, sink and
// thread, each a steady stream of R examples/s into the same monthly key for
// S seconds (flush_interval_ms=1000), then flush() and close(). Reported:
// offered and delivered rates (delivered = lines in the object by the end of
// the stream), the slowest final flush, lines lost or doubled, requests per
// 1,000 examples and bytes sent per appended byte. The object is read as
// readers read the month (BatchObjects::read_month: in the batches mode, the
// monthly file and the batch objects not folded into it yet; writers compact
// every 20 s there), and in the batches mode a last compaction follows.
//
// Environment: TDO_BENCH_ENDPOINT (http://127.0.0.1:7480), TDO_BENCH_ACCESS_KEY
// (testkey), TDO_BENCH_SECRET_KEY (testsecret), TDO_BENCH_ONE_COMPACTOR (1:
// only the first writer compacts, for stores without conditional writes). Arguments: [writers] (32)
// [seconds] (60) [examples/s per writer] (20) [s3_append_mode] (auto).
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "../unit/shared_sink.hpp"
#include "append/batch_objects.hpp"
#include "bench_example.hpp"
#include "bench_server.hpp"
#include "s3/curl_s3_sink.hpp"
#include "training_output/training_output.hpp"

namespace to = training_output;
using Clock = std::chrono::steady_clock;

namespace {

const std::string kKey = "training/metabolic_diabetes/2025/11/health_journal_2025_11.jsonl";

std::size_t count_lines(const std::string& body, std::map<std::string, int>* seen) {
    std::size_t n = 0;
    for (std::size_t at = 0; at < body.size();) {
        std::size_t end = body.find('\n', at);
        if (end == std::string::npos) end = body.size();
        if (seen) {
            // The narrative names the writer and the example: "... for wN example I shows ...".
            const std::size_t f = body.find(" for w", at);
            if (f != std::string::npos && f < end) {
                ++(*seen)[body.substr(f, body.find(" shows", f) - f)];
            }
        }
        ++n;
        at = end + 1;
    }
    return n;
}

// The month as a reader sees it (empty when there is none yet). A store
// that fails (s3rver answers 500 to listings while objects are deleted) is
// asked again.
std::string read_month(to::S3Sink& sink) {
    to::ObjectAppender appender(sink, to::AppendOptions{});
    to::BatchObjects batches(sink, appender, to::BatchObjectsOptions{});
    for (int attempt = 1;; ++attempt) {
        try {
            return batches.read_month(kKey);
        } catch (const std::exception& e) {
            std::fprintf(stderr, "read (attempt %d): %s\n", attempt, e.what());
            if (attempt == 20) return {};
            std::this_thread::sleep_for(std::chrono::milliseconds(500));
        }
    }
}

}  // namespace

int main(int argc, char** argv) {
    const int writers = argc > 1 ? std::atoi(argv[1]) : 32;
    const int seconds = argc > 2 ? std::atoi(argv[2]) : 60;
    const int rate = argc > 3 ? std::atoi(argv[3]) : 20;
    const std::string mode = argc > 4 ? argv[4] : "auto";
    // A store without conditional writes (s3rver) keeps no two compactors
    // apart: there only the first writer compacts.
    const bool one_compactor = bench::env("TDO_BENCH_ONE_COMPACTOR", "")[0] == '1';
    char tmpl[] = "/tmp/tdo-bench-fleet-XXXXXX";
    const std::string dir = ::mkdtemp(tmpl);
    const std::string bucket = bench::make_bucket("fleet");
    struct Writer {
        std::unique_ptr<to::CurlS3Sink> sink;
        std::unique_ptr<to::TrainingOutput> out;
        double final_flush = 0;
        std::uint64_t appended = 0;
        std::string error;
    };
    std::vector<Writer> fleet(writers);
    for (int w = 0; w < writers; ++w) {
        fleet[w].sink = std::make_unique<to::CurlS3Sink>(bench::sink_options(bucket));
        to::WriterComponents parts;
        parts.sink = std::make_unique<tdo_test::SharedSink>(*fleet[w].sink);
        const std::string config = bench::writer_config(
            bucket, dir + "/w" + std::to_string(w),
            ",\"dedup_store\":\"memory\",\"log_level\":\"warning\",\"flush_interval_ms\":1000,"
            "\"flush_timeout_ms\":120000,\"s3_append_mode\":\"" +
                mode + "\",\"s3_compaction_interval_seconds\":" + (w == 0 || !one_compactor ? "20" : "0"));
        fleet[w].out = std::make_unique<to::TrainingOutput>(to::Config::from_json(config), std::move(parts));
    }
    std::printf("%d writers x %d examples/s x %d s into one key (s3_append_mode %s), flush_interval_ms 1000\n", writers,
                rate, seconds, mode.c_str());
    std::fflush(stdout);
    const auto start = Clock::now();
    std::vector<std::thread> threads;
    for (int w = 0; w < writers; ++w) {
        threads.emplace_back([&, w] {
            Writer& me = fleet[w];
            try {
                const auto period = std::chrono::microseconds(1000000 / rate);
                // Spread over the first second, so that writers do not start in step.
                const auto t0 = start + std::chrono::microseconds(1000000LL * w / writers);
                for (int i = 0; i < rate * seconds; ++i) {
                    std::this_thread::sleep_until(t0 + period * i);
                    me.out->generate(bench::narrative("w" + std::to_string(w), i), bench::kMessage, bench::kResult);
                }
                std::this_thread::sleep_until(start + std::chrono::seconds(seconds) + std::chrono::seconds(1));
                const auto f0 = Clock::now();
                me.out->flush();
                me.final_flush = std::chrono::duration<double>(Clock::now() - f0).count();
                me.appended = me.out->stats().bytes_appended;
                me.out->close();
            } catch (const std::exception& e) {
                me.error = e.what();
            }
        });
    }
    // The object 10 s in and by the end of the stream: the rate delivered
    // in the steady state (offered = delivered when the key keeps up).
    to::CurlS3Sink reader(bench::sink_options(bucket));
    const int warmup = std::min(10, seconds / 2);
    std::this_thread::sleep_until(start + std::chrono::seconds(warmup));
    const std::size_t delivered_early = count_lines(read_month(reader), nullptr);
    std::this_thread::sleep_until(start + std::chrono::seconds(seconds) + std::chrono::seconds(1));
    const std::size_t delivered_during = count_lines(read_month(reader), nullptr);
    for (auto& t : threads) t.join();
    std::map<std::string, int> seen;
    const std::size_t total = count_lines(read_month(reader), &seen);
    std::size_t doubled = 0;
    for (const auto& [example, n] : seen) doubled += n > 1;
    const std::size_t offered = static_cast<std::size_t>(writers) * rate * seconds;
    double slowest = 0;
    std::uint64_t requests = 0, sent = 0, appended = 0;
    int errors = 0;
    for (auto& w : fleet) {
        slowest = std::max(slowest, w.final_flush);
        requests += w.sink->stats().requests;
        sent += w.sink->stats().bytes_sent;
        appended += w.appended;
        if (!w.error.empty()) {
            ++errors;
            std::fprintf(stderr, "writer: %s\n", w.error.c_str());
        }
    }
    std::printf("  offered %.0f examples/s; delivered from %d s to the end %.0f examples/s (%zu of %zu by the end)\n",
                double(offered) / seconds, warmup,
                double(delivered_during - std::min(delivered_during, delivered_early)) / (seconds + 1 - warmup),
                delivered_during, offered);
    std::printf("  slowest final flush %.2f s; lines in the object %zu: lost %zu, doubled %zu; writer errors %d\n",
                slowest, total, offered - std::min(offered, seen.size()), doubled, errors);
    std::printf("  requests per 1,000 examples %.1f; bytes sent per appended byte %.3f\n",
                1000.0 * double(requests) / double(offered),
                double(sent) / double(std::max<std::uint64_t>(appended, 1)));
    fleet.clear();
    bool compacted = true;
    if (mode == "batches") {
        // What is left to fold, then the seed's view: the monthly file alone.
        to::ObjectAppender appender(reader, to::AppendOptions{});
        to::BatchObjectsOptions bo;
        bo.compaction_lease_wait = std::chrono::milliseconds(60000);
        to::BatchObjects batches(reader, appender, bo);
        const auto c0 = Clock::now();
        to::CompactionResult r;
        for (int attempt = 1; attempt <= 10; ++attempt) {
            try {
                r = batches.compact(kKey);
                break;
            } catch (const std::exception& e) {
                std::fprintf(stderr, "compaction (attempt %d): %s\n", attempt, e.what());
                std::this_thread::sleep_for(std::chrono::milliseconds(500));
            }
        }
        const auto file = reader.get(kKey);
        std::map<std::string, int> in_file;
        const std::size_t lines = file.ok() ? count_lines(file.body, &in_file) : 0;
        compacted = lines == offered && in_file.size() == offered;
        std::printf(
            "  last compaction: %llu batch objects in %.2f s; the monthly file alone: %zu lines, %zu distinct\n",
            static_cast<unsigned long long>(r.batches), std::chrono::duration<double>(Clock::now() - c0).count(), lines,
            in_file.size());
    }
    std::string cleanup = "rm -rf " + dir;
    const bool ok = errors == 0 && seen.size() == offered && doubled == 0 && total == offered && compacted;
    return std::system(cleanup.c_str()) == 0 && ok ? 0 : 1;
}
