// Redaction of protected health information (PHI) from clinical narratives:
// a hand-written scanner that replaces identifiers (emails, phone numbers,
// names after a title, dates, ...) by typed placeholders and leaves readings
// with units, times of day, durations and counts alone.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace training_output {

enum class PhiType : int {
    Email,
    Phone,
    Ssn,
    Url,
    Ip,
    Mrn,
    Serial,
    Name,
    Address,
    Zip,
    Date,
    HealthPlan,
    Account,
    License,
    Vehicle,
    Id,
    Age
};
constexpr int kPhiTypeCount = 17;

// "email", "phone", "ssn", "url", "ip", "mrn", "serial", "name", "address", "zip", "date",
// "health_plan", "account", "license", "vehicle", "id", "age".
const char* phi_type_name(PhiType t) noexcept;
// "[EMAIL]", "[PHONE]", "[SSN]", "[URL]", "[IP]", "[MRN]", "[SERIAL]", "[NAME]", "[ADDRESS]", "[ZIP]", "[DATE]",
// "[HEALTH_PLAN]", "[ACCOUNT]", "[LICENSE]", "[VEHICLE]", "[ID]", "[AGE]".
const char* phi_placeholder(PhiType t) noexcept;

struct RedactionCounts {
    std::array<std::uint32_t, kPhiTypeCount> by_type{};
    std::uint32_t total() const noexcept;
};

// Appends `text` (valid UTF-8) to `out` with every identifier found replaced by
// its typed placeholder. Linear time in text.size(); never reads outside
// `text`; never splits a multi-byte UTF-8 sequence; may throw std::bad_alloc
// only (and, in test builds, std::runtime_error from the "redact_phi" fault
// point). Deterministic.
RedactionCounts redact_phi(std::string_view text, std::string& out);

// The same result, from the scanner run at every word start instead of only
// where the first pass (format/redact_prefilter.hpp) leaves it to: the
// definition redact_phi() is tested against.
RedactionCounts redact_phi_at_every_start(std::string_view text, std::string& out);

}  // namespace training_output
