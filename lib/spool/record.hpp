// Spool records: how they are framed, checksummed and encoded.
//
// A record is  crc32c (4, of what follows) | length (4) | payload, little
// endian, the checksum seeded with the CRC-32C of the file's number (8 bytes)
// in files whose magic is "TDOSPL2\n" ("TDOSPL1\n" files are unseeded), so
// that the records a reused segment held in an earlier life never pass for
// its own. A payload is a type byte, then fields: u8, u32, u64, varints, and
// u32-length-prefixed bytes.
//
//   LINE       seq u64, object key, dedup key, line                    (segments)
//   INTENT     batch u64, object key, ETag, object size u64, batch bytes u64,
//              batch crc32c u32, seqs                                  (control files)
//   DONE       batch u64, object key, seqs, uncommitted dedup keys     (control files)
//   VOID       seq u64, object key                                     (control files)
//   COMMITTED  batch u64                                               (control files)
// `seqs` are a count (u32) and zigzag varint deltas, each from the previous
// seq (the first from 0): a batch's lines exactly, in the order appended.
// Spools written before batches were named exactly hold INTENT and DONE
// records naming a seq range [first, last] instead (types 2 and 3).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace training_output::spool {

constexpr char kMagic[] = "TDOSPL2\n";
constexpr char kMagicV1[] = "TDOSPL1\n";
constexpr std::size_t kMagicBytes = 8;
constexpr std::size_t kHeaderBytes = 8;            // crc32c + length
constexpr std::uint32_t kMaxPayload = (1u << 30);  // larger lengths are torn records

enum RecordType : unsigned char {
    kLine = 1,
    kRangeIntent = 2,  // read only: spools of earlier versions
    kRangeDone = 3,    // read only
    kIntent = 4,
    kDone = 5,
    kVoid = 6,
    kCommitted = 7,
};

// Encodings into memory with room for them; they return the end.
char* put_u32_at(char* p, std::uint32_t v);
char* put_u64_at(char* p, std::uint64_t v);
char* put_bytes_at(char* p, std::string_view s);
std::uint32_t get_u32_at(std::string_view s, std::size_t pos);

// The checksum seed of a file's records: the CRC of its number.
std::uint32_t checksum_seed(std::uint64_t file_number);

// The payload of a LINE record, and the whole record written in place at `r`
// (which has room for kHeaderBytes + payload bytes).
std::uint64_t line_payload_bytes(std::string_view object_key, std::string_view dedup_key, std::string_view line);
void encode_line_at(char* r, std::uint64_t payload_bytes, std::uint32_t seed, std::uint64_t seq,
                    std::string_view object_key, std::string_view dedup_key, std::string_view line);

// The record starting at `pos` of `data`: its payload, or nullopt when the
// bytes there are not a whole record with a matching checksum.
std::optional<std::string_view> record_at(std::string_view data, std::size_t pos, std::uint32_t seed);

// Reads the fields of one payload; any overrun makes ok() false.
class Fields {
public:
    explicit Fields(std::string_view payload) : s_(payload) {}
    unsigned char u8();
    std::uint32_t u32();
    std::uint64_t u64();
    std::uint64_t varint();
    std::string_view bytes();
    std::vector<std::uint64_t> seqs();
    std::vector<std::string> strings();
    bool ok() const { return ok_ && pos_ == s_.size(); }  // every byte read, none missing

private:
    bool need(std::size_t n);
    std::string_view s_;
    std::size_t pos_ = 0;
    bool ok_ = true;
};

struct LineRecord {
    std::uint64_t seq = 0;
    std::string_view object_key;
    std::string_view dedup_key;
    std::string_view line;
};
std::optional<LineRecord> decode_line(std::string_view payload);

// A batch named exactly, as INTENT and DONE records name it.
struct IntentRecord {
    std::uint64_t batch = 0;
    std::string object_key;
    std::string etag;
    std::uint64_t object_size = 0;
    std::uint64_t batch_bytes = 0;
    std::uint32_t batch_crc = 0;
    std::vector<std::uint64_t> seqs;
};
struct DoneRecord {
    std::uint64_t batch = 0;
    std::string object_key;
    std::vector<std::uint64_t> seqs;
    std::vector<std::string> uncommitted;  // dedup keys whose commit is still to be made
};
struct VoidRecord {
    std::uint64_t seq = 0;
    std::string object_key;
};
struct RangeRecord {  // an earlier version's INTENT or DONE
    std::uint64_t first = 0, last = 0;
    std::string object_key;
    std::string etag;  // INTENT only
    std::uint64_t object_size = 0;
};

// Complete records (header included, checksummed with `seed`).
std::string encode_intent(const IntentRecord& r, std::uint32_t seed);
std::string encode_done(const DoneRecord& r, std::uint32_t seed);
std::string encode_void(const VoidRecord& r, std::uint32_t seed);
std::string encode_committed(std::uint64_t batch, std::uint32_t seed);
// Earlier versions' records, for the tests that replay such spools.
std::string encode_range_intent(const RangeRecord& r, std::uint32_t seed);
std::string encode_range_done(const RangeRecord& r, std::uint32_t seed);

// Payload decoders: nullopt when a field is missing or bytes are left over.
std::optional<IntentRecord> decode_intent(std::string_view payload);
std::optional<DoneRecord> decode_done(std::string_view payload);
std::optional<VoidRecord> decode_void(std::string_view payload);
std::optional<std::uint64_t> decode_committed(std::string_view payload);
std::optional<RangeRecord> decode_range(std::string_view payload, bool intent);

// "seg-<n>.log" or "ctl-<n>.log", the number zero-padded so that names sort;
// the number back from such a name (nullopt for any other name).
std::string file_name(const char* prefix, std::uint64_t n);
std::optional<std::uint64_t> file_number(std::string_view name, std::string_view prefix);

}  // namespace training_output::spool
