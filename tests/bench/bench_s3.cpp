// End-to-end S3 benchmark against a running server (scripts/bench.sh starts
// Ceph RGW for it):
//   1. appending to an object above 5 MiB: bytes sent per appended byte and
//      requests per 1,000 examples;
//   2. examples/s with 4 writer processes appending to one key, from the first
//      generate() to every line in the object.
//
// Environment: TDO_BENCH_ENDPOINT (http://127.0.0.1:7480), TDO_BENCH_ACCESS_KEY
// (testkey), TDO_BENCH_SECRET_KEY (testsecret). Arguments: [examples per
// writer] (default 5000) [rounds of 1,000 for part 1] (default 5).
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "../unit/shared_sink.hpp"
#include "bench_example.hpp"
#include "bench_server.hpp"
#include "s3/curl_s3_sink.hpp"
#include "training_output/training_output.hpp"

namespace to = training_output;
using Clock = std::chrono::steady_clock;

namespace {

const std::string kKey = "training/metabolic_diabetes/2025/11/health_journal_2025_11.jsonl";

std::string writer_config(const std::string& bucket, const std::string& dir) {
    return bench::writer_config(bucket, dir,
                                ",\"dedup_store\":\"memory\",\"log_level\":\"warning\",\"flush_interval_ms\":60000,"
                                "\"flush_max_bytes\":67108864");
}

}  // namespace

int main(int argc, char** argv) {
    const int per_writer = argc > 1 ? std::atoi(argv[1]) : 5000;
    const int rounds = argc > 2 ? std::atoi(argv[2]) : 5;
    char tmpl[] = "/tmp/tdo-bench-XXXXXX";
    const std::string dir = ::mkdtemp(tmpl);

    // 1. Appending to an object above 5 MiB.
    {
        const std::string bucket = bench::make_bucket("append");
        to::CurlS3Sink sink(bench::sink_options(bucket));
        std::string big;
        std::mt19937 gen(1);
        while (big.size() < (6u << 20))
            big += "{\"seed\":" + std::to_string(gen()) + ",\"pad\":\"" + std::string(200, 'x') + "\"}\n";
        if (!sink.put(kKey, big, to::ObjectAttributes{}, to::WriteConditions{}).ok()) return 1;
        const auto caps = sink.capabilities();
        to::WriterComponents parts;
        parts.sink = std::make_unique<tdo_test::SharedSink>(sink);
        to::TrainingOutput writer(to::Config::from_json(writer_config(bucket, dir + "/a")), std::move(parts));
        std::uint64_t appended = 0, sent = 0, requests = 0;
        for (int r = 0; r < rounds; ++r) {
            auto before = sink.stats();
            auto bytes_before = writer.stats().bytes_appended;
            for (int i = 0; i < 1000; ++i)
                writer.generate(bench::narrative("round" + std::to_string(r), i), bench::kMessage, bench::kResult);
            writer.flush();
            auto after = sink.stats();
            appended += writer.stats().bytes_appended - bytes_before;
            sent += after.bytes_sent - before.bytes_sent;
            requests += after.requests - before.requests;
        }
        auto head = sink.head(kKey);
        std::printf("append above 5 MiB (%s; conditional Complete: %s):\n", sink.describe().c_str(),
                    caps.conditional_complete ? "yes" : "no, lease");
        std::printf("  %d rounds of 1,000 examples, %.0f bytes per example, object now %.1f MiB\n", rounds,
                    double(appended) / (rounds * 1000.0), double(head.size) / (1 << 20));
        std::printf("  bytes sent per appended byte: %.3f\n", double(sent) / double(appended));
        std::printf("  requests per 1,000 examples:  %.1f\n", double(requests) / rounds);
    }

    // 2. Four writer processes, one key.
    {
        const std::string bucket = bench::make_bucket("writers");
        const auto start = Clock::now();
        std::vector<pid_t> pids;
        for (int w = 0; w < 4; ++w) {
            pid_t pid = ::fork();
            if (pid == 0) {
                int code = 0;
                try {
                    to::TrainingOutput writer(
                        to::Config::from_json(writer_config(bucket, dir + "/w" + std::to_string(w))));
                    for (int i = 0; i < per_writer; ++i) {
                        writer.generate(bench::narrative("writer" + std::to_string(w), i), bench::kMessage,
                                        bench::kResult);
                    }
                    writer.flush();
                    writer.close();
                } catch (const std::exception& e) {
                    std::fprintf(stderr, "writer %d: %s\n", w, e.what());
                    code = 1;
                }
                std::_Exit(code);
            }
            pids.push_back(pid);
        }
        bool ok = true;
        for (pid_t pid : pids) {
            int status = 0;
            ::waitpid(pid, &status, 0);
            ok = ok && WIFEXITED(status) && WEXITSTATUS(status) == 0;
        }
        const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
        to::CurlS3Sink sink(bench::sink_options(bucket));
        auto g = sink.get(kKey);
        std::size_t lines = 0;
        for (char c : g.body) lines += c == '\n';
        std::printf("4 writer processes x %d examples into one key:\n", per_writer);
        std::printf("  %zu lines in the object (%s), %.2f s, %.0f examples/s\n", lines,
                    lines == static_cast<std::size_t>(4 * per_writer) && ok ? "all" : "MISSING LINES", seconds,
                    4.0 * per_writer / seconds);
        if (!ok || lines != static_cast<std::size_t>(4 * per_writer)) return 1;
    }
    std::string cleanup = "rm -rf " + dir;
    return std::system(cleanup.c_str()) == 0 ? 0 : 1;
}
