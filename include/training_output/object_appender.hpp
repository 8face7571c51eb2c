// ObjectAppender: appends one batch of lines to one object exactly once, on
// any S3Sink, although S3 objects cannot be appended to:
//   1. HEAD the key. Missing -> PUT the batch with If-None-Match: *.
//   2. Smaller than the multipart threshold -> GET (ETag E) -> PUT old+batch
//      with If-Match: E.
//   3. Larger -> multipart: UploadPartCopy of the object (copy-source-if-match
//      E) + the batch as the last part + Complete with If-Match: E, so only the
//      batch crosses the network.
//   4. 412 / 409: another writer won; back off with jitter and start again.
// When an attempt's outcome is unknown (a timeout after the request was
// sent), the next attempt first checks with a ranged GET whether the batch is
// already at the offset where it was written.
//
// On a server that enforces conditional PUT but ignores If-Match on
// CompleteMultipartUpload (Ceph RGW 16), step 3 could overwrite another
// writer's batch; there every append first takes a lease: a small object
// under lease_prefix created with If-None-Match: *, taken over with If-Match
// once its age by the server's clock passes lease_ttl, deleted when done.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "training_output/log.hpp"
#include "training_output/s3_sink.hpp"

namespace training_output {

// Where a batch is about to be written: the object's ETag and size before it.
// Recorded durably before the write, it lets recovery after a crash tell
// whether the batch landed (the bytes [size, size+|batch|) are the batch).
struct AppendIntent {
    std::string key;
    std::string etag;      // empty when the object did not exist
    std::uint64_t size = 0;
};

enum class Landed { Yes, No, Unknown };

struct AppendOptions {
    // Objects at least this large are appended with UploadPartCopy; 0 = the
    // sink's minimum part size.
    std::uint64_t multipart_threshold = 0;
    int max_attempts = 25;                              // conflicts and unknown outcomes
    std::chrono::milliseconds backoff_base{10};
    std::chrono::milliseconds backoff_max{1000};
    ObjectAttributes attributes;                         // content type, user metadata
    std::string lease_prefix = ".training_output/leases/";
    std::chrono::seconds lease_ttl{30};                  // a holder that died frees the key after this
    std::chrono::milliseconds lease_wait{60000};         // how long to wait for a lease before failing
};

struct AppendResult {
    std::uint64_t offset = 0;   // where the batch starts in the object
    int attempts = 0;
    bool found_landed = false;  // an earlier attempt had already written it
};

class ObjectAppender {
public:
    ObjectAppender(S3Sink& sink, AppendOptions options, const Logger* logger = nullptr);

    // `before_write` is called with the intent of every attempt, before the
    // request that could change the object. Throws Error(Storage | Auth |
    // Timeout) when the batch could not be appended; the object is then
    // unchanged by this batch, or the batch is recorded by an intent whose
    // outcome check_landed() decides.
    AppendResult append(const std::string& key, std::string_view batch,
                         const std::function<void(const AppendIntent&)>& before_write = {});

    // Did `batch`, recorded with `intent`, land? Unknown when the store did
    // not answer.
    Landed check_landed(const AppendIntent& intent, std::string_view batch);
    // The same for a batch known only by its size and CRC-32C (some of its
    // lines were lost with a spool's torn tail).
    Landed check_landed(const AppendIntent& intent, std::uint64_t batch_bytes, std::uint32_t batch_crc);

    std::uint64_t conflicts() const { return conflicts_.load(std::memory_order_relaxed); }

    // Makes appends in progress stop at their next backoff, and later ones at
    // their first, with Error(Closed); for a writer that is closing. What an
    // interrupted append may have written is covered by its intent.
    void cancel();

private:
    struct Lease {
        std::string key;    // the lease object
        std::string etag;   // ours
        std::string owner;  // token in its body
        std::chrono::steady_clock::time_point taken;
    };
    Lease acquire_lease(const std::string& key);
    bool renew_lease(Lease& lease);
    void release_lease(const Lease& lease);
    enum class Step { Done, Retry, Ambiguous };
    Step attempt(const std::string& key, std::string_view batch,
                 const std::function<void(const AppendIntent&)>& before_write, AppendIntent& intent,
                 SinkResponse& failure, Lease* lease);
    Step put_whole(const std::string& key, std::string_view body, const WriteConditions& conditions,
                   SinkResponse& failure);
    Step append_multipart(const std::string& key, std::string_view batch, const AppendIntent& intent,
                          SinkResponse& failure, Lease* lease,
                          const std::function<void(const AppendIntent&)>& before_write);
    bool lease_still_ours(Lease* lease, SinkResponse& failure);
    Landed check_landed_by(const AppendIntent& intent, std::uint64_t batch_bytes,
                           const std::function<bool(std::string_view)>& matches);
    std::uint64_t threshold() const;
    void backoff(int attempt);

    S3Sink& sink_;
    AppendOptions options_;
    const Logger* logger_;
    std::atomic<bool> multipart_copy_works_{true};
    std::atomic<std::uint64_t> conflicts_{0};
    std::mutex cancel_mutex_;
    std::condition_variable cancel_cv_;
    bool cancelled_ = false;
};

}  // namespace training_output
