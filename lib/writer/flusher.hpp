// Flusher: the background thread between the spool and the objects. Lines
// that generate() logged in the writer's spool wait here (as references into
// the spool, not copies), grouped per object key, and are appended in batches:
// when a key's pending bytes reach flush_max_bytes, when its oldest line is
// flush_interval old, when the spool is half full, on flush() and on close().
//
// Per batch: the spool records where it is about to be written (INTENT), the
// appender writes it, the spool records that it landed (DONE) and the dedup
// claims are committed. A batch whose outcome is unknown (a failed attempt
// that may have written, or an INTENT without DONE found in an adopted spool)
// is checked with ObjectAppender::check_landed() before anything else of that
// key is appended, so no line is appended twice.
//
// The flusher also delivers the spools of writers that died: adopted at start
// and every adopt_interval after.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "training_output/deduplicator.hpp"
#include "training_output/error.hpp"
#include "training_output/log.hpp"
#include "training_output/object_appender.hpp"
#include "training_output/spool.hpp"

namespace training_output {

struct FlusherOptions {
    std::uint64_t max_bytes = 8u << 20;
    std::chrono::milliseconds interval{5000};
    std::chrono::milliseconds timeout{30000};
    std::chrono::milliseconds retry_base{200};
    std::chrono::milliseconds retry_max{30000};
    std::uint64_t hurry_bytes = UINT64_MAX;  // pending bytes above which every key is due
    std::chrono::milliseconds adopt_interval{10000};
    // Adopted lines held at once (their positions are in memory); more
    // orphans are adopted as these are delivered.
    std::uint64_t adopt_max_bytes = UINT64_MAX;
};

struct FlusherStats {
    std::uint64_t lines_appended = 0;
    std::uint64_t bytes_appended = 0;
    std::uint64_t batches_appended = 0;
    std::uint64_t append_failures = 0;
    std::uint64_t pending_lines = 0;
    std::uint64_t pending_bytes = 0;
    std::uint64_t batches_found_landed = 0;  // an earlier attempt or a dead writer had appended them
    std::uint64_t spools_adopted = 0;
    std::uint64_t lines_recovered = 0;       // from adopted spools
    std::uint64_t torn_records = 0;          // dropped from adopted spools (bad checksum)
};

class Flusher {
public:
    // Adopts orphaned spools holding up to about `max_bytes` of lines.
    using Adopt = std::function<std::vector<std::unique_ptr<Spool>>(std::uint64_t max_bytes)>;

    // Adopts (through `adopt`) what writers that died left before returning.
    Flusher(ObjectAppender& appender, TrainingDeduplicator& dedup, const Logger& logger, FlusherOptions options,
            Spool& own, Adopt adopt);
    ~Flusher();  // stops without flushing; call close() first to deliver
    Flusher(const Flusher&) = delete;
    Flusher& operator=(const Flusher&) = delete;

    // A line that generate() logged in the own spool.
    void add(const std::string& object_key, const SpoolLineRef& ref);
    // Every line added (or adopted) before the call is in its object, or
    // throws Error(Timeout) after the timeout, Error(Auth | Storage) at once
    // when the store refuses for good. Lines not delivered stay spooled.
    void flush();
    // flush(), then stop the thread. Throws (as flush()) when lines remain in
    // the spool; the next writer that opens on it delivers them.
    void close();
    FlusherStats stats() const;

private:
    struct Line {
        SpoolLineRef ref;
        std::chrono::steady_clock::time_point accepted;
    };
    struct Check {  // a batch that may have landed already
        std::uint64_t first = 0, last = 0;
        AppendIntent intent;
    };
    struct Pending {
        std::deque<Line> lines;
        std::uint64_t bytes = 0;
        bool in_flight = false;
        int failures = 0;  // in a row
        std::chrono::steady_clock::time_point retry_at{};
        std::string last_error;
        ErrorCode last_code = ErrorCode::Storage;
        bool permanent = false;  // last failure was auth
        std::uint64_t failed_attempt = 0;  // which attempt failed last
        std::optional<Check> check;
    };
    using Slot = std::pair<Spool*, std::string>;  // spool, object key

    void run();
    void adopt_now();
    bool due(const Pending& p, Spool* spool, std::chrono::steady_clock::time_point now) const;
    std::chrono::steady_clock::time_point next_wake(std::chrono::steady_clock::time_point now) const;
    void deliver(const Slot& slot, std::unique_lock<std::mutex>& lock);
    bool flushed(const std::map<Spool*, std::uint64_t>& targets) const;
    void drop_finished_spools(std::unique_lock<std::mutex>& lock);

    ObjectAppender& appender_;
    TrainingDeduplicator& dedup_;
    const Logger& logger_;
    FlusherOptions options_;
    Spool& own_;
    Adopt adopt_;

    mutable std::mutex mutex_;
    std::condition_variable wake_;      // the thread
    std::condition_variable progress_;  // flush() waiters
    std::map<Slot, Pending> pending_;
    std::map<Slot, Pending>::iterator own_last_ = pending_.end();  // where add() put the last line
    std::vector<std::unique_ptr<Spool>> adopted_;
    std::map<Spool*, std::uint64_t> flush_targets_;  // flush lines up to these seqs now
    std::chrono::steady_clock::time_point next_adopt_;
    std::uint64_t attempts_ = 0;     // deliveries started
    std::uint64_t flush_calls_ = 0;  // flush() calls started
    bool stopping_ = false;
    FlusherStats stats_;
    std::thread thread_;
};

}  // namespace training_output
