// Log dedup store: claims and commits appended to one file in the order they
// come, every key indexed in each process's memory; safe for the processes of
// one machine.
//
// Why: a B-tree keyed by SHA-256 writes a page of its own for each claim and
// each commit once it holds a million keys (docs/benchmarks.md, "A store
// holding a million keys"); here a claim or a commit writes its record, about
// 60 bytes, at the end of the file, whatever the store holds.
//
// The file: "TDODEDUP" and a version (8 + 4 + 4 bytes), then records: u32 body
// length, u32 CRC-32C of the body, the body (little-endian integers):
//   1 NAMESPACE  u32 num, name
//   2 OWNER      i64 num, u32 id length, id, spool path   (registered, or its path changed)
//   3 RETIRE     i64 num
//   4 CLAIM      u32 ns, i64 owner, 32-byte key
//   5 COMMIT     u32 ns, i64 expires_at (unix seconds; INT64_MAX: never), 32-byte key
//   6 SEALED     the file was compacted into a new one at the same path
// A key is the 32 bytes of a "{namespace}:{hex}" key, or the SHA-256 of any
// other key's text after its last ':' under the namespace "<name>:" (no writer
// makes such keys; tests do).
//
// Processes: every write is made under flock(LOCK_EX) on the file, after the
// process has read what the others appended since it last looked. At the end
// of the file, under that lock, a record that does not check out is a torn
// write of a process that died (or of a power loss) and is cut off. Lookups
// read what is new without the lock (at most every kReadEvery) and stop at a
// record still being written.
//
// What the index holds and what it drops: a commit whose time is up and a
// claim whose owner is retired or unknown are free, as in the SQLite store;
// each process drops them from its own memory (maintain()) without a record,
// and a compaction leaves them out of the file.
//
// Durability: as the SQLite store's (synchronous=NORMAL): records reach the
// disk at the next maintain() (every few seconds) and at close; a claim that a
// power loss took is confirmed again when its spool is replayed (docs/design.md,
// "Claims and durability").
//
// Compaction (maintain(), when the file is over compact_at_bytes and 2.5
// times what it holds that is live): the live records are written to a new file, synced and
// renamed over the path; the old file gets a SEALED record, so that a process
// that reads it next opens the path again and reads the new file whole.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <vector>

#include "common/crc32c.hpp"
#include "common/fs.hpp"
#include "common/json.hpp"
#include "common/sha256.hpp"
#include "dedup/local_store.hpp"
#include "training_output/error.hpp"
#include "training_output/sys/dedup_store.hpp"

namespace training_output {
namespace {

constexpr char kMagic[8] = {'T', 'D', 'O', 'D', 'E', 'D', 'U', 'P'};
constexpr std::uint32_t kVersion = 1;
constexpr std::size_t kHeaderBytes = 16;
constexpr std::size_t kRecordHeader = 8;          // length, CRC
constexpr std::uint32_t kMaxBody = 64 << 10;      // a record's body, at most (an owner's path is the longest part)
constexpr std::size_t kReadChunk = 1 << 20;       // what catch-up reads at once
constexpr std::size_t kLiveRecordBytes = 8 + 45;  // a CLAIM or COMMIT record
constexpr std::chrono::milliseconds kReadEvery{2};

enum Type : std::uint8_t { kNamespace = 1, kOwner = 2, kRetire = 3, kClaim = 4, kCommit = 5, kSealed = 6 };

struct Key {
    std::uint32_t ns = 0;
    std::uint8_t bytes[32] = {};
    bool operator==(const Key& o) const { return ns == o.ns && std::memcmp(bytes, o.bytes, 32) == 0; }
};

struct Entry {
    std::int64_t owner = 0;    // the claimant; 0 once committed
    std::int64_t expires = 0;  // a commit's end (unix seconds, INT64_MAX: never)
    bool committed = false;
};

// Every key the file holds: one flat open-addressing table (linear probing,
// at most 70 % full), 48 bytes a slot. No allocation per key, so a store of a
// million keys loads, grows and goes away in one piece.
class KeyTable {
public:
    std::size_t size() const { return used_; }

    const Entry* find(const Key& k, Entry& out) const {
        if (slots_.empty()) return nullptr;
        for (std::size_t i = home(k);; i = (i + 1) & mask()) {
            const Slot& s = slots_[i];
            if (s.state == kFree) return nullptr;
            if (s.key == k) {
                out = s.entry();
                return &out;
            }
        }
    }

    void set(const Key& k, const Entry& e) {
        if ((used_ + 1) * 10 > slots_.size() * 7) grow();
        std::size_t i = home(k);
        while (slots_[i].state != kFree && !(slots_[i].key == k)) i = (i + 1) & mask();
        if (slots_[i].state == kFree) ++used_;
        slots_[i].key = k;
        slots_[i].put(e);
    }

    template <class Fn>
    void for_each(Fn&& fn) const {
        for (const Slot& s : slots_) {
            if (s.state != kFree) fn(s.key, s.entry());
        }
    }

    // Keeps the entries `drop` says no to (a table built anew: probing needs
    // no tombstones).
    template <class Drop>
    void drop_if(Drop&& drop) {
        std::size_t dropped = 0;
        for_each([&](const Key& k, const Entry& e) { dropped += drop(k, e) ? 1 : 0; });
        if (dropped == 0) return;
        std::vector<Slot> old;
        old.swap(slots_);
        used_ = 0;
        slots_.assign(capacity_for(used_of(old) - dropped), Slot{});
        for (const Slot& s : old) {
            if (s.state != kFree && !drop(s.key, s.entry())) set(s.key, s.entry());
        }
    }

    void clear() {
        std::vector<Slot>().swap(slots_);
        used_ = 0;
    }

private:
    enum : std::uint8_t { kFree = 0, kClaimed = 1, kCommitted = 2 };
    struct Slot {
        Key key;
        std::uint8_t state = kFree;
        std::int64_t value = 0;  // the owner of a claim, the end of a commit
        Entry entry() const { return state == kCommitted ? Entry{0, value, true} : Entry{value, 0, false}; }
        void put(const Entry& e) {
            state = e.committed ? kCommitted : kClaimed;
            value = e.committed ? e.expires : e.owner;
        }
    };

    static std::size_t used_of(const std::vector<Slot>& slots) {
        std::size_t n = 0;
        for (const Slot& s : slots) n += s.state != kFree;
        return n;
    }
    static std::size_t capacity_for(std::size_t keys) {
        std::size_t cap = 1024;
        while (cap * 7 < keys * 10) cap *= 2;
        return cap;
    }
    std::size_t mask() const { return slots_.size() - 1; }
    std::size_t home(const Key& k) const {
        std::uint64_t h;
        std::memcpy(&h, k.bytes, 8);  // a SHA-256: its bytes are already spread
        return static_cast<std::size_t>(h ^ (std::uint64_t(k.ns) * 0x9E3779B97F4A7C15ull)) & mask();
    }
    void grow() {
        std::vector<Slot> old;
        old.swap(slots_);
        slots_.assign(old.empty() ? 1024 : old.size() * 2, Slot{});
        used_ = 0;
        for (const Slot& s : old) {
            if (s.state != kFree) set(s.key, s.entry());
        }
    }

    std::vector<Slot> slots_;
    std::size_t used_ = 0;
};

struct Owner {
    std::string id, path;
};

// flock(LOCK_EX), through signals; false on an error (errno set).
bool lock_exclusive(int fd) {
    while (::flock(fd, LOCK_EX) != 0) {
        if (errno != EINTR) return false;
    }
    return true;
}

// Little-endian appends and reads.
void put32(std::string& out, std::uint32_t v) {
    for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>(v >> (8 * i)));
}
void put64(std::string& out, std::int64_t v) {
    for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>(static_cast<std::uint64_t>(v) >> (8 * i)));
}
std::uint32_t get32(const char* p) {
    std::uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v |= std::uint32_t(static_cast<unsigned char>(p[i])) << (8 * i);
    return v;
}
std::int64_t get64(const char* p) {
    std::uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v |= std::uint64_t(static_cast<unsigned char>(p[i])) << (8 * i);
    return static_cast<std::int64_t>(v);
}

// The record around `body`.
void put_record(std::string& out, const std::string& body) {
    put32(out, static_cast<std::uint32_t>(body.size()));
    put32(out, crc32c::compute(body));
    out += body;
}

// Each record as the file holds it (the format above), appended to `out`.
std::string file_header() {
    std::string header(kMagic, sizeof kMagic);
    put32(header, kVersion);
    put32(header, 0);
    return header;
}
void put_namespace(std::string& out, std::uint32_t num, const std::string& name) {
    std::string body(1, static_cast<char>(kNamespace));
    put32(body, num);
    body += name;
    put_record(out, body);
}
void put_owner(std::string& out, std::int64_t num, const std::string& id, const std::string& path) {
    std::string body(1, static_cast<char>(kOwner));
    put64(body, num);
    put32(body, static_cast<std::uint32_t>(id.size()));
    body += id;
    body += path;
    put_record(out, body);
}
void put_retire(std::string& out, std::int64_t num) {
    std::string body(1, static_cast<char>(kRetire));
    put64(body, num);
    put_record(out, body);
}
// CLAIM (owner) or COMMIT (its end), by the entry.
void put_entry(std::string& out, const Key& k, const Entry& e) {
    std::string body(1, static_cast<char>(e.committed ? kCommit : kClaim));
    put32(body, k.ns);
    put64(body, e.committed ? e.expires : e.owner);
    body.append(reinterpret_cast<const char*>(k.bytes), 32);
    put_record(out, body);
}

class LogDedupStore final : public DedupStore {
public:
    explicit LogDedupStore(const LogStoreOptions& options)
        : path_(options.path), compact_at_(options.compact_at_bytes) {
        const std::string parent = fs::parent_of(path_);
        if (!parent.empty()) fs::make_dirs(parent);
        std::lock_guard<std::mutex> lock(mutex_);
        open_file();
        Flock f(*this);
        if (file_size() < kHeaderBytes) {  // new, or its creator died before the header was whole
            if (::ftruncate(fd_.get(), 0) != 0) fail("cannot be written");
            const std::string header = file_header();
            if (::pwrite(fd_.get(), header.data(), header.size(), 0) != static_cast<ssize_t>(header.size())) {
                fail("cannot be written");
            }
        }
        catch_up(true);
        char* real = ::realpath(path_.c_str(), nullptr);
        identity_ = "log:" + std::string(real ? real : path_.c_str());
        std::free(real);
    }

    ~LogDedupStore() override {
        if (dirty_) ::fdatasync(fd_.get());
    }

    ClaimState claim(const std::string& key, const std::string& owner, std::chrono::seconds ttl) override {
        return claim_batch({key}, owner, ttl).front();
    }

    std::vector<ClaimState> claim_batch(const std::vector<std::string>& keys, const std::string& owner,
                                        std::chrono::seconds) override {
        std::lock_guard<std::mutex> lock(mutex_);
        Flock f(*this);
        catch_up(true);
        const std::int64_t me = owner_number(owner);
        const std::int64_t now = dedup::unix_now();
        std::vector<ClaimState> out;
        out.reserve(keys.size());
        std::string records;
        for (const auto& text : keys) {
            const Key k = key_of(text, records);
            Entry found;
            if (const Entry* e_ = index_.find(k, found)) {
                const Entry& e = *e_;
                if (e.committed && e.expires > now) {
                    out.push_back(ClaimState::Committed);
                    continue;
                }
                if (!e.committed && e.owner == me) {
                    out.push_back(ClaimState::Own);
                    continue;
                }
                if (!e.committed && owner_alive(e.owner)) {
                    out.push_back(ClaimState::Held);
                    continue;
                }
            }
            const Entry claimed{me, 0, false};
            put_entry(records, k, claimed);
            index_.set(k, claimed);  // taken now: a later copy of the key in this batch is Own
            out.push_back(ClaimState::Claimed);
        }
        append(records);
        return out;
    }

    // Never waits: while a claim or commit of this process holds the store
    // (it may be waiting for another process's lock), the answer is "cannot
    // now", and the content takes the path of content not seen before.
    std::optional<KeyState> lookup(const std::string& key, const std::string& owner) override {
        std::unique_lock<std::mutex> lock(mutex_, std::try_to_lock);
        if (!lock.owns_lock()) return std::nullopt;
        const auto now = std::chrono::steady_clock::now();
        if (now - read_at_ >= kReadEvery) {
            catch_up(false);
            read_at_ = now;
        }
        Key k;
        if (!find_key(key, k)) return KeyState::Absent;
        Entry found;
        const Entry* e_ = index_.find(k, found);
        if (!e_) return KeyState::Absent;
        const Entry& e = *e_;
        if (e.committed) return e.expires > dedup::unix_now() ? KeyState::Committed : KeyState::Absent;
        auto id = owner_by_id_.find(owner);
        return id != owner_by_id_.end() && id->second == e.owner ? KeyState::Own : KeyState::Other;
    }

    void commit(const std::vector<std::string>& keys, std::chrono::seconds ttl) override {
        if (keys.empty()) return;
        std::lock_guard<std::mutex> lock(mutex_);
        Flock f(*this);
        catch_up(true);
        const std::int64_t expires = ttl.count() <= 0 ? INT64_MAX : dedup::expiry(ttl);
        std::string records;
        for (const auto& text : keys) {
            if (text.empty()) continue;
            const Key k = key_of(text, records);
            const Entry committed{0, expires, true};
            put_entry(records, k, committed);
            index_.set(k, committed);
        }
        append(records);
    }

    void register_owner(const OwnerRecord& owner) override {
        std::lock_guard<std::mutex> lock(mutex_);
        Flock f(*this);
        catch_up(true);
        auto it = owner_by_id_.find(owner.id);
        if (it != owner_by_id_.end() && owners_[it->second].path == owner.spool_path) return;
        const std::int64_t num = it != owner_by_id_.end() ? it->second : next_owner_;
        std::string records;
        put_owner(records, num, owner.id, owner.spool_path);
        apply_owner(num, owner.id, owner.spool_path);
        append(records);
    }

    void retire_owner(const std::string& owner) override {
        std::lock_guard<std::mutex> lock(mutex_);
        Flock f(*this);
        catch_up(true);
        auto it = owner_by_id_.find(owner);
        if (it == owner_by_id_.end()) return;
        std::string records;
        put_retire(records, it->second);
        apply_retire(it->second);
        append(records);
    }

    // Owners whose spool is gone retired; what is free dropped from memory;
    // the file synced, and compacted when it holds mostly what is no longer
    // live.
    void maintain() override {
        std::lock_guard<std::mutex> lock(mutex_);
        Flock f(*this);
        catch_up(true);
        std::string records;
        for (auto it = owners_.begin(); it != owners_.end();) {
            struct stat st;
            if (::stat(it->second.path.c_str(), &st) != 0 && errno == ENOENT) {
                put_retire(records, it->first);
                owner_by_id_.erase(it->second.id);
                it = owners_.erase(it);
            } else {
                ++it;
            }
        }
        append(records);
        const std::int64_t now = dedup::unix_now();
        index_.drop_if(
            [&](const Key&, const Entry& e) { return e.committed ? e.expires <= now : owners_.count(e.owner) == 0; });
        if (dirty_ && ::fdatasync(fd_.get()) == 0) dirty_ = false;
        if (applied_ > compact_at_ && applied_ > (index_.size() * kLiveRecordBytes) * 5 / 2) compact();
    }

    const char* kind() const noexcept override { return "log"; }
    std::string identity() const override { return identity_; }

private:
    // flock(LOCK_EX) on the file for a scope (mutex_ held).
    struct Flock {
        explicit Flock(LogDedupStore& s) : s_(s) {
            if (!lock_exclusive(s_.fd_.get())) s_.fail("cannot be locked");
        }
        ~Flock() { ::flock(s_.fd_.get(), LOCK_UN); }
        Flock(const Flock&) = delete;
        Flock& operator=(const Flock&) = delete;
        LogDedupStore& s_;
    };

    [[noreturn]] void fail(const std::string& what) const {
        const std::string why = errno ? std::string(": ") + std::strerror(errno) : std::string();
        throw Error(ErrorCode::DedupStore, "dedup store " + json::quote(path_) + " " + what + why);
    }

    void open_file() {
        fd_ = fs::Fd(::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
        if (!fd_.valid()) fail("cannot be opened");
        index_.clear();
        owners_.clear();
        owner_by_id_.clear();
        namespaces_.clear();
        next_ns_ = 1;
        next_owner_ = 1;
        applied_ = 0;
        pending_.clear();
        sealed_ = false;
    }

    std::uint64_t file_size() const {
        struct stat st;
        if (::fstat(fd_.get(), &st) != 0) fail("cannot be read");
        return static_cast<std::uint64_t>(st.st_size);
    }

    // Reads and applies what was appended since applied_. `locked`: the file
    // is ours (flock): a record at the end that does not check out is torn,
    // and cut off. A SEALED record: the path holds a new file; read it whole.
    void catch_up(bool locked) {
        for (;;) {
            if (!sealed_ && read_new(locked) == ReadEnd::End) return;
            sealed_ = true;
            struct stat ours, at_path;
            const bool replaced = ::fstat(fd_.get(), &ours) == 0 && ::stat(path_.c_str(), &at_path) == 0 &&
                                  (ours.st_ino != at_path.st_ino || ours.st_dev != at_path.st_dev);
            if (!replaced) {
                // Not renamed (yet): without the lock, a compaction is under
                // way; look again later. Under it, the compactor is done: if
                // SEALED is still the file's last record (9 bytes, the
                // smallest there is) it died before its rename, and the
                // record goes; if not, it cut the record off itself (its
                // rename failed) and others may have written since. Either
                // way, read on from where the record was.
                if (!locked) return;
                if (file_size() == sealed_at_ + kRecordHeader + 1 &&
                    ::ftruncate(fd_.get(), static_cast<off_t>(sealed_at_)) != 0) {
                    fail("cannot be repaired");
                }
                applied_ = sealed_at_;
                pending_.clear();
                sealed_ = false;
                continue;
            }
            fs::Fd old = std::move(fd_);
            open_file();
            if (locked) {  // the caller's Flock unlocks the new file: lock it in the old one's place
                lock_exclusive(fd_.get());
                ::flock(old.get(), LOCK_UN);
            }
        }
    }

    enum class ReadEnd { End, Sealed };

    ReadEnd read_new(bool locked) {
        if (applied_ == 0) {  // the header
            std::string header;
            if (!fs::read_at(fd_.get(), 0, kHeaderBytes, header)) fail("cannot be read");
            if (header.size() < kHeaderBytes) return ReadEnd::End;  // being created by another process
            if (std::memcmp(header.data(), kMagic, sizeof kMagic) != 0 || get32(header.data() + 8) != kVersion) {
                errno = 0;
                fail("is not a dedup log of this version");
            }
            applied_ = kHeaderBytes;
        }
        for (;;) {
            if (!fs::read_at(fd_.get(), applied_, kReadChunk, pending_)) fail("cannot be read");
            if (pending_.empty()) return ReadEnd::End;
            std::size_t at = 0;
            bool torn = false;
            while (pending_.size() - at >= kRecordHeader) {
                const std::uint32_t size = get32(pending_.data() + at);
                if (size == 0 || size > kMaxBody) {
                    torn = true;
                    break;
                }
                if (pending_.size() - at - kRecordHeader < size) break;  // the rest comes with the next read
                const std::string_view body(pending_.data() + at + kRecordHeader, size);
                if (crc32c::compute(body) != get32(pending_.data() + at + 4)) {
                    torn = true;
                    break;
                }
                at += kRecordHeader + size;
                applied_ += kRecordHeader + size;
                if (apply(body)) {
                    sealed_at_ = applied_ - kRecordHeader - size;
                    return ReadEnd::Sealed;
                }
            }
            const bool short_read = pending_.size() < kReadChunk;
            if (torn || (short_read && at < pending_.size())) {
                // Not a whole record: one being written (not ours to judge
                // without the lock), or, under the lock, a torn one.
                if (locked) {
                    if (::ftruncate(fd_.get(), static_cast<off_t>(applied_)) != 0) fail("cannot be repaired");
                    dirty_ = true;
                }
                return ReadEnd::End;
            }
            if (short_read) return ReadEnd::End;
            if (at == 0) {  // a record larger than a chunk: never written by this store
                errno = 0;
                fail("holds a record too large");
            }
        }
    }

    // Applies one record; true for SEALED.
    bool apply(std::string_view body) {
        const char* p = body.data();
        const std::size_t n = body.size();
        switch (static_cast<std::uint8_t>(p[0])) {
            case kNamespace:
                if (n < 5) return false;
                namespaces_[std::string(p + 5, n - 5)] = get32(p + 1);
                next_ns_ = std::max(next_ns_, get32(p + 1) + 1);
                return false;
            case kOwner: {
                if (n < 13) return false;
                const std::uint32_t id_size = get32(p + 9);
                if (n < 13 + std::size_t(id_size)) return false;
                apply_owner(get64(p + 1), std::string(p + 13, id_size),
                            std::string(p + 13 + id_size, n - 13 - id_size));
                return false;
            }
            case kRetire:
                if (n >= 9) apply_retire(get64(p + 1));
                return false;
            case kClaim:
            case kCommit: {
                if (n != 1 + 4 + 8 + 32) return false;
                Key k;
                k.ns = get32(p + 1);
                std::memcpy(k.bytes, p + 13, 32);
                if (p[0] == kClaim) {
                    index_.set(k, Entry{get64(p + 5), 0, false});
                } else {
                    index_.set(k, Entry{0, get64(p + 5), true});
                }
                return false;
            }
            case kSealed: return true;
            default: return false;  // a type of a later version: nothing this one needs
        }
    }

    void apply_owner(std::int64_t num, const std::string& id, const std::string& path) {
        auto old = owner_by_id_.find(id);
        if (old != owner_by_id_.end() && old->second != num) owners_.erase(old->second);
        owners_[num] = Owner{id, path};
        owner_by_id_[id] = num;
        next_owner_ = std::max(next_owner_, num + 1);
    }

    void apply_retire(std::int64_t num) {
        auto it = owners_.find(num);
        if (it == owners_.end()) return;
        owner_by_id_.erase(it->second.id);
        owners_.erase(it);
    }

    // Writes `records` at the end of the file (flock held, caught up). On a
    // failure the file is cut back and the index read again from it.
    void append(const std::string& records) {
        if (records.empty()) return;
        const std::uint64_t at = applied_;
        std::size_t done = 0;
        while (done < records.size()) {
            const ssize_t n =
                ::pwrite(fd_.get(), records.data() + done, records.size() - done, static_cast<off_t>(at + done));
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) {
                const int err = errno;
                if (::ftruncate(fd_.get(), static_cast<off_t>(at)) == 0) {}
                reload();
                errno = err;
                fail("cannot be written");
            }
            done += static_cast<std::size_t>(n);
        }
        applied_ += records.size();
        dirty_ = true;
    }

    // The index as the file has it (after a failed write). The old
    // descriptor, and its flock, go first: two descriptors of one process
    // exclude each other.
    void reload() {
        fd_.reset();
        open_file();
        lock_exclusive(fd_.get());
        catch_up(true);
    }

    // The key's namespace and bytes; a new namespace gets its record into `records`.
    Key key_of(const std::string& text, std::string& records) {
        Key k;
        std::string ns_name;
        key_parts(text, k, ns_name);
        auto it = namespaces_.find(ns_name);
        if (it != namespaces_.end()) {
            k.ns = it->second;
            return k;
        }
        const std::uint32_t num = next_ns_++;
        put_namespace(records, num, ns_name);
        namespaces_[ns_name] = num;
        k.ns = num;
        return k;
    }

    // For lookups: false when the namespace is not known (so neither is the key).
    bool find_key(const std::string& text, Key& k) {
        std::string ns_name;
        key_parts(text, k, ns_name);
        auto it = namespaces_.find(ns_name);
        if (it == namespaces_.end()) return false;
        k.ns = it->second;
        return true;
    }

    static void key_parts(const std::string& text, Key& k, std::string& ns_name) {
        const std::size_t colon = text.rfind(':');
        const std::string_view key(text);
        const std::string_view ns = colon == std::string::npos ? std::string_view() : key.substr(0, colon);
        const std::string_view tail = colon == std::string::npos ? key : key.substr(colon + 1);
        ns_name.assign(ns.data(), ns.size());
        if (!crypto::parse_hex(tail, k.bytes, sizeof k.bytes)) {
            ns_name.push_back(':');
            const crypto::Digest d = crypto::sha256(tail);
            std::memcpy(k.bytes, d.data(), 32);
        }
    }

    std::int64_t owner_number(const std::string& id) const {
        auto it = owner_by_id_.find(id);
        return it != owner_by_id_.end() ? it->second : dedup::unregistered_owner_number(id);
    }

    // Registered, and its spool directory exists.
    bool owner_alive(std::int64_t num) const {
        auto it = owners_.find(num);
        if (it == owners_.end()) return false;
        struct stat st;
        return ::stat(it->second.path.c_str(), &st) == 0;
    }

    // The live records into a new file renamed over the path; SEALED into the
    // old one (flock held on it, caught up).
    void compact() {
        const std::string tmp = path_ + ".compact";
        fs::Fd out(::open(tmp.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
        if (!out.valid()) return;  // tried again at the next round
        std::string data = file_header();
        for (const auto& [name, num] : namespaces_) put_namespace(data, num, name);
        for (const auto& [num, o] : owners_) put_owner(data, num, o.id, o.path);
        index_.for_each([&](const Key& k, const Entry& e) { put_entry(data, k, e); });
        if (!fs::write_all(out.get(), data) || ::fsync(out.get()) != 0) {
            ::unlink(tmp.c_str());
            return;
        }
        // SEALED first: a process that appends to the old file afterwards
        // must have read it (under the flock it waits for), and follows.
        std::string sealed, body(1, static_cast<char>(kSealed));
        put_record(sealed, body);
        if (::pwrite(fd_.get(), sealed.data(), sealed.size(), static_cast<off_t>(applied_)) !=
            static_cast<ssize_t>(sealed.size())) {
            if (::ftruncate(fd_.get(), static_cast<off_t>(applied_)) == 0) {}
            ::unlink(tmp.c_str());
            return;
        }
        if (::rename(tmp.c_str(), path_.c_str()) != 0) {
            // Not renamed: the old file stays the store, unsealed again (a
            // reader that saw SEALED meanwhile finds this file at the path).
            if (::ftruncate(fd_.get(), static_cast<off_t>(applied_)) == 0) {}
            ::unlink(tmp.c_str());
            return;
        }
        fs::fsync_dir(fs::parent_of(path_));
        // Ours is the new file, as written (its lock taken before the old one's goes).
        lock_exclusive(out.get());
        ::flock(fd_.get(), LOCK_UN);
        fd_ = std::move(out);
        applied_ = data.size();
        pending_.clear();
        dirty_ = false;
    }

    std::string path_;
    std::uint64_t compact_at_;
    std::string identity_;
    std::mutex mutex_;  // everything below
    fs::Fd fd_;
    std::uint64_t applied_ = 0;  // bytes of the file read and applied
    bool sealed_ = false;        // SEALED read: the path holds (or is about to hold) a new file
    std::uint64_t sealed_at_ = 0;
    std::string pending_;  // catch-up's read buffer
    bool dirty_ = false;   // written since the last fdatasync
    std::chrono::steady_clock::time_point read_at_{};
    KeyTable index_;
    std::map<std::string, std::uint32_t> namespaces_;
    std::uint32_t next_ns_ = 1;
    std::map<std::int64_t, Owner> owners_;
    std::map<std::string, std::int64_t> owner_by_id_;
    std::int64_t next_owner_ = 1;
};

}  // namespace

std::unique_ptr<DedupStore> make_log_dedup_store(const LogStoreOptions& options) {
    return std::make_unique<LogDedupStore>(options);
}

}  // namespace training_output
