// The S3 servers the integration tests run against (started by the ctest
// fixtures; their endpoints come from TDO_TEST_RGW_ENDPOINT and
// TDO_TEST_S3RVER_ENDPOINT) and helpers for buckets and writer configs.
#pragma once

#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <memory>
#include <random>
#include <string>

#include "append/batch_objects.hpp"
#include "append/object_appender.hpp"
#include "manifest/manifest.hpp"
#include "s3/curl_s3_sink.hpp"

namespace tdo_test {

using namespace training_output;

struct Server {
    std::string endpoint;
    std::string access_key;
    std::string secret_key;
};

inline std::string env_or_fail(const char* name) {
    const char* v = std::getenv(name);
    if (!v || !*v) FAIL(std::string(name) + " is not set: the test fixtures start the S3 servers");
    return v;
}

inline Server rgw() { return {env_or_fail("TDO_TEST_RGW_ENDPOINT"), "testkey", "testsecret"}; }

inline Server s3rver() { return {env_or_fail("TDO_TEST_S3RVER_ENDPOINT"), "S3RVER", "S3RVER"}; }

// The end of the s3rver's log (TDO_TEST_S3RVER_LOG), for a failing test to
// show what the server went through.
inline std::string s3rver_log_tail(std::size_t max_bytes = 4096) {
    const char* path = std::getenv("TDO_TEST_S3RVER_LOG");
    if (!path || !*path) return "(TDO_TEST_S3RVER_LOG is not set)";
    std::ifstream in(path, std::ios::binary);
    if (!in) return std::string("(no log at ") + path + ")";
    std::string log((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (log.size() > max_bytes) log = "..." + log.substr(log.size() - max_bytes);
    return "s3rver's log:\n" + log;
}

inline S3SinkOptions options_for(const Server& s, const std::string& bucket) {
    S3SinkOptions o;
    o.endpoint_url = s.endpoint;
    o.bucket = bucket;
    o.credentials = sigv4::Credentials{s.access_key, s.secret_key, ""};
    o.request_timeout = std::chrono::milliseconds(30000);
    o.probe_wait = std::chrono::seconds(30);  // the tests read what the probe found
    return o;
}

// A new bucket on the server and a sink for it.
inline std::unique_ptr<CurlS3Sink> fresh_bucket(const Server& s, std::string& bucket) {
    static std::atomic<int> counter{0};
    bucket = "tdo-" + std::to_string(::getpid()) + "-" + std::to_string(counter++) + "-" +
             std::to_string(std::random_device{}() % 100000);
    S3SinkOptions o = options_for(s, bucket);
    o.conditional_writes = ConditionalWrites::Off;  // no probe before the bucket exists
    o.native_append = NativeAppend::Off;
    CurlS3Sink admin(o);
    SinkResponse r = admin.create_bucket();
    INFO(r.describe() + (!r.ok() && s.access_key == "S3RVER" ? "\n" + s3rver_log_tail() : std::string()));
    REQUIRE(r.ok());
    return std::make_unique<CurlS3Sink>(options_for(s, bucket));
}

inline std::string writer_config(const Server& s, const std::string& bucket, const std::string& dir,
                                 const std::string& extra = "") {
    return "{\"s3_endpoint_url\":\"" + s.endpoint + "\",\"s3_bucket_name\":\"" + bucket + "\",\"s3_access_key\":\"" +
           s.access_key + "\",\"s3_secret_key\":\"" + s.secret_key + "\",\"output_dir\":\"" + dir +
           "\",\"dedup_store\":\"sqlite\",\"log_level\":\"off\"" + extra + "}";
}

// The month's lines as a reader sees them, in every append mode: the
// monthly file, and in the batches mode its batch objects not yet folded
// into it (BatchObjects::read_month).
inline std::string month_of(S3Sink& sink, const std::string& key) {
    ObjectAppender appender(sink, AppendOptions{});
    BatchObjects batches(sink, appender, BatchObjectsOptions{});
    return batches.read_month(key);
}

// Compactions of the month, as a writer's compactor runs them (its folds
// advance the manifest), until no batch object is left (a writer's
// compaction that close() cut short may have left its lease: it is taken
// over after 5 s, the tests' lease time).
inline CompactionResult compact(S3Sink& sink, const std::string& key) {
    AppendOptions o;
    o.lease_wait = std::chrono::milliseconds(60000);
    o.lease_ttl = std::chrono::seconds(5);
    ObjectAppender appender(sink, o);
    Manifests manifests(sink, ManifestOptions{});
    BatchObjectsOptions b;
    b.compaction_lease_wait = std::chrono::milliseconds(60000);
    BatchObjects batches(sink, appender, b);
    CompactionResult total;
    for (int round = 0; round < 5; ++round) {
        Compaction c(batches, key);
        while (const Fold* fold = c.next()) manifests.advance(key, fold->end, fold->body);
        const CompactionResult& r = c.result();
        REQUIRE(r.ran);
        total.ran = true;
        total.folds += r.folds;
        total.batches += r.batches;
        total.bytes += r.bytes;
        total.deleted += r.deleted;
        ListPage left;
        REQUIRE(sink.list(batch_objects::prefix(key), "", left).ok());
        if (left.objects.empty()) break;
    }
    return total;
}

inline std::string big_jsonl(std::size_t bytes) {
    std::string out;
    std::mt19937 gen(7);
    for (int i = 0; out.size() < bytes; ++i) {
        out += "{\"n\":" + std::to_string(i) + ",\"r\":" + std::to_string(gen()) + ",\"pad\":\"" +
               std::string(80, 'p') + "\"}\n";
    }
    return out;
}

inline const std::string kKey = "training/metabolic_diabetes/2025/11/health_journal_2025_11.jsonl";

// The manifest beside `key` describes a prefix of the object, counted right
// (never a line it does not have); `whole`: the whole object.
inline void check_manifest(S3Sink& sink, const std::string& key, bool whole) {
    SinkResponse m = sink.get(Manifests::key_for(key));
    REQUIRE(m.ok());
    const Manifest got = Manifest::from_json(m.body);
    SinkResponse g = sink.get(key);
    REQUIRE(g.ok());
    REQUIRE(got.counts.bytes <= g.body.size());
    ManifestCounts prefix;
    prefix.add_lines(std::string_view(g.body).substr(0, got.counts.bytes));
    CHECK(prefix.bytes == got.counts.bytes);
    CHECK(prefix.lines == got.counts.lines);
    CHECK(prefix.record_types == got.counts.record_types);
    CHECK(prefix.splits == got.counts.splits);
    CHECK(prefix.config_fingerprints == got.counts.config_fingerprints);
    if (whole) CHECK(got.counts.bytes == g.body.size());
}

}  // namespace tdo_test
