// AWS Signature Version 4, the S3 way: paths are not normalized and are
// URI-encoded once, the canonical query is sorted, signed header names are
// lower-cased and their values trimmed, x-amz-content-sha256 carries the
// payload's SHA-256, and x-amz-security-token is signed for temporary
// credentials. The signing key is derived once per day and cached.
//
// Usable on its own: give it a Request (decoded path and query, the headers
// you will send) and a time, and send the headers of the result with the
// request line built from canonical_uri and canonical_query.
#pragma once

#include <chrono>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace training_output::sigv4 {

struct Credentials {
    std::string access_key_id;
    std::string secret_access_key;
    std::string session_token;  // temporary credentials only
};

struct Options {
    std::string region = "us-east-1";
    std::string service = "s3";
    // S3 requires x-amz-content-sha256 on every request (and signs it). The
    // generic AWS test suite signs without it.
    bool content_sha256_header = true;
};

struct Request {
    std::string method = "GET";
    std::string host;        // the Host header: "bucket.s3.amazonaws.com", "127.0.0.1:7480"
    std::string path = "/";  // decoded: "/bucket/training/a b.jsonl"; encoded here, once
    std::vector<std::pair<std::string, std::string>> query;    // decoded names and values
    std::vector<std::pair<std::string, std::string>> headers;  // every header sent besides Host
    std::string payload_sha256;  // hex SHA-256 of the body, or "UNSIGNED-PAYLOAD"; empty = of ""
};

struct Signed {
    std::string canonical_uri;    // the path to send, as signed
    std::string canonical_query;  // the query string to send, as signed ("" for none)
    std::string canonical_request;
    std::string string_to_sign;
    std::string signature;  // lower-case hex
    std::string amz_date;   // "20130524T000000Z"
    // Headers to add to the request: x-amz-date, x-amz-content-sha256 (when
    // enabled), x-amz-security-token (when there is one), authorization.
    std::vector<std::pair<std::string, std::string>> headers;
};

class Signer {
public:
    // Throws Error(Config) without an access key id, a secret, a region or a service.
    Signer(Credentials credentials, Options options = {});

    // Thread-safe. Every header of the request is signed. Throws
    // Error(InvalidArgument) for a request that cannot be sent as signed: a
    // method that is not an HTTP token, an empty host, a path not starting with '/', a header name that is
    // not an HTTP token, a value with a control character other than HTAB (CR
    // and LF included), a header the signer sets itself (Host, Authorization,
    // x-amz-date, x-amz-content-sha256 when enabled, x-amz-security-token with
    // a session token), a payload_sha256 that is neither lower-case hex nor
    // UNSIGNED-PAYLOAD / STREAMING-*, or a time outside the years 1970-9999.
    Signed sign(const Request& request, std::chrono::system_clock::time_point when) const;

    const Options& options() const { return options_; }
    const std::string& access_key_id() const { return credentials_.access_key_id; }

private:
    std::string signing_key(const std::string& date) const;

    Credentials credentials_;
    Options options_;
    mutable std::mutex cache_mutex_;
    mutable std::string cached_date_;
    mutable std::string cached_key_;
};

// Every byte except A-Z a-z 0-9 - . _ ~ becomes %XX (upper-case hex); '/'
// stays when encode_slash is false.
std::string uri_encode(std::string_view text, bool encode_slash);

// Lower-case hex SHA-256.
std::string hex_sha256(std::string_view data);

}  // namespace training_output::sigv4
