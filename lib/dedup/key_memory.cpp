// KeyMemory (see key_memory.hpp).
#include "dedup/key_memory.hpp"

#include <pthread.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <map>

#include "common/sha256.hpp"

namespace training_output {
namespace {

std::int64_t now_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

struct Registry {
    std::mutex mutex;
    std::map<std::string, std::weak_ptr<KeyMemory>> memories;
};

// The process's registry. A child after fork() starts with an empty one (the
// parent's may have been locked by one of its threads, and its keys are the
// parent's spools'); the parent's is left to leak there.
Registry*& registry() {
    static Registry* r = [] {
        ::pthread_atfork(nullptr, nullptr, [] { registry() = new Registry; });
        return new Registry;
    }();
    return r;
}

}  // namespace

std::shared_ptr<KeyMemory> KeyMemory::for_store(const std::string& identity, std::size_t committed_capacity) {
    if (identity.empty()) return std::make_shared<KeyMemory>(committed_capacity);
    Registry* r = registry();
    std::lock_guard<std::mutex> lock(r->mutex);
    auto& slot = r->memories[identity];
    if (auto m = slot.lock()) return m;
    auto m = std::make_shared<KeyMemory>(committed_capacity);
    slot = m;
    // Entries of memories no writer uses any more go now and then.
    for (auto it = r->memories.begin(); it != r->memories.end();) {
        it = it->second.expired() ? r->memories.erase(it) : std::next(it);
    }
    return m;
}

KeyMemory::KeyMemory(std::size_t committed_capacity)
    : per_shard_(std::max<std::size_t>(1, committed_capacity / kShards)) {}

std::uint32_t KeyMemory::owner_tag(const std::string& owner) {
    std::lock_guard<std::mutex> lock(owners_mutex_);
    auto it = std::find(owners_.begin(), owners_.end(), owner);
    if (it != owners_.end()) return static_cast<std::uint32_t>(it - owners_.begin()) + 1;
    owners_.push_back(owner);
    return static_cast<std::uint32_t>(owners_.size());
}

KeyMemory::Seen KeyMemory::check_and_reserve(const Hash& key, std::uint32_t owner) {
    Shard& s = shard(key);
    std::lock_guard<std::mutex> lock(s.mutex);
    auto c = s.committed.find(key);
    if (c != s.committed.end()) {
        if (c->second > now_ns()) return Seen::Committed;
        s.committed.erase(c);  // its commit expired (dedup_ttl_seconds)
    }
    if (!s.elsewhere.empty()) {
        auto e = s.elsewhere.find(key);
        if (e != s.elsewhere.end()) {
            if (e->second > now_ns()) return Seen::InFlight;
            s.elsewhere.erase(e);
        }
    }
    return s.in_flight.emplace(key, owner).second ? Seen::None : Seen::InFlight;
}

void KeyMemory::forget(const Hash& key, std::uint32_t owner) {
    Shard& s = shard(key);
    std::lock_guard<std::mutex> lock(s.mutex);
    auto it = s.in_flight.find(key);
    if (it != s.in_flight.end() && it->second == owner) s.in_flight.erase(it);
}

namespace {

std::int64_t commit_end(std::int64_t ttl_seconds, std::int64_t now) {
    return ttl_seconds > 0 && ttl_seconds < INT64_MAX / 2000000000 ? now + ttl_seconds * 1000000000 : INT64_MAX;
}

}  // namespace

void KeyMemory::committed(const std::vector<Hash>& keys, std::int64_t ttl_seconds) {
    const std::int64_t until = commit_end(ttl_seconds, now_ns());
    for (const Hash& key : keys) {
        Shard& s = shard(key);
        std::lock_guard<std::mutex> lock(s.mutex);
        s.in_flight.erase(key);
        remember_committed(s, key, until);
    }
}

// With s.mutex held.
void KeyMemory::remember_committed(Shard& s, const Hash& key, std::int64_t until) {
    auto [it, inserted] = s.committed.emplace(key, until);
    if (!inserted) {
        it->second = until;
        return;
    }
    // The oldest goes once the shard is full.
    if (s.order.size() < per_shard_) {
        s.order.push_back(key);
    } else {
        s.committed.erase(s.order[s.next]);
        s.order[s.next] = key;
        s.next = (s.next + 1) % per_shard_;
    }
}

// With s.mutex held.
void KeyMemory::remember_elsewhere(Shard& s, const Hash& key, std::int64_t seconds) {
    const std::int64_t now = now_ns();
    // Bounded like the commits: expired entries go first, then the map is cleared.
    if (s.elsewhere.size() >= per_shard_) {
        for (auto it = s.elsewhere.begin(); it != s.elsewhere.end();) {
            it = it->second <= now ? s.elsewhere.erase(it) : std::next(it);
        }
        if (s.elsewhere.size() >= per_shard_) s.elsewhere.clear();
    }
    s.elsewhere[key] = now + seconds * 1000000000;
}

void KeyMemory::held_elsewhere(const Hash& key, std::int64_t seconds) {
    Shard& s = shard(key);
    std::lock_guard<std::mutex> lock(s.mutex);
    remember_elsewhere(s, key, seconds);
}

// In one step under the shard's lock: a call that comes meanwhile finds the
// key in flight, or settled, never free (it would be accepted, and voided).
void KeyMemory::settle_elsewhere(const Hash& key, std::uint32_t owner, Settled how, std::int64_t seconds) {
    Shard& s = shard(key);
    std::lock_guard<std::mutex> lock(s.mutex);
    auto it = s.in_flight.find(key);
    if (how == Settled::Committed) {
        if (it != s.in_flight.end()) s.in_flight.erase(it);  // written: no line needs to hold it (as committed())
        remember_committed(s, key, commit_end(seconds, now_ns()));
    } else {
        if (it != s.in_flight.end() && it->second == owner) s.in_flight.erase(it);
        remember_elsewhere(s, key, seconds);
    }
}

void KeyMemory::forget_owner(std::uint32_t owner) {
    for (Shard& s : shards_) {
        std::lock_guard<std::mutex> lock(s.mutex);
        for (auto it = s.in_flight.begin(); it != s.in_flight.end();) {
            it = it->second == owner ? s.in_flight.erase(it) : std::next(it);
        }
    }
}

bool KeyMemory::parse(std::string_view key, Hash& out) {
    const std::size_t colon = key.rfind(':');
    return colon != std::string_view::npos && crypto::parse_hex(key.substr(colon + 1), out.data(), out.size());
}

}  // namespace training_output
