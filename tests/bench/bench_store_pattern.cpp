// The dedup store's access pattern, without the rest of the writer: what a
// key costs in SQLite (the store's schema and settings) and in LMDB, into an
// empty store and into one holding PREFILL keys. Per key: a point read (the
// precheck), a claim (insert if absent, with an owner) in a group of GROUP
// keys, then a commit (the owner cleared) in a chunk of the same keys. What
// is counted: keys a second, and what each key made the store write (pages,
// from the process's write_bytes).
//
//   tdo_bench_store_pattern DIR [PREFILL] [KEYS] [GROUP]
//
// This is an evaluation, not the library's store: it shows where the time of
// a key goes as the store grows (docs/benchmarks.md, "A store holding a
// million keys").
#include <lmdb.h>
#include <sqlite3.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace {

using Key = std::array<unsigned char, 32>;

std::vector<Key> keys(std::uint64_t seed, std::size_t n) {
    std::mt19937_64 rng(seed);
    std::vector<Key> out(n);
    for (auto& k : out) {
        for (std::size_t i = 0; i < k.size(); i += 8) {
            const std::uint64_t v = rng();
            std::memcpy(k.data() + i, &v, 8);
        }
    }
    return out;
}

// Bytes this process has had written to storage (or to the page cache, to be).
long long write_bytes() {
    std::ifstream io("/proc/self/io");
    std::string name;
    long long v = 0;
    while (io >> name >> v)
        if (name == "write_bytes:") return v;
    return 0;
}

void die(const char* what, const char* msg) {
    std::fprintf(stderr, "%s: %s\n", what, msg);
    std::exit(1);
}

// --- SQLite: the store's schema and pragmas (lib/dedup/sqlite_store.cpp) ----

struct Sqlite {
    sqlite3* db = nullptr;
    sqlite3_stmt *lookup = nullptr, *claim = nullptr, *commit = nullptr, *begin = nullptr, *end = nullptr;

    void exec(const char* sql) {
        char* err = nullptr;
        if (sqlite3_exec(db, sql, nullptr, nullptr, &err) != SQLITE_OK) die(sql, err ? err : "?");
    }
    sqlite3_stmt* prepare(const char* sql) {
        sqlite3_stmt* s = nullptr;
        if (sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &s, nullptr) != SQLITE_OK)
            die(sql, sqlite3_errmsg(db));
        return s;
    }
    // With `background`: checkpoints on a thread of their own (a connection
    // of its own, PASSIVE), asked for at 1,024 WAL frames; the store's
    // connection copies back what is left at 8,192, so that the WAL starts
    // over (a checkpoint beside a writer that never pauses never catches up
    // alone: the WAL would grow without end).
    std::thread checkpointer;
    std::atomic<bool> stop{false}, poked{false};
    std::string wal;
    const char* wal_path() const { return wal.c_str(); }
    explicit Sqlite(const std::string& path, bool background = false) : wal(path + "-wal") {
        if (sqlite3_open(path.c_str(), &db) != SQLITE_OK) die("open", sqlite3_errmsg(db));
        exec("PRAGMA journal_mode=WAL");
        exec("PRAGMA synchronous=NORMAL");
        exec("PRAGMA cache_size=-16384");
        exec("PRAGMA mmap_size=268435456");
        exec(background ? "PRAGMA wal_autocheckpoint=0" : "PRAGMA wal_autocheckpoint=8192");
        if (background) {
            sqlite3_wal_hook(
                db,
                [](void* self, sqlite3* c, const char*, int frames) {
                    auto* s = static_cast<Sqlite*>(self);
                    if (frames >= 8192) {
                        sqlite3_wal_checkpoint_v2(c, nullptr, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
                    } else if (frames >= 1024) {
                        s->poked = true;
                    }
                    return SQLITE_OK;
                },
                this);
            checkpointer = std::thread([this, path] {
                sqlite3* c = nullptr;
                sqlite3_open(path.c_str(), &c);
                sqlite3_exec(c, "PRAGMA synchronous=NORMAL", nullptr, nullptr, nullptr);
                while (!stop.load()) {
                    if (poked.exchange(false)) {
                        sqlite3_wal_checkpoint_v2(c, nullptr, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
                    }
                    std::this_thread::sleep_for(std::chrono::milliseconds(2));
                }
                sqlite3_close(c);
            });
        }
        exec(
            "CREATE TABLE IF NOT EXISTS claims (ns INTEGER NOT NULL, hash BLOB NOT NULL, owner INTEGER,"
            " expires_at INTEGER, PRIMARY KEY (ns, hash)) WITHOUT ROWID");
        lookup = prepare("SELECT owner FROM claims WHERE ns = 1 AND hash = ?1");
        claim = prepare("INSERT INTO claims(ns, hash, owner) VALUES(1, ?1, 7) ON CONFLICT(ns, hash) DO NOTHING");
        commit = prepare("UPDATE claims SET owner = NULL WHERE ns = 1 AND hash = ?1 AND owner = 7");
        begin = prepare("BEGIN IMMEDIATE");
        end = prepare("COMMIT");
    }
    ~Sqlite() {
        stop = true;
        if (checkpointer.joinable()) checkpointer.join();
        for (auto* s : {lookup, claim, commit, begin, end}) sqlite3_finalize(s);
        sqlite3_close(db);
    }
    void step(sqlite3_stmt* s) {
        const int rc = sqlite3_step(s);
        if (rc != SQLITE_DONE && rc != SQLITE_ROW) die("step", sqlite3_errmsg(db));
        sqlite3_reset(s);
    }
    void each(sqlite3_stmt* s, const Key* k, std::size_t n) {
        step(begin);
        for (std::size_t i = 0; i < n; ++i) {
            sqlite3_bind_blob(s, 1, k[i].data(), 32, SQLITE_STATIC);
            step(s);
        }
        step(end);
    }
    bool look(const Key& k) {
        sqlite3_bind_blob(lookup, 1, k.data(), 32, SQLITE_STATIC);
        const bool found = sqlite3_step(lookup) == SQLITE_ROW;
        sqlite3_reset(lookup);
        return found;
    }
    void claims(const Key* k, std::size_t n) { each(claim, k, n); }
    void commits(const Key* k, std::size_t n) { each(commit, k, n); }
};

// --- SQLite in two levels: claims and recent commits in a small table, --------
// merged into the large one in key order once it holds `merge_at` commits (an
// LSM tree's first level, in SQLite). A claim reads the large table first.

struct SqliteTiered {
    Sqlite s;
    std::size_t merge_at;
    std::size_t recent_commits = 0;
    sqlite3_stmt *look_recent = nullptr, *claim_recent = nullptr, *commit_recent = nullptr;
    sqlite3_stmt *merge_insert = nullptr, *merge_delete = nullptr;
    const char* wal_path() const { return s.wal_path(); }
    SqliteTiered(const std::string& path, std::size_t merge_at_commits) : s(path), merge_at(merge_at_commits) {
        s.exec(
            "CREATE TABLE IF NOT EXISTS recent (ns INTEGER NOT NULL, hash BLOB NOT NULL, owner INTEGER,"
            " expires_at INTEGER, PRIMARY KEY (ns, hash)) WITHOUT ROWID");
        look_recent = s.prepare("SELECT owner FROM recent WHERE ns = 1 AND hash = ?1");
        claim_recent =
            s.prepare("INSERT INTO recent(ns, hash, owner) VALUES(1, ?1, 7) ON CONFLICT(ns, hash) DO NOTHING");
        commit_recent = s.prepare("UPDATE recent SET owner = NULL WHERE ns = 1 AND hash = ?1 AND owner = 7");
        merge_insert = s.prepare(
            "INSERT INTO claims(ns, hash, owner, expires_at) SELECT ns, hash, owner, expires_at FROM recent"
            " WHERE owner IS NULL AND ns = 1 AND hash >= ?1 AND hash < ?2 ORDER BY ns, hash"
            " ON CONFLICT(ns, hash) DO UPDATE SET owner = NULL, expires_at = excluded.expires_at");
        merge_delete = s.prepare("DELETE FROM recent WHERE owner IS NULL AND ns = 1 AND hash >= ?1 AND hash < ?2");
    }
    ~SqliteTiered() {
        for (auto* st : {look_recent, claim_recent, commit_recent, merge_insert, merge_delete}) sqlite3_finalize(st);
    }
    bool look(const Key& k) {
        sqlite3_bind_blob(look_recent, 1, k.data(), 32, SQLITE_STATIC);
        const bool found = sqlite3_step(look_recent) == SQLITE_ROW;
        sqlite3_reset(look_recent);
        return found || s.look(k);
    }
    void claims(const Key* k, std::size_t n) {
        s.step(s.begin);
        for (std::size_t i = 0; i < n; ++i) {
            if (s.look(k[i])) continue;  // committed in the large table
            sqlite3_bind_blob(claim_recent, 1, k[i].data(), 32, SQLITE_STATIC);
            s.step(claim_recent);
        }
        s.step(s.end);
    }
    void commits(const Key* k, std::size_t n) {
        s.each(commit_recent, k, n);
        recent_commits += n;
        if (recent_commits >= merge_at) merge();
    }
    // In 16 transactions by the key's first byte: a claim waits for one at most.
    void merge() {
        for (int part = 0; part < 16; ++part) {
            const unsigned char low[1] = {static_cast<unsigned char>(part * 16)};
            unsigned char high[33];
            std::memset(high, 0xFF, sizeof high);
            high[0] = static_cast<unsigned char>(part * 16 + 15);
            s.step(s.begin);
            for (auto* st : {merge_insert, merge_delete}) {
                sqlite3_bind_blob(st, 1, low, 1, SQLITE_STATIC);
                sqlite3_bind_blob(st, 2, high, 33, SQLITE_STATIC);
                s.step(st);
            }
            s.step(s.end);
        }
        recent_commits = 0;
    }
};

// --- LMDB: key -> owner (8 bytes; 0: committed) ----------------------------

struct Lmdb {
    const char* wal_path() const { return nullptr; }
    MDB_env* env = nullptr;
    MDB_dbi dbi = 0;
    MDB_txn* reader = nullptr;

    static void check(int rc, const char* what) {
        if (rc != MDB_SUCCESS) die(what, mdb_strerror(rc));
    }
    Lmdb(const std::string& dir, unsigned flags) {
        check(mdb_env_create(&env), "env_create");
        check(mdb_env_set_mapsize(env, std::size_t(8) << 30), "mapsize");
        check(mdb_env_open(env, dir.c_str(), flags | MDB_NOSUBDIR, 0644), "env_open");
        MDB_txn* t = nullptr;
        check(mdb_txn_begin(env, nullptr, 0, &t), "begin");
        check(mdb_dbi_open(t, nullptr, 0, &dbi), "dbi_open");
        check(mdb_txn_commit(t), "commit");
        check(mdb_txn_begin(env, nullptr, MDB_RDONLY, &reader), "reader");
    }
    ~Lmdb() {
        mdb_txn_abort(reader);
        mdb_env_close(env);
    }
    bool look(const Key& k) {
        MDB_val key{32, const_cast<unsigned char*>(k.data())}, v;
        return mdb_get(reader, dbi, &key, &v) == MDB_SUCCESS;
    }
    void fresh_reader() {  // a snapshot at most a group old, as the store's
        mdb_txn_reset(reader);
        check(mdb_txn_renew(reader), "renew");
    }
    // One transaction: every key of `k` put with `value` (claims: only where
    // it is missing), then the reader moved on to it.
    void put_all(const Key* k, std::size_t n, std::uint64_t value, unsigned flags) {
        MDB_txn* t = nullptr;
        check(mdb_txn_begin(env, nullptr, 0, &t), "begin");
        for (std::size_t i = 0; i < n; ++i) {
            MDB_val key{32, const_cast<unsigned char*>(k[i].data())}, v{8, &value};
            const int rc = mdb_put(t, dbi, &key, &v, flags);
            if (rc != MDB_SUCCESS && rc != MDB_KEYEXIST) check(rc, "put");
        }
        check(mdb_txn_commit(t), "commit");
        fresh_reader();
    }
    void claims(const Key* k, std::size_t n) { put_all(k, n, 7, MDB_NOOVERWRITE); }
    void commits(const Key* k, std::size_t n) { put_all(k, n, 0, 0); }
};

template <class Store>
void fill(Store& s, std::size_t n) {
    const auto k = keys(1, n);
    for (std::size_t at = 0; at < n; at += 50000) {
        const std::size_t m = std::min<std::size_t>(50000, n - at);
        s.claims(&k[at], m);
        s.commits(&k[at], m);
    }
}

template <class Store>
void measure(const char* name, Store& s, std::size_t n, std::size_t group, std::size_t prefill) {
    const auto k = keys(2 + prefill, n);
    const long long w0 = write_bytes();
    const auto t0 = std::chrono::steady_clock::now();
    std::size_t found = 0;
    for (std::size_t at = 0; at < n; at += group) {
        const std::size_t m = std::min(group, n - at);
        for (std::size_t i = 0; i < m; ++i) found += s.look(k[at + i]);
        s.claims(&k[at], m);
        s.commits(&k[at], m);
    }
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const long long w = write_bytes() - w0;
    std::printf("%-34s holding %8zu: %8.0f keys/s, %6.1f KiB written a key%s\n", name, prefill, n / secs,
                w / 1024.0 / double(n), found ? " (some found!)" : "");
    if (s.wal_path()) {  // its size before the store closes (and deletes it)
        std::ifstream f(s.wal_path(), std::ios::ate | std::ios::binary);
        std::printf("%-34s the WAL at the end: %.1f MiB\n", "", static_cast<double>(f.tellg()) / (1 << 20));
    }
}

template <class Open>
void run(const char* name, const std::string& path, std::size_t prefill, std::size_t n, std::size_t group, Open open) {
    std::remove(path.c_str());
    std::remove((path + "-wal").c_str());
    std::remove((path + "-shm").c_str());
    std::remove((path + "-lock").c_str());
    {
        auto s = open(path);
        if (prefill) fill(*s, prefill);
    }
    std::system("sync");
    auto s = open(path);
    measure(name, *s, n, group, prefill);
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: %s DIR [PREFILL] [KEYS] [GROUP]\n", argv[0]);
        return 2;
    }
    const std::string dir = argv[1];
    const std::size_t prefill = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 1000000;
    const std::size_t n = argc > 3 ? std::strtoull(argv[3], nullptr, 10) : 50000;
    const std::size_t group = argc > 4 ? std::strtoull(argv[4], nullptr, 10) : 256;
    std::printf("%zu keys, a lookup each, claimed and committed in groups of %zu\n", n, group);
    for (std::size_t p : {std::size_t(0), prefill}) {
        run("SQLite (the store's settings)", dir + "/pattern.sqlite3", p, n, group,
            [](const std::string& path) { return std::make_unique<Sqlite>(path); });
        run("SQLite, checkpoints on a thread", dir + "/pattern.sqlite3", p, n, group,
            [](const std::string& path) { return std::make_unique<Sqlite>(path, true); });
        run("SQLite, two levels (merge at 65,536)", dir + "/pattern.sqlite3", p, n, group,
            [](const std::string& path) { return std::make_unique<SqliteTiered>(path, 65536); });
        run("SQLite, two levels (merge at 262,144)", dir + "/pattern.sqlite3", p, n, group,
            [](const std::string& path) { return std::make_unique<SqliteTiered>(path, 262144); });
        if (std::getenv("TDO_BENCH_SQLITE_ONLY")) continue;
        run("LMDB, synced each transaction", dir + "/pattern.lmdb", p, n, group,
            [](const std::string& path) { return std::make_unique<Lmdb>(path, 0u); });
        run("LMDB, MDB_NOMETASYNC", dir + "/pattern.lmdb", p, n, group,
            [](const std::string& path) { return std::make_unique<Lmdb>(path, unsigned(MDB_NOMETASYNC)); });
        run("LMDB, MDB_NOSYNC (not crash-safe)", dir + "/pattern.lmdb", p, n, group,
            [](const std::string& path) { return std::make_unique<Lmdb>(path, unsigned(MDB_NOSYNC)); });
    }
}
