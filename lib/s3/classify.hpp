// What an S3 answer means: one pure function from an HTTP exchange's outcome
// to a SinkResponse (status, S3 error code, message, request id, detail),
// before any operation reads its own fields. It sends nothing and retries
// nothing: the client (client.cpp) retries what it calls Transient, and
// turns a 412/409/404 after an unseen attempt of a conditional write into
// "unknown". Table-tested (tests/unit/test_s3_classify.cpp) and fuzzed
// (tests/fuzz/fuzz_s3_classify.cpp).
#pragma once

#include <cstdint>
#include <optional>

#include "s3/http_client.hpp"
#include "training_output/sys/s3_sink.hpp"

namespace training_output::s3 {

// The S3 operations the sink sends, as counted in its statistics.
enum class Op {
    Head,
    Get,
    Put,
    Remove,
    CreateMultipart,
    UploadPart,
    UploadPartCopy,
    Complete,
    Abort,
    Append,
    CreateBucket,
    Probe,
    List,
    RemoveMany,
    CreateSession
};
constexpr int kOps = static_cast<int>(Op::CreateSession) + 1;

// "PutObject", "CompleteMultipartUpload", ...
const char* op_name(Op op);

// Writes whose repetition after an unseen success would answer 412 / 409 / 404.
inline bool conditional_write(Op op) { return op == Op::Put || op == Op::Complete || op == Op::Append; }

// The answer `resp` to `op`. `range`: the bytes a ranged GET asked for (the
// answer must be exactly those). `local_seconds`: this host's Unix time as
// the client corrects it for the server's clock (a 403 without an error
// document from a server whose Date is more than 5 minutes away is taken
// for RequestTimeTooSkewed).
SinkResponse classify(Op op, const http::Response& resp, const std::optional<ByteRange>& range,
                      std::int64_t local_seconds);

}  // namespace training_output::s3
