// What the appender's files share (object_appender.cpp, native.cpp,
// lease.cpp, landed.cpp): its limits and the errors it gives up with.
#pragma once

#include <cstdint>
#include <string>

#include "common/json.hpp"
#include "training_output/error.hpp"
#include "training_output/sys/s3_sink.hpp"

namespace training_output::append_detail {

constexpr std::uint64_t kMaxCopyPart = 5ull << 30;        // UploadPartCopy copies at most 5 GiB
constexpr int kLeasePollSteps = 4;                        // a lease waiter's backoff grows no further than 2^4 steps
constexpr char kReleasedPrefix[] = "{\"released\":true";  // then the releaser's token: never the same ETag twice
constexpr std::size_t kMaxRememberedKeys = 4096;          // ends_ and plain_ start over past this

[[noreturn]] inline void give_up(const std::string& key, const SinkResponse& r) {
    ErrorCode code = r.status == SinkStatus::Auth ? ErrorCode::Auth : ErrorCode::Storage;
    throw Error(code, "appending to " + json::quote(key) + " failed: " + r.describe());
}

[[noreturn]] inline void give_up_after(const std::string& key, int attempts, const SinkResponse& last) {
    throw Error(ErrorCode::Storage, "appending to " + json::quote(key) + " gave up after " + std::to_string(attempts) +
                                        " attempts; last answer: " + last.describe());
}

inline SinkResponse transient(std::string detail) {
    SinkResponse r;
    r.status = SinkStatus::Transient;
    r.detail = std::move(detail);
    return r;
}

inline ObjectAttributes lease_attributes() {
    ObjectAttributes attrs;
    attrs.content_type = "application/json";
    return attrs;
}

}  // namespace training_output::append_detail
