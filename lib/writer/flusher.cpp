#include "writer/flusher.hpp"

#include "common/json.hpp"
#include "common/random.hpp"

namespace training_output {

using Clock = std::chrono::steady_clock;

Flusher::Flusher(ObjectAppender& appender, TrainingDeduplicator& dedup, const Logger& logger, FlusherOptions options,
                 Spool& own, Adopt adopt)
    : appender_(appender), dedup_(dedup), logger_(logger), options_(options), own_(own), adopt_(std::move(adopt)) {
    adopt_now();
    next_adopt_ = Clock::now() + options_.adopt_interval;
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

// Takes over the spools of writers that died and queues what they hold.
void Flusher::adopt_now() {
    if (!adopt_) return;
    std::uint64_t held = 0;
    {
        std::lock_guard<std::mutex> lock(mutex_);
        for (const auto& [slot, p] : pending_) {
            if (slot.first != &own_) held += p.bytes;
        }
    }
    if (held >= options_.adopt_max_bytes) return;  // deliver these first
    std::vector<std::unique_ptr<Spool>> found;
    try {
        found = adopt_(options_.adopt_max_bytes - held);
    } catch (const Error& e) {
        logger_.log(LogLevel::Error, "training_output_spool_error", {{"error", e.what()}, {"detail", "adopting"}});
        return;
    }
    if (found.empty()) return;
    std::lock_guard<std::mutex> lock(mutex_);
    const auto due_now = Clock::now() - options_.interval;
    for (auto& spool : found) {
        ++stats_.spools_adopted;
        stats_.torn_records += spool->stats().torn_records;
        for (auto& r : spool->take_recovered()) {
            Pending& p = pending_[Slot{spool.get(), r.object_key}];
            for (const auto& ref : r.lines) {
                p.lines.push_back(Line{ref, due_now});
                p.bytes += ref.line_bytes;
                stats_.pending_bytes += ref.line_bytes;
                ++stats_.pending_lines;
                ++stats_.lines_recovered;
            }
            if (r.pending) p.check = Check{r.pending->first, r.pending->last, r.pending->intent};
        }
        adopted_.push_back(std::move(spool));
    }
    wake_.notify_one();
}

void Flusher::add(const std::string& object_key, const SpoolLineRef& ref) {
    bool wake = false;
    {
        std::lock_guard<std::mutex> lock(mutex_);
        // Runs of lines go to one object: keep where the last one went
        // (entries of the own spool are never erased).
        if (own_last_ == pending_.end() || own_last_->first.second != object_key) {
            own_last_ = pending_.try_emplace(Slot{&own_, object_key}).first;
        }
        Pending& p = own_last_->second;
        p.bytes += ref.line_bytes;
        stats_.pending_bytes += ref.line_bytes;
        ++stats_.pending_lines;
        wake = p.lines.empty() || p.bytes >= options_.max_bytes || stats_.pending_bytes >= options_.hurry_bytes;
        p.lines.push_back(Line{ref, Clock::now()});
    }
    if (wake) wake_.notify_one();
}

bool Flusher::flushed(const std::map<Spool*, std::uint64_t>& targets) const {
    for (const auto& [slot, p] : pending_) {
        if (p.lines.empty()) continue;
        auto t = targets.find(slot.first);
        if (t != targets.end() && p.lines.front().ref.seq <= t->second) return false;
    }
    return true;
}

void Flusher::flush() {
    std::unique_lock<std::mutex> lock(mutex_);
    std::map<Spool*, std::uint64_t> targets;
    for (const auto& [slot, p] : pending_) {
        if (!p.lines.empty()) targets[slot.first] = std::max(targets[slot.first], p.lines.back().ref.seq);
    }
    if (flushed(targets)) return;
    for (const auto& [spool, seq] : targets) flush_targets_[spool] = std::max(flush_targets_[spool], seq);
    // Asked for: one attempt now, whatever the backoff of a failing key; a
    // refusal counts only when an attempt that started after this call is
    // refused.
    const std::uint64_t since = attempts_;
    ++flush_calls_;
    for (auto& [slot, p] : pending_) p.retry_at = Clock::now();
    wake_.notify_one();
    const auto deadline = Clock::now() + options_.timeout;
    while (!flushed(targets)) {
        // A key the store refuses for good fails the flush now, not at the deadline.
        for (const auto& [slot, p] : pending_) {
            auto t = targets.find(slot.first);
            if (p.permanent && p.failed_attempt > since && !p.lines.empty() && t != targets.end() &&
                p.lines.front().ref.seq <= t->second) {
                throw Error(p.last_code, "flush: appending to " + json::quote(slot.second) + " failed: " +
                                             p.last_error + "; the lines stay in the spool");
            }
        }
        if (progress_.wait_until(lock, deadline) == std::cv_status::timeout && !flushed(targets)) {
            std::string why;
            for (const auto& [slot, p] : pending_) {
                if (!p.last_error.empty()) why = p.last_error;
            }
            throw Error(ErrorCode::Timeout, "flush timed out after " + std::to_string(options_.timeout.count()) +
                                                " ms with " + std::to_string(stats_.pending_lines) +
                                                " lines pending (they stay in the spool)" +
                                                (why.empty() ? std::string() : "; last error: " + why));
        }
    }
}

void Flusher::close() {
    std::optional<Error> failure;
    try {
        flush();
    } catch (const Error& e) {
        failure = e;
    }
    {
        std::lock_guard<std::mutex> lock(mutex_);
        stopping_ = true;
    }
    wake_.notify_all();
    // Out of time: an append still retrying stops at its next backoff.
    if (failure) appender_.cancel();
    if (thread_.joinable()) thread_.join();
    std::uint64_t left = 0;
    {
        std::lock_guard<std::mutex> lock(mutex_);
        left = stats_.pending_lines;
    }
    if (!failure && left == 0) return;
    logger_.log(LogLevel::Warning, "training_output_failed",
                {{"error", failure ? failure->what() : "stopped before they were appended"},
                 {"lines_spooled", left},
                 {"spool", own_.path()},
                 {"detail", "closing with lines not yet in their objects; the next writer on the spool delivers them"}});
    throw Error(failure ? failure->code() : ErrorCode::Storage,
                "close: " + std::to_string(left) + " lines are not in their objects yet; they stay in the spool " +
                    json::quote(own_.path()) + " for the next writer" +
                    (failure ? std::string(": ") + failure->what() : std::string()));
}

FlusherStats Flusher::stats() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return stats_;
}

bool Flusher::due(const Pending& p, Spool* spool, Clock::time_point now) const {
    if (p.lines.empty() || p.in_flight) return false;
    if (p.failures > 0 && now < p.retry_at) return false;
    if (stopping_ || p.bytes >= options_.max_bytes || now - p.lines.front().accepted >= options_.interval ||
        stats_.pending_bytes >= options_.hurry_bytes) {
        return true;
    }
    auto t = flush_targets_.find(spool);
    return t != flush_targets_.end() && p.lines.front().ref.seq <= t->second;
}

Clock::time_point Flusher::next_wake(Clock::time_point now) const {
    auto wake = std::min(now + std::chrono::hours(1), next_adopt_);
    for (const auto& [slot, p] : pending_) {
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
        if (!stopping_ && now >= next_adopt_) {
            lock.unlock();
            adopt_now();
            lock.lock();
            next_adopt_ = Clock::now() + options_.adopt_interval;
            continue;
        }
        std::vector<Slot> slots;
        for (const auto& [slot, p] : pending_) {
            if (due(p, slot.first, now)) slots.push_back(slot);
        }
        if (slots.empty()) {
            if (stopping_) return;
            wake_.wait_until(lock, next_wake(now));
            continue;
        }
        for (const auto& slot : slots) deliver(slot, lock);
        drop_finished_spools(lock);
        if (stopping_) {
            // Closing: one more round only for keys that just succeeded.
            bool more = false;
            for (const auto& [slot, p] : pending_) more = more || (!p.lines.empty() && p.failures == 0);
            if (!more) return;
        }
    }
}

// Adopted spools whose lines all landed are removed (their directory goes with them).
void Flusher::drop_finished_spools(std::unique_lock<std::mutex>& lock) {
    std::vector<std::unique_ptr<Spool>> done;
    for (auto it = adopted_.begin(); it != adopted_.end();) {
        Spool* s = it->get();
        bool busy = false;
        for (const auto& [slot, p] : pending_) busy = busy || (slot.first == s && (!p.lines.empty() || p.in_flight));
        if (busy) {
            ++it;
            continue;
        }
        for (auto p = pending_.begin(); p != pending_.end();) p = p->first.first == s ? pending_.erase(p) : std::next(p);
        flush_targets_.erase(s);
        done.push_back(std::move(*it));
        it = adopted_.erase(it);
    }
    if (done.empty()) return;
    lock.unlock();
    done.clear();
    lock.lock();
}

// Appends the front of one slot's queue (called and returning with the lock held).
void Flusher::deliver(const Slot& slot, std::unique_lock<std::mutex>& lock) {
    Spool& spool = *slot.first;
    const std::string& key = slot.second;
    Pending& p = pending_[slot];
    std::vector<SpoolLineRef> refs;
    std::uint64_t bytes = 0;
    if (p.check && p.check->first != p.lines.front().ref.seq) p.check.reset();  // not this queue's front
    const std::optional<Check> check = p.check;
    for (const Line& line : p.lines) {
        if (check) {
            // Exactly the batch that may have landed: the check compares bytes.
            if (line.ref.seq > check->last) break;
        } else if (!refs.empty() && bytes + line.ref.line_bytes > options_.max_bytes) {
            break;
        }
        refs.push_back(line.ref);
        bytes += line.ref.line_bytes;
    }
    const std::uint64_t first = refs.front().seq, last = refs.back().seq;
    p.in_flight = true;
    const std::uint64_t attempt = ++attempts_;
    const std::uint64_t flush_calls = flush_calls_;
    lock.unlock();

    std::string error;
    ErrorCode code = ErrorCode::Storage;
    std::optional<AppendIntent> intent;
    bool found_landed = false;
    try {
        std::string batch;
        batch.reserve(bytes);
        std::vector<std::string> dedup_keys;
        dedup_keys.reserve(refs.size());
        spool.read_batch(refs, batch, dedup_keys);
        Landed landed = Landed::No;
        if (check) {
            landed = appender_.check_landed(check->intent, batch);
            if (landed == Landed::Unknown) throw Error(ErrorCode::Storage, "cannot tell whether a batch landed");
        }
        if (landed == Landed::Yes) {
            found_landed = true;
        } else {
            AppendResult r = appender_.append(key, batch, [&](const AppendIntent& in) {
                spool.record_intent(key, first, last, in);
                intent = in;
            });
            found_landed = r.found_landed;
        }
        spool.record_done(key, first, last, refs);
        dedup_.commit(dedup_keys);
    } catch (const Error& e) {
        error = e.what();
        code = e.code();
    } catch (const std::exception& e) {
        error = e.what();
    }

    lock.lock();
    Pending& q = pending_[slot];
    q.in_flight = false;
    if (error.empty()) {
        for (std::size_t i = 0; i < refs.size(); ++i) q.lines.pop_front();
        q.bytes -= bytes;
        q.failures = 0;
        q.permanent = false;
        q.last_error.clear();
        q.check.reset();
        stats_.lines_appended += refs.size();
        stats_.bytes_appended += bytes;
        stats_.pending_lines -= refs.size();
        stats_.pending_bytes -= bytes;
        ++stats_.batches_appended;
        if (found_landed) ++stats_.batches_found_landed;
        progress_.notify_all();
        return;
    }
    // The next attempt must first find out whether this one wrote.
    if (intent) q.check = Check{first, last, *intent};
    ++stats_.append_failures;
    q.last_error = error;
    q.last_code = code;
    q.permanent = code == ErrorCode::Auth;
    q.failed_attempt = attempt;
    // A flush() that came in during this attempt gets an attempt of its own now.
    q.retry_at = flush_calls_ != flush_calls
                     ? Clock::now()
                     : Clock::now() + random::full_jitter(std::min(q.failures + 1, 10), options_.retry_base,
                                                          options_.retry_max);
    if (q.failures++ == 0) {
        lock.unlock();
        logger_.log(LogLevel::Error, "training_output_failed",
                    {{"object_key", key},
                     {"lines", static_cast<std::uint64_t>(refs.size())},
                     {"error", error},
                     {"detail", "the lines stay in the spool; retrying with backoff"}});
        lock.lock();
    }
    progress_.notify_all();
}

}  // namespace training_output
