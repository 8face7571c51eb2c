// Spool: a writer's local write-ahead log. generate() logs its line here
// first; only then is the line's content claimed in the dedup store, owned by
// this spool (its id), so that no claim exists without a spooled line. A
// crash of the process (even SIGKILL) after the record is written loses
// nothing; the flusher appends the logged lines to their objects in the
// background, naming each batch exactly (INTENT before the write, DONE once
// it landed and its claims were committed), so that recovery appends every
// line exactly once.
//
// On disk, writers share one spool directory; each live writer owns a
// subdirectory `w-<id>` (id: 128 random bits in hex) under an exclusive flock():
//
//   <spool_dir>/w-<id>/lock              held while the owner lives
//   <spool_dir>/w-<id>/spool.json        the spool's id and destination (the sink its lines are for)
//   <spool_dir>/w-<id>/seg-<n>.log       segments: an 8-byte magic, then LINE records
//   <spool_dir>/w-<id>/ctl-<n>.log       control files: the magic, then INTENT, DONE, VOID, COMMITTED
//   <spool_dir>/w-<id>/spare-<n>.seg     segments prepared ahead (new, or landed ones reused)
//
// Records and their encoding: lib/spool/record.hpp. Segments are
// preallocated and memory-mapped: logging a line is a copy into the page
// cache, no system call. The segment being written stays while the spool
// drains and fills again: a quiet writer appends to one segment for a long
// time instead of making one per line. Control records are few and written with write(),
// so that syncing an INTENT does not sync the lines logged since the last
// batch.
//
// A line is live from its LINE record until a DONE (it landed) or a VOID (its
// content was a duplicate) names it. Segments are deleted oldest first once
// no line in them is live; a control file once no segment holds a line its
// records name and every commit it records as pending was made.
//
// A writer that opens adopts the subdirectories of the same destination whose
// owner died (their lock is free), delivers what they hold and removes them;
// flock() makes sure no orphan is adopted by two writers.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "append/batch_intent.hpp"
#include "common/background.hpp"
#include "config/choices.hpp"
#include "log/logger.hpp"

namespace training_output {

namespace spool {
struct Segment;
}

struct SpoolOptions {
    std::string dir;  // shared by the writers of one machine
    // Where the lines go (sink, bucket, prefix): a spool is adopted only by a
    // writer with the same destination. Spools made before spools recorded
    // theirs are adopted by any writer.
    std::string destination;
    SpoolFsync fsync = SpoolFsync::Interval;
    std::chrono::milliseconds fsync_interval{1000};
    std::uint64_t max_bytes = std::uint64_t(1) << 30;  // this writer's segments, in bytes
    SpoolFullPolicy full_policy = SpoolFullPolicy::Block;
    std::chrono::milliseconds block_timeout{10000};
    std::uint64_t segment_bytes = 0;  // 0: max_bytes / 16, between 64 KiB and 16 MiB
};

// Where a logged line is; what the flusher keeps in memory per line.
struct SpoolLineRef {
    std::uint64_t seq = 0;
    std::uint64_t segment = 0;
    std::uint64_t offset = 0;  // of the record in its segment
    std::uint32_t record_bytes = 0;
    std::uint32_t line_bytes = 0;
};

struct SpooledLine {
    std::string line;
    std::string dedup_key;  // empty: nothing to claim or commit
};

// A batch, named exactly: its lines in the order they are appended.
struct SpoolBatch {
    std::uint64_t id = 0;
    std::string object_key;
    std::vector<SpoolLineRef> lines;
};

// What replaying a spool found for one object key.
struct SpoolRecovered {
    std::string object_key;
    // Batches whose INTENT has no DONE: they may be in the object already;
    // check before appending them (or anything after them) again.
    struct Undecided {
        std::uint64_t batch = 0;
        std::vector<SpoolLineRef> lines;  // those still in the spool, in batch order
        bool complete = true;             // all of the batch's lines are (else compare by checksum)
        BatchIntent intent;               // its bytes and CRC-32C: of the whole batch, as written
    };
    std::vector<Undecided> undecided;  // in batch order
    std::vector<SpoolLineRef> lines;   // the other live lines, in order
};

// Dedup keys of a batch that landed before its commit could be made.
struct SpoolPendingCommit {
    std::uint64_t batch = 0;
    std::vector<std::string> keys;
};

struct SpoolStats {
    std::uint64_t bytes = 0;  // segment bytes on disk
    std::uint64_t segments = 0;
    std::uint64_t torn_records = 0;      // dropped at replay (bad checksum or length)
    std::uint64_t rejected_records = 0;  // control records at replay that did not match the lines they name
    std::uint64_t fsyncs = 0;
    std::uint64_t fsync_errors = 0;      // failed fsyncs (the lines stay in the spool, in the kernel)
    std::uint64_t segments_reused = 0;   // landed segments prepared again instead of new files
    std::uint64_t waiting_for_room = 0;  // calls waiting for room in a full spool now (spool_full_policy=block)
};

class Spool {
public:
    // A new subdirectory of options.dir owned by this writer. Throws
    // Error(Storage) when it cannot be created.
    static std::unique_ptr<Spool> create(const SpoolOptions& options, const Logger* logger);
    // The subdirectories of options.dir with the same destination whose
    // owners are gone (their locks are free), locked and replayed. Never
    // returns one that another writer holds. Stops adopting once the adopted
    // spools hold `max_bytes` of lines still to deliver (at least one is
    // adopted), so that the memory their line positions take stays bounded;
    // the rest wait for a later call.
    static std::vector<std::unique_ptr<Spool>> adopt_orphans(const SpoolOptions& options, const Logger* logger,
                                                             std::uint64_t max_bytes = UINT64_MAX);
    // How many subdirectories of options.dir with the same destination have
    // no owner now (their locks are free): what adopt_orphans() would take.
    static std::size_t count_orphans(const SpoolOptions& options);

    ~Spool();  // unlocks; a settled spool's subdirectory is removed
    Spool(const Spool&) = delete;
    Spool& operator=(const Spool&) = delete;

    // The owner of the dedup claims of this spool's lines.
    const std::string& id() const { return id_; }

    // A line log_line() logged. The spool's lock is held while it lives, so
    // that what the caller queues for the line meanwhile (the flusher's
    // add()) is queued in sequence order. When it ends, the lock is released
    // and, under spool_fsync=always, the record synced: a failed fsync is
    // logged and counted, not thrown (the record is written, the line is
    // accepted).
    class LoggedLine {
    public:
        ~LoggedLine();
        LoggedLine(const LoggedLine&) = delete;
        LoggedLine& operator=(const LoggedLine&) = delete;
        const SpoolLineRef& ref() const { return ref_; }

    private:
        friend class Spool;
        LoggedLine(Spool& spool, std::unique_lock<std::mutex> lock, SpoolLineRef ref, std::uint64_t position)
            : spool_(spool), lock_(std::move(lock)), ref_(ref), position_(position) {}
        Spool& spool_;
        std::unique_lock<std::mutex> lock_;
        SpoolLineRef ref_;
        std::uint64_t position_;  // the spool's bytes written through this record
    };
    // Logs a line: in the kernel when this returns. When the spool is full:
    // waits (block) up to the timeout, then throws Error(Timeout); or throws
    // Error(Backpressure) at once (reject); after stop_waiting(), throws
    // Error(Closed) instead of waiting. Throws Error(Storage) when no record
    // could be written.
    LoggedLine log_line(std::string_view object_key, std::string_view dedup_key, std::string_view line);
    // log_line(), for a caller with nothing to queue under the lock.
    SpoolLineRef append_line(std::string_view object_key, std::string_view dedup_key, std::string_view line) {
        return log_line(object_key, dedup_key, line).ref();
    }

    // The writer is closing: calls waiting for room, and any that would
    // wait, throw Error(Closed) now (their lines are not taken).
    void stop_waiting();

    // Reads logged lines back (checksums verified). Throws Error(Storage).
    std::vector<SpooledLine> read(const std::vector<SpoolLineRef>& refs) const;
    // The same, appending the lines to `lines` and their dedup keys to
    // `dedup_keys` (one per ref, empty where a line has none). Refs in
    // segment order.
    void read_batch(const std::vector<SpoolLineRef>& refs, std::string& lines,
                    std::vector<std::string>& dedup_keys) const;

    std::uint64_t new_batch_id();
    // The batch is about to be written as `intent` says (durable unless
    // spool_fsync=never).
    void record_intent(const SpoolBatch& batch, const BatchIntent& intent);
    // The batch landed: its lines are no longer live. `uncommitted`: dedup
    // keys whose commit failed, kept until record_committed().
    void record_done(const SpoolBatch& batch, const std::vector<std::string>& uncommitted = {});
    // A line whose content turned out to be a duplicate: never delivered.
    void record_void(const std::string& object_key, const SpoolLineRef& line);
    // The pending commit of `batch` (record_done with keys) was made.
    void record_committed(std::uint64_t batch);

    // What replay found (adopted spools); empty for a new one. Call once.
    std::vector<SpoolRecovered> take_recovered();
    std::vector<SpoolPendingCommit> take_pending_commits();

    // True when nothing is left: no live line, no pending commit.
    bool empty() const;
    std::uint64_t last_seq() const;
    // Bytes of the lines replay found still to deliver.
    std::uint64_t recovered_bytes() const { return recovered_bytes_; }
    const std::string& path() const { return path_; }
    SpoolStats stats() const;

private:
    using Segment = spool::Segment;
    Spool(SpoolOptions options, std::string path, std::string id, const Logger* logger);
    void replay();
    void for_each_line(const std::vector<SpoolLineRef>& refs,
                       const std::function<void(std::string_view line, std::string_view dedup_key)>& fn) const;
    Segment& segment_for(std::uint64_t bytes, std::unique_lock<std::mutex>& lock);
    void populate_ahead(Segment& seg);
    void open_segment(std::uint64_t capacity);
    bool recycle(const Segment& seg);
    std::string spare_path();
    void background();
    void seal_current(std::unique_lock<std::mutex>& lock);
    void release_lines(const std::vector<SpoolLineRef>& refs);
    std::vector<std::string> delete_landed_segments(std::unique_lock<std::mutex>& lock);
    void remove_control_files(const std::vector<std::string>& paths);
    void sync_through(std::uint64_t position);
    void wait_for_room(std::uint64_t bytes, std::unique_lock<std::mutex>& lock);
    // Returns the number of the control file the record went to.
    std::uint64_t write_control(const std::function<std::string(std::uint32_t seed)>& encode, std::uint64_t max_seq,
                                bool sync);
    void open_control_file();

    SpoolOptions options_;
    std::string path_;
    std::string id_;
    const Logger* logger_;
    int lock_fd_ = -1;

    mutable std::mutex mutex_;
    std::condition_variable room_;                  // segments deleted
    bool stop_waiting_ = false;                     // closing: no call waits for room
    std::uint64_t waiting_for_room_ = 0;            // calls in wait_for_room() now
    std::condition_variable synced_cv_;             // an fsync finished
    std::vector<std::shared_ptr<Segment>> spares_;  // the next segments, prepared ahead
    bool want_spare_ = false;                       // the current segment is half full: prepare the next
    std::shared_ptr<Segment> populate_;             // for the preparer: fault these pages in
    std::uint64_t populate_from_ = 0;
    std::uint64_t next_spare_ = 1;     // names spare-<n>.seg
    bool recycle_pending_ = false;     // a landed segment waits for the preparer
    std::string recycle_path_;         // its name now
    std::uint64_t recycle_bytes_ = 0;  // the bytes it used
    std::map<std::uint64_t, std::shared_ptr<Segment>> segments_;
    std::shared_ptr<Segment> current_;
    std::vector<std::shared_ptr<Segment>> unsynced_;  // sealed, not yet fsynced
    std::vector<std::shared_ptr<Segment>> sealed_;    // for the preparer to map read-only
    bool dir_dirty_ = false;                          // segments created since the last sync
    struct ControlFile {
        std::string path;
        std::uint64_t max_seq = 0;  // the highest line seq its records name
        std::uint64_t pinned = 0;   // pending commits recorded in it
    };
    std::map<std::uint64_t, ControlFile> controls_;       // on disk, by number
    std::map<std::uint64_t, std::uint64_t> commit_file_;  // batch with a pending commit -> its control file
    std::uint64_t control_number_ = 0;                    // the one being written (0: none)
    std::mutex control_mutex_;                            // serializes control records; taken before mutex_
    int control_fd_ = -1;                                 // these three under control_mutex_
    std::uint64_t control_size_ = 0;
    std::uint32_t control_seed_ = 0;
    std::uint64_t next_control_ = 1;
    std::uint64_t next_segment_ = 1;
    std::uint64_t next_seq_ = 1;
    std::uint64_t next_batch_ = 1;
    std::uint64_t bytes_ = 0;
    std::uint64_t live_lines_ = 0;
    std::uint64_t written_ = 0;  // bytes written to segments since open
    std::uint64_t synced_ = 0;   // of those, known to be on disk
    bool syncing_ = false;
    bool stopping_ = false;
    SpoolStats stats_;
    std::vector<SpoolRecovered> recovered_;
    std::vector<SpoolPendingCommit> pending_commits_;
    std::uint64_t recovered_bytes_ = 0;
    // The background work (background()): on the process's shared thread.
    using Clock = std::chrono::steady_clock;
    std::unique_ptr<Background::Job> job_;
    bool prepares_ = false;  // a writer's own spool prepares segments ahead (an adopted one only drains)
    Clock::time_point next_sync_{};
    Clock::time_point spare_retry_at_{};
};

}  // namespace training_output
