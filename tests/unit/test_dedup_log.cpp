// The log dedup store (lib/dedup/log_store.cpp): what every store is held to,
// across store objects and processes sharing one file, and what a file of
// its own asks for: torn ends cut off, compaction followed by every reader.
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>

#include "common/crc32c.hpp"
#include "dedup_conformance.hpp"
#include "test_util.hpp"
#include "training_output/config.hpp"
#include "training_output/error.hpp"
#include "training_output/sys/dedup_store.hpp"
#include "training_output/training_output.hpp"

using namespace training_output;
using namespace std::chrono_literals;

namespace {

std::unique_ptr<DedupStore> open_log(const std::string& path, std::uint64_t compact_at = 64 << 20) {
    return make_log_dedup_store(LogStoreOptions{path, compact_at});
}

}  // namespace

TEST_CASE("log dedup: claims owned by spools, commits, expiry, batches", "[unit][dedup][log][slow]") {
    tdo_test::TempDir dir;
    auto store = open_log(dir / "dedup.log");
    CHECK(std::string(store->kind()) == "log");
    tdo_test::check_dedup_conformance(*store, "training", dir.path());
}

TEST_CASE("log dedup: two store objects on one file, and a reopen", "[unit][dedup][log]") {
    tdo_test::TempDir dir;
    {
        auto a = open_log(dir / "dedup.log");
        auto b = open_log(dir / "dedup.log");
        tdo_test::check_dedup_two_writers(*a, *b, "training", dir.path());
    }
    auto store = open_log(dir / "dedup.log");
    const auto c = tdo_test::registered_owner(*store, dir.path(), "c");
    CHECK(store->claim("training:x", c.id, 60s) == ClaimState::Committed);   // committed before the reopen
    CHECK(store->claim("training:pending", c.id, 60s) == ClaimState::Held);  // a live owner's, from before
    CHECK(store->claim("training:z", c.id, 60s) == ClaimState::Claimed);
    CHECK(store->lookup("training:x", c.id) == KeyState::Committed);
    CHECK(store->lookup("training:z", c.id) == KeyState::Own);
    CHECK(store->lookup("training:never", c.id) == KeyState::Absent);
}

TEST_CASE("log dedup: 8 threads claiming the same keys: exactly one wins each", "[unit][dedup][log][concurrency]") {
    tdo_test::TempDir dir;
    auto store = open_log(dir / "dedup.log");
    tdo_test::check_dedup_threads(*store, "training", dir.path());
}

TEST_CASE("log dedup: several processes claiming through one file: exactly one wins each",
          "[unit][dedup][log][concurrency]") {
    tdo_test::TempDir dir;
    const std::string path = dir / "dedup.log";
    constexpr int kKeys = 300;
    // A small compaction threshold, and every key committed again by the
    // processes that find it committed (records dead at once): files are
    // compacted while the others claim.
    tdo_test::check_dedup_processes(
        dir.path(), [&] { return open_log(path, 16 << 10); },
        [](DedupStore& store, const std::string& key, int k, ClaimState got) {
            if (got == ClaimState::Committed) store.commit({key}, 0s);
            if (k % 50 == 0) store.maintain();
        },
        4, kKeys);
    // Compactions ran (every key's records were written up to 5 times, 53
    // bytes each), and a new reader finds every key committed.
    INFO(std::filesystem::file_size(path));
    CHECK(std::filesystem::file_size(path) < kKeys * 53 * 3);
    auto store = open_log(path);
    const auto me = tdo_test::registered_owner(*store, dir.path(), "reader");
    for (int k = 0; k < kKeys; ++k)
        CHECK(store->claim("training:k" + std::to_string(k), me.id, 60s) == ClaimState::Committed);
}

TEST_CASE("log dedup: a torn record at the end is cut off; what came before it stays", "[unit][dedup][log]") {
    tdo_test::TempDir dir;
    const std::string path = dir / "dedup.log";
    {
        auto store = open_log(path);
        store->commit({"training:a", "training:b"}, 0s);
    }
    const auto whole = std::filesystem::file_size(path);
    // A process died in the middle of a write: a length, a checksum and part of a body.
    for (const std::string& tail : {std::string("\x2d\x00\x00\x00\x01\x02\x03\x04\x05partial", 17),
                                    std::string("\x07\x00", 2), std::string(40, '\0')}) {
        INFO(tail.size());
        const std::string fresh = "training:after-" + std::to_string(tail.size());
        {
            std::ofstream f(path, std::ios::app | std::ios::binary);
            f << tail;
        }
        auto store = open_log(path);
        const auto me = tdo_test::registered_owner(*store, dir.path(), "me");
        CHECK(store->claim("training:a", me.id, 60s) == ClaimState::Committed);
        CHECK(store->claim("training:b", me.id, 60s) == ClaimState::Committed);
        CHECK(store->claim(fresh, me.id, 60s) == ClaimState::Claimed);
        store->commit({fresh}, 0s);
        store.reset();
        // The torn bytes are gone; the records written after them are whole.
        auto again = open_log(path);
        CHECK(again->claim(fresh, me.id, 60s) == ClaimState::Committed);
        CHECK(std::filesystem::file_size(path) > whole);
    }
}

TEST_CASE("log dedup: a file that is not a dedup log is refused", "[unit][dedup][log]") {
    tdo_test::TempDir dir;
    tdo_test::write_file(dir / "garbage.log", std::string(4096, 'g'));
    try {
        open_log(dir / "garbage.log");
        FAIL("expected an error");
    } catch (const Error& e) {
        CHECK(e.code() == ErrorCode::DedupStore);
        CHECK_THAT(e.what(), Catch::Contains("is not a dedup log"));
    }
    tdo_test::write_file(dir / "file", "x");
    CHECK_THROWS_AS(open_log(dir / "file/sub/dedup.log"), Error);
}

TEST_CASE("log dedup: compaction keeps what is live, and another store object follows it", "[unit][dedup][log]") {
    tdo_test::TempDir dir;
    const std::string path = dir / "dedup.log";
    auto a = open_log(path, 4096);
    auto b = open_log(path, 4096);
    const auto oa = tdo_test::registered_owner(*a, dir.path(), "a");
    const auto ob = tdo_test::registered_owner(*b, dir.path(), "b");
    // Ten keys written again and again (dead records), one claim still held,
    // and commits that expire.
    std::vector<std::string> keys;
    for (int i = 0; i < 10; ++i) keys.push_back("training:live-" + std::to_string(i));
    for (int round = 0; round < 100; ++round) a->commit(keys, 0s);
    CHECK(a->claim("training:held", oa.id, 60s) == ClaimState::Claimed);
    a->commit({"training:short"}, 1s);
    const auto before = std::filesystem::file_size(path);
    std::this_thread::sleep_for(1100ms);  // "training:short" expires (a TTL: the thing tested)
    a->maintain();
    const auto after = std::filesystem::file_size(path);
    INFO(before << " -> " << after);
    CHECK(after < before / 10);
    // b still reads the old file: it finds SEALED there and reads the new one.
    CHECK(b->claim(keys[3], ob.id, 60s) == ClaimState::Committed);
    CHECK(b->claim("training:held", ob.id, 60s) == ClaimState::Held);
    CHECK(b->claim("training:short", ob.id, 60s) == ClaimState::Claimed);
    b->commit({"training:after"}, 0s);
    CHECK(a->claim("training:after", oa.id, 60s) == ClaimState::Committed);  // a writes and reads the new file
    auto c = open_log(path);
    const auto oc = tdo_test::registered_owner(*c, dir.path(), "c");
    CHECK(c->claim(keys[9], oc.id, 60s) == ClaimState::Committed);
    CHECK(c->claim("training:after", oc.id, 60s) == ClaimState::Committed);
    CHECK(c->claim("training:held", oc.id, 60s) == ClaimState::Held);
}

TEST_CASE("log dedup: a writer with dedup_store \"log\" writes each example once, across a re-run",
          "[unit][dedup][log][writer]") {
    tdo_test::TempDir dir;
    Config c = Config::from_json("{\"output_dir\": \"" + dir.path() +
                                 "\", \"dedup_store\": \"log\", "
                                 "\"directory_fsync\": false, \"log_level\": \"off\"}");
    auto run = [&] {
        TrainingOutput w(c);
        int written = 0;
        for (int i = 0; i < 120; ++i) {
            const std::string text = "Average glucose " + std::to_string(i % 100) + " mg/dL over the week.";
            if (w.generate(text, tdo_test::message_json("BloodGlucoseRecord"), tdo_test::result_json()) ==
                Outcome::Written)
                ++written;
        }
        w.close();
        return written;
    };
    CHECK(run() == 100);  // 20 repeat earlier content
    CHECK(run() == 0);    // all of it written before
    std::size_t lines = 0, logs = 0;
    for (const auto& e : std::filesystem::recursive_directory_iterator(dir.path())) {
        const std::string name = e.path().filename().string();
        if (name.size() > 6 && name.compare(name.size() - 6, 6, ".jsonl") == 0)
            lines += tdo_test::lines_of(tdo_test::read_file(e.path().string())).size();
        if (name.rfind(".dedup-", 0) == 0 && name.size() > 4 && name.compare(name.size() - 4, 4, ".log") == 0) ++logs;
    }
    CHECK(lines == 100);
    CHECK(logs == 1);  // named after the destination
    CHECK_FALSE(std::filesystem::exists(dir / ".dedup.sqlite3"));
}

TEST_CASE("log dedup: a file whose creator died before its header was whole is started again", "[unit][dedup][log]") {
    tdo_test::TempDir dir;
    tdo_test::write_file(dir / "dedup.log", std::string("TDODE", 5));
    auto store = open_log(dir / "dedup.log");
    const auto me = tdo_test::registered_owner(*store, dir.path(), "me");
    CHECK(store->claim("training:a", me.id, 60s) == ClaimState::Claimed);
    store->commit({"training:a"}, 0s);
    store.reset();
    auto again = open_log(dir / "dedup.log");
    CHECK(again->claim("training:a", me.id, 60s) == ClaimState::Committed);
}

TEST_CASE("log dedup: a compactor that died between SEALED and its rename leaves a store that goes on",
          "[unit][dedup][log]") {
    tdo_test::TempDir dir;
    const std::string path = dir / "dedup.log";
    {
        auto store = open_log(path);
        store->commit({"training:before"}, 0s);
    }
    // What the compactor had done: SEALED appended to the file, the new one
    // written beside it, not renamed.
    {
        std::ofstream f(path, std::ios::app | std::ios::binary);
        const std::string body(1, '\x06');
        const std::uint32_t size = 1, crc = crc32c::compute(body);
        f.write(reinterpret_cast<const char*>(&size), 4);
        f.write(reinterpret_cast<const char*>(&crc), 4);
        f << body;
    }
    tdo_test::write_file(path + ".compact", "half a file");
    auto store = open_log(path);
    const auto me = tdo_test::registered_owner(*store, dir.path(), "me");
    CHECK(store->claim("training:before", me.id, 60s) == ClaimState::Committed);
    CHECK(store->claim("training:after", me.id, 60s) == ClaimState::Claimed);
    store->commit({"training:after"}, 0s);
    store.reset();
    auto again = open_log(path);
    CHECK(again->claim("training:after", me.id, 60s) == ClaimState::Committed);
    CHECK(again->claim("training:before", me.id, 60s) == ClaimState::Committed);
}
