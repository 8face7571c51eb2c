// CurlS3Sink and the writer over real HTTP: Ceph RGW (checks SigV4,
// conditional PUT, UploadPartCopy) and s3rver (object semantics only), both
// started on loopback by the test fixtures. Their endpoints come from
// TDO_TEST_RGW_ENDPOINT and TDO_TEST_S3RVER_ENDPOINT.
#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <cstdlib>
#include <random>
#include <set>
#include <thread>

#include "../unit/sink_conformance.hpp"
#include "../unit/test_util.hpp"
#include "s3/curl_s3_sink.hpp"
#include "s3_test_servers.hpp"
#include "training_output/error.hpp"
#include "training_output/training_output.hpp"

using namespace training_output;
using namespace tdo_test;

TEST_CASE("RGW: S3 semantics over SigV4", "[integration][rgw]") {
    std::string bucket;
    auto sink = fresh_bucket(rgw(), bucket);
    tdo_test::check_sink_conformance(*sink, {"", true, false, true, 5u << 20});
}

TEST_CASE("RGW: the probe finds conditional PUT, native appends, but not conditional Complete", "[integration][rgw]") {
    std::string bucket;
    auto sink = fresh_bucket(rgw(), bucket);
    SinkCapabilities caps = sink->capabilities();
    CHECK(caps.conditional_writes);
    CHECK_FALSE(caps.conditional_complete);
    CHECK(caps.native_append);
    // The probe cleaned up after itself.
    CHECK(sink->head(".training_output/probe/x").status == SinkStatus::NotFound);
    // s3_append_mode=copy: no native appends, and no probe for them; native:
    // the probe confirms them.
    S3SinkOptions o = options_for(rgw(), bucket);
    o.native_append = NativeAppend::Off;
    CHECK_FALSE(CurlS3Sink(o).capabilities().native_append);
    o.native_append = NativeAppend::On;
    CHECK(CurlS3Sink(o).capabilities().native_append);
}

TEST_CASE("RGW: native appends are a compare-and-append on the object's length", "[integration][rgw]") {
    std::string bucket;
    auto sink = fresh_bucket(rgw(), bucket);
    const ObjectAttributes attrs;
    SinkResponse a = sink->append_at("a", "one\n", 0, attrs);
    REQUIRE(a.ok());
    CHECK(a.appendable);
    CHECK(a.size == 4);
    CHECK_FALSE(a.etag.empty());
    const std::string etag_after_one = sink->head("a").etag;
    SinkResponse b = sink->append_at("a", "two\n", 4, attrs);
    REQUIRE(b.ok());
    CHECK(b.size == 8);
    SinkResponse stale = sink->append_at("a", "late\n", 4, attrs);
    CHECK(stale.status == SinkStatus::Conflict);
    CHECK(stale.error.code == "PositionNotEqualToLength");
    SinkResponse h = sink->head("a");
    REQUIRE(h.ok());
    CHECK(h.appendable);
    CHECK(h.size == 8);
    // Every append changes the object's ETag; the one an append answers is
    // its part's, not the object's (so a native intent is an offset).
    CHECK(h.etag != etag_after_one);
    CHECK(h.etag != b.etag);
    CHECK(sink->get("a").body == "one\ntwo\n");
    // A plain object takes none, and a PUT makes an appendable one plain.
    REQUIRE(sink->put("p", "plain\n", attrs, WriteConditions{}).ok());
    SinkResponse plain = sink->append_at("p", "x\n", 6, attrs);
    CHECK(plain.status == SinkStatus::Conflict);
    CHECK(plain.error.code == "ObjectNotAppendable");
    CHECK_FALSE(sink->head("p").appendable);
    REQUIRE(sink->put("a", "over\n", attrs, WriteConditions{}).ok());
    CHECK_FALSE(sink->head("a").appendable);
}

TEST_CASE("RGW: a delete conditioned on the object's time removes it only while it was not written since",
          "[integration][rgw]") {
    std::string bucket;
    auto sink = fresh_bucket(rgw(), bucket);
    REQUIRE(sink->put("k", "one\n", ObjectAttributes{}, WriteConditions{}).ok());
    const SinkResponse h = sink->head("k");
    REQUIRE(h.ok());
    REQUIRE(h.last_modified > 0);
    // Written again after that time: the delete is refused, the object stays.
    SinkResponse older = sink->remove_if_unmodified_since("k", h.last_modified - 1);
    CHECK(older.status == SinkStatus::PreconditionFailed);
    CHECK(sink->get("k").body == "one\n");
    SinkResponse same = sink->remove_if_unmodified_since("k", h.last_modified);
    CHECK(same.ok());
    CHECK(sink->head("k").status == SinkStatus::NotFound);
    // A missing key: nothing to refuse.
    CHECK(sink->remove_if_unmodified_since("k", h.last_modified).ok());
}

TEST_CASE("RGW: a wrong secret is rejected with S3's code, never showing the secret", "[integration][rgw]") {
    std::string bucket;
    fresh_bucket(rgw(), bucket);
    S3SinkOptions o = options_for(rgw(), bucket);
    o.credentials.secret_access_key = "not-the-secret-5up3r";
    try {
        CurlS3Sink sink(o);
        FAIL("expected an error");
    } catch (const Error& e) {
        CHECK(e.code() == ErrorCode::Auth);
        CHECK_THAT(e.what(), Catch::Contains("SignatureDoesNotMatch") && Catch::Contains("rejected the credentials"));
        CHECK_THAT(e.what(), !Catch::Contains("5up3r"));
    }
    // Through the C ABI the same error, with its code.
    tdo_test::TempDir dir;
    Server wrong = rgw();
    wrong.secret_key = "not-the-secret-5up3r";
    try {
        TrainingOutput w(Config::from_json(writer_config(wrong, bucket, dir.path())));
        FAIL("expected an error");
    } catch (const Error& e) {
        CHECK(e.code() == ErrorCode::Auth);
        CHECK_THAT(e.what(), !Catch::Contains("5up3r"));
    }
}

TEST_CASE("RGW: lines appended to a 6 MiB object leave its bytes intact", "[integration][rgw]") {
    std::string bucket;
    auto sink = fresh_bucket(rgw(), bucket);
    const std::string big = big_jsonl(6u << 20);
    REQUIRE(sink->put(kKey, big, ObjectAttributes{}, WriteConditions{}).ok());
    tdo_test::TempDir dir;
    {
        // Appended to as a plain object (multipart), not converted to an appendable one.
        TrainingOutput w(
            Config::from_json(writer_config(rgw(), bucket, dir.path(), ",\"s3_convert_plain_objects\":false")));
        for (int i = 0; i < 50; ++i) {
            CHECK(w.generate("Glucose narrative " + std::to_string(i) + ".",
                             tdo_test::message_json("BloodGlucoseRecord"),
                             tdo_test::result_json(10 + i)) == Outcome::Written);
        }
        w.flush();
        CHECK(w.stats().batches_appended == 1);
    }
    SinkResponse g = sink->get(kKey);
    REQUIRE(g.ok());
    REQUIRE(g.body.size() > big.size());
    CHECK(g.body.compare(0, big.size(), big) == 0);
    auto lines = tdo_test::lines_of(g.body.substr(big.size()));
    REQUIRE(lines.size() == 50);
    for (std::size_t i = 0; i < lines.size(); ++i) {
        auto doc = tdo_test::parse(lines[i]);
        REQUIRE_FALSE(doc.HasParseError());
        CHECK(std::string(doc["output"].GetString()) == "Glucose narrative " + std::to_string(i) + ".");
    }
    // Appended server-side: the old bytes did not cross the network again.
    CHECK(sink->head(kKey).metadata.size() <= 1);
}

namespace {

// 4 processes x 500 distinct examples into one key; returns the object.
std::string race_four_writers(CurlS3Sink& sink, const std::string& bucket, const std::string& extra_config) {
    tdo_test::TempDir dir;
    // Small batches so that the writers race for the key all the time.
    const std::string config =
        writer_config(rgw(), bucket, dir.path(),
                      ",\"flush_max_bytes\":16384,\"flush_interval_ms\":20,\"dedup_store\":\"memory\"" + extra_config);
    std::vector<pid_t> pids;
    for (int p = 0; p < 4; ++p) {
        pids.push_back(tdo_test::spawn({TDO_TEST_WRITER, config, "w" + std::to_string(p), "500", "0", "StepsRecord"}));
        REQUIRE(pids.back() > 0);
    }
    for (pid_t pid : pids) CHECK(tdo_test::wait_for(pid) == 0);
    return month_of(sink, "training/physical_activity/2025/11/health_journal_2025_11.jsonl");
}

void check_distinct_lines(const std::string& body, std::size_t expected) {
    auto lines = tdo_test::lines_of(body);
    std::set<std::string> outputs;
    for (const auto& line : lines) {
        auto doc = tdo_test::parse(line);
        REQUIRE_FALSE(doc.HasParseError());
        outputs.insert(doc["output"].GetString());
    }
    CHECK(lines.size() == expected);
    CHECK(outputs.size() == expected);
}

}  // namespace

TEST_CASE("RGW: 4 processes x 500 examples into one key end with 2,000 distinct lines", "[integration][rgw]") {
    const std::string mode = GENERATE(as<std::string>{}, "auto", "lease", "copy");
    std::string bucket;
    auto sink = fresh_bucket(rgw(), bucket);
    check_distinct_lines(race_four_writers(*sink, bucket, ",\"s3_append_mode\":\"" + mode + "\""), 2000);
    const std::string key = "training/physical_activity/2025/11/health_journal_2025_11.jsonl";
    check_manifest(*sink, key, true);  // the last batch's writer brought it up to the end
    SinkResponse lease = sink->get(".training_output/leases/" + key);
    // Native appends (auto) leave an appendable object; copy appends a plain one.
    CHECK(sink->head(key).appendable == (mode == "auto"));
    // On RGW every mode takes the lease; it is released by a conditional
    // overwrite, never a delete.
    REQUIRE(lease.ok());
    CHECK(lease.body.rfind("{\"released\":true", 0) == 0);
}

TEST_CASE("RGW: 4 processes x 500 examples natively appended to a 6 MiB appendable key", "[integration][rgw]") {
    std::string bucket;
    auto sink = fresh_bucket(rgw(), bucket);
    const std::string key = "training/physical_activity/2025/11/health_journal_2025_11.jsonl";
    const std::string big = big_jsonl(6u << 20);
    REQUIRE(sink->append_at(key, big, 0, ObjectAttributes{}).ok());
    std::string body = race_four_writers(*sink, bucket, "");
    REQUIRE(body.size() > big.size());
    CHECK(body.compare(0, big.size(), big) == 0);
    check_distinct_lines(body.substr(big.size()), 2000);
    CHECK(sink->head(key).appendable);
    check_manifest(*sink, key, true);  // the 6 MiB it found were counted too
}

TEST_CASE("RGW: 4 processes x 500 examples appended server-side to a 6 MiB key, none lost", "[integration][rgw]") {
    // Above the multipart threshold every append is UploadPartCopy + Complete,
    // which RGW does not make conditional: only the lease keeps writers apart.
    std::string bucket;
    auto sink = fresh_bucket(rgw(), bucket);
    const std::string key = "training/physical_activity/2025/11/health_journal_2025_11.jsonl";
    const std::string big = big_jsonl(6u << 20);
    REQUIRE(sink->put(key, big, ObjectAttributes{}, WriteConditions{}).ok());
    std::string body = race_four_writers(*sink, bucket, ",\"s3_convert_plain_objects\":false");
    REQUIRE(body.size() > big.size());
    CHECK(body.compare(0, big.size(), big) == 0);
    check_distinct_lines(body.substr(big.size()), 2000);
    CHECK_FALSE(sink->head(key).appendable);
    check_manifest(*sink, key, true);
}

TEST_CASE("RGW: 4 processes x 500 examples into a 6 MiB plain key: converted once, then native appends",
          "[integration][rgw][convert]") {
    std::string bucket;
    auto sink = fresh_bucket(rgw(), bucket);
    const std::string key = "training/physical_activity/2025/11/health_journal_2025_11.jsonl";
    const std::string big = big_jsonl(6u << 20);
    REQUIRE(sink->put(key, big, ObjectAttributes{}, WriteConditions{}).ok());
    std::string body = race_four_writers(*sink, bucket, "");
    REQUIRE(body.size() > big.size());
    CHECK(body.compare(0, big.size(), big) == 0);
    check_distinct_lines(body.substr(big.size()), 2000);
    CHECK(sink->head(key).appendable);
    CHECK(sink->head(conversion_marker_key(key)).status == SinkStatus::NotFound);
    CHECK(sink->head(conversion_copy_key(key)).status == SinkStatus::NotFound);
}

TEST_CASE("RGW: batches mode: 4 processes x 500 examples, compacted while they write, then the monthly file alone",
          "[integration][rgw][batches]") {
    std::string bucket;
    auto sink = fresh_bucket(rgw(), bucket);
    const std::string key = "training/physical_activity/2025/11/health_journal_2025_11.jsonl";
    check_distinct_lines(
        race_four_writers(*sink, bucket, ",\"s3_append_mode\":\"batches\",\"s3_compaction_interval_seconds\":1"), 2000);
    // Writers compacted on the way (whoever came first), and a reader saw
    // every line once whatever was folded; a last compaction leaves the file.
    const CompactionResult r = compact(*sink, key);
    CHECK(r.ran);
    SinkResponse g = sink->get(key);
    REQUIRE(g.ok());
    check_distinct_lines(g.body, 2000);
    ListPage page;
    REQUIRE(sink->list(batch_objects::prefix(key), "", page).ok());
    CHECK(page.objects.empty());
    // The last fold brought the manifest up to the whole file.
    check_manifest(*sink, key, true);
}

TEST_CASE("s3rver: batches mode: 2 processes x 300 examples, compacted, every line once",
          "[integration][s3rver][batches]") {
    std::string bucket;
    auto sink = fresh_bucket(s3rver(), bucket);
    tdo_test::TempDir dir;
    // Without conditional writes nothing keeps two compactors apart: one
    // writer compacts (interval 1 s), the other never does.
    auto config = [&](int interval) {
        return writer_config(s3rver(), bucket, dir.path(),
                             ",\"flush_max_bytes\":16384,\"flush_interval_ms\":20,\"dedup_store\":\"memory\","
                             "\"s3_append_mode\":\"batches\",\"s3_compaction_interval_seconds\":" +
                                 std::to_string(interval));
    };
    std::vector<pid_t> pids;
    for (int p = 0; p < 2; ++p) {
        pids.push_back(tdo_test::spawn(
            {TDO_TEST_WRITER, config(p == 0 ? 1 : 0), "w" + std::to_string(p), "300", "0", "StepsRecord"}));
        REQUIRE(pids.back() > 0);
    }
    for (pid_t pid : pids) {
        const int status = tdo_test::wait_for(pid);
        INFO(s3rver_log_tail());
        CHECK(status == 0);
    }
    const std::string key = "training/physical_activity/2025/11/health_journal_2025_11.jsonl";
    check_distinct_lines(month_of(*sink, key), 600);
    compact(*sink, key);
    SinkResponse g = sink->get(key);
    REQUIRE(g.ok());
    check_distinct_lines(g.body, 600);
    check_manifest(*sink, key, true);  // written without conditions: one compactor
}

TEST_CASE("s3rver: object semantics without conditional writes or UploadPartCopy", "[integration][s3rver]") {
    std::string bucket;
    auto sink = fresh_bucket(s3rver(), bucket);
    SinkCapabilities caps = sink->capabilities();
    CHECK_FALSE(caps.conditional_writes);
    CHECK_FALSE(caps.conditional_complete);
    CHECK_FALSE(caps.native_append);  // it ignores ?append: the probe saw no next position
    // s3_append_mode=native on it: an error at open, never an append that
    // would be a plain PUT over the object.
    {
        tdo_test::TempDir dir;
        try {
            TrainingOutput w(
                Config::from_json(writer_config(s3rver(), bucket, dir.path(), ",\"s3_append_mode\":\"native\"")));
            FAIL("expected an error");
        } catch (const Error& e) {
            CHECK(e.code() == ErrorCode::Config);
            CHECK_THAT(e.what(), Catch::Contains("s3_append_mode") && Catch::Contains("no native appends"));
        }
    }
    tdo_test::check_sink_conformance(*sink, {"", false, false, false, 5u << 20});
    CHECK(sink->upload_part_copy(kKey, "no-such-upload", 1, kKey, "", std::nullopt).status ==
          SinkStatus::NotImplemented);
}

TEST_CASE("s3rver: the writer appends with GET+PUT, bytes intact", "[integration][s3rver]") {
    std::string bucket;
    auto sink = fresh_bucket(s3rver(), bucket);
    const std::string big = big_jsonl(6u << 20);
    REQUIRE(sink->put(kKey, big, ObjectAttributes{}, WriteConditions{}).ok());
    tdo_test::TempDir dir;
    {
        TrainingOutput w(Config::from_json(writer_config(s3rver(), bucket, dir.path())));
        for (int i = 0; i < 20; ++i) {
            w.generate("Narrative " + std::to_string(i) + ".", tdo_test::message_json("BloodGlucoseRecord"),
                       tdo_test::result_json());
        }
        w.flush();
        w.generate("Narrative after the first batch.", tdo_test::message_json("BloodGlucoseRecord"),
                   tdo_test::result_json());
        w.flush();
        // The store's requests, by operation and outcome, in the metrics.
        const std::string metrics = w.metrics_text();
        CHECK_THAT(metrics,
                   Catch::Contains("etl_training_s3_requests_total{operation=\"GetObject\",status=\"ok\"}") &&
                       Catch::Contains("etl_training_s3_requests_total{operation=\"PutObject\",status=\"ok\"}") &&
                       Catch::Contains("# TYPE etl_training_s3_retries_total counter"));
        w.close();
    }
    SinkResponse g = sink->get(kKey);
    REQUIRE(g.ok());
    CHECK(g.body.compare(0, big.size(), big) == 0);
    check_manifest(*sink, kKey, true);  // the 6 MiB found there counted too
    auto lines = tdo_test::lines_of(g.body.substr(big.size()));
    REQUIRE(lines.size() == 21);
    CHECK(std::string(tdo_test::parse(lines.back())["output"].GetString()) == "Narrative after the first batch.");
    // No training file was written locally.
    CHECK(tdo_test::jsonl_files(dir.path()).empty());
}

namespace {

// 1,005 keys under a prefix (two pages of a listing), listed and then deleted
// 1,000 at a time.
void check_long_listing(S3Sink& sink) {
    const std::string prefix = "long/listing/";
    std::atomic<int> next{0}, failed{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t) {
        threads.emplace_back([&] {
            for (int i; (i = next++) < 1005;) {
                char name[32];
                std::snprintf(name, sizeof name, "%05d.jsonl", i);
                if (!sink.put(prefix + name, "x\n", ObjectAttributes{}, WriteConditions{}).ok()) ++failed;
            }
        });
    }
    for (auto& t : threads) t.join();
    REQUIRE(failed == 0);
    std::vector<std::string> keys;
    std::string token;
    int pages = 0;
    do {
        ListPage page;
        SinkResponse r = sink.list(prefix, token, page);
        INFO(r.describe());
        REQUIRE(r.ok());
        for (const auto& o : page.objects) keys.push_back(o.key);
        token = page.next;
        ++pages;
    } while (!token.empty() && pages < 10);
    CHECK(pages == 2);
    REQUIRE(keys.size() == 1005);
    CHECK(std::is_sorted(keys.begin(), keys.end()));
    CHECK(std::set<std::string>(keys.begin(), keys.end()).size() == 1005);
    std::vector<std::string> not_removed;
    REQUIRE(sink.remove_many(std::vector<std::string>(keys.begin(), keys.begin() + 1000), not_removed).ok());
    REQUIRE(sink.remove_many(std::vector<std::string>(keys.begin() + 1000, keys.end()), not_removed).ok());
    CHECK(not_removed.empty());
    ListPage after;
    REQUIRE(sink.list(prefix, "", after).ok());
    CHECK(after.objects.empty());
}

}  // namespace

TEST_CASE("RGW: a listing of 1,005 keys comes in two pages, and they are deleted 1,000 at a time",
          "[integration][rgw][batches]") {
    std::string bucket;
    auto sink = fresh_bucket(rgw(), bucket);
    check_long_listing(*sink);
}

TEST_CASE("s3rver: a listing of 1,005 keys comes in two pages, and they are deleted 1,000 at a time",
          "[integration][s3rver][batches]") {
    std::string bucket;
    auto sink = fresh_bucket(s3rver(), bucket);
    check_long_listing(*sink);
}
