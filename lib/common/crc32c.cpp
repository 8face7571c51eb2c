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
        crc = t[7][lo & 0xFF] ^ t[6][(lo >> 8) & 0xFF] ^ t[5][(lo >> 16) & 0xFF] ^ t[4][lo >> 24] ^ t[3][hi & 0xFF] ^
              t[2][(hi >> 8) & 0xFF] ^ t[1][(hi >> 16) & 0xFF] ^ t[0][hi >> 24];
        p += 8;
        n -= 8;
    }
    while (n--) crc = (crc >> 8) ^ t[0][(crc ^ *p++) & 0xFF];
    return crc;
}

#ifdef TDO_CRC32C_X86
// Three streams at once: the instruction takes three cycles and can start one
// a cycle. Blocks of 3 x kShort bytes are checksummed as three independent
// runs, joined by shifting the first over the length of the next (a table
// lookup per byte of the CRC, as in Mark Adler's crc32c.c).
constexpr std::size_t kShort = 256;
constexpr std::uint32_t kPoly = 0x82F63B78u;

std::uint32_t gf2_times(const std::uint32_t* mat, std::uint32_t vec) {
    std::uint32_t sum = 0;
    for (; vec; vec >>= 1, ++mat) {
        if (vec & 1) sum ^= *mat;
    }
    return sum;
}

void gf2_square(std::uint32_t* square, const std::uint32_t* mat) {
    for (int n = 0; n < 32; ++n) square[n] = gf2_times(mat, mat[n]);
}

using ShiftTable = std::array<std::array<std::uint32_t, 256>, 4>;

// The operator that appends `len` zero bytes to a CRC, as four byte tables.
ShiftTable make_shift_table(std::size_t len) {
    std::uint32_t even[32], odd[32];
    odd[0] = kPoly;  // one zero bit
    for (int n = 1; n < 32; ++n) odd[n] = 1u << (n - 1);
    gf2_square(even, odd);  // two zero bits
    gf2_square(odd, even);  // four
    for (;;) {
        gf2_square(even, odd);  // eight, then 32, ...
        len >>= 1;
        if (len == 0) break;
        gf2_square(odd, even);
        len >>= 1;
        if (len == 0) {
            std::memcpy(even, odd, sizeof even);
            break;
        }
    }
    ShiftTable t{};
    for (std::uint32_t n = 0; n < 256; ++n) {
        for (int b = 0; b < 4; ++b) t[static_cast<std::size_t>(b)][n] = gf2_times(even, n << (8 * b));
    }
    return t;
}

std::uint32_t shift_short(std::uint32_t crc) {
    static const ShiftTable t = make_shift_table(kShort);
    return t[0][crc & 0xFF] ^ t[1][(crc >> 8) & 0xFF] ^ t[2][(crc >> 16) & 0xFF] ^ t[3][crc >> 24];
}

__attribute__((target("sse4.2"))) std::uint32_t hardware(const unsigned char* p, std::size_t n, std::uint32_t crc) {
    std::uint64_t c0 = crc;
    while (n >= 3 * kShort) {
        std::uint64_t c1 = 0, c2 = 0;
        for (const unsigned char* end = p + kShort; p < end; p += 8) {
            std::uint64_t v0, v1, v2;
            std::memcpy(&v0, p, 8);
            std::memcpy(&v1, p + kShort, 8);
            std::memcpy(&v2, p + 2 * kShort, 8);
            c0 = _mm_crc32_u64(c0, v0);
            c1 = _mm_crc32_u64(c1, v1);
            c2 = _mm_crc32_u64(c2, v2);
        }
        c0 = shift_short(static_cast<std::uint32_t>(c0)) ^ static_cast<std::uint32_t>(c1);
        c0 = shift_short(static_cast<std::uint32_t>(c0)) ^ static_cast<std::uint32_t>(c2);
        p += 2 * kShort;
        n -= 3 * kShort;
    }
    while (n >= 8) {
        std::uint64_t v = 0;
        std::memcpy(&v, p, 8);
        c0 = _mm_crc32_u64(c0, v);
        p += 8;
        n -= 8;
    }
    std::uint32_t c32 = static_cast<std::uint32_t>(c0);
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
#ifdef TDO_CRC32C_X86
    if (has_sse42()) return ~hardware(p, data.size(), ~crc);
#endif
    if (!little_endian()) return compute_bytewise(data, crc);
    return ~software(p, data.size(), ~crc);
}

std::uint32_t compute_bytewise(std::string_view data, std::uint32_t crc) {
    const auto* p = reinterpret_cast<const unsigned char*>(data.data());
    const Table& t = table();
    crc = ~crc;
    for (std::size_t i = 0; i < data.size(); ++i) crc = (crc >> 8) ^ t[0][(crc ^ p[i]) & 0xFF];
    return ~crc;
}

}  // namespace training_output::crc32c
