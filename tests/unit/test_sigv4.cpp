// The SigV4 signer against the AWS SigV4 test suite (the cases that apply to
// S3, carried in tests/data/sigv4/), the worked examples of the Amazon S3 API
// reference, and the S3 rules one by one. The comparison with botocore is
// tests/python/test_sigv4_botocore.py.
#include <rapidjson/document.h>
#include <catch2/catch.hpp>

#include <atomic>
#include <map>
#include <thread>

#include "format/formatter.hpp"
#include "s3/sigv4.hpp"
#include "test_util.hpp"
#include "training_output/error.hpp"

using namespace training_output;
using namespace training_output::sigv4;

namespace {

using Pairs = std::vector<std::pair<std::string, std::string>>;

constexpr const char* kEmpty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

std::string str(const rapidjson::Value& v, const char* key) {
    const auto& m = v[key];
    return {m.GetString(), m.GetStringLength()};
}

Pairs pairs(const rapidjson::Value& v, const char* key) {
    Pairs out;
    for (const auto& p : v[key].GetArray()) {
        out.emplace_back(std::string(p[0].GetString(), p[0].GetStringLength()),
                         std::string(p[1].GetString(), p[1].GetStringLength()));
    }
    return out;
}

const rapidjson::Document& suite() {
    static const rapidjson::Document doc = [] {
        rapidjson::Document d;
        const std::string text = tdo_test::read_file(TDO_SOURCE_DIR "/tests/data/sigv4/aws-test-suite.json");
        d.Parse(text.data(), text.size());
        if (d.HasParseError() || !d.IsObject()) throw std::runtime_error("aws-test-suite.json does not parse");
        return d;
    }();
    return doc;
}

// One case of the suite, signed the S3 way.
Signed sign_case(const rapidjson::Value& c, bool with_token = true) {
    Credentials creds{str(c, "access_key_id"), str(c, "secret_access_key"),
                      with_token ? str(c, "session_token") : std::string()};
    Options options;
    options.region = str(c, "region");
    options.service = str(c, "service");
    // "sign_body": the suite then adds x-amz-content-sha256, as S3 requires.
    options.content_sha256_header = c["sign_body"].GetBool();
    Request r;
    r.method = str(c, "method");
    r.host = str(c, "host");
    r.path = str(c, "path");
    r.query = pairs(c, "query");
    r.headers = pairs(c, "headers");
    r.payload_sha256 = hex_sha256(str(c, "payload"));
    return Signer(creds, options).sign(r, parse_iso8601(str(c, "timestamp")));
}

const rapidjson::Value* find_case(const char* list, const std::string& name) {
    for (const auto& c : suite()[list].GetArray()) {
        if (str(c, "name") == name) return &c;
    }
    return nullptr;
}

std::string header(const Signed& s, const std::string& name) {
    for (const auto& [n, v] : s.headers) {
        if (n == name) return v;
    }
    return "<absent>";
}

std::chrono::system_clock::time_point at(const char* iso) { return parse_iso8601(iso); }

// Line `n` (from 0) of a canonical request.
std::string line(const std::string& text, std::size_t n) {
    std::size_t begin = 0;
    for (std::size_t i = 0; i < n; ++i) begin = text.find('\n', begin) + 1;
    return text.substr(begin, text.find('\n', begin) - begin);
}

// The signed-headers line: the one before the payload hash, the last line.
std::string signed_headers_of(const std::string& creq) {
    const auto end = creq.rfind('\n');
    const auto begin = creq.rfind('\n', end - 1) + 1;
    return creq.substr(begin, end - begin);
}

// The S3 reference's examples: examplebucket, 2013-05-24, us-east-1.
Signer s3_example_signer() {
    return Signer({"AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", ""}, Options{});
}

Request example_request(std::string method, std::string path) {
    Request r;
    r.method = std::move(method);
    r.host = "examplebucket.s3.amazonaws.com";
    r.path = std::move(path);
    return r;
}

// The code of the Error that f throws; 0 (no ErrorCode) when it does not throw.
ErrorCode code_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const Error& e) {
        return e.code();
    }
    return static_cast<ErrorCode>(0);
}

}  // namespace

TEST_CASE("sigv4: uri_encode keeps only the unreserved bytes, upper-case hex, '/' on request", "[unit][sigv4]") {
    CHECK(uri_encode("", true) == "");
    CHECK(uri_encode("AZaz09-._~", true) == "AZaz09-._~");
    CHECK(uri_encode("a b", true) == "a%20b");
    CHECK(uri_encode("a+b=c&d", true) == "a%2Bb%3Dc%26d");
    CHECK(uri_encode("100%", true) == "100%25");
    CHECK(uri_encode("!'()*", true) == "%21%27%28%29%2A");  // what encodeURIComponent would leave
    CHECK(uri_encode("$@:,;?#[]", true) == "%24%40%3A%2C%3B%3F%23%5B%5D");
    CHECK(uri_encode("a/b/", false) == "a/b/");
    CHECK(uri_encode("a/b/", true) == "a%2Fb%2F");
    CHECK(uri_encode("\xC3\xA9", true) == "%C3%A9");                // é
    CHECK(uri_encode("\xF0\x9F\x98\x80", true) == "%F0%9F%98%80");  // a 4-byte emoji
    CHECK(uri_encode(std::string("a\0b", 3), true) == "a%00b");
    CHECK(uri_encode("\x7F\xFF", true) == "%7F%FF");
}

TEST_CASE("sigv4: hex_sha256 is lower-case hex SHA-256", "[unit][sigv4]") {
    CHECK(hex_sha256("") == kEmpty);
    CHECK(hex_sha256("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    CHECK(hex_sha256("Welcome to Amazon S3.") == "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072");
}

TEST_CASE("sigv4: AWS SigV4 test suite: the cases that apply to S3", "[unit][sigv4]") {
    const auto& cases = suite()["cases"];
    // Every case carried (see tests/data/sigv4/README.md): losing some silently would pass.
    REQUIRE(cases.Size() == 31);
    for (const auto& c : cases.GetArray()) {
        const std::string name = str(c, "name");
        INFO("case " << name << "\n" << str(c, "request_txt"));
        const Signed s = sign_case(c);
        CHECK(s.canonical_request == str(c, "canonical_request"));
        CHECK(s.string_to_sign == str(c, "string_to_sign"));
        CHECK(s.signature == str(c, "signature"));
        // The request line carries what was signed.
        const std::string creq = str(c, "canonical_request");
        CHECK(s.canonical_uri == line(creq, 1));
        CHECK(s.canonical_query == line(creq, 2));
        CHECK(s.amz_date == "20150830T123600Z");
        CHECK(header(s, "authorization") ==
              "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=" +
                  signed_headers_of(creq) + ", Signature=" + str(c, "signature"));
    }
}

TEST_CASE("sigv4: AWS SigV4 test suite: S3 does not normalize the path", "[unit][sigv4]") {
    const auto& normalized = suite()["normalized"];
    REQUIRE(normalized.Size() == 6);
    for (const auto& c : normalized.GetArray()) {
        const std::string name = str(c, "name");
        INFO("case " << name << "\n" << str(c, "request_txt"));
        const Signed s = sign_case(c);
        const std::string expected_normalized = str(c, "canonical_request");
        CHECK(s.canonical_uri == uri_encode(str(c, "path"), false));
        CHECK(s.canonical_uri != line(expected_normalized, 1));
        CHECK(s.canonical_request != expected_normalized);
        CHECK(s.signature != str(c, "signature"));
        // ... and signs what the suite's unnormalized twin expects instead.
        std::string twin_name = name;
        twin_name.replace(twin_name.rfind("-normalized"), std::string("-normalized").size(), "-unnormalized");
        const rapidjson::Value* twin = find_case("cases", twin_name);
        REQUIRE(twin != nullptr);
        CHECK(s.canonical_request == str(*twin, "canonical_request"));
        CHECK(s.signature == str(*twin, "signature"));
    }
}

TEST_CASE("sigv4: AWS SigV4 test suite: the session token is always signed", "[unit][sigv4]") {
    // post-sts-header-after adds the token after signing, unsigned; S3 signers
    // do not. With the same token we sign what post-sts-header-before expects.
    const auto& excluded = suite()["excluded"];
    REQUIRE(excluded.Size() == 1);
    const rapidjson::Value& after = excluded[0];
    REQUIRE(str(after, "name") == "post-sts-header-after");
    const rapidjson::Value* before = find_case("cases", "post-sts-header-before");
    REQUIRE(before != nullptr);
    const Signed s = sign_case(after);
    CHECK(s.canonical_request != str(after, "canonical_request"));
    CHECK(s.signature != str(after, "signature"));
    CHECK(s.canonical_request == str(*before, "canonical_request"));
    CHECK(s.signature == str(*before, "signature"));
    CHECK(header(s, "x-amz-security-token") == str(after, "session_token"));
    // Without a token, the "after" figures are those of a plain request.
    const Signed plain = sign_case(after, false);
    CHECK(plain.canonical_request == str(after, "canonical_request"));
    CHECK(plain.signature == str(after, "signature"));
    CHECK(header(plain, "x-amz-security-token") == "<absent>");
}

// Amazon S3 API Reference, "Signature Calculations for the Authorization
// Header: Transferring Payload in a Single Chunk (AWS Signature Version 4)",
// Examples: Signature Calculations.
TEST_CASE("sigv4: S3 reference example: GET Object with a Range header", "[unit][sigv4]") {
    Request r = example_request("GET", "/test.txt");
    r.headers = {{"Range", "bytes=0-9"}};
    const Signed s = s3_example_signer().sign(r, at("2013-05-24T00:00:00Z"));
    CHECK(s.canonical_request ==
          "GET\n/test.txt\n\n"
          "host:examplebucket.s3.amazonaws.com\n"
          "range:bytes=0-9\n"
          "x-amz-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n"
          "x-amz-date:20130524T000000Z\n\n"
          "host;range;x-amz-content-sha256;x-amz-date\n"
          "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    CHECK(s.string_to_sign ==
          "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n"
          "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972");
    CHECK(s.signature == "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
    CHECK(s.headers == Pairs{{"x-amz-date", "20130524T000000Z"},
                             {"x-amz-content-sha256", kEmpty},
                             {"authorization",
                              "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
                              "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
                              "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"}});
}

TEST_CASE("sigv4: S3 reference example: PUT Object", "[unit][sigv4]") {
    Request r = example_request("PUT", "/test$file.text");
    r.headers = {{"Date", "Fri, 24 May 2013 00:00:00 GMT"}, {"x-amz-storage-class", "REDUCED_REDUNDANCY"}};
    r.payload_sha256 = hex_sha256("Welcome to Amazon S3.");
    const Signed s = s3_example_signer().sign(r, at("2013-05-24T00:00:00Z"));
    CHECK(s.canonical_uri == "/test%24file.text");
    CHECK(s.canonical_request ==
          "PUT\n/test%24file.text\n\n"
          "date:Fri, 24 May 2013 00:00:00 GMT\n"
          "host:examplebucket.s3.amazonaws.com\n"
          "x-amz-content-sha256:44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072\n"
          "x-amz-date:20130524T000000Z\n"
          "x-amz-storage-class:REDUCED_REDUNDANCY\n\n"
          "date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class\n"
          "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072");
    CHECK(s.string_to_sign ==
          "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n"
          "9e0e90d9c76de8fa5b200d8c849cd5b8dc7a3be3951ddb7f6a76b4158342019d");
    CHECK(s.signature == "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd");
    CHECK(header(s, "x-amz-content-sha256") == "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072");
}

TEST_CASE("sigv4: S3 reference example: GET Bucket Lifecycle", "[unit][sigv4]") {
    Request r = example_request("GET", "/");
    r.query = {{"lifecycle", ""}};
    const Signed s = s3_example_signer().sign(r, at("2013-05-24T00:00:00Z"));
    CHECK(s.canonical_query == "lifecycle=");
    CHECK(s.canonical_request ==
          "GET\n/\nlifecycle=\n"
          "host:examplebucket.s3.amazonaws.com\n"
          "x-amz-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n"
          "x-amz-date:20130524T000000Z\n\n"
          "host;x-amz-content-sha256;x-amz-date\n"
          "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    CHECK(s.string_to_sign ==
          "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n"
          "9766c798316ff2757b517bc739a67f6213b4ab36dd5da2f94eaebf79c77395ca");
    CHECK(s.signature == "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543");
}

TEST_CASE("sigv4: S3 reference example: GET Bucket (List Objects)", "[unit][sigv4]") {
    Request r = example_request("GET", "/");
    r.query = {{"prefix", "J"}, {"max-keys", "2"}};  // out of order: the signer sorts
    const Signed s = s3_example_signer().sign(r, at("2013-05-24T00:00:00Z"));
    CHECK(s.canonical_query == "max-keys=2&prefix=J");
    CHECK(s.canonical_request ==
          "GET\n/\nmax-keys=2&prefix=J\n"
          "host:examplebucket.s3.amazonaws.com\n"
          "x-amz-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n"
          "x-amz-date:20130524T000000Z\n\n"
          "host;x-amz-content-sha256;x-amz-date\n"
          "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    CHECK(s.string_to_sign ==
          "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n"
          "df57d21db20da04d7fa30298dd4488ba3a2b47ca3a489c74750e0f1e7df1b9b7");
    CHECK(s.signature == "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7");
}

TEST_CASE("sigv4: the path is encoded once and never normalized", "[unit][sigv4]") {
    const Signer signer({"AK", "SK", ""});
    Request r;
    r.host = "127.0.0.1:7480";
    const auto uri = [&](const std::string& path) {
        r.path = path;
        return signer.sign(r, at("2025-11-18T10:30:00Z")).canonical_uri;
    };
    CHECK(uri("/bucket/training/a b.jsonl") == "/bucket/training/a%20b.jsonl");
    CHECK(uri("/bucket/a%20b") == "/bucket/a%2520b");  // decoded input: '%' is a character of the key
    CHECK(uri("/bucket/a+b=c&d") == "/bucket/a%2Bb%3Dc%26d");
    CHECK(uri("/bucket/../x/./y//z/") == "/bucket/../x/./y//z/");
    CHECK(uri("/bucket/x?y#z") == "/bucket/x%3Fy%23z");
    CHECK(uri("/b/\xF0\x9F\xA9\xBA.jsonl") == "/b/%F0%9F%A9%BA.jsonl");
    CHECK(uri("//") == "//");
    CHECK(code_of([&] { uri("bucket/key"); }) == ErrorCode::InvalidArgument);
    CHECK(code_of([&] { uri(""); }) == ErrorCode::InvalidArgument);
}

TEST_CASE("sigv4: the canonical query is encoded and sorted by name, then value", "[unit][sigv4]") {
    const Signer signer({"AK", "SK", ""});
    Request r;
    r.host = "s3.amazonaws.com";
    r.path = "/bucket";
    const auto query = [&](Pairs q) {
        r.query = std::move(q);
        return signer.sign(r, at("2025-11-18T10:30:00Z")).canonical_query;
    };
    CHECK(query({}) == "");
    CHECK(query({{"uploads", ""}}) == "uploads=");
    CHECK(query({{"list-type", "2"}, {"prefix", "a b/c+d"}, {"delimiter", "/"}}) ==
          "delimiter=%2F&list-type=2&prefix=a%20b%2Fc%2Bd");
    CHECK(query({{"uploadId", "a/b+c=="}, {"partNumber", "2"}}) == "partNumber=2&uploadId=a%2Fb%2Bc%3D%3D");
    // Repeated names: by value. Upper case sorts before lower case (bytes).
    CHECK(query({{"a", "2"}, {"B", "x"}, {"a", "1"}, {"a", ""}}) == "B=x&a=&a=1&a=2");
    // Sorted by the encoded form: "%" (0x25) before "-" (0x2D) and letters.
    CHECK(query({{"b", ""}, {"-", ""}, {" ", ""}}) == "%20=&-=&b=");
    CHECK(query({{"k", "\xC3\xA9"}}) == "k=%C3%A9");
}

TEST_CASE("sigv4: header names are lower-cased, values trimmed, repeats joined", "[unit][sigv4]") {
    const Signer signer({"AK", "SK", ""}, Options{"eu-west-1", "s3", false});
    Request r;
    r.host = "bucket.s3.eu-west-1.amazonaws.com";
    r.path = "/k";
    r.headers = {{"X-Amz-Meta-B", "  two   inner\t\truns  "},
                 {"x-amz-meta-a", "1"},
                 {"If-Match", "\"0123abcd\""},
                 {"X-AMZ-META-A", " 2 "},
                 {"x-amz-meta-empty", "   "},
                 {"Content-Type", "text/plain; charset=utf-8"}};
    const Signed s = signer.sign(r, at("2025-11-18T10:30:00Z"));
    CHECK(s.canonical_request ==
          "GET\n/k\n\n"
          "content-type:text/plain; charset=utf-8\n"
          "host:bucket.s3.eu-west-1.amazonaws.com\n"
          "if-match:\"0123abcd\"\n"
          "x-amz-date:20251118T103000Z\n"
          "x-amz-meta-a:1,2\n"
          "x-amz-meta-b:two inner runs\n"
          "x-amz-meta-empty:\n\n"
          "content-type;host;if-match;x-amz-date;x-amz-meta-a;x-amz-meta-b;x-amz-meta-empty\n" +
              std::string(kEmpty));
    CHECK(s.string_to_sign.find("20251118/eu-west-1/s3/aws4_request") != std::string::npos);
}

TEST_CASE("sigv4: headers that would break the request or collide with ours are refused", "[unit][sigv4]") {
    const Signer signer({"AK", "SK", "TOKEN"});
    Request r;
    r.host = "s3.amazonaws.com";
    const auto with = [&](std::string name, std::string value) {
        r.headers = {{std::move(name), std::move(value)}};
        return code_of([&] { signer.sign(r, at("2025-11-18T10:30:00Z")); });
    };
    CHECK(with("Host", "other") == ErrorCode::InvalidArgument);
    CHECK(with("X-Amz-Date", "20250101T000000Z") == ErrorCode::InvalidArgument);
    CHECK(with("x-amz-content-sha256", kEmpty) == ErrorCode::InvalidArgument);
    CHECK(with("X-Amz-Security-Token", "TOKEN") == ErrorCode::InvalidArgument);
    CHECK(with("Authorization", "x") == ErrorCode::InvalidArgument);
    CHECK(with("", "x") == ErrorCode::InvalidArgument);
    CHECK(with("bad name", "x") == ErrorCode::InvalidArgument);
    CHECK(with("bad:name", "x") == ErrorCode::InvalidArgument);
    CHECK(with("x-amz-meta-a", "one\r\nx-amz-meta-b: two") == ErrorCode::InvalidArgument);
    CHECK(with("x-amz-meta-a", "one\ntwo") == ErrorCode::InvalidArgument);
    CHECK(with("x-amz-meta-a", std::string("a\0b", 3)) == ErrorCode::InvalidArgument);
    r.headers.clear();
    r.method = "";
    CHECK(code_of([&] { signer.sign(r, at("2025-11-18T10:30:00Z")); }) == ErrorCode::InvalidArgument);
    r.method = "GET /x HTTP/1.1\r\nHost:";
    CHECK(code_of([&] { signer.sign(r, at("2025-11-18T10:30:00Z")); }) == ErrorCode::InvalidArgument);
    r.method = "GET";
    r.host = "";
    CHECK(code_of([&] { signer.sign(r, at("2025-11-18T10:30:00Z")); }) == ErrorCode::InvalidArgument);
}

TEST_CASE("sigv4: x-amz-content-sha256 and the payload hash", "[unit][sigv4]") {
    Request r;
    r.method = "PUT";
    r.host = "s3.amazonaws.com";
    r.path = "/b/k";
    const auto t = at("2025-11-18T10:30:00Z");
    const Signer s3({"AK", "SK", ""});

    const Signed empty = s3.sign(r, t);  // empty payload_sha256: the hash of ""
    CHECK(header(empty, "x-amz-content-sha256") == kEmpty);
    CHECK(empty.canonical_request.substr(empty.canonical_request.size() - 64) == kEmpty);

    r.payload_sha256 = hex_sha256("");
    CHECK(s3.sign(r, t).signature == empty.signature);

    r.payload_sha256 = "UNSIGNED-PAYLOAD";
    const Signed unsigned_payload = s3.sign(r, t);
    CHECK(header(unsigned_payload, "x-amz-content-sha256") == "UNSIGNED-PAYLOAD");
    CHECK_THAT(unsigned_payload.canonical_request, Catch::EndsWith("\nUNSIGNED-PAYLOAD"));
    CHECK_THAT(unsigned_payload.canonical_request, Catch::Contains("\nx-amz-content-sha256:UNSIGNED-PAYLOAD\n"));
    CHECK(unsigned_payload.signature != empty.signature);

    r.payload_sha256 = hex_sha256("body");
    CHECK(s3.sign(r, t).signature != empty.signature);

    for (const char* bad : {"E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855", "abc",
                            "unsigned-payload", "UNSIGNED PAYLOAD", "STREAMING-lower"}) {
        INFO(bad);
        r.payload_sha256 = bad;
        CHECK(code_of([&] { s3.sign(r, t); }) == ErrorCode::InvalidArgument);
    }

    // Without the header (the generic AWS services), the hash is still signed;
    // the caller may then send x-amz-content-sha256 itself, as an ordinary header.
    const Signer generic({"AK", "SK", ""}, Options{"us-east-1", "s3", false});
    r.payload_sha256 = "";
    const Signed g = generic.sign(r, t);
    CHECK(header(g, "x-amz-content-sha256") == "<absent>");
    CHECK_THAT(g.canonical_request, !Catch::Contains("x-amz-content-sha256"));
    r.headers = {{"X-Amz-Content-SHA256", kEmpty}};
    const Signed own = generic.sign(r, t);
    CHECK(own.canonical_request == empty.canonical_request);
    CHECK(own.signature == empty.signature);
}

TEST_CASE("sigv4: the headers to add, in order, and a session token", "[unit][sigv4]") {
    Request r;
    r.host = "s3.amazonaws.com";
    r.path = "/b";
    const auto t = at("2025-11-18T10:30:00Z");
    const Signed with_token = Signer({"AK", "SK", "tok/en+=="}).sign(r, t);
    REQUIRE(with_token.headers.size() == 4);
    CHECK(with_token.headers[0] == std::make_pair(std::string("x-amz-date"), std::string("20251118T103000Z")));
    CHECK(with_token.headers[1] == std::make_pair(std::string("x-amz-content-sha256"), std::string(kEmpty)));
    CHECK(with_token.headers[2] == std::make_pair(std::string("x-amz-security-token"), std::string("tok/en+==")));
    CHECK(with_token.headers[3].first == "authorization");
    CHECK_THAT(with_token.headers[3].second,
               Catch::StartsWith("AWS4-HMAC-SHA256 Credential=AK/20251118/us-east-1/s3/aws4_request, "
                                 "SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-amz-security-token, "
                                 "Signature=") &&
                   Catch::EndsWith(with_token.signature));
    CHECK_THAT(with_token.canonical_request, Catch::Contains("\nx-amz-security-token:tok/en+==\n"));
    const Signed without = Signer({"AK", "SK", ""}).sign(r, t);
    CHECK(without.headers.size() == 3);
    CHECK(without.signature != with_token.signature);
}

TEST_CASE("sigv4: the signing time", "[unit][sigv4]") {
    const Signer signer({"AK", "SK", ""});
    Request r;
    r.host = "h";
    const auto base = at("2025-11-18T10:30:00Z");
    const Signed whole = signer.sign(r, base);
    const Signed fraction = signer.sign(r, base + std::chrono::milliseconds(999));
    CHECK(fraction.amz_date == "20251118T103000Z");
    CHECK(fraction.signature == whole.signature);
    CHECK(signer.sign(r, at("1970-01-01T00:00:00Z")).amz_date == "19700101T000000Z");
    CHECK(signer.sign(r, at("2199-12-31T23:59:59Z")).amz_date == "21991231T235959Z");
    CHECK(signer.sign(r, at("2000-02-29T12:00:00Z")).amz_date == "20000229T120000Z");
    CHECK(code_of([&] { signer.sign(r, at("1970-01-01T00:00:00Z") - std::chrono::seconds(1)); }) ==
          ErrorCode::InvalidArgument);
}

TEST_CASE("sigv4: the signing key follows the day, from any thread", "[unit][sigv4]") {
    const Credentials creds{"AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", ""};
    Request r = example_request("GET", "/test.txt");
    r.headers = {{"Range", "bytes=0-9"}};
    const char* const days[] = {"2013-05-24T00:00:00Z", "2013-05-23T23:59:59Z", "2013-05-25T00:00:00Z",
                                "2024-02-29T12:00:00Z", "2013-05-24T23:59:59Z"};
    // What a fresh signer (nothing cached) gives for each time.
    std::map<std::string, std::string> expected;
    for (const char* d : days) expected[d] = Signer(creds).sign(r, at(d)).signature;
    CHECK(expected["2013-05-24T00:00:00Z"] == "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");

    // One signer, the days in turn and back: the cache never serves another day's key.
    const Signer shared(creds);
    for (int round = 0; round < 3; ++round) {
        for (const char* d : days) CHECK(shared.sign(r, at(d)).signature == expected[d]);
    }

    // Many threads on one signer, crossing days.
    std::atomic<int> wrong{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t) {
        threads.emplace_back([&, t] {
            for (int i = 0; i < 200; ++i) {
                const char* d = days[(t + i) % 5];
                if (shared.sign(r, at(d)).signature != expected.at(d)) ++wrong;
            }
        });
    }
    for (auto& th : threads) th.join();
    CHECK(wrong.load() == 0);
}

TEST_CASE("sigv4: the credential scope and the signer's settings", "[unit][sigv4]") {
    Request r;
    r.host = "s3.eu-central-1.amazonaws.com";
    const Signed s = Signer({"AK", "SK", ""}, Options{"eu-central-1", "s3", true}).sign(r, at("2025-11-18T10:30:00Z"));
    CHECK_THAT(s.string_to_sign, Catch::StartsWith("AWS4-HMAC-SHA256\n20251118T103000Z\n"
                                                   "20251118/eu-central-1/s3/aws4_request\n"));
    CHECK(s.signature != Signer({"AK", "SK", ""}).sign(r, at("2025-11-18T10:30:00Z")).signature);
    CHECK(s.signature !=
          Signer({"AK", "SK2", ""}, Options{"eu-central-1", "s3", true}).sign(r, at("2025-11-18T10:30:00Z")).signature);
    const Signer signer({"AKID", "SK", ""}, Options{"auto", "s3", true});
    CHECK(signer.access_key_id() == "AKID");
    CHECK(signer.options().region == "auto");
    CHECK(code_of([] { Signer({"", "SK", ""}); }) == ErrorCode::Config);
    CHECK(code_of([] { Signer({"AK", "", ""}); }) == ErrorCode::Config);
    CHECK(code_of([] { Signer({"AK", "SK", ""}, Options{"", "s3", true}); }) == ErrorCode::Config);
    CHECK(code_of([] { Signer({"AK", "SK", ""}, Options{"us-east-1", "", true}); }) == ErrorCode::Config);
    CHECK(code_of([] { Signer({"AK", "SK", ""}, Options{"us/east", "s3", true}); }) == ErrorCode::Config);
}
