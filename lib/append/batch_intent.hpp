// BatchIntent: where a batch is written, and what; the one record of a write
// that may land. Recorded durably before every write that could land the
// batch (the spool's INTENT; a fold's, in the batches manifest), it tells
// whoever comes next (a retry, a replay after a crash, a writer that adopted
// the spool, the next compactor) whether the batch landed:
//   - appended to the monthly object `key`: once the object no longer has
//     the ETag (or, for a native append, the length) it was written against,
//     the bytes [offset, offset + bytes) are the batch, or it never landed;
//   - written as its own object `batch_object` (s3_append_mode=batches):
//     that object exists (an empty one is a fence), or the batch was folded.
#pragma once

#include <cstdint>
#include <string>

namespace training_output {

struct BatchIntent {
    std::string key;           // the monthly object
    std::string etag;          // its ETag before the write; empty when it did not exist, and for a native append
    std::uint64_t offset = 0;  // where in it the batch starts
    std::string batch_object;  // the batch's own object (then `etag` and `offset` are unused)
    std::uint64_t bytes = 0;   // the batch, as written
    std::uint32_t crc = 0;     // its CRC-32C

    bool as_object() const { return !batch_object.empty(); }
};

}  // namespace training_output
