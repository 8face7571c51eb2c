// Names after a title or a cue ("Dr. Jane Doe", "seen by John Smith").
#include "redact/scanner.hpp"

#include <cstring>

namespace training_output::redact {

// Decodes the code point at j (valid UTF-8 assumed, bounds checked).
std::uint32_t Scanner::code_point(size_t j, size_t& len) const {
    const unsigned char c = s_[j];
    len = 1;
    if (c < 0x80) return c;
    if ((c & 0xE0) == 0xC0 && j + 1 < n_) {
        len = 2;
        return ((c & 0x1Fu) << 6) | (s_[j + 1] & 0x3Fu);
    }
    if ((c & 0xF0) == 0xE0 && j + 2 < n_) {
        len = 3;
        return ((c & 0x0Fu) << 12) | ((s_[j + 1] & 0x3Fu) << 6) | (s_[j + 2] & 0x3Fu);
    }
    if ((c & 0xF8) == 0xF0 && j + 3 < n_) {
        len = 4;
        return ((c & 0x07u) << 18) | ((s_[j + 1] & 0x3Fu) << 12) | ((s_[j + 2] & 0x3Fu) << 6) | (s_[j + 3] & 0x3Fu);
    }
    return 0xFFFD;
}

// An uppercase letter of Latin-1, Latin Extended, Greek or Cyrillic (roughly).
bool Scanner::non_ascii_capital(std::uint32_t cp) {
    return (cp >= 0xC0 && cp <= 0xDE && cp != 0xD7) || (cp >= 0x100 && cp <= 0x24F) || (cp >= 0x391 && cp <= 0x3A9) ||
           (cp >= 0x400 && cp <= 0x42F);
}

// A name word at j: its end, or 0.
size_t Scanner::name_word(size_t j) const {
    const unsigned char c = at(j);
    if (c >= 0x80) {
        size_t len;
        if (!non_ascii_capital(code_point(j, len))) return 0;
    } else if (!is_upper(c)) {
        return 0;
    }
    size_t e = j;
    bool lowercase = false;
    while (e < n_) {
        if (e - j >= kMaxWord) return 0;  // too long for a name: never cut it
        const unsigned char b = s_[e];
        if (is_alpha(b)) {
            if (is_lower(b)) lowercase = true;
            ++e;
        } else if (b >= 0x80) {
            // A right single quotation mark before a possessive 's ends the word.
            if (b == 0xE2 && at(e + 1) == 0x80 && at(e + 2) == 0x99 && (at(e + 3) == 's' || at(e + 3) == 'S') &&
                !is_alnum(at(e + 4)))
                break;
            if (e > j) lowercase = true;
            ++e;
        } else if ((b == '\'' || b == '-') && is_alpha(at(e + 1)) &&
                   !(b == '\'' && (at(e + 1) == 's' || at(e + 1) == 'S') && !is_alnum(at(e + 2)) && at(e + 2) < 0x80)) {
            ++e;
        } else {
            break;
        }
    }
    if (e < n_ && is_digit(s_[e])) return 0;
    if (e == j + 1 && c < 0x80) return at(e) == '.' ? e + 1 : 0;  // an initial "J."
    if (!lowercase && c < 0x80) return 0;                         // "HR", "BP", "ID"
    char buf[kMaxWord + 1];
    const auto w = lower_word(j, e, buf);
    if (!w.empty() && in_list(w, kNotNames)) return 0;
    size_t me = 0;
    if (month(j, me) && is_digit(at(spaces(me, 2)))) return 0;  // "Patient March 3"
    return e;
}

bool Scanner::name(size_t i, Match& m) const {
    const size_t e = alpha_end(i, kMaxWord);
    if (e == i || (e < n_ && s_[e] >= 0x80)) return false;
    char buf[kMaxWord + 1];
    const auto w = lower_word(i, e, buf);
    const std::string_view exact(reinterpret_cast<const char*>(s_ + i), e - i);
    size_t j = e;
    if (exact == "Dr" || exact == "Mr" || exact == "Mrs" || exact == "Ms" || exact == "Mx" || exact == "Prof" ||
        exact == "Drs" || exact == "Messrs") {
        if (at(j) == '.') ++j;
    } else if (exact == "Doctor" || exact == "Miss" || w == "nurse" || w == "patient" || exact == "Pt" ||
               w == "surgeon" || w == "physician" || w == "provider" || w == "clinician" || w == "cardiologist" ||
               w == "endocrinologist" || w == "dietitian" || w == "therapist") {
        if (at(j) == ':') ++j;
    } else if (w == "name" || w == "patient-name") {
        j = spaces(j, 2);
        if (at(j) != ':') return false;
        ++j;
    } else if (w == "seen" || w == "referred" || w == "signed" || w == "reviewed" || w == "accompanied" ||
               w == "attended" || w == "contacted") {
        size_t next = 0;
        if (!next_word_is(e, "by", next)) return false;
        j = next;
    } else {
        return false;
    }
    const size_t start = spaces(j, 3);
    if (start == j) return false;
    size_t end = 0, k = start;
    for (int count = 0; count < 3; ++count) {
        const size_t we = name_word(k);
        if (!we) break;
        end = we;
        if (at(we) != ' ') break;
        k = we + 1;
    }
    if (!end) return false;
    m = {start, end, PhiType::Name};
    return true;
}

}  // namespace training_output::redact
