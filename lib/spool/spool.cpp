// Spool: the writer's write-ahead log (rules in spool.hpp; records in
// record.hpp; files in segment.hpp; replay in replay.hpp).
#include "spool/spool.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>

#include "common/background.hpp"
#include "common/crash_point.hpp"
#include "common/fs.hpp"
#include "common/json.hpp"
#include "common/random.hpp"
#include "spool/record.hpp"
#include "spool/replay.hpp"
#include "spool/segment.hpp"
#include "training_output/error.hpp"

namespace training_output {

using namespace spool;

namespace {

constexpr char kSparePrefix[] = "spare-";              // spare-<n>.seg: a segment prepared ahead
constexpr char kInfoFile[] = "spool.json";             // the spool's id and destination
constexpr std::size_t kMaxSpares = 2;                  // prepared at once (a new one and a reused one)
constexpr std::uint64_t kPopulateAhead = 256u << 10;   // faulted in ahead of the writes
constexpr std::uint64_t kControlFileBytes = 1u << 20;  // a control file is this large at most (about)
constexpr std::size_t kIdBytes = 16;                   // a spool's id: 128 random bits

std::string info_json(const std::string& id, const std::string& destination) {
    return "{\"format\":3,\"id\":" + json::quote(id) + ",\"destination\":" + json::quote(destination) + "}\n";
}

// The destination a spool directory records; nullopt when it records none
// (made by an earlier version) or the file cannot be read as one.
std::optional<std::string> read_destination(const std::string& dir) {
    fs::Fd fd(::open((dir + "/" + kInfoFile).c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.valid()) return std::nullopt;
    std::string text;
    if (!fs::read_at(fd.get(), 0, 1 << 16, text)) return std::nullopt;
    rapidjson::Document doc;
    doc.Parse(text.data(), text.size());
    if (doc.HasParseError() || !doc.IsObject() || !doc.HasMember("destination") || !doc["destination"].IsString()) {
        return std::string("(unreadable ") + kInfoFile + ")";  // adopted by nobody until mended
    }
    return std::string(json::view(doc["destination"]));
}

// The lock of the orphaned spool `name` in options.dir: a spool directory
// meant for the same destination (a spool of an earlier version records none
// and is anyone's) whose owner is gone. -1 for anything else (a live writer's
// spool, one being removed, another destination's).
int lock_orphan(const SpoolOptions& options, const std::string& name) {
    if (name.rfind("w-", 0) != 0) return -1;
    const std::string dir = options.dir + "/" + name;
    auto destination = read_destination(dir);
    if (destination && *destination != options.destination) return -1;
    const int fd = lock_existing(dir + "/lock");
    if (fd < 0) return -1;
    destination = read_destination(dir);  // as it is now that it is ours
    if (destination && *destination != options.destination) {
        ::close(fd);
        return -1;
    }
    return fd;
}

}  // namespace

Spool::Spool(SpoolOptions options, std::string path, std::string id, const Logger* logger)
    : options_(std::move(options)), path_(std::move(path)), id_(std::move(id)), logger_(logger) {
    if (options_.segment_bytes == 0) {
        options_.segment_bytes = std::clamp<std::uint64_t>(options_.max_bytes / 16, 64u << 10, 16u << 20);
    }
    next_sync_ = Clock::now() + options_.fsync_interval;
    job_ = Background::add([this] { background(); });
    if (options_.fsync == SpoolFsync::Interval) job_->at(next_sync_);
}

std::unique_ptr<Spool> Spool::create(const SpoolOptions& options, const Logger* logger) {
    if (!fs::make_dirs(options.dir, 0700)) throw storage_error("cannot create spool directory", options.dir);
    for (int tries = 0; tries < 16; ++tries) {
        const std::string id = random::token_hex(kIdBytes);
        const std::string name = "w-" + id;
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
        {
            // What the spool is for, before anyone can see it.
            fs::Fd info(::open((staging + "/" + kInfoFile).c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
            if (!info.valid() || !fs::write_all(info.get(), info_json(id, options.destination)) ||
                (options.fsync != SpoolFsync::Never && ::fdatasync(info.get()) != 0)) {
                Error e = storage_error("cannot write", staging + "/" + kInfoFile);
                fs::remove_tree(staging);
                throw e;
            }
        }
        if (::rename(staging.c_str(), final_path.c_str()) != 0) {
            if (errno == ENOENT) continue;
            throw storage_error("cannot rename spool directory", staging);
        }
        fs::fsync_dir(options.dir);
        std::unique_ptr<Spool> s(new Spool(options, final_path, id, logger));
        s->lock_fd_ = fd.release();
        // No segment yet: an idle writer holds none; the first line makes one.
        s->prepares_ = true;
        return s;
    }
    throw Error(ErrorCode::Storage, "cannot create a spool directory in " + json::quote(options.dir));
}

std::size_t Spool::count_orphans(const SpoolOptions& options) {
    std::size_t count = 0;
    for (const auto& name : list_dir(options.dir)) {
        const int fd = lock_orphan(options, name);
        if (fd < 0) continue;
        ::close(fd);
        ++count;
    }
    return count;
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
        const int fd = lock_orphan(options, name);
        if (fd < 0) continue;
        std::unique_ptr<Spool> s(new Spool(options, dir, name.substr(2), logger));
        s->lock_fd_ = fd;
        const auto replay_started = std::chrono::steady_clock::now();
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
            logger->log(
                LogLevel::Warning, "training_output_spool_adopted",
                {{"spool", dir},
                 {"lines", s->live_lines_},
                 {"bytes", s->recovered_bytes_},
                 {"seconds", std::chrono::duration<double>(std::chrono::steady_clock::now() - replay_started).count()},
                 {"pending_commits", static_cast<std::uint64_t>(s->pending_commits_.size())},
                 {"torn_records", s->stats_.torn_records},
                 {"rejected_records", s->stats_.rejected_records},
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
    job_.reset();  // waits for a call in progress
    std::unique_lock<std::mutex> lock(mutex_);
    spares_.clear();
    // Ours, and those of the writer whose spool this was, if it was adopted.
    for (const auto& name : list_dir(path_)) {
        if (name.rfind("spare", 0) == 0) ::unlink((path_ + "/" + name).c_str());
    }
    const bool settled = live_lines_ == 0 && commit_file_.empty();
    if (control_fd_ >= 0) {
        if (!settled && options_.fsync != SpoolFsync::Never) ::fdatasync(control_fd_);  // the DONE records
        ::close(control_fd_);
        control_fd_ = -1;
    }
    if (settled) {
        for (auto& [n, seg] : segments_) ::unlink(seg->path.c_str());
        std::vector<std::string> controls;
        for (auto& [n, c] : controls_) controls.push_back(c.path);
        remove_control_files(controls);  // after the segments
        segments_.clear();
        current_.reset();
        ::unlink((path_ + "/" + kInfoFile).c_str());
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
    std::vector<std::shared_ptr<Segment>> segs, ctls;
    std::vector<ReplayFile> seg_files, ctl_files;
    for (const auto& name : list_dir(path_)) {
        if (auto n = file_number(name, "seg")) {
            segs.push_back(open_segment_file(path_ + "/" + name, *n));
            seg_files.push_back(ReplayFile{*n, std::string_view(segs.back()->map, segs.back()->capacity)});
        } else if (auto c = file_number(name, "ctl")) {
            ctls.push_back(open_segment_file(path_ + "/" + name, *c));
            ctl_files.push_back(ReplayFile{*c, std::string_view(ctls.back()->map, ctls.back()->capacity)});
        }
    }
    ReplayResult r = replay_files(seg_files, ctl_files);
    if (logger_) {
        for (const auto& note : r.notes) {
            logger_->log(LogLevel::Warning, "training_output_spool_torn_record", {{"spool", path_}, {"detail", note}});
        }
    }
    // Zero what a crash tore off: the next replay ends cleanly where this one did.
    auto settle_file = [](Segment& f, const ReplayedFile& rf) {
        if (rf.torn && rf.end < f.capacity) std::memset(f.map + rf.end, 0, f.capacity - rf.end);
        f.make_read_only();  // nothing more is written to it
    };
    for (std::size_t i = 0; i < segs.size(); ++i) {
        Segment& seg = *segs[i];
        const ReplayedFile& rf = r.segments[i];
        settle_file(seg, rf);
        seg.size = rf.end;
        seg.live = rf.live;
        seg.first_seq = rf.first_seq;
        const bool v1 = seg.capacity >= kMagicBytes && std::memcmp(seg.map, kMagicV1, kMagicBytes) == 0;
        seg.seed = v1 ? 0 : checksum_seed(seg.number);
        bytes_ += seg.size;
        next_segment_ = std::max(next_segment_, seg.number + 1);
        segments_[seg.number] = segs[i];
    }
    for (std::size_t i = 0; i < ctls.size(); ++i) {
        settle_file(*ctls[i], r.controls[i]);
        controls_[ctls[i]->number] = ControlFile{ctls[i]->path, r.controls[i].max_seq, 0};
        next_control_ = std::max(next_control_, ctls[i]->number + 1);
    }
    ctls.clear();  // control files are appended to by write(), never through a map
    for (auto& c : r.commits) {
        ++controls_[c.control].pinned;
        commit_file_[c.commit.batch] = c.control;
        pending_commits_.push_back(std::move(c.commit));
    }
    next_seq_ = r.next_seq;
    next_batch_ = r.next_batch;
    live_lines_ = r.live_lines;
    recovered_bytes_ = r.recovered_bytes;
    recovered_ = std::move(r.recovered);
    stats_.torn_records = r.torn_records;
    stats_.rejected_records = r.rejected_records;
    std::unique_lock<std::mutex> lock(mutex_);
    const auto obsolete = delete_landed_segments(lock);
    lock.unlock();
    remove_control_files(obsolete);
}

std::vector<SpoolRecovered> Spool::take_recovered() {
    std::lock_guard<std::mutex> lock(mutex_);
    return std::move(recovered_);
}

std::vector<SpoolPendingCommit> Spool::take_pending_commits() {
    std::lock_guard<std::mutex> lock(mutex_);
    return std::move(pending_commits_);
}

// Called with the lock held, or before the spool is shared.
std::string Spool::spare_path() { return path_ + "/" + kSparePrefix + std::to_string(next_spare_++) + ".seg"; }

// On the process's background thread: faults the current segment's next
// pages in ahead of the writes; keeps the next segment allocated once the
// current one is half full (a new one, or a landed one reused), so that a
// call that fills a segment does not pay for the next one; maps full
// segments read-only; and, under spool_fsync=interval, syncs about once an
// interval.
void Spool::background() {
    std::unique_lock<std::mutex> lock(mutex_);
    while (!stopping_) {
        if (populate_) {
            auto seg = std::move(populate_);
            const std::uint64_t from = populate_from_;
            lock.unlock();
            seg->populate(from, kPopulateAhead);
            seg.reset();
            lock.lock();
            continue;
        }
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
        if (spares_.empty() && want_spare_ && Clock::now() >= spare_retry_at_) {
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
            } else if (!stopping_) {                                       // (stopping: the destructor holds the job)
                spare_retry_at_ = Clock::now() + std::chrono::seconds(1);  // the disk may be full: try again later
                job_->at(spare_retry_at_);
            }
            continue;
        }
        break;
    }
    if (stopping_ || options_.fsync != SpoolFsync::Interval) return;
    const auto now = Clock::now();
    if (now >= next_sync_) {
        next_sync_ = now + options_.fsync_interval;
        if (written_ > synced_) {
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
    if (!stopping_) job_->at(next_sync_);
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
    want_spare_ = false;  // asked for again once this one is half full
    populate_ahead(*seg);
}

// Called with the lock held: once the writes come within half a chunk of the
// pages faulted in, the preparer faults the next chunk in; once the segment
// is half full, it makes the next one ready.
void Spool::populate_ahead(Segment& seg) {
    if (seg.size + kPopulateAhead / 2 >= seg.populated && seg.populated < seg.capacity && !populate_ && prepares_) {
        populate_ = current_;
        populate_from_ = seg.populated;
        seg.populated += kPopulateAhead;
        job_->poke();
    }
    if (!want_spare_ && spares_.empty() && seg.size > seg.capacity / 2 && prepares_) {
        want_spare_ = true;
        job_->poke();
    }
}

// Called with the lock held: the current segment is complete; later records
// go to a new one.
void Spool::seal_current(std::unique_lock<std::mutex>&) {
    if (!current_) return;
    if (options_.fsync != SpoolFsync::Never) unsynced_.push_back(current_);  // synced with the next sync
    if (prepares_) {
        sealed_.push_back(current_);
        job_->poke();
    }
    current_.reset();
}

// Called with the lock held: the segment the next `bytes` of records go to.
Segment& Spool::segment_for(std::uint64_t bytes, std::unique_lock<std::mutex>& lock) {
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
    ++waiting_for_room_;
    const bool room = room_.wait_for(lock, options_.block_timeout, [&] { return !full() || stop_waiting_; });
    --waiting_for_room_;
    if (!room) {
        throw Error(ErrorCode::Timeout,
                    describe() + "; waited " + std::to_string(options_.block_timeout.count()) + " ms for room");
    }
    if (full()) throw Error(ErrorCode::Closed, "the writer is closing: " + describe());
}

void Spool::stop_waiting() {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        stop_waiting_ = true;
    }
    room_.notify_all();
}

Spool::LoggedLine Spool::log_line(std::string_view object_key, std::string_view dedup_key, std::string_view line) {
    const std::uint64_t payload = line_payload_bytes(object_key, dedup_key, line);
    if (payload > kMaxPayload) {
        throw Error(ErrorCode::InvalidInput,
                    "a line of " + std::to_string(line.size()) + " bytes is too large to spool");
    }
    const std::uint64_t record_bytes = kHeaderBytes + payload;
    SpoolLineRef ref;
    std::unique_lock<std::mutex> lock(mutex_);
    wait_for_room(record_bytes, lock);
    Segment& seg = segment_for(record_bytes, lock);
    ref.seq = next_seq_++;
    // Encoded in place in the mapped segment, then checksummed there.
    encode_line_at(seg.map + seg.size, payload, seg.seed, ref.seq, object_key, dedup_key, line);
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
    populate_ahead(seg);
    return LoggedLine(*this, std::move(lock), ref, written_);
}

Spool::LoggedLine::~LoggedLine() {
    lock_.unlock();
    crash_point("spool.after_line");
    if (spool_.options_.fsync != SpoolFsync::Always) return;
    try {
        spool_.sync_through(position_);
    } catch (const std::exception& e) {
        // The record is in the page cache: the line is accepted (a crash of
        // the process loses nothing); only a power loss could.
        if (spool_.logger_) {
            spool_.logger_->log(LogLevel::Error, "training_output_spool_error",
                                {{"error", e.what()},
                                 {"detail", "the line is accepted and in the spool, but not yet known to be on disk"}});
        }
    }
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
        auto rec = payload ? decode_line(*payload) : std::nullopt;
        if (!rec || rec->seq != r.seq) {
            throw Error(ErrorCode::Storage,
                        "spool segment " + json::quote(seg.path) + " is damaged at offset " + std::to_string(r.offset));
        }
        fn(rec->line, rec->dedup_key);
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
        dedup_keys.emplace_back(dedup_key);
    });
}

std::uint64_t Spool::new_batch_id() {
    std::lock_guard<std::mutex> lock(mutex_);
    return next_batch_++;
}

namespace {
std::vector<std::uint64_t> seqs_of(const SpoolBatch& batch, std::uint64_t& max_seq) {
    std::vector<std::uint64_t> seqs;
    seqs.reserve(batch.lines.size());
    for (const auto& l : batch.lines) {
        seqs.push_back(l.seq);
        max_seq = std::max(max_seq, l.seq);
    }
    return seqs;
}
}  // namespace

void Spool::record_intent(const SpoolBatch& batch, const BatchIntent& intent) {
    IntentRecord r;
    r.batch = batch.id;
    r.object_key = batch.object_key;
    // A batch object's key goes where the monthly object's ETag would (an
    // ETag never contains '/'; replay tells them apart).
    r.etag = intent.as_object() ? intent.batch_object : intent.etag;
    r.object_size = intent.offset;
    r.batch_bytes = intent.bytes;
    r.batch_crc = intent.crc;
    std::uint64_t max_seq = 0;
    r.seqs = seqs_of(batch, max_seq);
    // One per batch: cheap enough to make durable under every policy but never.
    write_control([&](std::uint32_t seed) { return encode_intent(r, seed); }, max_seq,
                  options_.fsync != SpoolFsync::Never);
}

void Spool::record_done(const SpoolBatch& batch, const std::vector<std::string>& uncommitted) {
    DoneRecord r;
    r.batch = batch.id;
    r.object_key = batch.object_key;
    std::uint64_t max_seq = 0;
    r.seqs = seqs_of(batch, max_seq);
    r.uncommitted = uncommitted;
    if (fault_point("spool.record_done")) {  // tests: a disk that fails (ENOSPC, EIO) once the batch landed
        errno = EIO;
        throw storage_error("cannot write spool control file", path_);
    }
    // Durable with the next INTENT; if a crash loses it, that batch's INTENT
    // is checked again and found landed.
    const std::uint64_t file = write_control([&](std::uint32_t seed) { return encode_done(r, seed); }, max_seq, false);
    if (!uncommitted.empty()) {
        std::lock_guard<std::mutex> lock(mutex_);
        ++controls_[file].pinned;
        commit_file_[batch.id] = file;
    }
    release_lines(batch.lines);
}

void Spool::record_void(const std::string& object_key, const SpoolLineRef& line) {
    VoidRecord r{line.seq, object_key};
    write_control([&](std::uint32_t seed) { return encode_void(r, seed); }, line.seq, false);
    release_lines({line});
}

void Spool::record_committed(std::uint64_t batch) {
    write_control([&](std::uint32_t seed) { return encode_committed(batch, seed); }, 0, false);
    std::vector<std::string> obsolete;
    {
        std::unique_lock<std::mutex> lock(mutex_);
        auto it = commit_file_.find(batch);
        if (it == commit_file_.end()) return;
        auto c = controls_.find(it->second);
        if (c != controls_.end() && c->second.pinned > 0) --c->second.pinned;
        commit_file_.erase(it);
        obsolete = delete_landed_segments(lock);
    }
    remove_control_files(obsolete);
}

// The lines are no longer live (landed or voided); segments that hold
// nothing live any more go.
void Spool::release_lines(const std::vector<SpoolLineRef>& refs) {
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

// Serializes control records. INTENT, DONE, VOID and COMMITTED records go to
// control files of their own, written with write(): making an INTENT durable
// then syncs a few hundred bytes, not the megabytes of lines logged since
// the previous batch (the lines follow the fsync policy).
std::uint64_t Spool::write_control(const std::function<std::string(std::uint32_t seed)>& encode, std::uint64_t max_seq,
                                   bool sync) {
    std::lock_guard<std::mutex> control(control_mutex_);
    if (control_fd_ >= 0 && control_size_ >= kControlFileBytes) {
        // Full: the next record starts a new file, once this one's records
        // are on disk (a power loss must not keep a later file without it).
        if (options_.fsync != SpoolFsync::Never && ::fdatasync(control_fd_) != 0) {
            const int err = errno;
            ::close(control_fd_);
            control_fd_ = -1;
            errno = err;
            throw storage_error("cannot fsync spool control file", path_);
        }
        ::close(control_fd_);
        control_fd_ = -1;
    }
    if (control_fd_ < 0) open_control_file();
    std::string path;
    const std::uint64_t number = control_number_;
    {
        // Before the record is written: the file must not be deleted while
        // the lines the record names are still spooled.
        std::lock_guard<std::mutex> lock(mutex_);
        ControlFile& c = controls_[number];
        c.max_seq = std::max(c.max_seq, max_seq);
        path = c.path;
    }
    const std::string record = encode(control_seed_);
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
    return number;
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
        controls_[number] = ControlFile{path, 0, 0};
        control_number_ = number;
    }
    control_seed_ = checksum_seed(number);
    control_size_ = kMagicBytes;
    control_fd_ = fd.release();
}

// Segments oldest first once no line in them is live. Returns the control
// files that name only lines no longer in any segment and record no pending
// commit: their records can no longer matter to a replay, once the segments'
// removal is on disk (see remove_control_files). The control file being
// written stays.
std::vector<std::string> Spool::delete_landed_segments(std::unique_lock<std::mutex>& lock) {
    bool freed = false;
    while (!segments_.empty()) {
        auto it = segments_.begin();
        // The segment being written stays while it has room, drained or not:
        // the next lines go on in it (no new segment, file or sync per line
        // when traffic is quiet). Drained and half full, or taking half of
        // what the spool may hold, it goes (the next line starts a new one).
        if (it->second->live > 0) break;
        if (it->second == current_) {
            if (live_lines_ > 0) break;  // later lines would lose their records
            if (current_->size <= current_->capacity / 2 && bytes_ <= options_.max_bytes / 2) break;
            current_.reset();
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
        if (it->first != control_number_ && it->second.max_seq < oldest && it->second.pinned == 0) {
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
    if (!prepares_ || stopping_ || recycle_pending_ || spares_.size() >= kMaxSpares) return false;
    if (seg.capacity != options_.segment_bytes || seg.seed == 0) return false;
    std::string path = spare_path();
    if (::rename(seg.path.c_str(), path.c_str()) != 0) return false;
    recycle_path_ = std::move(path);
    recycle_pending_ = true;
    recycle_bytes_ = seg.size;
    job_->poke();
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
            const bool faulted = fault_point("spool.fsync");                // tests: a disk that fails
            if (faulted) errno = EIO;
            if ((faulted || ::fdatasync(seg->fd.get()) != 0) && failed.empty()) {
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
            ++stats_.fsync_errors;
            errno = err;
            throw storage_error("cannot fsync spool", failed);
        }
        synced_ = std::max(synced_, target);
        ++stats_.fsyncs;
    }
}

bool Spool::empty() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return live_lines_ == 0 && commit_file_.empty();
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
    s.waiting_for_room = waiting_for_room_;
    return s;
}

}  // namespace training_output
