// UTF-8 validation, repair, cutting and whitespace trimming.
#include "common/utf8.hpp"

#include <cstdint>
#include <cstring>

namespace training_output {
namespace {

// Decodes one code point at `p` (valid UTF-8 assumed); returns its length.
std::size_t decode(const unsigned char* p, std::size_t n, std::uint32_t& cp) {
    if (p[0] < 0x80) {
        cp = p[0];
        return 1;
    }
    if ((p[0] & 0xE0) == 0xC0 && n >= 2) {
        cp = ((p[0] & 0x1Fu) << 6) | (p[1] & 0x3Fu);
        return 2;
    }
    if ((p[0] & 0xF0) == 0xE0 && n >= 3) {
        cp = ((p[0] & 0x0Fu) << 12) | ((p[1] & 0x3Fu) << 6) | (p[2] & 0x3Fu);
        return 3;
    }
    if (n >= 4) {
        cp = ((p[0] & 0x07u) << 18) | ((p[1] & 0x3Fu) << 12) | ((p[2] & 0x3Fu) << 6) | (p[3] & 0x3Fu);
        return 4;
    }
    cp = 0xFFFD;
    return 1;
}

// The whitespace that Python's str.strip() removes.
bool is_space(std::uint32_t cp) {
    switch (cp) {
        case 0x09:
        case 0x0A:
        case 0x0B:
        case 0x0C:
        case 0x0D:
        case 0x1C:
        case 0x1D:
        case 0x1E:
        case 0x1F:
        case 0x20:
        case 0x85:
        case 0xA0:
        case 0x1680:
        case 0x2028:
        case 0x2029:
        case 0x202F:
        case 0x205F:
        case 0x3000: return true;
        default: return cp >= 0x2000 && cp <= 0x200A;
    }
}

}  // namespace

namespace {

// The length of the valid UTF-8 sequence at p (0: none starts there).
std::size_t valid_sequence(const unsigned char* p, const unsigned char* end) noexcept {
    const unsigned char c = *p;
    if (c < 0x80) return 1;
    std::size_t len;
    std::uint32_t cp;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
        cp = c & 0x1Fu;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        cp = c & 0x0Fu;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        cp = c & 0x07u;
    } else
        return 0;
    if (static_cast<std::size_t>(end - p) < len) return 0;
    for (std::size_t i = 1; i < len; ++i) {
        if ((p[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (p[i] & 0x3Fu);
    }
    if (len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) return 0;
    if (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) return 0;
    return len;
}

}  // namespace

std::string to_valid_utf8(std::string_view text) {
    std::string out;
    out.reserve(text.size());
    const auto* p = reinterpret_cast<const unsigned char*>(text.data());
    const auto* end = p + text.size();
    while (p < end) {
        const std::size_t len = valid_sequence(p, end);
        if (len == 0) {
            out += "\xEF\xBF\xBD";  // U+FFFD
            ++p;
        } else {
            out.append(reinterpret_cast<const char*>(p), len);
            p += len;
        }
    }
    return out;
}

std::string_view utf8_prefix(std::string_view text, std::size_t max_bytes) noexcept {
    if (text.size() <= max_bytes) return text;
    std::size_t n = max_bytes;
    while (n > 0 && (static_cast<unsigned char>(text[n]) & 0xC0) == 0x80) --n;  // not inside a sequence
    return text.substr(0, n);
}

bool is_valid_utf8(std::string_view text) noexcept {
    const auto* p = reinterpret_cast<const unsigned char*>(text.data());
    const auto* end = p + text.size();
    while (p < end) {
        // ASCII fast path, 8 bytes at a time.
        while (end - p >= 8) {
            std::uint64_t chunk;
            std::memcpy(&chunk, p, 8);
            if (chunk & 0x8080808080808080ull) break;
            p += 8;
        }
        if (p >= end) break;
        if (*p < 0x80) {
            ++p;
            continue;
        }
        // 0: a continuation byte, an overlong form, a surrogate, > U+10FFFF, cut short.
        const std::size_t len = valid_sequence(p, end);
        if (len == 0) return false;
        p += len;
    }
    return true;
}

std::string_view trim_whitespace(std::string_view text) noexcept {
    const auto* b = reinterpret_cast<const unsigned char*>(text.data());
    std::size_t start = 0, stop = text.size();
    while (start < stop) {
        std::uint32_t cp;
        std::size_t len = decode(b + start, stop - start, cp);
        if (!is_space(cp)) break;
        start += len;
    }
    while (stop > start) {
        // Step back to the start of the last code point.
        std::size_t i = stop - 1;
        while (i > start && (b[i] & 0xC0) == 0x80) --i;
        std::uint32_t cp;
        decode(b + i, stop - i, cp);
        if (!is_space(cp)) break;
        stop = i;
    }
    return text.substr(start, stop - start);
}

}  // namespace training_output
