// CurlS3Sink against a scripted HTTP server (tests/integration/fake_s3.py):
// the answers real servers rarely give on demand. Real S3 semantics are
// tested against RGW and s3rver in test_s3.cpp.
#include <catch2/catch.hpp>
#include <csignal>
#include <thread>

#include "../unit/test_util.hpp"
#include "common/sha256.hpp"
#include "s3/curl_s3_sink.hpp"
#include "training_output/error.hpp"

using namespace training_output;

namespace {

// Runs fake_s3.py with a script; stops it at scope exit.
class FakeS3 {
public:
    explicit FakeS3(const std::string& script_json) {
        tdo_test::write_file(dir_ / "script.json", script_json);
        pid_ = tdo_test::spawn_server(
            {TDO_TEST_PYTHON, TDO_TEST_FAKE_S3, dir_ / "script.json", dir_ / "log.jsonl", dir_ / "port"}, dir_ / "port",
            port_);
        REQUIRE(pid_ > 0);
    }
    ~FakeS3() {
        ::kill(pid_, SIGTERM);
        tdo_test::wait_for(pid_);
    }
    std::string endpoint() const { return "http://127.0.0.1:" + port_; }
    std::vector<rapidjson::Document> requests() const {
        std::vector<rapidjson::Document> out;
        for (const auto& line : tdo_test::lines_of(tdo_test::read_file(dir_ / "log.jsonl")))
            out.push_back(tdo_test::parse(line));
        return out;
    }

private:
    tdo_test::TempDir dir_;
    pid_t pid_ = -1;
    std::string port_;
};

S3SinkOptions options(const std::string& endpoint) {
    S3SinkOptions o;
    o.endpoint_url = endpoint;
    o.bucket = "bucket";
    o.credentials = sigv4::Credentials{"AKIDFAKE", "fake-secret-value-42", ""};
    o.conditional_writes = ConditionalWrites::On;  // no probe: every request is the test's
    o.native_append = NativeAppend::Off;
    o.retry_base = std::chrono::milliseconds(1);
    o.retry_max = std::chrono::milliseconds(5);
    o.request_timeout = std::chrono::milliseconds(2000);
    return o;
}

std::string header(const rapidjson::Document& req, const char* name) {
    const auto& h = req["headers"];
    return h.HasMember(name) ? h[name].GetString() : "";
}

}  // namespace

TEST_CASE("S3 client: 500 and SlowDown are retried, then the answer is read", "[unit][s3]") {
    FakeS3 fake(R"([{"status":500,"body":"<Error><Code>InternalError</Code></Error>"},
                   {"status":503,"body":"<Error><Code>SlowDown</Code><Message>Reduce your request rate.</Message></Error>"},
                   {"status":200,"headers":{"ETag":"\"abc\"","Content-Length":"5","Last-Modified":"Wed, 25 Nov 2026 12:11:58 GMT"},"body":"hello"}])");
    CurlS3Sink sink(options(fake.endpoint()));
    SinkResponse r = sink.get("k");
    REQUIRE(r.ok());
    CHECK(r.body == "hello");
    CHECK(r.etag == "abc");
    CHECK(r.last_modified == 1795608718);
    CHECK(fake.requests().size() == 3);
    CHECK(sink.stats().retries == 2);
}

TEST_CASE("S3 client: auth errors are not retried and name S3's code", "[unit][s3]") {
    FakeS3 fake(
        R"([{"status":403,"body":"<Error><Code>SignatureDoesNotMatch</Code><Message>The request signature we calculated does not match</Message><RequestId>R1</RequestId></Error>"}])");
    CurlS3Sink sink(options(fake.endpoint()));
    SinkResponse r = sink.get("k");
    CHECK(r.status == SinkStatus::Auth);
    CHECK(r.error.code == "SignatureDoesNotMatch");
    CHECK(r.error.request_id == "R1");
    CHECK_THAT(r.describe(), Catch::Contains("HTTP 403") && Catch::Contains("SignatureDoesNotMatch"));
    CHECK(fake.requests().size() == 1);
}

TEST_CASE("S3 client: an error inside a 200 is an error", "[unit][s3]") {
    FakeS3 fake(
        R"([{"status":200,"body":"<?xml version=\"1.0\"?>\n<Error><Code>InternalError</Code><Message>try again</Message></Error>"},
                   {"status":200,"body":"<CompleteMultipartUploadResult><ETag>&quot;e-2&quot;</ETag></CompleteMultipartUploadResult>"}])");
    CurlS3Sink sink(options(fake.endpoint()));
    SinkResponse r = sink.complete_multipart("k", "u1", {{1, "a"}, {2, "b"}}, WriteConditions{});
    REQUIRE(r.ok());
    CHECK(r.etag == "e-2");
    auto reqs = fake.requests();
    REQUIRE(reqs.size() == 2);
    CHECK(std::string(reqs[0]["method"].GetString()) == "POST");
    CHECK(std::string(reqs[0]["query"].GetString()) == "uploadId=u1");

    SECTION("a permanent error inside a 200 is not retried") {
        FakeS3 fake2(R"([{"status":200,"body":"<Error><Code>InvalidPart</Code></Error>"}])");
        CurlS3Sink sink2(options(fake2.endpoint()));
        SinkResponse bad = sink2.complete_multipart("k", "u1", {{1, "a"}}, WriteConditions{});
        CHECK(bad.status == SinkStatus::Fatal);
        CHECK(bad.error.code == "InvalidPart");
        CHECK(fake2.requests().size() == 1);
    }
}

TEST_CASE("S3 client: UploadPartCopy without a CopyPartResult is not a copy", "[unit][s3]") {
    FakeS3 fake(R"([{"status":200,"headers":{"ETag":"\"d41d8cd98f00b204e9800998ecf8427e\""}}])");
    CurlS3Sink sink(options(fake.endpoint()));
    SinkResponse r = sink.upload_part_copy("k", "u1", 1, "k", "abc", std::nullopt);
    CHECK(r.status == SinkStatus::NotImplemented);
    auto reqs = fake.requests();
    REQUIRE(reqs.size() == 1);
    CHECK(header(reqs[0], "x-amz-copy-source") == "/bucket/k");
    CHECK(header(reqs[0], "x-amz-copy-source-if-match") == "\"abc\"");
}

TEST_CASE("S3 client: RequestTimeTooSkewed corrects the clock", "[unit][s3]") {
    FakeS3 fake(
        R"([{"status":403,"body":"<Error><Code>RequestTimeTooSkewed</Code><RequestTime>x</RequestTime><ServerTime>2040-01-01T00:00:00Z</ServerTime></Error>"},
                   {"status":200,"headers":{"ETag":"\"e\""}}])");
    CurlS3Sink sink(options(fake.endpoint()));
    SinkResponse r = sink.get("k");
    REQUIRE(r.ok());
    auto reqs = fake.requests();
    REQUIRE(reqs.size() == 2);
    CHECK(header(reqs[0], "x-amz-date").substr(0, 4) != "2040");
    CHECK(header(reqs[1], "x-amz-date").substr(0, 8) == "20400101");

    SECTION("a HEAD has no error body: the server's Date tells") {
        FakeS3 fake2(R"([{"status":403,"headers":{"Date":"Sun, 01 Jan 2040 00:00:00 GMT"}},
                        {"status":200,"headers":{"ETag":"\"e\""}}])");
        CurlS3Sink sink2(options(fake2.endpoint()));
        REQUIRE(sink2.head("k").ok());
        auto reqs2 = fake2.requests();
        REQUIRE(reqs2.size() == 2);
        CHECK(header(reqs2[1], "x-amz-date").substr(0, 8) == "20400101");
    }
}

TEST_CASE("S3 client: a conditional write that is retried after an unknown outcome reports it unknown", "[unit][s3]") {
    // The first PUT may have landed (500); the retry's 412 then proves nothing.
    FakeS3 fake(R"([{"status":500,"body":"<Error><Code>InternalError</Code></Error>"},
                   {"status":412,"body":"<Error><Code>PreconditionFailed</Code></Error>"}])");
    CurlS3Sink sink(options(fake.endpoint()));
    WriteConditions c;
    c.if_none_match_any = true;
    SinkResponse r = sink.put("k", "line\n", ObjectAttributes{}, c);
    CHECK(r.status == SinkStatus::Transient);
    CHECK_THAT(r.describe(), Catch::Contains("outcome is unknown"));
}

TEST_CASE("S3 client: timeouts and refused connections are transient", "[unit][s3]") {
    FakeS3 fake(R"([{"status":200,"delay_ms":1500}])");
    S3SinkOptions o = options(fake.endpoint());
    o.request_timeout = std::chrono::milliseconds(300);
    o.max_attempts = 2;
    CurlS3Sink sink(o);
    SinkResponse r = sink.head("k");
    CHECK(r.status == SinkStatus::Transient);
    CHECK(r.http_status == 0);
    CHECK_THAT(r.detail, Catch::Contains("HeadObject"));

    S3SinkOptions closed = options("http://127.0.0.1:9");  // discard port: nothing listens
    closed.max_attempts = 2;
    CurlS3Sink nowhere(closed);
    SinkResponse n = nowhere.get("k");
    CHECK(n.status == SinkStatus::Transient);
    CHECK(nowhere.stats().requests == 2);
}

TEST_CASE("S3 client: requests are signed, with the payload hash, and never carry the secret", "[unit][s3]") {
    FakeS3 fake(R"([{"status":200,"headers":{"ETag":"\"e1\""}}])");
    CurlS3Sink sink(options(fake.endpoint()));
    ObjectAttributes a;
    a.metadata = {{"Generator", "training_output"}};
    WriteConditions c;
    c.if_match = "prev";
    REQUIRE(sink.put("dir/a b+c.jsonl", "{\"x\":1}\n", a, c).ok());
    auto reqs = fake.requests();
    REQUIRE(reqs.size() == 1);
    const auto& q = reqs[0];
    CHECK(std::string(q["path"].GetString()) == "/bucket/dir/a%20b%2Bc.jsonl");
    CHECK(header(q, "x-amz-content-sha256") == crypto::hex(crypto::sha256("{\"x\":1}\n")));
    CHECK(header(q, "content-type") == "application/jsonl");
    CHECK(header(q, "x-amz-meta-generator") == "training_output");
    CHECK(header(q, "if-match") == "\"prev\"");
    std::string auth = header(q, "authorization");
    CHECK_THAT(auth, Catch::StartsWith("AWS4-HMAC-SHA256 Credential=AKIDFAKE/"));
    CHECK_THAT(auth, Catch::Contains("if-match") && Catch::Contains("x-amz-meta-generator") &&
                         Catch::Contains("x-amz-content-sha256"));
    for (auto& m : q["headers"].GetObject()) CHECK_THAT(m.value.GetString(), !Catch::Contains("fake-secret"));
    CHECK(q["body_size"].GetInt() == 8);
}

TEST_CASE("S3 client: a server that only matches bare ETags gets them", "[unit][s3]") {
    // As Ceph RGW: 412 for the quoted form of the current ETag, 200 for the bare one.
    FakeS3 fake(R"([{"status":412,"body":"<Error><Code>PreconditionFailed</Code></Error>"},
                   {"status":200,"headers":{"ETag":"\"cur\""}},
                   {"status":200,"headers":{"ETag":"\"next\""}},
                   {"status":200,"headers":{"ETag":"\"after\""}}])");
    CurlS3Sink sink(options(fake.endpoint()));
    WriteConditions c;
    c.if_match = "cur";
    SinkResponse r = sink.put("k", "x\n", ObjectAttributes{}, c);
    REQUIRE(r.ok());
    CHECK(r.etag == "next");
    c.if_match = "next";
    REQUIRE(sink.put("k", "y\n", ObjectAttributes{}, c).ok());
    auto reqs = fake.requests();
    REQUIRE(reqs.size() == 4);
    CHECK(header(reqs[0], "if-match") == "\"cur\"");
    CHECK(std::string(reqs[1]["method"].GetString()) == "HEAD");
    CHECK(header(reqs[2], "if-match") == "cur");
    CHECK(header(reqs[3], "if-match") == "next");  // remembered
}

TEST_CASE("S3 client: a Complete that takes any If-Match does not decide the ETag form", "[unit][s3]") {
    // As Ceph RGW: CompleteMultipartUpload ignores If-Match (200 to the
    // quoted form), PUT matches only the bare one. A Complete that passed
    // once used to pin the quoted form, and every later conditional PUT
    // (leases) failed with 412.
    FakeS3 fake(
        R"([{"status":200,"body":"<CompleteMultipartUploadResult><ETag>&quot;done&quot;</ETag></CompleteMultipartUploadResult>"},
                   {"status":412,"body":"<Error><Code>PreconditionFailed</Code></Error>"},
                   {"status":200,"headers":{"ETag":"\"cur\""}},
                   {"status":200,"headers":{"ETag":"\"next\""}}])");
    CurlS3Sink sink(options(fake.endpoint()));
    WriteConditions c;
    c.if_match = "old";
    REQUIRE(sink.complete_multipart("k", "u1", {{1, "p1"}}, c).ok());
    c.if_match = "cur";
    SinkResponse r = sink.put("k", "x\n", ObjectAttributes{}, c);
    REQUIRE(r.ok());
    auto reqs = fake.requests();
    REQUIRE(reqs.size() == 4);
    CHECK(header(reqs[0], "if-match") == "\"old\"");
    CHECK(header(reqs[1], "if-match") == "\"cur\"");
    CHECK(std::string(reqs[2]["method"].GetString()) == "HEAD");
    CHECK(header(reqs[3], "if-match") == "cur");
}

TEST_CASE("S3 client: configuration errors", "[unit][s3][slow]") {
    S3SinkOptions o = options("ftp://x");
    CHECK_THROWS_WITH(CurlS3Sink(o), Catch::Contains("s3_endpoint_url"));
    o = options("http://127.0.0.1:9");
    o.bucket.clear();
    CHECK_THROWS_WITH(CurlS3Sink(o), Catch::Contains("s3_bucket_name"));
    o = options("http://127.0.0.1:9");
    o.credentials.secret_access_key.clear();
    CHECK_THROWS_WITH(CurlS3Sink(o), Catch::Contains("s3_secret_key"));
    o = options("http://user:pw@127.0.0.1:9");
    CHECK_THROWS_WITH(CurlS3Sink(o), Catch::Contains("not in the URL"));
    o = options("http://127.0.0.1:9");
    o.bucket = "has.dots";
    o.addressing = AddressingStyle::Virtual;
    CHECK_THROWS_WITH(CurlS3Sink(o), Catch::Contains("s3_addressing_style"));
}

TEST_CASE("S3 client: a server-side copy may send nothing for longer than the stall limit, a PUT may not",
          "[unit][s3][slow]") {
    // The server answers after 2.5 s of silence; the stall limit is 1 s.
    FakeS3 fake(R"([{"status":200,"delay_ms":2500,"body":"<CopyPartResult><ETag>\"e1\"</ETag></CopyPartResult>"},
                    {"status":200,"delay_ms":2500,"headers":{"ETag":"\"e2\""}}])");
    S3SinkOptions o = options(fake.endpoint());
    o.low_speed_time = std::chrono::seconds(1);
    o.request_timeout = std::chrono::milliseconds(5000);
    o.max_attempts = 1;
    CurlS3Sink sink(o);
    SinkResponse copy = sink.upload_part_copy("k", "u1", 1, "k", "", std::nullopt);
    INFO(copy.describe());
    CHECK(copy.ok());
    CHECK(copy.etag == "e1");
    SinkResponse put = sink.put("k", "x\n", ObjectAttributes{}, WriteConditions{});
    INFO(put.describe());
    CHECK(put.status == SinkStatus::Transient);  // a stalled transfer
}
