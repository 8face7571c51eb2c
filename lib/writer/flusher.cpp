#include "writer/flusher.hpp"

#include "common/json.hpp"
#include "common/random.hpp"

namespace training_output {

using Clock = std::chrono::steady_clock;

Flusher::Flusher(ObjectAppender& appender, TrainingDeduplicator& dedup, const Logger& logger, FlusherOptions options)
    : appender_(appender), dedup_(dedup), logger_(logger), options_(options) {
    thread_ = std::thread([this] { run(); });
}

Flusher::~Flusher() {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        stopping_ = true;
    }
    wake_.notify_all();
    if (thread_.joinable()) thread_.join();
}

void Flusher::add(const std::string& object_key, std::string line, std::string dedup_key) {
    bool wake = false;
    {
        std::lock_guard<std::mutex> lock(mutex_);
        Pending& p = pending_[object_key];
        p.bytes += line.size();
        stats_.pending_bytes += line.size();
        ++stats_.pending_lines;
        wake = p.lines.empty() || p.bytes >= options_.max_bytes;  // a new deadline, or full
        p.lines.push_back(Line{next_seq_++, std::move(line), std::move(dedup_key), Clock::now()});
    }
    if (wake) wake_.notify_one();
}

std::uint64_t Flusher::oldest_pending_seq() const {
    std::uint64_t oldest = UINT64_MAX;
    for (const auto& [key, p] : pending_) {
        if (!p.lines.empty()) oldest = std::min(oldest, p.lines.front().seq);
    }
    return oldest;
}

void Flusher::flush() {
    std::unique_lock<std::mutex> lock(mutex_);
    const std::uint64_t target = next_seq_ - 1;
    if (target == 0 || oldest_pending_seq() > target) return;
    flush_target_ = std::max(flush_target_, target);
    // Asked for: one attempt now, whatever the backoff of a failing key.
    for (auto& [key, p] : pending_) p.retry_at = Clock::now();
    wake_.notify_one();
    const auto deadline = Clock::now() + options_.timeout;
    while (oldest_pending_seq() <= target) {
        // A key the store refuses for good fails the flush now, not at the deadline.
        for (const auto& [key, p] : pending_) {
            if (p.permanent && !p.lines.empty() && p.lines.front().seq <= target) {
                throw Error(p.last_code, "flush: appending to " + json::quote(key) + " failed: " + p.last_error);
            }
        }
        if (progress_.wait_until(lock, deadline) == std::cv_status::timeout && oldest_pending_seq() <= target) {
            std::string why;
            std::uint64_t lines = 0;
            for (const auto& [key, p] : pending_) {
                lines += p.lines.size();
                if (!p.last_error.empty()) why = p.last_error;
            }
            throw Error(ErrorCode::Timeout, "flush timed out after " + std::to_string(options_.timeout.count()) +
                                                " ms with " + std::to_string(lines) + " lines pending" +
                                                (why.empty() ? std::string() : "; last error: " + why));
        }
    }
}

void Flusher::close() {
    std::string failure;
    try {
        flush();
    } catch (const Error& e) {
        failure = e.what();
    }
    {
        std::lock_guard<std::mutex> lock(mutex_);
        stopping_ = true;
    }
    wake_.notify_all();
    if (thread_.joinable()) thread_.join();
    // Lines still here are dropped: free their claims, so that the same
    // content can be written when it comes again.
    std::uint64_t lost = 0;
    std::vector<std::string> claims;
    {
        std::lock_guard<std::mutex> lock(mutex_);
        for (auto& [key, p] : pending_) {
            for (const Line& line : p.lines) {
                ++lost;
                if (!line.dedup_key.empty()) claims.push_back(line.dedup_key);
            }
        }
    }
    for (const auto& claim : claims) dedup_.release(claim);
    if (!failure.empty() || lost > 0) {
        if (failure.empty()) failure = "stopped before they were appended";
        logger_.log(LogLevel::Error, "training_output_failed",
                    {{"error", failure}, {"lines_not_delivered", lost}, {"detail", "closing with lines undelivered"}});
        throw Error(ErrorCode::Storage, "close: " + std::to_string(lost) + " lines were not delivered: " + failure);
    }
}

FlusherStats Flusher::stats() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return stats_;
}

bool Flusher::due(const Pending& p, Clock::time_point now) const {
    if (p.lines.empty() || p.in_flight > 0) return false;
    if (p.failures > 0 && now < p.retry_at) return false;
    return stopping_ || p.bytes >= options_.max_bytes || now - p.lines.front().accepted >= options_.interval ||
           p.lines.front().seq <= flush_target_;
}

Clock::time_point Flusher::next_wake(Clock::time_point now) const {
    auto wake = now + std::chrono::hours(1);
    for (const auto& [key, p] : pending_) {
        if (p.lines.empty()) continue;
        auto t = p.lines.front().accepted + options_.interval;
        if (p.failures > 0) t = std::max(t, p.retry_at);
        wake = std::min(wake, t);
    }
    return wake;
}

void Flusher::run() {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
        auto now = Clock::now();
        std::vector<std::string> keys;
        for (const auto& [key, p] : pending_) {
            if (due(p, now)) keys.push_back(key);
        }
        if (keys.empty()) {
            if (stopping_) return;
            wake_.wait_until(lock, next_wake(now));
            continue;
        }
        for (const auto& key : keys) deliver(key, lock);
        if (stopping_) {
            // Closing: one more round only for keys that just succeeded.
            bool more = false;
            for (const auto& [key, p] : pending_) more = more || (!p.lines.empty() && p.failures == 0);
            if (!more) return;
        }
    }
}

// Appends the front of one key's queue (called and returning with the lock held).
void Flusher::deliver(const std::string& key, std::unique_lock<std::mutex>& lock) {
    Pending& p = pending_[key];
    std::string batch;
    std::vector<std::string> dedup_keys;
    std::size_t n = 0;
    for (const Line& line : p.lines) {
        if (n > 0 && batch.size() + line.text.size() > options_.max_bytes) break;
        batch += line.text;
        if (!line.dedup_key.empty()) dedup_keys.push_back(line.dedup_key);
        ++n;
    }
    p.in_flight = n;
    lock.unlock();
    std::string error;
    ErrorCode code = ErrorCode::Storage;
    try {
        appender_.append(key, batch);
    } catch (const Error& e) {
        error = e.what();
        code = e.code();
    } catch (const std::exception& e) {
        error = e.what();
    }
    if (error.empty()) dedup_.commit(dedup_keys);
    lock.lock();
    Pending& q = pending_[key];
    q.in_flight = 0;
    if (error.empty()) {
        for (std::size_t i = 0; i < n; ++i) q.lines.pop_front();
        q.bytes -= batch.size();
        q.failures = 0;
        q.permanent = false;
        q.last_error.clear();
        stats_.lines_appended += n;
        stats_.bytes_appended += batch.size();
        stats_.pending_lines -= n;
        stats_.pending_bytes -= batch.size();
        ++stats_.batches_appended;
        progress_.notify_all();
        return;
    }
    ++stats_.append_failures;
    q.last_error = error;
    q.last_code = code;
    q.permanent = code == ErrorCode::Auth;
    if (q.failures++ == 0) {
        lock.unlock();
        logger_.log(LogLevel::Error, "training_output_failed",
                    {{"object_key", key}, {"lines", static_cast<std::uint64_t>(n)}, {"error", error},
                     {"detail", "will retry with backoff"}});
        lock.lock();
    }
    Pending& r = pending_[key];
    r.retry_at = Clock::now() + random::full_jitter(std::min(r.failures, 10), options_.retry_base, options_.retry_max);
    progress_.notify_all();
}

}  // namespace training_output
