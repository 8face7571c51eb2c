// Spool: the writer's write-ahead log (format and rules in spool.hpp).
#include "training_output/spool.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "common/crc32c.hpp"
#include "common/fs.hpp"
#include "common/json.hpp"
#include "common/random.hpp"
#include "training_output/error.hpp"

namespace training_output {
namespace {

// 8 bytes at the start of every file. Version 2 seeds each record's checksum
// with the file's number, so that records a reused segment held in an earlier
// life never pass for its own; version 1 files (unseeded) are still read.
constexpr char kMagic[] = "TDOSPL2\n";
constexpr char kMagicV1[] = "TDOSPL1\n";
constexpr char kSparePrefix[] = "spare-";  // spare-<n>.seg: a segment prepared ahead
constexpr std::size_t kMaxSpares = 2;       // prepared at once (a new one and a reused one)
constexpr std::size_t kMagicBytes = 8;
constexpr std::size_t kHeaderBytes = 8;                 // crc32c + length
constexpr std::uint32_t kMaxPayload = (1u << 30);        // larger lengths are torn records
constexpr std::uint64_t kControlFileBytes = 1u << 20;    // a control file is this large at most (about)
enum RecordType : unsigned char { kLine = 1, kIntent = 2, kDone = 3 };

// --- encoding ---------------------------------------------------------------

// Encodings into memory with room for them; they return the end.
char* put_u32_at(char* p, std::uint32_t v) {
    for (int i = 0; i < 4; ++i) *p++ = static_cast<char>((v >> (8 * i)) & 0xFF);
    return p;
}
char* put_u64_at(char* p, std::uint64_t v) {
    for (int i = 0; i < 8; ++i) *p++ = static_cast<char>((v >> (8 * i)) & 0xFF);
    return p;
}
char* put_bytes_at(char* p, std::string_view s) {
    p = put_u32_at(p, static_cast<std::uint32_t>(s.size()));
    if (!s.empty()) std::memcpy(p, s.data(), s.size());
    return p + s.size();
}
// The same, appended to a string.
void put_u64(std::string& out, std::uint64_t v) {
    char b[8];
    out.append(b, static_cast<std::size_t>(put_u64_at(b, v) - b));
}
void put_bytes(std::string& out, std::string_view s) {
    char b[4];
    out.append(b, static_cast<std::size_t>(put_u32_at(b, static_cast<std::uint32_t>(s.size())) - b));
    out.append(s.data(), s.size());
}
std::uint32_t get_u32_at(std::string_view s, std::size_t pos) {
    std::uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v |= std::uint32_t(static_cast<unsigned char>(s[pos + i])) << (8 * i);
    return v;
}

// Starts a record: room for the header, then the type byte.
std::string begin_record(RecordType type, std::size_t payload_hint) {
    std::string r;
    r.reserve(kHeaderBytes + 1 + payload_hint);
    r.resize(kHeaderBytes);
    r.push_back(static_cast<char>(type));
    return r;
}
// Where the checksums of a file's records start: the CRC of its number
// (version 2), or 0 (version 1).
std::uint32_t checksum_seed(std::uint64_t file_number) {
    char n[8];
    put_u64_at(n, file_number);
    return crc32c::compute(std::string_view(n, 8));
}

// Fills in the length and the checksum over length + payload.
void end_record(std::string& r, std::uint32_t seed) {
    put_u32_at(&r[4], static_cast<std::uint32_t>(r.size() - kHeaderBytes));
    put_u32_at(&r[0], crc32c::compute(std::string_view(r).substr(4), seed));
}

// Reads the fields of one payload; any overrun makes ok() false.
class Fields {
public:
    explicit Fields(std::string_view payload) : s_(payload) {}
    unsigned char type() { return ok_ && pos_ < s_.size() ? static_cast<unsigned char>(s_[pos_++]) : (ok_ = false, 0); }
    std::uint64_t u64() {
        if (!ok_ || s_.size() - pos_ < 8) return ok_ = false, 0;
        std::uint64_t v = 0;
        for (int i = 0; i < 8; ++i) v |= std::uint64_t(static_cast<unsigned char>(s_[pos_ + i])) << (8 * i);
        pos_ += 8;
        return v;
    }
    std::string_view bytes() {
        if (!ok_ || s_.size() - pos_ < 4) return ok_ = false, std::string_view();
        const std::uint32_t n = get_u32_at(s_, pos_);
        pos_ += 4;
        if (s_.size() - pos_ < n) return ok_ = false, std::string_view();
        auto v = s_.substr(pos_, n);
        pos_ += n;
        return v;
    }
    bool ok() const { return ok_ && pos_ == s_.size(); }

private:
    std::string_view s_;
    std::size_t pos_ = 0;
    bool ok_ = true;
};

// The record starting at `pos` of `data`: its payload, or nullopt when the
// bytes there are not a whole record with a matching checksum.
std::optional<std::string_view> record_at(std::string_view data, std::size_t pos, std::uint32_t seed) {
    if (data.size() - pos < kHeaderBytes) return std::nullopt;
    const std::uint32_t crc = get_u32_at(data, pos);
    const std::uint32_t len = get_u32_at(data, pos + 4);
    if (len == 0 || len > kMaxPayload || data.size() - pos - kHeaderBytes < len) return std::nullopt;
    if (crc32c::compute(data.substr(pos + 4, 4 + std::size_t(len)), seed) != crc) return std::nullopt;
    return data.substr(pos + kHeaderBytes, len);
}

// "seg-<n>.log" or "ctl-<n>.log", the number zero-padded so that names sort.
std::string file_name(const char* prefix, std::uint64_t n) {
    char buf[40];
    std::snprintf(buf, sizeof buf, "%s-%020llu.log", prefix, static_cast<unsigned long long>(n));
    return buf;
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

Error storage_error(const std::string& what, const std::string& path) {
    return Error(ErrorCode::Storage, fs::errno_message(what, path));
}

// The lock of an existing subdirectory, when it is free and still in place;
// -1 otherwise.
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

}  // namespace

SpoolFsync parse_spool_fsync(const std::string& text) {
    if (text == "interval") return SpoolFsync::Interval;
    if (text == "always") return SpoolFsync::Always;
    if (text == "never") return SpoolFsync::Never;
    throw Error(ErrorCode::Config, "configuration key \"spool_fsync\": expected one of interval, always, never, got " +
                                       json::quote(text));
}

SpoolFullPolicy parse_spool_full_policy(const std::string& text) {
    if (text == "block") return SpoolFullPolicy::Block;
    if (text == "reject") return SpoolFullPolicy::Reject;
    throw Error(ErrorCode::Config,
                "configuration key \"spool_full_policy\": expected one of block, reject, got " + json::quote(text));
}

// A segment file, preallocated and mapped: logging a record is a memcpy into
// the page cache, which survives the process (not the machine: that is what
// fsync is for). Preallocation (posix_fallocate) makes a full disk an error at
// creation instead of a SIGBUS at a write.
struct Spool::Segment {
    std::uint64_t number = 0;
    std::string path;
    fs::Fd fd;
    char* map = nullptr;
    std::uint64_t capacity = 0;
    std::uint64_t size = 0;  // bytes used
    std::uint64_t live = 0;  // lines in it not yet landed
    std::uint64_t first_seq = UINT64_MAX;  // of its first line
    std::uint32_t seed = 0;                // of its records' checksums
    std::atomic<bool> writable{false};     // mapped for writing (until sealed)

    ~Segment() {
        if (map) ::munmap(map, capacity);
    }
    // `populate`: fault the pages in now, so that writing a record costs a
    // copy, not a page-cache allocation.
    bool map_file(std::uint64_t bytes, bool populate) {
        if (bytes == 0) return true;
        void* m = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
        if (m == MAP_FAILED) return false;
        map = static_cast<char*>(m);
        capacity = bytes;
        writable = true;
        if (populate) {
            // Each page faulted in writable and dirty: the writes that follow
            // take no fault until a sync. In one call where the kernel has
            // MADV_POPULATE_WRITE (5.14), else by writing zeros over zeros.
#ifdef MADV_POPULATE_WRITE
            if (::madvise(map, bytes, MADV_POPULATE_WRITE) == 0) return true;
#endif
            volatile char* p = map;
            for (std::uint64_t i = 0; i < bytes; i += 4096) p[i] = 0;
        }
        return true;
    }
    // Once nothing more is written to it: the same pages, mapped read-only.
    // Writing a page back write-protects every writable mapping of it, one
    // TLB shootdown (an interrupt to every core) per page; replacing the
    // mapping in one call drops those entries with a single flush, and
    // readers of `map` see the same bytes throughout.
    void make_read_only() {
        if (!map || !writable.exchange(false)) return;
        void* m = ::mmap(map, capacity, PROT_READ, MAP_SHARED | MAP_FIXED, fd.get(), 0);
        if (m == MAP_FAILED) ::mprotect(map, capacity, PROT_READ);  // the same effect, flushed page by page
    }
};

Spool::Spool(SpoolOptions options, std::string path, const Logger* logger)
    : options_(std::move(options)), path_(std::move(path)), logger_(logger) {
    if (options_.segment_bytes == 0) {
        options_.segment_bytes = std::clamp<std::uint64_t>(options_.max_bytes / 16, 64u << 10, 16u << 20);
    }
    if (options_.fsync == SpoolFsync::Interval) syncer_ = std::thread([this] { syncer(); });
}

std::unique_ptr<Spool> Spool::create(const SpoolOptions& options, const Logger* logger) {
    if (!fs::make_dirs(options.dir, 0700)) throw storage_error("cannot create spool directory", options.dir);
    for (int tries = 0; tries < 16; ++tries) {
        const std::string name = "w-" + random::token_hex(8);
        const std::string staging = options.dir + "/.new-" + name;
        const std::string final_path = options.dir + "/" + name;
        if (::mkdir(staging.c_str(), 0700) != 0) {
            if (errno == EEXIST) continue;
            throw storage_error("cannot create spool directory", staging);
        }
        fs::Fd fd(::open((staging + "/lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
        if (!fd.valid()) throw storage_error("cannot create lock file in", staging);
        // Only a cleaner of stale staging directories can race us here; let it win.
        if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) continue;
        if (::rename(staging.c_str(), final_path.c_str()) != 0) {
            if (errno == ENOENT) continue;
            throw storage_error("cannot rename spool directory", staging);
        }
        fs::fsync_dir(options.dir);
        std::unique_ptr<Spool> s(new Spool(options, final_path, logger));
        s->lock_fd_ = fd.release();
        try {
            // The first segment is ready before the first call, not made by it.
            s->spares_.push_back(make_segment_file(s->spare_path(), s->options_.segment_bytes));
        } catch (const Error&) {
            // The disk may be full: the preparer tries again, the first call says so if it must.
        }
        s->preparer_ = std::thread([p = s.get()] { p->preparer(); });
        return s;
    }
    throw Error(ErrorCode::Storage, "cannot create a spool directory in " + json::quote(options.dir));
}

std::vector<std::unique_ptr<Spool>> Spool::adopt_orphans(const SpoolOptions& options, const Logger* logger,
                                                         std::uint64_t max_bytes) {
    std::vector<std::unique_ptr<Spool>> out;
    std::uint64_t adopted_bytes = 0;
    for (const auto& name : list_dir(options.dir)) {
        if (!out.empty() && adopted_bytes >= max_bytes) break;
        const std::string dir = options.dir + "/" + name;
        if (name.rfind(".new-", 0) == 0) {
            // A writer died between creating and naming its directory: nothing in it.
            struct stat st;
            if (::stat(dir.c_str(), &st) == 0 && std::time(nullptr) - st.st_mtime > 60) {
                int fd = lock_existing(dir + "/lock");
                if (fd >= 0) {
                    fs::remove_tree(dir);
                    ::close(fd);
                }
            }
            continue;
        }
        if (name.rfind("w-", 0) != 0) continue;
        int fd = lock_existing(dir + "/lock");
        if (fd < 0) continue;  // a live writer's, or being removed
        std::unique_ptr<Spool> s(new Spool(options, dir, logger));
        s->lock_fd_ = fd;
        try {
            s->replay();
        } catch (const Error& e) {
            // Leave it (unlocked) for a later attempt; the others are still adopted.
            if (logger) {
                logger->log(LogLevel::Error, "training_output_spool_error",
                            {{"spool", dir}, {"error", e.what()}, {"detail", "cannot replay an orphaned spool"}});
            }
            s->live_lines_ = 1;  // not empty as far as we know: keep its files
            continue;
        }
        if (logger) {
            logger->log(LogLevel::Warning, "training_output_spool_adopted",
                        {{"spool", dir},
                         {"lines", s->live_lines_},
                         {"torn_records", s->stats_.torn_records},
                         {"detail", "delivering what a writer that stopped left"}});
        }
        adopted_bytes += s->recovered_bytes_;
        out.push_back(std::move(s));
    }
    return out;
}

Spool::~Spool() {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        stopping_ = true;
    }
    syncer_cv_.notify_all();
    preparer_cv_.notify_all();
    if (syncer_.joinable()) syncer_.join();
    if (preparer_.joinable()) preparer_.join();
    std::unique_lock<std::mutex> lock(mutex_);
    spares_.clear();
    // Ours, and those of the writer whose spool this was, if it was adopted.
    for (const auto& name : list_dir(path_)) {
        if (name.rfind("spare", 0) == 0) ::unlink((path_ + "/" + name).c_str());
    }
    if (control_fd_ >= 0) {
        if (live_lines_ > 0 && options_.fsync != SpoolFsync::Never) ::fdatasync(control_fd_);  // the DONE records
        ::close(control_fd_);
        control_fd_ = -1;
    }
    if (live_lines_ == 0) {
        for (auto& [n, seg] : segments_) ::unlink(seg->path.c_str());
        std::vector<std::string> controls;
        for (auto& [n, c] : controls_) controls.push_back(c.path);
        remove_control_files(controls);  // after the segments
        segments_.clear();
        current_.reset();
        ::unlink((path_ + "/lock").c_str());
        ::rmdir(path_.c_str());
        fs::fsync_dir(options_.dir);
    } else if (options_.fsync != SpoolFsync::Never) {
        for (const auto& seg : unsynced_) ::fdatasync(seg->fd.get());
        if (current_) ::fdatasync(current_->fd.get());
        if (dir_dirty_) fs::fsync_dir(path_);
    }
    unsynced_.clear();
    segments_.clear();
    current_.reset();
    if (lock_fd_ >= 0) ::close(lock_fd_);  // the next writer to open adopts what is left
}

void Spool::replay() {
    struct Intent {
        std::uint64_t first = 0, last = 0;
        AppendIntent intent;
    };
    std::map<std::string, std::deque<SpoolLineRef>, std::less<>> lines;
    std::map<std::string, Intent, std::less<>> intents;
    std::vector<std::string> segment_names, control_names;
    for (const auto& name : list_dir(path_)) {
        if (name.rfind("seg-", 0) == 0) segment_names.push_back(name);
        if (name.rfind("ctl-", 0) == 0) control_names.push_back(name);
    }
    // Every line first, then the control records: a DONE or INTENT only ever
    // names lines logged before it. (Spools written before control files
    // existed have them among the lines, in order; any record is read anywhere.)
    auto scan = [&](const std::string& name, bool control) {
        const std::string file = path_ + "/" + name;
        auto seg = std::make_shared<Segment>();
        seg->number = std::strtoull(name.c_str() + 4, nullptr, 10);
        seg->path = file;
        seg->fd = fs::Fd(::open(file.c_str(), O_RDWR | O_CLOEXEC));
        struct stat st;
        if (!seg->fd.valid() || ::fstat(seg->fd.get(), &st) != 0) throw storage_error("cannot open spool segment", file);
        if (!seg->map_file(static_cast<std::uint64_t>(st.st_size), false)) throw storage_error("cannot map spool segment", file);
        const std::string_view data(seg->map, seg->capacity);
        std::size_t pos = kMagicBytes;
        std::uint64_t max_last = 0;
        const bool v1 = data.size() >= kMagicBytes && data.compare(0, kMagicBytes, std::string_view(kMagicV1, kMagicBytes)) == 0;
        seg->seed = v1 ? 0 : checksum_seed(seg->number);
        if (data.size() < kMagicBytes ||
            (!v1 && data.compare(0, kMagicBytes, std::string_view(kMagic, kMagicBytes)) != 0)) {
            pos = 0;  // not even the magic made it: nothing to recover
            if (data.find_first_not_of('\0') != std::string_view::npos) ++stats_.torn_records;
        } else {
            while (pos < data.size()) {
                auto payload = record_at(data, pos, seg->seed);
                if (!payload && data.find_first_not_of('\0', pos) == std::string_view::npos) break;  // the unused rest
                if (!payload) {
                    ++stats_.torn_records;
                    if (logger_) {
                        logger_->log(LogLevel::Warning, "training_output_spool_torn_record",
                                     {{"segment", file},
                                      {"offset", static_cast<std::uint64_t>(pos)},
                                      {"dropped_bytes", static_cast<std::uint64_t>(data.size() - pos)},
                                      {"detail", "checksum or length mismatch; the records before it are recovered"}});
                    }
                    break;
                }
                const std::uint64_t record_bytes = kHeaderBytes + payload->size();
                Fields f(*payload);
                const unsigned char type = f.type();
                if (type == kLine && !control) {
                    SpoolLineRef ref;
                    ref.seq = f.u64();
                    std::string_view key = f.bytes();
                    f.bytes();  // dedup key
                    std::string_view line = f.bytes();
                    if (f.ok()) {
                        ref.segment = seg->number;
                        ref.offset = pos;
                        ref.record_bytes = static_cast<std::uint32_t>(record_bytes);
                        ref.line_bytes = static_cast<std::uint32_t>(line.size());
                        auto it = lines.find(key);
                        if (it == lines.end()) it = lines.emplace(std::string(key), std::deque<SpoolLineRef>{}).first;
                        it->second.push_back(ref);
                        ++seg->live;
                        ++live_lines_;
                        seg->first_seq = std::min(seg->first_seq, ref.seq);
                        next_seq_ = std::max(next_seq_, ref.seq + 1);
                    }
                } else if (type == kIntent) {
                    Intent in;
                    in.first = f.u64();
                    in.last = f.u64();
                    in.intent.key = std::string(f.bytes());
                    in.intent.etag = std::string(f.bytes());
                    in.intent.size = f.u64();
                    if (f.ok()) {
                        intents[in.intent.key] = in;
                        max_last = std::max(max_last, in.last);
                    }
                } else if (type == kDone) {
                    const std::uint64_t first = f.u64(), last = f.u64();
                    std::string_view key = f.bytes();
                    if (f.ok()) {
                        max_last = std::max(max_last, last);
                        auto it = lines.find(key);
                        if (it != lines.end()) {
                            auto& q = it->second;
                            for (auto r = q.begin(); r != q.end();) {
                                if (r->seq >= first && r->seq <= last) {
                                    auto s = segments_.find(r->segment);
                                    if (s != segments_.end()) --s->second->live;
                                    if (!control && r->segment == seg->number) --seg->live;
                                    --live_lines_;
                                    r = q.erase(r);
                                } else {
                                    ++r;
                                }
                            }
                        }
                        auto in = intents.find(key);
                        if (in != intents.end() && in->second.last <= last) intents.erase(in);
                    }
                }
                pos += record_bytes;
            }
        }
        if (pos < data.size() && data.find_first_not_of('\0', pos) != std::string_view::npos) {
            // Zero the torn tail: the next replay ends cleanly where this one did.
            std::memset(seg->map + pos, 0, data.size() - pos);
        }
        seg->make_read_only();  // nothing more is written to it
        if (control) {
            controls_[seg->number] = ControlFile{file, max_last};
            next_control_ = std::max(next_control_, seg->number + 1);
            return;
        }
        seg->size = pos;
        bytes_ += pos;
        next_segment_ = std::max(next_segment_, seg->number + 1);
        segments_[seg->number] = seg;
    };
    for (const auto& name : segment_names) scan(name, false);
    for (const auto& name : control_names) scan(name, true);
    for (auto& [key, q] : lines) {
        if (q.empty()) continue;
        SpoolRecovered r;
        r.object_key = key;
        r.lines.assign(q.begin(), q.end());
        for (const auto& ref : q) recovered_bytes_ += ref.line_bytes;
        auto in = intents.find(key);
        if (in != intents.end() && in->second.first == q.front().seq) {
            r.pending = SpoolRecovered::Pending{in->second.first, in->second.last, in->second.intent};
        }
        recovered_.push_back(std::move(r));
    }
    std::unique_lock<std::mutex> lock(mutex_);
    const auto obsolete = delete_landed_segments(lock);
    lock.unlock();
    remove_control_files(obsolete);
}

std::vector<SpoolRecovered> Spool::take_recovered() {
    std::lock_guard<std::mutex> lock(mutex_);
    return std::move(recovered_);
}

std::shared_ptr<Spool::Segment> Spool::make_segment_file(const std::string& path, std::uint64_t capacity) {
    auto seg = std::make_shared<Segment>();
    seg->path = path;
    seg->fd = fs::Fd(::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (!seg->fd.valid()) throw storage_error("cannot create spool segment", path);
    const int rc = ::posix_fallocate(seg->fd.get(), 0, static_cast<off_t>(capacity));
    if (rc != 0 || !seg->map_file(capacity, true)) {
        errno = rc ? rc : errno;
        Error e = storage_error("cannot allocate spool segment", path);
        ::unlink(path.c_str());
        throw e;
    }
    return seg;
}

// Called with the lock held, or before the preparer starts.
std::string Spool::spare_path() {
    return path_ + "/" + kSparePrefix + std::to_string(next_spare_++) + ".seg";
}

// A landed segment's file, mapped and faulted in again, its records zeroed:
// replay ends at the first zeros, as in a new file. (Were the zeros lost to a
// power loss, the old records still fail their checksums, which are seeded
// with the number the file had then.)
std::shared_ptr<Spool::Segment> Spool::reuse_segment_file(const std::string& path, std::uint64_t capacity,
                                                          std::uint64_t used) {
    auto seg = std::make_shared<Segment>();
    seg->path = path;
    seg->fd = fs::Fd(::open(path.c_str(), O_RDWR | O_CLOEXEC));
    struct stat st;
    if (!seg->fd.valid() || ::fstat(seg->fd.get(), &st) != 0) throw storage_error("cannot open spool segment", path);
    if (static_cast<std::uint64_t>(st.st_size) < capacity || used > capacity) {
        throw Error(ErrorCode::Storage, "spool segment " + json::quote(path) + " is not the size it was made");
    }
    if (!seg->map_file(capacity, true)) throw storage_error("cannot map spool segment", path);
    std::memset(seg->map, 0, used);
    return seg;
}

// Keeps segments allocated, mapped and faulted in ahead of need (a new one,
// or landed ones reused), so that a call that fills a segment does not pay
// for the next one; and maps full segments read-only.
void Spool::preparer() {
    std::unique_lock<std::mutex> lock(mutex_);
    while (!stopping_) {
        if (!sealed_.empty()) {
            std::vector<std::shared_ptr<Segment>> sealed;
            sealed.swap(sealed_);
            lock.unlock();
            for (const auto& seg : sealed) seg->make_read_only();
            lock.lock();
            continue;
        }
        if (recycle_pending_) {
            // Its pages are allocated and cached: cheaper to reuse than a new
            // file's, which the kernel allocates, zeroes and converts.
            const std::string path = recycle_path_;
            const std::uint64_t used = recycle_bytes_;
            lock.unlock();
            std::shared_ptr<Segment> seg;
            try {
                seg = reuse_segment_file(path, options_.segment_bytes, used);
            } catch (const Error& e) {
                if (logger_) logger_->log(LogLevel::Warning, "training_output_spool_error", {{"error", e.what()}});
                ::unlink(path.c_str());
            }
            lock.lock();
            recycle_pending_ = false;
            if (seg && spares_.size() < kMaxSpares) {
                spares_.push_back(std::move(seg));
                ++stats_.segments_reused;
            } else if (seg) {
                ::unlink(path.c_str());
            }
            continue;
        }
        if (!spares_.empty()) {
            preparer_cv_.wait(lock);
            continue;
        }
        const std::string path = spare_path();
        lock.unlock();
        std::shared_ptr<Segment> seg;
        try {
            seg = make_segment_file(path, options_.segment_bytes);
        } catch (const Error& e) {
            if (logger_) logger_->log(LogLevel::Warning, "training_output_spool_error", {{"error", e.what()}});
        }
        lock.lock();
        if (seg) {
            spares_.push_back(std::move(seg));
        } else {
            preparer_cv_.wait_for(lock, std::chrono::seconds(1));  // the disk may be full: try again later
        }
    }
}

void Spool::open_segment(std::uint64_t capacity) {
    const std::uint64_t number = next_segment_++;
    const std::string path = path_ + "/" + file_name("seg", number);
    std::shared_ptr<Segment> seg;
    if (!spares_.empty() && spares_.back()->capacity >= capacity &&
        ::rename(spares_.back()->path.c_str(), path.c_str()) == 0) {
        seg = std::move(spares_.back());
        spares_.pop_back();
        seg->path = path;
        preparer_cv_.notify_one();
    } else {
        seg = make_segment_file(path, capacity);
    }
    seg->number = number;
    seg->seed = checksum_seed(number);
    std::memcpy(seg->map, kMagic, kMagicBytes);
    dir_dirty_ = true;  // the new name reaches the disk with the next sync
    seg->size = kMagicBytes;
    bytes_ += kMagicBytes;
    written_ += kMagicBytes;
    segments_[seg->number] = seg;
    current_ = seg;
}

// Called with the lock held: the current segment is complete; later records
// go to a new one.
void Spool::seal_current(std::unique_lock<std::mutex>&) {
    if (!current_) return;
    if (options_.fsync != SpoolFsync::Never) unsynced_.push_back(current_);  // synced with the next sync
    if (preparer_.joinable()) {
        sealed_.push_back(current_);
        preparer_cv_.notify_one();
    }
    current_.reset();
}

// Called with the lock held: the segment the next `bytes` of records go to.
Spool::Segment& Spool::segment_for(std::uint64_t bytes, std::unique_lock<std::mutex>& lock) {
    if (current_ && current_->size + bytes > current_->capacity) seal_current(lock);
    if (!current_) open_segment(std::max<std::uint64_t>(options_.segment_bytes, kMagicBytes + bytes));
    return *current_;
}

void Spool::wait_for_room(std::uint64_t bytes, std::unique_lock<std::mutex>& lock) {
    auto full = [&] { return bytes_ > 0 && bytes_ + bytes > options_.max_bytes; };
    if (!full()) return;
    auto describe = [&] {
        return "the spool is full (" + std::to_string(bytes_) + " of " + std::to_string(options_.max_bytes) +
               " bytes in " + json::quote(path_) + "): the object store is not taking lines as fast as they come";
    };
    if (options_.full_policy == SpoolFullPolicy::Reject) throw Error(ErrorCode::Backpressure, describe());
    if (!room_.wait_for(lock, options_.block_timeout, [&] { return !full(); })) {
        throw Error(ErrorCode::Timeout,
                    describe() + "; waited " + std::to_string(options_.block_timeout.count()) + " ms for room");
    }
}

SpoolLineRef Spool::append_line(std::string_view object_key, std::string_view dedup_key, std::string_view line) {
    const std::uint64_t payload = 1 + 8 + 4 + object_key.size() + 4 + dedup_key.size() + 4 + line.size();
    if (payload > kMaxPayload) {
        throw Error(ErrorCode::InvalidInput, "a line of " + std::to_string(line.size()) + " bytes is too large to spool");
    }
    const std::uint64_t record_bytes = kHeaderBytes + payload;
    SpoolLineRef ref;
    std::uint64_t position = 0;
    {
        std::unique_lock<std::mutex> lock(mutex_);
        wait_for_room(record_bytes, lock);
        Segment& seg = segment_for(record_bytes, lock);
        ref.seq = next_seq_++;
        // Encoded in place in the mapped segment, then checksummed there.
        char* const r = seg.map + seg.size;
        char* p = r + kHeaderBytes;
        *p++ = static_cast<char>(kLine);
        p = put_u64_at(p, ref.seq);
        p = put_bytes_at(p, object_key);
        p = put_bytes_at(p, dedup_key);
        p = put_bytes_at(p, line);
        put_u32_at(r + 4, static_cast<std::uint32_t>(payload));
        put_u32_at(r, crc32c::compute(std::string_view(r + 4, 4 + payload), seg.seed));
        ref.segment = seg.number;
        ref.offset = seg.size;
        ref.record_bytes = static_cast<std::uint32_t>(record_bytes);
        ref.line_bytes = static_cast<std::uint32_t>(line.size());
        seg.size += record_bytes;
        bytes_ += record_bytes;
        written_ += record_bytes;
        if (seg.first_seq == UINT64_MAX) seg.first_seq = ref.seq;
        ++seg.live;
        ++live_lines_;
        position = written_;
    }
    if (options_.fsync == SpoolFsync::Always) sync_through(position);
    return ref;
}

void Spool::for_each_line(const std::vector<SpoolLineRef>& refs,
                          const std::function<void(std::string_view line, std::string_view dedup_key)>& fn) const {
    std::vector<std::shared_ptr<Segment>> segs;
    segs.reserve(refs.size());
    {
        std::lock_guard<std::mutex> lock(mutex_);
        for (const auto& r : refs) {
            if (segs.empty() || segs.back()->number != r.segment) {
                auto it = segments_.find(r.segment);
                if (it == segments_.end()) {
                    throw Error(ErrorCode::Internal, "spool segment " + std::to_string(r.segment) + " is gone");
                }
                segs.push_back(it->second);
            }
        }
    }
    std::size_t s = 0;
    for (const auto& r : refs) {
        while (s < segs.size() && segs[s]->number != r.segment) ++s;
        if (s == segs.size()) throw Error(ErrorCode::Internal, "spool lines out of segment order");
        const Segment& seg = *segs[s];
        if (r.offset + r.record_bytes > seg.capacity) {
            throw Error(ErrorCode::Internal, "spool record beyond its segment " + json::quote(seg.path));
        }
        auto payload = record_at(std::string_view(seg.map + r.offset, r.record_bytes), 0, seg.seed);
        Fields f(payload ? *payload : std::string_view());
        const bool is_line = payload && f.type() == kLine && f.u64() == r.seq;
        f.bytes();
        std::string_view dedup_key = f.bytes();
        std::string_view line = f.bytes();
        if (!is_line || !f.ok()) {
            throw Error(ErrorCode::Storage,
                        "spool segment " + json::quote(seg.path) + " is damaged at offset " + std::to_string(r.offset));
        }
        fn(line, dedup_key);
    }
}

std::vector<SpooledLine> Spool::read(const std::vector<SpoolLineRef>& refs) const {
    std::vector<SpooledLine> out;
    out.reserve(refs.size());
    for_each_line(refs, [&](std::string_view line, std::string_view dedup_key) {
        out.push_back(SpooledLine{std::string(line), std::string(dedup_key)});
    });
    return out;
}

void Spool::read_batch(const std::vector<SpoolLineRef>& refs, std::string& lines,
                       std::vector<std::string>& dedup_keys) const {
    for_each_line(refs, [&](std::string_view line, std::string_view dedup_key) {
        lines.append(line.data(), line.size());
        if (!dedup_key.empty()) dedup_keys.emplace_back(dedup_key);
    });
}

void Spool::record_intent(const std::string& object_key, std::uint64_t first, std::uint64_t last,
                          const AppendIntent& intent) {
    std::string record = begin_record(kIntent, 40 + object_key.size() + intent.etag.size());
    put_u64(record, first);
    put_u64(record, last);
    put_bytes(record, object_key);
    put_bytes(record, intent.etag);
    put_u64(record, intent.size);
    std::lock_guard<std::mutex> control(control_mutex_);
    // One per batch: cheap enough to make durable under every policy but never.
    write_control(record, last, options_.fsync != SpoolFsync::Never);
}

void Spool::record_done(const std::string& object_key, std::uint64_t first, std::uint64_t last,
                        const std::vector<SpoolLineRef>& refs) {
    std::string record = begin_record(kDone, 20 + object_key.size());
    put_u64(record, first);
    put_u64(record, last);
    put_bytes(record, object_key);
    {
        // Durable with the next INTENT; if a crash loses it, that INTENT's
        // check finds the batch landed.
        std::lock_guard<std::mutex> control(control_mutex_);
        write_control(record, last, false);
    }
    std::vector<std::string> obsolete;
    {
        std::unique_lock<std::mutex> lock(mutex_);
        for (const auto& r : refs) {
            auto it = segments_.find(r.segment);
            if (it != segments_.end() && it->second->live > 0) --it->second->live;
            if (live_lines_ > 0) --live_lines_;
        }
        obsolete = delete_landed_segments(lock);
    }
    remove_control_files(obsolete);
}

// Called with control_mutex_ held. INTENT and DONE records go to control
// files of their own, written with write(): making an INTENT durable then
// syncs a few hundred bytes, not the megabytes of lines logged since the
// previous batch (the lines follow the fsync policy).
void Spool::write_control(std::string& record, std::uint64_t last, bool sync) {
    if (control_fd_ >= 0 && control_size_ >= kControlFileBytes) {
        ::close(control_fd_);  // full: the next record starts a new file
        control_fd_ = -1;
    }
    if (control_fd_ < 0) open_control_file();
    std::string path;
    {
        // Before the record is written: the file must not be deleted while
        // the lines the record names are still spooled.
        std::lock_guard<std::mutex> lock(mutex_);
        ControlFile& c = controls_[control_number_];
        c.max_last = std::max(c.max_last, last);
        path = c.path;
    }
    end_record(record, control_seed_);
    const bool written = fs::write_all(control_fd_, record);
    if (!written || (sync && ::fdatasync(control_fd_) != 0)) {
        // The file may end in a partial record now: replay stops there, so
        // the next record goes to a new file.
        const int err = errno;
        ::close(control_fd_);
        control_fd_ = -1;
        errno = err;
        throw storage_error(written ? "cannot fsync spool control file" : "cannot write spool control file", path);
    }
    control_size_ += record.size();
}

void Spool::open_control_file() {
    const std::uint64_t number = next_control_++;
    const std::string path = path_ + "/" + file_name("ctl", number);
    fs::Fd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0600));
    if (!fd.valid()) throw storage_error("cannot create spool control file", path);
    if (!fs::write_all(fd.get(), std::string_view(kMagic, kMagicBytes))) {
        Error e = storage_error("cannot write spool control file", path);
        ::unlink(path.c_str());
        throw e;
    }
    // Its name must be on disk before an INTENT in it is relied on.
    if (options_.fsync != SpoolFsync::Never && !fs::fsync_dir(path_)) {
        Error e = storage_error("cannot fsync spool directory", path_);
        ::unlink(path.c_str());
        throw e;
    }
    {
        std::lock_guard<std::mutex> lock(mutex_);
        controls_[number] = ControlFile{path, 0};
        control_number_ = number;
    }
    control_seed_ = checksum_seed(number);
    control_size_ = kMagicBytes;
    control_fd_ = fd.release();
}

// Segments oldest first once all their lines landed. Returns the control
// files that name only lines no longer in any segment: their records can no
// longer matter to a replay, once the segments' removal is on disk (see
// remove_control_files). The control file being written stays.
std::vector<std::string> Spool::delete_landed_segments(std::unique_lock<std::mutex>& lock) {
    bool freed = false;
    while (!segments_.empty()) {
        auto it = segments_.begin();
        const bool is_current = it->second == current_;
        if (it->second->live > 0) break;
        if (is_current) {
            if (live_lines_ > 0) break;  // later lines would lose their records
            current_.reset();            // everything landed: start afresh
        }
        if (!recycle(*it->second)) ::unlink(it->second->path.c_str());
        bytes_ -= std::min(bytes_, it->second->size);
        segments_.erase(it);
        freed = true;
    }
    std::uint64_t oldest = UINT64_MAX;  // the first line still in a segment
    for (const auto& [n, seg] : segments_) oldest = std::min(oldest, seg->first_seq);
    std::vector<std::string> obsolete;
    for (auto it = controls_.begin(); it != controls_.end();) {
        if (it->first != control_number_ && it->second.max_last < oldest) {
            obsolete.push_back(it->second.path);
            it = controls_.erase(it);
        } else {
            ++it;
        }
    }
    (void)lock;
    if (freed) room_.notify_all();
    return obsolete;
}

// Called with the lock held: hands a landed segment to the preparer to be a
// spare again, when it is a full-size one of this spool's own and there is
// room among the spares. False: it is to be deleted.
bool Spool::recycle(const Segment& seg) {
    if (!preparer_.joinable() || stopping_ || recycle_pending_ || spares_.size() >= kMaxSpares) return false;
    if (seg.capacity != options_.segment_bytes || seg.seed == 0) return false;
    std::string path = spare_path();
    if (::rename(seg.path.c_str(), path.c_str()) != 0) return false;
    recycle_path_ = std::move(path);
    recycle_pending_ = true;
    recycle_bytes_ = seg.size;
    preparer_cv_.notify_one();
    return true;
}

// Were a control file's removal to reach the disk before its segments' (a
// power loss in between), a replay would find landed lines without their
// DONE records and append them again: the directory is synced first.
void Spool::remove_control_files(const std::vector<std::string>& paths) {
    if (paths.empty()) return;
    if (options_.fsync != SpoolFsync::Never) fs::fsync_dir(path_);
    for (const auto& path : paths) ::unlink(path.c_str());
}

// Makes everything written up to `position` durable: the sealed segments not
// yet synced, the current one, the directory when segments were created.
// Concurrent callers share one round (group commit).
void Spool::sync_through(std::uint64_t position) {
    std::unique_lock<std::mutex> lock(mutex_);
    while (synced_ < position) {
        if (syncing_) {
            synced_cv_.wait(lock);
            continue;
        }
        std::vector<std::shared_ptr<Segment>> segs;
        segs.swap(unsynced_);
        const bool had_current = current_ != nullptr;
        if (had_current) segs.push_back(current_);
        const bool dir = dir_dirty_;
        dir_dirty_ = false;
        const std::uint64_t target = written_;
        syncing_ = true;
        lock.unlock();
        std::string failed;
        int err = 0;
        for (const auto& seg : segs) {
            if (seg != segs.back() || !had_current) seg->make_read_only();  // sealed: unless the preparer did
            if (::fdatasync(seg->fd.get()) != 0 && failed.empty()) {
                err = errno;
                failed = seg->path;
            }
        }
        if (dir && !fs::fsync_dir(path_) && failed.empty()) {
            err = errno;
            failed = path_;
        }
        lock.lock();
        syncing_ = false;
        synced_cv_.notify_all();
        if (!failed.empty()) {
            // Try again next time; the caller hears of it now.
            for (const auto& seg : segs) {
                if (seg != current_) unsynced_.push_back(seg);
            }
            dir_dirty_ = dir_dirty_ || dir;
            errno = err;
            throw storage_error("cannot fsync spool", failed);
        }
        synced_ = std::max(synced_, target);
        ++stats_.fsyncs;
    }
}

void Spool::syncer() {
    std::unique_lock<std::mutex> lock(mutex_);
    while (!stopping_) {
        syncer_cv_.wait_for(lock, options_.fsync_interval, [&] { return stopping_; });
        if (stopping_ || written_ <= synced_) continue;
        const std::uint64_t target = written_;
        lock.unlock();
        try {
            sync_through(target);
        } catch (const Error& e) {
            if (logger_) logger_->log(LogLevel::Error, "training_output_spool_error", {{"error", e.what()}});
        }
        lock.lock();
    }
}

bool Spool::empty() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return live_lines_ == 0;
}

std::uint64_t Spool::last_seq() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return next_seq_ - 1;
}

SpoolStats Spool::stats() const {
    std::lock_guard<std::mutex> lock(mutex_);
    SpoolStats s = stats_;
    s.bytes = bytes_;
    s.segments = segments_.size();
    return s;
}

}  // namespace training_output
