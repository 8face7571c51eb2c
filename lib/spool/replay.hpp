// Replay: what a spool's files say is still to do. A pure function of the
// files' bytes, so that it can be fuzzed without a file system.
//
// Every segment is read first (LINE records), then every control file in
// number order: a control record only ever names lines logged before it.
// A record that does not match the lines it names (a seq logged under another
// object key, a DONE whose lines differ from its batch's INTENT) is rejected
// and counted, never applied. A record whose checksum or length does not
// match ends its file: the tail a crash tore off is dropped.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "spool/spool.hpp"

namespace training_output::spool {

struct ReplayFile {
    std::uint64_t number = 0;
    std::string_view data;  // the whole file
};

struct ReplayedFile {
    std::uint64_t end = 0;                 // where its valid records end (the rest is zeros or torn)
    bool torn = false;                     // non-zero bytes after `end`
    std::uint64_t live = 0;                // segments: live lines in it
    std::uint64_t first_seq = UINT64_MAX;  // segments: its first line
    std::uint64_t max_seq = 0;             // control files: the highest seq its records name
};

struct ReplayResult {
    std::vector<ReplayedFile> segments;  // in the order given
    std::vector<ReplayedFile> controls;
    std::vector<SpoolRecovered> recovered;
    struct Commit {
        SpoolPendingCommit commit;
        std::uint64_t control = 0;  // the control file that records it
    };
    std::vector<Commit> commits;
    std::uint64_t next_seq = 1;
    std::uint64_t next_batch = 1;
    std::uint64_t live_lines = 0;
    std::uint64_t recovered_bytes = 0;
    std::uint64_t torn_records = 0;
    std::uint64_t rejected_records = 0;
    std::vector<std::string> notes;  // one per torn file or rejected record (at most a few dozen)
};

ReplayResult replay_files(const std::vector<ReplayFile>& segments, const std::vector<ReplayFile>& controls);

}  // namespace training_output::spool
