// S3Sink: the object operations that the appender needs, with S3 semantics
// (ETags, conditional writes, ranged reads, multipart uploads with
// UploadPartCopy). Implemented by CurlS3Sink (S3 / MinIO over SigV4),
// DirectorySink (a local directory, the embedded default) and MemorySink
// (tests and fault injection).
//
// Every operation reports its answer as a value: 404 and 412 are ordinary
// answers to conditional requests, not exceptions. Implementations are
// thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace training_output {

enum class SinkStatus {
    Ok,
    NotFound,            // 404: no such key (or upload)
    PreconditionFailed,  // 412: If-Match / If-None-Match / copy-source-if-match did not hold
    Conflict,            // 409: a concurrent conditional write won
    NotImplemented,      // 501 / the server lacks the feature
    Transient,           // worth retrying: 5xx, 429, SlowDown, timeouts, connection errors
    Auth,                // 403 / signature errors: retrying will not help
    Fatal,               // anything else that retrying will not fix (NoSuchBucket, 400, ...)
};
const char* sink_status_name(SinkStatus status) noexcept;

// S3's error document, when there was one.
struct S3ErrorInfo {
    std::string code;  // "PreconditionFailed", "SlowDown", ...
    std::string message;
    std::string request_id;
};

struct SinkResponse {
    SinkStatus status = SinkStatus::Ok;
    int http_status = 0;                                        // 0 when no HTTP answer arrived
    std::string etag;                                           // unquoted
    std::uint64_t size = 0;                                     // HEAD / GET: the whole object's size
    std::string body;                                           // GET: the bytes asked for
    std::string upload_id;                                      // CreateMultipartUpload
    std::vector<std::pair<std::string, std::string>> metadata;  // HEAD: x-amz-meta-* (lower-case names)
    std::int64_t last_modified = 0;                             // HEAD / GET: unix seconds, by the server's clock
    // HEAD / GET: the object takes native appends (RGW: x-rgw-object-type:
    // Appendable). After append_at: size is the next append position.
    bool appendable = false;
    std::int64_t server_time = 0;  // when the server answered (its Date), unix seconds
    S3ErrorInfo error;
    std::string detail;  // transport or local error text (never a secret)
    // A write that failed as Transient may have been applied anyway (its
    // request was sent, or an earlier attempt's was): its outcome is unknown.
    // False when nothing of it can have happened (never connected; a local
    // sink's failure, rolled back).
    bool may_have_applied = false;

    bool ok() const { return status == SinkStatus::Ok; }
    // One line for logs and error messages: status, HTTP code, S3 code, message, request id.
    std::string describe() const;
};

struct ByteRange {  // inclusive, as in HTTP Range
    std::uint64_t first = 0;
    std::uint64_t last = 0;
};

struct ObjectAttributes {
    std::string content_type = "application/jsonl";
    std::vector<std::pair<std::string, std::string>> metadata;  // sent as x-amz-meta-<name>
};

struct WriteConditions {
    std::string if_match;            // unquoted ETag the object must still have
    bool if_none_match_any = false;  // the object must not exist
    // One attempt, no retry inside the sink, and at most this long (0: the
    // sink's timeouts): for a write that must not land late (a Complete
    // under a lease whose half-life bounds it).
    bool single_attempt = false;
    std::chrono::milliseconds timeout{0};
};

// One page of a listing (ListObjects), in key order.
struct ListedObject {
    std::string key;
    std::uint64_t size = 0;
    std::string etag;  // unquoted
};
struct ListPage {
    std::vector<ListedObject> objects;
    std::string next;  // where the next page starts (after this key); empty after the last
};

struct CompletedPart {
    int number = 0;
    std::string etag;
};

struct SinkCapabilities {
    bool conditional_writes = true;            // If-Match / If-None-Match on PUT are enforced
    bool conditional_complete = true;          // If-Match on CompleteMultipartUpload is enforced
    bool multipart_copy = true;                // UploadPartCopy works
    std::uint64_t min_part_size = 5ull << 20;  // smallest non-last part
    bool native_append = false;                // append_at works (Ceph RGW's PUT ?append&position=N)
    // Two appends at one position never both succeed. Not so on RGW 16 (its
    // check races with a concurrent append): there, native appends take a lease.
    bool native_append_atomic = false;
};

class S3Sink {
public:
    virtual ~S3Sink() = default;

    virtual SinkResponse head(const std::string& key) = 0;
    virtual SinkResponse get(const std::string& key, std::optional<ByteRange> range = std::nullopt) = 0;
    virtual SinkResponse put(const std::string& key, std::string_view body, const ObjectAttributes& attributes,
                             const WriteConditions& conditions) = 0;
    virtual SinkResponse remove(const std::string& key) = 0;
    // Deletes `key` only if the store has not modified it after
    // `unix_seconds` (its own clock, whole seconds), so that a delete that
    // lands late never removes the object written again since: Ceph RGW's
    // x-amz-delete-if-unmodified-since. Ok also when the key is missing;
    // PreconditionFailed when it was modified later. NotImplemented (this
    // default) where the store has no such delete.
    virtual SinkResponse remove_if_unmodified_since(const std::string& key, std::int64_t unix_seconds);

    virtual SinkResponse create_multipart(const std::string& key, const ObjectAttributes& attributes) = 0;
    virtual SinkResponse upload_part(const std::string& key, const std::string& upload_id, int part_number,
                                     std::string_view body) = 0;
    // Part `part_number` := bytes of `source_key` (all, or `range`), only if
    // the source's ETag is still `source_if_match` (when not empty).
    virtual SinkResponse upload_part_copy(const std::string& key, const std::string& upload_id, int part_number,
                                          const std::string& source_key, const std::string& source_if_match,
                                          std::optional<ByteRange> range = std::nullopt) = 0;
    virtual SinkResponse complete_multipart(const std::string& key, const std::string& upload_id,
                                            const std::vector<CompletedPart>& parts,
                                            const WriteConditions& conditions) = 0;
    virtual SinkResponse abort_multipart(const std::string& key, const std::string& upload_id) = 0;

    // A native append: `body` lands at `position` only while the object is
    // exactly that long (or absent, for 0, which creates an appendable
    // object): a compare-and-append, one request, no copy. Ok: etag, and size
    // = the next position. Conflict: error.code "PositionNotEqualToLength"
    // (another append won) or "ObjectNotAppendable" (a plain object: written
    // by PUT or a multipart upload). NotImplemented where the store has none.
    // `conditions`: only single_attempt and timeout apply.
    virtual SinkResponse append_at(const std::string& key, std::string_view body, std::uint64_t position,
                                   const ObjectAttributes& attributes, const WriteConditions& conditions = {});

    // Deletes `keys` (at most 1000): one DeleteObjects request where the
    // store has it, else one DELETE each. Keys that could not be deleted
    // (other than missing ones) are added to `failed`; the answer is not Ok
    // when the request itself failed (then all of them may remain).
    virtual SinkResponse remove_many(const std::vector<std::string>& keys, std::vector<std::string>& failed);

    // The keys that start with `prefix`, a page at a time: `continuation`
    // is empty for the first page and then the last page's `next`. Fills
    // `page` when Ok. NotImplemented where the sink cannot list.
    virtual SinkResponse list(const std::string& prefix, const std::string& continuation, ListPage& page);

    virtual SinkCapabilities capabilities() const = 0;

    // Requests in progress stop (an aborted transfer, a lock no longer
    // waited for) and later ones fail at once, as Transient: for a writer
    // that is closing and must not wait on the store past its timeout.
    virtual void cancel() {}
    // Where the objects go, for logs ("directory ./training-data", "s3 http://host/bucket").
    virtual std::string describe() const = 0;
};

}  // namespace training_output
