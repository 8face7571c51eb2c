// The configuration every user gets first: {"output_dir": DIR} and nothing
// else (SQLite dedup file, local directory with fsync, PHI redaction on,
// spool_fsync=interval), on the disk DIR is on. Each figure names its
// configuration; those that are not the default say so.
//
//   tdo_bench_default DIR throughput [CALLS] [ROUNDS] [EXTRA]
//       one thread, CALLS distinct ~1.6 KB examples, generate() from the
//       first call until close() returned (every line in its file, fsynced);
//       EXTRA: more configuration members (",\"dedup_store\":\"memory\"")
//   tdo_bench_default DIR threads THREADS [CALLS]
//       THREADS threads sharing one writer, CALLS examples in all
//   tdo_bench_default DIR processes PROCESSES [CALLS]
//       PROCESSES processes, each with its own writer on the same DIR
//   tdo_bench_default DIR quiet [EXAMPLES]
//       a quiet service: one example, then flush(), EXAMPLES times: calls/s and
//       bytes written to disk per example (/proc/self/io write_bytes)
//   tdo_bench_default DIR duplicates [CALLS]
//       CALLS examples, flush(), then the same CALLS again (a redelivery):
//       duplicate calls/s and bytes written per duplicate call
//   tdo_bench_default DIR rerun [CALLS]
//       CALLS examples in one process, closed; then a new writer (a re-run after
//       a crash or Ctrl-C) gets the same CALLS: calls/s of the re-run
//   tdo_bench_default DIR prefilled [PREFILL] [CALLS]
//       throughput of CALLS new examples into a dedup store that already holds
//       PREFILL examples, against an empty store in the same run
//   tdo_bench_default DIR idle [WRITERS]
//       WRITERS idle writers in one process: resident memory and threads
// TDO_BENCH_CONFIG=',"dedup_store":"log"' adds keys to every writer's
// configuration (the output says so: the figures are then not the default's).
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "bench_example.hpp"
#include "training_output.h"
#include "training_output/training_output.hpp"

namespace to = training_output;
using Clock = std::chrono::steady_clock;

namespace {

std::string g_dir;

std::vector<std::string> narratives(const std::string& who, int n) {
    std::vector<std::string> out;
    out.reserve(static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i) out.push_back(bench::narrative(who, i));
    return out;
}

// A fresh output directory under DIR.
std::string fresh(const std::string& name) {
    const std::string d = g_dir + "/" + name;
    if (std::system(("rm -rf '" + d + "'").c_str()) != 0) std::exit(1);
    return d;
}

// TDO_BENCH_CONFIG: more keys for every writer (",\"dedup_store\":\"log\""):
// the figures are then not the default configuration's, and say so.
std::string config_extra() {
    const char* extra = std::getenv("TDO_BENCH_CONFIG");
    return extra ? extra : "";
}

std::string config(const std::string& out, const std::string& extra = "") {
    return "{\"output_dir\":\"" + out + "\"" + extra + config_extra() + "}";
}

// Bytes this process (all its threads) caused to be written to disk so far.
std::uint64_t write_bytes() {
    std::ifstream in("/proc/self/io");
    std::string key;
    std::uint64_t value = 0;
    while (in >> key >> value) {
        if (key == "write_bytes:") return value;
    }
    return 0;
}

// A number field of /proc/self/status ("VmRSS:" in KiB, "Threads:"); 0 when absent.
long status_field(const std::string& name) {
    std::ifstream in("/proc/self/status");
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind(name, 0) == 0) return std::atol(line.c_str() + name.size());
    }
    return 0;
}

void check(int rc, int want, const char* what) {
    if (rc != want) {
        std::fprintf(stderr, "%s: %s (%d): %s\n", what, tdo_status_name(rc), rc, tdo_last_error());
        std::exit(1);
    }
}

// One writer through the C ABI, opened, then `texts` from the first call
// until close() returned.
double run_c(const std::string& cfg, const std::vector<std::string>& texts, int want = TDO_WRITTEN) {
    tdo_writer* w = nullptr;
    check(tdo_writer_open(&w, cfg.c_str()), TDO_OK, "open");
    const auto t0 = Clock::now();
    for (const auto& t : texts)
        check(generate_training_output(w, t.c_str(), bench::kMessage, bench::kResult), want, "generate");
    const auto t1 = Clock::now();
    check(tdo_writer_close(w), TDO_OK, "close");
    const auto t2 = Clock::now();
    if (std::getenv("TDO_BENCH_PHASES")) {
        std::printf("  (calls %.3f s, close %.3f s)\n", std::chrono::duration<double>(t1 - t0).count(),
                    std::chrono::duration<double>(t2 - t1).count());
    }
    return static_cast<double>(texts.size()) / std::chrono::duration<double>(t2 - t0).count();
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

void print_runs(const char* what, const std::vector<double>& rates) {
    std::printf("%s:", what);
    for (double r : rates) std::printf(" %.0f", r);
    std::printf(" ex/s; median %.0f\n", median(rates));
    std::fflush(stdout);
}

int throughput(int calls, int rounds, const std::string& extra) {
    const auto texts = narratives("throughput", calls);
    std::vector<double> rates;
    for (int r = 0; r < rounds; ++r) {
        ::sync();
        rates.push_back(run_c(config(fresh("throughput-" + std::to_string(r)), extra), texts));
    }
    const std::string label =
        "one thread, " + std::to_string(calls) + " examples, generate -> close, configuration " + config("DIR", extra);
    print_runs(label.c_str(), rates);
    return 0;
}

int threads(int n, int calls) {
    const std::string out = fresh("threads");
    to::TrainingOutput writer(to::Config::from_json(config(out)));
    std::vector<std::vector<std::string>> texts;
    for (int t = 0; t < n; ++t) texts.push_back(narratives("thread-" + std::to_string(t), calls / n));
    std::atomic<int> bad{0};
    ::sync();
    const auto t0 = Clock::now();
    std::vector<std::thread> pool;
    for (int t = 0; t < n; ++t) {
        pool.emplace_back([&, t] {
            for (const auto& s : texts[static_cast<std::size_t>(t)]) {
                if (writer.generate(s, bench::kMessage, bench::kResult) != to::Outcome::Written) ++bad;
            }
        });
    }
    for (auto& th : pool) th.join();
    writer.close();
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    if (bad) return std::fprintf(stderr, "%d calls did not write\n", bad.load()), 1;
    std::printf("%d threads on one writer, %d examples in all, generate -> close, default configuration: %.0f ex/s\n",
                n, (calls / n) * n, (calls / n) * n / s);
    return 0;
}

int processes(int n, int calls) {
    const std::string out = fresh("processes");
    const int each = calls / n;
    ::sync();
    const auto t0 = Clock::now();
    std::vector<pid_t> kids;
    for (int p = 0; p < n; ++p) {
        const pid_t pid = ::fork();
        if (pid == 0) {
            const auto texts = narratives("process-" + std::to_string(p), each);
            run_c(config(out), texts);
            std::_Exit(0);
        }
        kids.push_back(pid);
    }
    int failed = 0;
    for (pid_t pid : kids) {
        int status = 0;
        ::waitpid(pid, &status, 0);
        failed += !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    if (failed) return std::fprintf(stderr, "%d processes failed\n", failed), 1;
    std::printf(
        "%d processes on one directory, %d examples each, from the first fork to the last close (examples made in "
        "each process), default configuration: %.0f ex/s together\n",
        n, each, n * each / s);
    return 0;
}

int quiet(int examples) {
    const std::string out = fresh("quiet");
    const auto texts = narratives("quiet", examples);
    to::TrainingOutput writer(to::Config::from_json(config(out)));
    writer.generate(bench::narrative("warm-up", 0), bench::kMessage, bench::kResult);
    writer.flush();
    ::sync();
    const std::uint64_t w0 = write_bytes();
    const auto t0 = Clock::now();
    for (const auto& t : texts) {
        if (writer.generate(t, bench::kMessage, bench::kResult) != to::Outcome::Written) return 1;
        writer.flush();
    }
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    const std::uint64_t w1 = write_bytes();
    writer.close();
    std::printf(
        "a quiet service (one example, then flush(), %d times), default configuration: %.0f examples/s, %.1f KiB "
        "written to disk per example\n",
        examples, examples / s, static_cast<double>(w1 - w0) / examples / 1024);
    return 0;
}

int duplicates(int calls) {
    const std::string out = fresh("duplicates");
    const auto texts = narratives("duplicates", calls);
    to::TrainingOutput writer(to::Config::from_json(config(out)));
    for (const auto& t : texts) writer.generate(t, bench::kMessage, bench::kResult);
    writer.flush();
    ::sync();
    const std::uint64_t w0 = write_bytes();
    const auto t0 = Clock::now();
    int dup = 0;
    for (const auto& t : texts) dup += writer.generate(t, bench::kMessage, bench::kResult) == to::Outcome::Duplicate;
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    const std::uint64_t w1 = write_bytes();
    writer.close();
    if (dup != calls) return std::fprintf(stderr, "%d of %d were duplicates\n", dup, calls), 1;
    std::printf(
        "duplicates right after a flush (%d examples, then the same %d again), default configuration: %.0f calls/s, "
        "%.2f KiB written to disk per duplicate call\n",
        calls, calls, calls / s, static_cast<double>(w1 - w0) / calls / 1024);
    return 0;
}

int rerun(int calls) {
    const std::string out = fresh("rerun");
    const auto texts = narratives("rerun", calls);
    run_c(config(out), texts);
    ::sync();
    const std::uint64_t w0 = write_bytes();
    const double rate = run_c(config(out), texts, TDO_DUPLICATE);
    std::printf(
        "a re-run of %d examples already written, in a new writer (open -> close), default configuration: %.0f "
        "calls/s, %.2f KiB written to disk per call\n",
        calls, rate, static_cast<double>(write_bytes() - w0) / calls / 1024);
    return 0;
}

int prefilled(int prefill, int calls) {
    const auto texts = narratives("prefilled-new", calls);
    const std::string out = fresh("prefilled");
    const auto t0 = Clock::now();
    {
        to::TrainingOutput writer(to::Config::from_json(config(out)));
        std::string n;
        for (int i = 0; i < prefill; ++i) {
            n = bench::narrative("prefill", i);
            writer.generate(n, bench::kMessage, bench::kResult);
        }
        writer.close();
    }
    const double fill_s = std::chrono::duration<double>(Clock::now() - t0).count();
    ::sync();
    // Both after the fill (and a sync): the disk is in the same state for both.
    const double empty = run_c(config(fresh("prefilled-empty")), texts);
    ::sync();
    const double full = run_c(config(out), texts);
    std::printf(
        "%d new examples, default configuration: into an empty dedup store %.0f ex/s; into one holding %d examples "
        "(filled in %.0f s) %.0f ex/s (%.0f %%)\n",
        calls, empty, prefill, fill_s, full, 100.0 * full / empty);
    return 0;
}

int idle(int writers) {
    const long rss0 = status_field("VmRSS:");
    const int threads0 = static_cast<int>(status_field("Threads:"));
    std::vector<std::unique_ptr<to::TrainingOutput>> open;
    for (int i = 0; i < writers; ++i) {
        open.push_back(
            std::make_unique<to::TrainingOutput>(to::Config::from_json(config(fresh("idle-" + std::to_string(i))))));
    }
    std::this_thread::sleep_for(std::chrono::seconds(2));  // what their threads prepare in the background
    const long rss1 = status_field("VmRSS:");
    const int threads1 = static_cast<int>(status_field("Threads:"));
    std::printf(
        "%d idle writers in one process, default configuration: %.1f MiB resident (%.2f MiB each), %d threads\n",
        writers, (rss1 - rss0) / 1024.0, (rss1 - rss0) / 1024.0 / writers, threads1 - threads0);
    for (auto& w : open) w->close();
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 3) {
        std::fprintf(stderr, "usage: %s DIR throughput|threads|processes|quiet|duplicates|rerun|prefilled|idle ...\n",
                     argv[0]);
        return 2;
    }
    g_dir = argv[1];
    const std::string what = argv[2];
    if (!config_extra().empty()) {
        std::printf("NOT the default configuration: every writer also has %s (TDO_BENCH_CONFIG)\n",
                    config_extra().c_str());
    }
    auto arg = [&](int i, int fallback) { return argc > i ? std::atoi(argv[i]) : fallback; };
    if (what == "throughput") return throughput(arg(3, 50000), arg(4, 3), argc > 5 ? argv[5] : "");
    if (what == "threads") return threads(arg(3, 4), arg(4, 100000));
    if (what == "processes") return processes(arg(3, 4), arg(4, 100000));
    if (what == "quiet") return quiet(arg(3, 100));
    if (what == "duplicates") return duplicates(arg(3, 20000));
    if (what == "rerun") return rerun(arg(3, 50000));
    if (what == "prefilled") return prefilled(arg(3, 1000000), arg(4, 50000));
    if (what == "idle") return idle(arg(3, 100));
    if (what == "into") {  // DIR into OUTPUT_DIR [CALLS]: new examples into an existing output directory
        const auto texts = narratives("into-" + std::to_string(::getpid()), arg(4, 50000));
        std::printf("%zu new examples into %s, default configuration: %.0f ex/s\n", texts.size(), argv[3],
                    run_c(config(argv[3]), texts));
        return 0;
    }
    std::fprintf(stderr, "unknown benchmark %s\n", what.c_str());
    return 2;
}
