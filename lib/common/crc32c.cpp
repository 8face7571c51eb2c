#include "common/crc32c.hpp"

#include <array>
#include <cstring>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <nmmintrin.h>
#define TDO_CRC32C_X86 1
#endif

namespace training_output::crc32c {
namespace {

using Table = std::array<std::array<std::uint32_t, 256>, 8>;

Table make_table() {
    Table t{};
    for (std::uint32_t i = 0; i < 256; ++i) {
        std::uint32_t c = i;
        for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        t[0][i] = c;
    }
    for (std::uint32_t i = 0; i < 256; ++i) {
        for (int s = 1; s < 8; ++s) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xFF];
    }
    return t;
}

const Table& table() {
    static const Table t = make_table();
    return t;
}

std::uint32_t software(const unsigned char* p, std::size_t n, std::uint32_t crc) {
    const Table& t = table();
    while (n >= 8) {
        std::uint32_t lo = 0, hi = 0;
        std::memcpy(&lo, p, 4);
        std::memcpy(&hi, p + 4, 4);
        lo ^= crc;  // little-endian hosts only: compute() goes bytewise on others
        crc = t[7][lo & 0xFF] ^ t[6][(lo >> 8) & 0xFF] ^ t[5][(lo >> 16) & 0xFF] ^ t[4][lo >> 24] ^
              t[3][hi & 0xFF] ^ t[2][(hi >> 8) & 0xFF] ^ t[1][(hi >> 16) & 0xFF] ^ t[0][hi >> 24];
        p += 8;
        n -= 8;
    }
    while (n--) crc = (crc >> 8) ^ t[0][(crc ^ *p++) & 0xFF];
    return crc;
}

#ifdef TDO_CRC32C_X86
__attribute__((target("sse4.2"))) std::uint32_t hardware(const unsigned char* p, std::size_t n, std::uint32_t crc) {
    std::uint64_t c = crc;
    while (n >= 8) {
        std::uint64_t v = 0;
        std::memcpy(&v, p, 8);
        c = _mm_crc32_u64(c, v);
        p += 8;
        n -= 8;
    }
    std::uint32_t c32 = static_cast<std::uint32_t>(c);
    while (n--) c32 = _mm_crc32_u8(c32, *p++);
    return c32;
}

bool has_sse42() {
    static const bool yes = __builtin_cpu_supports("sse4.2");
    return yes;
}
#endif

bool little_endian() {
    const std::uint16_t one = 1;
    unsigned char b = 0;
    std::memcpy(&b, &one, 1);
    return b == 1;
}

}  // namespace

std::uint32_t compute(std::string_view data, std::uint32_t crc) {
    const auto* p = reinterpret_cast<const unsigned char*>(data.data());
    crc = ~crc;
#ifdef TDO_CRC32C_X86
    if (has_sse42()) return ~hardware(p, data.size(), crc);
#endif
    if (!little_endian()) {
        const Table& t = table();
        for (std::size_t i = 0; i < data.size(); ++i) crc = (crc >> 8) ^ t[0][(crc ^ p[i]) & 0xFF];
        return ~crc;
    }
    return ~software(p, data.size(), crc);
}

}  // namespace training_output::crc32c
