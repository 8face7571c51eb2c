#include "log/logger.hpp"

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

// A process-wide callback that other threads call while it may be replaced.
// Once set() returns, the callback it replaced is not running and will not be
// called again: its host may free what it uses (a ctypes thunk, user data).
template <class Fn>
class CallbackSlot {
public:
    // `while_locked` runs before the new callback is seen (settings that go with it).
    void set(Fn callback, const std::function<void()>& while_locked = {}) {
        std::lock_guard<std::mutex> lock(mutex_);
        if (callback) {
            std::atomic_store(&callback_, std::make_shared<const Fn>(std::move(callback)));
            if (while_locked) while_locked();
            active_.store(true);
        } else {
            active_.store(false);
            std::atomic_store(&callback_, std::shared_ptr<const Fn>());
        }
        while (calls_.load() != 0) std::this_thread::yield();
    }
    bool active() const noexcept { return active_.load(std::memory_order_acquire); }
    // Calls the callback; false when none is set.
    template <class... Args>
    bool call(Args&&... args) {
        if (!active()) return false;
        calls_.fetch_add(1);
        struct Done {
            std::atomic<int>& calls;
            ~Done() { calls.fetch_sub(1); }
        } done{calls_};
        auto cb = std::atomic_load(&callback_);
        if (cb && *cb) (*cb)(std::forward<Args>(args)...);
        return true;
    }

private:
    std::mutex mutex_;
    std::shared_ptr<const Fn> callback_;  // replaced, never mutated
    std::atomic<bool> active_{false};
    std::atomic<int> calls_{0};  // callbacks running
};

struct LogSlot {
    CallbackSlot<LogCallback> callback;
    std::atomic<int> min_level{static_cast<int>(LogLevel::Off)};
};

LogSlot& log_slot() {
    static LogSlot* s = new LogSlot();  // never destroyed: logs may come during exit
    return *s;
}

CallbackSlot<SpanCallback>& span_slot() {
    static auto* s = new CallbackSlot<SpanCallback>();  // never destroyed: spans may come during exit
    return *s;
}

}  // namespace

void set_span_callback(SpanCallback callback) { span_slot().set(std::move(callback)); }

bool tracing() noexcept { return span_slot().active(); }

void emit_span(const Span& span) noexcept {
    try {
        span_slot().call(span);
    } catch (...) {
        // A host's exception must not take the writer down.
    }
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
    auto& s = log_slot();
    s.callback.set(std::move(callback), [&] { s.min_level.store(static_cast<int>(min_level)); });
}

bool Logger::enabled(LogLevel level) const {
    if (level == LogLevel::Off) return false;
    auto& s = log_slot();
    if (s.callback.active()) {
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

        if (log_slot().callback.call(level, event, line)) return;
        std::string out(line);
        out.push_back('\n');
        std::fwrite(out.data(), 1, out.size(), stderr);
    } catch (...) {
        // Logging must never take the host down.
    }
}

}  // namespace training_output
