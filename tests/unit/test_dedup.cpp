#include <sqlite3.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <filesystem>
#include <thread>

#include "common/sha256.hpp"
#include "config/redis_url.hpp"
#include "dedup/deduplicator.hpp"
#include "dedup/key_memory.hpp"
#include "dedup_conformance.hpp"
#include "test_util.hpp"
#include "training_output/error.hpp"

using namespace training_output;
using namespace std::chrono_literals;

namespace {

std::unique_ptr<DedupStore> make_store(const std::string& kind, const tdo_test::TempDir& dir) {
    if (kind == "memory") return make_memory_dedup_store();
    return make_sqlite_dedup_store(SqliteStoreOptions{dir / "dedup.sqlite3", 5000ms, {}, false});
}

}  // namespace

TEST_CASE("dedup stores: claims owned by spools, commits, expiry, batches", "[unit][dedup][slow]") {
    auto kind = GENERATE(std::string("memory"), std::string("sqlite"));
    tdo_test::TempDir dir;
    auto store = make_store(kind, dir);
    INFO(kind);
    CHECK(store->kind() == kind);
    tdo_test::check_dedup_conformance(*store, "training", dir.path());
}

TEST_CASE("sqlite dedup: an owner is alive while its spool directory exists", "[unit][dedup]") {
    tdo_test::TempDir dir;
    auto store = make_store("sqlite", dir);
    const auto a = tdo_test::registered_owner(*store, dir.path(), "a"),
               b = tdo_test::registered_owner(*store, dir.path(), "b");
    CHECK(store->claim("training:x", a.id, 1s) == ClaimState::Claimed);
    CHECK(store->claim("training:y", a.id, 1s) == ClaimState::Claimed);
    // Its claim TTL ran out, but its spool is still there (an orphan on this
    // machine is always delivered): held.
    std::this_thread::sleep_for(2100ms);
    CHECK(store->claim("training:x", b.id, 60s) == ClaimState::Held);
    // Its spool is gone: taken over.
    std::filesystem::remove_all(a.spool_path);
    CHECK(store->claim("training:x", b.id, 60s) == ClaimState::Claimed);
    // Housekeeping drops owners whose spool is gone, and their expired claims.
    store->maintain();
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open((dir / "dedup.sqlite3").c_str(), &db) == SQLITE_OK);
    auto count = [&](const char* sql) {
        sqlite3_stmt* s = nullptr;
        REQUIRE(sqlite3_prepare_v2(db, sql, -1, &s, nullptr) == SQLITE_OK);
        REQUIRE(sqlite3_step(s) == SQLITE_ROW);
        const int n = sqlite3_column_int(s, 0);
        sqlite3_finalize(s);
        return n;
    };
    // Keys that are not a 64-digit hash are kept as their text after the
    // last ':' (the writer's keys are kept as the hash's 32 bytes).
    CHECK(count("SELECT count(*) FROM spools") == 1);
    CHECK(count("SELECT count(*) FROM claims WHERE hash = CAST('y' AS BLOB)") == 0);
    CHECK(count("SELECT count(*) FROM claims WHERE hash = CAST('x' AS BLOB)") == 1);
    sqlite3_close(db);
}

namespace {

std::string hex_hash(const std::string& text) {
    const crypto::Digest d = crypto::sha256(text);
    return crypto::hex(d.data(), d.size());
}

// Runs a statement on a file of its own connection; the first column of its first row, or -1.
std::int64_t sql_value(const std::string& path, const char* sql) {
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
    sqlite3_stmt* s = nullptr;
    REQUIRE(sqlite3_prepare_v2(db, sql, -1, &s, nullptr) == SQLITE_OK);
    const std::int64_t v = sqlite3_step(s) == SQLITE_ROW ? sqlite3_column_int64(s, 0) : -1;
    sqlite3_finalize(s);
    sqlite3_close(db);
    return v;
}

void sql_exec(const std::string& path, const std::string& sql) {
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
    char* err = nullptr;
    const int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err);
    INFO((err ? err : ""));
    sqlite3_free(err);
    sqlite3_close(db);
    REQUIRE(rc == SQLITE_OK);
}

}  // namespace

TEST_CASE("sqlite dedup: a writer's key is 32 bytes; lookups answer without writing", "[unit][dedup]") {
    tdo_test::TempDir dir;
    auto store = make_store("sqlite", dir);
    const auto me = tdo_test::registered_owner(*store, dir.path(), "me"),
               other = tdo_test::registered_owner(*store, dir.path(), "other");
    const std::string k1 = "training:" + std::string(64, 'a'), k2 = "training:" + std::string(63, 'b') + "c";
    CHECK(store->lookup(k1, me.id) == KeyState::Absent);
    CHECK(store->claim(k1, me.id, 60s) == ClaimState::Claimed);
    CHECK(store->lookup(k1, me.id) == KeyState::Own);
    CHECK(store->lookup(k1, other.id) == KeyState::Other);
    store->commit({k1}, 0s);
    CHECK(store->lookup(k1, other.id) == KeyState::Committed);
    store->commit({k2}, 1s);
    CHECK(store->lookup(k2, me.id) == KeyState::Committed);
    CHECK(tdo_test::eventually([&] { return *store->lookup(k2, me.id); }, KeyState::Absent));
    const std::string path = dir / "dedup.sqlite3";
    CHECK(sql_value(path, "SELECT count(*) FROM claims WHERE length(hash) = 32") == 2);
    CHECK(sql_value(path, ("SELECT count(*) FROM claims WHERE hash = x'" + std::string(64, 'a') + "'").c_str()) == 1);
    // A claim is not in the expiry index: claims carry no expiry.
    CHECK(sql_value(path, "SELECT count(*) FROM claims WHERE expires_at IS NOT NULL") == 1);  // k2's commit
    CHECK(store->identity().rfind("sqlite:/", 0) == 0);
    CHECK_FALSE(store->cheap_claims());
}

TEST_CASE("sqlite dedup: a file of the first version is converted at open", "[unit][dedup][slow]") {
    tdo_test::TempDir dir;
    const std::string path = dir / "dedup.sqlite3";
    const auto live = tdo_test::make_owner(dir.path(), "live");
    const std::string committed = "training:" + std::string(64, '1'), held = "training:" + std::string(64, '2'),
                      orphan = "training:" + std::string(64, '3'), expired = "training:" + std::string(64, '4');
    // The first version's schema and rows, as it wrote them.
    sql_exec(path,
             "PRAGMA journal_mode=WAL;"
             "CREATE TABLE dedup (key TEXT PRIMARY KEY, state INTEGER NOT NULL, owner TEXT, expires_at INTEGER) "
             "WITHOUT ROWID;"
             "CREATE INDEX dedup_expires ON dedup(expires_at) WHERE expires_at IS NOT NULL;"
             "CREATE TABLE owners (id TEXT PRIMARY KEY, path TEXT NOT NULL) WITHOUT ROWID;"
             "CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;"
             "INSERT INTO owners VALUES('" +
                 live.id + "', '" + live.spool_path +
                 "');"
                 "INSERT INTO dedup VALUES('" +
                 committed +
                 "', 1, NULL, NULL);"
                 "INSERT INTO dedup VALUES('" +
                 expired +
                 "', 1, NULL, 1);"
                 "INSERT INTO dedup VALUES('" +
                 held + "', 0, '" + live.id +
                 "', 4102444800);"
                 "INSERT INTO dedup VALUES('" +
                 orphan + "', 0, 'never-registered', 4102444800);");
    auto store = make_store("sqlite", dir);
    const auto me = tdo_test::registered_owner(*store, dir.path(), "me");
    CHECK(store->claim(committed, me.id, 60s) == ClaimState::Committed);
    CHECK(store->claim(held, me.id, 60s) == ClaimState::Held);  // its owner's spool is still there
    CHECK(store->claim(orphan, me.id, 60s) == ClaimState::Claimed);
    CHECK(store->claim(expired, me.id, 60s) == ClaimState::Claimed);
    CHECK(sql_value(path, "SELECT count(*) FROM sqlite_master WHERE name IN ('dedup', 'owners')") == 0);
    CHECK(sql_value(path, "PRAGMA auto_vacuum") == 2);  // incremental
    // Opening it again finds nothing to convert.
    auto again = make_store("sqlite", dir);
    CHECK(again->claim(committed, me.id, 60s) == ClaimState::Committed);
}

TEST_CASE("sqlite dedup: with a TTL, expired commits are purged and their pages given back", "[unit][dedup][slow]") {
    tdo_test::TempDir dir;
    auto store = make_store("sqlite", dir);
    const std::string path = dir / "dedup.sqlite3";
    std::vector<std::string> keys;
    for (int i = 0; i < 20000; ++i) {
        keys.push_back("training:" + hex_hash("expiring " + std::to_string(i)));
    }
    store->commit(keys, 1s);
    const std::int64_t pages_full = sql_value(path, "PRAGMA page_count");
    std::this_thread::sleep_for(2100ms);
    // A round deletes at least what was committed since the last one, unless
    // it runs out of its time (a slow machine, a sanitizer): then the next one goes on.
    for (int round = 0; round < 50 && sql_value(path, "SELECT count(*) FROM claims") > 0; ++round) store->maintain();
    CHECK(sql_value(path, "SELECT count(*) FROM claims") == 0);
    CHECK(sql_value(path, "PRAGMA freelist_count") == 0);  // given back (auto_vacuum=incremental)
    CHECK(sql_value(path, "PRAGMA page_count") < pages_full / 4);
}

TEST_CASE("sqlite dedup: the claims of owners that are gone are swept, a slice a round, nothing else",
          "[unit][dedup]") {
    tdo_test::TempDir dir;
    auto store = make_store("sqlite", dir);
    const std::string path = dir / "dedup.sqlite3";
    const auto gone = tdo_test::registered_owner(*store, dir.path(), "gone"),
               live = tdo_test::registered_owner(*store, dir.path(), "live");
    std::vector<std::string> orphans, held, committed;
    for (int i = 0; i < 5000; ++i) orphans.push_back("training:" + hex_hash("orphan " + std::to_string(i)));
    for (int i = 0; i < 100; ++i) held.push_back("training:" + hex_hash("held " + std::to_string(i)));
    for (int i = 0; i < 100; ++i) committed.push_back("training:" + hex_hash("committed " + std::to_string(i)));
    store->claim_batch(orphans, gone.id, 60s);
    store->claim_batch(held, live.id, 60s);
    store->commit(committed, 0s);
    std::filesystem::remove_all(gone.spool_path);  // its spool is gone, unsettled
    // More rows than one round looks at: the rounds go on from where the last one stopped.
    for (int round = 0; round < 4; ++round) store->maintain();
    CHECK(sql_value(path, "SELECT count(*) FROM claims") == 200);
    CHECK(sql_value(path, "SELECT count(*) FROM claims WHERE owner IS NULL") == 100);
    CHECK(store->claim(held[7], gone.id, 60s) == ClaimState::Held);
    CHECK(store->claim(committed[7], live.id, 60s) == ClaimState::Committed);
    CHECK(store->claim(orphans[7], live.id, 60s) == ClaimState::Claimed);
}

TEST_CASE("memory dedup: many keys, long keys and keys that differ late", "[unit][dedup]") {
    auto store = make_memory_dedup_store();
    store->register_owner(OwnerRecord{"a", "/nonexistent/a"});
    store->register_owner(OwnerRecord{"b", "/nonexistent/b"});
    // Enough keys for the tables to grow several times and the key storage
    // to take many chunks; some keys far larger than a chunk.
    const std::string common(60, 'k');
    auto key = [&](int i) {
        if (i % 5000 == 7) return std::string(100000 + i, 'x') + std::to_string(i);
        return common + std::to_string(i);
    };
    const int n = 60000;
    for (int i = 0; i < n; ++i) REQUIRE(store->claim(key(i), "a", 1h) == ClaimState::Claimed);
    for (int i = 0; i < n; ++i) REQUIRE(store->claim(key(i), "b", 1h) == ClaimState::Held);
    for (int i = 0; i < n; i += 97) REQUIRE(store->claim(key(i), "a", 1h) == ClaimState::Own);
    store->commit({key(1), key(7)}, 0s);
    CHECK(store->claim(key(1), "b", 1h) == ClaimState::Committed);
    CHECK(store->claim(key(7), "a", 1h) == ClaimState::Committed);
    store->retire_owner("a");
    CHECK(store->claim(key(2), "b", 1h) == ClaimState::Claimed);
    CHECK(store->claim(common, "b", 1h) == ClaimState::Claimed);  // a prefix of every key is a key of its own
    CHECK(store->claim(common, "a", 1h) == ClaimState::Held);     // b's now
}

TEST_CASE("sqlite dedup: two writers on one file, and a reopen", "[unit][dedup]") {
    tdo_test::TempDir dir;
    {
        auto a = make_store("sqlite", dir);
        auto b = make_store("sqlite", dir);
        tdo_test::check_dedup_two_writers(*a, *b, "training", dir.path());
    }
    auto store = make_store("sqlite", dir);
    const auto c = tdo_test::registered_owner(*store, dir.path(), "c");
    CHECK(store->claim("training:x", c.id, 60s) == ClaimState::Committed);   // committed before the reopen
    CHECK(store->claim("training:pending", c.id, 60s) == ClaimState::Held);  // a live owner's, from before
    CHECK(store->claim("training:z", c.id, 60s) == ClaimState::Claimed);
}

TEST_CASE("sqlite dedup: claims go on while a large commit is written", "[unit][dedup][concurrency]") {
    tdo_test::TempDir dir;
    auto store = make_store("sqlite", dir);
    const auto me = tdo_test::registered_owner(*store, dir.path(), "me");
    std::vector<std::string> keys;
    for (int i = 0; i < 30000; ++i) keys.push_back("training:committed-" + std::to_string(i));
    std::atomic<bool> committing{false}, committed{false};
    std::atomic<int> claims_during{0};
    std::thread claimer([&] {
        while (!committing) std::this_thread::yield();
        for (int i = 0; !committed; ++i) {
            REQUIRE(store->claim("training:new-" + std::to_string(i), me.id, 60s) == ClaimState::Claimed);
            if (!committed) ++claims_during;
        }
    });
    committing = true;
    store->commit(keys, 0s);
    committed = true;
    claimer.join();
    // Claims were answered between the commit's transactions, not after all of them.
    CHECK(claims_during > 10);
    CHECK(store->claim(keys.back(), me.id, 60s) == ClaimState::Committed);
}

TEST_CASE("sqlite dedup store reports what it cannot open", "[unit][dedup]") {
    tdo_test::TempDir dir;
    tdo_test::write_file(dir / "file", "x");
    try {
        make_sqlite_dedup_store(SqliteStoreOptions{dir / "file/sub/dedup.sqlite3", 100ms, {}, false});
        FAIL("expected an error");
    } catch (const Error& e) {
        CHECK(e.code() == ErrorCode::DedupStore);
        CHECK_THAT(e.what(), Catch::Contains("cannot be opened"));
    }
    tdo_test::write_file(dir / "garbage.sqlite3", std::string(4096, 'g'));
    CHECK_THROWS_AS(make_sqlite_dedup_store(SqliteStoreOptions{dir / "garbage.sqlite3", 100ms, {}, false}), Error);
}

TEST_CASE("8 threads claiming the same keys: exactly one wins each", "[unit][dedup][concurrency]") {
    auto kind = GENERATE(std::string("memory"), std::string("sqlite"));
    tdo_test::TempDir dir;
    auto store = make_store(kind, dir);
    INFO(kind);
    tdo_test::check_dedup_threads(*store, "training", dir.path());
}

TEST_CASE("several processes claiming through one sqlite file: exactly one wins each", "[unit][dedup][concurrency]") {
    tdo_test::TempDir dir;
    const std::string path = dir / "dedup.sqlite3";
    { make_sqlite_dedup_store(SqliteStoreOptions{path, 5000ms, {}, false}); }  // create the schema once
    tdo_test::check_dedup_processes(
        dir.path(),
        [&] {
            return make_sqlite_dedup_store(SqliteStoreOptions{path, 10000ms, {}, false});
        },
        [](DedupStore&, const std::string&, int, ClaimState) {});
}

TEST_CASE("the deduplicator fails open when its store breaks", "[unit][dedup]") {
    tdo_test::TempDir dir;
    const std::string path = dir / "dedup.sqlite3";
    Logger logger(LogLevel::Off);
    TrainingDeduplicator dedup(make_sqlite_dedup_store(SqliteStoreOptions{path, 100ms, {}, false}),
                               DeduplicatorOptions{}, &logger);
    const auto me = tdo_test::make_owner(dir.path(), "me");
    dedup.hold_owner(me.id, me.spool_path);
    CHECK(dedup.owners_fresh());
    Sha256 h{};
    h[0] = 0xAB;
    CHECK(dedup.key_for(h) == "training:ab" + std::string(62, '0'));
    CHECK(dedup.claim(dedup.key_for(h), me.id) == ClaimOutcome::Claimed);

    // Another connection drops the table: every later statement fails.
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
    REQUIRE(sqlite3_exec(db, "DROP TABLE claims", nullptr, nullptr, nullptr) == SQLITE_OK);
    sqlite3_close(db);

    h[0] = 0xCD;
    CHECK(dedup.claim(dedup.key_for(h), me.id) == ClaimOutcome::FailedOpen);
    CHECK(dedup.claim(dedup.key_for(h), me.id) == ClaimOutcome::FailedOpen);
    CHECK_FALSE(dedup.commit({dedup.key_for(h)}));  // counted, not thrown: the caller retries
    CHECK(dedup.store_errors() == 3);
}

TEST_CASE("the deduplicator claims batches and fails open for all of a batch", "[unit][dedup]") {
    tdo_test::TempDir dir;
    const std::string path = dir / "dedup.sqlite3";
    Logger logger(LogLevel::Off);
    TrainingDeduplicator dedup(make_sqlite_dedup_store(SqliteStoreOptions{path, 100ms, {}, false}),
                               DeduplicatorOptions{}, &logger);
    const auto me = tdo_test::make_owner(dir.path(), "me"), other = tdo_test::make_owner(dir.path(), "other");
    dedup.hold_owner(me.id, me.spool_path);
    dedup.hold_owner(other.id, other.spool_path);
    CHECK(dedup.confirm_batch({}, me.id).empty());
    CHECK(dedup.claim("training:a", other.id) == ClaimOutcome::Claimed);
    CHECK(dedup.claim("training:a", other.id) == ClaimOutcome::Pending);  // its own line holds it
    CHECK(dedup.commit({"training:c"}));
    // Confirming: another live writer's (void), free (deliver), its own (deliver), written (void).
    CHECK(dedup.confirm_batch({"training:a", "training:b", "training:b", "training:c"}, me.id) ==
          std::vector<ClaimOutcome>{ClaimOutcome::Pending, ClaimOutcome::Claimed, ClaimOutcome::Claimed,
                                    ClaimOutcome::Duplicate});
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
    REQUIRE(sqlite3_exec(db, "DROP TABLE claims", nullptr, nullptr, nullptr) == SQLITE_OK);
    sqlite3_close(db);
    CHECK(dedup.confirm_batch({"training:c", "training:d"}, me.id) ==
          std::vector<ClaimOutcome>{ClaimOutcome::FailedOpen, ClaimOutcome::FailedOpen});
    CHECK(dedup.store_errors() == 1);
}

TEST_CASE("redis_url: the forms it accepts", "[unit][dedup][redis]") {
    RedisUrl u = parse_redis_url("redis://localhost");
    CHECK_FALSE(u.unix_socket);
    CHECK(u.host == "localhost");
    CHECK(u.port == 6379);
    CHECK(u.db == 0);
    CHECK(u.user.empty());
    CHECK(u.password.empty());
    CHECK(u.redacted() == "redis://localhost:6379/0");

    u = parse_redis_url("redis://:s3cret@10.0.0.5:6380/2");
    CHECK(u.host == "10.0.0.5");
    CHECK(u.port == 6380);
    CHECK(u.db == 2);
    CHECK(u.user.empty());
    CHECK(u.password == "s3cret");
    CHECK(u.redacted() == "redis://:***@10.0.0.5:6380/2");

    // An ACL user; a password with '@', '/', ':' and '?', raw or percent-encoded.
    u = parse_redis_url("redis://writer:p@ss/w:rd?x@redis.internal:7000/");
    CHECK(u.user == "writer");
    CHECK(u.password == "p@ss/w:rd?x");
    CHECK(u.host == "redis.internal");
    CHECK(u.port == 7000);
    CHECK(u.db == 0);
    CHECK(u.redacted() == "redis://writer:***@redis.internal:7000/0");
    CHECK(parse_redis_url("redis://wri%74er:a%40b%25@h").password == "a@b%");
    CHECK(parse_redis_url("redis://wri%74er:a%40b%25@h").user == "writer");

    u = parse_redis_url("REDIS://[::1]:6390?db=4");
    CHECK(u.host == "::1");
    CHECK(u.port == 6390);
    CHECK(u.db == 4);
    CHECK(u.redacted() == "redis://[::1]:6390/4");

    // TLS: the same forms, the same default port.
    u = parse_redis_url("rediss://writer:s3cret@redis.internal/1");
    CHECK(u.tls);
    CHECK(u.host == "redis.internal");
    CHECK(u.port == 6379);
    CHECK(u.db == 1);
    CHECK(u.redacted() == "rediss://writer:***@redis.internal:6379/1");
    CHECK(parse_redis_url("REDISS://[::1]:6390").tls);
    CHECK_FALSE(parse_redis_url("redis://localhost").tls);

    u = parse_redis_url("unix:///run/redis/redis.sock?db=3");
    CHECK(u.unix_socket);
    CHECK(u.path == "/run/redis/redis.sock");
    CHECK(u.db == 3);
    CHECK(u.redacted() == "unix:///run/redis/redis.sock?db=3");
    u = parse_redis_url("unix://app:pw@/tmp/r.sock");
    CHECK(u.user == "app");
    CHECK(u.password == "pw");
    CHECK(u.path == "/tmp/r.sock");
    CHECK(u.redacted() == "unix://app:***@/tmp/r.sock?db=0");
}

TEST_CASE("redis_url: errors name the key and never show the password", "[unit][dedup][redis]") {
    const char* bad[] = {
        "localhost:6379",                 // no scheme
        "http://hunter2x@localhost",      // wrong scheme
        "rediss://:hunter2x@",            // TLS, no host
        "redis://hunter2x@localhost",     // userinfo without ':'
        "redis://user:@localhost",        // empty password
        "redis://:hunter2x@",             // no host
        "redis://:hunter2x@localhost:",   // empty port
        "redis://:hunter2x@localhost:0",  // port out of range
        "redis://:hunter2x@localhost:65536",
        "redis://:hunter2x@localhost:6379/x",      // db not a number
        "redis://:hunter2x@localhost/1?db=2",      // db twice
        "redis://:hunter2x@localhost?password=y",  // unknown parameter
        "redis://:hunter2x@localhost/0#frag",
        "redis://:hunter2x@[::1",
        "redis://:hunter2x%zz@localhost",  // bad percent-encoding
        "redis://:hunter 2x@localhost",    // space
        "unix://:hunter2x@relative.sock",
    };
    for (const char* url : bad) {
        INFO(url);
        try {
            parse_redis_url(url);
            FAIL("expected an error");
        } catch (const Error& e) {
            CHECK(e.code() == ErrorCode::Config);
            CHECK_THAT(e.what(), Catch::Contains("\"redis_url\""));
            CHECK_THAT(e.what(), !Catch::Contains("hunter"));
        }
    }
}

TEST_CASE("redis store: a server that cannot be reached at open is not an error", "[unit][dedup][redis][slow]") {
    // A port nobody listens on: bind one, then close it.
    const std::string url = "redis://:hunter2x@127.0.0.1:" + std::to_string(tdo_test::free_port()) + "/0";

    std::vector<std::string> events;
    std::mutex m;
    set_log_callback(
        [&](LogLevel, std::string_view event, std::string_view json) {
            std::lock_guard<std::mutex> lock(m);
            events.push_back(std::string(event) + " " + std::string(json));
        },
        LogLevel::Debug);
    Logger logger(LogLevel::Off);
    RedisStoreOptions o;
    o.url = url;
    o.timeout = 200ms;
    o.reconnect_base = 20ms;
    o.logger = &logger;
    auto store = make_redis_dedup_store(o);
    CHECK(std::string(store->kind()) == "redis");
    auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < 50; ++i) {
        try {
            store->claim("training:x", "owner", 60s);
            FAIL("expected an error");
        } catch (const Error& e) {
            CHECK(e.code() == ErrorCode::DedupStore);
            CHECK_THAT(e.what(), Catch::Contains("redis://:***@127.0.0.1"));
            CHECK_THAT(e.what(), !Catch::Contains("hunter"));
        }
    }
    CHECK(std::chrono::steady_clock::now() - start < 2s);
    set_log_callback({}, LogLevel::Off);
    int unavailable = 0;
    for (const auto& e : events) {
        INFO(e);
        CHECK_THAT(e, !Catch::Contains("hunter"));
        unavailable += e.rfind("training_output_dedup_store_unavailable ", 0) == 0;
    }
    CHECK(unavailable == 1);  // once per outage, not per call
}

TEST_CASE("SQLite store: processes opening a new database at the same moment all get in",
          "[unit][dedup][concurrency][slow]") {
    for (int round = 0; round < 10; ++round) {
        tdo_test::TempDir dir;
        const std::string config = "{\"output_dir\":\"" + dir.path() + "\",\"log_level\":\"off\"}";
        std::vector<pid_t> pids;
        for (int p = 0; p < 8; ++p) {
            pids.push_back(tdo_test::spawn({TDO_TEST_CRASH_WRITER, config, std::to_string(p), "0", "3", "0"}));
            REQUIRE(pids.back() > 0);
        }
        for (pid_t pid : pids) CHECK(tdo_test::wait_for(pid) == 0);
    }
}

TEST_CASE("the process's memory of keys: a line voided as held elsewhere never lets another call in meanwhile",
          "[unit][dedup][concurrency]") {
    // A line of owner 1 is voided because another process holds its content
    // (settled elsewhere, Pending): from its reservation on, a racing call of
    // owner 2 must see the key in flight, never free. The memory must not
    // forget the reservation before it remembers the key as held.
    const std::uint32_t me = 1, other = 2;
    std::atomic<int> let_in{0};
    for (int round = 0; round < 2000; ++round) {
        auto memory = std::make_shared<KeyMemory>(1024);
        KeyMemory::Hash h{};
        h[0] = static_cast<std::uint8_t>(round);
        h[1] = static_cast<std::uint8_t>(round >> 8);
        REQUIRE(memory->check_and_reserve(h, me) == KeyMemory::Seen::None);
        std::atomic<bool> stop{false};
        std::thread racer([&] {
            while (!stop.load(std::memory_order_relaxed)) {
                if (memory->check_and_reserve(h, other) == KeyMemory::Seen::None) {
                    ++let_in;
                    memory->forget(h, other);
                }
            }
        });
        memory->settle_elsewhere(h, me, KeyMemory::Settled::Held, 5);
        stop = true;
        racer.join();
        CHECK(memory->check_and_reserve(h, other) == KeyMemory::Seen::InFlight);
    }
    CHECK(let_in.load() == 0);
}
