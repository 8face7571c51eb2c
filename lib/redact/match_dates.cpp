// Dates: ISO, numeric, day first ("3 March 2025"), month first ("March 3rd").
#include "redact/scanner.hpp"

namespace training_output::redact {

// 2025-11-18, 2025/11/18, 2025.11.18, and ISO date-times 2025-11-18T10:30:00.5+01:00.
bool Scanner::date_iso(size_t i, Match& m) const {
    if (digits(i, 4) != 4) return false;
    const unsigned y = number(i, 4);
    if (y < 1000 || y > 2999) return false;
    const unsigned char sep = at(i + 4);
    if (sep != '-' && sep != '/' && sep != '.') return false;
    size_t j = i + 5;
    const size_t dm = digits(j, 2);
    if (dm == 0 || dm > 2) return false;
    const unsigned mo = number(j, dm);
    j += dm;
    if (at(j) != sep) return false;
    ++j;
    const size_t dd = digits(j, 2);
    if (dd == 0 || dd > 2) return false;
    const unsigned d = number(j, dd);
    j += dd;
    if (mo < 1 || mo > 12 || d < 1 || d > 31) return false;
    // A time after 'T'.
    if ((at(j) == 'T' || at(j) == 't') && digits(j + 1, 2) == 2 && at(j + 3) == ':' && digits(j + 4, 2) == 2) {
        size_t k = j + 6;
        if (at(k) == ':' && digits(k + 1, 2) == 2) {
            k += 3;
            if ((at(k) == '.' || at(k) == ',') && is_digit(at(k + 1))) {
                ++k;
                for (int f = 0; f < 9 && is_digit(at(k)); ++f) ++k;
            }
        }
        if (at(k) == 'Z' || at(k) == 'z') {
            ++k;
        } else if ((at(k) == '+' || at(k) == '-') && digits(k + 1, 2) == 2) {
            k += 3;
            if (at(k) == ':' && digits(k + 1, 2) == 2)
                k += 3;
            else if (digits(k, 2) == 2)
                k += 2;
        }
        if (!boundary(k)) return false;
        m = {i, k, PhiType::Date};
        return true;
    }
    if (!number_boundary(j)) return false;
    m = {i, j, PhiType::Date};
    return true;
}

// 11/18/2025, 18/11/2025, 11-18-25, 18.11.2025 (a year of 4 digits after dots).
bool Scanner::date_numeric(size_t i, Match& m) const {
    const size_t d1 = digits(i, 2);
    if (d1 == 0 || d1 > 2) return false;
    const unsigned char sep = at(i + d1);
    if (sep != '/' && sep != '-' && sep != '.') return false;
    size_t j = i + d1 + 1;
    const size_t d2 = digits(j, 2);
    if (d2 == 0 || d2 > 2) return false;
    if (at(j + d2) != sep) return false;
    const size_t k = j + d2 + 1;
    const size_t dy = digits(k, 4);
    if (dy != 4 && (dy != 2 || sep == '.')) return false;
    const unsigned a = number(i, d1), b = number(j, d2);
    const bool md = a >= 1 && a <= 12 && b >= 1 && b <= 31;
    const bool dm = a >= 1 && a <= 31 && b >= 1 && b <= 12;
    if (!md && !dm) return false;
    if (dy == 4) {
        const unsigned y = number(k, 4);
        if (y < 1900 || y > 2099) return false;
    }
    const size_t e = k + dy;
    if (!number_boundary(e) || followed_by_unit(e)) return false;
    m = {i, e, PhiType::Date};
    return true;
}

// "18 Nov 2025", "3rd of March", "18 November".
bool Scanner::date_day_first(size_t i, Match& m) const {
    const size_t d = day(i);
    if (!d) return false;
    size_t j = spaces(d, 2);
    if (j == d) return false;
    if (matches_ci(j, "of ")) j = spaces(j + 3, 2);
    size_t me = 0;
    if (!month(j, me)) return false;
    m = {i, optional_year(me), PhiType::Date};
    return true;
}

// "November 18, 2025", "Nov 18th", "Nov. 18", "March 3", "Nov 18-20", "March 2025".
bool Scanner::date_month_first(size_t i, Match& m) const {
    size_t me = 0;
    if (!month(i, me)) return false;
    const size_t j = spaces(me, 2);
    if (j == me) return false;
    if (const size_t y = year4(j)) {  // month and year
        m = {i, y, PhiType::Date};
        return true;
    }
    size_t e = day(j);
    if (!e) return false;
    const unsigned char c = at(e);
    if ((c == ',' && is_digit(at(e + 1))) || ((c == ':' || c == '.' || c == '/') && is_digit(at(e + 1))))
        return false;                       // "May 12,000 steps", "Nov 7:30"
    if (c == '-' && is_digit(at(e + 1))) {  // a range of days
        const size_t d2 = day(e + 1);
        if (!d2) return false;
        e = d2;
    }
    if (followed_by_unit(e)) return false;
    m = {i, optional_year(e), PhiType::Date};
    return true;
}

}  // namespace training_output::redact
