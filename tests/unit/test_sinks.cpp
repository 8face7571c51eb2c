#include <catch2/catch.hpp>
#include <thread>

#include "memory_sink.hpp"
#include "sink/directory_sink.hpp"
#include "sink_conformance.hpp"
#include "test_util.hpp"
#include "training_output/error.hpp"

using namespace training_output;

TEST_CASE("MemorySink has S3 semantics", "[unit][sink]") {
    MemorySink sink(SinkCapabilities{true, true, true, 64});
    tdo_test::check_sink_conformance(sink, {"", true, true, true, 64});
}

TEST_CASE("DirectorySink has S3 semantics", "[unit][sink]") {
    // Parts in memory, parts in files, and the two mixed (room for the first part only).
    const std::uint64_t memory = GENERATE(std::uint64_t(64) << 20, std::uint64_t(0), std::uint64_t(5));
    INFO(memory);
    tdo_test::TempDir dir;
    DirectorySinkOptions o{dir.path(), false};
    o.memory_part_bytes = memory;
    auto sink = make_directory_sink(o);
    tdo_test::ConformanceOptions c{"", true, true, true, 64};
    c.lists = false;
    tdo_test::check_sink_conformance(*sink, c);
}

TEST_CASE("MemorySink imitating RGW ignores conditions on Complete", "[unit][sink]") {
    MemorySink sink(SinkCapabilities{true, false, true, 64});
    tdo_test::check_sink_conformance(sink, {"", true, false, true, 64});
}

TEST_CASE("DirectorySink keeps keys inside its root", "[unit][sink]") {
    tdo_test::TempDir dir;
    auto sink = make_directory_sink({dir / "root", false});
    for (const char* bad : {"../escape.jsonl", "/abs.jsonl", "a/../../b", "a//b", ".sink/locks/x", "", "a/"}) {
        INFO(bad);
        auto r = sink->put(bad, "x\n", ObjectAttributes{}, WriteConditions{});
        CHECK(r.status == SinkStatus::Fatal);
        CHECK(r.error.code == "InvalidKey");
    }
    CHECK_FALSE(std::filesystem::exists(dir / "escape.jsonl"));
}

TEST_CASE("DirectorySink appends in place and rolls back an interrupted append", "[unit][sink]") {
    tdo_test::TempDir dir;
    auto sink = make_directory_sink({dir.path(), true});
    const std::string key = "training/d/2025/11/health_journal_2025_11.jsonl";
    REQUIRE(sink->put(key, "a\n", ObjectAttributes{}, WriteConditions{}).ok());
    auto h = sink->head(key);
    auto c = sink->create_multipart(key, ObjectAttributes{});
    auto p1 = sink->upload_part_copy(key, c.upload_id, 1, key, h.etag, std::nullopt);
    auto p2 = sink->upload_part(key, c.upload_id, 2, "b\n");
    WriteConditions cm;
    cm.if_match = h.etag;
    REQUIRE(sink->complete_multipart(key, c.upload_id, {{1, p1.etag}, {2, p2.etag}}, cm).ok());
    CHECK(tdo_test::read_file(dir / key) == "a\nb\n");

    // A crash after the journal was written and half a line appended.
    std::string journal;
    for (const auto& e : std::filesystem::directory_iterator(dir / ".sink/journal")) journal = e.path();
    CHECK(journal.empty());  // nothing left over from the finished append
    const std::string hash_name = [&] {
        for (const auto& e : std::filesystem::directory_iterator(dir / ".sink/locks")) return e.path().stem().string();
        return std::string();
    }();
    REQUIRE_FALSE(hash_name.empty());
    tdo_test::write_file(dir / (".sink/journal/" + hash_name), "4\n");
    { std::ofstream(dir / key, std::ios::app) << "{\"partial"; }
    CHECK(tdo_test::read_file(dir / key) == "a\nb\n{\"partial");
    auto g = sink->get(key);  // the next access rolls it back
    REQUIRE(g.ok());
    CHECK(g.body == "a\nb\n");
    CHECK(tdo_test::read_file(dir / key) == "a\nb\n");
    CHECK_FALSE(std::filesystem::exists(dir / (".sink/journal/" + hash_name)));

    // A crash while the journal itself was being written (before the append
    // started): the half-written journal is discarded, the object is kept.
    for (const std::string torn : {"", "1", "12"}) {
        tdo_test::write_file(dir / (".sink/journal/" + hash_name), torn);
        auto again = sink->get(key);
        REQUIRE(again.ok());
        CHECK(again.body == "a\nb\n");
        CHECK_FALSE(std::filesystem::exists(dir / (".sink/journal/" + hash_name)));
    }
}

TEST_CASE("MemorySink fault hook answers for the server", "[unit][sink]") {
    MemorySink sink;
    int calls = 0;
    sink.set_fault_hook([&](MemorySink::Op op, const std::string&) -> std::optional<MemorySink::Fault> {
        if (op != MemorySink::Op::Put) return std::nullopt;
        ++calls;
        SinkResponse timeout;
        timeout.status = SinkStatus::Transient;
        timeout.detail = "timeout";
        return MemorySink::Fault{timeout, calls == 2};  // second put: applied, answer lost
    });
    CHECK(sink.put("k", "1", ObjectAttributes{}, WriteConditions{}).status == SinkStatus::Transient);
    CHECK_FALSE(sink.object("k"));
    CHECK(sink.put("k", "2", ObjectAttributes{}, WriteConditions{}).status == SinkStatus::Transient);
    CHECK(sink.object("k") == std::optional<std::string>("2"));
    CHECK(sink.request_count(MemorySink::Op::Put) == 2);
}
