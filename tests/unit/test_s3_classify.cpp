// What an S3 answer means (lib/s3/classify.hpp), as a table: each row an
// answer the client may get and what the library makes of it. The client's
// retries and its "unknown outcome" rule over these are tested over HTTP
// (tests/integration/test_s3_faults.cpp and the fault proxy).
#include <catch2/catch.hpp>

#include <ctime>
#include <map>
#include <optional>
#include <string>

#include "s3/classify.hpp"

using namespace training_output;
using s3::Op;

namespace {

const std::int64_t kNow = 1'800'000'000;  // the client's corrected clock in every row

std::string http_date(std::int64_t t) {
    const std::time_t tt = static_cast<std::time_t>(t);
    std::tm tm{};
    gmtime_r(&tt, &tm);
    char buf[64];
    std::strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    return buf;
}

std::string error_doc(const std::string& code, const std::string& request_id = "") {
    return "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>" + code + "</Code><Message>m</Message>" +
           (request_id.empty() ? "" : "<RequestId>" + request_id + "</RequestId>") + "</Error>";
}

struct Row {
    const char* what;
    Op op;
    int status;
    std::map<std::string, std::string> headers;
    std::string body;
    SinkStatus expect;
    std::string expect_code;  // the S3 error code the answer is given ("" for none)
    std::optional<ByteRange> range = std::nullopt;
    int curl_code = 0;
};

}  // namespace

TEST_CASE("S3 answers: the table of what each one means", "[unit][s3][classify]") {
    const std::map<std::string, std::string> etag{{"etag", "\"abc\""}};
    const std::map<std::string, std::string> range_ok{{"etag", "\"abc\""}, {"content-range", "bytes 10-13/100"}};
    const std::map<std::string, std::string> date_now{{"date", http_date(kNow + 30)}};
    const std::map<std::string, std::string> date_far{{"date", http_date(kNow + 3600)}};
    const ByteRange r10_13{10, 13};
    const Row rows[] = {
        // No HTTP answer.
        {"a connection refused", Op::Put, 0, {}, "", SinkStatus::Transient, "", std::nullopt, 7},
        {"a reset", Op::Get, 0, {}, "", SinkStatus::Transient, "", std::nullopt, 56},
        {"a TLS certificate that does not verify", Op::Head, 0, {}, "", SinkStatus::Fatal, "", std::nullopt, 60},
        // 2xx.
        {"a PUT answered 200", Op::Put, 200, etag, "", SinkStatus::Ok, ""},
        {"a HEAD with its ETag", Op::Head, 200, etag, "", SinkStatus::Ok, ""},
        {"a HEAD without an ETag says nothing", Op::Head, 200, {}, "", SinkStatus::Transient, ""},
        {"a GET without an ETag says nothing", Op::Get, 200, {}, "x", SinkStatus::Transient, ""},
        {"a ranged GET with exactly the bytes asked for", Op::Get, 206, range_ok, "abcd", SinkStatus::Ok, "", r10_13},
        {"a ranged GET answered 200 (the whole object)", Op::Get, 200, range_ok, "abcd", SinkStatus::Transient, "",
         r10_13},
        {"a ranged GET with fewer bytes (truncated)", Op::Get, 206, range_ok, "abc", SinkStatus::Transient, "", r10_13},
        {"a ranged GET of other bytes",
         Op::Get,
         206,
         {{"etag", "\"abc\""}, {"content-range", "bytes 11-14/100"}},
         "abcd",
         SinkStatus::Transient,
         "",
         r10_13},
        {"InternalError inside a 200",
         Op::Complete,
         200,
         {},
         error_doc("InternalError"),
         SinkStatus::Transient,
         "InternalError"},
        {"SlowDown inside a 200",
         Op::UploadPartCopy,
         200,
         {},
         error_doc("SlowDown"),
         SinkStatus::Transient,
         "SlowDown"},
        {"an error without a code inside a 200", Op::Complete, 200, {}, error_doc(""), SinkStatus::Transient, ""},
        {"PreconditionFailed inside a 200",
         Op::Complete,
         200,
         {},
         error_doc("PreconditionFailed"),
         SinkStatus::PreconditionFailed,
         "PreconditionFailed"},
        {"AccessDenied inside a 200",
         Op::Complete,
         200,
         {},
         error_doc("AccessDenied"),
         SinkStatus::Fatal,
         "AccessDenied"},
        // 4xx.
        {"NoSuchKey", Op::Get, 404, {}, error_doc("NoSuchKey"), SinkStatus::NotFound, "NoSuchKey"},
        {"a HEAD's 404 (no body)", Op::Head, 404, {}, "", SinkStatus::NotFound, "NotFound"},
        {"NoSuchBucket", Op::Put, 404, {}, error_doc("NoSuchBucket"), SinkStatus::Fatal, "NoSuchBucket"},
        {"412 without a body", Op::Put, 412, {}, "", SinkStatus::PreconditionFailed, "PreconditionFailed"},
        {"409 (another append won)",
         Op::Append,
         409,
         {},
         error_doc("PositionNotEqualToLength"),
         SinkStatus::Conflict,
         "PositionNotEqualToLength"},
        {"a HEAD's 403, clocks agree", Op::Head, 403, date_now, "", SinkStatus::Auth, "AccessDenied"},
        {"a HEAD's 403 from a server an hour away", Op::Head, 403, date_far, "", SinkStatus::Transient,
         "RequestTimeTooSkewed"},
        {"RequestTimeTooSkewed",
         Op::Put,
         403,
         {},
         error_doc("RequestTimeTooSkewed"),
         SinkStatus::Transient,
         "RequestTimeTooSkewed"},
        {"SignatureDoesNotMatch", Op::Put, 403, date_far, error_doc("SignatureDoesNotMatch"), SinkStatus::Auth,
         "SignatureDoesNotMatch"},
        {"RequestTimeout", Op::Put, 400, {}, error_doc("RequestTimeout"), SinkStatus::Transient, "RequestTimeout"},
        {"XAmzContentSHA256Mismatch",
         Op::Put,
         400,
         {},
         error_doc("XAmzContentSHA256Mismatch"),
         SinkStatus::Transient,
         "XAmzContentSHA256Mismatch"},
        {"BadDigest", Op::RemoveMany, 400, {}, error_doc("BadDigest"), SinkStatus::Transient, "BadDigest"},
        {"IncompleteBody",
         Op::UploadPart,
         400,
         {},
         error_doc("IncompleteBody"),
         SinkStatus::Transient,
         "IncompleteBody"},
        {"ExpiredToken", Op::Put, 400, {}, error_doc("ExpiredToken"), SinkStatus::Auth, "ExpiredToken"},
        {"InvalidAccessKeyId",
         Op::Put,
         400,
         {},
         error_doc("InvalidAccessKeyId"),
         SinkStatus::Auth,
         "InvalidAccessKeyId"},
        {"InvalidToken", Op::Put, 400, {}, error_doc("InvalidToken"), SinkStatus::Auth, "InvalidToken"},
        {"AuthorizationHeaderMalformed",
         Op::Put,
         400,
         {},
         error_doc("AuthorizationHeaderMalformed"),
         SinkStatus::Auth,
         "AuthorizationHeaderMalformed"},
        {"InvalidArgument", Op::Put, 400, {}, error_doc("InvalidArgument"), SinkStatus::Fatal, "InvalidArgument"},
        {"InvalidWriteOffset (read by the S3 Express append)",
         Op::Append,
         400,
         {},
         error_doc("InvalidWriteOffset"),
         SinkStatus::Fatal,
         "InvalidWriteOffset"},
        {"405 (no DeleteObjects)",
         Op::RemoveMany,
         405,
         {},
         error_doc("MethodNotAllowed"),
         SinkStatus::Fatal,
         "MethodNotAllowed"},
        {"a redirect", Op::Put, 301, {}, error_doc("PermanentRedirect"), SinkStatus::Fatal, "PermanentRedirect"},
        {"429", Op::Put, 429, {}, "", SinkStatus::Transient, ""},
        // 5xx.
        {"500", Op::Put, 500, {}, error_doc("InternalError"), SinkStatus::Transient, "InternalError"},
        {"503 SlowDown", Op::UploadPart, 503, {}, error_doc("SlowDown"), SinkStatus::Transient, "SlowDown"},
        {"a 502 from a proxy, HTML body", Op::Head, 502, {}, "<html>bad gateway</html>", SinkStatus::Transient, ""},
        {"501 (not implemented)",
         Op::Append,
         501,
         {},
         error_doc("NotImplemented"),
         SinkStatus::NotImplemented,
         "NotImplemented"},
    };
    for (const Row& row : rows) {
        INFO(row.what);
        http::Response resp;
        resp.status = row.status;
        resp.headers = row.headers;
        resp.body = row.body;
        resp.curl_code = row.curl_code;
        resp.curl_error = row.curl_code ? "curl says no" : "";
        const SinkResponse r = s3::classify(row.op, resp, row.range, kNow);
        CHECK(sink_status_name(r.status) == std::string(sink_status_name(row.expect)));
        CHECK(r.error.code == row.expect_code);
        CHECK(r.http_status == row.status);
        // Whatever it is, it is said in one line that names the operation or the answer.
        if (!r.ok()) CHECK(!r.describe().empty());
    }
}

TEST_CASE("S3 answers: the request id, the server's time and the detail", "[unit][s3][classify]") {
    http::Response resp;
    resp.status = 500;
    resp.headers = {{"x-amz-request-id", "from-header"}, {"date", http_date(kNow)}};
    SECTION("the header's request id, and the server's time from its Date") {
        const SinkResponse r = s3::classify(Op::Put, resp, std::nullopt, kNow);
        CHECK(r.error.request_id == "from-header");
        CHECK(r.server_time == kNow);
    }
    SECTION("an error document's request id wins over the header's") {
        resp.body = error_doc("InternalError", "from-body");
        const SinkResponse r = s3::classify(Op::Put, resp, std::nullopt, kNow);
        CHECK(r.error.request_id == "from-body");
        CHECK(r.error.message == "m");
    }
    SECTION("no answer: the detail names the operation and the transport's error") {
        resp = http::Response{};
        resp.curl_code = 28;
        resp.curl_error = "Operation timed out";
        const SinkResponse r = s3::classify(Op::Complete, resp, std::nullopt, kNow);
        CHECK(r.status == SinkStatus::Transient);
        CHECK(r.detail == "CompleteMultipartUpload: Operation timed out");
    }
    SECTION("every operation has its S3 name") {
        for (int op = 0; op < s3::kOps; ++op) CHECK(std::string(s3::op_name(static_cast<Op>(op))) != "?");
        CHECK(s3::conditional_write(Op::Put));
        CHECK(s3::conditional_write(Op::Complete));
        CHECK(s3::conditional_write(Op::Append));
        CHECK_FALSE(s3::conditional_write(Op::UploadPart));
    }
}
