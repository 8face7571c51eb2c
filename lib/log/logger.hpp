// The library's own side of logging and tracing: the events its components
// log (Logger, LogField) and the spans they emit. Hosts route both through the
// callbacks of training_output/log.hpp.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <variant>

#include "training_output/log.hpp"

namespace training_output {

// One field of an event. Strings are escaped; never put secrets in a field.
struct LogField {
    using Value = std::variant<std::string_view, std::int64_t, double, bool>;
    std::string_view name;
    Value value;
    LogField(std::string_view n, std::string_view v) : name(n), value(v) {}
    LogField(std::string_view n, const std::string& v) : name(n), value(std::string_view(v)) {}
    LogField(std::string_view n, const char* v) : name(n), value(std::string_view(v)) {}
    LogField(std::string_view n, std::int64_t v) : name(n), value(v) {}
    LogField(std::string_view n, int v) : name(n), value(static_cast<std::int64_t>(v)) {}
    LogField(std::string_view n, std::uint64_t v) : name(n), value(static_cast<std::int64_t>(v)) {}
    LogField(std::string_view n, double v) : name(n), value(v) {}
    LogField(std::string_view n, bool v) : name(n), value(v) {}
};

// A span callback is set (cheap: check before building a span).
bool tracing() noexcept;
void emit_span(const Span& span) noexcept;

// A writer's logger: its own stderr threshold, the process-wide callback.
class Logger {
public:
    explicit Logger(LogLevel stderr_level = LogLevel::Warning) : stderr_level_(stderr_level) {}
    void set_level(LogLevel level) { stderr_level_ = level; }
    LogLevel level() const { return stderr_level_; }

    // True when an event at `level` would go anywhere (cheap; check before
    // building expensive fields).
    bool enabled(LogLevel level) const;
    void log(LogLevel level, std::string_view event, std::initializer_list<LogField> fields) const;

private:
    LogLevel stderr_level_;
};

}  // namespace training_output
