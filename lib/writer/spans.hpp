// The writer's spans: a generate() call's, a flush's and a landed batch's
// (emitted only while a span callback is set).
#pragma once

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "log/logger.hpp"
#include "training_output/error.hpp"
#include "training_output/training_output.hpp"

namespace training_output {

// What a generate() span says of its example (filled while tracing).
struct GenerateSpan {
    std::string record_type, health_domain, traceparent, skip_reason;
    std::uint64_t bytes = 0;
};
extern thread_local GenerateSpan t_span;

// A span's attributes: one JSON object.
class Attributes {
public:
    Attributes() : w_(buffer_) { w_.StartObject(); }
    Attributes& add(const char* key, std::string_view value) {
        if (value.empty()) return *this;
        w_.Key(key);
        w_.String(value.data(), static_cast<rapidjson::SizeType>(value.size()));
        return *this;
    }
    Attributes& add(const char* key, std::int64_t value) {
        w_.Key(key);
        w_.Int64(value);
        return *this;
    }
    std::string_view done() {
        w_.EndObject();
        return {buffer_.GetString(), buffer_.GetSize()};
    }

private:
    rapidjson::StringBuffer buffer_;
    rapidjson::Writer<rapidjson::StringBuffer> w_;
};

void emit(const char* name, std::chrono::system_clock::time_point start, std::chrono::nanoseconds took,
          std::string_view traceparent, Attributes& attributes, int status);
void emit_generate(std::chrono::system_clock::time_point start, std::chrono::nanoseconds took, const char* outcome,
                   int status);

// Times a generate() call, counts the error it ends in, if any, and makes
// its span when tracing.
template <class Impl, class Fn>
Outcome timed(Impl& impl, Fn&& fn) {
    const bool traced = tracing();
    const auto wall = traced ? std::chrono::system_clock::now() : std::chrono::system_clock::time_point{};
    if (traced) t_span = GenerateSpan{};
    const auto t0 = std::chrono::steady_clock::now();
    try {
        const Outcome o = fn();
        const auto took = std::chrono::steady_clock::now() - t0;
        impl.metrics.call(took);
        if (traced) emit_generate(wall, took, outcome_name(o), 0);
        return o;
    } catch (const Error& e) {
        const auto took = std::chrono::steady_clock::now() - t0;
        impl.metrics.call(took);
        impl.metrics.error(e.code());
        if (traced) emit_generate(wall, took, "error", static_cast<int>(e.code()));
        throw;
    }
}

}  // namespace training_output
