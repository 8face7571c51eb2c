// TrainingOutput: the writer. One call turns a processing result into a
// training example and accepts it: format -> logged in the writer's spool (a
// crash after that loses nothing) -> dedup claim, owned by the spool. A
// writer belongs to the process that opened it: after fork(), every call in
// the child throws Error(Forked). A background thread
// appends the spooled lines to their monthly objects in batches, exactly
// once, and commits their dedup claims once they landed. Thread-safe: any number of
// threads may call generate() and flush() at once.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "training_output/config.hpp"
#include "training_output/error.hpp"
#include "training_output/example.hpp"
#include "training_output/sys/dedup_store.hpp"
#include "training_output/sys/s3_sink.hpp"

namespace training_output {

struct WriterStats {
    std::uint64_t written = 0;                   // examples accepted
    std::uint64_t duplicates = 0;                // dropped as duplicates (TDO_DUPLICATE or TDO_PENDING)
    std::uint64_t held_elsewhere = 0;            // of those, held by another live writer, not yet delivered
    std::uint64_t skipped = 0;                   // not written, for one of the reasons below
    std::uint64_t skipped_empty_narrative = 0;   // nothing left once trimmed
    std::uint64_t skipped_low_quality = 0;       // quality_score below its threshold
    std::uint64_t skipped_no_quality_score = 0;  // no quality_score where a threshold applies
    std::uint64_t skipped_redaction_failed = 0;  // redact_phi could not run: never written unredacted
    std::uint64_t redactions = 0;                // identifiers replaced in the examples accepted
    std::uint64_t disabled = 0;                  // calls while disabled
    std::uint64_t errors = 0;                    // calls that returned an error
    std::uint64_t dedup_store_errors = 0;        // store failures (each one failed open)
    std::uint64_t lines_appended = 0;            // lines now in their objects
    std::uint64_t bytes_appended = 0;
    std::uint64_t batches_appended = 0;
    std::uint64_t append_conflicts = 0;  // 412/409 answers: another writer won a race
    std::uint64_t append_failures = 0;   // batches that failed (and were retried)
    std::uint64_t pending_lines = 0;     // accepted, not yet in their objects
    std::uint64_t pending_bytes = 0;
    std::uint64_t batches_found_landed = 0;    // found in their object already (after a crash or timeout)
    std::uint64_t spools_adopted = 0;          // spools of writers that died, taken over
    std::uint64_t lines_recovered = 0;         // lines found in them
    std::uint64_t torn_records = 0;            // records dropped from them (bad checksum: a torn write)
    std::uint64_t lines_voided = 0;            // spooled lines found to be duplicates when their claims were confirmed
    std::uint64_t pending_commits = 0;         // dedup keys of landed lines not yet recorded as written
    std::uint64_t spool_bytes = 0;             // this writer's spool on disk
    std::uint64_t spool_fsync_errors = 0;      // failed fsyncs of the spool (its lines stay accepted)
    std::uint64_t calls_waiting_for_room = 0;  // calls waiting now for room in a full spool (block policy)
    std::uint64_t lines_found_landed = 0;      // of lines_appended, those found in their objects already
};

// What TrainingOutput::drain() did, since the writer opened.
struct DrainReport {
    std::uint64_t spools_adopted = 0;      // orphaned spools taken over
    std::uint64_t lines_recovered = 0;     // lines found in them
    std::uint64_t lines_appended = 0;      // lines now in their objects
    std::uint64_t lines_voided = 0;        // found to be duplicates (delivered before, or by another writer)
    std::uint64_t lines_found_landed = 0;  // of lines_appended, those a writer killed while it delivered
                                           // had appended already (found, not written again)
};

// A batch that landed (TrainingOutput::set_delivery_callback).
struct Delivery {
    std::string object_key;   // the monthly file, or (s3_append_mode=batches) the batch's own object
    std::uint64_t lines = 0;  // of the batch
    std::uint64_t bytes = 0;
    std::uint64_t object_size = 0;       // the object's size once the batch was in it (others may add more)
    std::int64_t manifest_version = -1;  // the version of the manifest that counts the batch; -1: none
                                         // (write_manifests off, a batch object, or the manifest lags)
};
using DeliveryCallback = std::function<void(const Delivery&)>;

// Parts a caller may supply instead of those the configuration names
// (tests, or hosts that bring their own store).
struct WriterComponents {
    std::unique_ptr<DedupStore> dedup_store;
    std::unique_ptr<S3Sink> sink;
    // The delivery callback from the start (set_delivery_callback), so that
    // the batches of spools adopted while the writer opens are reported too.
    DeliveryCallback on_delivery;
};

class TrainingOutput {
public:
    // Throws Error(Config) for a bad configuration, Error(DedupStore) when the
    // dedup store cannot be opened, Error(Storage) when the sink cannot be.
    explicit TrainingOutput(Config config, WriterComponents components = {});
    ~TrainingOutput();  // close()
    TrainingOutput(const TrainingOutput&) = delete;
    TrainingOutput& operator=(const TrainingOutput&) = delete;

    // Throws Error(InvalidJson | InvalidInput) for bad input; when the spool is
    // full, Error(Backpressure) (spool_full_policy=reject) or Error(Timeout)
    // after spool_block_timeout_ms (block); Error(Storage) when the spool's
    // disk fails. Never waits on the object store.
    Outcome generate(std::string_view narrative, std::string_view message_data_json, std::string_view result_json);
    Outcome generate(std::string_view narrative, const MessageData& message, const ProcessingResult& result);

    // Returns once every example accepted before the call is in its object;
    // throws Error(Timeout) after flush_timeout_ms, Error(Auth) when the store
    // rejects the credentials.
    void flush();
    // Flushes and stops; later calls throw Error(Closed). Idempotent. Throws
    // (as flush()) when lines could not be delivered: they stay in the spool,
    // and the next writer that opens on it delivers them.
    void close();

    // Adopts every orphaned spool of this configuration (of a writer that
    // died, or closed before it could deliver) and delivers what they hold,
    // then returns what this writer adopted and delivered since it opened.
    // Throws as flush(), or Error(Storage) saying how many spools could not
    // be adopted (a spool whose replay fails stays for a later writer; the
    // log says why). Spools of live writers are left to them.
    DrainReport drain();
    // Opens a writer on `config`, drain()s and closes it.
    static DrainReport drain(Config config);

    // Called once for each batch that lands from now on, on the writer's
    // background thread, after the batch is recorded as delivered (so
    // never for a batch that did not land, never twice for one). A batch a
    // writer that died had landed is reported by the writer that adopts its
    // spool; one that landed just before a crash, whose delivery was
    // recorded, is not reported again (the manifest counts it). An empty
    // callback stops the calls. The callback must not call back into the
    // writer; an exception it throws is logged and dropped.
    void set_delivery_callback(DeliveryCallback callback);

    WriterStats stats() const;
    // The writer's metrics in the Prometheus text exposition format (0.0.4):
    // the names and labels are in docs/observability.md. The library opens no port.
    std::string metrics_text() const;
    // Why the last generate() on the calling thread returned Outcome::Skipped
    // ("empty_narrative", "low_quality", "no_quality_score",
    // "redaction_failed"); "" after any other outcome.
    static const char* last_skip_reason() noexcept;
    std::string stats_json() const;
    const Config& config() const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace training_output
