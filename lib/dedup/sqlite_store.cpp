// SQLite dedup store: WAL mode, safe for the processes of one machine.
//
//   claims(ns, hash, owner, expires_at)  hash: the 32 bytes of a "{namespace}:{hex}" key under the
//                                        namespace's number; owner: the claimant (spools.num), NULL
//                                        once committed; expires_at: a commit's end (dedup_ttl_seconds)
//   spools(num, id, path)                registered owners; one is alive while its directory exists
//   namespaces(num, name), meta(name, value)
//
// A claim is an INSERT that only succeeds on a missing key (one statement,
// exactly one claimant sees a change); on a conflict, the same transaction
// reads the row and takes it over when its owner is gone or its commit
// expired. Claims hold no expiry: a claim lives while its owner does, and the
// claims of owners that are gone are swept in the background; so a claim
// touches the table alone, not the expiry index. Writes (claims, commits,
// housekeeping) go through one connection under one mutex; lookups through a
// read connection of their own, which no write blocks (WAL).
//
// Durability: synchronous=NORMAL. A claim is never more durable than the
// line that owns it must be: its line is spooled first, and a line whose
// claim a power loss took is confirmed again when its spool is replayed (see
// docs/design.md, "Claims and durability").
#include <sqlite3.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <mutex>
#include <thread>

#include "common/json.hpp"
#include "common/random.hpp"
#include "common/sha256.hpp"
#include "dedup/local_store.hpp"
#include "training_output/error.hpp"
#include "training_output/sys/dedup_store.hpp"

namespace training_output {
namespace {

using dedup::expiry;
using dedup::unix_now;

constexpr std::size_t kCommitChunk = 1024;  // keys per commit transaction
constexpr int kPurgeBatch = 1000;           // rows per purge statement
constexpr int kSweepRows = 2000;            // claims looked at per sweep for owners that are gone
// A round of maintain() deletes expired commits for at least this long when
// there are any (more when ingest outruns it), never longer than the cap.
constexpr std::chrono::milliseconds kPurgeMin{20}, kPurgeMax{500};
constexpr int kCacheKiB = 16384;  // each connection's page cache, at most
// Lookups read one snapshot for up to this long (or this many lookups).
constexpr std::chrono::milliseconds kReadSnapshot{2};
constexpr int kReadSnapshotUses = 4096;

class Statement {
public:
    Statement() = default;
    Statement(const Statement&) = delete;
    Statement& operator=(const Statement&) = delete;
    ~Statement() { sqlite3_finalize(stmt_); }
    sqlite3_stmt*& ref() { return stmt_; }
    sqlite3_stmt* get() const { return stmt_; }

private:
    sqlite3_stmt* stmt_ = nullptr;
};

// Waits for another connection's lock in short, growing sleeps (SQLite's own
// handler sleeps in steps of up to 100 ms), up to the busy timeout.
int busy_handler(void* timeout_ms, int count) {
    std::int64_t slept_us = 0;
    for (int i = 0; i < count; ++i) slept_us += std::min<std::int64_t>(100 * (i + 1), 2000);
    if (slept_us / 1000 >= *static_cast<std::int64_t*>(timeout_ms)) return 0;
    std::this_thread::sleep_for(std::chrono::microseconds(std::min<std::int64_t>(100 * (count + 1), 2000)));
    return 1;
}

// One connection and its statements, used under its own mutex.
class Connection {
public:
    Connection(const std::string& path, std::int64_t busy_timeout_ms) : path_(path), busy_ms_(busy_timeout_ms) {
        int rc = sqlite3_open_v2(path_.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                                 nullptr);
        if (rc != SQLITE_OK) {
            std::string why = db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
            sqlite3_close(db_);
            db_ = nullptr;
            throw Error(ErrorCode::DedupStore, "dedup store " + json::quote(path_) + " cannot be opened: " + why);
        }
        sqlite3_busy_handler(db_, busy_handler, &busy_ms_);
    }
    ~Connection() {
        statements_.clear();
        if (db_) sqlite3_close(db_);
    }
    Connection(const Connection&) = delete;
    Connection& operator=(const Connection&) = delete;

    sqlite3* db() const { return db_; }

    void exec(const char* sql) {
        char* err = nullptr;
        int rc = sqlite3_exec(db_, sql, nullptr, nullptr, &err);
        if (rc != SQLITE_OK) {
            std::string why = err ? err : sqlite3_errstr(rc);
            sqlite3_free(err);
            throw Error(ErrorCode::DedupStore, "dedup store " + json::quote(path_) + ": " + why);
        }
    }

    sqlite3_stmt* prepare(const char* sql) {
        statements_.emplace_back(std::make_unique<Statement>());
        if (sqlite3_prepare_v2(db_, sql, -1, &statements_.back()->ref(), nullptr) != SQLITE_OK) {
            fail("prepare", SQLITE_ERROR);
        }
        return statements_.back()->get();
    }

    static void bind_text(sqlite3_stmt* s, int i, const std::string& v) {
        sqlite3_bind_text(s, i, v.data(), static_cast<int>(v.size()), SQLITE_STATIC);
    }

    // Runs a statement that returns no row.
    void run(sqlite3_stmt* s, const char* what) {
        int rc = sqlite3_step(s);
        finish(s, rc, what);
    }

    // Steps a query once: true with a row to read (call finish() after), false when there is none.
    bool row(sqlite3_stmt* s, const char* what) {
        int rc = sqlite3_step(s);
        if (rc == SQLITE_ROW) return true;
        finish(s, rc, what);
        return false;
    }

    void finish(sqlite3_stmt* s, int rc, const char* what) {
        std::string why;
        if (rc != SQLITE_DONE && rc != SQLITE_ROW) why = sqlite3_errmsg(db_);
        sqlite3_reset(s);
        sqlite3_clear_bindings(s);
        if (!why.empty()) fail(what, rc, why);
    }

    int changes() const { return sqlite3_changes(db_); }

    // Runs fn() inside BEGIN IMMEDIATE .. COMMIT; rolls back if it throws.
    template <class Fn>
    auto transaction(const char* what, Fn&& fn) -> decltype(fn()) {
        if (!begin_) {
            begin_ = prepare("BEGIN IMMEDIATE");
            commit_ = prepare("COMMIT");
            rollback_ = prepare("ROLLBACK");
        }
        run(begin_, what);
        try {
            auto result = fn();
            run(commit_, what);
            return result;
        } catch (...) {
            sqlite3_reset(rollback_);
            sqlite3_step(rollback_);
            sqlite3_reset(rollback_);
            throw;
        }
    }

    [[noreturn]] void fail(const char* what, int rc, const std::string& why = {}) const {
        throw Error(ErrorCode::DedupStore, std::string("dedup store ") + json::quote(path_) + ": " + what +
                                               " failed: " +
                                               (!why.empty() ? why
                                                : db_        ? std::string(sqlite3_errmsg(db_))
                                                             : std::string(sqlite3_errstr(rc))));
    }

private:
    std::string path_;
    std::int64_t busy_ms_;
    sqlite3* db_ = nullptr;
    std::vector<std::unique_ptr<Statement>> statements_;
    sqlite3_stmt* begin_ = nullptr;
    sqlite3_stmt* commit_ = nullptr;
    sqlite3_stmt* rollback_ = nullptr;
};

// A mutex that lets its waiters in in the order they came: a caller's claim
// waits for the chunk of a large commit being written, not for all of it.
class FairMutex {
public:
    void lock() {
        std::unique_lock<std::mutex> l(m_);
        const std::uint64_t ticket = next_++;
        cv_.wait(l, [&] { return serving_ == ticket; });
    }
    void unlock() {
        {
            std::lock_guard<std::mutex> l(m_);
            ++serving_;
        }
        cv_.notify_all();
    }

private:
    std::mutex m_;
    std::condition_variable cv_;
    std::uint64_t next_ = 0, serving_ = 0;
};

// A key as the table holds it: the namespace's name and the hash's bytes
// ("{namespace}:{64 hex digits}"), or, for any other key, the text after the
// last ':' under the namespace "<name>:" (no writer makes such keys; tests do).
struct KeyParts {
    std::string_view ns;
    std::string raw_ns;  // set for the second form
    std::uint8_t bytes[32];
    std::string text;  // the second form's bytes
    const void* data() const { return text.empty() ? static_cast<const void*>(bytes) : text.data(); }
    int size() const { return text.empty() ? 32 : static_cast<int>(text.size()); }
    std::string_view ns_name() const { return raw_ns.empty() ? ns : std::string_view(raw_ns); }
};

KeyParts split_key(std::string_view key) {
    KeyParts k;
    const std::size_t colon = key.rfind(':');
    const std::string_view ns = colon == std::string_view::npos ? std::string_view() : key.substr(0, colon);
    const std::string_view tail = colon == std::string_view::npos ? key : key.substr(colon + 1);
    k.ns = ns;
    if (!crypto::parse_hex(tail, k.bytes, sizeof k.bytes)) {
        k.raw_ns = std::string(ns) + ":";
        k.text = std::string(tail.empty() ? std::string_view("\0", 1) : tail);
    }
    return k;
}

class SqliteDedupStore final : public DedupStore {
public:
    explicit SqliteDedupStore(const SqliteStoreOptions& options) : path_(options.path) {
        std::error_code ec;
        auto parent = std::filesystem::path(path_).parent_path();
        if (!parent.empty()) std::filesystem::create_directories(parent, ec);
        const std::int64_t busy = options.busy_timeout.count();
        write_ = std::make_unique<Connection>(path_, busy);
        create_schema(options.busy_timeout);
        if (!options.destination.empty()) remembered_destination_ = remember(options.destination);
        read_ = std::make_unique<Connection>(path_, busy);
        configure(*read_);
        char* real = ::realpath(path_.c_str(), nullptr);
        identity_ = "sqlite:" + std::string(real ? real : path_.c_str());
        std::free(real);

        Connection& w = *write_;
        insert_ = w.prepare("INSERT INTO claims(ns, hash, owner) VALUES(?1, ?2, ?3) ON CONFLICT(ns, hash) DO NOTHING");
        select_ = w.prepare("SELECT owner, expires_at FROM claims WHERE ns = ?1 AND hash = ?2");
        take_ = w.prepare("UPDATE claims SET owner = ?3, expires_at = NULL WHERE ns = ?1 AND hash = ?2");
        owner_path_ = w.prepare("SELECT path FROM spools WHERE num = ?1");
        commit_ = w.prepare(
            "INSERT INTO claims(ns, hash, owner, expires_at) VALUES(?1, ?2, NULL, ?3) "
            "ON CONFLICT(ns, hash) DO UPDATE SET owner = NULL, expires_at = excluded.expires_at");
        register_ = w.prepare(
            "INSERT INTO spools(id, path) VALUES(?1, ?2) ON CONFLICT(id) DO UPDATE SET path = excluded.path "
            "RETURNING num");
        owner_number_ = w.prepare("SELECT num FROM spools WHERE id = ?1");
        retire_ = w.prepare("DELETE FROM spools WHERE id = ?1");
        purge_ = w.prepare(
            "DELETE FROM claims WHERE (ns, hash) IN "
            "(SELECT ns, hash FROM claims WHERE expires_at <= ?1 LIMIT ?2)");
        list_owners_ = w.prepare("SELECT num, id, path FROM spools");
        sweep_ = w.prepare("SELECT ns, hash, owner FROM claims WHERE (ns, hash) > (?1, ?2) ORDER BY ns, hash LIMIT ?3");
        drop_ = w.prepare("DELETE FROM claims WHERE ns = ?1 AND hash = ?2 AND owner = ?3");
        lookup_ = read_->prepare("SELECT owner, expires_at FROM claims WHERE ns = ?1 AND hash = ?2");
    }

    ClaimState claim(const std::string& key, const std::string& owner, std::chrono::seconds) override {
        const KeyParts k = split_key(key);
        const std::int64_t ns = namespace_number(k.ns_name());
        WriteLock lock(*this);
        const std::int64_t me = owner_number(owner);
        // New content, the common case: one statement.
        if (insert(ns, k, me)) return ClaimState::Claimed;
        return write_->transaction("claim", [&] { return settle(ns, k, me); });
    }

    // One transaction: one WAL commit for the whole batch.
    std::vector<ClaimState> claim_batch(const std::vector<std::string>& keys, const std::string& owner,
                                        std::chrono::seconds) override {
        std::vector<ClaimState> out;
        if (keys.empty()) return out;
        std::vector<KeyParts> parts;
        std::vector<std::int64_t> ns;
        split_keys(keys, parts, ns);
        WriteLock lock(*this);
        const std::int64_t me = owner_number(owner);
        return write_->transaction("claim", [&] {
            out.reserve(keys.size());
            for (std::size_t i = 0; i < parts.size(); ++i) {
                out.push_back(insert(ns[i], parts[i], me) ? ClaimState::Claimed : settle(ns[i], parts[i], me));
            }
            return out;
        });
    }

    std::optional<KeyState> lookup(const std::string& key, const std::string& owner) override {
        const KeyParts k = split_key(key);
        const std::int64_t ns = namespace_number(k.ns_name());
        const std::int64_t me = known_owner_number(owner);
        std::lock_guard<std::mutex> lock(read_mutex_);
        Connection& c = *read_;
        // One read transaction serves the lookups of up to kReadSnapshot:
        // no lock calls and no page cache reset per lookup. What it misses
        // in the meantime (a commit or claim of another writer) the claim
        // finds.
        const auto now = Clock::now();
        const std::uint64_t writes = writes_.load(std::memory_order_acquire);
        if (read_open_ &&
            (now - read_since_ > kReadSnapshot || ++read_uses_ > kReadSnapshotUses || writes != read_writes_)) {
            end_read();  // older than allowed, or this store wrote since (its own writes are seen at once)
        }
        if (!read_open_) {
            read_->exec("BEGIN");
            read_open_ = true;
            read_since_ = now;
            read_uses_ = 0;
            read_writes_ = writes;
        }
        sqlite3_bind_int64(lookup_, 1, ns);
        sqlite3_bind_blob(lookup_, 2, k.data(), k.size(), SQLITE_STATIC);
        if (!c.row(lookup_, "lookup")) return KeyState::Absent;
        const bool committed = sqlite3_column_type(lookup_, 0) == SQLITE_NULL;
        const std::int64_t holder = sqlite3_column_int64(lookup_, 0);
        const bool never = sqlite3_column_type(lookup_, 1) == SQLITE_NULL;
        const std::int64_t expires = sqlite3_column_int64(lookup_, 1);
        c.finish(lookup_, SQLITE_DONE, "lookup");
        if (committed) return never || expires > unix_now() ? KeyState::Committed : KeyState::Absent;
        return holder == me ? KeyState::Own : KeyState::Other;
    }

    // With read_mutex_ held.
    void end_read() {
        if (!read_open_) return;
        read_open_ = false;
        if (!sqlite3_get_autocommit(read_->db())) read_->exec("COMMIT");
    }

    void commit(const std::vector<std::string>& keys, std::chrono::seconds ttl) override {
        std::vector<KeyParts> parts;
        std::vector<std::int64_t> ns;
        split_keys(keys, parts, ns);
        // In chunks, the lock taken for each: claims of other processes, and
        // this one's (the lock is first come, first served), wait for one
        // chunk at most.
        for (std::size_t at = 0; at < parts.size(); at += kCommitChunk) {
            WriteLock lock(*this);
            committed_since_purge_ += std::min(kCommitChunk, parts.size() - at);
            write_->transaction("commit", [&] {
                for (std::size_t i = at; i < std::min(parts.size(), at + kCommitChunk); ++i) {
                    sqlite3_bind_int64(commit_, 1, ns[i]);
                    sqlite3_bind_blob(commit_, 2, parts[i].data(), parts[i].size(), SQLITE_STATIC);
                    if (ttl.count() > 0)
                        sqlite3_bind_int64(commit_, 3, expiry(ttl));
                    else
                        sqlite3_bind_null(commit_, 3);
                    write_->run(commit_, "commit");
                }
                return true;
            });
        }
    }

    void register_owner(const OwnerRecord& owner) override {
        WriteLock lock(*this);
        Connection::bind_text(register_, 1, owner.id);
        Connection::bind_text(register_, 2, owner.spool_path);
        std::int64_t num = 0;
        if (write_->row(register_, "register owner")) {
            num = sqlite3_column_int64(register_, 0);
            while (sqlite3_step(register_) == SQLITE_ROW) {}
            write_->finish(register_, SQLITE_DONE, "register owner");
        }
        std::lock_guard<std::mutex> owners(owners_mutex_);
        owner_numbers_[owner.id] = num;
    }

    void retire_owner(const std::string& owner) override {
        WriteLock lock(*this);
        Connection::bind_text(retire_, 1, owner);
        write_->run(retire_, "retire owner");
        std::lock_guard<std::mutex> owners(owners_mutex_);
        owner_numbers_.erase(owner);
    }

    // Owners whose spool directory is gone; expired commits, in proportion
    // to what was committed since the last round; claims of owners that are
    // gone, a slice of the table a round; free pages given back.
    void maintain() override {
        {
            // A snapshot no lookup ended holds the WAL from being checkpointed.
            std::lock_guard<std::mutex> read(read_mutex_);
            if (read_open_ && Clock::now() - read_since_ > kReadSnapshot) end_read();
        }
        WriteLock lock(*this);
        std::vector<std::string> gone;
        while (write_->row(list_owners_, "list owners")) {
            const auto* path = reinterpret_cast<const char*>(sqlite3_column_text(list_owners_, 2));
            struct stat st;
            if (path && ::stat(path, &st) != 0 && errno == ENOENT) {
                gone.emplace_back(reinterpret_cast<const char*>(sqlite3_column_text(list_owners_, 1)));
            }
        }
        for (const auto& id : gone) {
            Connection::bind_text(retire_, 1, id);
            write_->run(retire_, "retire owner");
        }
        purge_expired();
        sweep_orphaned_claims();
        write_->exec("PRAGMA incremental_vacuum(4096)");
    }

    const char* kind() const noexcept override { return "sqlite"; }
    std::string identity() const override { return identity_; }

    // The destination this file remembers (the first writer's).
    const std::string& remembered_destination() const { return remembered_destination_; }

private:
    using Clock = std::chrono::steady_clock;

    // write_mutex_, held; once released, lookups read a new snapshot (a
    // store sees its own writes at once).
    struct WriteLock {
        explicit WriteLock(SqliteDedupStore& s) : s_(s) { s_.write_mutex_.lock(); }
        ~WriteLock() {
            s_.writes_.fetch_add(1, std::memory_order_release);
            s_.write_mutex_.unlock();
        }
        WriteLock(const WriteLock&) = delete;
        WriteLock& operator=(const WriteLock&) = delete;
        SqliteDedupStore& s_;
    };

    static void configure(Connection& c) {
        c.exec("PRAGMA synchronous=NORMAL");
        c.exec(("PRAGMA cache_size=-" + std::to_string(kCacheKiB)).c_str());
        // Pages are read from the kernel's cache in place (shared by every
        // connection and process on the file) rather than copied.
        c.exec("PRAGMA mmap_size=268435456");
        // Checkpoints in larger steps: a page that claims and commits touch
        // again before it is copied back is copied back once.
        c.exec("PRAGMA wal_autocheckpoint=8192");
    }

    // Records `destination` unless the file remembers one; returns the one it remembers.
    std::string remember(const std::string& destination) {
        return write_->transaction("open", [&] {
            sqlite3_stmt* put = write_->prepare(
                "INSERT INTO meta(name, value) VALUES('destination', ?1) "
                "ON CONFLICT(name) DO NOTHING");
            Connection::bind_text(put, 1, destination);
            write_->run(put, "open");
            sqlite3_stmt* get = write_->prepare("SELECT value FROM meta WHERE name = 'destination'");
            std::string value;
            if (write_->row(get, "open")) {
                const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(get, 0));
                value = text ? text : "";
                write_->finish(get, SQLITE_DONE, "open");
            }
            return value;
        });
    }

    void create_schema(std::chrono::milliseconds busy_timeout) {
        // Processes opening a new database at once race for the switch to
        // WAL and the schema; SQLite answers some of those races with
        // SQLITE_BUSY at once instead of through the busy handler.
        const auto deadline = std::chrono::steady_clock::now() + busy_timeout;
        for (int attempt = 0;; ++attempt) {
            try {
                // Free pages go back to the file system (maintain()); only a
                // new file takes the setting here (a converted one below).
                write_->exec("PRAGMA auto_vacuum=INCREMENTAL");
                write_->exec("PRAGMA journal_mode=WAL");
                configure(*write_);
                write_->exec(
                    "BEGIN IMMEDIATE;"
                    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;"
                    "CREATE TABLE IF NOT EXISTS namespaces (num INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);"
                    // AUTOINCREMENT: a number is never given again, so that the
                    // claims a retired owner left are never a new owner's.
                    "CREATE TABLE IF NOT EXISTS spools ("
                    " num INTEGER PRIMARY KEY AUTOINCREMENT,"
                    " id TEXT NOT NULL UNIQUE,"
                    " path TEXT NOT NULL"  // the spool's directory: alive while it exists
                    ");"
                    "CREATE TABLE IF NOT EXISTS claims ("
                    " ns INTEGER NOT NULL,"
                    " hash BLOB NOT NULL,"
                    " owner INTEGER,"       // spools.num; NULL: committed
                    " expires_at INTEGER,"  // a commit with a TTL: unix seconds
                    " PRIMARY KEY (ns, hash)"
                    ") WITHOUT ROWID;"
                    "CREATE INDEX IF NOT EXISTS claims_expiry ON claims(expires_at) WHERE expires_at IS NOT NULL;"
                    "COMMIT");
                convert_version_1();
                return;
            } catch (const Error&) {
                const int code = sqlite3_extended_errcode(write_->db()) & 0xFF;
                if (!sqlite3_get_autocommit(write_->db()))
                    sqlite3_exec(write_->db(), "ROLLBACK", nullptr, nullptr, nullptr);
                if ((code != SQLITE_BUSY && code != SQLITE_LOCKED) || std::chrono::steady_clock::now() >= deadline) {
                    throw;
                }
                std::this_thread::sleep_for(random::full_jitter(std::min(attempt, 6), std::chrono::milliseconds(5),
                                                                std::chrono::milliseconds(200)));
            }
        }
    }

    bool table_exists(const char* name) {
        sqlite3_stmt* s = write_->prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1");
        sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
        const bool found = write_->row(s, "open");
        if (found) write_->finish(s, SQLITE_DONE, "open");
        return found;
    }

    // A file of the first schema (text keys in `dedup`, owners by id):
    // converted once, in one transaction (another process may be doing the
    // same: the first one converts, the others find it done). Committed
    // content and the claims of registered owners carry over; claims of
    // owners that never registered were free to take anyway.
    void convert_version_1() {
        if (!table_exists("dedup")) return;
        const bool converted = write_->transaction("convert", [&] {
            if (!table_exists("dedup")) return false;
            write_->exec(
                "INSERT INTO spools(id, path) SELECT id, path FROM owners WHERE true "
                "ON CONFLICT(id) DO NOTHING");
            sqlite3_stmt* rows = write_->prepare(
                "SELECT d.key, d.state, s.num, d.expires_at FROM dedup d LEFT JOIN spools s ON s.id = d.owner");
            sqlite3_stmt* put = write_->prepare(
                "INSERT INTO claims(ns, hash, owner, expires_at) VALUES(?1, ?2, ?3, ?4) "
                "ON CONFLICT(ns, hash) DO NOTHING");
            while (write_->row(rows, "convert")) {
                const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(rows, 0));
                const bool committed = sqlite3_column_int64(rows, 1) == 1;
                if (!text || (!committed && sqlite3_column_type(rows, 2) == SQLITE_NULL)) continue;
                const KeyParts k = split_key(text);
                sqlite3_bind_int64(put, 1, namespace_number_locked(k.ns_name()));
                sqlite3_bind_blob(put, 2, k.data(), k.size(), SQLITE_TRANSIENT);
                if (committed) {
                    sqlite3_bind_null(put, 3);
                } else {
                    sqlite3_bind_int64(put, 3, sqlite3_column_int64(rows, 2));
                }
                if (committed && sqlite3_column_type(rows, 3) != SQLITE_NULL) {
                    sqlite3_bind_int64(put, 4, sqlite3_column_int64(rows, 3));
                } else {
                    sqlite3_bind_null(put, 4);
                }
                write_->run(put, "convert");
            }
            write_->exec("DROP TABLE dedup; DROP TABLE IF EXISTS owners");
            return true;
        });
        if (!converted) return;
        // Free pages go back to the file system from now on (a file made by
        // the first version had no auto_vacuum): VACUUM rewrites it once.
        write_->exec("PRAGMA auto_vacuum=INCREMENTAL");
        write_->exec("VACUUM");
    }

    // The keys (empty ones skipped) and their namespaces' numbers; keys of
    // one namespace, the usual case, resolve it once.
    void split_keys(const std::vector<std::string>& keys, std::vector<KeyParts>& parts, std::vector<std::int64_t>& ns) {
        parts.reserve(keys.size());
        ns.reserve(keys.size());
        std::string last;
        std::int64_t last_num = 0;
        for (const auto& key : keys) {
            if (key.empty()) continue;
            parts.push_back(split_key(key));
            const std::string_view name = parts.back().ns_name();
            if (last_num == 0 || name != last) {
                last.assign(name.data(), name.size());
                last_num = namespace_number(name);
            }
            ns.push_back(last_num);
        }
    }

    std::int64_t namespace_number(std::string_view name) {
        {
            std::lock_guard<std::mutex> lock(owners_mutex_);
            if (last_ns_num_ != 0 && name == last_ns_) return last_ns_num_;
            auto it = namespaces_.find(std::string(name));
            if (it != namespaces_.end()) return it->second;
        }
        WriteLock lock(*this);
        return namespace_number_locked(name);
    }

    // With write_mutex_ held.
    std::int64_t namespace_number_locked(std::string_view name) {
        if (!namespace_put_) {  // prepared on first use: a conversion at open comes before the others
            namespace_put_ = write_->prepare("INSERT INTO namespaces(name) VALUES(?1) ON CONFLICT(name) DO NOTHING");
            namespace_get_ = write_->prepare("SELECT num FROM namespaces WHERE name = ?1");
        }
        sqlite3_bind_text(namespace_put_, 1, name.data(), static_cast<int>(name.size()), SQLITE_STATIC);
        write_->run(namespace_put_, "namespace");
        sqlite3_bind_text(namespace_get_, 1, name.data(), static_cast<int>(name.size()), SQLITE_STATIC);
        std::int64_t num = 0;
        if (write_->row(namespace_get_, "namespace")) {
            num = sqlite3_column_int64(namespace_get_, 0);
            write_->finish(namespace_get_, SQLITE_DONE, "namespace");
        }
        if (num == 0) write_->fail("namespace", SQLITE_ERROR, "no number for the namespace");
        std::lock_guard<std::mutex> lock(owners_mutex_);
        namespaces_[std::string(name)] = num;
        last_ns_ = std::string(name);
        last_ns_num_ = num;
        return num;
    }

    // The owner's number, as registered (by any process); with write_mutex_ held.
    std::int64_t owner_number(const std::string& id) {
        {
            std::lock_guard<std::mutex> lock(owners_mutex_);
            auto it = owner_numbers_.find(id);
            if (it != owner_numbers_.end()) return it->second;
        }
        Connection::bind_text(owner_number_, 1, id);
        std::int64_t num = dedup::unregistered_owner_number(id);
        if (write_->row(owner_number_, "claim")) {
            num = sqlite3_column_int64(owner_number_, 0);
            write_->finish(owner_number_, SQLITE_DONE, "claim");
            std::lock_guard<std::mutex> lock(owners_mutex_);
            owner_numbers_[id] = num;
        }
        return num;
    }

    // For lookups: the number this store registered the owner under (any
    // other owner's claims are Other to it anyway).
    std::int64_t known_owner_number(const std::string& id) {
        std::lock_guard<std::mutex> lock(owners_mutex_);
        auto it = owner_numbers_.find(id);
        return it != owner_numbers_.end() ? it->second : 0;
    }

    // With write_mutex_ held.
    bool insert(std::int64_t ns, const KeyParts& k, std::int64_t owner) {
        sqlite3_bind_int64(insert_, 1, ns);
        sqlite3_bind_blob(insert_, 2, k.data(), k.size(), SQLITE_STATIC);
        sqlite3_bind_int64(insert_, 3, owner);
        write_->run(insert_, "claim");
        return write_->changes() == 1;
    }

    // The key exists: whose is it? Inside a transaction, write_mutex_ held.
    ClaimState settle(std::int64_t ns, const KeyParts& k, std::int64_t owner) {
        Connection& c = *write_;
        sqlite3_bind_int64(select_, 1, ns);
        sqlite3_bind_blob(select_, 2, k.data(), k.size(), SQLITE_STATIC);
        if (!c.row(select_, "claim")) {  // deleted since (purged): free again
            return insert(ns, k, owner) ? ClaimState::Claimed : ClaimState::Held;
        }
        const bool committed = sqlite3_column_type(select_, 0) == SQLITE_NULL;
        const std::int64_t holder = sqlite3_column_int64(select_, 0);
        const bool never = sqlite3_column_type(select_, 1) == SQLITE_NULL;
        const std::int64_t expires = sqlite3_column_int64(select_, 1);
        c.finish(select_, SQLITE_DONE, "claim");
        if (committed) {
            if (never || expires > unix_now()) return ClaimState::Committed;
        } else if (holder == owner) {
            return ClaimState::Own;
        } else if (owner_alive(holder)) {
            return ClaimState::Held;
        }
        // Its commit expired, or its owner's spool is gone: ours now.
        sqlite3_bind_int64(take_, 1, ns);
        sqlite3_bind_blob(take_, 2, k.data(), k.size(), SQLITE_STATIC);
        sqlite3_bind_int64(take_, 3, owner);
        c.run(take_, "claim");
        return ClaimState::Claimed;
    }

    // A registered owner whose spool directory exists. A claim by an owner
    // that never registered (a token of an earlier version) is an orphan.
    bool owner_alive(std::int64_t owner) {
        if (owner <= 0) return false;
        sqlite3_bind_int64(owner_path_, 1, owner);
        if (!write_->row(owner_path_, "claim")) return false;
        const auto* path = reinterpret_cast<const char*>(sqlite3_column_text(owner_path_, 0));
        struct stat st;
        const bool alive = path && ::stat(path, &st) == 0;
        write_->finish(owner_path_, SQLITE_DONE, "claim");
        return alive;
    }

    // Expired commits: at least as many as were committed since the last
    // round, and for at least kPurgeMin when there are more, never longer
    // than kPurgeMax; so that with a TTL the file reaches a steady size.
    void purge_expired() {
        const auto start = Clock::now();
        const std::uint64_t owed = committed_since_purge_;
        committed_since_purge_ = 0;
        std::uint64_t deleted = 0;
        for (;;) {
            sqlite3_bind_int64(purge_, 1, unix_now());
            sqlite3_bind_int(purge_, 2, kPurgeBatch);
            write_->run(purge_, "purge");
            const int n = write_->changes();
            deleted += static_cast<std::uint64_t>(n);
            const auto spent = Clock::now() - start;
            if (n < kPurgeBatch || spent >= kPurgeMax || (deleted >= owed && spent >= kPurgeMin)) break;
        }
    }

    // Claims of owners that are gone (their spool removed without being
    // settled): a slice of the table a round, in one transaction, so that no
    // owner can register and claim between the reading of the owners and the
    // deletion.
    void sweep_orphaned_claims() {
        write_->transaction("sweep", [&] {
            std::vector<std::int64_t> alive;
            while (write_->row(list_owners_, "sweep")) alive.push_back(sqlite3_column_int64(list_owners_, 0));
            std::sort(alive.begin(), alive.end());
            struct Row {
                std::int64_t ns, owner;
                std::string hash;
            };
            std::vector<Row> orphans;
            sqlite3_bind_int64(sweep_, 1, sweep_ns_);
            // A copy: the cursor below moves on while the statement steps.
            sqlite3_bind_blob(sweep_, 2, sweep_hash_.data(), static_cast<int>(sweep_hash_.size()), SQLITE_TRANSIENT);
            sqlite3_bind_int(sweep_, 3, kSweepRows);
            int rows = 0;
            while (write_->row(sweep_, "sweep")) {
                ++rows;
                const std::int64_t ns = sqlite3_column_int64(sweep_, 0);
                const auto* bytes = static_cast<const char*>(sqlite3_column_blob(sweep_, 1));
                std::string hash(bytes ? bytes : "", static_cast<std::size_t>(sqlite3_column_bytes(sweep_, 1)));
                if (sqlite3_column_type(sweep_, 2) != SQLITE_NULL) {
                    const std::int64_t owner = sqlite3_column_int64(sweep_, 2);
                    if (!std::binary_search(alive.begin(), alive.end(), owner)) orphans.push_back({ns, owner, hash});
                }
                sweep_ns_ = ns;
                sweep_hash_ = std::move(hash);
            }
            if (rows < kSweepRows) {  // the end of the table: the next round starts over
                sweep_ns_ = 0;
                sweep_hash_.clear();
            }
            for (const auto& o : orphans) {
                sqlite3_bind_int64(drop_, 1, o.ns);
                sqlite3_bind_blob(drop_, 2, o.hash.data(), static_cast<int>(o.hash.size()), SQLITE_STATIC);
                sqlite3_bind_int64(drop_, 3, o.owner);
                write_->run(drop_, "sweep");
            }
            return true;
        });
    }

    std::string path_;
    std::string identity_;
    std::string remembered_destination_;
    FairMutex write_mutex_;  // write_ and its statements
    std::unique_ptr<Connection> write_;
    std::mutex read_mutex_;  // read_: lookups
    std::unique_ptr<Connection> read_;
    bool read_open_ = false;  // a read transaction serves the lookups (under read_mutex_)
    Clock::time_point read_since_{};
    int read_uses_ = 0;
    std::uint64_t read_writes_ = 0;         // writes_ when it began
    std::atomic<std::uint64_t> writes_{0};  // write transactions of this store
    std::mutex owners_mutex_;               // the maps below
    std::map<std::string, std::int64_t> owner_numbers_;
    std::map<std::string, std::int64_t> namespaces_;
    std::string last_ns_;
    std::int64_t last_ns_num_ = 0;
    std::uint64_t committed_since_purge_ = 0;  // under write_mutex_
    std::int64_t sweep_ns_ = 0;                // where the next sweep starts (under write_mutex_)
    std::string sweep_hash_;
    sqlite3_stmt* insert_ = nullptr;
    sqlite3_stmt* select_ = nullptr;
    sqlite3_stmt* take_ = nullptr;
    sqlite3_stmt* owner_path_ = nullptr;
    sqlite3_stmt* commit_ = nullptr;
    sqlite3_stmt* register_ = nullptr;
    sqlite3_stmt* owner_number_ = nullptr;
    sqlite3_stmt* retire_ = nullptr;
    sqlite3_stmt* purge_ = nullptr;
    sqlite3_stmt* list_owners_ = nullptr;
    sqlite3_stmt* sweep_ = nullptr;
    sqlite3_stmt* drop_ = nullptr;
    sqlite3_stmt* namespace_put_ = nullptr;
    sqlite3_stmt* namespace_get_ = nullptr;
    sqlite3_stmt* lookup_ = nullptr;
};

}  // namespace

std::unique_ptr<DedupStore> make_sqlite_dedup_store(const SqliteStoreOptions& options) {
    auto store = std::make_unique<SqliteDedupStore>(options);
    if (options.destination.empty() || store->remembered_destination() == options.destination) return store;
    const std::string other = store->remembered_destination();
    if (!options.own_file_for_others) {
        throw Error(ErrorCode::Config, "configuration key \"dedup_db_path\": " + json::quote(options.path) +
                                           " remembers the content written to " + json::quote(other) + ", not to " +
                                           json::quote(options.destination) + ": give this writer a file of its own");
    }
    // A file of its own beside it, named after the destination.
    SqliteStoreOptions own = options;
    std::string base = options.path;
    const std::string suffix = ".sqlite3";
    if (base.size() > suffix.size() && base.compare(base.size() - suffix.size(), suffix.size(), suffix) == 0) {
        base.resize(base.size() - suffix.size());
    }
    const crypto::Digest d = crypto::sha256(options.destination);
    own.path = base + "-" + crypto::hex(d.data(), d.size()).substr(0, 12) + suffix;
    own.own_file_for_others = false;
    return make_sqlite_dedup_store(own);
}

}  // namespace training_output
