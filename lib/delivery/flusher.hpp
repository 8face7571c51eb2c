// Flusher: the background thread between the spool and the objects. Lines
// that generate() logged in the writer's spool wait here (as references into
// the spool, not copies), grouped per object key, and are appended in batches:
// when a key's pending bytes reach flush_max_bytes, when its oldest line is
// flush_interval old, when the spool is half full, on flush() and on close().
//
// A line is queued when its record is written (under the spool's lock, so
// queues are in sequence order), and becomes deliverable once generate()
// settled its claim: Ready (claimed by this spool), Unconfirmed (the store
// failed, or the line comes from an adopted spool: its claim is confirmed in
// one store call per batch before delivery; a duplicate is voided), or Void.
//
// Per batch: confirm the claims that need it, INTENT (the batch's lines
// exactly, where it is about to be written), the append, the dedup commit,
// DONE. A batch that may have landed (a failed attempt after its INTENT, or
// an INTENT without DONE in an adopted spool) is checked with
// ObjectAppender::check_landed() before anything else of that key is
// appended, so no line is appended twice. A commit that fails is recorded
// in the DONE and retried until it is made (from replay too).
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

#include "append/batch_objects.hpp"
#include "append/object_appender.hpp"
#include "dedup/deduplicator.hpp"
#include "delivery/batch_state.hpp"
#include "delivery/events.hpp"
#include "log/logger.hpp"
#include "spool/spool.hpp"
#include "training_output/error.hpp"

namespace training_output {

struct FlusherOptions {
    std::uint64_t max_bytes = 8u << 20;
    std::chrono::milliseconds interval{5000};
    std::chrono::milliseconds timeout{30000};
    std::chrono::milliseconds retry_base{200};
    std::chrono::milliseconds retry_max{30000};
    std::uint64_t hurry_bytes = UINT64_MAX;  // pending bytes above which every key is due
    std::chrono::milliseconds adopt_interval{10000};
    std::chrono::milliseconds maintain_interval{5000};  // dedup store housekeeping
    // Adopted lines held at once (their positions are in memory); more
    // orphans are adopted as these are delivered.
    std::uint64_t adopt_max_bytes = UINT64_MAX;
    // s3_append_mode=batches: each batch is written as its own object
    // (BatchObjects), folded into the key's object by compactions.
    bool batch_objects = false;
    // Called once per batch that landed, after its DONE, in landing order,
    // on a thread of its own (LandedEvents): never for one that did not,
    // never twice for one (a batch a dead writer landed without recording
    // its DONE is reported by its adopter). flush() returns once the calls
    // for what it delivered are made. Must not throw.
    std::function<void(const LandedBatch&)> on_landed;
};

struct FlusherStats {
    std::uint64_t lines_appended = 0;
    std::uint64_t bytes_appended = 0;
    std::uint64_t batches_appended = 0;
    std::uint64_t append_failures = 0;
    std::uint64_t pending_lines = 0;
    std::uint64_t pending_bytes = 0;
    std::uint64_t batches_found_landed = 0;  // an earlier attempt or a dead writer had appended them
    std::uint64_t lines_found_landed = 0;    // their lines (counted in lines_appended too)
    std::uint64_t spools_adopted = 0;
    std::uint64_t lines_recovered = 0;  // from adopted spools
    std::uint64_t torn_records = 0;     // dropped from adopted spools (bad checksum)
    std::uint64_t lines_voided = 0;     // found to be duplicates when their claims were confirmed
    std::uint64_t pending_commits = 0;  // keys of landed lines whose commit is still to be made
    std::chrono::steady_clock::time_point
        oldest_pending{};  // when the oldest undelivered line was accepted (none: epoch)
};

class Flusher {
public:
    enum class LineState : std::uint8_t { Claiming, Ready, Unconfirmed, Void };
    struct Line {
        SpoolLineRef ref;
        std::chrono::steady_clock::time_point accepted;
        LineState state = LineState::Claiming;
    };
    // A batch, once built from the front of a key's queue (or adopted): it
    // is delivered whole before the queue's later lines.
    struct Batch {
        SpoolBatch spool;                                // id (0 until the spool gives one), key, lines
        std::vector<LineState> states;                   // Ready or Unconfirmed, per line
        std::uint64_t bytes = 0;                         // of its lines
        std::chrono::steady_clock::time_point accepted;  // its oldest line's
        std::optional<BatchIntent> intent;               // an attempt was recorded: it may have landed
        bool complete = true;     // every line its INTENT names is here (adopted ones may not be)
        std::uint64_t epoch = 0;  // the liveness epoch its Ready states hold in
        // Batch objects: how many times its name was found fenced while it
        // still had lines (a writer that took claims over from this spool
        // fenced it): the next name's spool part gets one 'f' more.
        unsigned fenced_names = 0;
        BatchState state = BatchState::Queued;  // changed by set_state() only
    };
    struct Pending {
        std::deque<Line> lines;     // in sequence order
        std::uint64_t bytes = 0;    // of the queued lines that are not void
        std::deque<Batch> batches;  // delivered before the queue
        bool in_flight = false;
        int failures = 0;                                       // in a row
        std::chrono::steady_clock::time_point first_failure{};  // of those in a row
        std::chrono::steady_clock::time_point retry_at{};
        std::string last_error;
        ErrorCode last_code = ErrorCode::Storage;
        bool permanent = false;            // last failure was auth
        std::uint64_t failed_attempt = 0;  // which attempt failed last
        // Congestion control: this key's flush interval (0: the configured
        // one). It doubles, up to 8 times the configured one, after an append
        // that other writers were in the way of (a lease not free, a write
        // lost to another's), and comes back by half the configured one after
        // each append that met nobody: a fleet sharing a key appends larger
        // batches, less often, instead of queueing for it.
        std::chrono::milliseconds interval{0};
    };
    struct Handle {
        Line* line = nullptr;
        Pending* slot = nullptr;
    };

    // Adopts what writers that died left in spools like `own` (the orphans
    // Spool::adopt_orphans() finds with `spools`) before returning.
    // `batches` writes (and checks) batches as objects of their own: in the
    // batches mode, and for a batch an earlier writer left undecided in it.
    Flusher(ObjectAppender& appender, BatchObjects& batches, TrainingDeduplicator& dedup, const Logger& logger,
            FlusherOptions options, Spool& own, SpoolOptions spools);
    ~Flusher();  // stops without flushing; call close() first to deliver
    Flusher(const Flusher&) = delete;
    Flusher& operator=(const Flusher&) = delete;

    // A line just logged in the own spool (called under the spool's lock,
    // while Spool::log_line()'s LoggedLine lives). Not delivered until settled.
    Handle add(const std::string& object_key, const SpoolLineRef& ref);
    // The line's claim was decided: Ready, Unconfirmed or Void (already
    // recorded as void in the spool). `claim_epoch`: the deduplicator's
    // liveness epoch when the claim was made; a claim made before the
    // owners' liveness lapsed is confirmed again.
    void settle(Handle handle, LineState state, std::uint64_t claim_epoch);
    // The line's content is written already or held elsewhere: a VOID record
    // in `spool`, then settled Void. When the record cannot be written the
    // line is settled Unconfirmed (confirming its claim before delivery
    // voids it) and the error logged; returns false then.
    bool void_line(Spool& spool, Handle handle, const std::string& object_key, const SpoolLineRef& ref,
                   std::uint64_t claim_epoch);
    // Lines settled Void after generate() answered (their claim found the
    // content written or held elsewhere): counted in lines_voided.
    void count_voided(std::size_t lines);
    // Every line added (or adopted) before the call is in its object, or
    // throws Error(Timeout) after the timeout, Error(Auth | Storage) at once
    // when the store refuses for good. Lines not delivered stay spooled.
    void flush();
    // flush(), then stop the thread. Throws (as flush()) when lines remain in
    // the spool; the next writer that opens on it delivers them.
    void close();
    FlusherStats stats() const;
    // Looks for orphaned spools to adopt now rather than at the next
    // adopt_interval (on the flusher's thread).
    void adopt_soon();

private:
    struct PendingCommit {
        Spool* spool = nullptr;
        std::uint64_t batch = 0;
        std::vector<std::string> keys;
    };
    using Slot = std::pair<Spool*, std::string>;  // spool, object key

    void run();
    void flush_lines();
    void adopt_now();
    bool due(const Pending& p, Spool* spool, std::chrono::steady_clock::time_point now) const;
    std::chrono::milliseconds interval_of(const Pending& p) const;
    std::chrono::steady_clock::time_point next_wake(std::chrono::steady_clock::time_point now) const;
    void deliver(const Slot& slot, std::unique_lock<std::mutex>& lock);
    bool take_batch(Pending& p, const std::string& key);
    // What one delivery attempt did, for the queue's bookkeeping.
    struct AttemptOutcome {
        std::size_t lines_before = 0;
        std::uint64_t bytes_before = 0;
        std::uint64_t attempt = 0;      // its number
        std::uint64_t flush_calls = 0;  // flush() calls started before it
        std::chrono::steady_clock::time_point started;
        bool appended = false, found_landed = false, contended = false;
        std::string error;  // empty: it succeeded
        ErrorCode code = ErrorCode::Storage;
    };
    void delivered(Pending& q, const std::string& key, const Batch& work, const AttemptOutcome& o,
                   std::unique_lock<std::mutex>& lock);
    void failed(Pending& q, const std::string& key, Batch work, const AttemptOutcome& o,
                std::unique_lock<std::mutex>& lock);
    // deliver.cpp: one batch's way to its object, without the lock.
    // What one attempt read of the batch, and learned on its way.
    struct Attempt {
        std::string bytes;                     // its lines, as written
        std::vector<std::string> keys;         // their dedup keys ("" for none)
        LandedBatch where;                     // where it landed
        std::optional<BatchIntent> undecided;  // an earlier write of it that may still land
        std::chrono::steady_clock::time_point started;
        bool complete_at_start = true;  // every line its INTENT names is here
        std::uint64_t written_at_start = 0;
    };
    // The work of one delivery. Returns false when the batch's lines were
    // all voided before anything was written. `contended`: other writers
    // were in the way of the append (congestion).
    bool append_batch(Spool& spool, Batch& batch, bool& found_landed, bool& contended);
    bool check_earlier(Batch& batch, Attempt& a);
    bool write(Spool& spool, Batch& batch, Attempt& a, bool& found_landed, bool& contended);
    void land(Spool& spool, Batch& batch, Attempt& a, std::optional<Batch>& as_before, bool& found_landed,
              bool& contended);
    void before_write(Spool& spool, Batch& batch, const Attempt& a, const BatchIntent& intent);
    AppendResult append_to_object(Spool& spool, Batch& batch, const Attempt& a, std::uint32_t crc,
                                  std::optional<BatchIntent>& left);
    bool finish(Spool& spool, Batch& batch, Attempt& a, bool found_landed);
    // The one place a batch's state changes: logs the transition (debug),
    // and one the protocol does not make (error).
    void set_state(Batch& batch, BatchState to) const;
    // A gone owner's batches in flight, settled before its claims are taken
    // over (OwnersToSettle).
    bool settle_inflight_of(const std::string& gone);
    bool settle_gone_owners();
    // The batch object's record in the dedup store, once its keys are committed (best effort).
    void forget_inflight(const std::string& owner, const std::string& object_key);
    // A line confirm() found delivered elsewhere, whose VOID record waits.
    struct Voided {
        SpoolLineRef ref;
        std::string key;
        ClaimOutcome outcome;
    };
    // With `later`, the voided lines are left out of the batch but not yet
    // recorded as voided: the caller records them (record_voided) once the
    // batch's write settled it.
    void confirm(Spool& spool, Batch& batch, std::string& bytes, std::vector<std::string>& keys,
                 std::vector<Voided>* later = nullptr);
    void record_voided(Spool& spool, const std::string& object_key, const std::vector<Voided>& voided);
    void retry_commits(std::unique_lock<std::mutex>& lock);
    void reconfirm_all();
    bool flushed(const std::map<Spool*, std::uint64_t>& targets) const;
    void drop_finished_spools(std::unique_lock<std::mutex>& lock);

    ObjectAppender& appender_;
    BatchObjects& batches_;
    TrainingDeduplicator& dedup_;
    const Logger& logger_;
    FlusherOptions options_;
    Spool& own_;
    SpoolOptions spools_;  // where orphans are looked for

    mutable std::mutex mutex_;
    std::condition_variable wake_;      // the thread
    std::condition_variable progress_;  // flush() waiters
    std::map<Slot, Pending> pending_;
    std::map<Slot, Pending>::iterator own_last_ = pending_.end();  // where add() put the last line
    std::vector<std::unique_ptr<Spool>> adopted_;
    std::vector<PendingCommit> commits_;  // landed, commit still to be made
    std::chrono::steady_clock::time_point commits_retry_at_{};
    int commit_failures_ = 0;
    std::map<Spool*, std::uint64_t> flush_targets_;  // flush lines up to these seqs now
    std::chrono::steady_clock::time_point next_adopt_;
    std::chrono::steady_clock::time_point next_maintain_;
    std::uint64_t epoch_ = 0;        // the deduplicator's liveness epoch the queues were confirmed in
    std::uint64_t attempts_ = 0;     // deliveries started
    std::uint64_t flush_calls_ = 0;  // flush() calls started
    bool stopping_ = false;
    FlusherStats stats_;
    std::unique_ptr<LandedEvents> events_;  // options_.on_landed's, when set
    std::thread thread_;
};

}  // namespace training_output
