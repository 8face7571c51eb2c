// TrainingDeduplicator: keys, the fail-open policy, and owner liveness.
#include "dedup/deduplicator.hpp"

#include <algorithm>
#include <utility>

#include "common/sha256.hpp"
#include "common/thread.hpp"
#include "training_output/error.hpp"

namespace training_output {
namespace {

using Clock = std::chrono::steady_clock;
constexpr std::size_t kMaxOwnersToSettle = 256;

std::int64_t now_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
}

std::int64_t ns(std::chrono::seconds s) { return std::chrono::duration_cast<std::chrono::nanoseconds>(s).count(); }

}  // namespace

TrainingDeduplicator::TrainingDeduplicator(std::unique_ptr<DedupStore> store, DeduplicatorOptions options,
                                           const Logger* logger)
    : store_(std::move(store)),
      options_(std::move(options)),
      memory_(KeyMemory::for_store(
          store_->identity().empty() ? std::string() : store_->identity() + "#" + options_.key_namespace,
          options_.remembered_commits)),
      logger_(logger),
      owner_ttl_(store_->owner_ttl()) {
    if (owner_ttl_.count() > 0) refresher_ = start_thread([this] { refresher(); });
}

TrainingDeduplicator::~TrainingDeduplicator() {
    {
        std::lock_guard<std::mutex> lock(owners_mutex_);
        stopping_ = true;
    }
    stop_cv_.notify_all();
    if (refresher_.joinable()) refresher_.join();
}

std::string TrainingDeduplicator::key_for(const Sha256& hash) const {
    std::string key;
    key.reserve(options_.key_namespace.size() + 65);
    key.append(options_.key_namespace);
    key.push_back(':');
    crypto::append_hex(key, hash.data(), hash.size());
    return key;
}

std::uint32_t TrainingDeduplicator::owner_tag(const std::string& owner) {
    std::lock_guard<std::mutex> lock(tags_mutex_);
    auto it = tags_.find(owner);
    if (it != tags_.end()) return it->second;
    const std::uint32_t tag = memory_->owner_tag(owner);
    tags_.emplace(owner, tag);
    return tag;
}

Precheck TrainingDeduplicator::precheck(const Sha256& hash, const std::string& key, const std::string& owner) {
    // While the store is known to fail, nothing is deduplicated (fail open):
    // what is written then is written whatever this process saw before.
    if (in_outage_.load(std::memory_order_relaxed)) return Precheck::New;
    KeyMemory::Hash h;
    std::copy(hash.begin(), hash.end(), h.begin());
    const std::uint32_t me = owner_tag(owner);
    switch (memory_->check_and_reserve(h, me)) {
        case KeyMemory::Seen::Committed: return Precheck::Duplicate;
        case KeyMemory::Seen::InFlight: return Precheck::Pending;  // this owner's line, or another's here
        case KeyMemory::Seen::None: break;
    }
    std::optional<KeyState> known;
    try {
        known = store_->lookup(key, owner);
        if (known) on_store_success();  // (nullopt: the store was not asked)
    } catch (const std::exception& e) {
        on_store_error("lookup", e);  // fail open: a new line
    }
    if (!known || *known == KeyState::Absent) return Precheck::New;
    memory_->forget(h, me);
    switch (*known) {
        case KeyState::Committed: memory_->committed({h}, options_.committed_ttl.count()); return Precheck::Duplicate;
        case KeyState::Own: return Precheck::Pending;  // a line of this owner holds it
        case KeyState::Other: return Precheck::Held;   // settled by a claim: its owner may be gone
        case KeyState::Absent: break;
    }
    return Precheck::New;
}

void TrainingDeduplicator::forget(const std::string& key, const std::string& owner) {
    KeyMemory::Hash h;
    if (KeyMemory::parse(key, h)) memory_->forget(h, owner_tag(owner));
}

void TrainingDeduplicator::settled_elsewhere(const std::string& key, const std::string& owner, ClaimOutcome outcome) {
    KeyMemory::Hash h;
    if (!KeyMemory::parse(key, h)) return;
    if (outcome == ClaimOutcome::Duplicate) {
        memory_->settle_elsewhere(h, owner_tag(owner), KeyMemory::Settled::Committed, options_.committed_ttl.count());
    } else if (outcome == ClaimOutcome::Pending) {
        memory_->settle_elsewhere(h, owner_tag(owner), KeyMemory::Settled::Held, 5);
    } else {
        memory_->forget(h, owner_tag(owner));
    }
}

void TrainingDeduplicator::forget_owner(const std::string& owner) { memory_->forget_owner(owner_tag(owner)); }

std::vector<ClaimOutcome> TrainingDeduplicator::claim_group(const std::vector<std::string>& keys,
                                                            const std::string& owner) {
    // After an outage, refresh here rather than wait for the refresher.
    return claim_many(keys, owner, false, !owners_fresh() && !try_refresh());
}

std::vector<ClaimOutcome> TrainingDeduplicator::claim_many(const std::vector<std::string>& keys,
                                                           const std::string& owner, bool confirming, bool not_fresh) {
    if (keys.empty()) return {};
    if (not_fresh) return std::vector<ClaimOutcome>(keys.size(), ClaimOutcome::FailedOpen);
    std::vector<ClaimOutcome> out;
    out.reserve(keys.size());
    try {
        for (ClaimState s : store_->claim_batch(keys, owner, options_.claim_ttl)) out.push_back(outcome(s, confirming));
        on_store_success();
    } catch (const OwnersToSettle& e) {
        on_owners_to_settle(e);
        out.assign(keys.size(), ClaimOutcome::FailedOpen);
    } catch (const std::exception& e) {
        on_store_error("claim", e);
        out.assign(keys.size(), ClaimOutcome::FailedOpen);
    }
    return out;
}

ClaimOutcome TrainingDeduplicator::outcome(ClaimState state, bool confirming) {
    switch (state) {
        case ClaimState::Claimed: return ClaimOutcome::Claimed;
        case ClaimState::Own: return confirming ? ClaimOutcome::Claimed : ClaimOutcome::Pending;
        case ClaimState::Committed: return ClaimOutcome::Duplicate;
        case ClaimState::Held: return ClaimOutcome::Pending;
    }
    return ClaimOutcome::FailedOpen;
}

bool TrainingDeduplicator::try_refresh() {
    // At most once a second, so that an outage costs the callers nothing.
    const std::int64_t now = now_ns();
    std::int64_t last = last_inline_refresh_ns_.load(std::memory_order_relaxed);
    if (now - last < 1000000000 || !last_inline_refresh_ns_.compare_exchange_strong(last, now)) return false;
    return refresh();
}

ClaimOutcome TrainingDeduplicator::claim(const std::string& key, const std::string& owner) {
    // After an outage, refresh here rather than wait for the refresher.
    if (!owners_fresh() && !try_refresh()) return ClaimOutcome::FailedOpen;
    try {
        ClaimState state = store_->claim(key, owner, options_.claim_ttl);
        on_store_success();
        return outcome(state, false);
    } catch (const OwnersToSettle& e) {
        on_owners_to_settle(e);
        return ClaimOutcome::FailedOpen;
    } catch (const std::exception& e) {
        on_store_error("claim", e);
        return ClaimOutcome::FailedOpen;
    }
}

std::vector<ClaimOutcome> TrainingDeduplicator::confirm_batch(const std::vector<std::string>& keys,
                                                              const std::string& owner) {
    return claim_many(keys, owner, true, !owners_fresh());
}

bool TrainingDeduplicator::commit(const std::vector<std::string>& keys) {
    if (keys.empty()) return true;
    std::vector<KeyMemory::Hash> landed;
    landed.reserve(keys.size());
    for (const auto& key : keys) {
        KeyMemory::Hash h;
        if (KeyMemory::parse(key, h)) landed.push_back(h);
    }
    memory_->committed(landed, options_.committed_ttl.count());
    try {
        store_->commit(keys, options_.committed_ttl);
        on_store_success();
        return true;
    } catch (const std::exception& e) {
        on_store_error("commit", e);
        return false;
    }
}

void TrainingDeduplicator::hold_owner(const std::string& id, const std::string& spool_path) {
    {
        std::lock_guard<std::mutex> lock(owners_mutex_);
        owners_[id] = spool_path;
        unregistered_[id] = spool_path;
        unregistered_count_.store(unregistered_.size(), std::memory_order_release);
    }
    refresh();
}

void TrainingDeduplicator::release_owner(const std::string& id) {
    {
        std::lock_guard<std::mutex> lock(owners_mutex_);
        owners_.erase(id);
        unregistered_.erase(id);
        unregistered_count_.store(unregistered_.size(), std::memory_order_release);
    }
    try {
        store_->retire_owner(id);
    } catch (const std::exception& e) {
        // Its liveness runs out by itself (Redis); SQLite's housekeeping
        // drops owners whose directory is gone.
        on_store_error("retire owner", e);
    }
}

bool TrainingDeduplicator::owners_fresh() const {
    if (unregistered_count_.load(std::memory_order_acquire) != 0) return false;
    return owner_ttl_.count() == 0 || now_ns() < fresh_until_ns_.load(std::memory_order_acquire);
}

bool TrainingDeduplicator::may_deliver() const {
    return owner_ttl_.count() == 0 || !ever_fresh_.load(std::memory_order_acquire) ||
           now_ns() < fresh_until_ns_.load(std::memory_order_acquire);
}

bool TrainingDeduplicator::may_deliver(std::uint64_t epoch) const {
    // Freshness first: a refresh that ends a lapse advances the epoch before
    // it makes the owners fresh, so fresh and still `epoch` means no lapse
    // came between.
    return may_deliver() && liveness_epoch() == epoch;
}

bool TrainingDeduplicator::refresh() {
    std::lock_guard<std::mutex> one(refresh_mutex_);
    std::vector<OwnerRecord> held, to_register;
    {
        std::lock_guard<std::mutex> lock(owners_mutex_);
        for (const auto& [id, path] : owners_) held.push_back({id, path});
        for (const auto& [id, path] : unregistered_) to_register.push_back({id, path});
    }
    const std::int64_t sent = now_ns();
    // Owners held before whose claims another writer may have taken over
    // meanwhile (a newly held owner's lines are confirmed anyway).
    const bool lapsed = lapsed_ || (owner_ttl_.count() > 0 && sent >= fresh_until_ns_.load(std::memory_order_acquire));
    try {
        for (const auto& o : to_register) store_->register_owner(o);
        if (owner_ttl_.count() > 0) store_->refresh_owners(held);
        on_store_success();
    } catch (const std::exception& e) {
        lapsed_ = true;
        on_store_error("register owner", e);
        return false;
    }
    {
        std::lock_guard<std::mutex> lock(owners_mutex_);
        for (const auto& o : to_register) unregistered_.erase(o.id);
        unregistered_count_.store(unregistered_.size(), std::memory_order_release);
    }
    // The new epoch before the freshness (see may_deliver(epoch)).
    if (lapsed) epoch_.fetch_add(1, std::memory_order_acq_rel);
    // Fresh for half the TTL from when the refresh was sent: the other half
    // is the margin for a batch that starts just before it runs out.
    if (owner_ttl_.count() > 0) fresh_until_ns_.store(sent + ns(owner_ttl_) / 2, std::memory_order_release);
    ever_fresh_.store(true, std::memory_order_release);
    lapsed_ = false;
    return true;
}

void TrainingDeduplicator::refresher() {
    const auto period = std::max<std::chrono::milliseconds>(
        std::chrono::milliseconds(500), std::chrono::duration_cast<std::chrono::milliseconds>(owner_ttl_) / 6);
    std::unique_lock<std::mutex> lock(owners_mutex_);
    while (!stopping_) {
        stop_cv_.wait_for(lock, period, [&] { return stopping_; });
        if (stopping_) break;
        lock.unlock();
        refresh();
        lock.lock();
    }
}

void TrainingDeduplicator::maintain() {
    bool pending = false;
    {
        std::lock_guard<std::mutex> lock(owners_mutex_);
        pending = !unregistered_.empty();
    }
    if (pending && owner_ttl_.count() == 0) refresh();
    try {
        store_->maintain();
    } catch (const std::exception& e) {
        on_store_error("maintain", e);
    }
}

void TrainingDeduplicator::on_store_error(const char* operation, const std::exception& e) {
    store_errors_.fetch_add(1, std::memory_order_relaxed);
    // One log line per outage, not per call.
    if (!in_outage_.exchange(true) && logger_) {
        logger_->log(LogLevel::Error, "training_output_error",
                     {{"error", e.what()},
                      {"operation", operation},
                      {"store", store_->kind()},
                      {"detail", "dedup store failed; writing examples without dedup until it recovers"}});
    }
}

// Not a failure of the store: its answer is that these owners' batches are
// to be settled before their claims are taken over.
void TrainingDeduplicator::on_owners_to_settle(const OwnersToSettle& e) {
    on_store_success();
    settle_later(e.owners());
}

void TrainingDeduplicator::settle_later(const std::vector<std::string>& owners) {
    std::lock_guard<std::mutex> lock(settle_mutex_);
    for (const auto& o : owners) {
        if (to_settle_.size() >= kMaxOwnersToSettle) break;  // the rest are named again by the next claim
        if (std::find(to_settle_.begin(), to_settle_.end(), o) == to_settle_.end()) to_settle_.push_back(o);
    }
}

std::vector<std::string> TrainingDeduplicator::take_owners_to_settle() {
    std::lock_guard<std::mutex> lock(settle_mutex_);
    return std::exchange(to_settle_, {});
}

void TrainingDeduplicator::on_store_success() {
    if (in_outage_.load(std::memory_order_relaxed) && in_outage_.exchange(false) && logger_) {
        logger_->log(LogLevel::Warning, "training_output_dedup_recovered",
                     {{"store", store_->kind()}, {"store_errors", store_errors_.load()}});
    }
}

}  // namespace training_output
