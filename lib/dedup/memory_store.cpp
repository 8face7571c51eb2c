// In-process dedup store: sharded open-addressing hash tables.
//
// A claim is on every generate() call, so the table is flat: a slot holds the
// key's 64-bit hash, where its bytes are (in 64 KiB chunks, never moved) and
// its state.
// Looking up a new key touches one slot (its hash differs from those probed);
// only a matching hash reads the key bytes to compare.
#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "training_output/sys/dedup_store.hpp"

namespace training_output {
namespace {

using Clock = std::chrono::steady_clock;

constexpr std::int64_t kForever = INT64_MAX;
constexpr std::size_t kChunkBytes = 64 << 10;

class MemoryDedupStore final : public DedupStore {
public:
    ClaimState claim(const std::string& key, const std::string& owner, std::chrono::seconds) override {
        const std::uint32_t me = owner_index(owner);
        const std::uint64_t h = hash(key);
        Shard& s = shard(h);
        const std::int64_t now = now_ns();
        std::lock_guard<std::mutex> lock(s.mutex);
        Slot& slot = s.find_or_insert(h, key);
        const bool expired = slot.expires <= now;
        if (slot.state == State::Committed && !expired) return ClaimState::Committed;
        if (slot.state == State::Claimed && slot.owner == me) return ClaimState::Own;
        if (slot.state == State::Claimed && owner_alive(slot.owner)) return ClaimState::Held;
        slot.state = State::Claimed;  // free, ours already, or its owner is gone
        slot.owner = me;
        slot.expires = kForever;
        return ClaimState::Claimed;
    }

    void commit(const std::vector<std::string>& keys, std::chrono::seconds ttl) override {
        const std::int64_t now = now_ns();
        for (const auto& key : keys) {
            const std::uint64_t h = hash(key);
            Shard& s = shard(h);
            std::lock_guard<std::mutex> lock(s.mutex);
            Slot& slot = s.find_or_insert(h, key);
            slot.state = State::Committed;
            slot.expires = ttl.count() > 0 ? now + ttl_ns(ttl) : kForever;
        }
    }

    std::optional<KeyState> lookup(const std::string& key, const std::string& owner) override {
        const std::uint64_t h = hash(key);
        Shard& s = shard(h);
        std::lock_guard<std::mutex> lock(s.mutex);
        const Slot* slot = s.find(h, key);
        if (!slot) return KeyState::Absent;
        if (slot->state == State::Committed) return slot->expires > now_ns() ? KeyState::Committed : KeyState::Absent;
        if (slot->state != State::Claimed) return KeyState::Absent;
        return slot->owner == owner_index(owner) ? KeyState::Own : KeyState::Other;
    }

    bool cheap_claims() const noexcept override { return true; }

    void register_owner(const OwnerRecord& owner) override {
        const std::uint32_t i = owner_index(owner.id);
        std::lock_guard<std::mutex> lock(owners_mutex_);
        owners_[i].alive = true;
    }

    void retire_owner(const std::string& owner) override {
        const std::uint32_t i = owner_index(owner);
        std::lock_guard<std::mutex> lock(owners_mutex_);
        owners_[i].alive = false;
    }

    const char* kind() const noexcept override { return "memory"; }

private:
    struct Owner {
        std::string id;
        bool alive = false;
    };

    // Owners are few (one per spool): a claim finds its owner's index in a
    // per-thread cache of the last one it used.
    std::uint32_t owner_index(const std::string& id) {
        struct Cache {
            const MemoryDedupStore* store = nullptr;
            std::uint64_t generation = 0;
            std::string id;
            std::uint32_t index = 0;
        };
        thread_local Cache cache;
        if (cache.store == this && cache.generation == generation_ && cache.id == id) return cache.index;
        std::lock_guard<std::mutex> lock(owners_mutex_);
        std::uint32_t i = 0;
        while (i < owners_.size() && owners_[i].id != id) ++i;
        if (i == owners_.size()) owners_.push_back(Owner{id, false});
        cache = Cache{this, generation_, id, i};
        return i;
    }

    bool owner_alive(std::uint32_t i) {
        std::lock_guard<std::mutex> lock(owners_mutex_);
        return i < owners_.size() && owners_[i].alive;
    }

    // Empty: the key is known but neither claimed nor committed.
    enum class State : std::uint8_t { Empty, Claimed, Committed };

    struct Slot {
        std::uint64_t hash = 0;
        std::int64_t expires = 0;  // steady clock, ns
        std::uint32_t chunk = 0;   // where the key's bytes are
        std::uint32_t offset = 0;
        std::uint32_t key_size = 0;
        std::uint32_t owner = 0;  // the claimant's index in owners_
        bool used = false;
        State state = State::Empty;
    };

    struct Shard {
        std::mutex mutex;
        std::vector<Slot> slots;                      // a power of two, at most half used
        std::vector<std::unique_ptr<char[]>> chunks;  // the keys' bytes
        std::size_t chunk_used = kChunkBytes;         // in chunks.back()
        std::size_t used = 0;

        bool same_key(const Slot& slot, std::uint64_t h, std::string_view key) const {
            return slot.hash == h && slot.key_size == key.size() &&
                   std::memcmp(chunks[slot.chunk].get() + slot.offset, key.data(), key.size()) == 0;
        }

        // Copies the key's bytes where they stay until the store goes.
        void store_key(Slot& slot, std::string_view key) {
            if (key.size() > kChunkBytes / 4) {  // a large key: a chunk of its own
                chunks.push_back(std::make_unique<char[]>(key.size()));
                chunk_used = kChunkBytes;  // the next small key starts a new chunk
                slot.offset = 0;
            } else {
                if (chunk_used + key.size() > kChunkBytes) {
                    chunks.push_back(std::make_unique<char[]>(kChunkBytes));
                    chunk_used = 0;
                }
                slot.offset = static_cast<std::uint32_t>(chunk_used);
                chunk_used += key.size();
            }
            slot.chunk = static_cast<std::uint32_t>(chunks.size() - 1);
            std::memcpy(chunks.back().get() + slot.offset, key.data(), key.size());
        }

        Slot* find(std::uint64_t h, std::string_view key) {
            if (slots.empty()) return nullptr;
            const std::size_t mask = slots.size() - 1;
            for (std::size_t i = h & mask;; i = (i + 1) & mask) {
                Slot& slot = slots[i];
                if (!slot.used) return nullptr;
                if (same_key(slot, h, key)) return &slot;
            }
        }

        // The key's slot; a new one (state Empty) when the key is not known.
        Slot& find_or_insert(std::uint64_t h, std::string_view key) {
            if ((used + 1) * 2 > slots.size()) grow();
            const std::size_t mask = slots.size() - 1;
            std::size_t i = h & mask;
            for (;; i = (i + 1) & mask) {
                Slot& slot = slots[i];
                if (!slot.used) break;
                if (same_key(slot, h, key)) return slot;
            }
            Slot& slot = slots[i];
            slot.used = true;
            slot.hash = h;
            slot.key_size = static_cast<std::uint32_t>(key.size());
            slot.state = State::Empty;
            slot.expires = 0;
            store_key(slot, key);
            ++used;
            return slot;
        }

        void grow() {
            std::vector<Slot> old;
            old.swap(slots);
            slots.resize(old.empty() ? 1024 : old.size() * 2);
            const std::size_t mask = slots.size() - 1;
            for (const Slot& slot : old) {
                if (!slot.used) continue;
                std::size_t i = slot.hash & mask;
                while (slots[i].used) i = (i + 1) & mask;
                slots[i] = slot;
            }
        }
    };

    static std::uint64_t hash(const std::string& key) { return std::hash<std::string_view>{}(key); }
    static std::int64_t now_ns() {
        return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
    }
    static std::int64_t ttl_ns(std::chrono::seconds ttl) {
        // Saturating: a TTL of many years must not wrap to the past.
        const std::int64_t max_s = kForever / 1000000000 / 2;
        return std::min<std::int64_t>(ttl.count(), max_s) * 1000000000;
    }
    // The top bits pick the shard; the table index uses the low bits.
    Shard& shard(std::uint64_t h) { return shards_[h >> 60]; }

    std::array<Shard, 16> shards_;
    std::mutex owners_mutex_;
    std::deque<Owner> owners_;
    // Tells the per-thread caches of store objects that were destroyed
    // from this one, should it be allocated at the same address.
    const std::uint64_t generation_ = next_generation();
    static std::uint64_t next_generation() {
        static std::atomic<std::uint64_t> n{0};
        return ++n;
    }
};

}  // namespace

std::unique_ptr<DedupStore> make_memory_dedup_store() { return std::make_unique<MemoryDedupStore>(); }

}  // namespace training_output
