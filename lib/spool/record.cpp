// Spool records (format in record.hpp).
#include "spool/record.hpp"

#include <cstdio>
#include <cstring>

#include "common/crc32c.hpp"

namespace training_output::spool {
namespace {

void put_u32(std::string& out, std::uint32_t v) {
    char b[4];
    out.append(b, static_cast<std::size_t>(put_u32_at(b, v) - b));
}
void put_u64(std::string& out, std::uint64_t v) {
    char b[8];
    out.append(b, static_cast<std::size_t>(put_u64_at(b, v) - b));
}
void put_bytes(std::string& out, std::string_view s) {
    put_u32(out, static_cast<std::uint32_t>(s.size()));
    out.append(s.data(), s.size());
}
void put_varint(std::string& out, std::uint64_t v) {
    while (v >= 0x80) {
        out.push_back(static_cast<char>((v & 0x7F) | 0x80));
        v >>= 7;
    }
    out.push_back(static_cast<char>(v));
}
void put_seqs(std::string& out, const std::vector<std::uint64_t>& seqs) {
    put_u32(out, static_cast<std::uint32_t>(seqs.size()));
    std::uint64_t prev = 0;
    for (std::uint64_t s : seqs) {
        const std::int64_t d = static_cast<std::int64_t>(s - prev);  // wraps: any order encodes
        put_varint(out, (static_cast<std::uint64_t>(d) << 1) ^ static_cast<std::uint64_t>(d >> 63));
        prev = s;
    }
}

// Starts a record: room for the header, then the type byte.
std::string begin_record(RecordType type, std::size_t payload_hint) {
    std::string r;
    r.reserve(kHeaderBytes + 1 + payload_hint);
    r.resize(kHeaderBytes);
    r.push_back(static_cast<char>(type));
    return r;
}

// Fills in the length and the checksum over length + payload.
std::string end_record(std::string r, std::uint32_t seed) {
    put_u32_at(&r[4], static_cast<std::uint32_t>(r.size() - kHeaderBytes));
    put_u32_at(&r[0], crc32c::compute(std::string_view(r).substr(4), seed));
    return r;
}

}  // namespace

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
std::uint32_t get_u32_at(std::string_view s, std::size_t pos) {
    std::uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v |= std::uint32_t(static_cast<unsigned char>(s[pos + i])) << (8 * i);
    return v;
}

std::uint32_t checksum_seed(std::uint64_t file_number) {
    char n[8];
    put_u64_at(n, file_number);
    return crc32c::compute(std::string_view(n, 8));
}

std::uint64_t line_payload_bytes(std::string_view object_key, std::string_view dedup_key, std::string_view line) {
    return 1 + 8 + 4 + object_key.size() + 4 + dedup_key.size() + 4 + line.size();
}

void encode_line_at(char* r, std::uint64_t payload_bytes, std::uint32_t seed, std::uint64_t seq,
                    std::string_view object_key, std::string_view dedup_key, std::string_view line) {
    put_u32_at(r + 4, static_cast<std::uint32_t>(payload_bytes));
    char* p = r + kHeaderBytes;
    *p++ = static_cast<char>(kLine);
    p = put_u64_at(p, seq);
    p = put_bytes_at(p, object_key);
    p = put_bytes_at(p, dedup_key);
    p = put_u32_at(p, static_cast<std::uint32_t>(line.size()));
    if (!line.empty()) std::memcpy(p, line.data(), line.size());
    // The line is checksummed from the caller's buffer, which is in cache, not read
    // back from the mapped segment.
    const std::uint32_t head = crc32c::compute(std::string_view(r + 4, static_cast<std::size_t>(p - (r + 4))), seed);
    put_u32_at(r, crc32c::compute(line, head));
}

std::optional<std::string_view> record_at(std::string_view data, std::size_t pos, std::uint32_t seed) {
    if (pos > data.size() || data.size() - pos < kHeaderBytes) return std::nullopt;
    const std::uint32_t crc = get_u32_at(data, pos);
    const std::uint32_t len = get_u32_at(data, pos + 4);
    if (len == 0 || len > kMaxPayload || data.size() - pos - kHeaderBytes < len) return std::nullopt;
    if (crc32c::compute(data.substr(pos + 4, 4 + std::size_t(len)), seed) != crc) return std::nullopt;
    return data.substr(pos + kHeaderBytes, len);
}

// --- Fields -----------------------------------------------------------------

bool Fields::need(std::size_t n) {
    if (!ok_ || s_.size() - pos_ < n) ok_ = false;
    return ok_;
}
unsigned char Fields::u8() { return need(1) ? static_cast<unsigned char>(s_[pos_++]) : 0; }
std::uint32_t Fields::u32() {
    if (!need(4)) return 0;
    const std::uint32_t v = get_u32_at(s_, pos_);
    pos_ += 4;
    return v;
}
std::uint64_t Fields::u64() {
    if (!need(8)) return 0;
    std::uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v |= std::uint64_t(static_cast<unsigned char>(s_[pos_ + i])) << (8 * i);
    pos_ += 8;
    return v;
}
std::uint64_t Fields::varint() {
    std::uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (!need(1)) return 0;
        const auto b = static_cast<unsigned char>(s_[pos_++]);
        v |= std::uint64_t(b & 0x7F) << shift;
        if (!(b & 0x80)) return v;
    }
    ok_ = false;  // more than ten bytes: not a varint this code wrote
    return 0;
}
std::string_view Fields::bytes() {
    const std::uint32_t n = u32();
    if (!need(n)) return {};
    auto v = s_.substr(pos_, n);
    pos_ += n;
    return v;
}
std::vector<std::uint64_t> Fields::seqs() {
    const std::uint32_t n = u32();
    std::vector<std::uint64_t> out;
    // Each seq takes at least one byte: a count beyond the bytes left is damage.
    if (!ok_ || n > s_.size() - pos_) {
        ok_ = false;
        return out;
    }
    out.reserve(n);
    std::uint64_t prev = 0;
    for (std::uint32_t i = 0; i < n && ok_; ++i) {
        const std::uint64_t z = varint();
        const std::uint64_t d = (z >> 1) ^ (~(z & 1) + 1);
        prev += d;
        out.push_back(prev);
    }
    return out;
}
std::vector<std::string> Fields::strings() {
    const std::uint32_t n = u32();
    std::vector<std::string> out;
    if (!ok_ || n > (s_.size() - pos_) / 4) {  // each takes its 4-byte length at least
        ok_ = false;
        return out;
    }
    out.reserve(n);
    for (std::uint32_t i = 0; i < n && ok_; ++i) out.emplace_back(bytes());
    return out;
}

// --- payloads -----------------------------------------------------------------

std::optional<LineRecord> decode_line(std::string_view payload) {
    Fields f(payload);
    if (f.u8() != kLine) return std::nullopt;
    LineRecord r;
    r.seq = f.u64();
    r.object_key = f.bytes();
    r.dedup_key = f.bytes();
    r.line = f.bytes();
    if (!f.ok()) return std::nullopt;
    return r;
}

std::string encode_intent(const IntentRecord& r, std::uint32_t seed) {
    std::string out = begin_record(kIntent, 48 + r.object_key.size() + r.etag.size() + 2 * r.seqs.size());
    put_u64(out, r.batch);
    put_bytes(out, r.object_key);
    put_bytes(out, r.etag);
    put_u64(out, r.object_size);
    put_u64(out, r.batch_bytes);
    put_u32(out, r.batch_crc);
    put_seqs(out, r.seqs);
    return end_record(std::move(out), seed);
}

std::string encode_done(const DoneRecord& r, std::uint32_t seed) {
    std::size_t hint = 24 + r.object_key.size() + 2 * r.seqs.size();
    for (const auto& k : r.uncommitted) hint += 4 + k.size();
    std::string out = begin_record(kDone, hint);
    put_u64(out, r.batch);
    put_bytes(out, r.object_key);
    put_seqs(out, r.seqs);
    put_u32(out, static_cast<std::uint32_t>(r.uncommitted.size()));
    for (const auto& k : r.uncommitted) put_bytes(out, k);
    return end_record(std::move(out), seed);
}

std::string encode_void(const VoidRecord& r, std::uint32_t seed) {
    std::string out = begin_record(kVoid, 12 + r.object_key.size());
    put_u64(out, r.seq);
    put_bytes(out, r.object_key);
    return end_record(std::move(out), seed);
}

std::string encode_committed(std::uint64_t batch, std::uint32_t seed) {
    std::string out = begin_record(kCommitted, 8);
    put_u64(out, batch);
    return end_record(std::move(out), seed);
}

std::string encode_range_intent(const RangeRecord& r, std::uint32_t seed) {
    std::string out = begin_record(kRangeIntent, 40 + r.object_key.size() + r.etag.size());
    put_u64(out, r.first);
    put_u64(out, r.last);
    put_bytes(out, r.object_key);
    put_bytes(out, r.etag);
    put_u64(out, r.object_size);
    return end_record(std::move(out), seed);
}

std::string encode_range_done(const RangeRecord& r, std::uint32_t seed) {
    std::string out = begin_record(kRangeDone, 20 + r.object_key.size());
    put_u64(out, r.first);
    put_u64(out, r.last);
    put_bytes(out, r.object_key);
    return end_record(std::move(out), seed);
}

std::optional<IntentRecord> decode_intent(std::string_view payload) {
    Fields f(payload);
    if (f.u8() != kIntent) return std::nullopt;
    IntentRecord r;
    r.batch = f.u64();
    r.object_key = std::string(f.bytes());
    r.etag = std::string(f.bytes());
    r.object_size = f.u64();
    r.batch_bytes = f.u64();
    r.batch_crc = f.u32();
    r.seqs = f.seqs();
    if (!f.ok()) return std::nullopt;
    return r;
}

std::optional<DoneRecord> decode_done(std::string_view payload) {
    Fields f(payload);
    if (f.u8() != kDone) return std::nullopt;
    DoneRecord r;
    r.batch = f.u64();
    r.object_key = std::string(f.bytes());
    r.seqs = f.seqs();
    r.uncommitted = f.strings();
    if (!f.ok()) return std::nullopt;
    return r;
}

std::optional<VoidRecord> decode_void(std::string_view payload) {
    Fields f(payload);
    if (f.u8() != kVoid) return std::nullopt;
    VoidRecord r;
    r.seq = f.u64();
    r.object_key = std::string(f.bytes());
    if (!f.ok()) return std::nullopt;
    return r;
}

std::optional<std::uint64_t> decode_committed(std::string_view payload) {
    Fields f(payload);
    if (f.u8() != kCommitted) return std::nullopt;
    const std::uint64_t batch = f.u64();
    if (!f.ok()) return std::nullopt;
    return batch;
}

std::optional<RangeRecord> decode_range(std::string_view payload, bool intent) {
    Fields f(payload);
    if (f.u8() != (intent ? kRangeIntent : kRangeDone)) return std::nullopt;
    RangeRecord r;
    r.first = f.u64();
    r.last = f.u64();
    r.object_key = std::string(f.bytes());
    if (intent) {
        r.etag = std::string(f.bytes());
        r.object_size = f.u64();
    }
    if (!f.ok()) return std::nullopt;
    return r;
}

std::string file_name(const char* prefix, std::uint64_t n) {
    char buf[40];
    std::snprintf(buf, sizeof buf, "%s-%020llu.log", prefix, static_cast<unsigned long long>(n));
    return buf;
}

std::optional<std::uint64_t> file_number(std::string_view name, std::string_view prefix) {
    if (name.size() != prefix.size() + 1 + 20 + 4 || name.substr(0, prefix.size()) != prefix ||
        name[prefix.size()] != '-' || name.substr(name.size() - 4) != ".log") {
        return std::nullopt;
    }
    std::uint64_t n = 0;
    for (char c : name.substr(prefix.size() + 1, 20)) {
        if (c < '0' || c > '9') return std::nullopt;
        const std::uint64_t digit = static_cast<std::uint64_t>(c - '0');
        if (n > (UINT64_MAX - digit) / 10) return std::nullopt;
        n = n * 10 + digit;
    }
    return n;
}

}  // namespace training_output::spool
