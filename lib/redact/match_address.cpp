// Street addresses ("42 Oak Street", "Apt 4B") and the ZIP code right after one.
#include "redact/scanner.hpp"

namespace training_output::redact {

// A capitalized word (letters, inner '-' or '\''), an ordinal ("5th"),
// or a direction ("N."): its end, or 0. `suffix` tells whether it is a
// street suffix.
size_t Scanner::street_word(size_t j, bool& suffix, bool& direction) const {
    suffix = direction = false;
    const unsigned char c = at(j);
    size_t e;
    if (is_digit(c)) {  // an ordinal: 5th, 42nd, 1st, 3rd
        const size_t d = digits(j, 3);
        if (d == 0 || d > 3) return 0;
        e = j + d;
        if (!(matches_ci(e, "st") || matches_ci(e, "nd") || matches_ci(e, "rd") || matches_ci(e, "th"))) return 0;
        e += 2;
        return boundary(e) ? e : 0;
    }
    if (!is_upper(c)) return 0;
    e = j + 1;
    while (e < n_ && e - j < kMaxWord && (is_alpha(s_[e]) || ((s_[e] == '-' || s_[e] == '\'') && is_alpha(at(e + 1)))))
        ++e;
    if (!boundary(e) || at(e) >= 0x80) return 0;
    char buf[kMaxWord + 1];
    const auto w = lower_word(j, e, buf);
    if (w.empty()) return 0;
    suffix = in_list(w, kStreetSuffixes);
    direction = in_list(w, kDirections);
    if (at(e) == '.' && (suffix || direction) && w.size() <= 4) {
        // "N. Oak", "St., Apt 5": the dot goes with the abbreviation only
        // when more of the address follows it.
        if (direction || at(e + 1) == ',') ++e;
    }
    return e;
}

size_t Scanner::unit_designator(size_t e) const {
    size_t j = e;
    if (at(j) == ',') ++j;
    const size_t k = spaces(j, 2);
    if (k == j) return e;
    size_t v;
    if (at(k) == '#') {
        v = k + 1;
    } else {
        const size_t we = alpha_end(k, 10);
        char buf[kMaxWord + 1];
        const auto w = lower_word(k, we, buf);
        if (w.empty() || !in_list(w, kUnitWords)) return e;
        v = we;
        if (at(v) == '.') ++v;
        v = spaces(v, 2);
        if (at(v) == '#') ++v;
        if (v == we) return e;
    }
    size_t t = v;
    while (t < n_ && t - v < 6 && (is_alnum(s_[t]) || (s_[t] == '-' && is_alnum(at(t + 1))))) ++t;
    if (t == v || !boundary(t) || t - v >= 6) return e;
    return t;
}

// "123 Main Street", "4500 N. Oak Ave, Apt 5", "12 Baker St".
bool Scanner::address(size_t i, Match& m) const {
    const size_t d = digits(i, 6);
    if (d == 0 || d > 6) return false;
    size_t j = i + d;
    if (at(j) != ' ') return false;
    ++j;
    size_t names = 0;
    for (int k = 0; k < 5; ++k) {
        bool suffix = false, direction = false;
        const size_t e = street_word(j, suffix, direction);
        if (!e) return false;
        if (suffix && names > 0) {
            const size_t end = unit_designator(e);
            m = {i, end, PhiType::Address};
            return true;
        }
        ++names;
        if (at(e) != ' ') return false;
        j = e + 1;
    }
    return false;
}

// A ZIP code right after an address ("12 Baker St, 62704").
bool Scanner::zip_after_address(size_t i, Match& m) const {
    if (last_address_end == static_cast<size_t>(-1) || i < last_address_end || i - last_address_end > 3) return false;
    for (size_t k = last_address_end; k < i; ++k)
        if (s_[k] != ' ' && s_[k] != ',') return false;
    return zip_digits(i, m);
}

}  // namespace training_output::redact
