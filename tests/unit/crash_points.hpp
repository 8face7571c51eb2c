// Crash points: a writer process (tdo_test_crash_writer) is killed at a named
// step of the write and delivery path (TDO_CRASH_AT, test builds only),
// restarted and handed every example again, as an at-least-once queue would;
// afterwards every example must be in the object exactly once.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "crash_harness.hpp"
#include "test_util.hpp"

namespace tdo_test {

// The steps, in the order a line passes them. Each entry is the crash of one
// run; a list of several is a crash, then a crash of the writer that
// recovers from it.
inline const std::vector<std::vector<std::string>>& crash_point_scenarios() {
    static const std::vector<std::vector<std::string>> all = {
        {"spool.after_line:10"},                              // logged, not claimed
        {"generate.after_claim:10"},                          // claimed, not answered
        {"generate.after_void:5"},                            // a duplicate voided, not answered
        {"flusher.after_confirm:2"},                          // a batch's claims confirmed, nothing written
        {"flusher.after_intent:2"},                           // INTENT durable, request not sent
        {"s3.request_sent:3"},                                // a request body sent, no answer (S3)
        {"directory.mid_append:2"},                           // bytes appended, not synced (local directory)
        {"append.after_write:2"},                             // landed, the writer has not seen it
        {"flusher.after_land:2"},                             // landed, not committed
        {"flusher.after_commit:2"},                           // committed, no DONE
        {"flusher.after_done:2"},                             // DONE, the next batch not started
        {"append.after_write:2", "flusher.after_check:1"},    // the adopter found it landed, then died
        {"flusher.after_land:2", "flusher.after_confirm:1"},  // the adopter confirmed claims, then died
    };
    return all;
}

struct WriterRun {
    std::set<int> answered;  // WRITTEN or DUPLICATE
    int errors = 0;
    std::string first_error;
    bool killed = false;
    bool done = false;
};

// Runs the crash writer on examples [first, first + count) of worker 0, with
// TDO_CRASH_AT set to `crash_at` (none when empty), to its end or its death.
inline WriterRun run_crash_writer(const std::string& config, int first, int count, const std::string& crash_at,
                                  int delay_us = 3000) {
    int fd = -1;
    const pid_t pid = detail::fork_with_stdout(&fd, [&] {
        if (crash_at.empty()) {
            ::unsetenv("TDO_CRASH_AT");
        } else {
            ::setenv("TDO_CRASH_AT", crash_at.c_str(), 1);
        }
        const std::string f = std::to_string(first), n = std::to_string(count), d = std::to_string(delay_us);
        ::execl(TDO_TEST_CRASH_WRITER, TDO_TEST_CRASH_WRITER, config.c_str(), "0", f.c_str(), n.c_str(), d.c_str(),
                static_cast<char*>(nullptr));
    });
    std::string out;
    char buf[4096];
    for (;;) {
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        out.append(buf, static_cast<std::size_t>(n));
    }
    ::close(fd);
    int status = 0;
    ::waitpid(pid, &status, 0);
    WriterRun r;
    r.killed = WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
    for (const auto& line : lines_of(out)) {
        if (line == "done") {
            r.done = true;
        } else if (line.size() > 2 && (line[0] == 'W' || line[0] == 'D')) {
            r.answered.insert(std::atoi(line.c_str() + 2));
        } else if (line.size() > 2 && line[0] == 'E') {
            if (r.errors++ == 0) r.first_error = line;
        }
    }
    if (!r.killed) {
        INFO("exit status " << status << "; " << r.first_error);
        CHECK(WIFEXITED(status));
        CHECK(WEXITSTATUS(status) == 0);
    }
    return r;
}

// One scenario: 20 examples written cleanly (duplicates for the next runs),
// then each crash in turn on all 40, then all 40 again with no crash. Every
// crash must happen (the point is on the path), and every example must end
// up in the object (read by `object`) exactly once.
inline void check_crash_scenario(const std::string& config, const std::vector<std::string>& crashes,
                                 const std::function<std::string()>& object) {
    constexpr int kExamples = 40;
    WriterRun first = run_crash_writer(config, 0, kExamples / 2, "");
    REQUIRE(first.done);
    for (const auto& crash : crashes) {
        INFO("crash at " << crash);
        WriterRun r = run_crash_writer(config, 0, kExamples, crash);
        CHECK(r.killed);
        CHECK(r.errors == 0);
    }
    WriterRun last = run_crash_writer(config, 0, kExamples, "");
    REQUIRE(last.done);
    INFO(last.first_error);
    CHECK(last.errors == 0);
    CHECK(last.answered.size() == static_cast<std::size_t>(kExamples));

    std::map<int, int> seen;
    int foreign = 0;
    for (const auto& line : lines_of(object())) {
        auto d = parse(line);
        REQUIRE(d.IsObject());
        int w = -1, i = -1;
        if (std::sscanf(d["output"].GetString(), "Worker %d example %d.", &w, &i) != 2 || w != 0) {
            ++foreign;
            continue;
        }
        ++seen[i];
    }
    CHECK(foreign == 0);
    std::string wrong;
    for (int i = 0; i < kExamples; ++i) {
        if (seen[i] != 1) wrong += std::to_string(i) + "x" + std::to_string(seen[i]) + " ";
    }
    INFO("examples not exactly once (example x times): " << wrong);
    CHECK(wrong.empty());
    CHECK(seen.size() == static_cast<std::size_t>(kExamples));
}

// Whether a scenario's crashes are on the path of a sink ("s3." only with
// S3, "directory." only with the local directory).
inline bool scenario_applies(const std::vector<std::string>& crashes, bool s3) {
    for (const auto& c : crashes) {
        if (c.rfind(s3 ? "directory." : "s3.", 0) == 0) return false;
    }
    return true;
}

}  // namespace tdo_test
