// BatchObjects: the "batches" append mode (s3_append_mode=batches), where
// appending costs the same whatever the size of the monthly file and however
// many writers share it, on any S3 store (no append, no conditional Complete
// needed). For the monthly file M = <stem>.jsonl:
//
//   <stem>.batches/<spool id>-<first seq>.jsonl   one immutable object per batch
//   <stem>.batches.json                            the manifest
//   <stem>.jsonl                                   the compacted file
//
// A batch is one PUT of its own object, named by its spool and the sequence
// number of its first line (its spool's id and an 'f' per fence when a
// writer that took claims of the spool over fenced its first name): the
// name is in the batch's INTENT (its batch_object), so that a retry, a
// replay after a crash and a late copy of the request all write the same
// bytes under the same name (If-None-Match: * where the store enforces it:
// the second one is a 412). No lease, no read, no copy, no contention:
// O(batch).
//
// A compaction folds batch objects into the monthly file: under a lease on
// the manifest (one compactor at a time), it lists the batch objects, reads
// those not yet folded, appends them to M as one batch with ObjectAppender
// (native, copy or whole PUT: O(file) once per compaction, not per batch),
// and only then deletes them. Exactly once across it, by the manifest:
//   - file_bytes: the bytes of M that are the month's (a fold in progress,
//     beyond them, is not yet);
//   - folded: per spool, the highest first seq folded. A spool appends a
//     key's batches one after the other (the next only once the last one
//     landed), so every batch of it at or below that mark is in M, and a
//     batch object at or below it (a late copy of a request) is deleted, not
//     folded again;
//   - folding: a fold in progress (its INTENT: where in M, bytes, CRC, and
//     per spool the batches it takes), written before the append, cleared
//     after it; whoever compacts next finishes it.
//
// Readers (read_month): the manifest, the listing, the manifest again (the
// same ETag, or start over), then M's first file_bytes bytes (all of M when
// there is no manifest) and every listed batch object not folded (a GET that
// finds none: start over), and M's ETag again (a conversion that began and
// ended meanwhile rewrote M: start over). After a compaction with no batch
// objects left, M alone is the month.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>

#include "append/object_appender.hpp"
#include "log/logger.hpp"
#include "training_output/error.hpp"
#include "training_output/sys/s3_sink.hpp"

namespace training_output {

// land() of lines under a name an empty object fences: none of them can
// land there; they need another name.
class FencedName : public Error {
public:
    using Error::Error;
};

struct BatchName {
    std::string spool;      // the spool's id (hex)
    std::uint64_t seq = 0;  // its first line's sequence number
};

namespace batch_objects {
std::string prefix(const std::string& month_key);        // "<stem>.batches/"
std::string manifest_key(const std::string& month_key);  // "<stem>.batches.json"
// The batch's object: "<stem>.batches/<spool>-<first seq, 16 hex digits>.jsonl".
// A batch whose name was fenced while it still had lines is written under
// its spool's id followed by one 'f' per fence: a name no spool has (ids
// have a fixed length), with a folded mark of its own.
std::string key(const std::string& month_key, const std::string& spool, std::uint64_t first_seq);
std::optional<BatchName> parse(const std::string& month_key, const std::string& key);
// The monthly file a batch object's key belongs to (nullopt: not one).
std::optional<std::string> month_of(const std::string& batch_key);
// The INTENT of a batch of `bytes` bytes (CRC-32C `crc`) written as its own object.
BatchIntent intent(const std::string& month_key, const std::string& batch_key, std::uint64_t bytes = 0,
                   std::uint32_t crc = 0);
}  // namespace batch_objects

struct BatchManifest {
    std::string etag;                             // of the manifest object; empty when there is none
    std::uint64_t file_bytes = 0;                 // M's bytes that belong to the month
    std::map<std::string, std::uint64_t> folded;  // per spool: the highest first seq folded into M
    struct Fold {
        BatchIntent intent;                         // where in M, and what
        std::map<std::string, std::uint64_t> upto;  // per spool: its batches above `folded`, up to this
    };
    std::optional<Fold> folding;

    bool folded_in(const BatchName& name) const;
    std::string encode() const;
    // Throws Error(Storage) for a document that is not a manifest.
    static BatchManifest decode(std::string_view json);
};

struct BatchObjectsOptions {
    ObjectAttributes attributes;                         // of batch objects
    std::uint64_t compaction_max_bytes = 64u << 20;      // read and appended per fold
    std::chrono::milliseconds compaction_lease_wait{0};  // 0: one try; another compactor has it
    unsigned parallel_requests = 8;                      // reads and deletes of batch objects at once
};

// A fold recorded in the manifest: where it ends in the monthly file, and
// its bytes (just before `end`; empty when not at hand: a fold an earlier
// compactor left, finished), for the writer's manifests.
struct Fold {
    std::uint64_t end = 0;
    std::string body;
};

struct CompactionResult {
    bool ran = false;  // the lease was ours (else another compactor is at it)
    std::uint64_t folds = 0;
    std::uint64_t batches = 0;  // batch objects folded
    std::uint64_t bytes = 0;
    std::uint64_t deleted = 0;      // batch objects removed (folded now, or copies of folded ones)
    bool finished_earlier = false;  // a fold left by an earlier compactor was finished
};

class BatchObjects {
public:
    BatchObjects(S3Sink& sink, ObjectAppender& appender, BatchObjectsOptions options, const Logger* logger = nullptr);

    // Writes `batch` as its own object, once, as `intent` (the caller
    // recorded it; its size and CRC-32C are the batch's) names it.
    // found_landed: an earlier write of it was there. Throws Error(Storage | Auth | Timeout |
    // Closed) when it was not written; then `left_undecided` (when given)
    // is the write of it that may still land (FencedName: none).
    // An empty batch is written as an empty object: a fence, so that an
    // earlier write under the name never lands (readers and compactions
    // find nothing in it).
    AppendResult land(const BatchIntent& intent, std::string_view batch,
                      std::optional<BatchIntent>* left_undecided = nullptr);
    // The same, as the object `batch_key` of `month_key`, for a caller that
    // has no intent at hand (a fence, tests): the CRC-32C is computed here.
    AppendResult land(const std::string& month_key, const std::string& batch_key, std::string_view batch,
                      std::optional<BatchIntent>* left_undecided = nullptr);

    // Did the batch of this INTENT (of `bytes` bytes) land? Its object
    // exists, or it was folded: Yes. An empty object under its name is a
    // fence (written by a writer that found its lines delivered elsewhere):
    // No, and none of it can land any more. Else NotYet: a write of it may
    // land late.
    Landed check_landed(const BatchIntent& intent);

    // Folds the month's batch objects into its file, through a Compaction,
    // for a caller with nothing to do after each fold (tests, benchmarks).
    CompactionResult compact(const std::string& month_key);

    // The manifest (etag empty: none). Throws Error(Storage) when unreadable.
    BatchManifest read_manifest(const std::string& month_key);

    // The month's lines as readers see them (module comment), in the order
    // of M and then of the batch objects' names.
    std::string read_month(const std::string& month_key);

    // The monthly files this writer landed batch objects for since the last
    // call (for the compactions it runs).
    std::set<std::string> take_months_written();

private:
    friend class Compaction;
    struct Listed {
        BatchName name;
        std::string key;
        std::uint64_t size = 0;
    };
    std::vector<Listed> list_batches(const std::string& month_key);
    // One fold (or finishing an earlier one), in `fold` when one was
    // recorded; true when batch objects were left for another.
    bool fold_round(const std::string& month_key, BatchManifest& m, const std::vector<Listed>& listing,
                    const std::function<bool()>& still_ours, CompactionResult& result, std::optional<Fold>& fold);
    void commit_fold(const std::string& month_key, BatchManifest& m, std::uint64_t end,
                     const std::function<bool()>& still_ours);
    void write_manifest(const std::string& month_key, BatchManifest& m);
    std::string read_batches(const std::vector<const Listed*>& batches, bool& missing);
    std::uint64_t remove_all(const std::vector<std::string>& keys);

    S3Sink& sink_;
    ObjectAppender& appender_;
    BatchObjectsOptions options_;
    const Logger* logger_;
    std::mutex written_mutex_;
    std::set<std::string> written_;
};

// One month's compaction, a fold at a time, under the lease on its
// manifest (one compactor at a time), with nothing called upward:
//
//   Compaction c(batches, month_key);
//   while (const Fold* fold = c.next()) manifests.advance(month_key, fold->end, fold->body);
//   CompactionResult r = c.result();
//
// Folds rounds of up to compaction_max_bytes while the lease stays ours
// (batch objects written meanwhile wait for the next compaction). Throws
// Error when the store fails; what was done stays done, and a fold in
// progress is finished by the next compaction.
class Compaction {
public:
    Compaction(BatchObjects& batches, const std::string& month_key);
    // The next fold recorded, or nullptr when the month is compacted, or the
    // lease was another's or lost.
    const Fold* next();
    const CompactionResult& result() const { return result_; }

private:
    BatchObjects& b_;
    const std::string month_key_;
    KeyLease lease_;
    bool more_ = true;
    std::optional<Fold> fold_;
    CompactionResult result_;
};

}  // namespace training_output
