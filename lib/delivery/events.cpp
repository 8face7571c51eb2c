// What follows a batch that landed, off the delivery thread (events.hpp).
#include "delivery/events.hpp"

#include "common/thread.hpp"

namespace training_output {

namespace {
constexpr std::chrono::seconds kIdle{2};  // a thread with nothing to serve this long ends
}  // namespace

LandedEvents::LandedEvents(Handler handler, std::size_t max_events, std::uint64_t max_bytes)
    : handler_(std::move(handler)), max_events_(max_events), max_bytes_(max_bytes) {}

LandedEvents::~LandedEvents() {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        stopping_ = true;
    }
    wake_.notify_all();
    if (thread_.joinable()) thread_.join();
}

void LandedEvents::post(const LandedBatch& batch, std::string bytes) {
    std::unique_lock<std::mutex> lock(mutex_);
    // Room for it (one event always fits, however large).
    served_.wait(lock, [&] {
        return queue_.empty() || (queue_.size() < max_events_ && queued_bytes_ + bytes.size() <= max_bytes_);
    });
    Event& e = queue_.emplace_back();
    e.batch = batch;
    e.bytes = std::move(bytes);
    if (!batch.bytes.empty()) e.batch.bytes = e.bytes;
    queued_bytes_ += e.bytes.size();
    ++posted_;
    if (!running_) {
        // The last one ended, idle (it set running_ = false under the lock
        // and took it no more): joined at once.
        if (thread_.joinable()) thread_.join();
        thread_ = start_thread([this] { run(); });
        running_ = true;
    }
    wake_.notify_one();
}

void LandedEvents::drain() {
    std::unique_lock<std::mutex> lock(mutex_);
    const std::uint64_t target = posted_;
    served_.wait(lock, [&] { return done_ >= target; });
}

void LandedEvents::run() {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
        if (!wake_.wait_for(lock, kIdle, [&] { return stopping_ || !queue_.empty(); })) {
            running_ = false;  // idle: the next post() starts another
            return;
        }
        if (queue_.empty()) return;  // stopping, and everything served
        // The front stays queued (its bytes in place) while it is served.
        Event& e = queue_.front();
        lock.unlock();
        handler_(e.batch);
        lock.lock();
        queued_bytes_ -= e.bytes.size();
        queue_.pop_front();
        ++done_;
        served_.notify_all();
    }
}

}  // namespace training_output
