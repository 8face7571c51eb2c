// The per-key lease (object_appender.hpp): where the store ignores
// If-Match on CompleteMultipartUpload, and for compactions.
#include "append/appender_internal.hpp"
#include "append/object_appender.hpp"
#include "common/crash_point.hpp"
#include "common/crc32c.hpp"
#include "common/random.hpp"

namespace training_output {

using namespace append_detail;

// A Complete under a lease: one attempt, over before half the lease is
// gone, so that it cannot land after the lease could pass to another writer.
WriteConditions ObjectAppender::under_lease(const Lease* lease) const {
    WriteConditions c;
    if (lease) {
        c.single_attempt = true;
        c.timeout = std::chrono::duration_cast<std::chrono::milliseconds>(options_.lease_ttl) * 2 / 5;
    }
    return c;
}

// The lease must have time left for the write about to be sent: renewed
// when half its life is gone, abandoned when renewing fails.
bool ObjectAppender::lease_still_ours(Lease* lease, SinkResponse& failure) {
    if (!lease) return true;
    if (std::chrono::steady_clock::now() - lease->taken < options_.lease_ttl / 2) return true;
    if (renew_lease(*lease)) return true;
    failure = SinkResponse{};
    failure.status = SinkStatus::Conflict;
    failure.detail = "the append lease on " + json::quote(lease->key) + " was lost";
    const std::string key = lease->key.substr(options_.lease_prefix.size());
    *lease = acquire_lease(key, lease->owner, options_.lease_wait);
    if (lease->found_converting) {
        finish_conversion(key, lease);
        lease->found_converting = false;
    }
    return false;
}

std::string ObjectAppender::lease_body(const Lease& lease) const {
    // The renewal count changes the ETag: others see a live holder by it.
    return "{\"owner\":\"" + lease.owner + "\",\"ttl_seconds\":" + std::to_string(options_.lease_ttl.count()) +
           ",\"renewal\":" + std::to_string(lease.renewals) + (lease.converting ? ",\"converting\":true" : "") + "}\n";
}

KeyLease::KeyLease(ObjectAppender& appender, const std::string& key, std::chrono::milliseconds wait) : a_(appender) {
    a_.check_cancelled();
    try {
        lease_ = a_.acquire_lease(key, random::token_hex(16), wait);
    } catch (const Error& e) {
        if (e.code() != ErrorCode::Storage) throw;
        // held by another (or the store did not answer): not held
    }
}

KeyLease::~KeyLease() {
    if (lease_ && !lost_) a_.release_lease(*lease_);
}

bool KeyLease::still_ours() {
    if (!held()) return false;
    a_.check_cancelled();
    if (std::chrono::steady_clock::now() - lease_->taken < a_.options_.lease_ttl / 2) return true;
    lost_ = !a_.renew_lease(*lease_);
    return !lost_;
}

ObjectAppender::Lease ObjectAppender::acquire_lease(const std::string& key, const std::string& owner,
                                                    std::chrono::milliseconds patience) {
    Lease lease;
    lease.key = options_.lease_prefix + key;
    lease.owner = owner;
    // A lease that was not free at once counts as a wait, with its duration.
    struct WaitCount {
        ObjectAppender& self;
        const Lease& lease;
        std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
        ~WaitCount() {
            if (!lease.contended) return;
            self.lease_waits_.fetch_add(1, std::memory_order_relaxed);
            const auto ns =
                std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start);
            self.lease_wait_ns_.fetch_add(static_cast<std::uint64_t>(ns.count()), std::memory_order_relaxed);
        }
    } wait_count{*this, lease};
    const std::string ours = "{\"owner\":\"" + owner + "\"";
    const ObjectAttributes attrs = lease_attributes();
    const auto deadline = std::chrono::steady_clock::now() + patience;
    {
        // Writers waiting for this lease go first: one that just released it
        // would otherwise take it again before they wake (they poll at least
        // every kLeasePollSteps-th backoff step).
        std::unique_lock<std::mutex> lock(seen_mutex_);
        auto it = released_.find(lease.key);
        const auto until = it == released_.end() ? std::chrono::steady_clock::time_point{}
                                                 : it->second + options_.backoff_base * ((1 << kLeasePollSteps) + 4);
        lock.unlock();
        std::unique_lock<std::mutex> wait(cancel_mutex_);
        if (cancel_cv_.wait_until(wait, until, [&] { return cancelled_; })) {
            throw Error(ErrorCode::Closed, "the append was stopped: the writer is closing");
        }
    }
    SinkResponse last;
    int unanswered = 0;         // the store failing, as opposed to the lease being busy
    std::string released_etag;  // our own last release of it, if nobody has taken it since
    {
        std::lock_guard<std::mutex> lock(seen_mutex_);
        auto it = released_etags_.find(lease.key);
        if (it != released_etags_.end()) released_etag = it->second;
    }
    if (!released_etag.empty()) {
        // Most often nobody took it since we released it: one request.
        WriteConditions take;
        take.if_match = released_etag;
        const auto sent = std::chrono::steady_clock::now();
        SinkResponse t = sink_.put(lease.key, lease_body(lease), attrs, take);
        if (t.ok()) {
            lease.etag = t.etag;
            lease.taken = sent;
            lease.after_ours = true;
            return lease;
        }
        if (t.status == SinkStatus::Auth || t.status == SinkStatus::Fatal) give_up(lease.key, t);
    }
    for (int attempt = 0;
         (attempt == 0 || std::chrono::steady_clock::now() < deadline) && unanswered < options_.max_attempts;
         ++attempt) {
        if (attempt > 0) backoff(std::min(attempt, kLeasePollSteps));  // the lease changes hands fast: poll often
        check_cancelled();
        WriteConditions create;
        create.if_none_match_any = true;
        const auto sent = std::chrono::steady_clock::now();
        SinkResponse r = sink_.put(lease.key, lease_body(lease), attrs, create);
        if (r.ok()) {
            lease.etag = r.etag;
            lease.taken = sent;
            return lease;
        }
        if (r.status == SinkStatus::Auth || r.status == SinkStatus::Fatal) give_up(lease.key, r);
        lease.contended = true;  // not free at the first try
        // Held by someone: released, ours after a lost answer, dead, or alive.
        SinkResponse held = sink_.get(lease.key);
        if (held.status == SinkStatus::NotFound) continue;
        if (!held.ok()) {
            ++unanswered;
            last = std::move(held);
            continue;
        }
        const bool was_converting = held.body.find("\"converting\":true") != std::string::npos;
        if (held.body.rfind(ours, 0) == 0) {  // ours: a write of ours landed, its answer did not
            lease.found_converting = was_converting;
            lease.etag = held.etag;
            // Its renewal count, so that our next renewal's body (and ETag) is a new one.
            const auto at = held.body.find("\"renewal\":");
            lease.renewals = at == std::string::npos ? 0 : std::strtoull(held.body.c_str() + at + 10, nullptr, 10);
            lease.taken = std::chrono::steady_clock::now() - options_.lease_ttl;  // age unknown: renew before use
            return lease;
        }
        const bool released = held.body.rfind(kReleasedPrefix, 0) == 0;
        bool expired = false;
        std::chrono::steady_clock::duration age{};
        if (!released) {
            // Its age by our own clock: how long we have seen this very ETag.
            std::lock_guard<std::mutex> lock(seen_mutex_);
            auto& seen = seen_leases_[lease.key];
            const auto now = std::chrono::steady_clock::now();
            if (seen.first != held.etag) seen = {held.etag, now};
            age = now - seen.second;
            expired = age >= options_.lease_ttl;
        }
        if (released || expired) {
            WriteConditions take;
            take.if_match = held.etag;
            const auto taken_sent = std::chrono::steady_clock::now();
            SinkResponse t = sink_.put(lease.key, lease_body(lease), attrs, take);
            if (t.ok()) {
                lease.found_converting = was_converting;
                if (expired && logger_) {
                    logger_->log(LogLevel::Warning, "training_output_lease_taken_over",
                                 {{"key", key},
                                  {"unchanged_for_ms",
                                   static_cast<std::int64_t>(
                                       std::chrono::duration_cast<std::chrono::milliseconds>(age).count())}});
                }
                lease.etag = t.etag;
                lease.taken = taken_sent;
                return lease;
            }
        }
        last = std::move(r);
    }
    throw Error(ErrorCode::Storage,
                "could not take the append lease " + json::quote(lease.key) +
                    (unanswered >= options_.max_attempts ? std::string(": the store does not answer")
                                                         : " within " + std::to_string(patience.count()) + " ms") +
                    "; last answer: " + last.describe());
}

bool ObjectAppender::renew_lease(Lease& lease) {
    Lease next = lease;
    ++next.renewals;
    WriteConditions mine;
    mine.if_match = lease.etag;
    const auto sent = std::chrono::steady_clock::now();
    SinkResponse r = sink_.put(lease.key, lease_body(next), lease_attributes(), mine);
    if (!r.ok() && r.may_have_applied) {
        // The renewal may have landed with its answer lost: the lease says.
        SinkResponse now = sink_.get(lease.key);
        if (now.ok() && now.body == lease_body(next)) r = now;
    }
    if (!r.ok() || r.etag.empty()) return false;
    next.etag = r.etag;
    next.taken = sent;
    lease = next;
    return true;
}

// A conditional overwrite: only our own lease is released (one taken over
// after we stalled belongs to someone else, and keeps its holder). The body
// names us, so that its ETag is new: a request conditional on an earlier
// release's ETag (sent, then delayed) cannot land on this one.
void ObjectAppender::release_lease(const Lease& lease) {
    WriteConditions mine;
    mine.if_match = lease.etag;
    SinkResponse r = sink_.put(lease.key,
                               std::string(kReleasedPrefix) + ",\"by\":\"" + lease.owner + "\"" +
                                   (lease.converting ? ",\"converting\":true" : "") + "}\n",
                               lease_attributes(), mine);
    std::lock_guard<std::mutex> lock(seen_mutex_);
    released_[lease.key] = std::chrono::steady_clock::now();
    if (r.ok() && !r.etag.empty()) {
        // (Not after an unfinished conversion: whoever takes it next must
        // read that from its body.)
        if (lease.converting) {
            released_etags_.erase(lease.key);
        } else {
            released_etags_[lease.key] = r.etag;
        }
    } else {
        released_etags_.erase(lease.key);
    }
}

}  // namespace training_output
