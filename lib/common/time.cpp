// ISO-8601 parsing and formatting in UTC.
#include "common/time.hpp"

#include <cstdio>
#include <cstring>

#include "common/json.hpp"
#include "common/utf8.hpp"
#include "training_output/error.hpp"

namespace training_output {
namespace {

// Howard Hinnant's civil-calendar algorithms (proleptic Gregorian).
std::int64_t days_from_civil(std::int64_t y, unsigned m, unsigned d) {
    y -= m <= 2;
    const std::int64_t era = (y >= 0 ? y : y - 399) / 400;
    const unsigned yoe = static_cast<unsigned>(y - era * 400);
    const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + static_cast<std::int64_t>(doe) - 719468;
}

void civil_from_days(std::int64_t z, std::int64_t& y, unsigned& m, unsigned& d) {
    z += 719468;
    const std::int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    const unsigned doe = static_cast<unsigned>(z - era * 146097);
    const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    y = static_cast<std::int64_t>(yoe) + era * 400;
    const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    const unsigned mp = (5 * doy + 2) / 153;
    d = doy - (153 * mp + 2) / 5 + 1;
    m = mp < 10 ? mp + 3 : mp - 9;
    y += m <= 2;
}

bool leap(std::int64_t y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

unsigned days_in_month(std::int64_t y, unsigned m) {
    static const unsigned days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && leap(y) ? 29 : days[m - 1];
}

struct Cursor {
    std::string_view s;
    std::size_t i = 0;
    bool done() const { return i >= s.size(); }
    char peek() const { return done() ? '\0' : s[i]; }
    bool digits(int n, int& out) {
        out = 0;
        for (int k = 0; k < n; ++k) {
            if (i >= s.size() || s[i] < '0' || s[i] > '9') return false;
            out = out * 10 + (s[i++] - '0');
        }
        return true;
    }
    bool eat(char c) {
        if (peek() != c) return false;
        ++i;
        return true;
    }
};

}  // namespace

UtcParts utc_parts(std::chrono::system_clock::time_point when) {
    auto us = std::chrono::duration_cast<std::chrono::microseconds>(when.time_since_epoch()).count();
    std::int64_t secs = us / 1000000;
    long micros = static_cast<long>(us % 1000000);
    if (micros < 0) {
        micros += 1000000;
        --secs;
    }
    std::int64_t days = secs / 86400;
    std::int64_t rem = secs % 86400;
    if (rem < 0) {
        rem += 86400;
        --days;
    }
    UtcParts p{};
    civil_from_days(days, p.year, p.month, p.day);
    p.hour = static_cast<int>(rem / 3600);
    p.minute = static_cast<int>(rem % 3600 / 60);
    p.second = static_cast<int>(rem % 60);
    p.micros = micros;
    return p;
}

std::chrono::system_clock::time_point parse_iso8601(std::string_view text) {
    auto fail = [&](const char* why) -> Error {
        return Error(ErrorCode::InvalidInput, std::string("result.processing_timestamp ") +
                                                  json::quote(utf8_prefix(text, 64)) +
                                                  " is not an ISO-8601 date-time: " + why);
    };
    Cursor c{text};
    int year, month, day, hour = 0, minute = 0, second = 0;
    long micros = 0;
    if (!c.digits(4, year) || !c.eat('-') || !c.digits(2, month) || !c.eat('-') || !c.digits(2, day))
        throw fail("expected YYYY-MM-DD");
    // The clock counts nanoseconds: keep far from its limits (1677-2262).
    if (year < 1970 || year > 2199) throw fail("year out of range (1970-2199)");
    if (month < 1 || month > 12) throw fail("month out of range");
    if (day < 1 || static_cast<unsigned>(day) > days_in_month(year, static_cast<unsigned>(month)))
        throw fail("day out of range");
    std::int64_t offset_seconds = 0;
    if (!c.done()) {
        if (!(c.eat('T') || c.eat('t') || c.eat(' '))) throw fail("expected 'T' after the date");
        if (!c.digits(2, hour) || !c.eat(':') || !c.digits(2, minute)) throw fail("expected HH:MM");
        if (c.eat(':')) {
            if (!c.digits(2, second)) throw fail("expected seconds");
            if (c.eat('.') || c.eat(',')) {
                int n = 0;
                while (!c.done() && c.peek() >= '0' && c.peek() <= '9') {
                    if (n < 6) micros = micros * 10 + (c.peek() - '0');
                    ++n;
                    ++c.i;
                }
                if (n == 0) throw fail("expected digits after the decimal point");
                for (int k = n; k < 6; ++k) micros *= 10;
            }
        }
        if (hour > 23 || minute > 59 || second > 59) throw fail("time out of range");
        if (c.eat('Z') || c.eat('z')) {
        } else if (c.peek() == '+' || c.peek() == '-') {
            int sign = c.peek() == '-' ? -1 : 1;
            ++c.i;
            int oh, om = 0;
            if (!c.digits(2, oh)) throw fail("expected an offset +HH:MM");
            if (c.eat(':')) {
                if (!c.digits(2, om)) throw fail("expected an offset +HH:MM");
            } else if (!c.done()) {
                if (!c.digits(2, om)) throw fail("expected an offset +HHMM");
            }
            if (oh > 23 || om > 59) throw fail("offset out of range");
            offset_seconds = sign * (oh * 3600 + om * 60);
        }
        if (!c.done()) throw fail("unexpected characters at the end");
    }
    std::int64_t secs = days_from_civil(year, static_cast<unsigned>(month), static_cast<unsigned>(day)) * 86400 +
                        hour * 3600 + minute * 60 + second - offset_seconds;
    return std::chrono::system_clock::time_point(std::chrono::duration_cast<std::chrono::system_clock::duration>(
        std::chrono::seconds(secs) + std::chrono::microseconds(micros)));
}

namespace {

// `v` in decimal, zero-padded to `width` digits; called for every line, so
// by hand rather than through snprintf.
void put_digits(std::string& out, std::int64_t v, int width) {
    char buf[24];
    int n = 0;
    std::uint64_t u = v < 0 ? 0 - static_cast<std::uint64_t>(v) : static_cast<std::uint64_t>(v);
    do {
        buf[n++] = static_cast<char>('0' + u % 10);
        u /= 10;
    } while (u != 0);
    while (n < width) buf[n++] = '0';
    if (v < 0) out.push_back('-');
    while (n > 0) out.push_back(buf[--n]);
}

}  // namespace

void put_year_month(std::string& out, const UtcParts& p, char sep) {
    put_digits(out, p.year, 4);
    out.push_back(sep);
    put_digits(out, p.month, 2);
}

std::string format_iso8601(std::chrono::system_clock::time_point when, bool always_micros) {
    const UtcParts p = utc_parts(when);
    std::string out;
    out.reserve(27);
    put_year_month(out, p, '-');
    out.push_back('-');
    put_digits(out, p.day, 2);
    out.push_back('T');
    put_digits(out, p.hour, 2);
    out.push_back(':');
    put_digits(out, p.minute, 2);
    out.push_back(':');
    put_digits(out, p.second, 2);
    if (p.micros != 0 || always_micros) {
        out.push_back('.');
        put_digits(out, p.micros, 6);
    }
    out.push_back('Z');
    return out;
}

}  // namespace training_output
