// Structured log events: JSON lines on stderr by default (warnings and up), or
// every event through a process-wide callback.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string_view>

namespace training_output {

enum class LogLevel : int { Debug = 10, Info = 20, Warning = 30, Error = 40, Off = 100 };

// "debug" | "info" | "warning" (or "warn") | "error" | "off"; throws Error(Config).
LogLevel parse_log_level(std::string_view text);
const char* log_level_name(LogLevel level) noexcept;

// Receives (level, event name, the whole event as one JSON object).
using LogCallback = std::function<void(LogLevel, std::string_view event, std::string_view json)>;

// Process-wide routing: a callback replaces stderr for events >= min_level.
// An empty callback restores stderr.
void set_log_callback(LogCallback callback, LogLevel min_level);

// Tracing: a span for each generate() call, each batch that lands and each
// flush(), for a host to bridge to OpenTelemetry (the library links no
// tracing SDK). Process-wide, like the log callback.
struct Span {
    std::string_view name;  // "generate", "batch_append", "flush"
    std::chrono::system_clock::time_point start, end;
    std::string_view traceparent;      // generate: the caller's W3C traceparent (message_data.traceparent), or empty
    std::string_view attributes_json;  // one JSON object: record_type, outcome, bytes, object_key, ...
    int status = 0;                    // 0, or the TDO_E_* code it failed with
};
using SpanCallback = std::function<void(const Span&)>;
// An empty callback stops the spans. Once this returns, the callback it
// replaced is not running and will not be called again.
void set_span_callback(SpanCallback callback);

}  // namespace training_output
