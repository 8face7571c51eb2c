// In-process dedup store: a sharded hash map.
#include <array>
#include <chrono>
#include <mutex>
#include <optional>
#include <unordered_map>

#include "training_output/dedup_store.hpp"

namespace training_output {
namespace {

using Clock = std::chrono::steady_clock;

class MemoryDedupStore final : public DedupStore {
public:
    bool claim(const std::string& key, std::chrono::seconds claim_ttl) override {
        auto& s = shard(key);
        auto now = Clock::now();
        std::lock_guard<std::mutex> lock(s.mutex);
        auto [it, inserted] = s.entries.try_emplace(key);
        if (!inserted && !(it->second.expires && *it->second.expires <= now)) return false;
        it->second = Entry{false, now + claim_ttl};
        return true;
    }

    void commit(const std::vector<std::string>& keys, std::chrono::seconds ttl) override {
        auto now = Clock::now();
        for (const auto& key : keys) {
            auto& s = shard(key);
            std::lock_guard<std::mutex> lock(s.mutex);
            s.entries[key] = Entry{true, ttl.count() > 0 ? std::optional<Clock::time_point>(now + ttl) : std::nullopt};
        }
    }

    void release(const std::string& key) override {
        auto& s = shard(key);
        std::lock_guard<std::mutex> lock(s.mutex);
        auto it = s.entries.find(key);
        if (it != s.entries.end() && !it->second.committed) s.entries.erase(it);
    }

    const char* kind() const noexcept override { return "memory"; }

private:
    struct Entry {
        bool committed = false;
        std::optional<Clock::time_point> expires;  // nullopt = forever
    };
    struct Shard {
        std::mutex mutex;
        std::unordered_map<std::string, Entry> entries;
    };
    Shard& shard(const std::string& key) { return shards_[std::hash<std::string>{}(key) % shards_.size()]; }

    std::array<Shard, 16> shards_;
};

}  // namespace

std::unique_ptr<DedupStore> make_memory_dedup_store() { return std::make_unique<MemoryDedupStore>(); }

}  // namespace training_output
