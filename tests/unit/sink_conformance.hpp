// S3 semantics that every S3Sink must show; run against MemorySink,
// DirectorySink and (in the integration tests) real S3 servers.
#pragma once

#include <catch2/catch.hpp>

#include "training_output/sys/s3_sink.hpp"

namespace tdo_test {

struct ConformanceOptions {
    std::string prefix;                // keys are made under it (unique per run)
    bool conditional_writes = true;    // the server enforces If-Match / If-None-Match on PUT
    bool conditional_complete = true;  // ... and on Complete and copy-source-if-match
    bool multipart_copy = true;
    std::uint64_t part_size = 5ull << 20;  // smallest non-last part the server accepts
    bool lists = true;                     // list() and remove_many() (not the directory sink)
};

inline void check_sink_conformance(training_output::S3Sink& sink, const ConformanceOptions& o) {
    using namespace training_output;
    const std::string key = o.prefix + "conf/a b+ü/obj.jsonl";

    SinkResponse h = sink.head(key);
    REQUIRE(h.status == SinkStatus::NotFound);
    CHECK(sink.get(key).status == SinkStatus::NotFound);

    WriteConditions create;
    create.if_none_match_any = true;
    SinkResponse p = sink.put(key, "line 1\n", ObjectAttributes{}, create);
    REQUIRE(p.ok());
    h = sink.head(key);
    REQUIRE(h.ok());
    CHECK(h.size == 7);
    CHECK_FALSE(h.etag.empty());
    CHECK(h.etag.front() != '"');  // unquoted

    SinkResponse g = sink.get(key);
    REQUIRE(g.ok());
    CHECK(g.body == "line 1\n");
    CHECK(g.etag == h.etag);
    g = sink.get(key, ByteRange{5, 6});
    REQUIRE(g.ok());
    CHECK(g.body == "1\n");
    CHECK(g.size == 7);

    if (o.conditional_writes) {
        CHECK(sink.put(key, "other\n", ObjectAttributes{}, create).status == SinkStatus::PreconditionFailed);
        WriteConditions stale;
        stale.if_match = "0123456789abcdef0123456789abcdef";
        CHECK(sink.put(key, "other\n", ObjectAttributes{}, stale).status == SinkStatus::PreconditionFailed);
        CHECK(sink.get(key).body == "line 1\n");
    }
    WriteConditions match;
    match.if_match = h.etag;
    REQUIRE(sink.put(key, "line 1\nline 2\n", ObjectAttributes{}, match).ok());
    SinkResponse h2 = sink.head(key);
    REQUIRE(h2.ok());
    CHECK(h2.size == 14);
    CHECK(h2.etag != h.etag);

    if (o.multipart_copy) {
        // Grow the object past the part minimum, then append with a server-side copy.
        std::string big(o.part_size, 'x');
        big.back() = '\n';
        REQUIRE(sink.put(key, big, ObjectAttributes{}, WriteConditions{}).ok());
        SinkResponse hb = sink.head(key);
        REQUIRE(hb.ok());
        SinkResponse c = sink.create_multipart(key, ObjectAttributes{});
        REQUIRE(c.ok());
        REQUIRE_FALSE(c.upload_id.empty());
        SinkResponse p1 = sink.upload_part_copy(key, c.upload_id, 1, key, hb.etag, std::nullopt);
        REQUIRE(p1.ok());
        if (o.conditional_complete) {
            CHECK(sink.upload_part_copy(key, c.upload_id, 3, key, "0123456789abcdef0123456789abcdef", std::nullopt)
                      .status == SinkStatus::PreconditionFailed);
        }
        SinkResponse p2 = sink.upload_part(key, c.upload_id, 2, "tail\n");
        REQUIRE(p2.ok());
        WriteConditions cm;
        cm.if_match = hb.etag;
        if (o.conditional_complete) {
            WriteConditions stale_complete;
            stale_complete.if_match = "0123456789abcdef0123456789abcdef";
            CHECK(sink.complete_multipart(key, c.upload_id, {{1, p1.etag}, {2, p2.etag}}, stale_complete).status ==
                  SinkStatus::PreconditionFailed);
        }
        SinkResponse done = sink.complete_multipart(key, c.upload_id, {{1, p1.etag}, {2, p2.etag}}, cm);
        REQUIRE(done.ok());
        SinkResponse after = sink.head(key);
        REQUIRE(after.ok());
        CHECK(after.size == big.size() + 5);
        CHECK(sink.get(key, ByteRange{big.size() - 1, big.size() + 4}).body == "\ntail\n");
        CHECK(sink.get(key, ByteRange{0, 3}).body == "xxxx");

        // An aborted upload changes nothing.
        SinkResponse c2 = sink.create_multipart(key, ObjectAttributes{});
        REQUIRE(c2.ok());
        REQUIRE(sink.upload_part(key, c2.upload_id, 1, "never\n").ok());
        CHECK(sink.abort_multipart(key, c2.upload_id).ok());
        CHECK(sink.head(key).size == after.size);
    }

    // A delete conditioned on a time before the object's last write is
    // refused where the store has it (else not implemented): the object stays.
    SinkResponse refused = sink.remove_if_unmodified_since(key, sink.head(key).last_modified - 1);
    if (refused.status != SinkStatus::NotImplemented) CHECK(refused.status == SinkStatus::PreconditionFailed);
    CHECK(sink.head(key).ok());

    CHECK(sink.remove(key).ok());
    CHECK(sink.head(key).status == SinkStatus::NotFound);

    if (o.lists) {
        // Keys under a prefix, in key order, with their sizes and ETags;
        // a sibling prefix that starts the same is not listed.
        const std::string dir = o.prefix + "conf/list/";
        std::vector<std::string> keys = {dir + "a.jsonl", dir + "b c.jsonl", dir + "c&d.jsonl"};
        for (std::size_t i = 0; i < keys.size(); ++i) {
            REQUIRE(sink.put(keys[i], std::string(i + 1, 'x'), ObjectAttributes{}, WriteConditions{}).ok());
        }
        REQUIRE(sink.put(o.prefix + "conf/list2/z.jsonl", "z", ObjectAttributes{}, WriteConditions{}).ok());
        ListPage page;
        REQUIRE(sink.list(dir, "", page).ok());
        REQUIRE(page.objects.size() == 3);
        CHECK(page.next.empty());
        for (std::size_t i = 0; i < keys.size(); ++i) {
            CHECK(page.objects[i].key == keys[i]);
            CHECK(page.objects[i].size == i + 1);
            CHECK(page.objects[i].etag == sink.head(keys[i]).etag);
        }
        // Two of them and a key that does not exist, in one call.
        std::vector<std::string> failed;
        REQUIRE(sink.remove_many({keys[0], keys[2], dir + "missing.jsonl"}, failed).ok());
        CHECK(failed.empty());
        REQUIRE(sink.list(dir, "", page).ok());
        REQUIRE(page.objects.size() == 1);
        CHECK(page.objects[0].key == keys[1]);
        REQUIRE(sink.remove_many({keys[1], o.prefix + "conf/list2/z.jsonl"}, failed).ok());
        REQUIRE(sink.list(o.prefix + "conf/", "", page).ok());
        CHECK(page.objects.empty());
    }
}

}  // namespace tdo_test
