// The S3 server the benchmarks run against (scripts/bench.sh starts Ceph RGW
// on loopback): TDO_BENCH_ENDPOINT (http://127.0.0.1:7480),
// TDO_BENCH_ACCESS_KEY (testkey), TDO_BENCH_SECRET_KEY (testsecret).
#pragma once

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "s3/curl_s3_sink.hpp"

namespace bench {

inline std::string env(const char* name, const char* fallback) {
    const char* v = std::getenv(name);
    return v && *v ? v : fallback;
}

inline training_output::S3SinkOptions sink_options(const std::string& bucket) {
    training_output::S3SinkOptions o;
    o.endpoint_url = env("TDO_BENCH_ENDPOINT", "http://127.0.0.1:7480");
    o.bucket = bucket;
    o.credentials = training_output::sigv4::Credentials{env("TDO_BENCH_ACCESS_KEY", "testkey"),
                                                        env("TDO_BENCH_SECRET_KEY", "testsecret"), ""};
    return o;
}

// A new bucket "tdo-bench-<what>-<pid>"; exits the benchmark when it cannot be made.
inline std::string make_bucket(const std::string& what) {
    const std::string bucket = "tdo-bench-" + what + "-" + std::to_string(::getpid());
    auto o = sink_options(bucket);
    o.conditional_writes = training_output::ConditionalWrites::Off;  // no probe before the bucket exists
    o.native_append = training_output::NativeAppend::Off;
    const auto r = training_output::CurlS3Sink(o).create_bucket();
    if (!r.ok()) {
        std::fprintf(stderr, "cannot create bucket %s: %s\n", bucket.c_str(), r.describe().c_str());
        std::exit(1);
    }
    return bucket;
}

// A writer's configuration for the server and `bucket`, with `extra` JSON
// members (",\"key\":value...").
inline std::string writer_config(const std::string& bucket, const std::string& output_dir, const std::string& extra) {
    const auto o = sink_options(bucket);
    return "{\"s3_endpoint_url\":\"" + o.endpoint_url + "\",\"s3_bucket_name\":\"" + bucket +
           "\",\"s3_access_key\":\"" + o.credentials.access_key_id + "\",\"s3_secret_key\":\"" +
           o.credentials.secret_access_key + "\",\"output_dir\":\"" + output_dir + "\"" + extra + "}";
}

}  // namespace bench
