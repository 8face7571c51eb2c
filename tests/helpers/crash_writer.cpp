// A processor for the crash tests, meant to be SIGKILLed at any moment:
//   tdo_test_crash_writer <config-json> <worker> <first> <count> <delay-us> [threads]
// writes examples first .. first+count-1 ("Worker W example I.", all
// StepsRecord, so one object key) and reports each outcome on stdout as it
// returns: "W <i>" (written: accepted), "D <i>" (duplicate), "E <i> <msg>"
// (error). "done" after flush and close. With `threads` > 1, that many
// threads share the one writer, thread t taking the examples i with
// i % threads == t. With TDO_TEST_HOLD_BEFORE_FLUSH set in its environment,
// it says "held" once every example has its outcome and waits for a line on
// stdin before it flushes (it still holds the lines it accepted).
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "training_output/training_output.hpp"

namespace {
void say(const std::string& s) {
    std::string line = s + "\n";
    const char* p = line.data();
    std::size_t left = line.size();
    while (left > 0) {
        ssize_t n = ::write(1, p, left);
        if (n <= 0) std::_Exit(3);
        p += n;
        left -= static_cast<std::size_t>(n);
    }
}
}  // namespace

int main(int argc, char** argv) {
    if (argc != 6 && argc != 7) {
        std::fprintf(stderr, "usage: %s CONFIG WORKER FIRST COUNT DELAY_US [THREADS]\n", argv[0]);
        return 2;
    }
    namespace to = training_output;
    const std::string worker = argv[2];
    const int first = std::atoi(argv[3]);
    const int count = std::atoi(argv[4]);
    const int delay_us = std::atoi(argv[5]);
    const int threads = argc > 6 ? std::max(1, std::atoi(argv[6])) : 1;
    try {
        to::TrainingOutput writer(to::Config::from_json(argv[1]));
        auto run = [&](int t) {
            for (int i = first; i < first + count; ++i) {
                if (i % threads != t) continue;
                const std::string n = std::to_string(i);
                try {
                    auto outcome =
                        writer.generate("Worker " + worker + " example " + n + ".",
                                        "{\"record_type\":\"StepsRecord\",\"user_id\":\"" + worker + "\"}",
                                        "{\"record_count\":5,\"processing_timestamp\":\"2025-11-18T10:30:00Z\"}");
                    say((outcome == to::Outcome::Written ? "W " : "D ") + n);
                } catch (const to::Error& e) {
                    say("E " + n + " " + e.what());
                }
                if (delay_us > 0) std::this_thread::sleep_for(std::chrono::microseconds(delay_us));
            }
        };
        std::vector<std::thread> pool;
        for (int t = 1; t < threads; ++t) pool.emplace_back(run, t);
        run(0);
        for (auto& t : pool) t.join();
        if (std::getenv("TDO_TEST_HOLD_BEFORE_FLUSH")) {
            say("held");
            char c;
            while (::read(0, &c, 1) < 0 && errno == EINTR) {}
        }
        writer.flush();
        writer.close();
    } catch (const to::Error& e) {
        std::fprintf(stderr, "worker %s: %s\n", worker.c_str(), e.what());
        return 1;
    }
    say("done");
    return 0;
}
