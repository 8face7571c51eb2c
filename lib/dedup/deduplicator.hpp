// TrainingDeduplicator: content hash -> "{namespace}:{hex}" -> DedupStore,
// with the fail-open policy (when the store cannot answer, the example is
// written anyway; the error is counted and logged once per outage), and the
// liveness of the owners (spools) this writer holds.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "dedup/key_memory.hpp"
#include "format/formatter.hpp"
#include "log/logger.hpp"
#include "training_output/sys/dedup_store.hpp"

namespace training_output {

enum class ClaimOutcome {
    Claimed,     // new content (or this owner's already): deliver it, then commit
    Duplicate,   // already written
    Pending,     // another live writer holds it and has not delivered it yet
    FailedOpen,  // the store failed: deliver it anyway, confirm the claim before if it can
};

// What is known of new content before its line is spooled (precheck()).
enum class Precheck {
    New,        // nothing: reserved in flight for the owner; spool the line, then claim
    Duplicate,  // written already: nothing to spool
    Pending,    // a live spool of this process holds it, or the owner's own claim does
    Held,       // another owner's claim in the store: spool the line and claim it now
};

struct DeduplicatorOptions {
    std::string key_namespace = "training";
    std::chrono::seconds claim_ttl{86400};
    std::chrono::seconds committed_ttl{0};     // 0 = forever
    std::size_t remembered_commits = 1 << 16;  // recent commits answered from memory (per store, per process)
};

class TrainingDeduplicator {
public:
    TrainingDeduplicator(std::unique_ptr<DedupStore> store, DeduplicatorOptions options, const Logger* logger);
    ~TrainingDeduplicator();
    TrainingDeduplicator(const TrainingDeduplicator&) = delete;
    TrainingDeduplicator& operator=(const TrainingDeduplicator&) = delete;

    std::string key_for(const Sha256& hash) const;

    // Before the line of new content is spooled (`key` is key_for(hash)):
    // what this process and the
    // store (where a lookup is cheap) know of it, without a write. New
    // reserves the key for `owner`: the caller spools the line and claims it
    // (claim() or claim_group()), or calls forget() when it was not spooled.
    // When the store fails, or is known to fail, New (fail open: nothing is
    // deduplicated until it answers again).
    Precheck precheck(const Sha256& hash, const std::string& key, const std::string& owner);
    // The key is no longer reserved for `owner` (its line was not spooled,
    // was voided, or belongs to a spool now closed).
    void forget(const std::string& key, const std::string& owner);
    // A claim found the content written already (Duplicate) or held by
    // another live writer (Pending): remembered so that the next copy of it
    // in this process is answered without spooling it (a writer elsewhere
    // holds it: for a few seconds, then the store is asked again).
    void settled_elsewhere(const std::string& key, const std::string& owner, ClaimOutcome outcome);
    // The spool `owner` closed: what it still holds, the store answers for.
    void forget_owner(const std::string& owner);
    // True where the store claims about as cheaply as it looks up: claim on
    // the caller's thread; else claim_group() from a thread of the writer's.
    bool cheap_claims() const { return store_->cheap_claims(); }
    // Claims of new content for `owner`, many at once (one transaction or
    // round trip): what claim() would answer for each, in order.
    std::vector<ClaimOutcome> claim_group(const std::vector<std::string>& keys, const std::string& owner);

    // The claim of new content for `owner` (a held spool's id, whose line
    // is spooled): Claimed, or Duplicate (written), or Pending (held by a
    // live writer, this one included, and not delivered yet). While the
    // owners' liveness is not fresh, no claim is taken (FailedOpen): another
    // writer could take it over unseen.
    ClaimOutcome claim(const std::string& key, const std::string& owner);
    // Confirms the claims of spooled lines before they are delivered, in one
    // store call: Claimed (free, or `owner`'s already: deliver), Duplicate
    // or Pending (void the line), FailedOpen for all when the store fails.
    std::vector<ClaimOutcome> confirm_batch(const std::vector<std::string>& keys, const std::string& owner);
    // The keys' lines are in their objects. False when the store failed
    // (counted and logged): try again later. Remembered in this process
    // either way.
    bool commit(const std::vector<std::string>& keys);

    // Owners this writer holds: registered now (retried if the store fails),
    // kept alive (stores with an owner TTL) until released.
    void hold_owner(const std::string& id, const std::string& spool_path);
    // The spool is gone: its claims are committed or free to take over.
    void release_owner(const std::string& id);
    // Every held owner is registered and, where the store has an owner TTL,
    // was refreshed less than half of it ago: no other writer can have taken
    // one of their claims over.
    bool owners_fresh() const;
    // False only while the owners' liveness, once established, has lapsed
    // (stores with an owner TTL): a claim made before may have been taken
    // over by another writer, so no batch may start until the liveness is
    // refreshed and the claims confirmed again.
    bool may_deliver() const;
    // may_deliver(), and the liveness has not lapsed since `epoch`: claims
    // confirmed in that epoch still hold. A batch is written only while this
    // is true of the epoch its claims were confirmed in.
    bool may_deliver(std::uint64_t epoch) const;
    // Changes each time the owners became fresh again after they were not:
    // their claims must be confirmed again before their lines are delivered.
    std::uint64_t liveness_epoch() const { return epoch_.load(std::memory_order_acquire); }
    // Owners not fresh: registers and refreshes them now (at most once a
    // second, whoever asks). True when they are fresh after it.
    bool try_refresh();

    // Store housekeeping and registrations that failed before; errors logged.
    void maintain();

    std::uint64_t store_errors() const { return store_errors_.load(std::memory_order_relaxed); }
    std::chrono::seconds claim_ttl() const { return options_.claim_ttl; }
    DedupStore& store() { return *store_; }

    // Gone owners whose claims a claim would have taken over, had they no
    // batches in flight (OwnersToSettle; those claims failed open): the
    // delivery settles them, then confirms the claims. Each once; handed
    // back with settle_later() when they could not be settled yet.
    std::vector<std::string> take_owners_to_settle();
    void settle_later(const std::vector<std::string>& owners);

private:
    void on_owners_to_settle(const OwnersToSettle& e);
    void on_store_error(const char* operation, const std::exception& e);
    void on_store_success();
    bool refresh();  // registers and refreshes every held owner; true when all are
    void refresher();
    static ClaimOutcome outcome(ClaimState state, bool confirming);
    // claim_group() and confirm_batch(): one store call; FailedOpen for all
    // when `not_fresh` or the store fails.
    std::vector<ClaimOutcome> claim_many(const std::vector<std::string>& keys, const std::string& owner,
                                         bool confirming, bool not_fresh);

    std::uint32_t owner_tag(const std::string& owner);

    std::unique_ptr<DedupStore> store_;
    DeduplicatorOptions options_;
    std::shared_ptr<KeyMemory> memory_;
    std::mutex tags_mutex_;
    std::map<std::string, std::uint32_t> tags_;
    const Logger* logger_;
    const std::chrono::seconds owner_ttl_;
    std::atomic<std::uint64_t> store_errors_{0};
    std::atomic<bool> in_outage_{false};
    std::mutex settle_mutex_;
    std::vector<std::string> to_settle_;  // under settle_mutex_; a few hundred at most

    mutable std::mutex owners_mutex_;
    std::map<std::string, std::string> owners_;  // held: id -> spool path
    std::map<std::string, std::string> unregistered_;
    std::atomic<std::size_t> unregistered_count_{0};
    std::atomic<std::int64_t> fresh_until_ns_{0};  // steady clock; owners_ttl stores only
    std::atomic<std::uint64_t> epoch_{0};
    std::atomic<bool> ever_fresh_{false};
    std::atomic<std::int64_t> last_inline_refresh_ns_{0};
    std::mutex refresh_mutex_;  // one refresh at a time
    bool lapsed_ = false;       // under refresh_mutex_: a refresh failed since the last success
    std::condition_variable stop_cv_;
    bool stopping_ = false;
    std::thread refresher_;
};

}  // namespace training_output
