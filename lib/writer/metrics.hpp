// A writer's metrics, in the Prometheus text exposition format (version
// 0.0.4): what the writer counts itself (calls, their durations, outcomes
// per record type and health domain, errors per code), with its stats, its
// S3 store's requests and its appender's lease waits. The library never
// opens a port: a host serves or pushes the text.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "s3/curl_s3_sink.hpp"
#include "training_output/error.hpp"
#include "training_output/training_output.hpp"

namespace training_output {

class WriterMetrics {
public:
    // One generate() call took `d` (whatever it ended in).
    void call(std::chrono::nanoseconds d) noexcept;
    void generated(std::string_view record_type, std::string_view domain);
    void duplicate(std::string_view record_type);
    void error(ErrorCode code) noexcept;
    // An object of `domain` is `bytes` long (after a batch landed in it).
    void object_size(std::string_view domain, std::uint64_t bytes);

    struct Sources {
        WriterStats stats;
        std::optional<S3SinkStats> s3;  // an S3 store
        std::uint64_t lease_waits = 0;
        double lease_wait_seconds = 0;
        double backlog_age_seconds = 0;  // the oldest line not delivered yet
    };
    std::string prometheus(const Sources& sources) const;

    // Distinct record types (and domains) counted apart; more are "(other)".
    static constexpr std::size_t kMaxLabels = 200;

private:
    static constexpr double kBuckets[] = {0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005,
                                          0.001,    0.0025,  0.005,    0.01,    0.025,  0.05,    0.1,
                                          0.25,     0.5,     1,        2.5,     5,      10};
    static constexpr std::size_t kBucketCount = sizeof(kBuckets) / sizeof(kBuckets[0]);
    std::atomic<std::uint64_t> buckets_[kBucketCount + 1] = {};  // the last one: +Inf
    std::atomic<std::uint64_t> calls_{0}, duration_ns_{0};
    std::atomic<std::uint64_t> errors_[128] = {};  // by -code (Internal is 99)

    mutable std::mutex mutex_;
    std::map<std::pair<std::string, std::string>, std::uint64_t> generated_;  // (record type, domain)
    std::uint64_t* last_generated_ = nullptr;  // the count generated() added to last (map nodes stay put)
    std::string last_record_type_, last_domain_;
    std::map<std::string, std::uint64_t> duplicates_;    // record type
    std::map<std::string, std::uint64_t> object_sizes_;  // domain: the last size seen
};

}  // namespace training_output
