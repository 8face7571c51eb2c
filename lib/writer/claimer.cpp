// Claimer (see claimer.hpp).
#include "writer/claimer.hpp"

#include "common/crash_point.hpp"
#include "common/thread.hpp"

namespace training_output {
namespace {
constexpr std::size_t kMaxGroup = 4096;  // keys a store call at most
constexpr std::chrono::microseconds kNap{500};
constexpr std::chrono::seconds kIdle{2};  // the thread ends after this long without a line
}  // namespace

Claimer::Claimer(TrainingDeduplicator& dedup, Spool& spool, Flusher& flusher, const Logger& logger)
    : dedup_(dedup), spool_(spool), flusher_(flusher), logger_(logger) {}

Claimer::~Claimer() {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        stopping_ = true;
    }
    wake_.notify_all();
    if (thread_.joinable()) thread_.join();
}

void Claimer::add(Item item) {
    bool wake = false;
    {
        std::lock_guard<std::mutex> lock(mutex_);
        queue_.push_back(std::move(item));
        ++added_;
        wake = idle_ && queue_.size() == 1;
        if (!running_) {
            // Started by the first line after an idle while: an idle writer
            // holds no claimer thread.
            if (thread_.joinable()) thread_.join();  // it has ended
            running_ = true;
            thread_ = start_thread([this] { run(); });
        }
    }
    // Woken only from its idle wait: while lines keep coming, it takes them
    // a group at a time without a wake (a system call) per call.
    if (wake) wake_.notify_one();
}

void Claimer::drain() {
    std::unique_lock<std::mutex> lock(mutex_);
    const std::uint64_t target = added_;
    if (done_ >= target) return;
    hurry_ = true;  // no nap: the caller waits
    wake_.notify_one();
    settled_.wait(lock, [&] { return done_ >= target; });
}

void Claimer::run() {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
        if (queue_.empty() && !stopping_) {
            idle_ = true;
            wake_.wait_for(lock, kIdle, [&] { return stopping_ || !queue_.empty(); });
            idle_ = false;
        }
        if (queue_.empty()) {  // stopping, or idle a while: everything settled
            running_ = false;
            return;
        }
        std::vector<Item> group;
        if (queue_.size() <= kMaxGroup) {
            group.swap(queue_);
        } else {
            group.assign(std::make_move_iterator(queue_.begin()),
                         std::make_move_iterator(queue_.begin() + static_cast<std::ptrdiff_t>(kMaxGroup)));
            queue_.erase(queue_.begin(), queue_.begin() + static_cast<std::ptrdiff_t>(kMaxGroup));
        }
        lock.unlock();
        settle(group);
        lock.lock();
        done_ += group.size();
        settled_.notify_all();
        // After a small group, a short nap lets the next one gather (the
        // lines wait for it, no call does).
        if (group.size() < kMaxGroup / 4 && !stopping_ && !hurry_) {
            wake_.wait_for(lock, kNap, [&] { return stopping_ || hurry_; });
        }
        hurry_ = false;
    }
}

void Claimer::settle(std::vector<Item>& group) {
    std::vector<std::string> keys;
    keys.reserve(group.size());
    for (const auto& item : group) keys.push_back(item.key);
    // The epoch before the claims: a lapse of the owners' liveness after it
    // makes the flusher confirm them again.
    const std::uint64_t epoch = dedup_.liveness_epoch();
    const std::vector<ClaimOutcome> outcomes = dedup_.claim_group(keys, spool_.id());
    std::size_t voided = 0;
    for (std::size_t i = 0; i < group.size(); ++i) {
        Item& item = group[i];
        switch (outcomes[i]) {
            case ClaimOutcome::Claimed:
                crash_point("generate.after_claim");  // claimed, not yet deliverable
                flusher_.settle(item.handle, Flusher::LineState::Ready, epoch);
                break;
            case ClaimOutcome::FailedOpen: flusher_.settle(item.handle, Flusher::LineState::Unconfirmed, epoch); break;
            case ClaimOutcome::Duplicate:
            case ClaimOutcome::Pending: {
                // Written already, or another live writer's line holds it.
                if (flusher_.void_line(spool_, item.handle, item.object_key, item.ref, epoch)) {
                    dedup_.settled_elsewhere(item.key, spool_.id(), outcomes[i]);
                    crash_point("generate.after_void");
                    ++voided;
                }
                break;
            }
        }
    }
    if (voided > 0) {
        flusher_.count_voided(voided);
        logger_.log(LogLevel::Info, "training_output_lines_voided",
                    {{"lines", static_cast<std::uint64_t>(voided)},
                     {"detail",
                      "accepted at the same time as another writer accepted the same content: its line delivers it"}});
    }
}

}  // namespace training_output
