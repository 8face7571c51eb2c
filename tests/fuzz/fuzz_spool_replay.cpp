// Fuzzes spool replay with arbitrary segment and control file bytes: no
// crash, and no line handed out whose record does not check out.
// Input: a 2-byte little-endian length n, then n bytes of segment 1, then
// the rest as control file 1.
#include <cstdint>
#include <cstdlib>
#include <set>
#include <string_view>

#include "spool/record.hpp"
#include "spool/replay.hpp"

using namespace training_output;

namespace {

void require(bool ok) {
    if (!ok) std::abort();
}

// A line replay hands out must be a whole, checksummed LINE record of its segment.
void check_line(std::string_view segment, const SpoolLineRef& ref, std::set<std::uint64_t>& seqs) {
    require(ref.segment == 1);
    require(ref.offset + ref.record_bytes <= segment.size());
    auto payload = spool::record_at(segment, ref.offset, spool::checksum_seed(1));
    if (!payload &&
        segment.compare(0, spool::kMagicBytes, std::string_view(spool::kMagicV1, spool::kMagicBytes)) == 0) {
        payload = spool::record_at(segment, ref.offset, 0);
    }
    require(payload.has_value());
    require(spool::kHeaderBytes + payload->size() == ref.record_bytes);
    auto line = spool::decode_line(*payload);
    require(line.has_value());
    require(line->seq == ref.seq);
    require(line->line.size() == ref.line_bytes);
    require(seqs.insert(ref.seq).second);  // each line once
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 2) return 0;
    const std::size_t n = std::min<std::size_t>(size - 2, std::size_t(data[0]) | std::size_t(data[1]) << 8);
    const std::string_view all(reinterpret_cast<const char*>(data) + 2, size - 2);
    const std::string_view segment = all.substr(0, n), control = all.substr(n);
    spool::ReplayResult r = spool::replay_files({{1, segment}}, {{1, control}});
    std::set<std::uint64_t> seqs;
    std::uint64_t bytes = 0;
    for (const auto& rec : r.recovered) {
        for (const auto& ref : rec.lines) {
            check_line(segment, ref, seqs);
            bytes += ref.line_bytes;
        }
        for (const auto& u : rec.undecided) {
            require(!u.lines.empty());
            for (const auto& ref : u.lines) {
                check_line(segment, ref, seqs);
                bytes += ref.line_bytes;
            }
        }
    }
    require(seqs.size() == r.live_lines);
    require(bytes == r.recovered_bytes);
    require(r.segments.size() == 1 && r.controls.size() == 1);
    require(r.segments[0].end <= segment.size() && r.controls[0].end <= control.size());
    require(r.segments[0].live == r.live_lines);
    return 0;
}
