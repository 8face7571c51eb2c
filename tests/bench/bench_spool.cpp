// What a processor's thread pays per generate_training_output() call, now
// that the call only formats, hashes, claims and writes one spool record:
//   latency   p50 / p99 / p99.9 / max of single calls with S3 healthy (the
//             endpoint in TDO_BENCH_ENDPOINT; scripts/bench.sh starts RGW) and
//             with S3 down (a closed port), spool_fsync=interval;
//   throughput  examples/s from one thread through the C++ API and the C ABI,
//             memory dedup store, local directory (the flusher appends on the
//             other core). ctypes: tests/bench/bench_ctypes.py.
// Arguments: [latency calls] (default 20000) [throughput calls] (200000)
// [spool_fsync for the throughput runs] (interval) [rounds] (5).
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "bench_example.hpp"
#include "bench_server.hpp"
#include "format/formatter.hpp"
#include "s3/curl_s3_sink.hpp"
#include "training_output.h"
#include "training_output/training_output.hpp"

namespace to = training_output;
using Clock = std::chrono::steady_clock;

namespace {

std::string temp_dir() {
    char tmpl[] = "/tmp/tdo-bench-spool-XXXXXX";
    return ::mkdtemp(tmpl);
}

// The example texts, made before the clock starts.
std::vector<std::string> narratives(const std::string& who, int n) {
    std::vector<std::string> out;
    out.reserve(static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i) out.push_back(bench::narrative(who, i));
    return out;
}

void latency(const char* what, const std::string& config, int calls) {
    if (calls <= 0) return;
    const auto texts = narratives(what, calls);
    to::TrainingOutput writer(to::Config::from_json(config));
    std::vector<double> us;
    us.reserve(static_cast<std::size_t>(calls));
    for (int i = 0; i < calls; ++i) {
        const auto t0 = Clock::now();
        writer.generate(texts[static_cast<std::size_t>(i)], bench::kMessage, bench::kResult);
        us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
        // A processor writes an example after each record it processed; pace
        // the calls a little so that the flusher's work is spread among them.
        if (i % 64 == 63) ::usleep(200);
    }
    std::sort(us.begin(), us.end());
    auto pct = [&](double p) { return us[std::min(us.size() - 1, static_cast<std::size_t>(p * us.size()))]; };
    const auto s = writer.stats();
    std::printf(
        "latency, S3 %-8s %d calls: p50 %.1f us  p99 %.1f us  p99.9 %.1f us  max %.0f us  "
        "(appended %llu, pending %llu)\n",
        what, calls, pct(0.50), pct(0.99), pct(0.999), us.back(), static_cast<unsigned long long>(s.lines_appended),
        static_cast<unsigned long long>(s.pending_lines));
    std::fflush(stdout);
    try {
        writer.close();
    } catch (const to::Error& e) {
        // S3 down: the lines stay spooled; the directory goes with the run.
        std::printf("  %s\n", e.what());
    }
}

}  // namespace

int main(int argc, char** argv) {
    const int latency_calls = argc > 1 ? std::atoi(argv[1]) : 20000;
    const int throughput_calls = argc > 2 ? std::atoi(argv[2]) : 200000;
    const std::string fsync = argc > 3 ? argv[3] : "interval";
    const int rounds = argc > 4 ? std::max(1, std::atoi(argv[4])) : 5;
    const std::string dir = temp_dir();
    const std::string example = bench::narrative("size", 0);

    // Latency with S3 healthy and down.
    const std::string endpoint = bench::env("TDO_BENCH_ENDPOINT", "");
    if (!endpoint.empty()) {
        const std::string bucket = bench::make_bucket("spool");
        latency(
            "healthy",
            bench::writer_config(bucket, dir + "/healthy",
                                 ",\"dedup_store\":\"memory\",\"flush_interval_ms\":1000,\"flush_timeout_ms\":120000"),
            latency_calls);
    }
    latency("down",
            "{\"s3_endpoint_url\":\"http://127.0.0.1:9\",\"s3_bucket_name\":\"b\",\"s3_access_key\":\"k\","
            "\"s3_secret_key\":\"s\",\"s3_conditional_writes\":\"true\",\"output_dir\":\"" +
                dir +
                "/down\",\"dedup_store\":\"memory\",\"flush_interval_ms\":1000,\"flush_timeout_ms\":1000,\"log_level\":"
                "\"off\"}",
            latency_calls);

    // Throughput from one thread, local directory, memory dedup store: each
    // API once a round, in alternating order, each run in a fresh directory
    // after sync() (so that writing back what an earlier run left does not
    // fall on it); the median of the rounds.
    const auto texts = narratives("throughput", throughput_calls);
    // TDO_BENCH_EXTRA: more configuration members (",\"redact_phi\":false").
    const std::string common = "\"dedup_store\":\"memory\",\"directory_fsync\":false,\"spool_fsync\":\"" + fsync +
                               "\"" + bench::env("TDO_BENCH_EXTRA", "") + "}";
    auto cpp_run = [&](const std::string& out) {
        to::TrainingOutput writer(to::Config::from_json("{\"output_dir\":\"" + out + "\"," + common));
        const auto t0 = Clock::now();
        for (const auto& t : texts) writer.generate(t, bench::kMessage, bench::kResult);
        const double s = std::chrono::duration<double>(Clock::now() - t0).count();
        writer.close();
        return throughput_calls / s;
    };
    auto c_run = [&](const std::string& out) {
        tdo_writer* w = nullptr;
        const std::string config = "{\"output_dir\":\"" + out + "\"," + common;
        if (tdo_writer_open(&w, config.c_str()) != TDO_OK) {
            std::fprintf(stderr, "%s\n", tdo_last_error());
            std::exit(1);
        }
        const auto t0 = Clock::now();
        int bad = 0;
        for (const auto& t : texts)
            bad += generate_training_output(w, t.c_str(), bench::kMessage, bench::kResult) != TDO_WRITTEN;
        const double s = std::chrono::duration<double>(Clock::now() - t0).count();
        tdo_writer_close(w);
        if (bad != 0) {
            std::fprintf(stderr, "%d calls did not write\n", bad);
            std::exit(1);
        }
        return throughput_calls / s;
    };
    std::vector<double> cpp_rates, c_rates;
    for (int round = 0; round < rounds; ++round) {
        for (int k = 0; k < 2; ++k) {
            const bool c_abi = (round + k) % 2 == 1;
            const std::string out = dir + "/round-" + std::to_string(round) + (c_abi ? "-c" : "-cpp");
            ::sync();
            (c_abi ? c_rates : cpp_rates).push_back(c_abi ? c_run(out) : cpp_run(out));
            std::string cleanup = "rm -rf " + out;
            if (std::system(cleanup.c_str()) != 0) return 1;
        }
    }
    auto report = [&](const char* api, std::vector<double> rates) {
        std::printf("throughput, %-9s (spool_fsync=%s): %d calls a run, %d runs:", api, fsync.c_str(), throughput_calls,
                    rounds);
        for (double r : rates) std::printf(" %.0f", r);
        std::sort(rates.begin(), rates.end());
        std::printf(" examples/s; median %.0f\n", rates[rates.size() / 2]);
    };
    report("C++ API", cpp_rates);
    report("C ABI", c_rates);
    std::printf("line size: %zu bytes\n", [&] {
        to::TrainingDataFormatter f;
        return f.format_json(example, bench::kMessage, bench::kResult).line.size();
    }());
    std::string cleanup = "rm -rf " + dir;
    return std::system(cleanup.c_str()) == 0 ? 0 : 1;
}
