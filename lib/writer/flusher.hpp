// Flusher: lines accepted by generate() wait here, grouped per object key, and
// a background thread appends them in batches: when a key's pending bytes
// reach flush_max_bytes, when its oldest line is flush_interval old, on
// flush() and on close(). Dedup claims are committed once their batch landed.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "training_output/deduplicator.hpp"
#include "training_output/error.hpp"
#include "training_output/log.hpp"
#include "training_output/object_appender.hpp"

namespace training_output {

struct FlusherOptions {
    std::uint64_t max_bytes = 8u << 20;
    std::chrono::milliseconds interval{5000};
    std::chrono::milliseconds timeout{30000};
    std::chrono::milliseconds retry_base{200};
    std::chrono::milliseconds retry_max{30000};
};

struct FlusherStats {
    std::uint64_t lines_appended = 0;
    std::uint64_t bytes_appended = 0;
    std::uint64_t batches_appended = 0;
    std::uint64_t append_failures = 0;
    std::uint64_t pending_lines = 0;
    std::uint64_t pending_bytes = 0;
};

class Flusher {
public:
    Flusher(ObjectAppender& appender, TrainingDeduplicator& dedup, const Logger& logger, FlusherOptions options);
    ~Flusher();  // stops without flushing; call close() first to deliver
    Flusher(const Flusher&) = delete;
    Flusher& operator=(const Flusher&) = delete;

    // `dedup_key` empty: nothing to commit (the claim failed open).
    void add(const std::string& object_key, std::string line, std::string dedup_key);
    // Every line added before the call is in its object, or throws
    // Error(Timeout) after the timeout, Error(Auth | Storage) at once when
    // the store refuses for good.
    void flush();
    // flush(), then stop the thread. Lines that could not be delivered are
    // reported (logged) and dropped.
    void close();
    FlusherStats stats() const;

private:
    struct Line {
        std::uint64_t seq;
        std::string text;
        std::string dedup_key;
        std::chrono::steady_clock::time_point accepted;
    };
    struct Pending {
        std::deque<Line> lines;
        std::uint64_t bytes = 0;
        std::size_t in_flight = 0;  // lines at the front being appended now
        int failures = 0;           // in a row
        std::chrono::steady_clock::time_point retry_at{};
        std::string last_error;
        ErrorCode last_code = ErrorCode::Storage;
        bool permanent = false;  // last failure was auth / fatal
    };

    void run();
    bool due(const Pending& p, std::chrono::steady_clock::time_point now) const;
    std::chrono::steady_clock::time_point next_wake(std::chrono::steady_clock::time_point now) const;
    void deliver(const std::string& key, std::unique_lock<std::mutex>& lock);
    std::uint64_t oldest_pending_seq() const;

    ObjectAppender& appender_;
    TrainingDeduplicator& dedup_;
    const Logger& logger_;
    FlusherOptions options_;

    mutable std::mutex mutex_;
    std::condition_variable wake_;      // the thread
    std::condition_variable progress_;  // flush() waiters
    std::map<std::string, Pending> pending_;
    std::uint64_t next_seq_ = 1;
    std::uint64_t flush_target_ = 0;  // flush everything up to this seq now
    bool stopping_ = false;
    FlusherStats stats_;
    std::thread thread_;
};

}  // namespace training_output
