// What a processor hands to TrainingOutput::generate() in typed form: the
// fields of message_data_json and result_json.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace training_output {

// The processor's message (fields of message_data_json).
struct MessageData {
    std::string record_type;  // required
    std::optional<std::string> user_id;
    std::optional<std::string> correlation_id;
    std::optional<std::string> bucket;
    std::optional<std::string> key;
    std::optional<std::string> traceparent;  // the caller's W3C trace context, for spans (not written)
};

// The processor's result (fields of result_json).
struct ProcessingResult {
    std::optional<double> quality_score;
    std::optional<std::int64_t> record_count;
    std::optional<double> processing_time_seconds;
    // Any JSON value, written into metadata unchanged. Empty = "{}".
    std::string clinical_insights_json;
    // ISO-8601; absent = now. Its month (in UTC) picks the object.
    std::optional<std::string> processing_timestamp;
};

// Health domain of a record type, which names the objects its examples go
// to: the six known types map to their domain, anything else to "general_health".
std::string_view health_domain_for(std::string_view record_type) noexcept;

}  // namespace training_output
