// PHI redaction: one pass over the text (or its fold, fold.hpp, where it
// holds Unicode separators, invisible characters or digits of other scripts).
// At each word start a few small matchers, each with a bounded look-ahead (or
// a memo that makes its scan of a run happen once), decide whether an
// identifier starts there; otherwise the word is copied as it is. Placeholders
// only ever replace spans that begin and end on whole characters, so UTF-8
// sequences are never cut.
#include "redact/redact.hpp"

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <iterator>
#include <stdexcept>

#include "common/crash_point.hpp"
#include "redact/first_pass.hpp"
#include "redact/fold.hpp"
#include "redact/scanner.hpp"

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
        case PhiType::HealthPlan: return "health_plan";
        case PhiType::Account: return "account";
        case PhiType::License: return "license";
        case PhiType::Vehicle: return "vehicle";
        case PhiType::Id: return "id";
        case PhiType::Age: return "age";
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
        case PhiType::HealthPlan: return "[HEALTH_PLAN]";
        case PhiType::Account: return "[ACCOUNT]";
        case PhiType::License: return "[LICENSE]";
        case PhiType::Vehicle: return "[VEHICLE]";
        case PhiType::Id: return "[ID]";
        case PhiType::Age: return "[AGE]";
    }
    return "[PHI]";
}

std::uint32_t RedactionCounts::total() const noexcept {
    std::uint32_t sum = 0;
    for (auto c : by_type) sum += c;
    return sum;
}

namespace {

using redact::is_alnum;
using redact::is_alpha;
using redact::is_digit;
using redact::Match;
using std::size_t;

// The identifiers of `text`, in order and apart, each passed to `on`: the
// scanner at the word starts the first pass leaves to it.
template <class OnMatch>
void scan_candidates(std::string_view text, OnMatch&& on) {
    redact::Scanner scan(text);
    const auto* s = scan.data();
    const size_t n = scan.size();
    size_t resume = 0;  // where the scanner goes on after an identifier
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
            if (i < resume || scan.plain(i)) continue;
            Match m;
            if (!scan.match(i, m)) continue;
            if (m.type == PhiType::Address) {
                scan.last_address_end = zip_from = m.end;
                zip_to = std::min(n, m.end + 4);
                add_zip_starts(base, c);
            }
            resume = m.end;
            on(m);
        }
    }
}

// The same, from the scanner run at every word start.
template <class OnMatch>
void scan_every_start(std::string_view text, OnMatch&& on) {
    redact::Scanner scan(text);
    const auto* s = scan.data();
    const size_t n = scan.size();
    size_t i = 0;
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
                i = m.end;
                on(m);
                continue;
            }
        }
        if (is_alnum(c)) {
            while (i < n && is_alnum(s[i])) ++i;
        } else {
            ++i;
        }
    }
}

// `text` appended to `out` with each identifier that `scan` finds replaced.
// The scan reads the text's fold (fold.hpp) where it has one: its
// identifiers are replaced in the text itself, every other byte kept.
template <class Scan>
RedactionCounts redact_with(std::string_view text, std::string& out, Scan&& scan) {
    RedactionCounts counts;
    size_t copied = 0;
    auto replace = [&](size_t begin, size_t end, PhiType type) {
        out.append(text.data() + copied, begin - copied);
        out.append(phi_placeholder(type));
        ++counts.by_type[static_cast<int>(type)];
        copied = end;
    };
    if (redact::needs_fold(text)) {
        redact::Folded folded;  // the rare text: built for it alone
        folded.fold(text);
        scan(folded.text(), [&](const Match& m) { replace(folded.from(m.begin), folded.to(m.begin, m.end), m.type); });
    } else {
        scan(text, [&](const Match& m) { replace(m.begin, m.end, m.type); });
    }
    out.append(text.data() + copied, text.size() - copied);
    return counts;
}

}  // namespace

RedactionCounts redact_phi(std::string_view text, std::string& out) {
    if (fault_point("redact_phi")) throw std::runtime_error("redaction failed (fault point)");
    return redact_with(text, out, [](std::string_view t, auto&& on) { scan_candidates(t, on); });
}

RedactionCounts redact_phi_at_every_start(std::string_view text, std::string& out) {
    return redact_with(text, out, [](std::string_view t, auto&& on) { scan_every_start(t, on); });
}

}  // namespace training_output
