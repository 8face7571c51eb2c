// PHI redaction: one pass over the text. At each word start a few small
// matchers, each with a bounded look-ahead (or a memo that makes its scan of a
// run happen once), decide whether an identifier starts there; otherwise the
// word is copied as it is. Placeholders only ever replace spans that begin and
// end on ASCII bytes (or after a whole run of non-ASCII bytes), so UTF-8
// sequences are never cut.
#include "format/redact.hpp"

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <iterator>
#include <stdexcept>

#include "common/crash_point.hpp"
#include "format/redact_prefilter.hpp"

namespace training_output {

const char* phi_type_name(PhiType t) noexcept {
    switch (t) {
        case PhiType::Email: return "email";
        case PhiType::Phone: return "phone";
        case PhiType::Ssn: return "ssn";
        case PhiType::Url: return "url";
        case PhiType::Ip: return "ip";
        case PhiType::Mrn: return "mrn";
        case PhiType::Serial: return "serial";
        case PhiType::Name: return "name";
        case PhiType::Address: return "address";
        case PhiType::Zip: return "zip";
        case PhiType::Date: return "date";
    }
    return "unknown";
}

const char* phi_placeholder(PhiType t) noexcept {
    switch (t) {
        case PhiType::Email: return "[EMAIL]";
        case PhiType::Phone: return "[PHONE]";
        case PhiType::Ssn: return "[SSN]";
        case PhiType::Url: return "[URL]";
        case PhiType::Ip: return "[IP]";
        case PhiType::Mrn: return "[MRN]";
        case PhiType::Serial: return "[SERIAL]";
        case PhiType::Name: return "[NAME]";
        case PhiType::Address: return "[ADDRESS]";
        case PhiType::Zip: return "[ZIP]";
        case PhiType::Date: return "[DATE]";
    }
    return "[PHI]";
}

std::uint32_t RedactionCounts::total() const noexcept {
    std::uint32_t sum = 0;
    for (auto c : by_type) sum += c;
    return sum;
}

namespace {

using std::size_t;

constexpr size_t kMaxLocalPart = 64;
constexpr size_t kMaxDomain = 253;
constexpr size_t kMaxWord = 40;  // a cue word, a unit, a name word
constexpr size_t kMaxId = 64;    // look-ahead for the digit of an MRN or a serial number

bool is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
bool is_upper(unsigned char c) { return c >= 'A' && c <= 'Z'; }
bool is_lower(unsigned char c) { return c >= 'a' && c <= 'z'; }
bool is_alpha(unsigned char c) { return is_upper(c) || is_lower(c); }
bool is_alnum(unsigned char c) { return is_alpha(c) || is_digit(c); }
bool is_hex(unsigned char c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }
unsigned char lower(unsigned char c) { return is_upper(c) ? static_cast<unsigned char>(c + 32) : c; }

// One identifier: text[begin, end) becomes the placeholder of `type`; the
// text between the matcher's start and `begin` (a cue word) is kept.
struct Match {
    size_t begin = 0;
    size_t end = 0;
    PhiType type = PhiType::Email;
};

bool in_list(std::string_view w, const std::string_view* list, size_t count) {
    for (size_t k = 0; k < count; ++k)
        if (w == list[k]) return true;
    return false;
}

template <size_t N>
bool in_list(std::string_view w, const std::string_view (&list)[N]) {
    return in_list(w, list, N);
}

constexpr std::string_view kUnits[] = {
    "mg",     "dl",         "mmol",  "bpm",  "ms",      "msec",     "step",    "steps",  "kcal",  "cal",   "calories",
    "hours",  "hour",       "hrs",   "hr",   "h",       "minutes",  "minute",  "min",    "mins",  "m",     "seconds",
    "second", "sec",        "secs",  "s",    "c",       "f",        "degrees", "degree", "kg",    "lb",    "lbs",
    "mmhg",   "nights",     "night", "days", "day",     "readings", "reading", "times",  "beats", "km",    "mi",
    "miles",  "ml",         "l",     "g",    "units",   "iu",       "am",      "pm",     "x",     "weeks", "week",
    "months", "month",      "years", "year", "percent", "breaths",  "rpm",     "mcg",    "meq",   "kj",    "episodes",
    "events", "awakenings", "cm",    "mm",   "ft"};

constexpr std::string_view kTlds[] = {"com",    "org", "net", "edu", "gov", "io",  "health", "info", "us",
                                      "uk",     "ca",  "de",  "fr",  "au",  "biz", "app",    "dev",  "care",
                                      "clinic", "co",  "mil", "eu",  "nl",  "ch",  "jp",     "cn",   "br"};

constexpr std::string_view kMonths[] = {"january", "february", "march",     "april",   "may",      "june",
                                        "july",    "august",   "september", "october", "november", "december"};
constexpr std::string_view kMonthAbbrevs[] = {"jan", "feb", "mar", "apr", "may", "jun", "jul",
                                              "aug", "sep", "oct", "nov", "dec", "sept"};

constexpr std::string_view kStreetSuffixes[] = {
    "street",  "st",       "avenue",  "ave", "av",     "road", "rd",     "boulevard", "blvd",    "drive",
    "dr",      "lane",     "ln",      "way", "court",  "ct",   "place",  "pl",        "terrace", "ter",
    "parkway", "pkwy",     "highway", "hwy", "circle", "cir",  "square", "sq",        "trail",   "trl",
    "plaza",   "crescent", "close",   "row", "alley",  "pike", "loop"};

constexpr std::string_view kDirections[] = {"n",  "s",  "e",     "w",     "ne",   "nw",
                                            "se", "sw", "north", "south", "east", "west"};

constexpr std::string_view kUnitWords[] = {"apt", "apartment", "suite", "ste",   "unit",
                                           "rm",  "room",      "fl",    "floor", "bldg"};

using redact::is_cue;

// Capitalized words that follow a name cue without being a name.
constexpr std::string_view kNotNames[] = {"dr",
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
        if (!redact::plain_follower(at(e))) {
            // Or the end of a sentence, not a domain or an email's local part.
            if (at(e) != '.' || !(at(e + 1) == 0 || at(e + 1) == ' ' || at(e + 1) == '\n')) return 0;
        }
        if (is_lower(s_[i])) {
            return is_cue(std::string_view(reinterpret_cast<const char*>(s_ + i), e - i)) ? 0 : e;
        }
        char buf[kMaxWord + 1];
        const std::string_view w = lower_word(i, e, buf);
        if (is_cue(w)) return 0;
        {
            // Titles (name()) and months (dates) are capitalized.
            static const std::string_view kCapitalized[] = {"doctor", "dr", "drs", "messrs", "miss", "mr",
                                                            "mrs",    "ms", "mx",  "prof",   "pt"};
            if (std::binary_search(std::begin(kCapitalized), std::end(kCapitalized), w)) return 0;
            if (in_list(w, kMonths) || in_list(w, kMonthAbbrevs)) return 0;
        }
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
    size_t spaces(size_t i, size_t max) const {
        size_t e = i;
        while (e < n_ && e - i < max && (s_[e] == ' ' || s_[e] == '\t')) ++e;
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

    // ---- URLs, emails, IP addresses --------------------------------------

    static bool url_char(unsigned char c) {
        if (c <= 0x20 || c >= 0x7F) return false;
        switch (c) {
            case '"':
            case '<':
            case '>':
            case '\\':
            case '^':
            case '`':
            case '{':
            case '|':
            case '}':
            case '(':
            case ')':
            case '[':
            case ']': return false;
            default: return true;
        }
    }
    size_t url_tail(size_t j) const {  // consumes (the match advances past it)
        while (j < n_ && url_char(s_[j])) ++j;
        return j;
    }
    size_t trim_url(size_t start, size_t e) const {
        while (e > start) {
            const unsigned char c = s_[e - 1];
            if (c == '.' || c == ',' || c == ';' || c == ':' || c == '!' || c == '?' || c == '\'' || c == '*')
                --e;
            else
                break;
        }
        return e;
    }
    bool url(size_t i, Match& m) const {
        size_t p = 0;
        if (matches_ci(i, "https://"))
            p = 8;
        else if (matches_ci(i, "http://"))
            p = 7;
        else if (matches_ci(i, "ftp://"))
            p = 6;
        else if (matches_ci(i, "www.") && is_alnum(at(i + 4)))
            p = 4;
        if (p == 0) return false;
        const size_t e = trim_url(i + p, url_tail(i + p));
        if (e <= i + p) return false;
        m = {i, e, PhiType::Url};
        return true;
    }

    static bool local_char(unsigned char c) {
        return is_alnum(c) || c == '.' || c == '_' || c == '%' || c == '+' || c == '-';
    }
    // A dotted domain at j: its end (without a trailing '.' or '-') if it has
    // two labels or more, an alphabetic last label of 2+ letters, at most
    // kMaxDomain bytes and no empty label; else 0. `tld` gets the last label.
    size_t domain(size_t j, size_t run_end, std::string_view& tld) const {
        size_t e = run_end;
        while (e > j && (s_[e - 1] == '.' || s_[e - 1] == '-')) --e;
        if (e <= j || e - j > kMaxDomain) return 0;
        size_t labels = 0, label_start = j;
        for (size_t k = j; k <= e; ++k) {
            if (k == e || s_[k] == '.') {
                if (k == label_start) return 0;
                ++labels;
                label_start = k + 1;
            }
        }
        if (labels < 2) return 0;
        size_t t = e;
        while (t > j && s_[t - 1] != '.') --t;
        if (e - t < 2) return 0;
        for (size_t k = t; k < e; ++k)
            if (!is_alpha(s_[k])) return 0;
        tld = std::string_view(reinterpret_cast<const char*>(s_ + t), e - t);
        return e;
    }
    size_t domain_run(size_t j) const {  // scanned once per run (see the memos)
        while (j < n_ && (is_alnum(s_[j]) || s_[j] == '.' || s_[j] == '-')) ++j;
        return j;
    }
    bool email(size_t i, Match& m) {
        if (i >= local_end_) {
            size_t e = i;
            while (e < n_ && local_char(s_[e])) ++e;
            local_end_ = e;
            email_end_ = 0;
            if (e > i && at(e) == '@' && is_alnum(at(e + 1))) {
                std::string_view tld;
                const size_t d = domain(e + 1, domain_run(e + 1), tld);
                if (d && at(d) < 0x80) email_end_ = d;
            }
            if (e == i) local_end_ = i + 1;
        }
        if (email_end_ == 0 || local_end_ - i > kMaxLocalPart) return false;
        m = {i, email_end_, PhiType::Email};
        return true;
    }
    bool bare_domain(size_t i, Match& m) {
        if (i < domain_run_end_) return false;  // inside a run that failed
        const size_t run = domain_run(i);
        domain_run_end_ = run;
        std::string_view tld;
        const size_t e = domain(i, run, tld);
        if (!e || at(e) >= 0x80 || at(e) == '@') return false;
        // A lowercase top-level domain of the list: "well.In the" is a
        // missing space, not a domain.
        if (!in_list(tld, kTlds)) return false;
        size_t end = e;
        if (e == run && at(e) == '/') end = trim_url(e, url_tail(e));
        m = {i, end, PhiType::Url};
        return true;
    }
    bool ipv4(size_t i, Match& m) const {
        size_t j = i;
        for (int part = 0; part < 4; ++part) {
            const size_t d = digits(j, 3);
            if (d == 0 || d > 3 || number(j, d) > 255) return false;
            j += d;
            if (part < 3) {
                if (at(j) != '.') return false;
                ++j;
            }
        }
        if (!number_boundary(j)) return false;
        m = {i, j, PhiType::Ip};
        return true;
    }
    bool ipv6(size_t i, Match& m) const {
        if (!is_hex(s_[i])) return false;
        size_t j = i, colons = 0, doubles = 0, group = 0;
        bool hex_letter = false, tail_v4 = false;
        while (j < n_ && j - i < 40) {
            const unsigned char c = s_[j];
            if (is_hex(c)) {
                if (++group > 4) return false;
                if (!is_digit(c)) hex_letter = true;
            } else if (c == ':') {
                if (at(j + 1) == ':') {
                    if (++doubles > 1) return false;
                    colons += 2;
                    j += 2;
                    group = 0;
                    continue;
                }
                ++colons;
                if (group == 0) return false;
                group = 0;
            } else {
                break;
            }
            ++j;
        }
        if (colons < 2 || colons > 8) return false;
        if (doubles == 0 && colons != 7) return false;
        if (doubles == 1 && !hex_letter && colons < 3) return false;  // "10::30"
        // An IPv4 tail ("::ffff:192.0.2.1").
        if (at(j) == '.' && group > 0 && group <= 3) {
            size_t k = j - group;
            Match v4;
            if (ipv4(k, v4)) {
                j = v4.end;
                tail_v4 = true;
            }
        }
        if (!tail_v4 && at(j - 1) == ':' && !(at(j - 2) == ':')) return false;  // ends with a lone ':'
        if (!boundary(j) || at(j) == ':') return false;
        m = {i, j, PhiType::Ip};
        return true;
    }

    // ---- dates -------------------------------------------------------------

    // 2025-11-18, 2025/11/18, 2025.11.18, and ISO date-times 2025-11-18T10:30:00.5+01:00.
    bool date_iso(size_t i, Match& m) const {
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
    bool date_numeric(size_t i, Match& m) const {
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
    bool date_day_first(size_t i, Match& m) const {
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
    bool date_month_first(size_t i, Match& m) const {
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

    // ---- SSNs and phone numbers -------------------------------------------

    bool ssn_shape(size_t i, Match& m) const {
        if (digits(i, 3) != 3 || at(i + 3) != '-' || digits(i + 4, 2) != 2 || at(i + 6) != '-' || digits(i + 7, 4) != 4)
            return false;
        if (!number_boundary(i + 11)) return false;
        m = {i, i + 11, PhiType::Ssn};
        return true;
    }
    // Nine digits after an SSN cue: 123-45-6789, 123 45 6789, 123456789.
    bool ssn_digits(size_t j, Match& m) const {
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

    struct Groups {
        static constexpr int kMax = 8;
        int count = 0;
        size_t len[kMax] = {};
        bool paren[kMax] = {};
        unsigned char sep_after[kMax] = {};  // 0: nothing that continues the number
        size_t end[kMax] = {};
    };
    // Digit groups at i separated by single ' ', '-', '.' (a group may be in
    // parentheses): at most 8 groups of at most 15 digits.
    Groups groups(size_t i) const {
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
    static bool ends_after(const Groups& g, int k) { return g.sep_after[k] == 0 || g.sep_after[k] == ' '; }
    bool phone_shape(size_t i, Match& m) const {
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
    bool phone_after_cue(size_t j, Match& m) const {
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

    // ---- cues: SSN, phone, MRN, serial, ZIP -------------------------------

    // Skips what may stand between a cue and its value: spaces, ':', '#',
    // '=', and the words number / no / num / nr / is / was. `marker` tells
    // whether any of ':', '#', '=', number, no, num, nr was there.
    size_t filler(size_t j, bool& marker) const {
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
    size_t id_token(size_t j) const {
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
    bool id_after(size_t j, PhiType type, Match& m) const {
        const size_t e = id_token(j);
        if (!e || followed_by_unit(e)) return false;
        m = {j, e, type};
        return true;
    }
    bool zip_digits(size_t j, Match& m) const {
        if (digits(j, 5) != 5) return false;
        size_t e = j + 5;
        if (at(e) == '-' && digits(e + 1, 4) == 4) e += 5;
        if (!number_boundary(e) || followed_by_unit(e)) return false;
        m = {j, e, PhiType::Zip};
        return true;
    }
    // The next word after a space: its [start, end) if it is `w` (case-insensitive).
    bool next_word_is(size_t e, const char* w, size_t& end) const {
        const size_t j = spaces(e, 2);
        if (j == e) return false;
        const size_t we = alpha_end(j, kMaxWord);
        char buf[kMaxWord + 1];
        if (lower_word(j, we, buf) != w) return false;
        end = we;
        return true;
    }

    bool cue(size_t i, Match& m) const {
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
        if (w == "mr" || w == "chart" || w == "record" || w == "acct" || w == "account") {
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

        // A state abbreviation and a ZIP code: "Springfield, IL 62704".
        if (e == i + 2 && is_upper(s_[i]) && is_upper(s_[i + 1]) &&
            redact::is_state(std::string_view(reinterpret_cast<const char*>(s_ + i), 2))) {
            size_t p = i;
            while (p > 0 && s_[p - 1] == ' ') --p;
            if (p == 0 || p == i) return false;
            const unsigned char before = s_[p - 1];
            if (before != ',' && !is_alpha(before) && before < 0x80) return false;
            const size_t j = spaces(e, 2);
            return j > e && zip_digits(j, m);
        }
        return false;
    }

    // ---- addresses ---------------------------------------------------------

    // A capitalized word (letters, inner '-' or '\''), an ordinal ("5th"),
    // or a direction ("N."): its end, or 0. `suffix` tells whether it is a
    // street suffix.
    size_t street_word(size_t j, bool& suffix, bool& direction) const {
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
        while (e < n_ && e - j < kMaxWord &&
               (is_alpha(s_[e]) || ((s_[e] == '-' || s_[e] == '\'') && is_alpha(at(e + 1)))))
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
    size_t unit_designator(size_t e) const {
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
    bool address(size_t i, Match& m) const {
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
    bool zip_after_address(size_t i, Match& m) const {
        if (last_address_end == static_cast<size_t>(-1) || i < last_address_end || i - last_address_end > 3)
            return false;
        for (size_t k = last_address_end; k < i; ++k)
            if (s_[k] != ' ' && s_[k] != ',') return false;
        return zip_digits(i, m);
    }

    // ---- names -------------------------------------------------------------

    // Decodes the code point at j (valid UTF-8 assumed, bounds checked).
    std::uint32_t code_point(size_t j, size_t& len) const {
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
    static bool non_ascii_capital(std::uint32_t cp) {
        return (cp >= 0xC0 && cp <= 0xDE && cp != 0xD7) || (cp >= 0x100 && cp <= 0x24F) ||
               (cp >= 0x391 && cp <= 0x3A9) || (cp >= 0x400 && cp <= 0x42F);
    }
    // A name word at j: its end, or 0.
    size_t name_word(size_t j) const {
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
                       !(b == '\'' && (at(e + 1) == 's' || at(e + 1) == 'S') && !is_alnum(at(e + 2)) &&
                         at(e + 2) < 0x80)) {
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
    bool name(size_t i, Match& m) const {
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
};

}  // namespace

namespace {

void replace(std::string& out, const unsigned char* s, size_t& copied, const Match& m, RedactionCounts& counts) {
    out.append(reinterpret_cast<const char*>(s + copied), m.begin - copied);
    out.append(phi_placeholder(m.type));
    ++counts.by_type[static_cast<int>(m.type)];
    copied = m.end;
}

}  // namespace

RedactionCounts redact_phi(std::string_view text, std::string& out) {
    if (fault_point("redact_phi")) throw std::runtime_error("redaction failed (fault point)");
    RedactionCounts counts;
    Scanner scan(text);
    const auto* s = scan.data();
    const size_t n = scan.size();
    size_t copied = 0;  // also where the scanner goes on after an identifier
    // The first pass cannot know where an address ends, and a number up to 3
    // bytes after one may be its ZIP code: those are looked at too.
    size_t zip_from = 0, zip_to = 0;
    auto add_zip_starts = [&](size_t base, std::uint64_t& c) {
        for (size_t q = std::max(zip_from, base); q < zip_to && q < base + 64; ++q)
            if (is_digit(s[q]) && !is_alnum(s[q - 1])) c |= std::uint64_t(1) << (q - base);
    };
    redact::FirstPass first(text);
    for (size_t base = 0; base < n; base += 64) {
        std::uint64_t c = first.candidates(base);
        add_zip_starts(base, c);
        while (c) {
            const size_t i = base + static_cast<size_t>(__builtin_ctzll(c));
            c &= c - 1;
            if (i < copied || scan.plain(i)) continue;
            Match m;
            if (!scan.match(i, m)) continue;
            if (m.type == PhiType::Address) {
                scan.last_address_end = zip_from = m.end;
                zip_to = std::min(n, m.end + 4);
                add_zip_starts(base, c);
            }
            replace(out, s, copied, m, counts);
        }
    }
    out.append(reinterpret_cast<const char*>(s + copied), n - copied);
    return counts;
}

RedactionCounts redact_phi_at_every_start(std::string_view text, std::string& out) {
    RedactionCounts counts;
    Scanner scan(text);
    const auto* s = scan.data();
    const size_t n = scan.size();
    size_t i = 0, copied = 0;
    while (i < n) {
        const unsigned char c = s[i];
        const unsigned char prev = i > 0 ? s[i - 1] : ' ';
        bool start = false;
        if (is_digit(c))
            start = !is_alnum(prev);  // "№12", "–180" start numbers
        else if (is_alpha(c))
            start = !is_alnum(prev) && prev < 0x80;  // "José" is one word
        else if (c == '+' || c == '(')
            start = !is_alnum(prev) && is_digit(i + 1 < n ? s[i + 1] : 0);
        if (start) {
            if (const size_t e = scan.plain(i)) {
                i = e;
                continue;
            }
            Match m;
            if (scan.match(i, m)) {
                if (m.type == PhiType::Address) scan.last_address_end = m.end;
                replace(out, s, copied, m, counts);
                i = copied;
                continue;
            }
        }
        if (is_alnum(c)) {
            while (i < n && is_alnum(s[i])) ++i;
        } else {
            ++i;
        }
    }
    out.append(reinterpret_cast<const char*>(s + copied), n - copied);
    return counts;
}

}  // namespace training_output
