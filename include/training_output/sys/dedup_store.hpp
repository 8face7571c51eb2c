// DedupStore: where content hashes of written examples are remembered.
//
// A hash is claimed by an owner, a spool (its id), once the spool holds the
// line, and committed once the line is in its object. The invariant: no
// claim without a spooled line, and only the claim's owner delivers it.
//
// claim(key, owner) answers:
//   Claimed    the key was free, or was taken over from an owner that is
//              gone: this owner's now;
//   Own        this owner holds it already (another of its lines, or the
//              same line confirmed again);
//   Committed  the content is written;
//   Held       another owner that is alive holds it: that owner delivers it.
// An owner is alive while it is registered and, for stores with an owner
// TTL (Redis), while its liveness is refreshed; on one machine (SQLite,
// memory), while its spool directory exists. Every store is safe to use from
// many threads at once.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "training_output/error.hpp"

namespace training_output {

class Logger;

enum class ClaimState { Claimed, Own, Committed, Held };

// What a store knows of a key without changing anything (lookup()).
enum class KeyState {
    Absent,     // no claim, no commit (or an expired commit)
    Committed,  // the content is written
    Own,        // claimed by the owner asked about
    Other,      // claimed by another owner, alive or not
};

struct OwnerRecord {
    std::string id;          // the spool's id
    std::string spool_path;  // where it is (diagnostics; SQLite: its liveness)
};

// A batch an owner may be writing as an object of its own (the batches
// append mode): its object's key, its size and its lines' keys.
struct InflightBatch {
    std::string object_key;
    std::uint64_t bytes = 0;
    std::vector<std::string> keys;
};

// Thrown by claim() and claim_batch() of a store that would take keys over
// from owners that are gone (by their liveness TTL) while those owners still
// have inflight() batches: nothing is taken over. The writer settles each
// such owner's batches (each one's name fenced, or its keys committed where
// it landed, then clear_inflight()), so that a write of the gone owner's
// that the network still holds never lands beside the taker's, and claims
// again. Until then its claims fail open, as on any store failure.
class OwnersToSettle : public Error {
public:
    explicit OwnersToSettle(std::vector<std::string> owners)
        : Error(ErrorCode::DedupStore,
                "the claims of a writer that is gone are taken over once its batches in flight are settled"),
          owners_(std::move(owners)) {}
    const std::vector<std::string>& owners() const noexcept { return owners_; }

private:
    std::vector<std::string> owners_;
};

class DedupStore {
public:
    virtual ~DedupStore() = default;

    // Throws Error(DedupStore) when the store cannot answer. A claim expires
    // after `claim_ttl` only where the store must bound what it keeps (the
    // claim of an owner that vanished with its spool).
    virtual ClaimState claim(const std::string& key, const std::string& owner, std::chrono::seconds claim_ttl) = 0;

    // claim() for several keys at once (one round trip or transaction where
    // the store allows): result[i] is what claim(keys[i]) would have answered,
    // in order.
    virtual std::vector<ClaimState> claim_batch(const std::vector<std::string>& keys, const std::string& owner,
                                                std::chrono::seconds claim_ttl) {
        std::vector<ClaimState> out;
        out.reserve(keys.size());
        for (const auto& key : keys) out.push_back(claim(key, owner, claim_ttl));
        return out;
    }

    // Marks the keys as written: permanent, or for `ttl` when it is positive.
    // Works whether or not a claim exists, and whoever owns it.
    virtual void commit(const std::vector<std::string>& keys, std::chrono::seconds ttl) = 0;

    // Owners. register_owner() before the first claim of an owner;
    // refresh_owners() at least every owner_ttl() / 4 where owner_ttl() is
    // positive; retire_owner() once its spool is gone (its claims are then
    // committed, or free to be taken over).
    virtual void register_owner(const OwnerRecord& owner) = 0;
    virtual void refresh_owners(const std::vector<OwnerRecord>& owners) { (void)owners; }
    virtual void retire_owner(const std::string& owner) = 0;
    // Zero: an owner stays alive while it is registered (and its spool
    // directory exists, where the store can see it).
    virtual std::chrono::seconds owner_ttl() const { return std::chrono::seconds(0); }

    // Housekeeping off the callers' threads (SQLite: expired rows, deleted in
    // small batches). Called every few seconds by the writer's flusher.
    virtual void maintain() {}

    // Batches written as objects of their own, for stores where an owner's
    // claims are taken over once its liveness TTL lapses (Redis): recorded
    // before each write of the batch, for `ttl` (the claims' TTL), and
    // cleared once its keys are committed; read by the writer that takes the
    // owner's keys over (OwnersToSettle), which clears them once settled.
    // Stores whose owners live while their spool directory exists (SQLite,
    // memory) keep nothing: a writer that died there has its spool adopted,
    // not its claims taken over, and the adopter settles its batches. Throw
    // Error(DedupStore) when the store fails.
    virtual void record_inflight(const std::string& owner, const InflightBatch& batch, std::chrono::seconds ttl) {
        (void)owner;
        (void)batch;
        (void)ttl;
    }
    virtual std::vector<InflightBatch> inflight(const std::string& owner) {
        (void)owner;
        return {};
    }
    // (What is left of the owner's records keeps `ttl`, the claims' TTL.)
    virtual void clear_inflight(const std::string& owner, const std::vector<std::string>& object_keys,
                                std::chrono::seconds ttl) {
        (void)owner;
        (void)object_keys;
        (void)ttl;
    }
    // "memory", "sqlite", "redis", "log".
    virtual const char* kind() const noexcept = 0;

    // What the store knows of `key`, from one read and without a write, for
    // stores where a read costs much less than a claim (SQLite: a point read;
    // memory). nullopt: the store does not answer lookups (Redis: a round
    // trip), or cannot now. Throws Error(DedupStore) when the store fails.
    virtual std::optional<KeyState> lookup(const std::string& key, const std::string& owner) {
        (void)key;
        (void)owner;
        return std::nullopt;
    }

    // True where claim() costs about as little as lookup() (memory): the
    // writer claims on the caller's thread. False: the writer claims from a
    // thread of its own, many keys a transaction or round trip, so that no
    // call waits for a claim of its own.
    virtual bool cheap_claims() const noexcept { return false; }

    // Names the data the store holds, the same for every store object on the
    // same data in one process ("sqlite:/abs/path", "redis://host:port/db"):
    // writers of one process on the same data share what they know of recent
    // commits. Empty: nothing is shared.
    virtual std::string identity() const { return {}; }
};

// Process-local store (tests, single short-lived processes).
std::unique_ptr<DedupStore> make_memory_dedup_store();

struct SqliteStoreOptions {
    std::string path;                              // created if missing
    std::chrono::milliseconds busy_timeout{5000};  // wait for other processes' write locks
    // When set, the file remembers the destination (Config::destination())
    // of the first writer that used it. A file that remembers another one
    // is not used: with `own_file_for_others`, the store opens
    // "<path without .sqlite3>-<hash of the destination>.sqlite3" beside it
    // instead (what the default path does); without, it throws
    // Error(Config). So that the writers of two buckets started in one
    // directory do not take each other's content for duplicates.
    std::string destination;
    bool own_file_for_others = false;
};
// SQLite in WAL mode: persistent, shared safely by the processes of one
// machine. Keys are stored as 32 bytes (the SHA-256 behind "{namespace}:{hex}")
// under a namespace number; lookups go through a read connection of their own,
// so that they never wait behind the writes. A file of an earlier version is
// converted at open. Throws Error(DedupStore) when the database cannot be
// opened.
std::unique_ptr<DedupStore> make_sqlite_dedup_store(const SqliteStoreOptions& options);

struct LogStoreOptions {
    std::string path;                           // created if missing
    std::uint64_t compact_at_bytes = 64 << 20;  // maintain() compacts a file larger than this (and mostly dead)
};
// An append-only file of claims and commits, shared safely by the processes
// of one machine, with every key indexed in each process's memory (about 100
// bytes a key): a claim or a commit costs the same whatever the store holds.
// Compacted in maintain(). Throws Error(DedupStore) when the file cannot be
// opened or is not a dedup log.
std::unique_ptr<DedupStore> make_log_dedup_store(const LogStoreOptions& options);

// TLS for a rediss:// URL. Files are PEM; a client certificate needs its
// key. Errors about them name the configuration keys (redis_tls_*); the key
// file's path is never in a message.
struct RedisTlsOptions {
    std::string ca_file;      // CAs that sign the server's certificate; empty: the system's default
    std::string cert_file;    // empty: no client certificate
    std::string key_file;     // the client certificate's private key
    std::string server_name;  // checked in the certificate and sent as SNI; empty: the URL's host
    bool verify = true;       // false: any certificate is accepted
};

struct RedisStoreOptions {
    // redis://[[user]:password@]host[:port][/db], rediss://... (TLS, see `tls`)
    // or unix://[[user]:password@]/path[?db=N]
    std::string url;
    // Bounds each call: waiting for a connection, connecting, the command.
    std::chrono::milliseconds timeout{500};
    std::size_t pool_size = 8;  // connections open at most; callers beyond wait (within `timeout`)
    // After a failure, calls fail at once (so the caller fails open) until the
    // next connection attempt; the delay doubles from `reconnect_base` up to
    // `reconnect_max`, with jitter.
    std::chrono::milliseconds reconnect_base{100};
    std::chrono::milliseconds reconnect_max{2000};
    // Liveness keys are `<owner_key_prefix><owner id>`, with this TTL.
    std::string owner_key_prefix = "training:owner:";
    std::chrono::seconds owner_ttl{120};
    const Logger* logger = nullptr;  // outages are logged here, once each (must outlive the store)
    RedisTlsOptions tls;             // for a rediss:// URL; ignored otherwise
};
// Redis through hiredis: one store for many processes and machines. A claim
// holds its owner's id, a committed key holds "1", an owner's liveness key
// its spool's path. Every command and script touches one key, so keys may
// live on any node of a Redis Cluster. Throws Error(Config) for a malformed
// URL or TLS files that cannot be read (naming the configuration key) and
// Error(DedupStore) when the server rejects the credentials, the database or
// (TLS) the certificates. A server that cannot be reached is not an error at
// open: the store starts unavailable (logged), its calls throw until a
// connection succeeds.
std::unique_ptr<DedupStore> make_redis_dedup_store(const RedisStoreOptions& options);

}  // namespace training_output
