// DedupStore: where content hashes of written examples are remembered.
//
// A hash goes through claim -> commit (its line is in its object) or
// claim -> release (writing failed; a retry may claim it again). Of two
// writers claiming one key at once, exactly one gets `true`. A claim that is
// neither committed nor released expires after its TTL, so that content whose
// line was lost is not blocked forever. Every store is safe to use from many
// threads at once.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace training_output {

class Logger;

class DedupStore {
public:
    virtual ~DedupStore() = default;

    // True: this writer owns the key now and must commit or release it.
    // False: the key is committed, or claimed by someone else and not expired.
    // Throws Error(DedupStore) when the store cannot answer.
    virtual bool claim(const std::string& key, std::chrono::seconds claim_ttl) = 0;

    // claim() for several keys at once (one round trip or transaction where
    // the store allows): result[i] is what claim(keys[i]) would have returned,
    // in order, so a key given twice is won at most once. When it throws, the
    // keys it may have claimed expire after `claim_ttl`.
    virtual std::vector<bool> claim_batch(const std::vector<std::string>& keys, std::chrono::seconds claim_ttl) {
        std::vector<bool> won;
        won.reserve(keys.size());
        for (const auto& key : keys) won.push_back(claim(key, claim_ttl));
        return won;
    }

    // Marks the keys as written: permanent, or for `ttl` when it is positive.
    // Works whether or not this writer's claim still exists.
    virtual void commit(const std::vector<std::string>& keys, std::chrono::seconds ttl) = 0;

    // Forgets a claim if it is still this writer's and not committed.
    virtual void release(const std::string& key) = 0;

    // "memory", "sqlite", "redis".
    virtual const char* kind() const noexcept = 0;
};

// Process-local store (tests, single short-lived processes).
std::unique_ptr<DedupStore> make_memory_dedup_store();

struct SqliteStoreOptions {
    std::string path;                            // created if missing
    std::chrono::milliseconds busy_timeout{5000};  // wait for other processes' write locks
};
// SQLite in WAL mode: persistent, shared safely by the processes of one
// machine. Throws Error(DedupStore) when the database cannot be opened.
std::unique_ptr<DedupStore> make_sqlite_dedup_store(const SqliteStoreOptions& options);

struct RedisStoreOptions {
    // redis://[[user]:password@]host[:port][/db] or unix://[[user]:password@]/path[?db=N]
    std::string url;
    // Bounds each call: waiting for a connection, connecting, the command.
    std::chrono::milliseconds timeout{500};
    std::size_t pool_size = 8;  // connections open at most; callers beyond wait (within `timeout`)
    // After a failure, calls fail at once (so the caller fails open) until the
    // next connection attempt; the delay doubles from `reconnect_base` up to
    // `reconnect_max`, with jitter.
    std::chrono::milliseconds reconnect_base{100};
    std::chrono::milliseconds reconnect_max{2000};
    const Logger* logger = nullptr;  // outages are logged here, once each (must outlive the store)
};
// Redis through hiredis: one store for many processes and machines. Keys are
// the deduplicator's keys; a claim holds a token unique to this store object,
// a committed key holds "1". Throws Error(Config) for a malformed URL and
// Error(DedupStore) when the server rejects the credentials or the database.
// A server that cannot be reached is not an error at open: the store starts
// unavailable (logged), its calls throw until a connection succeeds.
std::unique_ptr<DedupStore> make_redis_dedup_store(const RedisStoreOptions& options);

}  // namespace training_output
