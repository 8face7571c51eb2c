#include "delivery/flusher.hpp"

#include "common/json.hpp"
#include "common/random.hpp"
#include "common/thread.hpp"

namespace training_output {

using Clock = std::chrono::steady_clock;
using LineState = Flusher::LineState;

namespace {

// The first line of a queue that is not void; nullptr when there is none.
const Flusher::Line* first_live(const std::deque<Flusher::Line>& lines) {
    for (const auto& l : lines) {
        if (l.state != LineState::Void) return &l;
    }
    return nullptr;
}

// The lowest seq a key still has to deliver (UINT64_MAX: none).
std::uint64_t front_seq(const Flusher::Pending& p) {
    std::uint64_t seq = UINT64_MAX;
    for (const auto& b : p.batches) {
        for (const auto& l : b.spool.lines) seq = std::min(seq, l.seq);
    }
    if (const auto* l = first_live(p.lines)) seq = std::min(seq, l->ref.seq);
    return seq;
}

std::uint64_t back_seq(const Flusher::Pending& p) {
    std::uint64_t seq = 0;
    for (const auto& b : p.batches) {
        for (const auto& l : b.spool.lines) seq = std::max(seq, l.seq);
    }
    for (auto it = p.lines.rbegin(); it != p.lines.rend(); ++it) {
        if (it->state != LineState::Void) return std::max(seq, it->ref.seq);
    }
    return seq;
}

}  // namespace

Flusher::Flusher(ObjectAppender& appender, BatchObjects& batches, TrainingDeduplicator& dedup, const Logger& logger,
                 FlusherOptions options, Spool& own, SpoolOptions spools)
    : appender_(appender),
      batches_(batches),
      dedup_(dedup),
      logger_(logger),
      options_(options),
      own_(own),
      spools_(std::move(spools)) {
    epoch_ = dedup_.liveness_epoch();
    if (options_.on_landed) events_ = std::make_unique<LandedEvents>(options_.on_landed);
    adopt_now();
    next_adopt_ = Clock::now() + options_.adopt_interval;
    next_maintain_ = Clock::now() + options_.maintain_interval;
    thread_ = start_thread([this] { run(); });
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
    std::uint64_t held = 0;
    {
        std::lock_guard<std::mutex> lock(mutex_);
        for (const auto& [slot, p] : pending_) {
            if (slot.first == &own_) continue;
            held += p.bytes;
            for (const auto& b : p.batches) held += b.bytes;
        }
    }
    if (held >= options_.adopt_max_bytes) return;  // deliver these first
    std::vector<std::unique_ptr<Spool>> found;
    try {
        found = Spool::adopt_orphans(spools_, &logger_, options_.adopt_max_bytes - held);
    } catch (const Error& e) {
        logger_.log(LogLevel::Error, "training_output_spool_error", {{"error", e.what()}, {"detail", "adopting"}});
        return;
    }
    if (found.empty()) return;
    // Their claims are owned by their ids: alive again, before any is confirmed.
    for (auto& spool : found) dedup_.hold_owner(spool->id(), spool->path());
    std::lock_guard<std::mutex> lock(mutex_);
    const auto due_now = Clock::now() - options_.interval;
    for (auto& spool : found) {
        ++stats_.spools_adopted;
        stats_.torn_records += spool->stats().torn_records;
        for (auto& r : spool->take_recovered()) {
            Pending& p = pending_[Slot{spool.get(), r.object_key}];
            for (auto& u : r.undecided) {
                Batch b;
                b.spool = SpoolBatch{u.batch, r.object_key, std::move(u.lines)};
                b.states.assign(b.spool.lines.size(), LineState::Unconfirmed);
                for (const auto& ref : b.spool.lines) b.bytes += ref.line_bytes;
                b.accepted = due_now;
                b.intent = u.intent;
                b.complete = u.complete;
                b.state = BatchState::MayHaveLanded;  // its INTENT has no DONE: checked first
                stats_.pending_lines += b.spool.lines.size();
                stats_.pending_bytes += b.bytes;
                stats_.lines_recovered += b.spool.lines.size();
                p.batches.push_back(std::move(b));
            }
            for (const auto& ref : r.lines) {
                p.lines.push_back(Line{ref, due_now, LineState::Unconfirmed});
                p.bytes += ref.line_bytes;
                stats_.pending_bytes += ref.line_bytes;
                ++stats_.pending_lines;
                ++stats_.lines_recovered;
            }
        }
        for (auto& c : spool->take_pending_commits()) {
            stats_.pending_commits += c.keys.size();
            commits_.push_back(PendingCommit{spool.get(), c.batch, std::move(c.keys)});
        }
        adopted_.push_back(std::move(spool));
    }
    wake_.notify_one();
}

void Flusher::adopt_soon() {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        next_adopt_ = Clock::now();
    }
    wake_.notify_one();
}

Flusher::Handle Flusher::add(const std::string& object_key, const SpoolLineRef& ref) {
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
    p.lines.push_back(Line{ref, Clock::now(), LineState::Claiming});
    // A deque keeps its elements in place as it grows at either end, and the
    // flusher never takes a line that is still claiming.
    return Handle{&p.lines.back(), &p};
}

void Flusher::settle(Handle h, LineState state, std::uint64_t claim_epoch) {
    bool wake = false;
    {
        std::lock_guard<std::mutex> lock(mutex_);
        Pending& p = *h.slot;
        if (state == LineState::Ready && claim_epoch != epoch_) state = LineState::Unconfirmed;
        h.line->state = state;
        if (state == LineState::Void) {
            p.bytes -= h.line->ref.line_bytes;
            stats_.pending_bytes -= h.line->ref.line_bytes;
            --stats_.pending_lines;
            progress_.notify_all();
            return;
        }
        wake = first_live(p.lines) == h.line || p.bytes >= options_.max_bytes ||
               stats_.pending_bytes >= options_.hurry_bytes;
    }
    if (wake) wake_.notify_one();
}

bool Flusher::void_line(Spool& spool, Handle handle, const std::string& object_key, const SpoolLineRef& ref,
                        std::uint64_t claim_epoch) {
    try {
        spool.record_void(object_key, ref);
    } catch (const std::exception& e) {
        logger_.log(LogLevel::Error, "training_output_spool_error", {{"error", e.what()}});
        settle(handle, LineState::Unconfirmed, claim_epoch);
        return false;
    }
    settle(handle, LineState::Void, claim_epoch);
    return true;
}

void Flusher::count_voided(std::size_t lines) {
    std::lock_guard<std::mutex> lock(mutex_);
    stats_.lines_voided += lines;
}

bool Flusher::flushed(const std::map<Spool*, std::uint64_t>& targets) const {
    for (const auto& [slot, p] : pending_) {
        auto t = targets.find(slot.first);
        if (t != targets.end() && front_seq(p) <= t->second) return false;
    }
    return true;
}

void Flusher::flush() {
    flush_lines();
    if (events_) events_->drain();  // what follows each batch delivered, done too
}

void Flusher::flush_lines() {
    std::unique_lock<std::mutex> lock(mutex_);
    std::map<Spool*, std::uint64_t> targets;
    for (const auto& [slot, p] : pending_) {
        const std::uint64_t last = back_seq(p);
        if (last > 0) targets[slot.first] = std::max(targets[slot.first], last);
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
            if (p.permanent && p.failed_attempt > since && t != targets.end() && front_seq(p) <= t->second) {
                throw Error(p.last_code, "flush: appending to " + json::quote(slot.second) +
                                             " failed: " + p.last_error + "; the lines stay in the spool");
            }
        }
        if (progress_.wait_until(lock, deadline) == std::cv_status::timeout && !flushed(targets)) {
            std::string why;
            for (const auto& [slot, p] : pending_) {
                if (!p.last_error.empty()) why = p.last_error;
            }
            if (!dedup_.may_deliver()) {
                // What holds everything back now, whatever failed before.
                why =
                    "the dedup store cannot confirm this writer's liveness, so no batch starts (another writer "
                    "may be taking its claims over)" +
                    (why.empty() ? std::string() : "; before: " + why);
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
    if (events_) events_->drain();
    std::uint64_t left = 0, commits = 0;
    {
        std::lock_guard<std::mutex> lock(mutex_);
        left = stats_.pending_lines;
        commits = stats_.pending_commits;
    }
    if (commits > 0) {
        logger_.log(LogLevel::Warning, "training_output_dedup_commit_pending",
                    {{"keys", commits},
                     {"spool", own_.path()},
                     {"detail",
                      "lines are in their objects, but the dedup store has not recorded them yet; "
                      "the next writer on the spool records them"}});
    }
    if (!failure && left == 0) return;
    logger_.log(
        LogLevel::Warning, "training_output_failed",
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
    FlusherStats s = stats_;
    // The oldest line not delivered yet: each key's first batch or first live line.
    for (const auto& [slot, p] : pending_) {
        const Line* front = p.batches.empty() ? first_live(p.lines) : nullptr;
        if (!p.batches.empty() || front) {
            const auto accepted = p.batches.empty() ? front->accepted : p.batches.front().accepted;
            if (s.oldest_pending == Clock::time_point{} || accepted < s.oldest_pending) s.oldest_pending = accepted;
        }
    }
    return s;
}

std::chrono::milliseconds Flusher::interval_of(const Pending& p) const {
    return p.interval.count() > 0 ? p.interval : options_.interval;
}

bool Flusher::due(const Pending& p, Spool* spool, Clock::time_point now) const {
    if (p.in_flight) return false;
    const Line* front = nullptr;
    Clock::time_point oldest;
    if (!p.batches.empty()) {
        oldest = p.batches.front().accepted;
    } else {
        front = first_live(p.lines);
        if (!front || front->state == LineState::Claiming) return false;
        oldest = front->accepted;
    }
    if (p.failures > 0 && now < p.retry_at) return false;
    if (stopping_ || p.bytes >= options_.max_bytes || now - oldest >= interval_of(p) ||
        stats_.pending_bytes >= options_.hurry_bytes) {
        return true;
    }
    auto t = flush_targets_.find(spool);
    return t != flush_targets_.end() && front_seq(p) <= t->second;
}

Clock::time_point Flusher::next_wake(Clock::time_point now) const {
    auto wake = std::min({now + std::chrono::hours(1), next_adopt_, next_maintain_});
    if (!commits_.empty()) wake = std::min(wake, commits_retry_at_);
    if (!dedup_.owners_fresh()) wake = std::min(wake, now + std::chrono::milliseconds(500));
    for (const auto& [slot, p] : pending_) {
        Clock::time_point t;
        if (!p.batches.empty()) {
            t = p.batches.front().accepted + interval_of(p);
        } else if (const Line* l = first_live(p.lines)) {
            t = l->accepted + interval_of(p);
        } else {
            continue;
        }
        if (p.failures > 0) t = std::max(t, p.retry_at);
        wake = std::min(wake, t);
    }
    return wake;
}

// The owners' liveness lapsed and came back: another writer may have taken
// claims over meanwhile. Every line claimed before is confirmed again.
void Flusher::reconfirm_all() {
    for (auto& [slot, p] : pending_) {
        for (auto& l : p.lines) {
            if (l.state == LineState::Ready) l.state = LineState::Unconfirmed;
        }
        for (auto& b : p.batches) {
            for (auto& s : b.states) s = LineState::Unconfirmed;
        }
    }
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
        if (!stopping_ && now >= next_maintain_) {
            lock.unlock();
            dedup_.maintain();
            lock.lock();
            next_maintain_ = Clock::now() + options_.maintain_interval;
            continue;
        }
        if (!commits_.empty() && now >= commits_retry_at_) retry_commits(lock);
        if (!dedup_.owners_fresh() && stats_.pending_lines > 0) {
            lock.unlock();
            dedup_.try_refresh();
            lock.lock();
        }
        const std::uint64_t epoch = dedup_.liveness_epoch();
        if (epoch != epoch_) {
            reconfirm_all();
            epoch_ = epoch;
        }
        // No batch starts while another writer could be taking this
        // writer's claims over unseen, nor on claims of an earlier epoch.
        std::vector<Slot> slots;
        if (dedup_.may_deliver(epoch_)) {
            for (const auto& [slot, p] : pending_) {
                if (due(p, slot.first, now)) slots.push_back(slot);
            }
        } else if (dedup_.liveness_epoch() != epoch_) {
            continue;  // refreshed since the check above: confirm again first
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
            for (const auto& [slot, p] : pending_) {
                more = more || ((first_live(p.lines) || !p.batches.empty()) && p.failures == 0);
            }
            if (!more) return;
        }
    }
}

// Adopted spools whose lines all landed and whose commits were made are
// removed (their directory goes with them); their owners are retired.
void Flusher::drop_finished_spools(std::unique_lock<std::mutex>& lock) {
    std::vector<std::unique_ptr<Spool>> done;
    for (auto it = adopted_.begin(); it != adopted_.end();) {
        Spool* s = it->get();
        bool busy = false;
        for (const auto& [slot, p] : pending_) {
            busy = busy || (slot.first == s && (first_live(p.lines) || !p.batches.empty() || p.in_flight));
        }
        for (const auto& c : commits_) busy = busy || c.spool == s;
        if (busy) {
            ++it;
            continue;
        }
        for (auto p = pending_.begin(); p != pending_.end();)
            p = p->first.first == s ? pending_.erase(p) : std::next(p);
        flush_targets_.erase(s);
        done.push_back(std::move(*it));
        it = adopted_.erase(it);
    }
    if (done.empty()) return;
    lock.unlock();
    for (auto& spool : done) {
        const bool settled = spool->empty();
        const std::string id = spool->id();
        spool.reset();
        if (settled) dedup_.release_owner(id);
    }
    lock.lock();
}

void Flusher::retry_commits(std::unique_lock<std::mutex>& lock) {
    std::vector<PendingCommit> work;
    work.swap(commits_);
    lock.unlock();
    std::vector<PendingCommit> failed;
    for (auto& c : work) {
        if (!failed.empty() || !dedup_.commit(c.keys)) {
            failed.push_back(std::move(c));
            continue;
        }
        try {
            c.spool->record_committed(c.batch);
        } catch (const Error& e) {
            // The commit is made; its record is not: a replay commits again (harmless).
            logger_.log(LogLevel::Error, "training_output_spool_error", {{"error", e.what()}});
        }
        std::lock_guard<std::mutex> relock(mutex_);
        stats_.pending_commits -= c.keys.size();
    }
    lock.lock();
    for (auto& c : failed) commits_.push_back(std::move(c));
    if (commits_.empty()) {
        commit_failures_ = 0;
        progress_.notify_all();
    } else {
        commits_retry_at_ = Clock::now() + random::full_jitter(std::min(++commit_failures_, 10), options_.retry_base,
                                                               options_.retry_max);
    }
}

// The next batch of a key's queue: its oldest settled lines, up to
// max_bytes (at least one). False when none is ready.
bool Flusher::take_batch(Pending& p, const std::string& key) {
    Batch b;
    b.spool.object_key = key;
    while (!p.lines.empty()) {
        const Line& l = p.lines.front();
        if (l.state == LineState::Void) {
            p.lines.pop_front();
            continue;
        }
        if (l.state == LineState::Claiming) break;
        if (!b.spool.lines.empty() && b.bytes + l.ref.line_bytes > options_.max_bytes) break;
        if (b.spool.lines.empty()) b.accepted = l.accepted;
        b.spool.lines.push_back(l.ref);
        b.states.push_back(l.state);
        b.bytes += l.ref.line_bytes;
        p.bytes -= l.ref.line_bytes;
        p.lines.pop_front();
    }
    if (b.spool.lines.empty()) return false;
    p.batches.push_back(std::move(b));
    return true;
}

// Appends the front batch of one slot (called and returning with the lock held).
void Flusher::deliver(const Slot& slot, std::unique_lock<std::mutex>& lock) {
    Spool& spool = *slot.first;
    Pending& p = pending_[slot];
    if (p.batches.empty() && !take_batch(p, slot.second)) return;
    Batch work = p.batches.front();
    work.epoch = epoch_;  // what run() confirmed the queues in
    AttemptOutcome o;
    o.lines_before = work.spool.lines.size();
    o.bytes_before = work.bytes;
    p.in_flight = true;
    o.attempt = ++attempts_;
    o.flush_calls = flush_calls_;
    o.started = Clock::now();
    lock.unlock();

    try {
        o.appended = append_batch(spool, work, o.found_landed, o.contended);
    } catch (const Error& e) {
        o.error = e.what();
        o.code = e.code();
    } catch (const std::exception& e) {
        o.error = e.what();
    }

    lock.lock();
    Pending& q = pending_[slot];
    q.in_flight = false;
    // Lines voided while confirming are gone either way.
    const std::size_t voided = o.lines_before - work.spool.lines.size();
    stats_.lines_voided += voided;
    stats_.pending_lines -= voided;
    stats_.pending_bytes -= o.bytes_before - work.bytes;
    if (o.error.empty()) {
        delivered(q, slot.second, work, o, lock);
    } else {
        failed(q, slot.second, std::move(work), o, lock);
    }
    progress_.notify_all();
}

// After an attempt that delivered its batch (or voided all of it).
void Flusher::delivered(Pending& q, const std::string& key, const Batch& work, const AttemptOutcome& o,
                        std::unique_lock<std::mutex>& lock) {
    q.batches.pop_front();
    if (q.failures > 0) {
        const int failures = q.failures;
        const double seconds = std::chrono::duration<double>(Clock::now() - q.first_failure).count();
        lock.unlock();
        logger_.log(LogLevel::Warning, "training_output_append_recovered",
                    {{"object_key", key},
                     {"lines", static_cast<std::uint64_t>(work.spool.lines.size())},
                     {"bytes", work.bytes},
                     {"failures", static_cast<std::int64_t>(failures)},
                     {"seconds", seconds},
                     {"detail", "the batch landed after failed attempts"}});
        lock.lock();
    }
    q.failures = 0;
    q.permanent = false;
    q.last_error.clear();
    if (o.contended) {
        // Without overflow for any configured interval: at most 8 times it.
        const auto most = options_.interval.count() <= INT64_MAX / 8 ? options_.interval * 8 : options_.interval;
        q.interval = std::min(interval_of(q) <= most / 2 ? interval_of(q) * 2 : most, most);
    } else if (q.interval > options_.interval) {
        q.interval = std::max<std::chrono::milliseconds>(options_.interval, q.interval - options_.interval / 2);
    }
    if (!o.appended) return;
    stats_.lines_appended += work.spool.lines.size();
    stats_.bytes_appended += work.bytes;
    stats_.pending_lines -= work.spool.lines.size();
    stats_.pending_bytes -= work.bytes;
    ++stats_.batches_appended;
    if (o.found_landed) {
        ++stats_.batches_found_landed;
        stats_.lines_found_landed += work.spool.lines.size();
    }
}

// After an attempt that failed: what it learned (its id, its INTENT, lines
// voided) stays with the batch, and the next attempt first finds out
// whether this one wrote.
void Flusher::failed(Pending& q, const std::string& key, Batch work, const AttemptOutcome& o,
                     std::unique_lock<std::mutex>& lock) {
    q.batches.front() = std::move(work);
    ++stats_.append_failures;
    q.last_error = o.error;
    q.last_code = o.code;
    q.permanent = o.code == ErrorCode::Auth;
    q.failed_attempt = o.attempt;
    // A flush() that came in during this attempt gets an attempt of its own now.
    q.retry_at =
        flush_calls_ != o.flush_calls
            ? Clock::now()
            : Clock::now() + random::full_jitter(std::min(q.failures + 1, 10), options_.retry_base, options_.retry_max);
    if (q.failures++ > 0) return;
    q.first_failure = o.started;
    const auto retry_in = std::chrono::duration_cast<std::chrono::milliseconds>(q.retry_at - Clock::now());
    lock.unlock();
    // Once per run of failures: training_output_append_recovered ends it.
    logger_.log(q.permanent ? LogLevel::Error : LogLevel::Warning, "training_output_failed",
                {{"object_key", key},
                 {"lines", static_cast<std::uint64_t>(o.lines_before)},
                 {"bytes", o.bytes_before},
                 {"error", o.error},
                 {"code", error_code_name(o.code)},
                 {"seconds", std::chrono::duration<double>(Clock::now() - o.started).count()},
                 {"retry_in_ms", static_cast<std::int64_t>(std::max<std::int64_t>(0, retry_in.count()))},
                 {"detail", "the lines stay in the spool; retrying with backoff"}});
    lock.lock();
}

}  // namespace training_output
