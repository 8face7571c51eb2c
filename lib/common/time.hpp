// Times in UTC: ISO-8601 parsing and formatting, calendar parts.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace training_output {

// Parses an ISO-8601 date-time ("2025-11-18T10:30:00Z", "...+02:00",
// "...T10:30:00.123456", a space instead of T; no offset = UTC). Throws
// Error(InvalidInput) on anything else.
std::chrono::system_clock::time_point parse_iso8601(std::string_view text);
// "2025-11-18T10:30:00Z" (with microseconds when they are not zero, or
// always: "2025-11-18T10:30:00.000000Z", the one format of the lines).
std::string format_iso8601(std::chrono::system_clock::time_point when, bool always_micros = false);

// A time's calendar parts in UTC (proleptic Gregorian).
struct UtcParts {
    std::int64_t year;
    unsigned month, day;
    int hour, minute, second;
    long micros;
};
UtcParts utc_parts(std::chrono::system_clock::time_point when);
// Appends "YYYY<sep>MM".
void put_year_month(std::string& out, const UtcParts& p, char sep);

}  // namespace training_output
