// SSNs and phone numbers by their shape.
#include "redact/scanner.hpp"

namespace training_output::redact {

bool Scanner::ssn_shape(size_t i, Match& m) const {
    if (digits(i, 3) != 3 || at(i + 3) != '-' || digits(i + 4, 2) != 2 || at(i + 6) != '-' || digits(i + 7, 4) != 4)
        return false;
    if (!number_boundary(i + 11)) return false;
    m = {i, i + 11, PhiType::Ssn};
    return true;
}

// Nine digits after an SSN cue: 123-45-6789, 123 45 6789, 123456789.
bool Scanner::ssn_digits(size_t j, Match& m) const {
    size_t k = j, count = 0;
    while (k < n_ && k - j < 11) {
        if (is_digit(s_[k])) {
            ++count;
            ++k;
        } else if ((s_[k] == '-' || s_[k] == ' ') && (count == 3 || count == 5) && is_digit(at(k + 1)))
            ++k;
        else
            break;
    }
    if (count != 9 || !number_boundary(k)) return false;
    m = {j, k, PhiType::Ssn};
    return true;
}

// Digit groups at i separated by single ' ', '-', '.' (a group may be in
// parentheses): at most 8 groups of at most 15 digits.
Scanner::Groups Scanner::groups(size_t i) const {
    Groups g;
    size_t j = i;
    if (at(j) == '+') ++j;
    while (g.count < Groups::kMax) {
        bool paren = false;
        if (at(j) == '(') {
            paren = true;
            ++j;
        }
        const size_t d = digits(j, 15);
        if (d == 0 || d > 15) break;
        j += d;
        if (paren) {
            if (at(j) != ')') break;
            ++j;
        }
        const int k = g.count++;
        g.len[k] = d;
        g.paren[k] = paren;
        g.end[k] = j;
        const unsigned char c = at(j);
        if ((c == ' ' || c == '-' || c == '.') && (is_digit(at(j + 1)) || at(j + 1) == '(')) {
            g.sep_after[k] = c;
            ++j;
        } else if (paren && is_digit(c)) {
            g.sep_after[k] = ' ';
        } else {
            break;
        }
    }
    return g;
}

// The number ends after group k: nothing glued on by '-' or '.'.
bool Scanner::ends_after(const Groups& g, int k) { return g.sep_after[k] == 0 || g.sep_after[k] == ' '; }

bool Scanner::phone_shape(size_t i, Match& m) const {
    const Groups g = groups(i);
    if (g.count == 0) return false;
    if (s_[i] == '+') {
        if (g.paren[0] || g.len[0] > 15) return false;
        size_t total = 0;
        int best = -1;
        for (int k = 0; k < g.count; ++k) {
            total += g.len[k];
            if (total > 15) break;
            if (k == 0 && g.len[0] < 8 && g.count == 1) break;
            if (k > 0 && g.len[0] > 3) break;
            if (k >= 2 && g.len[k] < 2) break;  // "+44 20 7946 0958 3 times"
            if (total >= 8 && ends_after(g, k) && boundary(g.end[k])) best = k;
        }
        if (best < 0) return false;
        m = {i, g.end[best], PhiType::Phone};
        return true;
    }
    // North American shapes: 3-3-4, 1-3-3-4, (3) 3-4, 1 (3) 3-4.
    auto fits = [&](int first) {
        if (g.count < first + 3) return false;
        if (g.len[first] != 3 || g.len[first + 1] != 3 || g.len[first + 2] != 4) return false;
        if (g.paren[first + 1] || g.paren[first + 2]) return false;
        return ends_after(g, first + 2) && boundary(g.end[first + 2]);
    };
    int end_group = -1;
    if (g.len[0] == 1 && s_[i] == '1' && !g.paren[0] && fits(1))
        end_group = 3;
    else if (fits(0))
        end_group = 2;
    if (end_group < 0) return false;
    // Digits separated by single spaces only after a cue (or with parentheses).
    bool all_spaces = true;
    for (int k = 0; k < end_group; ++k)
        if (g.sep_after[k] != ' ' || g.paren[k]) all_spaces = false;
    if (all_spaces && followed_by_unit(g.end[end_group])) return false;
    m = {i, g.end[end_group], PhiType::Phone};
    return true;
}

// Any 7..15 digits in groups after a phone or fax cue.
bool Scanner::phone_after_cue(size_t j, Match& m) const {
    const unsigned char c = at(j);
    if (!is_digit(c) && c != '+' && c != '(') return false;
    if (phone_shape(j, m)) return true;
    const Groups g = groups(j);
    size_t total = 0;
    int best = -1;
    for (int k = 0; k < g.count; ++k) {
        total += g.len[k];
        if (total > 15) break;
        if (total >= 7 && ends_after(g, k) && boundary(g.end[k])) best = k;
    }
    if (best < 0 || followed_by_unit(g.end[best])) return false;
    m = {j, g.end[best], PhiType::Phone};
    return true;
}

}  // namespace training_output::redact
