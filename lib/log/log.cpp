#include "training_output/log.hpp"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>
#include <mutex>
#include <thread>

#include "common/json.hpp"
#include "common/time.hpp"
#include "common/utf8.hpp"
#include "training_output/error.hpp"

namespace training_output {
namespace {

struct CallbackSlot {
    std::mutex mutex;
    std::shared_ptr<const LogCallback> callback;  // replaced, never mutated
    std::atomic<int> min_level{static_cast<int>(LogLevel::Off)};
    std::atomic<bool> active{false};
    std::atomic<int> calls{0};  // callbacks running
};

CallbackSlot& slot() {
    static CallbackSlot* s = new CallbackSlot();  // never destroyed: logs may come during exit
    return *s;
}

struct SpanSlot {
    std::mutex mutex;
    std::shared_ptr<const SpanCallback> callback;
    std::atomic<bool> active{false};
    std::atomic<int> calls{0};
};

SpanSlot& span_slot() {
    static SpanSlot* s = new SpanSlot();  // never destroyed: spans may come during exit
    return *s;
}

}  // namespace

void set_span_callback(SpanCallback callback) {
    auto& s = span_slot();
    std::lock_guard<std::mutex> lock(s.mutex);
    if (callback) {
        std::atomic_store(&s.callback, std::make_shared<const SpanCallback>(std::move(callback)));
        s.active.store(true);
    } else {
        s.active.store(false);
        std::atomic_store(&s.callback, std::shared_ptr<const SpanCallback>());
    }
    while (s.calls.load() != 0) std::this_thread::yield();
}

bool tracing() noexcept { return span_slot().active.load(std::memory_order_acquire); }

void emit_span(const Span& span) noexcept {
    auto& s = span_slot();
    if (!s.active.load(std::memory_order_acquire)) return;
    s.calls.fetch_add(1);
    try {
        auto cb = std::atomic_load(&s.callback);
        if (cb && *cb) (*cb)(span);
    } catch (...) {
        // A host's exception must not take the writer down.
    }
    s.calls.fetch_sub(1);
}

LogLevel parse_log_level(std::string_view text) {
    if (text == "debug") return LogLevel::Debug;
    if (text == "info") return LogLevel::Info;
    if (text == "warning" || text == "warn") return LogLevel::Warning;
    if (text == "error") return LogLevel::Error;
    if (text == "off" || text == "none") return LogLevel::Off;
    throw Error(ErrorCode::Config, "log_level: expected debug, info, warning, error or off, got " + json::quote(text));
}

const char* log_level_name(LogLevel level) noexcept {
    switch (level) {
        case LogLevel::Debug: return "debug";
        case LogLevel::Info: return "info";
        case LogLevel::Warning: return "warning";
        case LogLevel::Error: return "error";
        case LogLevel::Off: return "off";
    }
    return "unknown";
}

void set_log_callback(LogCallback callback, LogLevel min_level) {
    auto& s = slot();
    std::lock_guard<std::mutex> lock(s.mutex);
    if (callback) {
        std::atomic_store(&s.callback, std::make_shared<const LogCallback>(std::move(callback)));
        s.min_level.store(static_cast<int>(min_level));
        s.active.store(true);
    } else {
        s.active.store(false);
        std::atomic_store(&s.callback, std::shared_ptr<const LogCallback>());
    }
    // Once this returns, the callback it replaced is not running and will not
    // be called again: its host may free what it uses (a ctypes thunk, user data).
    while (s.calls.load() != 0) std::this_thread::yield();
}

bool Logger::enabled(LogLevel level) const {
    if (level == LogLevel::Off) return false;
    auto& s = slot();
    if (s.active.load(std::memory_order_acquire)) {
        return static_cast<int>(level) >= s.min_level.load(std::memory_order_relaxed);
    }
    return static_cast<int>(level) >= static_cast<int>(stderr_level_);
}

void Logger::log(LogLevel level, std::string_view event, std::initializer_list<LogField> fields) const {
    if (!enabled(level)) return;
    try {
        rapidjson::StringBuffer buffer;
        rapidjson::Writer<rapidjson::StringBuffer> w(buffer);
        w.StartObject();
        w.Key("ts");
        std::string ts = format_iso8601(std::chrono::system_clock::now());
        w.String(ts.data(), static_cast<rapidjson::SizeType>(ts.size()));
        w.Key("level");
        w.String(log_level_name(level));
        w.Key("logger");
        w.String("training_output");
        w.Key("event");
        w.String(event.data(), static_cast<rapidjson::SizeType>(event.size()));
        for (const auto& f : fields) {
            w.Key(f.name.data(), static_cast<rapidjson::SizeType>(f.name.size()));
            if (auto* s = std::get_if<std::string_view>(&f.value)) {
                // Invalid UTF-8 in a field must not make the line invalid.
                if (is_valid_utf8(*s)) {
                    w.String(s->data(), static_cast<rapidjson::SizeType>(s->size()));
                } else {
                    w.String("<invalid UTF-8>");
                }
            } else if (auto* i = std::get_if<std::int64_t>(&f.value)) {
                w.Int64(*i);
            } else if (auto* d = std::get_if<double>(&f.value)) {
                if (!w.Double(*d)) w.Null();
            } else if (auto* b = std::get_if<bool>(&f.value)) {
                w.Bool(*b);
            }
        }
        w.EndObject();
        std::string_view line(buffer.GetString(), buffer.GetSize());

        auto& s = slot();
        if (s.active.load(std::memory_order_acquire)) {
            s.calls.fetch_add(1);
            struct Done {
                std::atomic<int>& calls;
                ~Done() { calls.fetch_sub(1); }
            } done{s.calls};
            auto cb = std::atomic_load(&s.callback);
            if (cb && *cb) (*cb)(level, event, line);
            return;
        }
        std::string out(line);
        out.push_back('\n');
        std::fwrite(out.data(), 1, out.size(), stderr);
    } catch (...) {
        // Logging must never take the host down.
    }
}

}  // namespace training_output
