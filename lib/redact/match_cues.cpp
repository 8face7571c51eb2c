// Identifiers after a cue word: SSN, phone, MRN, serial number, ZIP code
// ("MRN: 445566", "call 555 1234", "Springfield, IL 62704").
#include "redact/scanner.hpp"

#include <cstring>

namespace training_output::redact {

// Skips what may stand between a cue and its value: spaces, ':', '#',
// '=', and the words number / no / num / nr / is / was. `marker` tells
// whether any of ':', '#', '=', number, no, num, nr was there.
size_t Scanner::filler(size_t j, bool& marker) const {
    for (int step = 0; step < 5; ++step) {
        const size_t k = spaces(j, 3);
        j = k;
        const unsigned char c = at(j);
        if (c == ':' || c == '#' || c == '=') {
            marker = true;
            ++j;
            continue;
        }
        const size_t e = alpha_end(j, 8);
        char buf[kMaxWord + 1];
        const auto w = lower_word(j, e, buf);
        if (w == "number" || w == "no" || w == "num" || w == "nr") {
            if (!boundary(e) && !(at(e) == '.' || at(e) == ':' || at(e) == '#')) break;
            marker = true;
            j = at(e) == '.' ? e + 1 : e;
            continue;
        }
        if (w == "is" || w == "was") {
            j = e;
            continue;
        }
        break;
    }
    return j;
}

// An identifier at j: letters, digits and inner '-' with a digit among
// its first kMaxId bytes and 3 bytes or more. A longer one is consumed
// whole (the match advances past it).
size_t Scanner::id_token(size_t j) const {
    if (!is_alnum(at(j))) return 0;
    size_t e = j;
    bool digit = false;
    while (e < n_) {
        const unsigned char c = s_[e];
        if (is_alnum(c)) {
            if (is_digit(c) && e - j < kMaxId) digit = true;
            ++e;
        } else if ((c == '-' || c == '/') && is_alnum(at(e + 1))) {
            ++e;
        } else {
            break;
        }
        if (!digit && e - j >= kMaxId) return 0;
    }
    if (!digit || e - j < 3 || at(e) >= 0x80) return 0;
    return e;
}

bool Scanner::id_after(size_t j, PhiType type, Match& m) const {
    const size_t e = id_token(j);
    if (!e || followed_by_unit(e)) return false;
    m = {j, e, type};
    return true;
}

bool Scanner::zip_digits(size_t j, Match& m) const {
    if (digits(j, 5) != 5) return false;
    size_t e = j + 5;
    if (at(e) == '-' && digits(e + 1, 4) == 4) e += 5;
    if (!number_boundary(e) || followed_by_unit(e)) return false;
    m = {j, e, PhiType::Zip};
    return true;
}

// The next word after a space: its [start, end) if it is `w` (case-insensitive).
bool Scanner::next_word_is(size_t e, const char* w, size_t& end) const {
    const size_t j = spaces(e, 2);
    if (j == e) return false;
    const size_t we = alpha_end(j, kMaxWord);
    char buf[kMaxWord + 1];
    if (lower_word(j, we, buf) != w) return false;
    end = we;
    return true;
}

bool Scanner::cue(size_t i, Match& m) const {
    const size_t e = alpha_end(i, kMaxWord);
    char buf[kMaxWord + 1];
    const auto w = lower_word(i, e, buf);
    if (w.empty() || (e < n_ && s_[e] >= 0x80)) return false;
    bool marker = false;
    size_t next = 0;

    if (w == "ssn" || (w == "ss" && at(e) == '#')) return ssn_digits(filler(e, marker), m);
    if (w == "social" && next_word_is(e, "security", next)) return ssn_digits(filler(next, marker), m);

    if (w == "phone" || w == "telephone" || w == "tel" || w == "cell" || w == "cellphone" || w == "mobile" ||
        w == "fax" || w == "pager" || w == "call" || w == "contact") {
        const size_t after = at(e) == '.' ? e + 1 : e;  // "Tel. 555 1234"
        const size_t j = filler(after, marker);
        return j > after && phone_after_cue(j, m);
    }

    if (w == "mrn" || w == "mrno") {
        const size_t j = filler(e, marker);
        return j > e && id_after(j, PhiType::Mrn, m);
    }
    if (w == "mr" || w == "chart" || w == "record") {
        // "MR# 445566", "chart #A-1234", "record number 77": only with a marker.
        if (w == "mr" && !is_upper(at(i + 1))) return false;  // "Mr." is a title
        const size_t j = filler(e, marker);
        return marker && j > e && id_after(j, PhiType::Mrn, m);
    }
    if (w == "medical" && next_word_is(e, "record", next)) {
        const size_t j = filler(next, marker);
        return j > next && id_after(j, PhiType::Mrn, m);
    }
    if (w == "patient" || w == "hospital") {
        size_t j = e;
        if (next_word_is(e, "id", next))
            j = next;
        else if (at(e) != '#' && !next_word_is(e, "number", next))
            return false;
        const size_t k = filler(j, marker);
        return k > j && id_after(k, PhiType::Mrn, m);
    }

    if (w == "serial" || w == "imei" || w == "udi") {
        const size_t j = filler(e, marker);
        return j > e && id_after(j, PhiType::Serial, m);
    }
    if (w == "s" && at(e) == '/' && lower(at(e + 1)) == 'n' && boundary(e + 2)) {
        const size_t j = filler(e + 2, marker);
        return j > e + 2 && id_after(j, PhiType::Serial, m);
    }
    if (e == i + 2 && s_[i] == 'S' && s_[i + 1] == 'N') {
        if (at(e) == '-') return id_after(i, PhiType::Serial, m);  // "SN-4471-XK" is the serial
        const size_t j = filler(e, marker);
        return marker && j > e && id_after(j, PhiType::Serial, m);
    }
    if (w == "device" && next_word_is(e, "id", next)) {
        const size_t j = filler(next, marker);
        return j > next && id_after(j, PhiType::Serial, m);
    }

    if (w == "zip" || w == "zipcode" || w == "postcode") {
        size_t j = e;
        if (next_word_is(e, "code", next)) j = next;
        const size_t k = filler(j, marker);
        return k > j && zip_digits(k, m);
    }
    if (w == "postal" && next_word_is(e, "code", next)) {
        const size_t k = filler(next, marker);
        return k > next && zip_digits(k, m);
    }

    // A state abbreviation and a ZIP code: "Springfield, IL 62704" (else
    // "ID", "MD" may be cues of their own).
    if (e == i + 2 && is_upper(s_[i]) && is_upper(s_[i + 1]) &&
        redact::is_state(std::string_view(reinterpret_cast<const char*>(s_ + i), 2))) {
        size_t p = i;
        while (p > 0 && s_[p - 1] == ' ') --p;
        const unsigned char before = p > 0 ? s_[p - 1] : 0;
        if (p > 0 && p < i && (before == ',' || is_alpha(before) || before >= 0x80)) {
            const size_t j = spaces(e, 2);
            if (j > e && zip_digits(j, m)) return true;
        }
    }
    return id_cue(i, e, w, m);
}

}  // namespace training_output::redact
