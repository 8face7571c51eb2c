// One batch's way to its object (flusher.hpp): the checks, the claims
// confirmed, the INTENT, the write, the commit and the DONE, each step a
// change of the batch's state (batch_state.hpp). The queues, the thread and
// the adoption of dead writers' spools are in flusher.cpp.
#include <exception>

#include "common/crash_point.hpp"
#include "common/crc32c.hpp"
#include "delivery/flusher.hpp"

namespace training_output {

using Clock = std::chrono::steady_clock;
using LineState = Flusher::LineState;

// The dedup store would take claims over from `gone`, an owner whose
// liveness lapsed, once each batch object it named before writing is
// settled (OwnersToSettle). One that landed (or was folded) is delivered:
// its keys are committed, so that the taker finds them written. One that
// has not is fenced: an empty object under its name, with If-None-Match: *,
// so that a write of it the network still holds is refused when it arrives
// (412).
// False when that cannot be done now: the claims stay the gone owner's, and
// the next confirmation tries again.
bool Flusher::settle_inflight_of(const std::string& gone) {
    try {
        std::vector<std::string> settled;
        std::int64_t fenced = 0, landed = 0;
        for (const InflightBatch& b : dedup_.store().inflight(gone)) {
            const auto month = batch_objects::month_of(b.object_key);
            if (month) {
                const BatchIntent in = batch_objects::intent(*month, b.object_key, b.bytes);
                Landed l = batches_.check_landed(in);
                if (l == Landed::NotYet) {
                    batches_.land(*month, b.object_key, std::string_view(), nullptr);  // 412: something is there
                    l = batches_.check_landed(in);
                }
                if (l == Landed::Yes) {
                    if (!dedup_.commit(b.keys)) return false;
                    ++landed;
                } else if (l == Landed::No) {
                    ++fenced;
                } else {
                    return false;
                }
            }
            settled.push_back(b.object_key);
        }
        if (settled.empty()) return true;
        dedup_.store().clear_inflight(gone, settled, dedup_.claim_ttl());
        logger_.log(LogLevel::Info, "training_output_takeover_settled",
                    {{"owner", gone}, {"batches_fenced", fenced}, {"batches_landed", landed}});
        return true;
    } catch (const std::exception& e) {
        logger_.log(LogLevel::Warning, "training_output_takeover_deferred", {{"owner", gone}, {"error", e.what()}});
        return false;
    }
}

// The owners whose claims a claim found to take over once their batches
// are settled: settled now. True when one was.
bool Flusher::settle_gone_owners() {
    std::vector<std::string> later;
    bool settled = false;
    for (const auto& gone : dedup_.take_owners_to_settle()) {
        if (settle_inflight_of(gone)) {
            settled = true;
        } else {
            later.push_back(gone);
        }
    }
    if (!later.empty()) dedup_.settle_later(later);
    return settled;
}

void Flusher::forget_inflight(const std::string& owner, const std::string& object_key) {
    try {
        dedup_.store().clear_inflight(owner, {object_key}, dedup_.claim_ttl());
    } catch (const std::exception&) {
        // Kept until the claims' TTL: a writer that takes this one's claims
        // over finds the batch landed and commits its keys again (harmless).
    }
}

// Claims that need confirming (adopted lines, lines claimed while the store
// failed or the owners' liveness lapsed), in one store call: a line whose
// content another owner delivers, or that is written already, is voided.
void Flusher::confirm(Spool& spool, Batch& b, std::string& bytes, std::vector<std::string>& keys,
                      std::vector<Voided>* later) {
    std::vector<std::string> asked;
    std::vector<std::size_t> index;
    for (std::size_t i = 0; i < b.spool.lines.size(); ++i) {
        if (b.states[i] == LineState::Unconfirmed && !keys[i].empty()) {
            asked.push_back(keys[i]);
            index.push_back(i);
        }
    }
    if (asked.empty()) return;
    set_state(b, BatchState::Confirming);
    settle_gone_owners();  // those an earlier claim named
    auto outcomes = dedup_.confirm_batch(asked, spool.id());
    // Claims of gone owners with batches in flight: taken over once those
    // are settled (else they fail open, as on any store failure).
    if (settle_gone_owners()) outcomes = dedup_.confirm_batch(asked, spool.id());
    std::vector<bool> voided(b.spool.lines.size(), false);
    std::size_t count = 0;
    for (std::size_t j = 0; j < outcomes.size(); ++j) {
        const std::size_t i = index[j];
        if (outcomes[j] == ClaimOutcome::Duplicate || outcomes[j] == ClaimOutcome::Pending) {
            Voided v{b.spool.lines[i], keys[i], outcomes[j]};
            if (later) {
                later->push_back(std::move(v));
            } else {
                record_voided(spool, b.spool.object_key, {v});
            }
            voided[i] = true;
            ++count;
        } else if (outcomes[j] == ClaimOutcome::Claimed) {
            b.states[i] = LineState::Ready;
        }
    }
    if (count == 0) return;
    Batch kept;
    kept.spool.id = b.spool.id;
    kept.spool.object_key = b.spool.object_key;
    kept.accepted = b.accepted;
    kept.epoch = b.epoch;
    kept.state = b.state;
    std::string kept_bytes;
    std::vector<std::string> kept_keys;
    std::size_t at = 0;
    for (std::size_t i = 0; i < b.spool.lines.size(); ++i) {
        const auto& ref = b.spool.lines[i];
        if (!voided[i]) {
            kept.spool.lines.push_back(ref);
            kept.states.push_back(b.states[i]);
            kept.bytes += ref.line_bytes;
            kept_bytes.append(bytes, at, ref.line_bytes);
            kept_keys.push_back(std::move(keys[i]));
        }
        at += ref.line_bytes;
    }
    b = std::move(kept);
    bytes = std::move(kept_bytes);
    keys = std::move(kept_keys);
    logger_.log(LogLevel::Info, "training_output_lines_voided",
                {{"object_key", b.spool.object_key},
                 {"lines", static_cast<std::uint64_t>(count)},
                 {"detail", "their content is written already or being delivered by another writer"}});
}

void Flusher::record_voided(Spool& spool, const std::string& object_key, const std::vector<Voided>& voided) {
    for (const auto& v : voided) {
        spool.record_void(object_key, v.ref);
        dedup_.settled_elsewhere(v.key, spool.id(), v.outcome);
    }
}

void Flusher::set_state(Batch& b, BatchState to) const {
    const BatchState from = b.state;
    if (from == to) return;
    b.state = to;
    if (!batch_transition_allowed(from, to)) {
        logger_.log(LogLevel::Error, "training_output_batch_state_unexpected",
                    {{"object_key", b.spool.object_key},
                     {"batch", b.spool.id},
                     {"from", batch_state_name(from)},
                     {"to", batch_state_name(to)},
                     {"detail", "a transition the delivery protocol does not make: please report it"}});
        return;
    }
    if (!logger_.enabled(LogLevel::Debug)) return;
    logger_.log(LogLevel::Debug, "training_output_batch_state",
                {{"object_key", b.spool.object_key},
                 {"batch", b.spool.id},
                 {"from", batch_state_name(from)},
                 {"to", batch_state_name(to)},
                 {"lines", static_cast<std::uint64_t>(b.spool.lines.size())}});
}

// One attempt, straight through: an earlier write that may have landed is
// checked first; if it did not, the claims that need it are confirmed, the
// INTENT recorded and the batch written (each retry of the write after its
// INTENT); then its keys are committed and its DONE recorded.
bool Flusher::append_batch(Spool& spool, Batch& b, bool& found_landed, bool& contended) {
    if (b.spool.id == 0) b.spool.id = spool.new_batch_id();
    Attempt a;
    a.started = Clock::now();
    a.complete_at_start = b.complete;
    a.written_at_start = b.intent ? b.intent->bytes : 0;
    a.bytes.reserve(b.bytes);
    a.keys.reserve(b.spool.lines.size());
    spool.read_batch(b.spool.lines, a.bytes, a.keys);
    found_landed = b.intent && check_earlier(b, a);
    if (!found_landed && !write(spool, b, a, found_landed, contended)) return false;
    return finish(spool, b, a, found_landed);
}

// Did the write its INTENT records land? Yes: where, in `a`. Not yet (it may
// still): the write of it is `a.undecided`. Throws when the store cannot tell.
bool Flusher::check_earlier(Batch& b, Attempt& a) {
    const BatchIntent& in = *b.intent;
    const Landed l = in.as_object() ? batches_.check_landed(in)
                     : b.complete   ? appender_.check_landed(in, a.bytes)
                                    : appender_.check_landed(in);
    if (l == Landed::Unknown) throw Error(ErrorCode::Storage, "cannot tell whether a batch landed");
    if (l == Landed::NotYet) a.undecided = in;
    if (l == Landed::No) set_state(b, BatchState::Queued);
    if (l != Landed::Yes) return false;
    a.where.batch_object = in.as_object();
    a.where.key = in.as_object() ? in.batch_object : b.spool.object_key;
    a.where.offset = in.offset;
    set_state(b, BatchState::Landed);
    crash_point("flusher.after_check");
    return true;
}

// Before every write of `b`, retries included: its claims still hold, its
// INTENT is recorded (and a batch object named in the dedup store).
void Flusher::before_write(Spool& spool, Batch& b, const Attempt& a, const BatchIntent& in) {
    // A claim of this batch may have been taken over since it started if the
    // liveness lapsed, even if it is fresh again now.
    if (!dedup_.may_deliver(b.epoch)) {
        throw Error(ErrorCode::Storage,
                    dedup_.may_deliver()
                        ? "this writer's liveness lapsed while the batch was on its way: its claims are "
                          "confirmed again before it is written"
                        : "the dedup store cannot confirm this writer's liveness: the batch waits for it");
    }
    // (A fence of no lines keeps the earlier INTENT: a replay checks its
    // name again, and finds the fence, not the batch.)
    if (!a.bytes.empty()) {
        spool.record_intent(b.spool, in);
        set_state(b, BatchState::IntentRecorded);
    }
    crash_point("flusher.after_intent");
    // A batch object is named in the dedup store too, with its keys, where a
    // writer that takes this one's claims over when its liveness lapsed
    // (Redis) finds it, and fences the name before writing them
    // (settle_inflight_of(), when the store answers OwnersToSettle).
    if (in.as_object() && !a.bytes.empty()) {
        InflightBatch inflight{in.batch_object, a.bytes.size(), {}};
        for (const auto& k : a.keys)
            if (!k.empty()) inflight.keys.push_back(k);
        dedup_.store().record_inflight(spool.id(), inflight, dedup_.claim_ttl());
    }
    set_state(b, BatchState::Writing);
}

// The claims that need it confirmed, then the batch written once. False when
// every line was voided before anything was written.
bool Flusher::write(Spool& spool, Batch& b, Attempt& a, bool& found_landed, bool& contended) {
    // A batch object that may still land: the lines found delivered
    // elsewhere, voided once what is written under its name settled it.
    std::vector<Voided> voided_later;
    std::optional<Batch> as_before;  // restored if that write fails
    struct Restore {
        std::optional<Batch>& as_before;
        Batch& b;
        ~Restore() {
            if (as_before) b = std::move(*as_before);
        }
    } restore{as_before, b};
    if (!a.undecided) {
        // Nothing of it can land any more: it may change. Its claims are
        // confirmed (a batch that may still land in the monthly object is
        // written as it was, whatever its claims say: it may be in the object
        // already, and another writer's append since moved the object's
        // ETag, so that it cannot land).
        b.intent.reset();
        b.complete = true;
        confirm(spool, b, a.bytes, a.keys);
        if (b.spool.lines.empty()) {
            set_state(b, BatchState::Voided);
            return false;
        }
    } else if (a.undecided->as_object()) {
        // A batch object that may still land keeps its name, and its claims
        // are confirmed all the same: its writer may have died, or lapsed,
        // and another writer taken its content over and written it in a
        // batch object of its own (nothing else moved). What is written
        // under the name now, its lines still ours (or, when none is, an
        // empty object that fences the name), and the earlier write both go
        // with If-None-Match: *: only one lands.
        as_before = b;
        confirm(spool, b, a.bytes, a.keys, &voided_later);
        if (voided_later.empty()) as_before.reset();  // unchanged: the same write again
    }
    crash_point("flusher.after_confirm");
    land(spool, b, a, as_before, found_landed, contended);
    // Settled under its name: the lines delivered elsewhere are voided now.
    record_voided(spool, b.spool.object_key, voided_later);
    as_before.reset();
    return true;
}

// Writes the batch: as its own object, once, or appended to the monthly
// object, each attempt's write after its INTENT. On every way out,
// `b` keeps what of it may still land: the earlier write, if no new one was
// sent (the liveness check before it failed), else the new one; none when
// the failures were decided (the INTENT in the spool stays, to be checked
// after a crash). Once it landed, that is the write that landed, so that an
// attempt that fails after it (a VOID or its DONE cannot be written) is
// followed by one that finds it in its object.
void Flusher::land(Spool& spool, Batch& b, Attempt& a, std::optional<Batch>& as_before, bool& found_landed,
                   bool& contended) {
    const std::uint32_t crc = crc32c::compute(a.bytes);
    std::optional<BatchIntent> left = a.undecided;
    struct Keep {
        const Flusher& f;
        Batch& b;
        std::optional<BatchIntent>& left;
        std::uint64_t bytes;
        std::uint32_t crc;
        int unwinding = std::uncaught_exceptions();
        ~Keep() {
            if (left) {
                b.intent = left;
                // Checked by its bytes when the write that may land is this one.
                b.complete = left->bytes == bytes && left->crc == crc;
            } else {
                b.intent.reset();
                b.complete = true;
            }
            if (std::uncaught_exceptions() > unwinding) {
                f.set_state(b, left ? BatchState::MayHaveLanded : BatchState::Queued);
            }
        }
    } keep{*this, b, left, a.bytes.size(), crc};
    // A batch object keeps its name (its INTENT's) until it landed.
    const bool as_object = a.undecided ? a.undecided->as_object() : options_.batch_objects;
    const std::string batch_key =
        !as_object    ? std::string()
        : a.undecided ? a.undecided->batch_object
                      : batch_objects::key(b.spool.object_key, spool.id() + std::string(b.fenced_names, 'f'),
                                           b.spool.lines.front().seq);
    AppendResult r;
    try {
        if (as_object) {
            const BatchIntent in = batch_objects::intent(b.spool.object_key, batch_key, a.bytes.size(), crc);
            before_write(spool, b, a, in);
            r = batches_.land(in, a.bytes, &left);
        } else {
            r = append_to_object(spool, b, a, crc, left);
        }
    } catch (const FencedName&) {
        // The next attempt (its claims confirmed again) takes another name.
        ++b.fenced_names;
        if (as_before) ++as_before->fenced_names;
        throw;
    }
    found_landed = r.found_landed;
    a.where.batch_object = as_object;
    a.where.key = as_object ? batch_key : b.spool.object_key;
    a.where.offset = as_object ? 0 : r.offset;
    contended = r.contended;
    set_state(b, BatchState::Landed);
    crash_point("flusher.after_land");
    if (as_object) {
        left = batch_objects::intent(b.spool.object_key, batch_key, a.bytes.size(), crc);
    } else if (!a.bytes.empty()) {
        left = BatchIntent{b.spool.object_key, "", r.offset, "", a.bytes.size(), crc};
    }
}

// The attempt loop of an append to the monthly object: each write the
// appender makes ready is sent once its INTENT is recorded. On every way
// out, `left` is the write of it that may still land.
AppendResult Flusher::append_to_object(Spool& spool, Batch& b, const Attempt& a, std::uint32_t crc,
                                       std::optional<BatchIntent>& left) {
    AppendJob job(appender_, b.spool.object_key, a.bytes, crc, a.undecided);
    try {
        while (const BatchIntent* in = job.prepare()) {
            before_write(spool, b, a, *in);
            job.write_once();
        }
    } catch (...) {
        left = job.undecided();
        throw;
    }
    left = job.undecided();
    return job.result();
}

// The commit before DONE: a crash in between finds the batch landed again
// and commits then. A failed commit is recorded in the DONE and retried
// until it is made. False when only a fence was written.
bool Flusher::finish(Spool& spool, Batch& b, Attempt& a, bool found_landed) {
    std::vector<std::string> commit_keys;
    for (auto& k : a.keys) {
        if (!k.empty()) commit_keys.push_back(std::move(k));
    }
    const bool committed = dedup_.commit(commit_keys);
    set_state(b, BatchState::Committed);
    crash_point("flusher.after_commit");
    if (committed && a.where.batch_object) forget_inflight(spool.id(), a.where.key);
    try {
        spool.record_done(b.spool, committed ? std::vector<std::string>() : commit_keys);
    } catch (...) {
        set_state(b, BatchState::MayHaveLanded);  // found in its object by the next attempt
        throw;
    }
    set_state(b, BatchState::Done);
    crash_point("flusher.after_done");
    if (b.spool.lines.empty()) return false;  // only a fence was written
    if (events_) {
        // What landed is the batch as its INTENT recorded it: the bytes at
        // hand, unless lines of it were missing from an adopted spool.
        const bool exact = a.complete_at_start || !found_landed;
        a.where.size = exact ? a.bytes.size() : a.written_at_start;
        a.where.bytes = exact ? std::string_view(a.bytes) : std::string_view();
        a.where.lines = b.spool.lines.size();
        a.where.seconds = std::chrono::duration<double>(Clock::now() - a.started).count();
        a.where.done_at = std::chrono::system_clock::now();
        // Its bytes go with it (the attempt is over): nothing is copied.
        events_->post(a.where, exact ? std::move(a.bytes) : std::string());
    }
    if (!committed) {
        std::lock_guard<std::mutex> lock(mutex_);
        stats_.pending_commits += commit_keys.size();
        commits_.push_back(PendingCommit{&spool, b.spool.id, std::move(commit_keys)});
        if (commits_.size() == 1) commits_retry_at_ = Clock::now() + options_.retry_base;
    }
    return true;
}

}  // namespace training_output
