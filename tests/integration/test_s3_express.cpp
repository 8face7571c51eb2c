// S3 Express One Zone directory buckets (CreateSession, appends with
// x-amz-write-offset-bytes), against tests/integration/fake_s3_express.py: a
// stateful stand-in that follows AWS's documentation (AWS itself is not
// reachable from the test machines; this path is untested against it).
#include <catch2/catch.hpp>
#include <csignal>
#include <filesystem>
#include <thread>

#include "../unit/sink_conformance.hpp"
#include "../unit/test_util.hpp"
#include "append/object_appender.hpp"
#include "s3/curl_s3_sink.hpp"
#include "training_output/error.hpp"
#include "training_output/training_output.hpp"

using namespace training_output;

namespace {

const char* kBucket = "tdo-test--use1-az4--x-s3";
const char* kAccessKey = "AKIDEXPRESS";
const char* kSecret = "express-secret-value-77";

class FakeExpress {
public:
    explicit FakeExpress(std::vector<std::string> extra = {}) {
        std::vector<std::string> argv = {TDO_TEST_PYTHON, TDO_TEST_FAKE_S3_EXPRESS, dir_ / "log.jsonl", dir_ / "port",
                                         kAccessKey};
        argv.insert(argv.end(), extra.begin(), extra.end());
        pid_ = tdo_test::spawn_server(argv, dir_ / "port", port_);
        REQUIRE(pid_ > 0);
    }
    ~FakeExpress() {
        ::kill(pid_, SIGTERM);
        tdo_test::wait_for(pid_);
    }
    std::string endpoint() const { return "http://127.0.0.1:" + port_; }
    std::vector<rapidjson::Document> requests() const {
        std::vector<rapidjson::Document> out;
        if (!std::filesystem::exists(dir_ / "log.jsonl")) return out;
        for (const auto& line : tdo_test::lines_of(tdo_test::read_file(dir_ / "log.jsonl"))) {
            out.push_back(tdo_test::parse(line));
        }
        return out;
    }
    int count(const std::function<bool(const rapidjson::Document&)>& what) const {
        int n = 0;
        for (const auto& r : requests()) n += what(r) ? 1 : 0;
        return n;
    }

private:
    tdo_test::TempDir dir_;
    pid_t pid_ = -1;
    std::string port_;
};

S3SinkOptions options(const std::string& endpoint) {
    S3SinkOptions o;
    o.endpoint_url = endpoint;
    o.bucket = kBucket;
    o.credentials = sigv4::Credentials{kAccessKey, kSecret, ""};
    o.retry_base = std::chrono::milliseconds(1);
    o.retry_max = std::chrono::milliseconds(5);
    o.request_timeout = std::chrono::milliseconds(5000);
    o.probe_wait = std::chrono::seconds(30);  // the tests read what the probe found
    return o;
}

bool is_create_session(const rapidjson::Document& r) {
    return std::string(r["query"].GetString()).rfind("session", 0) == 0;
}
bool is_offset_put(const rapidjson::Document& r) { return r["offset"].IsString(); }

std::string writer_config(const FakeExpress& fake, const std::string& dir, const std::string& extra = "") {
    return "{\"s3_endpoint_url\":\"" + fake.endpoint() + "\",\"s3_bucket_name\":\"" + kBucket +
           "\",\"s3_access_key\":\"" + kAccessKey + "\",\"s3_secret_key\":\"" + kSecret + "\",\"output_dir\":\"" + dir +
           "\",\"log_level\":\"off\",\"dedup_store\":\"memory\",\"flush_interval_ms\":20" + extra + "}";
}

const std::string kKey = "training/metabolic_diabetes/2025/11/health_journal_2025_11.jsonl";

}  // namespace

TEST_CASE("S3 Express: a directory bucket's session, S3 semantics, and appends at the object's size",
          "[unit][s3][s3express][slow]") {
    FakeExpress fake;
    CurlS3Sink sink(options(fake.endpoint()));
    // The probe finds appends by offset, enforced (and, as AWS documents it, atomic: no lease).
    const SinkCapabilities caps = sink.capabilities();
    CHECK(caps.native_append);
    CHECK(caps.native_append_atomic);
    CHECK(caps.conditional_writes);
    CHECK(caps.conditional_complete);
    tdo_test::check_sink_conformance(sink, {"", true, true, true, 5u << 20});

    SinkResponse a = sink.append_at("log.jsonl", "one\n", 0, ObjectAttributes{});
    REQUIRE(a.ok());
    CHECK(a.size == 4);
    SinkResponse b = sink.append_at("log.jsonl", "two\n", 4, ObjectAttributes{});
    REQUIRE(b.ok());
    CHECK(b.size == 8);
    SinkResponse stale = sink.append_at("log.jsonl", "late\n", 4, ObjectAttributes{});
    CHECK(stale.status == SinkStatus::Conflict);
    CHECK(stale.error.code == "InvalidWriteOffset");
    CHECK(sink.get("log.jsonl").body == "one\ntwo\n");
    CHECK(sink.head("log.jsonl").appendable);
    // One session for all of it; every other request carried its token.
    CHECK(fake.count(is_create_session) == 1);
    CHECK(fake.count([](const rapidjson::Document& r) { return !is_create_session(r) && !r["session"].GetBool(); }) ==
          0);
    CHECK(fake.count([](const rapidjson::Document& r) { return r["status"].GetInt() == 403; }) == 0);
}

TEST_CASE("S3 Express: a session is renewed before it expires", "[unit][s3][s3express]") {
    // Sessions of 62 s are renewed after 2 s (a minute before they expire).
    FakeExpress fake({"--session-seconds", "62"});
    CurlS3Sink sink(options(fake.endpoint()));
    REQUIRE(sink.put("a", "1", ObjectAttributes{}, WriteConditions{}).ok());
    const int first = fake.count(is_create_session);
    std::this_thread::sleep_for(std::chrono::milliseconds(2500));
    REQUIRE(sink.put("b", "2", ObjectAttributes{}, WriteConditions{}).ok());
    CHECK(fake.count(is_create_session) == first + 1);
}

TEST_CASE("S3 Express: a wrong access key is an authentication error at open, never showing the secret",
          "[unit][s3][s3express]") {
    FakeExpress fake;
    S3SinkOptions o = options(fake.endpoint());
    o.credentials.access_key_id = "AKIDWRONG";
    try {
        CurlS3Sink sink(o);
        FAIL("expected an error");
    } catch (const Error& e) {
        CHECK(e.code() == ErrorCode::Auth);
        CHECK_THAT(e.what(), Catch::Contains("InvalidAccessKeyId") && !Catch::Contains(kSecret));
    }
}

TEST_CASE("S3 Express: writers append natively without a lease: 4 processes, every line once",
          "[unit][s3][s3express][writer][slow]") {
    FakeExpress fake;
    tdo_test::TempDir dir;
    const std::string config = writer_config(fake, dir.path());
    std::vector<pid_t> pids;
    for (int p = 0; p < 4; ++p) {
        pids.push_back(
            tdo_test::spawn({TDO_TEST_WRITER, config, "w" + std::to_string(p), "200", "0", "BloodGlucoseRecord"}));
        REQUIRE(pids.back() > 0);
    }
    for (pid_t pid : pids) CHECK(tdo_test::wait_for(pid) == 0);
    CurlS3Sink reader(options(fake.endpoint()));
    SinkResponse g = reader.get(kKey);
    REQUIRE(g.ok());
    const auto lines = tdo_test::lines_of(g.body);
    std::set<std::string> distinct(lines.begin(), lines.end());
    CHECK(lines.size() == 800);
    CHECK(distinct.size() == 800);
    // Appends by offset (with conflicts between the writers), no lease, no copy.
    CHECK(fake.count(is_offset_put) > 4);
    CHECK(fake.count([](const rapidjson::Document& r) {
        return std::string(r["path"].GetString()).find(".training_output/leases") != std::string::npos;
    }) == 0);
    CHECK(fake.count([](const rapidjson::Document& r) { return r["copy_source"].IsString(); }) == 0);
}

TEST_CASE("S3 Express: an object at its part limit is appended to once by copy, then natively again",
          "[unit][s3][s3express][writer][slow]") {
    FakeExpress fake({"--max-parts", "5"});
    tdo_test::TempDir dir;
    {
        TrainingOutput w(Config::from_json(writer_config(fake, dir.path())));
        for (int i = 0; i < 16; ++i) {
            w.generate("Glucose narrative " + std::to_string(i) + ".", tdo_test::message_json("BloodGlucoseRecord"),
                       tdo_test::result_json());
            w.flush();  // one append each
        }
        w.close();
    }
    CurlS3Sink reader(options(fake.endpoint()));
    const auto lines = tdo_test::lines_of(reader.get(kKey).body);
    REQUIRE(lines.size() == 16);
    for (int i = 0; i < 16; ++i) {
        CHECK(std::string(tdo_test::parse(lines[i])["output"].GetString()) ==
              "Glucose narrative " + std::to_string(i) + ".");
    }
    // 400 TooManyParts, then a rewrite of the object (below the multipart
    // threshold: GET + conditional PUT), then appends by offset again.
    auto code_is = [](const char* code) {
        return [code](const rapidjson::Document& r) {
            return r["code"].IsString() && std::string(r["code"].GetString()) == code;
        };
    };
    CHECK(fake.count(code_is("TooManyParts")) >= 2);
    CHECK(fake.count([](const rapidjson::Document& r) {
        return std::string(r["method"].GetString()) == "PUT" && r["offset"].IsNull() &&
               std::string(r["path"].GetString()).find("health_journal") != std::string::npos;
    }) >= 2);  // the rewrites
    CHECK(fake.count(is_offset_put) >= 12);
}
