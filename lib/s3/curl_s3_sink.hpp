// CurlS3Sink: the S3Sink for S3 and MinIO (and Ceph RGW), signed with SigV4,
// over libcurl. Path-style addressing for custom endpoints, virtual-hosted
// for AWS; http and https with TLS verification on by default; connections
// reused; connect, request and stall timeouts; retries with capped full-jitter
// backoff for 5xx, 429, SlowDown, RequestTimeout, connection errors and
// timeouts; RequestTimeTooSkewed corrects the clock; auth errors are never
// retried. S3 error documents are parsed into code, message and request id,
// also when they arrive inside a 200.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "log/logger.hpp"
#include "s3/endpoint.hpp"
#include "s3/sigv4.hpp"
#include "training_output/sys/s3_sink.hpp"

namespace training_output {

// Native appends: asked for (On), never used (Off), or used where the
// probe finds them (Auto).
enum class NativeAppend { Auto, On, Off };

struct S3SinkOptions {
    std::string endpoint_url;  // "http://127.0.0.1:9000", "https://s3.eu-west-1.amazonaws.com"
    std::string region = "us-east-1";
    std::string bucket;
    sigv4::Credentials credentials;
    AddressingStyle addressing = AddressingStyle::Auto;  // auto: virtual for *.amazonaws.com
    bool verify_tls = true;
    std::string ca_file;  // PEM bundle; empty = the system's
    std::chrono::milliseconds connect_timeout{3000};
    std::chrono::milliseconds request_timeout{60000};
    std::chrono::seconds low_speed_time{15};  // a transfer below 1 KiB/s this long is a timeout
    int max_attempts = 4;                     // per request, for what is worth retrying
    std::chrono::milliseconds retry_base{100};
    std::chrono::milliseconds retry_max{5000};
    // Auto: probe once what the server enforces (logged); On: trust that it
    // enforces conditional PUT and CompleteMultipartUpload; Off: no conditions
    // (one writer per key only).
    ConditionalWrites conditional_writes = ConditionalWrites::Auto;
    // Auto: probe whether the server appends natively (Ceph RGW's
    // ?append&position=N); On: the same, and a probe that finds none is an
    // error at open (Error(Config)); Off: never use it, no probe for it.
    NativeAppend native_append = NativeAppend::Auto;
    std::string probe_prefix = ".training_output/probe/";
    // The first probe runs on its own thread; the constructor waits this long
    // for it (so that rejected credentials are an error at open), then
    // returns with the safe capabilities while the probe goes on.
    std::chrono::milliseconds probe_wait{500};
};

struct S3SinkStats {
    std::uint64_t requests = 0;
    std::uint64_t retries = 0;
    // Requests by S3 operation ("PutObject", ...) and outcome (sink_status_name), those that happened.
    struct ByOperation {
        const char* operation;
        const char* status;
        std::uint64_t count;
    };
    std::vector<ByOperation> by_operation;
    std::uint64_t bytes_sent = 0;  // request lines, headers and bodies
    std::uint64_t body_bytes_sent = 0;
    std::uint64_t bytes_received = 0;  // response bodies
};

class CurlS3Sink final : public S3Sink {
public:
    // Throws Error(Config) for unusable options, and Error(Auth) (or
    // Error(Storage): no such bucket) when the server answers the probe so
    // within probe_wait. Never waits longer: the first probe goes on on a
    // thread of the sink's; a probe that got no answer runs again from
    // capabilities(), with backoff; until one is answered the capabilities
    // are the safe ones.
    explicit CurlS3Sink(S3SinkOptions options, const Logger* logger = nullptr);
    ~CurlS3Sink() override;

    SinkResponse head(const std::string& key) override;
    SinkResponse get(const std::string& key, std::optional<ByteRange> range = std::nullopt) override;
    SinkResponse put(const std::string& key, std::string_view body, const ObjectAttributes& attributes,
                     const WriteConditions& conditions) override;
    SinkResponse remove(const std::string& key) override;
    SinkResponse remove_if_unmodified_since(const std::string& key, std::int64_t unix_seconds) override;
    SinkResponse create_multipart(const std::string& key, const ObjectAttributes& attributes) override;
    SinkResponse upload_part(const std::string& key, const std::string& upload_id, int part_number,
                             std::string_view body) override;
    SinkResponse upload_part_copy(const std::string& key, const std::string& upload_id, int part_number,
                                  const std::string& source_key, const std::string& source_if_match,
                                  std::optional<ByteRange> range = std::nullopt) override;
    SinkResponse complete_multipart(const std::string& key, const std::string& upload_id,
                                    const std::vector<CompletedPart>& parts,
                                    const WriteConditions& conditions) override;
    SinkResponse abort_multipart(const std::string& key, const std::string& upload_id) override;
    SinkResponse list(const std::string& prefix, const std::string& continuation, ListPage& page) override;
    SinkResponse remove_many(const std::vector<std::string>& keys, std::vector<std::string>& failed) override;
    SinkResponse append_at(const std::string& key, std::string_view body, std::uint64_t position,
                           const ObjectAttributes& attributes, const WriteConditions& conditions = {}) override;
    SinkCapabilities capabilities() const override;
    std::string describe() const override;
    void cancel() override;

    // Creates the bucket (tests, first-time setup); an existing bucket of
    // ours is fine.
    SinkResponse create_bucket();
    S3SinkStats stats() const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace training_output
