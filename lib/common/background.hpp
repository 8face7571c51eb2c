// Background: one thread per process for the writers' small jobs (a spool's
// periodic fsync, faulting pages in ahead of its writes, preparing its next
// segment), instead of two threads per writer. A job is a function the
// thread calls when it is poked or when its time comes; the calls of one job
// never overlap. The thread exists while some job does.
#pragma once

#include <chrono>
#include <functional>
#include <memory>

namespace training_output {

class Background {
public:
    using Clock = std::chrono::steady_clock;

    class Job {
    public:
        ~Job();  // never called again after this; waits for a call in progress
        Job(const Job&) = delete;
        Job& operator=(const Job&) = delete;

        void poke();                   // call it soon
        void at(Clock::time_point t);  // call it at `t` at the latest

        struct State;  // defined in background.cpp

    private:
        friend class Background;
        explicit Job(std::shared_ptr<State> state) : state_(std::move(state)) {}
        std::shared_ptr<State> state_;
    };

    // `work` runs on the process's background thread; it must not destroy
    // its own Job.
    static std::unique_ptr<Job> add(std::function<void()> work);
};

}  // namespace training_output
