#include "common/json.hpp"

#include <cstdint>
#include <cstring>

namespace training_output::json {

namespace {

// True when one of the 8 bytes needs escaping: < 0x20, '"' or '\\'.
inline bool needs_escape(std::uint64_t x) {
    constexpr std::uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    auto has_zero = [&](std::uint64_t v) { return (v - ones) & ~v & highs; };
    const std::uint64_t below_space = (x - ones * 0x20) & ~x & highs;  // bytes < 0x20 (high bit clear)
    return below_space || has_zero(x ^ (ones * '"')) || has_zero(x ^ (ones * '\\'));
}

}  // namespace

void check_depth(std::string_view text, const char* what, ErrorCode code) {
    unsigned depth = 0;
    bool in_string = false;
    for (std::size_t i = 0; i < text.size(); ++i) {
        const char c = text[i];
        if (in_string) {
            if (c == '\\')
                ++i;
            else if (c == '"')
                in_string = false;
        } else if (c == '"') {
            in_string = true;
        } else if (c == '[' || c == '{') {
            if (++depth > kMaxDepth) {
                throw Error(code, std::string(what) + " nests arrays and objects deeper than " +
                                      std::to_string(kMaxDepth) + " levels (at offset " + std::to_string(i) + ")");
            }
        } else if ((c == ']' || c == '}') && depth > 0) {
            --depth;
        }
    }
}

void append_quoted(std::string& out, std::string_view text) {
    static const char hex[] = "0123456789ABCDEF";
    out.reserve(out.size() + text.size() + 2);
    out.push_back('"');
    const char* p = text.data();
    const char* end = p + text.size();
    while (p < end) {
        // Copy the run that needs no escaping, 8 bytes at a time.
        const char* run = p;
        while (end - p >= 8) {
            std::uint64_t chunk;
            std::memcpy(&chunk, p, 8);
            if (needs_escape(chunk)) break;
            p += 8;
        }
        while (p < end) {
            const auto c = static_cast<unsigned char>(*p);
            if (c < 0x20 || c == '"' || c == '\\') break;
            ++p;
        }
        out.append(run, static_cast<std::size_t>(p - run));
        if (p == end) break;
        const auto c = static_cast<unsigned char>(*p++);
        out.push_back('\\');
        switch (c) {
            case '"': out.push_back('"'); break;
            case '\\': out.push_back('\\'); break;
            case '\b': out.push_back('b'); break;
            case '\f': out.push_back('f'); break;
            case '\n': out.push_back('n'); break;
            case '\r': out.push_back('r'); break;
            case '\t': out.push_back('t'); break;
            default:
                out += "u00";
                out.push_back(hex[c >> 4]);
                out.push_back(hex[c & 0xF]);
        }
    }
    out.push_back('"');
}

std::string quote(std::string_view text) {
    std::string out;
    append_quoted(out, text);
    return out;
}

}  // namespace training_output::json
