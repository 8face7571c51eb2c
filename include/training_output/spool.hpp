// Spool: a writer's local write-ahead log. generate() returns once its line is
// in the log, so a crash of the process (even SIGKILL) after the call returned
// loses nothing; the flusher appends the logged lines to their objects in the
// background and records, per batch, where it is about to write (an
// AppendIntent) and when it landed, so that recovery appends every line
// exactly once.
//
// On disk, writers share one spool directory; each live writer owns a
// subdirectory `w-<id>` under an exclusive flock():
//
//   <spool_dir>/w-<id>/lock              held while the owner lives
//   <spool_dir>/w-<id>/seg-<n>.log       segments: an 8-byte magic, then LINE records
//   <spool_dir>/w-<id>/ctl-<n>.log       control files: the magic, then INTENT and DONE records
//   <spool_dir>/w-<id>/spare-<n>.seg     segments prepared ahead (new, or landed ones reused)
//
// Segments are preallocated and memory-mapped: logging a line is a copy into
// the page cache, no system call; the unused rest of a segment is zeros. A
// full segment is mapped read-only before it is synced (writing back pages
// that are mapped writable costs a TLB shootdown per page). Control records
// are few (two per batch) and written with write(), so that syncing an
// INTENT does not sync the lines logged since the last batch.
// A record is  crc32c (4, of what follows) | length (4) | payload, little
// endian, the checksum seeded with the CRC-32C of the file's number (8 bytes;
// the magic "TDOSPL2\n" says so, "TDOSPL1\n" files are unseeded), so that a
// reused segment's records from an earlier life never pass for its own;
// payloads are a type byte then fields (u64, or u32-length-prefixed bytes):
//   LINE   seq, object key, dedup key, line
//   INTENT first seq, last seq, object key, ETag, object size
//   DONE   first seq, last seq, object key
// A batch is always the lines of one object key with seq in [first, last].
// A record whose checksum or length does not match ends its file: the tail
// a crash tore off is dropped (zeroed), the records before it are recovered.
// Replay reads every segment, then the control files, in number order.
//
// Segments are deleted oldest first once every line in them landed; a
// control file once no segment holds a line its records name, so that the
// INTENT and DONE records of a line that is still spooled are never lost.
// A writer that opens adopts the subdirectories whose owner died (their lock
// is free), delivers what they hold and removes them; flock() makes sure no
// orphan is adopted by two writers.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "training_output/log.hpp"
#include "training_output/object_appender.hpp"

namespace training_output {

enum class SpoolFsync { Interval, Always, Never };
enum class SpoolFullPolicy { Block, Reject };

// "interval" | "always" | "never"; "block" | "reject". Throw Error(Config).
SpoolFsync parse_spool_fsync(const std::string& text);
SpoolFullPolicy parse_spool_full_policy(const std::string& text);

struct SpoolOptions {
    std::string dir;  // shared by the writers of one configuration
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
    std::string dedup_key;  // empty: nothing to commit
};

// What replaying a spool found for one object key.
struct SpoolRecovered {
    std::string object_key;
    std::vector<SpoolLineRef> lines;  // not yet landed, in order
    // The last batch that was being appended when the owner died: its lines
    // [first, last] may be in the object already; check before appending.
    struct Pending {
        std::uint64_t first = 0, last = 0;
        AppendIntent intent;
    };
    std::optional<Pending> pending;
};

struct SpoolStats {
    std::uint64_t bytes = 0;         // segment bytes on disk
    std::uint64_t segments = 0;
    std::uint64_t torn_records = 0;  // dropped at replay (bad checksum or length)
    std::uint64_t fsyncs = 0;
    std::uint64_t segments_reused = 0;  // landed segments prepared again instead of new files
};

class Spool {
public:
    // A new subdirectory of options.dir owned by this writer. Throws
    // Error(Storage) when it cannot be created.
    static std::unique_ptr<Spool> create(const SpoolOptions& options, const Logger* logger);
    // The subdirectories of options.dir whose owners are gone (their locks are
    // free), locked and replayed. Never returns one that another writer holds.
    // Stops adopting once the adopted spools hold `max_bytes` of lines still
    // to deliver (at least one is adopted), so that the memory their line
    // positions take stays bounded; the rest wait for a later call.
    static std::vector<std::unique_ptr<Spool>> adopt_orphans(const SpoolOptions& options, const Logger* logger,
                                                             std::uint64_t max_bytes = UINT64_MAX);

    ~Spool();  // unlocks; an empty spool's subdirectory is removed
    Spool(const Spool&) = delete;
    Spool& operator=(const Spool&) = delete;

    // Logs a line: in the kernel when this returns (fsync per policy). When
    // the spool is full: waits (block) up to the timeout, then throws
    // Error(Timeout); or throws Error(Backpressure) at once (reject). Throws
    // Error(Storage) when the disk fails.
    SpoolLineRef append_line(std::string_view object_key, std::string_view dedup_key, std::string_view line);

    // Reads logged lines back (checksums verified). Throws Error(Storage).
    std::vector<SpooledLine> read(const std::vector<SpoolLineRef>& refs) const;
    // The same, appending the lines to `lines` and their non-empty dedup keys
    // to `dedup_keys` (refs in segment order, as the flusher keeps them).
    void read_batch(const std::vector<SpoolLineRef>& refs, std::string& lines,
                    std::vector<std::string>& dedup_keys) const;

    // The batch [first, last] of `object_key` is about to be written at `intent`.
    void record_intent(const std::string& object_key, std::uint64_t first, std::uint64_t last,
                       const AppendIntent& intent);
    // The batch landed: its lines are forgotten; segments holding nothing
    // else still pending are deleted.
    void record_done(const std::string& object_key, std::uint64_t first, std::uint64_t last,
                     const std::vector<SpoolLineRef>& refs);

    // What replay found (adopted spools); empty for a new one. Call once.
    std::vector<SpoolRecovered> take_recovered();

    // True when nothing is left to deliver.
    bool empty() const;
    std::uint64_t last_seq() const;
    // Bytes of the lines replay found still to deliver.
    std::uint64_t recovered_bytes() const { return recovered_bytes_; }
    const std::string& path() const { return path_; }
    SpoolStats stats() const;

private:
    struct Segment;
    Spool(SpoolOptions options, std::string path, const Logger* logger);
    void replay();
    void for_each_line(const std::vector<SpoolLineRef>& refs,
                       const std::function<void(std::string_view line, std::string_view dedup_key)>& fn) const;
    Segment& segment_for(std::uint64_t bytes, std::unique_lock<std::mutex>& lock);
    void open_segment(std::uint64_t capacity);
    static std::shared_ptr<Segment> make_segment_file(const std::string& path, std::uint64_t capacity);
    static std::shared_ptr<Segment> reuse_segment_file(const std::string& path, std::uint64_t capacity,
                                                       std::uint64_t used);
    bool recycle(const Segment& seg);
    std::string spare_path();
    void preparer();
    void seal_current(std::unique_lock<std::mutex>& lock);
    std::vector<std::string> delete_landed_segments(std::unique_lock<std::mutex>& lock);
    void remove_control_files(const std::vector<std::string>& paths);
    void sync_through(std::uint64_t position);
    void syncer();
    void wait_for_room(std::uint64_t bytes, std::unique_lock<std::mutex>& lock);
    void write_control(std::string& record, std::uint64_t last, bool sync);
    void open_control_file();

    SpoolOptions options_;
    std::string path_;
    const Logger* logger_;
    int lock_fd_ = -1;

    mutable std::mutex mutex_;
    std::condition_variable room_;      // segments deleted
    std::condition_variable synced_cv_; // an fsync finished
    std::condition_variable syncer_cv_;
    std::condition_variable preparer_cv_;
    std::vector<std::shared_ptr<Segment>> spares_;  // the next segments, prepared ahead
    std::uint64_t next_spare_ = 1;                  // names spare-<n>.seg
    bool recycle_pending_ = false;    // a landed segment waits for the preparer
    std::string recycle_path_;        // its name now
    std::uint64_t recycle_bytes_ = 0; // the bytes it used
    std::map<std::uint64_t, std::shared_ptr<Segment>> segments_;
    std::shared_ptr<Segment> current_;
    std::vector<std::shared_ptr<Segment>> unsynced_;  // sealed, not yet fsynced
    std::vector<std::shared_ptr<Segment>> sealed_;    // for the preparer to map read-only
    bool dir_dirty_ = false;                           // segments created since the last sync
    struct ControlFile {
        std::string path;
        std::uint64_t max_last = 0;  // the highest line seq its records name
    };
    std::map<std::uint64_t, ControlFile> controls_;  // on disk, by number
    std::uint64_t control_number_ = 0;               // the one being written (0: none)
    std::mutex control_mutex_;  // serializes control records; taken before mutex_
    int control_fd_ = -1;       // these three under control_mutex_
    std::uint64_t control_size_ = 0;
    std::uint32_t control_seed_ = 0;
    std::uint64_t next_control_ = 1;
    std::uint64_t next_segment_ = 1;
    std::uint64_t next_seq_ = 1;
    std::uint64_t bytes_ = 0;
    std::uint64_t live_lines_ = 0;
    std::uint64_t written_ = 0;  // bytes written to segments since open
    std::uint64_t synced_ = 0;   // of those, known to be on disk
    bool syncing_ = false;
    bool stopping_ = false;
    SpoolStats stats_;
    std::vector<SpoolRecovered> recovered_;
    std::uint64_t recovered_bytes_ = 0;
    std::thread syncer_;
    std::thread preparer_;
};

}  // namespace training_output
