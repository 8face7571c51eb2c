// Identifiers after a cue word that Safe Harbor names beside medical record
// numbers: health plan beneficiary numbers ("member ID W123456789"),
// account numbers ("acct #00123"), certificate and license numbers
// ("license no. D1234567", "DEA AB1234563"), vehicle identifiers
// ("VIN 1HGCM82633A004352", "license plate 7XYZ123"), other identifying
// numbers after an id-like cue ("ID: AB-12345", "claim number 889123"), and
// ages over 89 ("aged 92": Safe Harbor keeps ages up to 89 only).
#include "redact/scanner.hpp"

namespace training_output::redact {

// `w` is the lowercased word [i, e) that cue() looked at.
bool Scanner::id_cue(size_t i, size_t e, std::string_view w, Match& m) const {
    if (!is_cue(w)) return false;  // most words that get here: one look at the cue index
    bool marker = false;
    size_t next = 0;
    // The value after the cue word ending at `from` (and what may stand between).
    auto value_after = [&](size_t from, PhiType type) {
        const size_t k = filler(from, marker);
        return k > from && id_after(k, type, m);
    };
    // The cue, then "id" or a marker (':', '#', "number", "no.", ...) before the value.
    auto after_marker = [&](size_t from, PhiType type, bool id_word_counts) {
        const bool id_word = id_word_counts && next_word_is(from, "id", next);
        return value_after(id_word ? next : from, type) && (marker || id_word);  // filler() sets marker
    };
    if (w == "member" || w == "subscriber" || w == "beneficiary" || w == "policy" || w == "medicaid" ||
        w == "medicare" || w == "insurance") {
        return after_marker(e, PhiType::HealthPlan, true);
    }
    if (w == "acct" || w == "account") return after_marker(at(e) == '.' ? e + 1 : e, PhiType::Account, true);
    if (w == "license" || w == "licence") {
        if (next_word_is(e, "plate", next)) return value_after(next, PhiType::Vehicle);  // "license plate 7XYZ123"
        return after_marker(e, PhiType::License, true);
    }
    if (w == "certificate") return after_marker(e, PhiType::License, true);
    if (w == "dea" || w == "npi") {  // a prescriber's registration: "DEA AB1234563", "NPI 1234567890"
        return is_upper(s_[i]) && value_after(e, PhiType::License);
    }
    if (w == "vin" || w == "plate") {
        return (w == "plate" || is_upper(s_[i])) && value_after(e, PhiType::Vehicle);
    }
    if (w == "id" || w == "identifier") {
        return (w == "identifier" || is_upper(s_[i])) && value_after(e, PhiType::Id);  // "id" is a word
    }
    if (w == "case" || w == "claim" || w == "reference" || w == "ref" || w == "confirmation" || w == "ticket") {
        // Five bytes or more: "reference: 145" is a reading.
        return after_marker(at(e) == '.' ? e + 1 : e, PhiType::Id, false) && m.end - m.begin >= 5;
    }
    if (w == "aged" || w == "age") {  // "aged 92", "age: 95", "age of 91 years"
        size_t j = e;
        if (w == "age" && next_word_is(e, "of", next)) j = next;
        const size_t k = filler(j, marker);
        const size_t d = digits(k, 3);
        if (k == j || d < 2 || d > 3 || number(k, d) < 90 || !number_boundary(k + d)) return false;
        // A unit after it other than years ("aged 95 days") is no age in years.
        size_t unit_end = 0;
        if (followed_by_unit(k + d) && !next_word_is(k + d, "years", unit_end) &&
            !next_word_is(k + d, "year", unit_end)) {
            return false;
        }
        m = {k, k + d, PhiType::Age};
        return true;
    }
    return false;
}

}  // namespace training_output::redact
