// training-output-cli: reads processing results as JSON lines
//   {"narrative": "...", "message_data": {...}, "result": {...}}
// from a file or stdin, writes them through the library and prints a summary
// per health domain.
//
// Usage: training-output-cli [--config FILE] [--output-dir DIR] [--log-level LEVEL] [--metrics] [INPUT|-]
//        training-output-cli drain [--config FILE] [--output-dir DIR] [--log-level LEVEL]
// (drain: delivers what writers of the configuration left in their spools.)
// Without --config the configuration comes from the environment (ETL_*).
// --metrics prints the writer's metrics (Prometheus text) at exit. The exit
// status is 1 when something could not be delivered (it stays in the spool).
// When stderr is a terminal, a progress line there (lines read, written,
// duplicates, errors, the rate, the backlog) is redrawn twice a second and
// once at the end of the input; when it is not, nothing but errors goes there.
// SIGINT or SIGTERM stops the reading: what was accepted is delivered (within
// flush_timeout_ms), the summary is printed, and the exit status is 128 + the
// signal (130 for SIGINT). A second signal exits at once; the spool keeps
// what was accepted for the next run.
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "training_output/log.hpp"
#include "training_output/training_output.hpp"

namespace to = training_output;

namespace {

volatile std::sig_atomic_t g_stop_signal = 0;

extern "C" void on_stop_signal(int sig) {
    if (g_stop_signal != 0) ::_exit(128 + sig);  // the second one: at once
    g_stop_signal = sig;
}

// SIGINT and SIGTERM set g_stop_signal. Without SA_RESTART a read of the
// input they interrupt returns, and the library's threads block them, so it
// is this thread's read they interrupt.
void catch_stop_signals() {
    struct sigaction sa {};
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;
    ::sigaction(SIGINT, &sa, nullptr);
    ::sigaction(SIGTERM, &sa, nullptr);
}

struct Counts {
    int written = 0, duplicate = 0, skipped = 0, disabled = 0, errors = 0;
};

// How deep `v` nests arrays and objects, without recursion (a hostile line
// must not overflow the stack here either; the library takes at most 100).
std::size_t depth_of(const rapidjson::Value& v) {
    std::vector<std::pair<const rapidjson::Value*, std::size_t>> stack{{&v, 1}};
    std::size_t deepest = 0;
    while (!stack.empty()) {
        auto [value, depth] = stack.back();
        stack.pop_back();
        if (!value->IsObject() && !value->IsArray()) continue;
        deepest = std::max(deepest, depth);
        if (value->IsObject()) {
            for (auto& m : value->GetObject()) stack.emplace_back(&m.value, depth + 1);
        } else {
            for (auto& e : value->GetArray()) stack.emplace_back(&e, depth + 1);
        }
    }
    return deepest;
}

std::string to_json(const rapidjson::Value& v) {
    rapidjson::StringBuffer b;
    rapidjson::Writer<rapidjson::StringBuffer> w(b);
    v.Accept(w);
    return std::string(b.GetString(), b.GetSize());
}

// The progress line on a terminal (stderr): redrawn in place. Whatever else
// goes to stderr meanwhile (errors, the library's log lines, from any
// thread) goes through print(), which clears the line first.
class Progress {
public:
    explicit Progress(bool on) : on_(on), started_(std::chrono::steady_clock::now()), last_(started_) {}
    bool on() const { return on_; }

    // Redraws the line when half a second has passed (or when `now_anyway`).
    void update(const to::TrainingOutput& writer, int read, const Counts& total, bool now_anyway = false) {
        if (!on_) return;
        const auto now = std::chrono::steady_clock::now();
        if (!now_anyway && now - last_ < std::chrono::milliseconds(500)) return;
        last_ = now;
        const double seconds = std::chrono::duration<double>(now - started_).count();
        const to::WriterStats s = writer.stats();
        std::lock_guard<std::mutex> lock(mutex_);
        std::fprintf(stderr,
                     "\r\033[K%d lines read, %d written, %d duplicates, %d errors, %.0f lines/s, backlog %llu lines",
                     read, total.written, total.duplicate, total.errors, seconds > 0 ? read / seconds : 0.0,
                     static_cast<unsigned long long>(s.pending_lines));
        std::fflush(stderr);
        drawn_ = true;
    }
    // One line on stderr (without its newline), below nothing: the progress
    // line is cleared first and redrawn by the next update().
    void print(std::string_view text) {
        std::lock_guard<std::mutex> lock(mutex_);
        if (drawn_) std::fputs("\r\033[K", stderr);
        drawn_ = false;
        std::fwrite(text.data(), 1, text.size(), stderr);
        std::fputc('\n', stderr);
        std::fflush(stderr);
    }
    // At the end: the last state stays on its own line.
    void finish() {
        std::lock_guard<std::mutex> lock(mutex_);
        if (!drawn_) return;
        std::fputc('\n', stderr);
        drawn_ = false;
    }

private:
    std::mutex mutex_;
    bool on_;
    bool drawn_ = false;
    std::chrono::steady_clock::time_point started_, last_;
};

int usage() {
    std::cerr
        << "usage: training-output-cli [--config FILE] [--output-dir DIR] [--log-level LEVEL] [--metrics] [INPUT|-]\n"
           "       training-output-cli drain [--config FILE] [--output-dir DIR] [--log-level LEVEL]\n";
    return 2;
}

// The configuration: from FILE (JSON) or the environment, with --output-dir
// and --log-level over it. Throws to::Error; "cannot read FILE" as Error(Config).
to::Config load_config(const std::string& config_file, const std::string& output_dir, const std::string& log_level) {
    to::Config config;
    if (!config_file.empty()) {
        std::ifstream in(config_file);
        if (!in) throw to::Error(to::ErrorCode::Config, "cannot read " + config_file);
        std::stringstream ss;
        ss << in.rdbuf();
        config = to::Config::from_json(ss.str());
    } else {
        config = to::Config::from_environment();
    }
    if (!output_dir.empty()) {
        // Everything that was under the old output_dir by default follows it.
        if (config.spool_dir == config.default_spool_dir()) config.spool_dir.clear();
        if (config.dedup_db_path == config.default_dedup_db_path()) config.dedup_db_path.clear();
        config.output_dir = output_dir;
    }
    if (!log_level.empty()) config.log_level = to::parse_log_level(log_level);
    config.finalize();
    return config;
}

// `drain`: delivers what writers of the configuration left in their spools.
int drain(const to::Config& config) {
    try {
        const to::DrainReport r = to::TrainingOutput::drain(config);
        std::printf(
            "spools adopted %llu, lines found %llu, in their objects %llu, already delivered %llu, "
            "found in their objects already %llu\n",
            static_cast<unsigned long long>(r.spools_adopted), static_cast<unsigned long long>(r.lines_recovered),
            static_cast<unsigned long long>(r.lines_appended), static_cast<unsigned long long>(r.lines_voided),
            static_cast<unsigned long long>(r.lines_found_landed));
        return 0;
    } catch (const to::Error& e) {
        std::cerr << "drain: " << e.what() << " (" << to::error_code_name(e.code()) << ")\n";
        return 1;
    }
}

}  // namespace

int main(int argc, char** argv) {
    std::string config_file, output_dir, log_level, input = "-";
    bool print_metrics = false;
    const bool drain_only = argc > 1 && std::string(argv[1]) == "drain";
    for (int i = drain_only ? 2 : 1; i < argc; ++i) {
        std::string a = argv[i];
        if (a == "--metrics") {
            print_metrics = true;
        } else if ((a == "--config" || a == "--output-dir" || a == "--log-level") && i + 1 < argc) {
            (a == "--config" ? config_file : a == "--output-dir" ? output_dir : log_level) = argv[++i];
        } else if (a == "-h" || a == "--help") {
            usage();
            return 0;
        } else if ((!a.empty() && a[0] == '-' && a != "-") || drain_only) {
            return usage();
        } else {
            input = a;
        }
    }

    std::unique_ptr<to::TrainingOutput> writer;
    try {
        const to::Config config = load_config(config_file, output_dir, log_level);
        if (drain_only) return drain(config);
        writer = std::make_unique<to::TrainingOutput>(config);
    } catch (const to::Error& e) {
        std::cerr << "cannot open the writer: " << e.what() << " (" << to::error_code_name(e.code()) << ")\n";
        return 1;
    }

    std::ifstream file;
    if (input != "-") {
        file.open(input);
        if (!file) {
            std::cerr << "cannot read " << input << "\n";
            return 1;
        }
    }
    std::istream& in = input == "-" ? std::cin : file;

    std::map<std::string, Counts> by_domain;
    Counts running;  // of every domain, for the progress line
    Progress progress(::isatty(STDERR_FILENO) == 1);
    if (progress.on() && writer->config().log_level != to::LogLevel::Off) {
        // The library's log lines (from any of its threads) keep clear of the progress line.
        to::set_log_callback(
            [&progress](to::LogLevel, std::string_view, std::string_view json) { progress.print(json); },
            writer->config().log_level);
    }
    struct RestoreLogs {
        bool set;
        ~RestoreLogs() {
            if (set) to::set_log_callback({}, to::LogLevel::Off);
        }
    } restore_logs{progress.on()};
    bool storage_failed = false;
    std::string line;
    int number = 0;
    catch_stop_signals();
    while (!g_stop_signal && std::getline(in, line)) {
        if (g_stop_signal) break;  // a line the signal cut short is read again by the next run
        ++number;
        progress.update(*writer, number, running);
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
        std::string domain = "(unreadable)";
        try {
            rapidjson::Document doc;
            doc.Parse<rapidjson::kParseIterativeFlag>(line.c_str(), line.size());
            if (doc.HasParseError() || !doc.IsObject()) {
                throw to::Error(to::ErrorCode::InvalidJson, "the line is not a JSON object");
            }
            if (depth_of(doc) > 101) {
                throw to::Error(to::ErrorCode::InvalidInput,
                                "the line nests arrays and objects deeper than 101 levels");
            }
            auto narrative = doc.FindMember("narrative");
            auto message = doc.FindMember("message_data");
            auto result = doc.FindMember("result");
            if (narrative == doc.MemberEnd() || !narrative->value.IsString() || message == doc.MemberEnd()) {
                throw to::Error(to::ErrorCode::InvalidInput, "expected \"narrative\" (a string) and \"message_data\"");
            }
            if (message->value.IsObject()) {
                auto rt = message->value.FindMember("record_type");
                if (rt != message->value.MemberEnd() && rt->value.IsString()) {
                    domain = std::string(to::health_domain_for(rt->value.GetString()));
                }
            }
            std::string result_json = result == doc.MemberEnd() ? "{}" : to_json(result->value);
            to::Outcome outcome =
                writer->generate(std::string_view(narrative->value.GetString(), narrative->value.GetStringLength()),
                                 to_json(message->value), result_json);
            for (Counts* c : {&by_domain[domain], &running}) {
                switch (outcome) {
                    case to::Outcome::Written: ++c->written; break;
                    case to::Outcome::Duplicate:
                    case to::Outcome::Pending: ++c->duplicate; break;
                    case to::Outcome::Skipped: ++c->skipped; break;
                    case to::Outcome::Disabled: ++c->disabled; break;
                }
            }
        } catch (const to::Error& e) {
            ++by_domain[domain].errors;
            ++running.errors;
            progress.print("line " + std::to_string(number) + ": " + to::error_code_name(e.code()) + ": " + e.what());
            if (e.code() != to::ErrorCode::InvalidJson && e.code() != to::ErrorCode::InvalidInput)
                storage_failed = true;
        }
    }
    progress.update(*writer, number, running, true);
    if (g_stop_signal) {
        progress.print(std::string("interrupted (") + (g_stop_signal == SIGINT ? "SIGINT" : "SIGTERM") + ") after " +
                       std::to_string(number) +
                       " lines: delivering what was accepted; a second signal exits at once (the spool keeps it)");
    }
    try {
        writer->flush();
        progress.update(*writer, number, running, true);  // the backlog, delivered
        progress.finish();
    } catch (const to::Error& e) {
        progress.finish();
        std::cerr << "flush failed: " << e.what() << "\n";
        storage_failed = true;
    }
    if (print_metrics) {
        try {
            std::fputs(writer->metrics_text().c_str(), stdout);
        } catch (const to::Error& e) {
            std::cerr << "metrics: " << e.what() << "\n";
        }
    }
    try {
        writer->close();
    } catch (const to::Error& e) {
        std::cerr << "close: " << e.what() << "\n";
        storage_failed = true;
    }

    Counts total;
    std::printf("%-24s %8s %10s %8s %7s\n", "domain", "written", "duplicate", "skipped", "errors");
    for (const auto& [domain, c] : by_domain) {
        std::printf("%-24s %8d %10d %8d %7d\n", domain.c_str(), c.written, c.duplicate, c.skipped, c.errors);
        total.written += c.written;
        total.duplicate += c.duplicate;
        total.skipped += c.skipped;
        total.errors += c.errors;
        total.disabled += c.disabled;
    }
    std::printf("%-24s %8d %10d %8d %7d\n", "total", total.written, total.duplicate, total.skipped, total.errors);
    if (total.disabled) std::printf("(%d lines not written: enable_training_output is false)\n", total.disabled);
    if (g_stop_signal) return 128 + g_stop_signal;
    return storage_failed ? 1 : 0;
}
