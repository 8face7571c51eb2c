// KeyMemory: what the writers of one process know of content hashes without
// asking the dedup store: the keys accepted and not yet delivered (and which
// spool holds each), and the keys delivered recently. A duplicate of either
// is answered at once, before anything is spooled; a duplicate of neither
// goes to the store.
//
// Writers on the same store data (DedupStore::identity()) share one
// KeyMemory; a store without an identity gets one of its own. What is
// remembered is a cache of the store, never more: a key is in flight only
// while the line that holds it is in a live spool of this process, and
// committed only once its line is in its object.
#pragma once

#include <array>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace training_output {

class KeyMemory {
public:
    using Hash = std::array<std::uint8_t, 32>;

    enum class Seen {
        None,       // nothing known: ask the store
        Committed,  // delivered recently
        InFlight,   // accepted by a live spool of this process, or found held by a live
                    // writer elsewhere a short while ago
    };

    // The memory of the writers of this process on `identity` (empty: a
    // memory of its own). `committed_capacity`: recent commits remembered.
    static std::shared_ptr<KeyMemory> for_store(const std::string& identity, std::size_t committed_capacity);

    explicit KeyMemory(std::size_t committed_capacity);

    // One owner's keys are told apart from another's by a small number.
    std::uint32_t owner_tag(const std::string& owner);

    // What is known of the key; when nothing is, it becomes in flight for
    // `owner` (the caller then spools its line, or forgets it again).
    Seen check_and_reserve(const Hash& key, std::uint32_t owner);
    // The key is no longer in flight for `owner` (its line was voided, not
    // accepted, or its claim was not made).
    void forget(const Hash& key, std::uint32_t owner);
    // The keys' lines are in their objects: remembered as committed for
    // `ttl_seconds` (0: until they fall out of the memory), no longer in flight.
    void committed(const std::vector<Hash>& keys, std::int64_t ttl_seconds);
    // The store says another live writer holds the key: for `seconds`, it is
    // answered as in flight without asking the store again.
    void held_elsewhere(const Hash& key, std::int64_t seconds);
    // The line `owner` had in flight for the key was voided: its content is
    // written (Committed: remembered for `seconds`, 0: until it falls out of
    // the memory) or held by another live writer (Held: for `seconds`).
    enum class Settled { Committed, Held };
    void settle_elsewhere(const Hash& key, std::uint32_t owner, Settled how, std::int64_t seconds);
    // Every key `owner` has in flight is forgotten (its spool is closed: the
    // store answers for them from now on).
    void forget_owner(std::uint32_t owner);

    // "{namespace}:{64 hex digits}" -> the 32 bytes; false for any other key.
    static bool parse(std::string_view key, Hash& out);

private:
    struct HashOf {
        std::size_t operator()(const Hash& h) const noexcept {
            std::size_t v;
            static_assert(sizeof v <= sizeof(Hash), "");
            std::memcpy(&v, h.data(), sizeof v);
            return v;
        }
    };
    struct Shard {
        mutable std::mutex mutex;
        std::unordered_map<Hash, std::uint32_t, HashOf> in_flight;  // -> owner tag
        std::unordered_map<Hash, std::int64_t, HashOf> committed;   // -> expiry (steady ns; INT64_MAX: none)
        std::unordered_map<Hash, std::int64_t, HashOf> elsewhere;   // -> until (steady ns)
        std::vector<Hash> order;                                    // committed keys, oldest first from `next`
        std::size_t next = 0;
    };
    static constexpr std::size_t kShards = 16;
    Shard& shard(const Hash& h) { return shards_[h[31] % kShards]; }
    void remember_committed(Shard& s, const Hash& key, std::int64_t until);
    void remember_elsewhere(Shard& s, const Hash& key, std::int64_t seconds);

    const std::size_t per_shard_;
    std::array<Shard, kShards> shards_;
    std::mutex owners_mutex_;
    std::vector<std::string> owners_;
};

}  // namespace training_output
