#include <sqlite3.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <thread>

#include "dedup_conformance.hpp"
#include "test_util.hpp"
#include "training_output/deduplicator.hpp"
#include "training_output/error.hpp"

using namespace training_output;
using namespace std::chrono_literals;

namespace {

std::unique_ptr<DedupStore> make_store(const std::string& kind, const tdo_test::TempDir& dir) {
    if (kind == "memory") return make_memory_dedup_store();
    return make_sqlite_dedup_store(SqliteStoreOptions{dir / "dedup.sqlite3", 5000ms});
}

}  // namespace

TEST_CASE("dedup stores: claim, commit, release, expiry, batches", "[unit][dedup]") {
    auto kind = GENERATE(std::string("memory"), std::string("sqlite"));
    tdo_test::TempDir dir;
    auto store = make_store(kind, dir);
    INFO(kind);
    CHECK(store->kind() == kind);
    tdo_test::check_dedup_conformance(*store, "training");
}

TEST_CASE("sqlite dedup: two writers on one file, and a reopen", "[unit][dedup]") {
    tdo_test::TempDir dir;
    {
        auto a = make_store("sqlite", dir);
        auto b = make_store("sqlite", dir);
        tdo_test::check_dedup_two_writers(*a, *b, "training");
    }
    auto store = make_store("sqlite", dir);
    CHECK_FALSE(store->claim("training:x", 60s));        // committed before the reopen
    CHECK_FALSE(store->claim("training:pending", 60s));  // a live claim of an earlier writer
    CHECK(store->claim("training:z", 60s));
}

TEST_CASE("sqlite dedup store reports what it cannot open", "[unit][dedup]") {
    tdo_test::TempDir dir;
    tdo_test::write_file(dir / "file", "x");
    try {
        make_sqlite_dedup_store(SqliteStoreOptions{dir / "file/sub/dedup.sqlite3", 100ms});
        FAIL("expected an error");
    } catch (const Error& e) {
        CHECK(e.code() == ErrorCode::DedupStore);
        CHECK_THAT(e.what(), Catch::Contains("cannot be opened"));
    }
    tdo_test::write_file(dir / "garbage.sqlite3", std::string(4096, 'g'));
    CHECK_THROWS_AS(make_sqlite_dedup_store(SqliteStoreOptions{dir / "garbage.sqlite3", 100ms}), Error);
}

TEST_CASE("8 threads claiming the same keys: exactly one wins each", "[unit][dedup][concurrency]") {
    auto kind = GENERATE(std::string("memory"), std::string("sqlite"));
    tdo_test::TempDir dir;
    auto store = make_store(kind, dir);
    INFO(kind);
    tdo_test::check_dedup_threads(*store, "training");
}

TEST_CASE("several processes claiming through one sqlite file: exactly one wins each", "[unit][dedup][concurrency]") {
    tdo_test::TempDir dir;
    const std::string path = dir / "dedup.sqlite3";
    { make_sqlite_dedup_store(SqliteStoreOptions{path, 5000ms}); }  // create the schema once
    constexpr int kProcs = 4, kKeys = 300;
    std::vector<pid_t> pids;
    for (int p = 0; p < kProcs; ++p) {
        pid_t pid = fork();
        REQUIRE(pid >= 0);
        if (pid == 0) {
            int code = 0;
            try {
                auto store = make_sqlite_dedup_store(SqliteStoreOptions{path, 10000ms});
                for (int k = 0; k < kKeys; ++k) {
                    if (store->claim("training:k" + std::to_string(k), 600s)) {
                        store->commit({"training:k" + std::to_string(k)}, 0s);
                        // Record the win in a file per process.
                        std::ofstream(dir / ("wins-" + std::to_string(getpid())), std::ios::app) << k << "\n";
                    }
                }
            } catch (...) {
                code = 3;
            }
            std::_Exit(code);
        }
        pids.push_back(pid);
    }
    for (pid_t pid : pids) CHECK(tdo_test::wait_for(pid) == 0);
    std::map<int, int> wins;
    for (pid_t pid : pids) {
        for (const auto& line : tdo_test::lines_of(tdo_test::read_file(dir / ("wins-" + std::to_string(pid))))) {
            wins[std::stoi(line)]++;
        }
    }
    CHECK(wins.size() == kKeys);
    for (const auto& [k, n] : wins) {
        INFO(k);
        CHECK(n == 1);
    }
}

TEST_CASE("the deduplicator fails open when its store breaks", "[unit][dedup]") {
    tdo_test::TempDir dir;
    const std::string path = dir / "dedup.sqlite3";
    Logger logger(LogLevel::Off);
    TrainingDeduplicator dedup(make_sqlite_dedup_store(SqliteStoreOptions{path, 100ms}), DeduplicatorOptions{}, &logger);
    Sha256 h{};
    h[0] = 0xAB;
    CHECK(dedup.key_for(h) == "training:ab" + std::string(62, '0'));
    CHECK(dedup.claim(dedup.key_for(h)) == ClaimOutcome::Claimed);

    // Another connection drops the table: every later statement fails.
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
    REQUIRE(sqlite3_exec(db, "DROP TABLE dedup", nullptr, nullptr, nullptr) == SQLITE_OK);
    sqlite3_close(db);

    h[0] = 0xCD;
    CHECK(dedup.claim(dedup.key_for(h)) == ClaimOutcome::FailedOpen);
    CHECK(dedup.claim(dedup.key_for(h)) == ClaimOutcome::FailedOpen);
    dedup.commit({dedup.key_for(h)});  // counted, not thrown
    CHECK(dedup.store_errors() == 3);
}

TEST_CASE("the deduplicator claims batches and fails open for all of a batch", "[unit][dedup]") {
    tdo_test::TempDir dir;
    const std::string path = dir / "dedup.sqlite3";
    Logger logger(LogLevel::Off);
    TrainingDeduplicator dedup(make_sqlite_dedup_store(SqliteStoreOptions{path, 100ms}), DeduplicatorOptions{}, &logger);
    CHECK(dedup.claim_batch({}).empty());
    CHECK(dedup.claim("training:a") == ClaimOutcome::Claimed);
    CHECK(dedup.claim_batch({"training:a", "training:b", "training:b"}) ==
          std::vector<ClaimOutcome>{ClaimOutcome::Duplicate, ClaimOutcome::Claimed, ClaimOutcome::Duplicate});
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
    REQUIRE(sqlite3_exec(db, "DROP TABLE dedup", nullptr, nullptr, nullptr) == SQLITE_OK);
    sqlite3_close(db);
    CHECK(dedup.claim_batch({"training:c", "training:d"}) ==
          std::vector<ClaimOutcome>{ClaimOutcome::FailedOpen, ClaimOutcome::FailedOpen});
    CHECK(dedup.store_errors() == 1);
}
