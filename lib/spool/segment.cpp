// Spool files (see segment.hpp).
#include "spool/segment.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/json.hpp"

namespace training_output::spool {

Segment::~Segment() {
    if (map) ::munmap(map, capacity);
}

bool Segment::map_file(std::uint64_t bytes, bool writable_map) {
    if (bytes == 0) return true;
    void* m = ::mmap(nullptr, bytes, PROT_READ | (writable_map ? PROT_WRITE : 0), MAP_SHARED, fd.get(), 0);
    if (m == MAP_FAILED) return false;
    map = static_cast<char*>(m);
    capacity = bytes;
    writable = writable_map;
    return true;
}

void Segment::populate(std::uint64_t from, std::uint64_t bytes) {
    if (!map || from >= capacity) return;
    bytes = std::min(bytes, capacity - from);
#ifdef MADV_POPULATE_WRITE
    // Whole pages only; a failure (an older kernel) leaves it to the writes.
    const std::uint64_t page = 4096;
    const std::uint64_t start = from / page * page;
    (void)::madvise(map + start, (from + bytes - start + page - 1) / page * page, MADV_POPULATE_WRITE);
#else
    (void)from;
    (void)bytes;
#endif
}

void Segment::make_read_only() {
    if (!map || !writable.exchange(false)) return;
    void* m = ::mmap(map, capacity, PROT_READ, MAP_SHARED | MAP_FIXED, fd.get(), 0);
    if (m == MAP_FAILED) ::mprotect(map, capacity, PROT_READ);  // the same effect, flushed page by page
}

Error storage_error(const std::string& what, const std::string& path) {
    return Error(ErrorCode::Storage, fs::errno_message(what, path));
}

std::shared_ptr<Segment> make_segment_file(const std::string& path, std::uint64_t capacity) {
    auto seg = std::make_shared<Segment>();
    seg->path = path;
    seg->fd = fs::Fd(::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (!seg->fd.valid()) throw storage_error("cannot create spool segment", path);
    const int rc = ::posix_fallocate(seg->fd.get(), 0, static_cast<off_t>(capacity));
    if (rc != 0 || !seg->map_file(capacity)) {
        errno = rc ? rc : errno;
        Error e = storage_error("cannot allocate spool segment", path);
        ::unlink(path.c_str());
        throw e;
    }
    return seg;
}

std::shared_ptr<Segment> reuse_segment_file(const std::string& path, std::uint64_t capacity, std::uint64_t used) {
    auto seg = std::make_shared<Segment>();
    seg->path = path;
    seg->fd = fs::Fd(::open(path.c_str(), O_RDWR | O_CLOEXEC));
    struct stat st;
    if (!seg->fd.valid() || ::fstat(seg->fd.get(), &st) != 0) throw storage_error("cannot open spool segment", path);
    if (static_cast<std::uint64_t>(st.st_size) < capacity || used > capacity) {
        throw Error(ErrorCode::Storage, "spool segment " + json::quote(path) + " is not the size it was made");
    }
    if (!seg->map_file(capacity)) throw storage_error("cannot map spool segment", path);
    std::memset(seg->map, 0, used);
    return seg;
}

std::shared_ptr<Segment> open_segment_file(const std::string& path, std::uint64_t number) {
    auto seg = std::make_shared<Segment>();
    seg->number = number;
    seg->path = path;
    seg->fd = fs::Fd(::open(path.c_str(), O_RDWR | O_CLOEXEC));
    struct stat st;
    if (!seg->fd.valid() || ::fstat(seg->fd.get(), &st) != 0) throw storage_error("cannot open spool file", path);
    if (!seg->map_file(static_cast<std::uint64_t>(st.st_size))) throw storage_error("cannot map spool file", path);
    return seg;
}

std::vector<std::string> list_dir(const std::string& dir) {
    std::vector<std::string> names;
    DIR* d = ::opendir(dir.c_str());
    if (!d) return names;
    while (dirent* e = ::readdir(d)) {
        std::string name = e->d_name;
        if (name != "." && name != "..") names.push_back(std::move(name));
    }
    ::closedir(d);
    std::sort(names.begin(), names.end());
    return names;
}

int lock_existing(const std::string& lock_path) {
    fs::Fd fd(::open(lock_path.c_str(), O_RDWR | O_CLOEXEC));
    if (!fd.valid()) return -1;
    if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) return -1;
    // The previous holder may have removed the directory after we opened it.
    struct stat held, now;
    if (::fstat(fd.get(), &held) != 0 || ::stat(lock_path.c_str(), &now) != 0) return -1;
    if (held.st_ino != now.st_ino || held.st_dev != now.st_dev) return -1;
    return fd.release();
}

}  // namespace training_output::spool
