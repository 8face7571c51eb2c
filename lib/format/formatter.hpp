// TrainingDataFormatter: pure functions from a processing result to one
// training example (instruction, input, output, metadata), its health domain,
// its object key and its canonical content hash.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/time.hpp"
#include "common/utf8.hpp"
#include "config/choices.hpp"  // OutputFormat
#include "training_output/example.hpp"

namespace training_output {

// The layout of the lines (metadata.schema_version). 2: every field has one
// JSON type on every line, clinical_insights is a JSON-encoded string,
// timestamps always carry microseconds; ids may be pseudonyms, narratives
// redacted, a split and the instruction's variant recorded.
constexpr int kSchemaVersion = 2;

using Sha256 = std::array<std::uint8_t, 32>;

// One formatted example, ready to be written.
struct TrainingExample {
    std::string record_type;
    std::string correlation_id;  // as the processor sent it (for logs; empty: none)
    std::string traceparent;     // a valid W3C traceparent from message_data (for spans; empty: none)
    std::string health_domain;
    std::string object_key;        // {prefix}/{domain}/{yyyy}/{mm}/health_journal_{yyyy}_{mm}.jsonl
    std::string line;              // one JSON object followed by '\n'
    Sha256 content_hash{};         // SHA-256 of the canonical content
    std::string split;             // "train" or "validation"
    std::uint32_t redactions = 0;  // identifiers replaced in the narrative and the insights
    // Not empty: nothing to write, line is empty. One of the skip reasons:
    // empty_narrative, low_quality, no_quality_score, redaction_failed.
    std::string skip_reason;

    bool skipped() const { return !skip_reason.empty(); }
};

// Instruction and input-description templates of one record type. In `input`
// (and the instructions), {record_count} and {record_type} are replaced.
// Each example gets one of the instructions, picked from its content hash: the
// same example always gets the same phrasing.
struct Template {
    std::vector<std::string> instructions;  // at least one
    std::string input;
};

// Record type -> template; "default" is used for any type not listed.
class TemplateTable {
public:
    // The built-in table: six record types and the default.
    static TemplateTable builtin();
    // The built-in table with entries replaced from a JSON file of the form
    // {"BloodGlucoseRecord": {"instruction": "..." or ["...", "..."], "input": "..."},
    //  "default": {...}}.
    // Throws Error(Config) naming the file and the problem.
    static TemplateTable from_file_over_builtin(const std::string& path);
    static TemplateTable from_json_over_builtin(std::string_view json, const std::string& origin);

    const Template& lookup(std::string_view record_type) const;
    void set(const std::string& record_type, Template t) { table_[record_type] = std::move(t); }
    // Every entry, in a canonical text (for the configuration fingerprint).
    std::string canonical() const;

private:
    std::map<std::string, Template, std::less<>> table_;
};

// {prefix}/{domain}/{yyyy}/{mm}/health_journal_{yyyy}_{mm}.jsonl from a UTC time.
std::string object_key_for(std::string_view prefix, std::string_view domain,
                           std::chrono::system_clock::time_point when);

// SHA-256 over the canonical content: record type, input and output, each
// preceded by its length as 8 little-endian bytes. Timestamps, user and
// correlation ids are not part of it.
Sha256 content_hash(std::string_view record_type, std::string_view input, std::string_view output);
std::string to_hex(const Sha256& hash);

struct PseudonymKey;  // the pseudonymization key, ready for HMAC (formatter.cpp)

struct FormatterOptions {
    bool include_metadata = true;
    std::string prefix = "training";
    // Alpaca: {"instruction","input","output","metadata"}. Chat:
    // {"messages":[system: instruction, user: input, assistant: output],"metadata"}.
    OutputFormat format = OutputFormat::Alpaca;
    // Identifiers in the narrative (and in clinical_insights' strings) become
    // typed placeholders; an example whose redaction fails is skipped.
    bool redact_phi = true;
    // user_id, correlation_id and source_key become keyed HMAC-SHA256 values.
    bool pseudonymize_ids = false;
    std::string pseudonymization_key;     // secret: never logged
    std::string pseudonymization_key_id;  // written in metadata; empty: derived from the key
    // Examples below the threshold of their domain (else the global one) are
    // skipped; without a quality_score, too, when a threshold applies.
    std::optional<double> min_quality_score;
    std::map<std::string, double, std::less<>> min_quality_score_by_domain;
    // The share of users whose examples go to "validation" (by a hash of the user id).
    double validation_fraction = 0.0;
    bool split_objects = false;  // {prefix}/{split}/{domain}/...: one object per split
};

class TrainingDataFormatter {
public:
    explicit TrainingDataFormatter(FormatterOptions options = {}, TemplateTable templates = TemplateTable::builtin());

    // The instruction's first phrasing, or phrasing `variant` (modulo their number).
    std::string instruction_for(std::string_view record_type, std::size_t variant = 0) const;
    std::string input_for(std::string_view record_type, std::optional<std::int64_t> record_count) const;

    // Throws Error(InvalidInput) for invalid UTF-8, an empty record type, a
    // bad timestamp, a non-finite number or clinical insights that are not
    // JSON. The narrative is trimmed of surrounding whitespace; when nothing
    // is left the example comes back skipped() (the input is still checked).
    TrainingExample format(std::string_view narrative, const MessageData& message,
                           const ProcessingResult& result) const;

    // The same from the two JSON documents of the C ABI (message_data_json,
    // result_json). Throws Error(InvalidJson) when they do not parse and
    // Error(InvalidInput) for a wrong shape.
    TrainingExample format_json(std::string_view narrative, std::string_view message_data_json,
                                std::string_view result_json) const;

    const FormatterOptions& options() const { return options_; }
    const TemplateTable& templates() const { return templates_; }
    // The key id written in metadata (empty unless ids are pseudonymized).
    const std::string& key_id() const { return key_id_; }
    // A fingerprint (16 hex digits) of everything that shapes the lines: the
    // schema version, these options (not the key, its id), the templates.
    const std::string& fingerprint() const { return fingerprint_; }
    // The pseudonym of `value` in field `field` ("user_id", ...): 32 hex digits.
    std::string pseudonym(std::string_view field, std::string_view value) const;

private:
    FormatterOptions options_;
    TemplateTable templates_;
    std::string key_id_;
    std::string fingerprint_;
    std::shared_ptr<const PseudonymKey> key_;  // the HMAC key, set up once
};

// "train" or "validation" for a user id (or, without one, the content hash's
// hex): the same id always gets the same split.
const char* split_for(std::string_view id, double validation_fraction);

// True when `text` is a W3C trace context traceparent ("00-<32 hex>-<16 hex>-<2 hex>").
bool is_traceparent(std::string_view text) noexcept;

}  // namespace training_output
