// SQLite dedup store: WAL mode, safe for the processes of one machine.
//
//   dedup(key, state, owner, expires_at)   state 0: claimed by `owner` (a spool id); 1: committed
//   owners(id, path)                       registered spools; one is alive while its directory exists
//
// A claim is an INSERT that only succeeds on a missing key (one statement,
// exactly one claimant sees a change); on a conflict, one IMMEDIATE
// transaction reads the row and takes it over when its owner is gone or its
// commit expired. Claims use a connection of their own, so that they never
// wait behind the flusher's commits in this process; commits are written in
// small transactions, so that claims of other processes wait at most one.
#include <sqlite3.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <filesystem>
#include <mutex>
#include <thread>

#include "common/json.hpp"
#include "common/random.hpp"
#include "common/sha256.hpp"
#include "training_output/dedup_store.hpp"
#include "training_output/error.hpp"

namespace training_output {
namespace {

constexpr std::size_t kCommitChunk = 256;  // keys per commit transaction
constexpr int kPurgeBatch = 500;           // rows per purge transaction
constexpr int kPurgeBatchesPerCall = 8;

std::int64_t unix_now() {
    return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

// Saturating: a TTL of many years never wraps into the past.
std::int64_t expiry(std::chrono::seconds ttl) {
    const std::int64_t now = unix_now();
    return ttl.count() > INT64_MAX - now ? INT64_MAX : now + ttl.count();
}

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

class SqliteDedupStore final : public DedupStore {
public:
    explicit SqliteDedupStore(const SqliteStoreOptions& options) : path_(options.path) {
        std::error_code ec;
        auto parent = std::filesystem::path(path_).parent_path();
        if (!parent.empty()) std::filesystem::create_directories(parent, ec);
        const std::int64_t busy = options.busy_timeout.count();
        work_ = std::make_unique<Connection>(path_, busy);
        create_schema(options.busy_timeout);
        if (!options.destination.empty()) remembered_destination_ = remember(options.destination);
        claims_ = std::make_unique<Connection>(path_, busy);

        Connection& c = *claims_;
        insert_ = c.prepare(
            "INSERT INTO dedup(key, state, owner, expires_at) VALUES(?1, 0, ?2, ?3) "
            "ON CONFLICT(key) DO NOTHING");
        select_ = c.prepare("SELECT state, owner, expires_at FROM dedup WHERE key = ?1");
        take_ = c.prepare("UPDATE dedup SET state = 0, owner = ?2, expires_at = ?3 WHERE key = ?1");
        owner_path_ = c.prepare("SELECT path FROM owners WHERE id = ?1");

        Connection& w = *work_;
        commit_ = w.prepare(
            "INSERT INTO dedup(key, state, owner, expires_at) VALUES(?1, 1, NULL, ?2) "
            "ON CONFLICT(key) DO UPDATE SET state = 1, owner = NULL, expires_at = excluded.expires_at");
        register_ = w.prepare(
            "INSERT INTO owners(id, path) VALUES(?1, ?2) "
            "ON CONFLICT(id) DO UPDATE SET path = excluded.path");
        retire_ = w.prepare("DELETE FROM owners WHERE id = ?1");
        purge_committed_ = w.prepare(
            "DELETE FROM dedup WHERE key IN (SELECT key FROM dedup WHERE expires_at <= ?1 AND state = 1 LIMIT ?2)");
        purge_claims_ = w.prepare(
            "DELETE FROM dedup WHERE key IN (SELECT key FROM dedup WHERE expires_at <= ?1 AND state = 0 "
            "AND owner NOT IN (SELECT id FROM owners) LIMIT ?2)");
        list_owners_ = w.prepare("SELECT id, path FROM owners");
    }

    ClaimState claim(const std::string& key, const std::string& owner, std::chrono::seconds claim_ttl) override {
        Waiting waiting(claims_waiting_);
        std::lock_guard<std::mutex> lock(claims_mutex_);
        Connection& c = *claims_;
        // New content, the common case: one statement.
        if (insert(key, owner, claim_ttl)) return ClaimState::Claimed;
        return c.transaction("claim", [&] { return settle(key, owner, claim_ttl); });
    }

    // One transaction: one WAL commit for the whole batch.
    std::vector<ClaimState> claim_batch(const std::vector<std::string>& keys, const std::string& owner,
                                        std::chrono::seconds claim_ttl) override {
        std::vector<ClaimState> out;
        if (keys.empty()) return out;
        Waiting waiting(claims_waiting_);
        std::lock_guard<std::mutex> lock(claims_mutex_);
        return claims_->transaction("claim", [&] {
            out.reserve(keys.size());
            for (const auto& key : keys) {
                out.push_back(insert(key, owner, claim_ttl) ? ClaimState::Claimed : settle(key, owner, claim_ttl));
            }
            return out;
        });
    }

    void commit(const std::vector<std::string>& keys, std::chrono::seconds ttl) override {
        std::lock_guard<std::mutex> lock(work_mutex_);
        for (std::size_t at = 0; at < keys.size(); at += kCommitChunk) {
            // SQLite's write lock is not fair: between chunks, the callers'
            // claims of this process go first.
            for (int i = 0; i < 20 && at > 0 && claims_waiting_.load() > 0; ++i) {
                std::this_thread::sleep_for(std::chrono::microseconds(50));
            }
            work_->transaction("commit", [&] {
                for (std::size_t i = at; i < std::min(keys.size(), at + kCommitChunk); ++i) {
                    if (keys[i].empty()) continue;
                    Connection::bind_text(commit_, 1, keys[i]);
                    if (ttl.count() > 0)
                        sqlite3_bind_int64(commit_, 2, expiry(ttl));
                    else
                        sqlite3_bind_null(commit_, 2);
                    work_->run(commit_, "commit");
                }
                return true;
            });
        }
    }

    void register_owner(const OwnerRecord& owner) override {
        std::lock_guard<std::mutex> lock(work_mutex_);
        Connection::bind_text(register_, 1, owner.id);
        Connection::bind_text(register_, 2, owner.spool_path);
        work_->run(register_, "register owner");
    }

    void retire_owner(const std::string& owner) override {
        std::lock_guard<std::mutex> lock(work_mutex_);
        Connection::bind_text(retire_, 1, owner);
        work_->run(retire_, "retire owner");
    }

    // Owners whose spool directory is gone, then expired rows (claims only
    // of owners that are gone), in small transactions: claims of other
    // processes wait at most one.
    void maintain() override {
        std::lock_guard<std::mutex> lock(work_mutex_);
        std::vector<std::string> gone;
        while (work_->row(list_owners_, "list owners")) {
            const auto* path = reinterpret_cast<const char*>(sqlite3_column_text(list_owners_, 1));
            struct stat st;
            if (path && ::stat(path, &st) != 0 && errno == ENOENT) {
                gone.emplace_back(reinterpret_cast<const char*>(sqlite3_column_text(list_owners_, 0)));
            }
        }
        for (const auto& id : gone) {
            Connection::bind_text(retire_, 1, id);
            work_->run(retire_, "retire owner");
        }
        for (sqlite3_stmt* purge : {purge_committed_, purge_claims_}) {
            for (int i = 0; i < kPurgeBatchesPerCall; ++i) {
                sqlite3_bind_int64(purge, 1, unix_now());
                sqlite3_bind_int(purge, 2, kPurgeBatch);
                work_->run(purge, "purge");
                if (work_->changes() < kPurgeBatch) break;
            }
        }
    }

    const char* kind() const noexcept override { return "sqlite"; }

    // The destination this file remembers (the first writer's).
    const std::string& remembered_destination() const { return remembered_destination_; }

private:
    // Records `destination` unless the file remembers one; returns the one it remembers.
    std::string remember(const std::string& destination) {
        return work_->transaction("open", [&] {
            sqlite3_stmt* put = work_->prepare(
                "INSERT INTO meta(name, value) VALUES('destination', ?1) "
                "ON CONFLICT(name) DO NOTHING");
            Connection::bind_text(put, 1, destination);
            work_->run(put, "open");
            sqlite3_stmt* get = work_->prepare("SELECT value FROM meta WHERE name = 'destination'");
            std::string value;
            if (work_->row(get, "open")) {
                const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(get, 0));
                value = text ? text : "";
                work_->finish(get, SQLITE_DONE, "open");
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
                work_->exec("PRAGMA journal_mode=WAL");
                work_->exec("PRAGMA synchronous=NORMAL");
                work_->exec(
                    "CREATE TABLE IF NOT EXISTS dedup ("
                    " key TEXT PRIMARY KEY,"
                    " state INTEGER NOT NULL,"  // 0 claimed, 1 committed
                    " owner TEXT,"              // the claimant: a spool's id
                    " expires_at INTEGER"       // unix seconds; NULL = never
                    ") WITHOUT ROWID;"
                    "CREATE INDEX IF NOT EXISTS dedup_expires ON dedup(expires_at) WHERE expires_at IS NOT NULL;"
                    "CREATE TABLE IF NOT EXISTS owners ("
                    " id TEXT PRIMARY KEY,"
                    " path TEXT NOT NULL"  // the spool's directory: alive while it exists
                    ") WITHOUT ROWID;"
                    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID");
                return;
            } catch (const Error&) {
                const int code = sqlite3_extended_errcode(work_->db()) & 0xFF;
                if ((code != SQLITE_BUSY && code != SQLITE_LOCKED) || std::chrono::steady_clock::now() >= deadline) {
                    throw;
                }
                std::this_thread::sleep_for(random::full_jitter(std::min(attempt, 6), std::chrono::milliseconds(5),
                                                                std::chrono::milliseconds(200)));
            }
        }
    }

    // With claims_mutex_ held.
    bool insert(const std::string& key, const std::string& owner, std::chrono::seconds ttl) {
        Connection::bind_text(insert_, 1, key);
        Connection::bind_text(insert_, 2, owner);
        sqlite3_bind_int64(insert_, 3, expiry(ttl));
        claims_->run(insert_, "claim");
        return claims_->changes() == 1;
    }

    // The key exists: whose is it? Inside a transaction, claims_mutex_ held.
    ClaimState settle(const std::string& key, const std::string& owner, std::chrono::seconds ttl) {
        Connection& c = *claims_;
        Connection::bind_text(select_, 1, key);
        if (!c.row(select_, "claim")) {  // deleted since (purged): free again
            return insert(key, owner, ttl) ? ClaimState::Claimed : ClaimState::Held;
        }
        const std::int64_t state = sqlite3_column_int64(select_, 0);
        const auto* holder_text = reinterpret_cast<const char*>(sqlite3_column_text(select_, 1));
        const std::string holder = holder_text ? holder_text : "";
        const bool never = sqlite3_column_type(select_, 2) == SQLITE_NULL;
        const std::int64_t expires = sqlite3_column_int64(select_, 2);
        c.finish(select_, SQLITE_DONE, "claim");
        if (state == 1) {
            if (never || expires > unix_now()) return ClaimState::Committed;
        } else if (holder == owner) {
            return ClaimState::Own;
        } else if (owner_alive(holder)) {
            return ClaimState::Held;
        }
        // Its commit expired, or its owner's spool is gone: ours now.
        Connection::bind_text(take_, 1, key);
        Connection::bind_text(take_, 2, owner);
        sqlite3_bind_int64(take_, 3, expiry(ttl));
        c.run(take_, "claim");
        return ClaimState::Claimed;
    }

    // A registered owner whose spool directory exists. A claim by an owner
    // that never registered (a token of an earlier version) is an orphan.
    bool owner_alive(const std::string& owner) {
        Connection::bind_text(owner_path_, 1, owner);
        if (!claims_->row(owner_path_, "claim")) return false;
        const auto* path = reinterpret_cast<const char*>(sqlite3_column_text(owner_path_, 0));
        struct stat st;
        const bool alive = path && ::stat(path, &st) == 0;
        claims_->finish(owner_path_, SQLITE_DONE, "claim");
        return alive;
    }

    struct Waiting {
        explicit Waiting(std::atomic<int>& n) : n_(n) { ++n_; }
        ~Waiting() { --n_; }
        Waiting(const Waiting&) = delete;
        Waiting& operator=(const Waiting&) = delete;
        std::atomic<int>& n_;
    };

    std::string path_;
    std::string remembered_destination_;
    std::atomic<int> claims_waiting_{0};  // callers in claim(): commits let them in between chunks
    std::mutex work_mutex_;               // work_: commits, owners, purges (the flusher)
    std::unique_ptr<Connection> work_;
    std::mutex claims_mutex_;  // claims_: the callers' claims
    std::unique_ptr<Connection> claims_;
    sqlite3_stmt* insert_ = nullptr;
    sqlite3_stmt* select_ = nullptr;
    sqlite3_stmt* take_ = nullptr;
    sqlite3_stmt* owner_path_ = nullptr;
    sqlite3_stmt* commit_ = nullptr;
    sqlite3_stmt* register_ = nullptr;
    sqlite3_stmt* retire_ = nullptr;
    sqlite3_stmt* purge_committed_ = nullptr;
    sqlite3_stmt* purge_claims_ = nullptr;
    sqlite3_stmt* list_owners_ = nullptr;
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
