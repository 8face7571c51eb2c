// The scanner: whether an identifier starts at a word start, and where it
// ends. Its small helpers are here; each family of matchers is defined in a
// file of its own (match_*.cpp) and declared at the end of the class.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

#include "redact/first_pass.hpp"
#include "redact/lexicon.hpp"
#include "redact/redact.hpp"

namespace training_output::redact {

// One identifier: text[begin, end) becomes the placeholder of `type`; the
// text between the matcher's start and `begin` (a cue word) is kept.
struct Match {
    size_t begin = 0;
    size_t end = 0;
    PhiType type = PhiType::Email;
};

class Scanner {
public:
    explicit Scanner(std::string_view text)
        : s_(reinterpret_cast<const unsigned char*>(text.data())), n_(text.size()) {}

    size_t size() const { return n_; }
    unsigned char at(size_t i) const { return i < n_ ? s_[i] : 0; }
    const unsigned char* data() const { return s_; }

    // Whether an identifier starts at `i` (a word start, or '+' / '(').
    bool match(size_t i, Match& m) {
        const unsigned char c = s_[i];
        if (c == '+' || c == '(') return phone_shape(i, m);
        if (is_digit(c)) {
            return email(i, m) || ipv4(i, m) || ipv6(i, m) || date_iso(i, m) || date_numeric(i, m) ||
                   date_day_first(i, m) || ssn_shape(i, m) || phone_shape(i, m) || address(i, m) ||
                   zip_after_address(i, m);
        }
        return url(i, m) || email(i, m) || ipv6(i, m) || bare_domain(i, m) || date_month_first(i, m) ||
               (may_cue(i) && (cue(i, m) || name(i, m)));
    }

    size_t last_address_end = static_cast<size_t>(-1);

    // Most words and numbers are ones no matcher can start at; they are told
    // apart by what follows them, before any matcher runs. The end of such a
    // word or number at `i`, or 0.
    size_t plain(size_t i) const { return is_digit(s_[i]) ? plain_number(i) : plain_word(i); }

private:
    // Whether cue() or name() may match at the letter at i: every word they
    // start at is a cue when lowercased, or has a capital (a title, "SN", a
    // state).
    bool may_cue(size_t i) const {
        size_t e = i;
        while (e < n_ && is_lower(s_[e])) ++e;
        if (e < n_ && is_upper(s_[e])) return true;
        return e - i > kMaxWord || is_cue(std::string_view(reinterpret_cast<const char*>(s_ + i), e - i));
    }
    //
    // A word of lowercase letters (or a capital and lowercase letters) that is
    // no cue of cue() or name() and no month, followed by a space or
    // punctuation that no address, domain, email, IPv6 address or URL has
    // after its first word.
    size_t plain_word(size_t i) const {
        if (!is_alpha(s_[i])) return 0;
        size_t e = i + 1;
        while (e < n_ && is_lower(s_[e])) ++e;
        if (e - i > kMaxWord) return 0;
        if (!plain_follower(at(e))) {
            // Or the end of a sentence, not a domain or an email's local part.
            if (at(e) != '.' || !(at(e + 1) == 0 || at(e + 1) == ' ' || at(e + 1) == '\n')) return 0;
        }
        if (is_lower(s_[i])) {
            return is_cue(std::string_view(reinterpret_cast<const char*>(s_ + i), e - i)) ? 0 : e;
        }
        char buf[kMaxWord + 1];
        const std::string_view w = lower_word(i, e, buf);
        // Titles (name()) and months (dates) are capitalized.
        if (is_cue(w) || is_title_or_month(w)) return 0;
        return e;
    }
    // A number followed by punctuation, or by a space and a lowercase word (a
    // unit, "of", ...): no date, phone number, SSN, address, IP address or
    // email starts there. A ZIP code right after an address is left to its matcher.
    size_t plain_number(size_t i) const {
        if (last_address_end != static_cast<size_t>(-1) && i >= last_address_end && i - last_address_end <= 3) {
            return 0;
        }
        size_t e = i;
        while (e < n_ && is_digit(s_[e])) ++e;
        switch (at(e)) {
            case 0:
            case ',':
            case ';':
            case ')':
            case '%':
            case '!':
            case '?':
            case '"':
            case '\n':
            case '\t':
            case '\r': return e;
            case ' ':  // "3 of March" is left to the matchers
                return is_lower(at(e + 1)) && !(at(e + 1) == 'o' && at(e + 2) == 'f') ? e : 0;
            default: return 0;
        }
    }

    const unsigned char* s_;
    size_t n_;
    // Memos that keep the email and domain scans linear: the run scanned from
    // an earlier start serves every later start inside it.
    size_t local_end_ = 0;  // end of the run of local-part characters last scanned
    size_t email_end_ = 0;  // end of the email whose '@' ends that run (0: none)
    size_t domain_run_end_ = 0;

    // ---- small helpers -------------------------------------------------

    size_t digits(size_t i, size_t max) const {  // count of digits at i, at most max + 1
        size_t k = 0;
        while (k <= max && is_digit(at(i + k))) ++k;
        return k;
    }
    unsigned number(size_t i, size_t len) const {
        unsigned v = 0;
        for (size_t k = 0; k < len; ++k) v = v * 10 + (s_[i + k] - '0');
        return v;
    }
    size_t alpha_end(size_t i, size_t max) const {
        size_t e = i;
        while (e < n_ && e - i <= max && is_alpha(s_[e])) ++e;
        return e;
    }
    // The lowercased ASCII word [i, e) (at most kMaxWord letters) into buf.
    std::string_view lower_word(size_t i, size_t e, char* buf) const {
        const size_t len = e - i;
        if (len == 0 || len > kMaxWord) return {};
        for (size_t k = 0; k < len; ++k) buf[k] = static_cast<char>(lower(s_[i + k]));
        return std::string_view(buf, len);
    }
    // No ASCII letter or digit right after a token.
    bool boundary(size_t e) const { return e >= n_ || !is_alnum(s_[e]); }
    // Boundary, and no further number glued on by a separator ("1.2.3.4.5", "12-34-56-78").
    bool number_boundary(size_t e) const {
        if (!boundary(e)) return false;
        const unsigned char c = at(e);
        if ((c == '.' || c == '-' || c == '/' || c == ':') && is_digit(at(e + 1))) return false;
        return true;
    }
    bool matches_ci(size_t i, const char* w) const {
        const size_t len = std::strlen(w);
        if (i + len > n_) return false;
        for (size_t k = 0; k < len; ++k)
            if (lower(s_[i + k]) != static_cast<unsigned char>(w[k])) return false;
        return true;
    }
    // Spaces, tabs and line breaks (a cue at the end of a line names what
    // starts the next one): at most `max` of them.
    size_t spaces(size_t i, size_t max) const {
        size_t e = i;
        while (e < n_ && e - i < max && (s_[e] == ' ' || s_[e] == '\t' || s_[e] == '\n' || s_[e] == '\r')) ++e;
        return e;
    }
    // A unit word, '%' or a degree sign after a number (readings are kept).
    bool followed_by_unit(size_t e) const {
        size_t j = spaces(e, 2);
        const unsigned char c = at(j);
        if (c == '%') return true;
        if (c == 0xC2 && at(j + 1) == 0xB0) return true;  // °
        const size_t we = alpha_end(j, kMaxWord);
        char buf[kMaxWord + 1];
        const auto w = lower_word(j, we, buf);
        return !w.empty() && in_list(w, kUnits);
    }
    // The month at i (capitalized, full or abbreviated, optional '.' after
    // an abbreviation): 1..12 and its end, or 0.
    int month(size_t i, size_t& end) const {
        if (!is_upper(at(i))) return 0;
        const size_t e = alpha_end(i, 10);
        if (!boundary(e) || (at(e) >= 0x80)) return 0;
        char buf[kMaxWord + 1];
        const auto w = lower_word(i, e, buf);
        if (w.empty()) return 0;
        for (int k = 0; k < 12; ++k)
            if (w == kMonths[k]) {
                end = e;
                return k + 1;
            }
        for (int k = 0; k < 13; ++k)
            if (w == kMonthAbbrevs[k]) {
                end = at(e) == '.' ? e + 1 : e;
                return k < 12 ? k + 1 : 9;
            }
        return 0;
    }
    // A 4-digit year 1900..2099 at i, bounded; its end or 0.
    size_t year4(size_t i) const {
        if (digits(i, 4) != 4) return 0;
        const unsigned y = number(i, 4);
        if (y < 1900 || y > 2099) return 0;
        return number_boundary(i + 4) && !followed_by_unit(i + 4) ? i + 4 : 0;
    }
    // A day of the month at i, with an optional ordinal suffix; its end or 0.
    size_t day(size_t i) const {
        const size_t d = digits(i, 2);
        if (d == 0 || d > 2) return 0;
        const unsigned v = number(i, d);
        if (v < 1 || v > 31) return 0;
        size_t e = i + d;
        if (matches_ci(e, "st") || matches_ci(e, "nd") || matches_ci(e, "rd") || matches_ci(e, "th")) e += 2;
        return boundary(e) ? e : 0;
    }
    // ", 2025" or " 2025" after a day: the year's end, or `e` unchanged.
    size_t optional_year(size_t e) const {
        size_t j = e;
        if (at(j) == ',') ++j;
        const size_t k = spaces(j, 2);
        if (k == j) return e;
        const size_t y = year4(k);
        return y ? y : e;
    }

    // match_web.cpp: URLs, emails, bare domains, IPv4 and IPv6 addresses.
    static bool url_char(unsigned char c);
    size_t url_tail(size_t j) const;
    size_t trim_url(size_t start, size_t e) const;
    bool url(size_t i, Match& m) const;
    size_t domain(size_t j, size_t run_end, std::string_view& tld) const;
    size_t domain_run(size_t j) const;
    bool email(size_t i, Match& m);
    bool bare_domain(size_t i, Match& m);
    bool ipv4(size_t i, Match& m) const;
    bool ipv6(size_t i, Match& m) const;

    // match_dates.cpp: ISO, numeric, day first ("3 March 2025"), month first ("March 3rd").
    bool date_iso(size_t i, Match& m) const;
    bool date_numeric(size_t i, Match& m) const;
    bool date_day_first(size_t i, Match& m) const;
    bool date_month_first(size_t i, Match& m) const;

    // match_numbers.cpp: SSNs and phone numbers by their shape.
    bool ssn_shape(size_t i, Match& m) const;
    bool ssn_digits(size_t j, Match& m) const;
    struct Groups {
        static constexpr int kMax = 8;
        int count = 0;
        size_t len[kMax] = {};
        bool paren[kMax] = {};
        unsigned char sep_after[kMax] = {};  // 0: nothing that continues the number
        size_t end[kMax] = {};
    };
    Groups groups(size_t i) const;
    static bool ends_after(const Groups& g, int k);
    bool phone_shape(size_t i, Match& m) const;
    bool phone_after_cue(size_t j, Match& m) const;

    // match_cues.cpp: identifiers after a cue word: SSN, phone, MRN, serial number, ZIP code
    size_t filler(size_t j, bool& marker) const;
    size_t id_token(size_t j) const;
    bool id_after(size_t j, PhiType type, Match& m) const;
    bool zip_digits(size_t j, Match& m) const;
    bool next_word_is(size_t e, const char* w, size_t& end) const;
    bool cue(size_t i, Match& m) const;

    // match_ids.cpp: health plan, account, license and vehicle numbers, other
    // ids after an id-like cue, ages over 89; `w` is the cue word [i, e).
    bool id_cue(size_t i, size_t e, std::string_view w, Match& m) const;

    // match_address.cpp: Street addresses ("42 Oak Street", "Apt 4B") and the ZIP code right after one.
    size_t street_word(size_t j, bool& suffix, bool& direction) const;
    size_t unit_designator(size_t e) const;
    bool address(size_t i, Match& m) const;
    bool zip_after_address(size_t i, Match& m) const;

    // match_names.cpp: Names after a title or a cue ("Dr. Jane Doe", "seen by John Smith").
    std::uint32_t code_point(size_t j, size_t& len) const;
    static bool non_ascii_capital(std::uint32_t cp);
    size_t name_word(size_t j) const;
    bool name(size_t i, Match& m) const;
};

}  // namespace training_output::redact
