// The first pass of PHI redaction: where in a text an identifier may start.
// Most of a narrative is words at which no matcher of the scanner can start:
// no cue ("phone", "patient"), title or month, not two capitals, and not
// followed by the '.', ':' or '@' of an email, domain, URL or IPv6 address.
// The pass finds the word starts of 64 bytes at a time from byte-class masks
// (AVX-512BW or SSE2, whichever the CPU has), turns such words away by their length, their
// first two letters and the byte after them, and leaves the rest (numbers,
// '+' and '(' before a digit, the words it could not turn away) to the
// matchers. redact_phi_at_every_start() (redact/redact.hpp), the scanner run
// at every word start, is what the result is tested against.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

namespace training_output::redact {

// What may follow a word at which no email, domain, URL or IPv6 address
// starts (none of '.', ':', '@' and the characters of those runs): the end
// (0), a space, a tab, a line break, ',', ';', ')', '!', '?', '"'.
constexpr bool plain_follower(unsigned char c) {
    switch (c) {
        case 0:
        case ' ':
        case ',':
        case ';':
        case ')':
        case '!':
        case '?':
        case '"':
        case '\n':
        case '\t':
        case '\r': return true;
        default: return false;
    }
}

// The byte classes of s[base, base + 64): bit k describes s[base + k]; bits
// past n are 0.
struct BlockMasks {
    std::uint64_t lower = 0;       // a-z
    std::uint64_t upper = 0;       // A-Z
    std::uint64_t digit = 0;       // 0-9
    std::uint64_t high = 0;        // a byte of a multi-byte UTF-8 sequence
    std::uint64_t plus_paren = 0;  // '+' or '('
    std::uint64_t hex_letter = 0;  // a-f, A-F
    std::uint64_t local = 0;       // '.', '_', '%', '+', '-' (with letters and digits: an email's local part)
    std::uint64_t dot = 0;         // '.'
    std::uint64_t colon = 0;       // ':'
    std::uint64_t at_sign = 0;     // '@'
    std::uint64_t follower = 0;    // plain_follower(): bits past n are set (the end is one)
};
// The widest version the CPU runs (AVX-512BW, else SSE2), picked once.
BlockMasks block_masks(const unsigned char* s, std::size_t n, std::size_t base) noexcept;
// The same a byte at a time: what CPUs without SSE2 use, and what the tests
// compare the vector versions with.
BlockMasks block_masks_bytewise(const unsigned char* s, std::size_t n, std::size_t base) noexcept;
// Every vector version this CPU runs, for the tests.
struct BlockMaskVersion {
    const char* name;
    BlockMasks (*fn)(const unsigned char*, std::size_t, std::size_t) noexcept;
};
std::vector<BlockMaskVersion> block_mask_versions();

// The pass over one text (which must outlive it).
class FirstPass {
public:
    explicit FirstPass(std::string_view text) noexcept;

    // Bit k set: the matchers must look at text[base + k]. That is every
    // word start of the scanner (a letter after no ASCII letter or digit and
    // no byte of a multi-byte sequence; a digit after no letter or digit; '+'
    // or '(' before a digit) except the words and numbers at which no matcher
    // can start (above). Blocks are asked for in increasing order of `base`,
    // a multiple of 64; the whole pass is linear in the text's length.
    std::uint64_t candidates(std::size_t base) noexcept;

private:
    // The run of an email's local-part characters ([A-Za-z0-9._%+-]) scanned
    // last: where it ends, whether a '.' followed by a letter or digit is in
    // it, whether '@' follows it. Every start inside it shares its end, so
    // that each run is scanned once.
    struct Run {
        std::size_t end = 0;
        bool inner_dot = false;
        bool at_sign = false;
    };
    unsigned char at(std::size_t j) const { return j < n_ ? s_[j] : 0; }
    const Run& local_run(std::size_t p);
    bool special_word(std::size_t p, std::size_t len) const;
    bool is_scheme(std::size_t p, std::size_t len) const;
    bool no_address_at(std::size_t p, std::size_t e);
    bool plain_word(std::size_t base, std::size_t k, std::uint64_t letters);
    bool plain_number(std::size_t p);

    const unsigned char* s_;
    std::size_t n_;
    Run run_;
};

}  // namespace training_output::redact
