// SQLite dedup store: one table, WAL mode, safe for the processes of one
// machine. A claim is an upsert that only succeeds on a missing or expired
// row, so of two claimants exactly one sees a change.
#include <sqlite3.h>

#include <chrono>
#include <filesystem>
#include <mutex>
#include <thread>

#include "common/json.hpp"
#include "common/random.hpp"
#include "training_output/dedup_store.hpp"
#include "training_output/error.hpp"

namespace training_output {
namespace {

std::int64_t unix_now() {
    return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
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

class SqliteDedupStore final : public DedupStore {
public:
    explicit SqliteDedupStore(const SqliteStoreOptions& options) : path_(options.path), token_(random::token_hex(16)) {
        std::error_code ec;
        auto parent = std::filesystem::path(path_).parent_path();
        if (!parent.empty()) std::filesystem::create_directories(parent, ec);
        int rc = sqlite3_open_v2(path_.c_str(), &db_,
                                 SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
        if (rc != SQLITE_OK) {
            std::string why = db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
            sqlite3_close(db_);
            db_ = nullptr;
            throw Error(ErrorCode::DedupStore, "dedup store " + json::quote(path_) + " cannot be opened: " + why);
        }
        sqlite3_busy_timeout(db_, static_cast<int>(options.busy_timeout.count()));
        try {
            // Processes opening a new database at once race for the switch to
            // WAL and the schema; SQLite answers some of those races with
            // SQLITE_BUSY at once instead of through the busy handler.
            const auto deadline = std::chrono::steady_clock::now() + options.busy_timeout;
            for (int attempt = 0;; ++attempt) {
                try {
                    exec("PRAGMA journal_mode=WAL");
                    exec("PRAGMA synchronous=NORMAL");
                    exec("CREATE TABLE IF NOT EXISTS dedup ("
                         " key TEXT PRIMARY KEY,"
                         " state INTEGER NOT NULL,"  // 0 claimed, 1 committed
                         " owner TEXT,"              // the claimant's token
                         " expires_at INTEGER"       // unix seconds; NULL = never
                         ") WITHOUT ROWID");
                    break;
                } catch (const Error&) {
                    const int code = sqlite3_extended_errcode(db_) & 0xFF;
                    if ((code != SQLITE_BUSY && code != SQLITE_LOCKED) ||
                        std::chrono::steady_clock::now() >= deadline) {
                        throw;
                    }
                    std::this_thread::sleep_for(random::full_jitter(std::min(attempt, 6), std::chrono::milliseconds(5),
                                                                    std::chrono::milliseconds(200)));
                }
            }
            prepare(claim_,
                    "INSERT INTO dedup(key, state, owner, expires_at) VALUES(?1, 0, ?2, ?3) "
                    "ON CONFLICT(key) DO UPDATE SET state = 0, owner = excluded.owner, expires_at = excluded.expires_at "
                    "WHERE dedup.expires_at IS NOT NULL AND dedup.expires_at <= ?4");
            prepare(commit_,
                    "INSERT INTO dedup(key, state, owner, expires_at) VALUES(?1, 1, NULL, ?2) "
                    "ON CONFLICT(key) DO UPDATE SET state = 1, owner = NULL, expires_at = excluded.expires_at");
            prepare(release_, "DELETE FROM dedup WHERE key = ?1 AND state = 0 AND owner = ?2");
            prepare(begin_, "BEGIN IMMEDIATE");
            prepare(end_, "COMMIT");
            prepare(rollback_, "ROLLBACK");
            // Expired rows are dead weight; dropping them at open keeps the table bounded.
            Statement purge;
            prepare(purge, "DELETE FROM dedup WHERE expires_at IS NOT NULL AND expires_at <= ?1");
            sqlite3_bind_int64(purge.get(), 1, unix_now());
            try {
                step(purge, "purge");
            } catch (const Error&) {
                // Housekeeping only: another process may hold the write lock right now.
            }
        } catch (...) {
            close();
            throw;
        }
    }

    ~SqliteDedupStore() override { close(); }

    bool claim(const std::string& key, std::chrono::seconds claim_ttl) override {
        std::lock_guard<std::mutex> lock(mutex_);
        auto now = unix_now();
        sqlite3_stmt* s = claim_.get();
        bind_text(s, 1, key);
        bind_text(s, 2, token_);
        sqlite3_bind_int64(s, 3, now + claim_ttl.count());
        sqlite3_bind_int64(s, 4, now);
        step(claim_, "claim");
        return sqlite3_changes(db_) == 1;
    }

    // One transaction: one WAL commit for the whole batch.
    std::vector<bool> claim_batch(const std::vector<std::string>& keys, std::chrono::seconds claim_ttl) override {
        std::vector<bool> won;
        if (keys.empty()) return won;
        won.reserve(keys.size());
        std::lock_guard<std::mutex> lock(mutex_);
        step(begin_, "claim");
        try {
            auto now = unix_now();
            sqlite3_stmt* s = claim_.get();
            for (const auto& key : keys) {
                bind_text(s, 1, key);
                bind_text(s, 2, token_);
                sqlite3_bind_int64(s, 3, now + claim_ttl.count());
                sqlite3_bind_int64(s, 4, now);
                step(claim_, "claim");
                won.push_back(sqlite3_changes(db_) == 1);
            }
            step(end_, "claim");
        } catch (...) {
            rollback();
            throw;
        }
        return won;
    }

    void commit(const std::vector<std::string>& keys, std::chrono::seconds ttl) override {
        if (keys.empty()) return;
        std::lock_guard<std::mutex> lock(mutex_);
        step(begin_, "commit");
        try {
            sqlite3_stmt* s = commit_.get();
            for (const auto& key : keys) {
                bind_text(s, 1, key);
                if (ttl.count() > 0) sqlite3_bind_int64(s, 2, unix_now() + ttl.count());
                else sqlite3_bind_null(s, 2);
                step(commit_, "commit");
            }
            step(end_, "commit");
        } catch (...) {
            rollback();
            throw;
        }
    }

    void release(const std::string& key) override {
        std::lock_guard<std::mutex> lock(mutex_);
        sqlite3_stmt* s = release_.get();
        bind_text(s, 1, key);
        bind_text(s, 2, token_);
        step(release_, "release");
    }

    const char* kind() const noexcept override { return "sqlite"; }

private:
    void close() {
        for (Statement* s : {&claim_, &commit_, &release_, &begin_, &end_, &rollback_}) {
            sqlite3_finalize(s->ref());
            s->ref() = nullptr;
        }
        if (db_) sqlite3_close(db_);
        db_ = nullptr;
    }

    void rollback() {
        sqlite3_reset(rollback_.get());
        sqlite3_step(rollback_.get());
        sqlite3_reset(rollback_.get());
    }

    [[noreturn]] void fail(const char* what, int rc, const std::string& why = {}) {
        throw Error(ErrorCode::DedupStore,
                    std::string("dedup store ") + json::quote(path_) + ": " + what + " failed: " +
                        (!why.empty() ? why : db_ ? std::string(sqlite3_errmsg(db_)) : std::string(sqlite3_errstr(rc))));
    }

    void exec(const char* sql) {
        char* err = nullptr;
        int rc = sqlite3_exec(db_, sql, nullptr, nullptr, &err);
        if (rc != SQLITE_OK) {
            std::string why = err ? err : sqlite3_errstr(rc);
            sqlite3_free(err);
            throw Error(ErrorCode::DedupStore, "dedup store " + json::quote(path_) + ": " + why);
        }
    }

    void prepare(Statement& s, const char* sql) {
        if (sqlite3_prepare_v2(db_, sql, -1, &s.ref(), nullptr) != SQLITE_OK) fail("prepare", SQLITE_ERROR);
    }

    static void bind_text(sqlite3_stmt* s, int i, const std::string& v) {
        sqlite3_bind_text(s, i, v.data(), static_cast<int>(v.size()), SQLITE_STATIC);
    }

    void step(Statement& s, const char* what) {
        int rc = sqlite3_step(s.get());
        std::string why;
        if (rc != SQLITE_DONE && rc != SQLITE_ROW) why = sqlite3_errmsg(db_);
        sqlite3_reset(s.get());
        sqlite3_clear_bindings(s.get());
        if (!why.empty()) fail(what, rc, why);
    }

    std::string path_;
    std::string token_;
    sqlite3* db_ = nullptr;
    std::mutex mutex_;
    Statement claim_, commit_, release_, begin_, end_, rollback_;
};

}  // namespace

std::unique_ptr<DedupStore> make_sqlite_dedup_store(const SqliteStoreOptions& options) {
    return std::make_unique<SqliteDedupStore>(options);
}

}  // namespace training_output
