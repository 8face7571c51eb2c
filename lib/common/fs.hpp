// POSIX file helpers shared by the directory sink and the spool.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace training_output::fs {

// Owns a file descriptor.
class Fd {
public:
    Fd() = default;
    explicit Fd(int fd) : fd_(fd) {}
    Fd(Fd&& o) noexcept : fd_(o.release()) {}
    Fd& operator=(Fd&& o) noexcept;
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    ~Fd();
    int get() const { return fd_; }
    bool valid() const { return fd_ >= 0; }
    int release() {
        int fd = fd_;
        fd_ = -1;
        return fd;
    }
    void reset();

private:
    int fd_ = -1;
};

// "<what> <path>: <strerror(errno)>"
std::string errno_message(const std::string& what, const std::string& path);

// mkdir -p; false (errno set) on failure.
bool make_dirs(const std::string& path, unsigned mode = 0755);
// Writes all of `data` (retrying short writes and EINTR); false on error.
bool write_all(int fd, std::string_view data);
// Reads up to `size` bytes at `offset`; false on error.
bool read_at(int fd, std::uint64_t offset, std::uint64_t size, std::string& out);
// fsync of a directory (after creating, renaming or removing an entry).
bool fsync_dir(const std::string& path);
std::string parent_of(const std::string& path);
// `path` made absolute (against the working directory) and canonical: the
// part that exists with its symbolic links, "." and ".." resolved, the rest
// normalized; no trailing '/'. The identity of a file for writers started in
// different directories. Throws Error(Config) naming `key` when it cannot be
// resolved.
std::string absolute_path(const std::string& path, const char* key);
// Removes a directory tree; ignores what is already gone.
void remove_tree(const std::string& path);

// An exclusive flock() held for the lifetime of the object. Locks are per
// open file, so they exclude threads of one process as well as processes.
class FileLock {
public:
    FileLock() = default;
    // Blocks until the lock is held; throws Error(Storage) if the lock file
    // cannot be opened.
    static FileLock acquire(const std::string& path);
    // Waits for the lock until `deadline`, or until `stop` (when given)
    // becomes true; then throws Error(Timeout).
    static FileLock acquire_until(const std::string& path, std::chrono::steady_clock::time_point deadline,
                                  const std::atomic<bool>* stop);
    // Returns an unlocked FileLock (valid() == false) when someone else holds it.
    static FileLock try_acquire(const std::string& path);
    bool valid() const { return fd_.valid(); }
    int fd() const { return fd_.get(); }

private:
    Fd fd_;
};

}  // namespace training_output::fs
