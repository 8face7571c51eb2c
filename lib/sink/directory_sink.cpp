// DirectorySink: S3 semantics on a local directory, safe across processes.
//
// Layout under the root:
//   <key>                      the objects themselves
//   .sink/locks/<h>.lock       one flock per key (h = SHA-256 of the key)
//   .sink/journal/<h>          "size before an in-place append"; present only
//                              while one runs, rolled back if found later
//   .sink/uploads/<id>/        multipart uploads in progress; their parts are
//                              kept in the memory of the sink that uploaded
//                              them (up to memory_part_bytes), else here
//   .sink/tmp/                 PUT bodies before their rename
// An append arrives as a multipart upload whose first part is a copy of the
// whole object itself; it is done in place (only the new bytes are written)
// under the journal, so a crash mid-append leaves the old object intact.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <dirent.h>
#include <atomic>
#include <chrono>
#include <ctime>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>

#include "common/crash_point.hpp"
#include "common/crc32c.hpp"
#include "common/fs.hpp"
#include "common/json.hpp"
#include "common/random.hpp"
#include "common/sha256.hpp"
#include "sink/directory_sink.hpp"
#include "training_output/error.hpp"

namespace training_output {
namespace {

SinkResponse failure(SinkStatus status, int http, const char* code, std::string detail = {}) {
    SinkResponse r;
    r.status = status;
    r.http_status = http;
    r.error.code = code;
    r.detail = std::move(detail);
    return r;
}

SinkResponse io_failure(const std::string& what, const std::string& path) {
    return failure(SinkStatus::Transient, 0, "LocalIOError", fs::errno_message(what, path));
}

SinkResponse ok(int http = 200) {
    SinkResponse r;
    r.http_status = http;
    return r;
}

std::string etag_of(const struct stat& st) {
    char buf[80];
    std::snprintf(buf, sizeof buf, "%llx-%llx-%llx", static_cast<unsigned long long>(st.st_ino),
                  static_cast<unsigned long long>(st.st_size),
                  static_cast<unsigned long long>(st.st_mtim.tv_sec) * 1000000000ull +
                      static_cast<unsigned long long>(st.st_mtim.tv_nsec));
    return buf;
}

// A part's ETag: its size and CRC-32C (complete checks the part file still
// holds what was uploaded; parts are megabytes, so not a SHA-256).
std::string part_etag(std::string_view data) {
    char buf[48];
    std::snprintf(buf, sizeof buf, "%08x-%llx", crc32c::compute(data), static_cast<unsigned long long>(data.size()));
    return buf;
}

bool valid_key(const std::string& key) {
    if (key.empty() || key.front() == '/' || key.back() == '/') return false;
    std::size_t start = 0;
    while (start <= key.size()) {
        std::size_t end = key.find('/', start);
        if (end == std::string::npos) end = key.size();
        std::string_view seg(key.data() + start, end - start);
        if (seg.empty() || seg == "." || seg == ".." || (start == 0 && seg == ".sink")) return false;
        start = end + 1;
    }
    for (unsigned char c : key) {
        if (c < 0x20 || c == 0x7F) return false;
    }
    return true;
}

class DirectorySink final : public S3Sink {
public:
    explicit DirectorySink(const DirectorySinkOptions& options)
        : root_(options.root),
          fsync_(options.fsync),
          memory_part_bytes_(options.memory_part_bytes),
          lock_timeout_(options.lock_timeout) {
        while (root_.size() > 1 && root_.back() == '/') root_.pop_back();
        internal_ = root_ + "/.sink";
        for (const char* sub : {"/locks", "/journal", "/uploads", "/tmp"}) {
            if (!fs::make_dirs(internal_ + sub)) {
                throw Error(ErrorCode::Storage, fs::errno_message("cannot create directory", internal_ + sub));
            }
        }
        remove_stale_uploads();
    }

    void cancel() override { cancelled_ = true; }

    SinkResponse head(const std::string& key) override {
        if (!valid_key(key)) return bad_key(key);
        auto lock = lock_key(key);
        struct stat st;
        if (::stat(path_of(key).c_str(), &st) != 0) {
            if (errno == ENOENT || errno == ENOTDIR) return failure(SinkStatus::NotFound, 404, "NoSuchKey");
            return io_failure("cannot stat", path_of(key));
        }
        SinkResponse r = ok();
        r.etag = etag_of(st);
        r.size = static_cast<std::uint64_t>(st.st_size);
        return r;
    }

    SinkResponse get(const std::string& key, std::optional<ByteRange> range) override {
        if (!valid_key(key)) return bad_key(key);
        auto lock = lock_key(key);
        std::string path = path_of(key);
        fs::Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
        if (!fd.valid()) {
            if (errno == ENOENT || errno == ENOTDIR) return failure(SinkStatus::NotFound, 404, "NoSuchKey");
            return io_failure("cannot open", path);
        }
        struct stat st;
        if (::fstat(fd.get(), &st) != 0) return io_failure("cannot stat", path);
        auto size = static_cast<std::uint64_t>(st.st_size);
        std::uint64_t first = 0, count = size;
        if (range) {
            if (range->first >= size || range->last < range->first)
                return failure(SinkStatus::Fatal, 416, "InvalidRange");
            first = range->first;
            count = std::min(range->last, size - 1) - first + 1;
        }
        SinkResponse r = ok(range ? 206 : 200);
        if (!fs::read_at(fd.get(), first, count, r.body)) return io_failure("cannot read", path);
        r.etag = etag_of(st);
        r.size = size;
        return r;
    }

    SinkResponse put(const std::string& key, std::string_view body, const ObjectAttributes&,
                     const WriteConditions& conditions) override {
        if (!valid_key(key)) return bad_key(key);
        auto lock = lock_key(key);
        if (auto denied = check_conditions(key, conditions)) return *denied;
        std::string tmp = internal_ + "/tmp/" + random::token_hex(8);
        {
            fs::Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
            if (!fd.valid()) return io_failure("cannot create", tmp);
            if (!fs::write_all(fd.get(), body) || (fsync_ && ::fsync(fd.get()) != 0)) {
                auto r = io_failure("cannot write", tmp);
                ::unlink(tmp.c_str());
                return r;
            }
        }
        return install(key, tmp);
    }

    SinkResponse remove(const std::string& key) override {
        if (!valid_key(key)) return bad_key(key);
        auto lock = lock_key(key);
        if (::unlink(path_of(key).c_str()) != 0 && errno != ENOENT) return io_failure("cannot remove", path_of(key));
        return ok(204);
    }

    SinkResponse create_multipart(const std::string& key, const ObjectAttributes&) override {
        if (!valid_key(key)) return bad_key(key);
        SinkResponse r = ok();
        r.upload_id = random::token_hex(12);
        std::string dir = upload_dir(r.upload_id);
        if (!fs::make_dirs(dir)) return io_failure("cannot create", dir);
        if (!write_file(dir + "/key", key)) return io_failure("cannot write", dir + "/key");
        return r;
    }

    SinkResponse upload_part(const std::string& key, const std::string& upload_id, int part_number,
                             std::string_view body) override {
        if (auto missing = check_upload(key, upload_id)) return *missing;
        std::string part = upload_dir(upload_id) + "/part-" + std::to_string(part_number);
        ::unlink((part + ".copy").c_str());
        if (keep_part(upload_id, part_number, body)) {
            ::unlink(part.c_str());  // an earlier upload of this part number
        } else if (!write_file(part, body)) {
            return io_failure("cannot write", part);
        }
        SinkResponse r = ok();
        r.etag = part_etag(body);
        return r;
    }

    SinkResponse upload_part_copy(const std::string& key, const std::string& upload_id, int part_number,
                                  const std::string& source_key, const std::string& source_if_match,
                                  std::optional<ByteRange> range) override {
        if (auto missing = check_upload(key, upload_id)) return *missing;
        if (!valid_key(source_key)) return bad_key(source_key);
        auto lock = lock_key(source_key);
        struct stat st;
        if (::stat(path_of(source_key).c_str(), &st) != 0) return failure(SinkStatus::NotFound, 404, "NoSuchKey");
        std::string etag = etag_of(st);
        if (!source_if_match.empty() && etag != source_if_match) {
            return failure(SinkStatus::PreconditionFailed, 412, "PreconditionFailed");
        }
        std::string part = upload_dir(upload_id) + "/part-" + std::to_string(part_number);
        forget_part(upload_id, part_number);
        SinkResponse r = ok();
        if (!range) {
            // A whole-object copy is only remembered (source, ETag); Complete
            // reads it then, or appends in place when it is the target itself.
            ::unlink(part.c_str());
            if (!write_file(part + ".copy", source_key + "\n" + etag)) return io_failure("cannot write", part);
            r.etag = "copy-" + etag;
            return r;
        }
        auto size = static_cast<std::uint64_t>(st.st_size);
        if (range->first >= size || range->last < range->first) return failure(SinkStatus::Fatal, 416, "InvalidRange");
        fs::Fd fd(::open(path_of(source_key).c_str(), O_RDONLY | O_CLOEXEC));
        std::string bytes;
        if (!fd.valid() ||
            !fs::read_at(fd.get(), range->first, std::min(range->last, size - 1) - range->first + 1, bytes)) {
            return io_failure("cannot read", path_of(source_key));
        }
        ::unlink((part + ".copy").c_str());
        if (!write_file(part, bytes)) return io_failure("cannot write", part);
        r.etag = part_etag(bytes);
        return r;
    }

    SinkResponse complete_multipart(const std::string& key, const std::string& upload_id,
                                    const std::vector<CompletedPart>& parts,
                                    const WriteConditions& conditions) override {
        if (auto missing = check_upload(key, upload_id)) return *missing;
        if (parts.empty()) return failure(SinkStatus::Fatal, 400, "MalformedXML", "no parts");
        auto lock = lock_key(key);
        if (auto denied = check_conditions(key, conditions)) return *denied;
        std::string dir = upload_dir(upload_id);

        struct PartSource {
            std::string file;                         // the part's bytes, or
            std::shared_ptr<const std::string> kept;  // them in memory, or
            std::string copy_key;                     // a whole-object copy of this key
            std::string copy_etag;
        };
        std::vector<PartSource> sources;
        for (const auto& p : parts) {
            std::string base = dir + "/part-" + std::to_string(p.number);
            PartSource s;
            std::string desc;
            if (read_file(base + ".copy", desc)) {
                auto nl = desc.find('\n');
                s.copy_key = desc.substr(0, nl);
                s.copy_etag = nl == std::string::npos ? "" : desc.substr(nl + 1);
                if (p.etag != "copy-" + s.copy_etag) return failure(SinkStatus::Fatal, 400, "InvalidPart");
            } else if ((s.kept = kept_part(upload_id, p.number))) {
                if (p.etag != part_etag(*s.kept)) return failure(SinkStatus::Fatal, 400, "InvalidPart");
            } else {
                std::string data;
                if (!read_file(base, data)) return failure(SinkStatus::Fatal, 400, "InvalidPart");
                if (p.etag != part_etag(data)) {
                    return failure(SinkStatus::Fatal, 400, "InvalidPart");
                }
                s.file = base;
            }
            sources.push_back(std::move(s));
        }

        std::string path = path_of(key);
        struct stat st;
        bool exists = ::stat(path.c_str(), &st) == 0;
        SinkResponse r;
        if (exists && sources[0].copy_key == key && sources[0].copy_etag == etag_of(st)) {
            r = append_in_place(key, st, sources.begin() + 1, sources.end());
        } else {
            // General case: assemble a new file and rename it over the object.
            std::string tmp = internal_ + "/tmp/" + random::token_hex(8);
            fs::Fd out(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
            if (!out.valid()) return io_failure("cannot create", tmp);
            for (const auto& s : sources) {
                std::string data;
                if (!s.copy_key.empty()) {
                    if (s.copy_key != key) return failure(SinkStatus::Fatal, 400, "InvalidPart");
                    // The copied object changed since UploadPartCopy: its old bytes are gone.
                    if (!exists || etag_of(st) != s.copy_etag) {
                        ::unlink(tmp.c_str());
                        return failure(SinkStatus::PreconditionFailed, 412, "PreconditionFailed");
                    }
                    if (!read_file(path, data)) return io_failure("cannot read", path);
                } else if (s.kept) {
                    data = *s.kept;
                } else if (!read_file(s.file, data)) {
                    return io_failure("cannot read", s.file);
                }
                if (!fs::write_all(out.get(), data)) {
                    ::unlink(tmp.c_str());
                    return io_failure("cannot write", tmp);
                }
            }
            if (fsync_ && ::fsync(out.get()) != 0) return io_failure("cannot fsync", tmp);
            out.reset();
            r = install(key, tmp);
        }
        if (r.ok()) {
            fs::remove_tree(dir);
            forget_upload(upload_id);
        }
        return r;
    }

    SinkResponse abort_multipart(const std::string& key, const std::string& upload_id) override {
        if (auto missing = check_upload(key, upload_id)) return *missing;
        fs::remove_tree(upload_dir(upload_id));
        forget_upload(upload_id);
        return ok(204);
    }

    SinkCapabilities capabilities() const override {
        SinkCapabilities c;
        c.conditional_writes = true;
        c.multipart_copy = true;
        c.min_part_size = 1;  // any existing object is appended in place
        return c;
    }

    std::string describe() const override { return "directory " + root_; }

private:
    std::string path_of(const std::string& key) const { return root_ + "/" + key; }
    std::string key_hash(const std::string& key) const { return crypto::hex(crypto::sha256(key)).substr(0, 32); }
    std::string upload_dir(const std::string& id) const { return internal_ + "/uploads/" + id; }

    static SinkResponse bad_key(const std::string& key) {
        return failure(SinkStatus::Fatal, 400, "InvalidKey", "not a valid object key: " + json::quote(key));
    }

    // Holds the key's lock; first rolls back an append that a crash interrupted.
    fs::FileLock lock_key(const std::string& key) {
        std::string h = key_hash(key);
        auto lock = fs::FileLock::acquire_until(internal_ + "/locks/" + h + ".lock",
                                                std::chrono::steady_clock::now() + lock_timeout_, &cancelled_);
        std::string journal = internal_ + "/journal/" + h, size_text;
        if (read_file(journal, size_text)) {
            // "<size>\n", written whole before the append starts. Anything else
            // is a journal whose writer died while writing it: the append
            // never started, and there is nothing to roll back.
            const bool whole = size_text.size() >= 2 && size_text.back() == '\n' &&
                               size_text.find_first_not_of("0123456789") == size_text.size() - 1;
            struct stat st;
            if (whole && ::stat(path_of(key).c_str(), &st) == 0) {
                const std::uint64_t size = std::strtoull(size_text.c_str(), nullptr, 10);
                if (static_cast<std::uint64_t>(st.st_size) > size &&
                    ::truncate(path_of(key).c_str(), static_cast<off_t>(size)) != 0) {
                    throw Error(ErrorCode::Storage,
                                fs::errno_message("cannot roll back an interrupted append to", path_of(key)));
                }
            }
            ::unlink(journal.c_str());
            if (fsync_) fs::fsync_dir(internal_ + "/journal");
        }
        return lock;
    }

    std::optional<SinkResponse> check_conditions(const std::string& key, const WriteConditions& c) {
        if (!c.if_none_match_any && c.if_match.empty()) return std::nullopt;
        struct stat st;
        bool exists = ::stat(path_of(key).c_str(), &st) == 0;
        if (c.if_none_match_any && exists) return failure(SinkStatus::PreconditionFailed, 412, "PreconditionFailed");
        if (!c.if_match.empty()) {
            if (!exists) return failure(SinkStatus::NotFound, 404, "NoSuchKey");
            if (etag_of(st) != c.if_match) return failure(SinkStatus::PreconditionFailed, 412, "PreconditionFailed");
        }
        return std::nullopt;
    }

    std::optional<SinkResponse> check_upload(const std::string& key, const std::string& upload_id) {
        std::string stored;
        if (upload_id.empty() || upload_id.find('/') != std::string::npos ||
            !read_file(upload_dir(upload_id) + "/key", stored) || stored != key) {
            return failure(SinkStatus::NotFound, 404, "NoSuchUpload");
        }
        return std::nullopt;
    }

    // Renames a finished temporary file over the object (key lock held).
    SinkResponse install(const std::string& key, const std::string& tmp) {
        std::string path = path_of(key);
        std::string dir = fs::parent_of(path);
        if (!fs::make_dirs(dir)) {
            auto r = io_failure("cannot create directory", dir);
            ::unlink(tmp.c_str());
            return r;
        }
        if (::rename(tmp.c_str(), path.c_str()) != 0) {
            auto r = io_failure("cannot rename into", path);
            ::unlink(tmp.c_str());
            return r;
        }
        if (fsync_) fs::fsync_dir(dir);
        struct stat st;
        if (::stat(path.c_str(), &st) != 0) return io_failure("cannot stat", path);
        SinkResponse r = ok();
        r.etag = etag_of(st);
        return r;
    }

    template <class It>
    SinkResponse append_in_place(const std::string& key, const struct stat& before, It first, It last) {
        std::string path = path_of(key);
        std::string journal = internal_ + "/journal/" + key_hash(key);
        if (!write_file(journal, std::to_string(before.st_size) + "\n")) return io_failure("cannot write", journal);
        if (fsync_) fs::fsync_dir(internal_ + "/journal");
        fs::Fd fd(::open(path.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC));
        bool good = fd.valid();
        for (It s = first; good && s != last; ++s) {
            if (!s->copy_key.empty()) {
                good = false;
            } else if (s->kept) {
                good = fs::write_all(fd.get(), *s->kept);
            } else {
                std::string data;
                good = read_file(s->file, data) && fs::write_all(fd.get(), data);
            }
        }
        crash_point("directory.mid_append");  // written, the journal still says where it began
        if (good && fsync_) good = ::fsync(fd.get()) == 0;
        if (!good) {
            auto r = io_failure("cannot append to", path);
            if (::truncate(path.c_str(), before.st_size) == 0) ::unlink(journal.c_str());
            return r;
        }
        // The journal's removal is durable before the append is reported: a
        // journal that came back after a power loss would roll back an append
        // already answered (its lines committed as delivered).
        ::unlink(journal.c_str());
        if (fsync_) fs::fsync_dir(internal_ + "/journal");
        struct stat st;
        if (::fstat(fd.get(), &st) != 0) return io_failure("cannot stat", path);
        SinkResponse r = ok();
        r.etag = etag_of(st);
        return r;
    }

    bool write_file(const std::string& path, std::string_view data) {
        fs::Fd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
        if (!fd.valid() || !fs::write_all(fd.get(), data)) return false;
        return !fsync_ || ::fsync(fd.get()) == 0;
    }

    static bool read_file(const std::string& path, std::string& out) {
        fs::Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
        struct stat st;
        if (!fd.valid() || ::fstat(fd.get(), &st) != 0) return false;
        return fs::read_at(fd.get(), 0, static_cast<std::uint64_t>(st.st_size), out);
    }

    // Uploads that a crashed writer left behind more than a day ago.
    void remove_stale_uploads() {
        std::error_code ec;
        auto now = std::filesystem::file_time_type::clock::now();
        for (const auto& e : std::filesystem::directory_iterator(internal_ + "/uploads", ec)) {
            auto t = std::filesystem::last_write_time(e.path(), ec);
            if (!ec && now - t > std::chrono::hours(24)) fs::remove_tree(e.path().string());
        }
    }

    // Keeps a part in memory when there is room (false: it goes to a file).
    bool keep_part(const std::string& upload_id, int number, std::string_view body) {
        std::lock_guard<std::mutex> lock(parts_mutex_);
        auto& parts = parts_[upload_id];
        drop_part(parts, number);  // an earlier upload of this part number
        if (kept_bytes_ + body.size() > memory_part_bytes_) {
            if (parts.empty()) parts_.erase(upload_id);
            return false;
        }
        parts[number] = std::make_shared<const std::string>(body);
        kept_bytes_ += body.size();
        return true;
    }
    std::shared_ptr<const std::string> kept_part(const std::string& upload_id, int number) {
        std::lock_guard<std::mutex> lock(parts_mutex_);
        auto u = parts_.find(upload_id);
        if (u == parts_.end()) return nullptr;
        auto p = u->second.find(number);
        return p == u->second.end() ? nullptr : p->second;
    }
    void forget_part(const std::string& upload_id, int number) {
        std::lock_guard<std::mutex> lock(parts_mutex_);
        auto u = parts_.find(upload_id);
        if (u != parts_.end()) drop_part(u->second, number);
    }
    // Called with parts_mutex_ held.
    void drop_part(std::map<int, std::shared_ptr<const std::string>>& parts, int number) {
        auto p = parts.find(number);
        if (p == parts.end()) return;
        kept_bytes_ -= p->second->size();
        parts.erase(p);
    }
    void forget_upload(const std::string& upload_id) {
        std::lock_guard<std::mutex> lock(parts_mutex_);
        auto u = parts_.find(upload_id);
        if (u == parts_.end()) return;
        for (const auto& [n, data] : u->second) kept_bytes_ -= data->size();
        parts_.erase(u);
    }

    std::string root_;
    std::string internal_;
    bool fsync_;
    std::uint64_t memory_part_bytes_;
    std::chrono::milliseconds lock_timeout_;
    std::atomic<bool> cancelled_{false};  // cancel(): stop waiting for locks
    std::mutex parts_mutex_;
    std::map<std::string, std::map<int, std::shared_ptr<const std::string>>> parts_;  // by upload id, part number
    std::uint64_t kept_bytes_ = 0;
};

}  // namespace

std::unique_ptr<S3Sink> make_directory_sink(const DirectorySinkOptions& options) {
    return std::make_unique<DirectorySink>(options);
}

}  // namespace training_output
