// Spool files: segments (preallocated, memory-mapped files of LINE records),
// the directory listing and the lock of a spool directory.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/fs.hpp"
#include "training_output/error.hpp"

namespace training_output::spool {

// A segment file, preallocated and mapped: logging a record is a memcpy into
// the page cache, which survives the process (not the machine: that is what
// fsync is for). Preallocation (posix_fallocate) makes a full disk an error at
// creation instead of a SIGBUS at a write. Pages are faulted in as the
// segment fills (populate_ahead), not all at creation: an idle writer holds
// no segment memory, and a line costs the pages it is written to.
struct Segment {
    std::uint64_t number = 0;
    std::string path;
    fs::Fd fd;
    char* map = nullptr;
    std::uint64_t capacity = 0;
    std::uint64_t size = 0;                // bytes used
    std::uint64_t live = 0;                // lines in it not yet landed or voided
    std::uint64_t first_seq = UINT64_MAX;  // of its first line
    std::uint32_t seed = 0;                // of its records' checksums
    std::atomic<bool> writable{false};     // mapped for writing (until sealed)
    std::uint64_t populated = 0;           // bytes from the start faulted in ahead of the writes

    Segment() = default;
    Segment(const Segment&) = delete;
    Segment& operator=(const Segment&) = delete;
    ~Segment();

    // Maps `bytes` of the file.
    bool map_file(std::uint64_t bytes, bool writable_map = true);
    // Faults [from, from + bytes) in writable, so that the records written
    // there cost a copy, not a page fault each (kernels with
    // MADV_POPULATE_WRITE; elsewhere the writes fault them in).
    void populate(std::uint64_t from, std::uint64_t bytes);
    // Once nothing more is written to it: the same pages, mapped read-only
    // (writing back pages that are mapped writable costs a TLB shootdown per
    // page; replacing the mapping in one call costs one flush).
    void make_read_only();
};

// A new segment file of `capacity` bytes, allocated and mapped.
std::shared_ptr<Segment> make_segment_file(const std::string& path, std::uint64_t capacity);
// A landed segment's file made ready again: mapped, the `used` bytes of
// records it held zeroed (replay ends at the first zeros, as in a
// new file; were the zeros lost to a power loss, the old records still fail
// their checksums, seeded with the number the file had then).
std::shared_ptr<Segment> reuse_segment_file(const std::string& path, std::uint64_t capacity, std::uint64_t used);
// An existing file mapped as a whole, for replay (read and write: a torn
// tail is zeroed). Throws Error(Storage).
std::shared_ptr<Segment> open_segment_file(const std::string& path, std::uint64_t number);

// The entries of a directory, sorted; empty when it cannot be read.
std::vector<std::string> list_dir(const std::string& dir);

Error storage_error(const std::string& what, const std::string& path);

// The lock of an existing spool directory, when it is free and still in
// place; -1 otherwise.
int lock_existing(const std::string& lock_path);

}  // namespace training_output::spool
