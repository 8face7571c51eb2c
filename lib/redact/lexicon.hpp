// The redactor's lexicon: the byte classes of ASCII text and the word lists
// the first pass and the matchers share (units, months, titles, cues,
// states, street words, top-level domains, words that are no name).
#pragma once

#include <algorithm>
#include <cstddef>
#include <iterator>
#include <string_view>

namespace training_output::redact {

using std::size_t;

constexpr size_t kMaxLocalPart = 64;
constexpr size_t kMaxDomain = 253;
constexpr size_t kMaxWord = 40;  // a cue word, a unit, a name word
constexpr size_t kMaxId = 64;    // look-ahead for the digit of an MRN or a serial number

constexpr bool is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
constexpr bool is_upper(unsigned char c) { return c >= 'A' && c <= 'Z'; }
constexpr bool is_lower(unsigned char c) { return c >= 'a' && c <= 'z'; }
constexpr bool is_alpha(unsigned char c) { return is_upper(c) || is_lower(c); }
constexpr bool is_alnum(unsigned char c) { return is_alpha(c) || is_digit(c); }
constexpr bool is_hex(unsigned char c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }
constexpr unsigned char lower(unsigned char c) { return is_upper(c) ? static_cast<unsigned char>(c + 32) : c; }
// A byte of an email's local part.
constexpr bool local_char(unsigned char c) {
    return is_alnum(c) || c == '.' || c == '_' || c == '%' || c == '+' || c == '-';
}

inline bool in_list(std::string_view w, const std::string_view* list, size_t count) {
    for (size_t k = 0; k < count; ++k)
        if (w == list[k]) return true;
    return false;
}
template <size_t N>
bool in_list(std::string_view w, const std::string_view (&list)[N]) {
    return in_list(w, list, N);
}

inline constexpr std::string_view kUnits[] = {
    "mg",     "dl",         "mmol",  "bpm",  "ms",      "msec",     "step",    "steps",  "kcal",  "cal",   "calories",
    "hours",  "hour",       "hrs",   "hr",   "h",       "minutes",  "minute",  "min",    "mins",  "m",     "seconds",
    "second", "sec",        "secs",  "s",    "c",       "f",        "degrees", "degree", "kg",    "lb",    "lbs",
    "mmhg",   "nights",     "night", "days", "day",     "readings", "reading", "times",  "beats", "km",    "mi",
    "miles",  "ml",         "l",     "g",    "units",   "iu",       "am",      "pm",     "x",     "weeks", "week",
    "months", "month",      "years", "year", "percent", "breaths",  "rpm",     "mcg",    "meq",   "kj",    "episodes",
    "events", "awakenings", "cm",    "mm",   "ft"};

inline constexpr std::string_view kTlds[] = {"com",    "org", "net", "edu", "gov", "io",  "health", "info", "us",
                                             "uk",     "ca",  "de",  "fr",  "au",  "biz", "app",    "dev",  "care",
                                             "clinic", "co",  "mil", "eu",  "nl",  "ch",  "jp",     "cn",   "br"};

inline constexpr std::string_view kMonths[] = {"january", "february", "march",     "april",   "may",      "june",
                                               "july",    "august",   "september", "october", "november", "december"};

inline constexpr std::string_view kMonthAbbrevs[] = {"jan", "feb", "mar", "apr", "may", "jun", "jul",
                                                     "aug", "sep", "oct", "nov", "dec", "sept"};

inline constexpr std::string_view kStreetSuffixes[] = {
    "street",  "st",       "avenue",  "ave", "av",     "road", "rd",     "boulevard", "blvd",    "drive",
    "dr",      "lane",     "ln",      "way", "court",  "ct",   "place",  "pl",        "terrace", "ter",
    "parkway", "pkwy",     "highway", "hwy", "circle", "cir",  "square", "sq",        "trail",   "trl",
    "plaza",   "crescent", "close",   "row", "alley",  "pike", "loop"};

inline constexpr std::string_view kDirections[] = {"n",  "s",  "e",     "w",     "ne",   "nw",
                                                   "se", "sw", "north", "south", "east", "west"};

inline constexpr std::string_view kUnitWords[] = {"apt", "apartment", "suite", "ste",   "unit",
                                                  "rm",  "room",      "fl",    "floor", "bldg"};

inline constexpr std::string_view kNotNames[] = {"dr",
                                                 "mr",
                                                 "mrs",
                                                 "ms",
                                                 "mx",
                                                 "miss",
                                                 "nurse",
                                                 "doctor",
                                                 "patient",
                                                 "prof",
                                                 "name",
                                                 "the",
                                                 "a",
                                                 "an",
                                                 "this",
                                                 "that",
                                                 "these",
                                                 "those",
                                                 "his",
                                                 "her",
                                                 "their",
                                                 "he",
                                                 "she",
                                                 "they",
                                                 "it",
                                                 "we",
                                                 "and",
                                                 "or",
                                                 "but",
                                                 "with",
                                                 "without",
                                                 "on",
                                                 "in",
                                                 "at",
                                                 "to",
                                                 "for",
                                                 "from",
                                                 "of",
                                                 "by",
                                                 "as",
                                                 "is",
                                                 "was",
                                                 "has",
                                                 "had",
                                                 "have",
                                                 "will",
                                                 "would",
                                                 "should",
                                                 "could",
                                                 "may",
                                                 "reports",
                                                 "reported",
                                                 "denies",
                                                 "denied",
                                                 "notes",
                                                 "noted",
                                                 "states",
                                                 "stated",
                                                 "slept",
                                                 "sleeps",
                                                 "walked",
                                                 "walks",
                                                 "presents",
                                                 "presented",
                                                 "returns",
                                                 "returned",
                                                 "continues",
                                                 "continued",
                                                 "feels",
                                                 "felt",
                                                 "wore",
                                                 "wears",
                                                 "took",
                                                 "takes",
                                                 "remains",
                                                 "remained",
                                                 "says",
                                                 "said",
                                                 "logged",
                                                 "logs",
                                                 "recorded",
                                                 "records",
                                                 "shows",
                                                 "showed",
                                                 "averaged",
                                                 "averages",
                                                 "describes",
                                                 "described",
                                                 "tolerated",
                                                 "completed",
                                                 "started",
                                                 "starts",
                                                 "uses",
                                                 "used",
                                                 "note",
                                                 "summary",
                                                 "today",
                                                 "yesterday",
                                                 "tonight",
                                                 "morning",
                                                 "evening",
                                                 "afternoon",
                                                 "night",
                                                 "daily",
                                                 "weekly",
                                                 "monday",
                                                 "tuesday",
                                                 "wednesday",
                                                 "thursday",
                                                 "friday",
                                                 "saturday",
                                                 "sunday",
                                                 "id",
                                                 "unknown",
                                                 "none",
                                                 "portal",
                                                 "education",
                                                 "history",
                                                 "information",
                                                 "care",
                                                 "instructions",
                                                 "visit",
                                                 "practitioner",
                                                 "assistant",
                                                 "on-call",
                                                 "checked",
                                                 "agreed",
                                                 "declined",
                                                 "confirmed",
                                                 "asked",
                                                 "if",
                                                 "not",
                                                 "also",
                                                 "again",
                                                 "who",
                                                 "whose",
                                                 "when",
                                                 "after",
                                                 "before",
                                                 "during",
                                                 "since",
                                                 "overall",
                                                 "per",
                                                 "via",
                                                 "re",
                                                 "hr",
                                                 "bp",
                                                 "spo",
                                                 "glucose",
                                                 "sleep",
                                                 "heart",
                                                 "steps",
                                                 "calories",
                                                 "weight",
                                                 "health",
                                                 "questionnaire",
                                                 "assessment",
                                                 "status",
                                                 "monitoring",
                                                 "safety",
                                                 "self"};

// Titles a name follows, lowercased (sorted).
inline constexpr std::string_view kTitles[] = {"doctor", "dr", "drs", "messrs", "miss", "mr",
                                               "mrs",    "ms", "mx",  "prof",   "pt"};
// The words the cue and name matchers start at, lowercased (sorted).
inline constexpr std::string_view kCues[] = {"accompanied",
                                             "account",
                                             "acct",
                                             "age",
                                             "aged",
                                             "attended",
                                             "beneficiary",
                                             "call",
                                             "cardiologist",
                                             "case",
                                             "cell",
                                             "cellphone",
                                             "certificate",
                                             "chart",
                                             "claim",
                                             "clinician",
                                             "confirmation",
                                             "contact",
                                             "contacted",
                                             "dea",
                                             "device",
                                             "dietitian",
                                             "endocrinologist",
                                             "fax",
                                             "hospital",
                                             "id",
                                             "identifier",
                                             "imei",
                                             "insurance",
                                             "licence",
                                             "license",
                                             "medicaid",
                                             "medical",
                                             "medicare",
                                             "member",
                                             "mobile",
                                             "mr",
                                             "mrn",
                                             "mrno",
                                             "name",
                                             "npi",
                                             "nurse",
                                             "pager",
                                             "patient",
                                             "phone",
                                             "physician",
                                             "plate",
                                             "policy",
                                             "postal",
                                             "postcode",
                                             "provider",
                                             "record",
                                             "ref",
                                             "reference",
                                             "referred",
                                             "reviewed",
                                             "s",
                                             "seen",
                                             "serial",
                                             "signed",
                                             "social",
                                             "ss",
                                             "ssn",
                                             "subscriber",
                                             "surgeon",
                                             "tel",
                                             "telephone",
                                             "therapist",
                                             "ticket",
                                             "udi",
                                             "vin",
                                             "zip",
                                             "zipcode"};
// US states and territories by their abbreviation (sorted).
inline constexpr std::string_view kStates[] = {
    "AK", "AL", "AR", "AZ", "CA", "CO", "CT", "DC", "DE", "FL", "GA", "HI", "IA", "ID", "IL", "IN", "KS", "KY",
    "LA", "MA", "MD", "ME", "MI", "MN", "MO", "MS", "MT", "NC", "ND", "NE", "NH", "NJ", "NM", "NV", "NY", "OH",
    "OK", "OR", "PA", "PR", "RI", "SC", "SD", "TN", "TX", "UT", "VA", "VT", "WA", "WI", "WV", "WY"};

// Whether `w` (lowercase ASCII letters) is a word the cue and name matchers
// start at ("phone", "mrn", "patient", "seen", ...). In first_pass.cpp, beside
// the word index it asks first.
bool is_cue(std::string_view w) noexcept;
// Whether `w` is the abbreviation of a US state (two capitals, "DC", "PR").
inline bool is_state(std::string_view w) noexcept {
    return std::binary_search(std::begin(kStates), std::end(kStates), w);
}
// Whether `w` (lowercased) is a title or a month, full or abbreviated.
inline bool is_title_or_month(std::string_view w) noexcept {
    return std::binary_search(std::begin(kTitles), std::end(kTitles), w) || in_list(w, kMonths) ||
           in_list(w, kMonthAbbrevs);
}

}  // namespace training_output::redact
