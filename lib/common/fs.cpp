#include "common/fs.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <thread>

#include "common/json.hpp"
#include "training_output/error.hpp"

namespace training_output::fs {

Fd& Fd::operator=(Fd&& o) noexcept {
    if (this != &o) {
        reset();
        fd_ = o.release();
    }
    return *this;
}

Fd::~Fd() { reset(); }

void Fd::reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
}

std::string errno_message(const std::string& what, const std::string& path) {
    int e = errno;
    return what + " " + json::quote(path) + ": " + std::strerror(e);
}

bool make_dirs(const std::string& path, unsigned mode) {
    if (path.empty()) return true;
    struct stat st;
    if (::stat(path.c_str(), &st) == 0) {
        if (S_ISDIR(st.st_mode)) return true;
        errno = ENOTDIR;
        return false;
    }
    std::string parent = parent_of(path);
    if (!parent.empty() && parent != path && !make_dirs(parent, mode)) return false;
    if (::mkdir(path.c_str(), mode) != 0 && errno != EEXIST) return false;
    return true;
}

bool write_all(int fd, std::string_view data) {
    const char* p = data.data();
    std::size_t left = data.size();
    while (left > 0) {
        ssize_t n = ::write(fd, p, left);
        if (n < 0) {
            if (errno == EINTR) continue;
            return false;
        }
        p += n;
        left -= static_cast<std::size_t>(n);
    }
    return true;
}

bool read_at(int fd, std::uint64_t offset, std::uint64_t size, std::string& out) {
    out.resize(size);
    std::uint64_t done = 0;
    while (done < size) {
        ssize_t n = ::pread(fd, out.data() + done, size - done, static_cast<off_t>(offset + done));
        if (n < 0) {
            if (errno == EINTR) continue;
            return false;
        }
        if (n == 0) break;
        done += static_cast<std::uint64_t>(n);
    }
    out.resize(done);
    return true;
}

bool fsync_dir(const std::string& path) {
    Fd fd(::open(path.empty() ? "." : path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!fd.valid()) return false;
    return ::fsync(fd.get()) == 0;
}

std::string parent_of(const std::string& path) {
    auto pos = path.find_last_of('/');
    if (pos == std::string::npos) return "";
    if (pos == 0) return "/";
    return path.substr(0, pos);
}

std::string absolute_path(const std::string& path, const char* key) {
    std::error_code ec;
    std::filesystem::path p = std::filesystem::absolute(path, ec);
    if (!ec) p = std::filesystem::weakly_canonical(p, ec);
    if (ec) {
        throw Error(ErrorCode::Config, "configuration key " + json::quote(key) + ": cannot resolve " +
                                           json::quote(path) + ": " + ec.message());
    }
    std::string out = p.string();
    while (out.size() > 1 && out.back() == '/') out.pop_back();
    return out;
}

void remove_tree(const std::string& path) {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
}

FileLock FileLock::acquire(const std::string& path) {
    FileLock lock;
    lock.fd_ = Fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
    if (!lock.fd_.valid()) throw Error(ErrorCode::Storage, errno_message("cannot open lock file", path));
    while (::flock(lock.fd_.get(), LOCK_EX) != 0) {
        if (errno != EINTR) throw Error(ErrorCode::Storage, errno_message("cannot lock", path));
    }
    return lock;
}

FileLock FileLock::acquire_until(const std::string& path, std::chrono::steady_clock::time_point deadline,
                                 const std::atomic<bool>* stop) {
    FileLock lock;
    lock.fd_ = Fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
    if (!lock.fd_.valid()) throw Error(ErrorCode::Storage, errno_message("cannot open lock file", path));
    for (int attempt = 0;; ++attempt) {
        if (::flock(lock.fd_.get(), LOCK_EX | LOCK_NB) == 0) return lock;
        if (errno != EWOULDBLOCK && errno != EINTR) throw Error(ErrorCode::Storage, errno_message("cannot lock", path));
        if ((stop && stop->load()) || std::chrono::steady_clock::now() >= deadline) {
            throw Error(ErrorCode::Timeout, "the lock " + json::quote(path) +
                                                " is held by another process (appending, or hung); gave up waiting");
        }
        // Short waits first: a lock is mostly held for one append.
        std::this_thread::sleep_for(std::chrono::microseconds(std::min(100 << std::min(attempt, 7), 10000)));
    }
}

FileLock FileLock::try_acquire(const std::string& path) {
    FileLock lock;
    Fd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
    if (!fd.valid()) throw Error(ErrorCode::Storage, errno_message("cannot open lock file", path));
    if (::flock(fd.get(), LOCK_EX | LOCK_NB) == 0) lock.fd_ = std::move(fd);
    return lock;
}

}  // namespace training_output::fs
