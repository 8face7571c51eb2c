// Folding a text's Unicode separators, invisible characters and digits for
// the scanner (fold.hpp).
#include "redact/fold.hpp"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <iterator>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace training_output::redact {
namespace {

constexpr char kLeftOut = 0;  // the character is not in the folded text

// The first code point of each run of ten decimal digits (Unicode 15's Nd),
// other than ASCII's.
constexpr std::uint32_t kDigitZeros[] = {
    0x0660,  0x06F0,  0x07C0,  0x0966,  0x09E6,  0x0A66,  0x0AE6,  0x0B66,  0x0BE6,  0x0C66,  0x0CE6,  0x0D66,  0x0DE6,
    0x0E50,  0x0ED0,  0x0F20,  0x1040,  0x1090,  0x17E0,  0x1810,  0x1946,  0x19D0,  0x1A80,  0x1A90,  0x1B50,  0x1BB0,
    0x1C40,  0x1C50,  0xA620,  0xA8D0,  0xA900,  0xA9D0,  0xA9F0,  0xAA50,  0xABF0,  0x104A0, 0x10D30, 0x11066, 0x110F0,
    0x11136, 0x111D0, 0x112F0, 0x11450, 0x114D0, 0x11650, 0x116C0, 0x11730, 0x118E0, 0x11950, 0x11C50, 0x11D50, 0x11DA0,
    0x16A60, 0x16AC0, 0x16B50, 0x1D7CE, 0x1D7D8, 0x1D7E2, 0x1D7EC, 0x1D7F6, 0x1E140, 0x1E2F0, 0x1E950, 0x1FBF0};

// What code point `cp` folds to: an ASCII byte, kLeftOut, or -1 (kept).
int fold_of(std::uint32_t cp) {
    switch (cp) {
        case 0x0085:
        case 0x2028:
        case 0x2029:
        case 0x00A0:
        case 0x1680:
        case 0x202F:
        case 0x205F:
        case 0x3000: return ' ';
        case 0x00AD:
        case 0x180E:
        case 0x200B:
        case 0x200C:
        case 0x200D:
        case 0x2060:
        case 0xFEFF: return kLeftOut;
        default: break;
    }
    if (cp >= 0x2000 && cp <= 0x200A) return ' ';
    if (cp >= 0xFF01 && cp <= 0xFF5E) return static_cast<int>(cp - 0xFEE0);
    if (cp < 0x0660) return -1;
    const auto* z = std::upper_bound(std::begin(kDigitZeros), std::end(kDigitZeros), cp);
    if (z != std::begin(kDigitZeros) && cp - *(z - 1) < 10) return static_cast<int>('0' + (cp - *(z - 1)));
    return -1;
}

// The code point of the UTF-8 sequence at s[i] and its length; length 1 and
// the byte itself for a byte that starts none.
std::size_t decode(const unsigned char* s, std::size_t n, std::size_t i, std::uint32_t& cp) {
    const unsigned char c = s[i];
    std::size_t len = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 ? 2 : 1;
    if (len == 1 || i + len > n) {
        cp = c;
        return 1;
    }
    cp = c & (0x7F >> len);
    for (std::size_t k = 1; k < len; ++k) {
        if ((s[i + k] & 0xC0) != 0x80) {
            cp = c;
            return 1;
        }
        cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    return len;
}

// Where the first byte of s[0, n) with its high bit set is (n: none), 32
// bytes a step: most texts are ASCII, and this is all they cost.
std::size_t first_non_ascii(const unsigned char* s, std::size_t n) {
    std::size_t i = 0;
#if defined(__SSE2__)
    for (; i + 32 <= n; i += 32) {
        const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i));
        const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i + 16));
        if (_mm_movemask_epi8(_mm_or_si128(a, b)) != 0) break;
    }
#endif
    for (; i + 8 <= n; i += 8) {
        std::uint64_t w;
        std::memcpy(&w, s + i, 8);
        if (w & 0x8080808080808080ull) break;
    }
    while (i < n && s[i] < 0x80) ++i;
    return i;
}

}  // namespace

bool holds_foldable(std::string_view text) noexcept {
    const auto* s = reinterpret_cast<const unsigned char*>(text.data());
    const std::size_t n = text.size();
    if (std::memchr(s, '\t', n)) return true;
    for (std::size_t i = first_non_ascii(s, n); i < n;) {
        if (s[i] < 0x80) {
            i += first_non_ascii(s + i, n - i);
            continue;
        }
        std::uint32_t cp;
        const std::size_t len = decode(s, n, i, cp);
        if (len > 1 && fold_of(cp) != -1) return true;
        i += len;
    }
    return false;
}

void Folded::fold(std::string_view text) {
    const auto* s = reinterpret_cast<const unsigned char*>(text.data());
    const std::size_t n = text.size();
    text_.clear();
    from_.clear();
    to_.clear();
    text_.reserve(n);
    from_.reserve(n);
    to_.reserve(n);
    auto put = [&](char c, std::size_t begin, std::size_t end) {
        text_.push_back(c);
        from_.push_back(begin);
        to_.push_back(end);
    };
    for (std::size_t i = 0; i < n;) {
        if (s[i] < 0x80) {
            put(s[i] == '\t' ? ' ' : static_cast<char>(s[i]), i, i + 1);
            ++i;
            continue;
        }
        std::uint32_t cp;
        const std::size_t len = decode(s, n, i, cp);
        const int f = len > 1 ? fold_of(cp) : -1;
        if (f > 0) {
            put(static_cast<char>(f), i, i + len);
        } else if (f == -1) {
            for (std::size_t k = 0; k < len; ++k) put(static_cast<char>(s[i + k]), i + k, i + k + 1);
        }
        i += len;
    }
}

}  // namespace training_output::redact
