// DirectorySink: objects are files under a root directory (key = relative
// path). The embedded default. Safe for threads and for processes sharing the
// directory: each key is guarded by a file lock, a PUT replaces the file
// atomically (rename), and an append (a multipart upload whose first part is a
// copy of the object itself) is journaled so that a crash mid-append is rolled
// back: a batch is in the file whole or not at all.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "training_output/sys/s3_sink.hpp"

namespace training_output {

struct DirectorySinkOptions {
    std::string root;
    bool fsync = true;  // fsync files and directories after each change
    // Uploaded parts are kept in this sink's memory, up to this many bytes at
    // once, and written once, at Complete, instead of to a part file first;
    // beyond it they go to files. A multipart upload is then completed by the
    // sink object that uploaded its parts (the appender always does).
    std::uint64_t memory_part_bytes = 64u << 20;
    // The longest an operation waits for a key's lock (another process may
    // hold it: appending, or hung); then it fails as Transient.
    std::chrono::milliseconds lock_timeout{10000};
};

// Throws Error(Storage) when the root cannot be created.
std::unique_ptr<S3Sink> make_directory_sink(const DirectorySinkOptions& options);

}  // namespace training_output
