// Background (see background.hpp).
#include "common/background.hpp"

#include <pthread.h>

#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "common/thread.hpp"

namespace training_output {

struct Background::Job::State {
    std::function<void()> work;
    Clock::time_point due = Clock::time_point::max();
    bool poked = false;
    bool running = false;
};

namespace {

struct Shared {
    std::mutex mutex;
    std::condition_variable cv;    // the thread: a job was poked, added or armed
    std::condition_variable idle;  // a job's call ended
    std::vector<std::shared_ptr<Background::Job::State>> jobs;
    bool thread_running = false;
};

// The process's. A child after fork() starts with a new one: the parent's
// thread does not exist there, and its jobs are the parent's writers'.
Shared*& shared() {
    static Shared* s = [] {
        ::pthread_atfork(nullptr, nullptr, [] { shared() = new Shared; });
        return new Shared;
    }();
    return s;
}

void run(Shared* s) {
    std::unique_lock<std::mutex> lock(s->mutex);
    for (;;) {
        if (s->jobs.empty()) {
            s->thread_running = false;
            return;
        }
        const auto now = Background::Clock::now();
        std::shared_ptr<Background::Job::State> next;
        auto wake = Background::Clock::time_point::max();
        for (const auto& j : s->jobs) {
            if (j->running) continue;
            if (j->poked || j->due <= now) {
                next = j;
                break;
            }
            wake = std::min(wake, j->due);
        }
        if (!next) {
            if (wake == Background::Clock::time_point::max()) {
                s->cv.wait(lock);
            } else {
                s->cv.wait_until(lock, wake);
            }
            continue;
        }
        next->poked = false;
        next->due = Background::Clock::time_point::max();
        next->running = true;
        // The others after this one next time: no job starves another.
        std::rotate(s->jobs.begin(), std::find(s->jobs.begin(), s->jobs.end(), next) + 1, s->jobs.end());
        lock.unlock();
        next->work();
        lock.lock();
        next->running = false;
        s->idle.notify_all();
    }
}

}  // namespace

std::unique_ptr<Background::Job> Background::add(std::function<void()> work) {
    auto state = std::make_shared<Job::State>();
    state->work = std::move(work);
    Shared* s = shared();
    std::lock_guard<std::mutex> lock(s->mutex);
    s->jobs.push_back(state);
    if (!s->thread_running) {
        s->thread_running = true;
        start_thread([s] { run(s); }).detach();
    }
    return std::unique_ptr<Job>(new Job(std::move(state)));
}

Background::Job::~Job() {
    Shared* s = shared();
    std::unique_lock<std::mutex> lock(s->mutex);
    auto it = std::find(s->jobs.begin(), s->jobs.end(), state_);
    if (it == s->jobs.end()) return;  // a job of the parent, in a child after fork()
    s->jobs.erase(it);
    s->idle.wait(lock, [&] { return !state_->running; });
    s->cv.notify_all();  // the thread ends when this was the last job
}

void Background::Job::poke() {
    Shared* s = shared();
    {
        std::lock_guard<std::mutex> lock(s->mutex);
        if (state_->poked) return;
        state_->poked = true;
    }
    s->cv.notify_one();
}

void Background::Job::at(Clock::time_point t) {
    Shared* s = shared();
    {
        std::lock_guard<std::mutex> lock(s->mutex);
        if (t >= state_->due) return;
        state_->due = t;
    }
    s->cv.notify_one();
}

}  // namespace training_output
