// The crash harness: worker processes (tdo_test_crash_writer) write distinct
// examples into one object while the harness SIGKILLs and restarts them at
// random; a restarted worker goes on after the last example it reported.
// Afterwards a last writer on the same configuration adopts what is left.
// The check: every example a worker reported as written (accepted) is in the
// object exactly once, and no line is there twice.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <functional>
#include <map>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "test_util.hpp"

namespace tdo_test {

struct CrashRun {
    int workers = 4;
    int per_worker = 250;
    int min_kills = 20;
    int delay_us = 1000;  // between examples: keeps the workers alive long enough to be killed
    std::chrono::milliseconds kill_every_min{40}, kill_every_max{160};
    int threads = 1;  // threads per worker process, sharing its writer
    // A restarted worker is handed every example again, as an at-least-once
    // queue redelivers what its consumer never acknowledged; otherwise it
    // goes on after the last example it reported.
    bool redeliver_all = false;
    bool restart = true;  // false: a killed worker stays dead (its spool waits for adoption)
    int min_reports = 0;  // a worker is killed only once it reported this many outcomes since it started
    // Between a kill and the restart, optionally (the outage test pauses the server).
    std::function<void(int elapsed_ms)> tick;
};

struct CrashResult {
    std::set<std::string> accepted;  // "worker:i" reported written
    std::set<std::string> reported;  // written or duplicate
    int kills = 0;
    int errors = 0;
    std::string first_error;
};

namespace detail {

// Forks a child whose stdout is a pipe the parent reads (`*read_fd`); the
// child runs `exec` (which execs, or exits).
inline pid_t fork_with_stdout(int* read_fd, const std::function<void()>& exec) {
    int p[2];
    REQUIRE(::pipe(p) == 0);
    pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        ::dup2(p[1], 1);
        ::close(p[0]);
        ::close(p[1]);
        exec();
        std::_Exit(127);
    }
    ::close(p[1]);
    *read_fd = p[0];
    return pid;
}

struct Worker {
    int id = 0;
    int next = 0;
    pid_t pid = -1;
    int fd = -1;
    std::string buf;
    bool done = false;
    bool held = false;  // said "held" (TDO_TEST_HOLD_BEFORE_FLUSH)
    int reports = 0;    // outcomes reported since it started
};

inline void start(Worker& w, const std::string& helper, const std::string& config, const CrashRun& run) {
    w.pid = fork_with_stdout(&w.fd, [&] {
        const std::string id = std::to_string(w.id), first = std::to_string(w.next),
                          count = std::to_string(run.per_worker - w.next), delay = std::to_string(run.delay_us),
                          threads = std::to_string(run.threads);
        ::execl(helper.c_str(), helper.c_str(), config.c_str(), id.c_str(), first.c_str(), count.c_str(), delay.c_str(),
                threads.c_str(), static_cast<char*>(nullptr));
    });
    w.buf.clear();
    w.reports = 0;
}

// Consumes whole lines from a worker's pipe; false at end of file.
inline bool drain(Worker& w, CrashResult& r, bool block) {
    char chunk[4096];
    for (;;) {
        if (!block) {
            pollfd pf{w.fd, POLLIN, 0};
            if (::poll(&pf, 1, 0) <= 0) return true;
        }
        ssize_t n = ::read(w.fd, chunk, sizeof chunk);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return false;
        w.buf.append(chunk, static_cast<std::size_t>(n));
        std::size_t nl;
        while ((nl = w.buf.find('\n')) != std::string::npos) {
            std::string line = w.buf.substr(0, nl);
            w.buf.erase(0, nl + 1);
            if (line == "done" || line == "held") {
                (line == "done" ? w.done : w.held) = true;
                continue;
            }
            const char kind = line[0];
            const int i = std::atoi(line.c_str() + 2);
            ++w.reports;
            const std::string tag = std::to_string(w.id) + ":" + std::to_string(i);
            if (kind == 'W') r.accepted.insert(tag);
            if (kind == 'W' || kind == 'D') r.reported.insert(tag);
            if (kind == 'E') {
                if (r.errors++ == 0) r.first_error = line;
            }
            w.next = std::max(w.next, i + 1);
        }
    }
}
}  // namespace detail

inline CrashResult run_crash_harness(const std::string& helper, const std::string& config, const CrashRun& run) {
    using Clock = std::chrono::steady_clock;
    CrashResult r;
    std::vector<detail::Worker> ws(static_cast<std::size_t>(run.workers));
    for (int i = 0; i < run.workers; ++i) {
        ws[static_cast<std::size_t>(i)].id = i;
        detail::start(ws[static_cast<std::size_t>(i)], helper, config, run);
    }
    std::mt19937 gen(std::random_device{}());
    auto pause = [&] {
        return std::chrono::milliseconds(
            std::uniform_int_distribution<long>(run.kill_every_min.count(), run.kill_every_max.count())(gen));
    };
    const auto t0 = Clock::now();
    auto next_kill = Clock::now() + pause();
    for (;;) {
        std::vector<pollfd> fds;
        for (auto& w : ws) {
            if (w.fd >= 0) fds.push_back(pollfd{w.fd, POLLIN, 0});
        }
        if (fds.empty()) break;
        ::poll(fds.data(), fds.size(), 10);
        for (auto& w : ws) {
            if (w.fd < 0) continue;
            if (!detail::drain(w, r, false)) {
                // The worker closed its stdout: it exited.
                ::close(w.fd);
                w.fd = -1;
                int status = 0;
                ::waitpid(w.pid, &status, 0);
                INFO("worker " << w.id << " status " << status);
                REQUIRE(w.done);
                REQUIRE(WIFEXITED(status));
                REQUIRE(WEXITSTATUS(status) == 0);
            }
        }
        if (run.tick)
            run.tick(
                static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count()));
        if (r.kills < run.min_kills && Clock::now() >= next_kill) {
            std::vector<detail::Worker*> live;
            for (auto& w : ws) {
                if (w.fd >= 0 && !w.done && w.reports >= run.min_reports) live.push_back(&w);
            }
            if (!live.empty()) {
                detail::Worker& w = *live[std::uniform_int_distribution<std::size_t>(0, live.size() - 1)(gen)];
                ::kill(w.pid, SIGKILL);
                ::waitpid(w.pid, nullptr, 0);
                detail::drain(w, r, true);  // what it reported before it died
                ::close(w.fd);
                w.fd = -1;
                ++r.kills;
                // Threads report out of order: where to resume is unknown, so everything again.
                if (run.redeliver_all || run.threads > 1) w.next = 0;
                if (run.restart && !w.done && w.next < run.per_worker) detail::start(w, helper, config, run);
            }
            next_kill = Clock::now() + pause();
        }
    }
    return r;
}

// The object's lines against what the workers reported.
inline void check_exactly_once(const std::string& object, const CrashResult& r, const CrashRun& run) {
    auto doc_lines = lines_of(object);
    std::map<std::string, int> seen;
    for (const auto& line : doc_lines) {
        auto d = parse(line);
        REQUIRE(d.IsObject());
        const std::string out = d["output"].GetString();  // "Worker W example I."
        int w = -1, i = -1;
        REQUIRE(std::sscanf(out.c_str(), "Worker %d example %d.", &w, &i) == 2);
        CHECK((w >= 0 && w < run.workers && i >= 0 && i < run.per_worker));
        ++seen[std::to_string(w) + ":" + std::to_string(i)];
    }
    int doubled = 0, missing = 0;
    std::string examples;  // the first few, for the report
    for (const auto& [tag, n] : seen) doubled += n > 1;
    for (const auto& tag : r.accepted) {
        if (seen.count(tag) == 0 && missing++ < 20) examples += tag + " ";
    }
    // An example answered DUPLICATE was written before (all examples differ):
    // a host acknowledges it, so it must be in the object too.
    int duplicate_missing = 0;
    std::string duplicate_examples;
    for (const auto& tag : r.reported) {
        if (seen.count(tag) == 0 && r.accepted.count(tag) == 0 && duplicate_missing++ < 20) {
            duplicate_examples += tag + " ";
        }
    }
    INFO("missing, first ones: " << examples);
    INFO("answered DUPLICATE but missing, first ones: " << duplicate_examples);
    INFO(doc_lines.size() << " lines, " << r.accepted.size() << " accepted, " << r.kills << " kills");
    CHECK(doubled == 0);
    CHECK(missing == 0);
    CHECK(duplicate_missing == 0);
}

}  // namespace tdo_test
