#include "redact/first_pass.hpp"

#include <algorithm>
#include <cstring>
#include <iterator>

#include "redact/lexicon.hpp"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define TDO_REDACT_AVX512 1
#endif

namespace training_output::redact {

namespace {

using std::size_t;
using std::uint64_t;

// Bit n of lengths[a][b & 31]: a word of n letters of the list may start with
// the letter a (0-25) then the byte b, in either case. A letter's low five bits
// are 1-26 in both cases; a word of one letter is listed under every b, since
// what follows it is no letter of it (and bit 1 is set for no longer word).
struct WordIndex {
    uint64_t lengths[26][32] = {};

    bool may_list(unsigned char first, unsigned char second, size_t len) const {
        return len < 64 && (lengths[(first | 0x20) - 'a'][second & 31] >> len & 1);
    }
};
template <size_t N>
constexpr void index_words(WordIndex& x, const std::string_view (&list)[N]) {
    for (auto c : list) {
        const int a = (c[0] | 0x20) - 'a';
        if (c.size() == 1) {
            for (auto& row : x.lengths[a]) row |= uint64_t(1) << 1;
        } else {
            x.lengths[a][c[1] & 31] |= uint64_t(1) << c.size();
        }
    }
}
constexpr WordIndex make_cue_index() {
    WordIndex x{};
    index_words(x, kCues);
    return x;
}
constexpr WordIndex make_starter_index() {
    WordIndex x{};
    index_words(x, kCues);
    index_words(x, kTitles);
    index_words(x, kMonths);
    index_words(x, kMonthAbbrevs);
    return x;
}
// [0]: the cues (what a lowercase word may be); [1]: with the titles and
// months (what a capitalized one may be).
constexpr WordIndex kIndex[2] = {make_cue_index(), make_starter_index()};

}  // namespace

bool is_cue(std::string_view w) noexcept {
    if (w.empty() || w.size() > 63) return false;
    for (char c : w)
        if (c < 'a' || c > 'z') return false;
    if (!kIndex[0].may_list(static_cast<unsigned char>(w[0]), w.size() > 1 ? static_cast<unsigned char>(w[1]) : 0,
                            w.size()))
        return false;
    return std::binary_search(std::begin(kCues), std::end(kCues), w);
}

BlockMasks block_masks_bytewise(const unsigned char* s, size_t n, size_t base) noexcept {
    BlockMasks m;
    const size_t end = std::min(n - base, size_t(64));
    for (size_t k = 0; k < end; ++k) {
        const unsigned char c = s[base + k];
        const uint64_t bit = uint64_t(1) << k;
        if (c >= 'a' && c <= 'z') m.lower |= bit;
        if (c >= 'A' && c <= 'Z') m.upper |= bit;
        if (c >= '0' && c <= '9') m.digit |= bit;
        if (c >= 0x80) m.high |= bit;
        if (c == '+' || c == '(') m.plus_paren |= bit;
        if ((c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')) m.hex_letter |= bit;
        if (c == '.' || c == '_' || c == '%' || c == '+' || c == '-') m.local |= bit;
        if (c == '.') m.dot |= bit;
        if (c == ':') m.colon |= bit;
        if (c == '@') m.at_sign |= bit;
        if (plain_follower(c)) m.follower |= bit;
    }
    if (end < 64) m.follower |= ~uint64_t(0) << end;
    return m;
}

namespace {

#if defined(__SSE2__)
// Bit k: x[k] is in [lo, lo + span].
inline uint64_t in_range(__m128i x, unsigned char lo, unsigned char span) {
    const __m128i t = _mm_sub_epi8(x, _mm_set1_epi8(static_cast<char>(lo)));
    const __m128i in = _mm_cmpeq_epi8(_mm_min_epu8(t, _mm_set1_epi8(static_cast<char>(span))), t);
    return static_cast<std::uint32_t>(_mm_movemask_epi8(in));
}

// plain_follower() of each byte: 0, ' ', ',', ';', ')', '!', '?', '"', '\n', '\t', '\r'.
inline __m128i follower_bytes(__m128i x) {
    auto eq = [&](char c) { return _mm_cmpeq_epi8(x, _mm_set1_epi8(c)); };
    const __m128i controls = _mm_or_si128(_mm_or_si128(eq(0), eq('\n')), _mm_or_si128(eq('\t'), eq('\r')));
    const __m128i punct = _mm_or_si128(_mm_or_si128(eq(','), eq(';')), _mm_or_si128(eq(')'), eq('!')));
    return _mm_or_si128(_mm_or_si128(controls, punct), _mm_or_si128(_mm_or_si128(eq(' '), eq('?')), eq('"')));
}

BlockMasks block_masks_sse2(const unsigned char* s, size_t n, size_t base) noexcept {
    alignas(16) unsigned char tail[64];
    const unsigned char* p = s + base;
    if (n - base < 64) {  // the last block: read past the end of nothing
        std::memset(tail, 0, sizeof tail);
        std::memcpy(tail, p, n - base);
        p = tail;
    }
    BlockMasks m;
    for (int j = 0; j < 4; ++j) {
        const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16 * j));
        const int shift = 16 * j;
        m.lower |= in_range(x, 'a', 25) << shift;
        m.upper |= in_range(x, 'A', 25) << shift;
        m.digit |= in_range(x, '0', 9) << shift;
        m.high |= uint64_t(static_cast<std::uint32_t>(_mm_movemask_epi8(x))) << shift;
        const __m128i pp = _mm_or_si128(_mm_cmpeq_epi8(x, _mm_set1_epi8('+')), _mm_cmpeq_epi8(x, _mm_set1_epi8('(')));
        m.plus_paren |= uint64_t(static_cast<std::uint32_t>(_mm_movemask_epi8(pp))) << shift;
        m.hex_letter |= in_range(_mm_or_si128(x, _mm_set1_epi8(0x20)), 'a', 5) << shift;
        const __m128i dot = _mm_cmpeq_epi8(x, _mm_set1_epi8('.'));
        const __m128i local = _mm_or_si128(
            _mm_or_si128(dot, _mm_cmpeq_epi8(x, _mm_set1_epi8('_'))),
            _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(x, _mm_set1_epi8('%')), _mm_cmpeq_epi8(x, _mm_set1_epi8('+'))),
                         _mm_cmpeq_epi8(x, _mm_set1_epi8('-'))));
        m.local |= uint64_t(static_cast<std::uint32_t>(_mm_movemask_epi8(local))) << shift;
        m.dot |= uint64_t(static_cast<std::uint32_t>(_mm_movemask_epi8(dot))) << shift;
        m.colon |= uint64_t(static_cast<std::uint32_t>(_mm_movemask_epi8(_mm_cmpeq_epi8(x, _mm_set1_epi8(':')))))
                   << shift;
        m.at_sign |= uint64_t(static_cast<std::uint32_t>(_mm_movemask_epi8(_mm_cmpeq_epi8(x, _mm_set1_epi8('@')))))
                     << shift;
        m.follower |= uint64_t(static_cast<std::uint32_t>(_mm_movemask_epi8(follower_bytes(x)))) << shift;
    }
    return m;
}
#endif

#if defined(TDO_REDACT_AVX512)
#define TDO_AVX512 __attribute__((target("avx512f,avx512bw,bmi2")))
TDO_AVX512 inline __mmask64 eq512(__m512i x, char c) { return _mm512_cmpeq_epi8_mask(x, _mm512_set1_epi8(c)); }
TDO_AVX512 inline __mmask64 in512(__m512i x, char lo, char span) {
    return _mm512_cmple_epu8_mask(_mm512_sub_epi8(x, _mm512_set1_epi8(lo)), _mm512_set1_epi8(span));
}

// The 64 bytes in one register, each class one compare into a mask register;
// the last block is read with a masked load (no byte past the text is touched).
TDO_AVX512 BlockMasks block_masks_avx512(const unsigned char* s, size_t n, size_t base) noexcept {
    const size_t left = n - base;
    const __mmask64 valid = left >= 64 ? ~__mmask64(0) : _bzhi_u64(~uint64_t(0), static_cast<unsigned>(left));
    const __m512i x = _mm512_maskz_loadu_epi8(valid, s + base);
    BlockMasks m;
    m.lower = in512(x, 'a', 25);
    m.upper = in512(x, 'A', 25);
    m.digit = in512(x, '0', 9);
    m.high = _mm512_movepi8_mask(x);
    m.plus_paren = eq512(x, '+') | eq512(x, '(');
    m.hex_letter = in512(_mm512_or_si512(x, _mm512_set1_epi8(0x20)), 'a', 5);
    m.dot = eq512(x, '.');
    m.local = m.dot | eq512(x, '_') | eq512(x, '%') | eq512(x, '+') | eq512(x, '-');
    m.colon = eq512(x, ':');
    m.at_sign = eq512(x, '@');
    m.follower = eq512(x, 0) | eq512(x, ' ') | eq512(x, ',') | eq512(x, ';') | eq512(x, ')') | eq512(x, '!') |
                 eq512(x, '?') | eq512(x, '"') | eq512(x, '\n') | eq512(x, '\t') | eq512(x, '\r');
    return m;
}
#undef TDO_AVX512

bool has_avx512bw() {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("bmi2");
}
#endif

using MasksFn = BlockMasks (*)(const unsigned char*, size_t, size_t) noexcept;

MasksFn pick_block_masks() {
#if defined(TDO_REDACT_AVX512)
    if (has_avx512bw()) return block_masks_avx512;
#endif
#if defined(__SSE2__)
    return block_masks_sse2;
#else
    return block_masks_bytewise;
#endif
}

const MasksFn kBlockMasks = pick_block_masks();

}  // namespace

BlockMasks block_masks(const unsigned char* s, size_t n, size_t base) noexcept { return kBlockMasks(s, n, base); }

std::vector<BlockMaskVersion> block_mask_versions() {
    std::vector<BlockMaskVersion> v;
#if defined(__SSE2__)
    v.push_back({"sse2", block_masks_sse2});
#endif
#if defined(TDO_REDACT_AVX512)
    if (has_avx512bw()) v.push_back({"avx512bw", block_masks_avx512});
#endif
    return v;
}

FirstPass::FirstPass(std::string_view text) noexcept
    : s_(reinterpret_cast<const unsigned char*>(text.data())), n_(text.size()) {}

const FirstPass::Run& FirstPass::local_run(size_t p) {
    if (p < run_.end) return run_;  // inside the run scanned last: it ends there too
    run_ = Run{};
    size_t j = p;
    for (; j < n_ && local_char(s_[j]); ++j)
        if (s_[j] == '.' && j + 1 < n_ && is_alnum(s_[j + 1])) run_.inner_dot = true;
    run_.end = j;
    run_.at_sign = j < n_ && s_[j] == '@';
    return run_;
}

// A word at p (letters [p, e)) followed by other punctuation: whether no
// email, domain, URL or IPv6 address starts at p. A URL's scheme (http,
// https, ftp) ends in ':' and "www." has a dot; an IPv6 address is hex digits then ':'; a domain (an
// email's too) has a '.' followed by a letter or digit inside its run of
// letters, digits, '.' and '-', which is part of the run of an email's local
// part; an email's local part is followed by '@'.
bool FirstPass::no_address_at(size_t p, size_t e) {
    if (at(e) == ':' && is_scheme(p, e - p)) return false;
    size_t j = p;
    while (j < n_ && is_hex(s_[j])) ++j;
    if (at(j) == ':') return false;
    const Run& run = local_run(p);
    return !run.inner_dot && !run.at_sign;
}

// Whether a matcher of words may start at the word [p, p + len): the cue
// and name matchers start at a cue (any case), a title or a month
// (capitalized), a state or "SN" (two capitals); a word of more than 40
// letters is left to them too.
bool FirstPass::special_word(size_t p, size_t len) const {
    if (len > kMaxWord) return true;
    const bool capital = is_upper(s_[p]);
    if (len == 2 && capital && is_upper(s_[p + 1])) {
        const char two[2] = {static_cast<char>(s_[p]), static_cast<char>(s_[p + 1])};
        if (is_state(std::string_view(two, 2)) || (two[0] == 'S' && two[1] == 'N')) return true;
    }
    if (!kIndex[capital].may_list(s_[p], at(p + 1), len)) return false;
    char buf[kMaxWord];
    for (size_t q = 0; q < len; ++q) buf[q] = static_cast<char>(s_[p + q] | 0x20);
    const std::string_view w(buf, len);
    return is_cue(w) || (capital && is_title_or_month(w));
}

bool FirstPass::is_scheme(size_t p, size_t len) const {
    if (len < 3 || len > 5) return false;
    char buf[5];
    for (size_t q = 0; q < len; ++q) buf[q] = static_cast<char>(s_[p + q] | 0x20);
    const std::string_view w(buf, len);
    return w == "http" || w == "https" || w == "ftp";
}

// Whether no matcher can start at the letter at p = base + k, a word start;
// `letters` is the block's mask of ASCII letters: no special_word(), and no
// email, domain, URL or IPv6 address.
bool FirstPass::plain_word(size_t base, size_t k, uint64_t letters) {
    const uint64_t rest = ~letters >> k;
    size_t e;
    if (rest != 0) {
        e = base + k + static_cast<size_t>(__builtin_ctzll(rest));
    } else {  // the word goes on into the next block
        e = base + 64;
        while (e < n_ && is_alpha(s_[e])) ++e;
    }
    const size_t p = base + k;
    if (special_word(p, e - p)) return false;
    return plain_follower(at(e)) || no_address_at(p, e);
}

// Whether no matcher can start at the number at p (a word start), unless it
// is a ZIP code right after an address (redact_phi() looks at those itself).
// A number followed by punctuation of plain_follower() or '%', or by a space
// and a lowercase word other than "of", is what the scanner's plain_number()
// turns away. Beside those: a number followed by a non-ASCII character
// ("36.6°C"), two groups of digits joined by '.', '-' or '/' ("142.3 mg",
// "38-57 ms", "128/82") that no third group follows, a number joined to a
// word ("30-day", "160/day") or glued to a unit ("7h": not an ordinal, not
// hex digits before a ':'), a time ("07:30", "1:45:00"), none of them
// followed by the '@' of an email. An IP address has three dots, a numeric
// date and an SSN three groups, a phone number three groups or more, an IPv6
// address hex digits and two colons or more (seven without "::"), an address
// or a day before a month a space after the number.
bool FirstPass::plain_number(size_t p) {
    auto digits_end = [&](size_t j) {
        while (j < n_ && is_digit(s_[j])) ++j;
        return j;
    };
    // A second group of digits after the one at e: whether it may go on into
    // a third (a date, an SSN, a phone number, an IP address) or be hex.
    auto third_group = [&](size_t e) {
        const size_t e2 = digits_end(e + 1);
        const unsigned char h = at(e2), after = at(e2 + 1);
        return h == '.' || h == '-' || h == '/' || h == ':' || (h == ' ' && (is_digit(after) || after == '('));
    };
    const size_t e = digits_end(p);
    const unsigned char f = at(e), g = at(e + 1);
    if (f == ' ') return is_lower(g) && !(g == 'o' && at(e + 2) == 'f');
    if (plain_follower(f) || f == '%' || f >= 0x80) return true;
    if (f == '.' || f == '-' || f == '/') {  // "142.3 mg", "38-57 ms", "128/82", "30-day", "160/day"
        if (is_digit(g) ? third_group(e) : g == '(') return false;
    } else if (f == ':') {  // "07:30", "1:45:00"
        if (!is_digit(g)) return false;
        size_t e2 = digits_end(e + 1);
        if (at(e2) == ':' && is_digit(at(e2 + 1))) e2 = digits_end(e2 + 1);
        if (at(e2) == ':' || is_hex(at(e2))) return false;
    } else if (is_alpha(f)) {  // "7h", "32m", "5km"; not an ordinal ("3rd of March")
        const unsigned char a = f | 0x20, b = g | 0x20;
        if ((a == 's' && b == 't') || (a == 'n' && b == 'd') || (a == 'r' && b == 'd') || (a == 't' && b == 'h'))
            return false;
        size_t j = p;
        while (j < n_ && is_hex(s_[j])) ++j;
        if (at(j) == ':') return false;
    } else {
        return false;
    }
    return !local_run(p).at_sign;
}

// How many bits of `mask` are set from bit k on, before the first clear one
// (64 - k if all are).
static unsigned ones_from(uint64_t mask, unsigned k) {
    const uint64_t rest = ~mask >> k;
    return rest ? static_cast<unsigned>(__builtin_ctzll(rest)) : 64 - k;
}

uint64_t FirstPass::candidates(size_t base) noexcept {
    const BlockMasks m = block_masks(s_, n_, base);
    const unsigned char before = base > 0 ? s_[base - 1] : ' ';
    const uint64_t letters = m.lower | m.upper;
    const uint64_t prev_alnum = (letters | m.digit) << 1 | uint64_t(is_alnum(before));
    const uint64_t prev_high = m.high << 1 | uint64_t(before >= 0x80);
    const uint64_t next_digit = m.digit >> 1 | uint64_t(base + 64 < n_ && is_digit(s_[base + 64])) << 63;
    // The block's bytes, and the one after it (b[k + 1] of a word ending the block): in
    // place, or for the last block a zero-padded copy, so that no read goes past the text.
    unsigned char tail[65];
    const unsigned char* b = s_ + base;
    if (n_ - base < sizeof tail) {
        std::memset(tail, 0, sizeof tail);
        std::memcpy(tail, b, n_ - base);
        b = tail;
    }

    // The quick tests, a word or number at a time, settle most starts; the
    // ones they leave get the whole test below.
    uint64_t unsettled = 0;
    const uint64_t alnum = letters | m.digit, local = alnum | m.local, hex = m.digit | m.hex_letter;
    const uint64_t inner_dot = m.dot & (alnum >> 1 | uint64_t(1) << 63);  // at 63: maybe
    for (uint64_t words = letters & ~prev_alnum & ~prev_high; words; words &= words - 1) {
        const unsigned k = static_cast<unsigned>(__builtin_ctzll(words));
        const uint64_t rest = ~letters >> k;
        if (rest == 0) {  // the word goes on into the next block
            unsettled |= uint64_t(1) << k;
            continue;
        }
        const unsigned len = static_cast<unsigned>(__builtin_ctzll(rest)), end = k + len;  // end < 64
        bool plain = len <= kMaxWord && !kIndex[m.upper >> k & 1].may_list(b[k], b[k + 1], len) &&
                     !(len == 2 && (m.upper >> k & 3) == 3);
        if (plain && !(m.follower >> end & 1)) {  // no_address_at(), on the masks
            const unsigned local_end = k + ones_from(local, k), hex_end = k + ones_from(hex, k);
            const unsigned char first = b[k] | 0x20;
            plain = local_end < 64 && hex_end < 64 && !(m.colon >> hex_end & 1) &&
                    !((m.colon >> end & 1) && len >= 3 && len <= 5 && (first == 'h' || first == 'f')) &&
                    !(m.at_sign >> local_end & 1) && !((inner_dot & ((uint64_t(1) << local_end) - 1)) >> k);
        }
        if (!plain) unsettled |= uint64_t(1) << k;
    }
    for (uint64_t numbers = m.digit & ~prev_alnum; numbers; numbers &= numbers - 1) {
        const unsigned k = static_cast<unsigned>(__builtin_ctzll(numbers));
        const uint64_t rest = ~m.digit >> k;
        const unsigned end = rest ? k + static_cast<unsigned>(__builtin_ctzll(rest)) : 64;
        const unsigned char f = at(base + end), g = at(base + end + 1);
        const bool plain = end < 64 && (f == ' ' ? is_lower(g) && !(g == 'o' && at(base + end + 2) == 'f')
                                                 : (m.follower >> end & 1) || f == '%');
        if (!plain) unsettled |= uint64_t(1) << k;
    }
    uint64_t out = m.plus_paren & ~prev_alnum & next_digit;
    for (; unsettled; unsettled &= unsettled - 1) {  // in increasing order, as local_run() needs
        const size_t k = static_cast<size_t>(__builtin_ctzll(unsettled));
        const bool plain = (m.digit >> k & 1) ? plain_number(base + k) : plain_word(base, k, letters);
        if (!plain) out |= uint64_t(1) << k;
    }
    return out;
}

}  // namespace training_output::redact
