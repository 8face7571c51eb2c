// What the scanner reads of a text that holds Unicode separators, invisible
// characters or digits of other scripts: the same text with each of them as
// its ASCII counterpart, and where each of its bytes came from, so that an
// identifier found in it is replaced in the text itself. Every other byte is
// kept: the output changes only where an identifier is.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace training_output::redact {

// Whether `text` holds a byte with its high bit set, or a tab: 16 bytes a
// step, without a branch per step (most texts are short, ASCII and without
// tabs: this is all they pay).
inline bool has_non_ascii_or_tab(std::string_view text) noexcept {
    const auto* s = reinterpret_cast<const unsigned char*>(text.data());
    const std::size_t n = text.size();
    std::size_t i = 0;
#if defined(__SSE2__)
    const __m128i tab = _mm_set1_epi8('\t');
    __m128i acc = _mm_setzero_si128();
    for (; i + 16 <= n; i += 16) {
        const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i));
        acc = _mm_or_si128(acc, _mm_or_si128(v, _mm_cmpeq_epi8(v, tab)));
    }
    if (_mm_movemask_epi8(acc) != 0) return true;
#endif
    bool found = false;
    for (; i < n; ++i) found |= s[i] >= 0x80 || s[i] == '\t';
    return found;
}
// Whether `text` holds any character that Folded folds.
bool holds_foldable(std::string_view text) noexcept;
// Whether the scanner reads `text`'s fold (most texts: no, scanned as they are).
inline bool needs_fold(std::string_view text) noexcept { return has_non_ascii_or_tab(text) && holds_foldable(text); }

class Folded {
public:
    // Folds `text` (UTF-8; a byte that is not is kept as it is):
    //   White_Space characters, tabs    -> ' ' (NEL, U+2028 and U+2029 too: a break
    //                                       where a space would be; ASCII line feeds stay)
    //   zero-width characters, U+00AD    -> left out (U+200B-U+200D, U+2060, U+FEFF, U+180E)
    //   full-width forms U+FF01-U+FF5E   -> their ASCII forms (as NFKC has them)
    //   decimal digits of other scripts  -> '0'-'9' (Unicode's Nd: Arabic-Indic, Devanagari, ...)
    void fold(std::string_view text);

    std::string_view text() const { return text_; }
    // Where folded byte `i` came from: the start of its character in the text.
    std::size_t from(std::size_t i) const { return from_[i]; }
    // Where folded bytes [begin, end) end in the text: after the character
    // of byte end - 1 (a character left out after it stays in the text).
    std::size_t to(std::size_t begin, std::size_t end) const { return end > begin ? to_[end - 1] : from_[begin]; }

private:
    std::string text_;
    std::vector<std::size_t> from_, to_;
};

}  // namespace training_output::redact
