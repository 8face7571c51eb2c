// ObjectAppender: appends one batch of lines to one object exactly once, on
// any S3Sink, although S3 objects cannot be appended to:
//   1. HEAD the key. Missing -> PUT the batch with If-None-Match: *.
//   2. Smaller than the multipart threshold -> GET (ETag E) -> PUT old+batch
//      with If-Match: E.
//   3. Larger -> multipart: UploadPartCopy of the object (copy-source-if-match
//      E) + the batch as the last part + Complete with If-Match: E, so only the
//      batch crosses the network.
//   4. 412 / 409: another writer won; back off with jitter and start again.
// Every path adds a "\n" first when the object lacks its last one.
//
// A batch whose write may have been sent (its INTENT was recorded) stays
// undecided until the object's ETag moved away from the one it was written
// against: until then, every write of it is conditional on that ETag (or on
// the object's absence), so that the earlier request and the new one cannot
// both land; once it moved, the bytes at the recorded offset tell whether it
// landed (check_landed).
//
// Where the store appends natively (Ceph RGW's PUT ?append&position=N, a
// compare-and-append on the object's length), a batch is one such append at
// the object's end: no read, no copy, no lease; its cost does not grow with
// the object. The appender remembers where each key ended after its own last
// append, so that a sole writer sends one request per batch; after a 409
// (another append won) it asks again with a HEAD, and reads the last byte for
// the newline guard (a "\n" is appended on its own where it lacks). The
// intent of a native append is its offset, without an ETag: it may land
// while the object is appendable and exactly that long, and no longer. A
// plain object (written by PUT or a multipart upload) takes no native
// appends: it is appended to as below.
//
// On a server that enforces conditional PUT but ignores If-Match on
// CompleteMultipartUpload (Ceph RGW 16), step 3 could overwrite another
// writer's batch; there every append first takes a lease: a small object
// under lease_prefix, created with If-None-Match: *, renewed and released
// with If-Match on its own ETag, taken over once its ETag stayed unchanged for
// lease_ttl by the taker's own clock. A Complete under a lease gets one
// attempt, bounded by half the lease; retries are the appender's, each after
// renewing and checking the lease.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "append/batch_intent.hpp"
#include "log/logger.hpp"
#include "training_output/sys/s3_sink.hpp"

namespace training_output {

enum class Landed {
    Yes,      // the batch is in the object at its recorded offset
    No,       // it is not, and its earlier request can no longer land
    NotYet,   // the object still has the ETag (or the absence) it was written against: it may still land
    Unknown,  // the store did not answer
};

// A plain object's conversion to an appendable one (RGW): its marker and the
// copy of it that the month is read from meanwhile.
std::string conversion_marker_key(const std::string& key);
std::string conversion_copy_key(const std::string& key);

struct AppendOptions {
    // Objects at least this large are appended with UploadPartCopy; 0 = the
    // sink's minimum part size.
    std::uint64_t multipart_threshold = 0;
    int max_attempts = 25;  // conflicts and unknown outcomes
    std::chrono::milliseconds backoff_base{10};
    std::chrono::milliseconds backoff_max{1000};
    ObjectAttributes attributes;  // content type, user metadata
    std::string lease_prefix = ".training_output/leases/";
    std::chrono::seconds lease_ttl{30};           // a holder that died frees the key after this
    std::chrono::milliseconds lease_wait{60000};  // how long to wait for a lease before failing
    bool always_lease = false;                    // copy appends take a lease even where Complete is conditional
    // An object seen appendable (a HEAD says so) is appended to natively even
    // when the capabilities do not say the store can (its probe has not been
    // answered yet): false for s3_append_mode copy and lease.
    bool native_when_appendable = true;
    // A plain object found where the store appends natively (RGW; written by
    // an older version or another tool) is converted, once, to an appendable
    // one under the key's lease (O(object) once, instead of a copy per batch).
    bool convert_plain = false;
};

struct AppendResult {
    std::uint64_t offset = 0;  // where the batch starts in the object
    int attempts = 0;
    bool found_landed = false;  // an earlier attempt had already written it
    // Other writers were in the way: a lease that was not free at once, or an
    // attempt lost to another writer's append (the writer's flusher then
    // batches more per append: congestion control).
    bool contended = false;
};

class ObjectAppender {
public:
    ObjectAppender(S3Sink& sink, AppendOptions options, const Logger* logger = nullptr);

    // Appends `batch` to `key` through an AppendJob, for a caller with
    // nothing to record before each write (tests, benchmarks). Throws as
    // AppendJob does.
    AppendResult append(const std::string& key, std::string_view batch,
                        const std::optional<BatchIntent>& undecided = std::nullopt);

    // Did `batch`, written with `intent`, land? Compared byte for byte.
    Landed check_landed(const BatchIntent& intent, std::string_view batch);
    // The same for a batch known only by its intent's size and CRC-32C
    // (some of its lines were lost with a spool's torn tail).
    Landed check_landed(const BatchIntent& intent);

    std::uint64_t conflicts() const { return conflicts_.load(std::memory_order_relaxed); }
    // Leases that were not free at the first try, and the time spent waiting for them.
    std::uint64_t lease_waits() const { return lease_waits_.load(std::memory_order_relaxed); }
    double lease_wait_seconds() const {
        return static_cast<double>(lease_wait_ns_.load(std::memory_order_relaxed)) / 1e9;
    }

    // Makes appends in progress stop (their requests are cancelled, their
    // backoffs end) and later ones fail at once, with Error(Closed); for a
    // writer that is closing. What an interrupted append may have written is
    // covered by its intent.
    void cancel();

private:
    struct Lease {
        std::string key;    // the lease object
        std::string etag;   // ours
        std::string owner;  // token in its body
        std::uint64_t renewals = 0;
        std::chrono::steady_clock::time_point taken;
        bool contended = false;   // it was not free at the first try
        bool after_ours = false;  // taken back from our own release: nobody held it in between
        // Its holder is converting the object (conversion.cpp): its body says
        // so, for whoever takes it after a holder that died, who must finish
        // the conversion before appending.
        bool converting = false;
        bool found_converting = false;  // taken from a holder that was converting
    };
    Lease acquire_lease(const std::string& key, const std::string& owner, std::chrono::milliseconds wait);
    bool renew_lease(Lease& lease);
    void release_lease(const Lease& lease);
    std::string lease_body(const Lease& lease) const;
    enum class Step { Done, Retry, Ambiguous, FoundLanded, Native };
    friend class AppendJob;
    friend class KeyLease;
    Step put_whole(const std::string& key, std::string_view body, const WriteConditions& conditions,
                   SinkResponse& failure);
    Landed check_undecided(const BatchIntent& u, std::string_view batch, std::uint32_t crc);
    // Another writer won the attempt: counted, and logged at debug.
    void count_conflict(const std::string& key, int attempt, const SinkResponse& answer);
    std::optional<Step> settle_undecided(const SinkResponse& head, std::string_view batch, std::uint32_t crc,
                                         std::optional<BatchIntent>& undecided, BatchIntent& intent,
                                         SinkResponse& failure);
    // A key found to hold a plain object: appended to by copy from now on.
    void found_plain(const std::string& key);
    // conversion.cpp. Under `lease` (none: nothing is converted).
    bool convert_to_appendable(const std::string& key, const SinkResponse& head, Lease* lease);
    // Finishes a conversion an earlier writer left (its marker exists): true
    // when there was one.
    bool finish_conversion(const std::string& key, Lease* lease);
    // Returns once the store's clock (the Date of its answers) is past
    // `unix_seconds`: what is written next has a later Last-Modified.
    void wait_for_store_clock_past(const std::string& key, std::int64_t unix_seconds);
    void remember_end(const std::string& key, std::optional<std::uint64_t> size);
    std::optional<std::uint64_t> known_end(const std::string& key);
    bool lease_still_ours(Lease* lease, SinkResponse& failure);
    WriteConditions under_lease(const Lease* lease) const;
    Landed check_landed_by(const BatchIntent& intent, std::uint64_t batch_bytes,
                           const std::function<bool(std::string_view)>& matches);
    std::uint64_t threshold() const;
    void backoff(int attempt);
    void check_cancelled();

    S3Sink& sink_;
    AppendOptions options_;
    const Logger* logger_;
    std::atomic<bool> multipart_copy_works_{true};
    std::atomic<std::uint64_t> conflicts_{0};
    std::atomic<std::uint64_t> lease_waits_{0}, lease_wait_ns_{0};
    std::mutex cancel_mutex_;
    std::condition_variable cancel_cv_;
    bool cancelled_ = false;
    // Leases held by others, as this appender first saw them: its ETag, and
    // when by its own clock. An ETag unchanged for lease_ttl is a dead holder's.
    // Under seen_mutex_, with released_.
    std::mutex seen_mutex_;
    std::map<std::string, std::pair<std::string, std::chrono::steady_clock::time_point>> seen_leases_;
    std::map<std::string, std::chrono::steady_clock::time_point> released_;  // when this appender last released each
    std::map<std::string, std::string> released_etags_;                      // and the ETag of that release
    // Native appends: where each key ended after this appender's last append
    // there (its size); keys found to be plain objects. Under ends_mutex_.
    std::mutex ends_mutex_;
    std::map<std::string, std::uint64_t> ends_;
    std::set<std::string> plain_;
};

// The lease on a key, for work on it that must not run twice at once (a
// compaction): taken as appends take theirs, but waited for at most `wait`
// (0: one try); released when the KeyLease ends, unless it was lost.
class KeyLease {
public:
    // held() is false when another holder kept the lease (or the store did
    // not answer): the work waits for another time. Throws Error(Closed)
    // when the appender was cancelled, and Error(Auth) when refused.
    KeyLease(ObjectAppender& appender, const std::string& key, std::chrono::milliseconds wait);
    ~KeyLease();
    KeyLease(const KeyLease&) = delete;
    KeyLease& operator=(const KeyLease&) = delete;

    bool held() const { return lease_.has_value() && !lost_; }
    // Before each step that must not run without the lease: renews it when
    // half its life is gone; false once it is lost. Throws Error(Closed) when
    // the appender was cancelled.
    bool still_ours();

private:
    ObjectAppender& a_;
    std::optional<ObjectAppender::Lease> lease_;
    bool lost_ = false;
};

// One batch's append to one object, an attempt at a time, with nothing
// called upward: the caller records each intent durably between the two
// halves of an attempt, before anything could change the object.
//
//   AppendJob job(appender, key, batch, crc32c::compute(batch), undecided);
//   while (const BatchIntent* intent = job.prepare()) {  // nullptr: finished
//       record(*intent);
//       job.write_once();
//   }
//   AppendResult r = job.result();
//
// prepare() reads the object (and takes the key's lease, uploads a copy's
// parts) until the next write is ready, backing off between attempts; it
// settles an earlier write that may still land (`undecided`: check_landed()
// said NotYet): the append stays conditional on it until the object moved
// on. write_once() sends the write. Both throw Error(Storage | Auth |
// Timeout | Closed) when the batch cannot be appended; undecided() is then
// the write of it that may still land, if any (none: the object is unchanged
// by it). The key's lease, if one was taken, is released when the job ends,
// unless a write sent under it may still land (it runs out instead).
class AppendJob {
public:
    // `crc`: the batch's CRC-32C (crc32c::compute(batch)).
    AppendJob(ObjectAppender& appender, const std::string& key, std::string_view batch, std::uint32_t crc,
              std::optional<BatchIntent> undecided = std::nullopt);
    ~AppendJob();
    AppendJob(const AppendJob&) = delete;
    AppendJob& operator=(const AppendJob&) = delete;

    // The intent of the next write, or nullptr once the batch is appended
    // (or found appended by an earlier write of it).
    const BatchIntent* prepare();
    // Sends the write prepare() made ready (its intent recorded).
    void write_once();
    // Once prepare() returned nullptr.
    const AppendResult& result() const { return result_; }
    const std::optional<BatchIntent>& undecided() const { return undecided_; }

private:
    using Step = ObjectAppender::Step;
    enum class Mode { Start, Native, Copy, Finished };
    enum class Write { None, Put, Complete, Native };
    void start();
    void enter_native();
    void leave_native();  // the object takes no native appends: by copy
    void enter_copy();
    void take_lease();
    ObjectAppender::Lease* lease() { return lease_ ? &*lease_ : nullptr; }
    void finish(std::uint64_t offset, int attempts, bool found_landed);
    // object_appender.cpp: the copy path's two halves, and what an attempt's step means.
    bool prepare_copy();
    Step prepare_copy_attempt(SinkResponse& failure);
    Step prepare_multipart(SinkResponse& failure);
    void write_copy();
    Step complete_multipart(SinkResponse& failure);
    void after_copy(Step step, SinkResponse failure);
    void abort_upload();
    // native.cpp
    bool prepare_native();
    void write_native();
    // While appending natively under a lease: a write that may still land
    // when this fails keeps the lease (see append_native in native.cpp).
    void keep_lease_if_undecided();

    ObjectAppender& a_;
    const std::string key_;
    std::string_view batch_;
    std::uint32_t crc_;
    std::optional<BatchIntent> undecided_;
    // One owner token for the whole append: a lease object that names it is
    // ours, whatever answers were lost on the way.
    std::string owner_;
    std::optional<ObjectAppender::Lease> lease_;
    bool keep_lease_ = false;  // a write that could still land: the lease runs out instead
    Mode mode_ = Mode::Start;
    int copy_attempt_ = 0, native_attempt_ = 0;
    bool copy_started_ = false;
    bool native_declined_ = false;  // this batch goes by copy
    bool converted_ = false;        // a plain object was made appendable (once per native run)
    SinkResponse last_failure_;
    // The write prepare() made ready.
    Write write_ = Write::None;
    BatchIntent intent_;  // with the batch's size and CRC
    std::string body_;    // a PUT's whole body, when it is more than the batch
    WriteConditions conditions_;
    std::string upload_id_;
    std::vector<CompletedPart> parts_;
    AppendResult result_;
};

}  // namespace training_output
