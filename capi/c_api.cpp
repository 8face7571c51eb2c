// The C ABI: every entry point is wrapped so that no C++ exception crosses it;
// errors become a status code and a thread-local message.
#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <string>

#include "common/utf8.hpp"
#include "common/version.hpp"
#include "training_output.h"
#include "training_output/error.hpp"
#include "training_output/log.hpp"
#include "training_output/training_output.hpp"

using training_output::Config;
using training_output::Error;
using training_output::ErrorCode;
using training_output::LogLevel;
using training_output::Outcome;
using training_output::TrainingOutput;

// The codes are defined once, in training_output.h; the C++ enums must say the same.
static_assert(static_cast<int>(ErrorCode::InvalidArgument) == TDO_E_INVALID_ARGUMENT, "status codes");
static_assert(static_cast<int>(ErrorCode::InvalidJson) == TDO_E_INVALID_JSON, "status codes");
static_assert(static_cast<int>(ErrorCode::InvalidInput) == TDO_E_INVALID_INPUT, "status codes");
static_assert(static_cast<int>(ErrorCode::Config) == TDO_E_CONFIG, "status codes");
static_assert(static_cast<int>(ErrorCode::Storage) == TDO_E_STORAGE, "status codes");
static_assert(static_cast<int>(ErrorCode::DedupStore) == TDO_E_DEDUP_STORE, "status codes");
static_assert(static_cast<int>(ErrorCode::Backpressure) == TDO_E_BACKPRESSURE, "status codes");
static_assert(static_cast<int>(ErrorCode::Timeout) == TDO_E_TIMEOUT, "status codes");
static_assert(static_cast<int>(ErrorCode::Auth) == TDO_E_AUTH, "status codes");
static_assert(static_cast<int>(ErrorCode::Closed) == TDO_E_CLOSED, "status codes");
static_assert(static_cast<int>(ErrorCode::NoMemory) == TDO_E_NOMEM, "status codes");
static_assert(static_cast<int>(ErrorCode::Forked) == TDO_E_FORKED, "status codes");
static_assert(static_cast<int>(ErrorCode::Internal) == TDO_E_INTERNAL, "status codes");
static_assert(static_cast<int>(Outcome::Written) == TDO_WRITTEN, "outcomes");
static_assert(static_cast<int>(Outcome::Duplicate) == TDO_DUPLICATE, "outcomes");
static_assert(static_cast<int>(Outcome::Skipped) == TDO_SKIPPED, "outcomes");
static_assert(static_cast<int>(Outcome::Disabled) == TDO_DISABLED, "outcomes");
static_assert(static_cast<int>(Outcome::Pending) == TDO_PENDING, "outcomes");
static_assert(static_cast<int>(LogLevel::Debug) == TDO_LOG_DEBUG, "log levels");
static_assert(static_cast<int>(LogLevel::Info) == TDO_LOG_INFO, "log levels");
static_assert(static_cast<int>(LogLevel::Warning) == TDO_LOG_WARNING, "log levels");
static_assert(static_cast<int>(LogLevel::Error) == TDO_LOG_ERROR, "log levels");
static_assert(static_cast<int>(LogLevel::Off) == TDO_LOG_OFF, "log levels");

struct tdo_writer {
    std::unique_ptr<TrainingOutput> impl;
};

namespace {

thread_local std::string t_last_error;

int fail(int code, const char* message) {
    try {
        // Always valid UTF-8, whatever a server or an input put in it.
        t_last_error = training_output::to_valid_utf8(message);
    } catch (...) {
        // Keep whatever was there; the code still tells the caller.
    }
    return code;
}

// The process-wide writer (TDO_DEFAULT_WRITER): opened from the environment
// on first use. Each call holds a reference for its duration, so that
// tdo_shutdown() from another thread closes it (calls in progress finish
// first, later ones on it get TDO_E_CLOSED) without freeing it under them.
std::mutex g_default_mutex;
std::shared_ptr<TrainingOutput> g_default;
bool g_atexit_registered = false;

// Takes the process-wide writer out (the calls that hold it keep it alive).
std::shared_ptr<TrainingOutput> take_default() {
    std::shared_ptr<TrainingOutput> w;
    std::lock_guard<std::mutex> lock(g_default_mutex);
    w.swap(g_default);
    return w;
}

// At exit the main thread's thread_locals (the last error) are gone already:
// this closes without reporting.
void shutdown_at_exit() {
    if (auto w = take_default()) {
        try {
            w->close();
        } catch (...) {
            // Undelivered lines stay in the spool; the next run delivers them.
        }
    }
}

// The writer a call is for, kept alive for the call.
struct Target {
    std::shared_ptr<TrainingOutput> keep;  // the process-wide writer's reference
    TrainingOutput* writer = nullptr;
};

Target target(tdo_writer* writer, const char* function) {
    if (!writer) {
        throw Error(ErrorCode::InvalidArgument,
                    std::string(function) +
                        ": writer is NULL (did tdo_writer_open fail? TDO_DEFAULT_WRITER is the "
                        "process-wide writer)");
    }
    Target t;
    if (writer == TDO_DEFAULT_WRITER) {
        std::lock_guard<std::mutex> lock(g_default_mutex);
        if (!g_default) {
            g_default = std::make_shared<TrainingOutput>(Config::from_environment());
            if (!g_atexit_registered) {
                g_atexit_registered = true;
                std::atexit(shutdown_at_exit);
            }
        }
        t.keep = g_default;
        t.writer = t.keep.get();
    } else {
        t.writer = writer->impl.get();
    }
    return t;
}

// close() as a status: what stayed in the spool is in the message.
int close_status(TrainingOutput& writer) {
    try {
        writer.close();
        return TDO_OK;
    } catch (const Error& e) {
        return fail(static_cast<int>(e.code()), e.what());
    } catch (const std::bad_alloc&) {
        return fail(TDO_E_NOMEM, "out of memory while closing");
    } catch (const std::exception& e) {
        return fail(TDO_E_STORAGE, e.what());
    } catch (...) {
        return fail(TDO_E_INTERNAL, "unknown internal error while closing");
    }
}

// A copy the caller frees with tdo_free().
char* copy_out(const std::string& text) {
    char* copy = static_cast<char*>(std::malloc(text.size() + 1));
    if (!copy) throw std::bad_alloc();
    std::memcpy(copy, text.c_str(), text.size() + 1);
    return copy;
}

training_output::DeliveryCallback delivery_bridge(tdo_delivery_callback callback, void* user_data) {
    if (!callback) return {};
    return [callback, user_data](const training_output::Delivery& d) {
        tdo_delivery c{};
        c.struct_size = sizeof c;
        c.object_key = d.object_key.c_str();
        c.lines = d.lines;
        c.bytes = d.bytes;
        c.object_size = d.object_size;
        c.manifest_version = d.manifest_version;
        callback(&c, user_data);
    };
}

}  // namespace

#define TDO_TRY           \
    t_last_error.clear(); \
    try {
#define TDO_CATCH                                              \
    }                                                          \
    catch (const Error& e) {                                   \
        return fail(static_cast<int>(e.code()), e.what());     \
    }                                                          \
    catch (const std::bad_alloc&) {                            \
        return fail(TDO_E_NOMEM, "out of memory");             \
    }                                                          \
    catch (const std::exception& e) {                          \
        return fail(TDO_E_INTERNAL, e.what());                 \
    }                                                          \
    catch (...) {                                              \
        return fail(TDO_E_INTERNAL, "unknown internal error"); \
    }

extern "C" {

int tdo_version_number(void) { return TDO_VERSION_NUMBER; }

const char* tdo_version_string(void) { return training_output::library_version(); }

int tdo_writer_open(tdo_writer** out, const char* config_json) { return tdo_writer_open_ex(out, config_json, nullptr); }

int tdo_writer_open_ex(tdo_writer** out, const char* config_json, const tdo_open_options* options) {
    TDO_TRY
    if (!out) return fail(TDO_E_INVALID_ARGUMENT, "tdo_writer_open: out is NULL");
    *out = nullptr;
    // Fields the caller's version of the struct has (later ones are zero).
    tdo_open_options o{};
    if (options) {
        if (options->struct_size < offsetof(tdo_open_options, on_delivery)) {
            return fail(TDO_E_INVALID_ARGUMENT, "tdo_writer_open_ex: options->struct_size is not set");
        }
        std::memcpy(&o, options, std::min(sizeof o, options->struct_size));
    }
    Config config = config_json ? Config::from_json(config_json) : Config::from_environment();
    training_output::WriterComponents parts;
    parts.on_delivery = delivery_bridge(o.on_delivery, o.delivery_user_data);
    auto writer = std::make_unique<tdo_writer>();
    writer->impl = std::make_unique<TrainingOutput>(std::move(config), std::move(parts));
    *out = writer.release();
    return TDO_OK;
    TDO_CATCH
}

int generate_training_output(tdo_writer* writer, const char* narrative, const char* message_data_json,
                             const char* result_json) {
    TDO_TRY
    if (!narrative) return fail(TDO_E_INVALID_ARGUMENT, "generate_training_output: narrative is NULL");
    if (!message_data_json) {
        return fail(TDO_E_INVALID_ARGUMENT, "generate_training_output: message_data_json is NULL");
    }
    const Target t = target(writer, "generate_training_output");
    return static_cast<int>(
        t.writer->generate(narrative, message_data_json, result_json ? std::string_view(result_json) : "{}"));
    TDO_CATCH
}

int tdo_writer_flush(tdo_writer* writer) {
    TDO_TRY
    const Target t = target(writer, "tdo_writer_flush");
    t.writer->flush();
    return TDO_OK;
    TDO_CATCH
}

int tdo_writer_close(tdo_writer* writer) {
    t_last_error.clear();
    if (!writer) return TDO_OK;
    if (writer == TDO_DEFAULT_WRITER) return tdo_shutdown();
    const int status = close_status(*writer->impl);
    delete writer;
    return status;
}

int tdo_drain(const char* config_json, char** out_report_json) {
    TDO_TRY
    if (out_report_json) *out_report_json = nullptr;
    Config config = config_json ? Config::from_json(config_json) : Config::from_environment();
    const training_output::DrainReport r = TrainingOutput::drain(std::move(config));
    if (out_report_json) {
        *out_report_json = copy_out("{\"spools_adopted\":" + std::to_string(r.spools_adopted) +
                                    ",\"lines_recovered\":" + std::to_string(r.lines_recovered) +
                                    ",\"lines_appended\":" + std::to_string(r.lines_appended) +
                                    ",\"lines_voided\":" + std::to_string(r.lines_voided) +
                                    ",\"lines_found_landed\":" + std::to_string(r.lines_found_landed) + "}");
    }
    return TDO_OK;
    TDO_CATCH
}

int tdo_config_describe(char** out_json) {
    TDO_TRY
    if (!out_json) return fail(TDO_E_INVALID_ARGUMENT, "tdo_config_describe: out_json is NULL");
    *out_json = nullptr;
    *out_json = copy_out(Config::describe());
    return TDO_OK;
    TDO_CATCH
}

int tdo_writer_stats(tdo_writer* writer, char** out_json) {
    TDO_TRY
    if (!out_json) return fail(TDO_E_INVALID_ARGUMENT, "tdo_writer_stats: out_json is NULL");
    *out_json = nullptr;
    const Target t = target(writer, "tdo_writer_stats");
    *out_json = copy_out(t.writer->stats_json());
    return TDO_OK;
    TDO_CATCH
}

int tdo_writer_metrics(tdo_writer* writer, char** out_text) {
    TDO_TRY
    if (!out_text) return fail(TDO_E_INVALID_ARGUMENT, "tdo_writer_metrics: out_text is NULL");
    *out_text = nullptr;
    const Target t = target(writer, "tdo_writer_metrics");
    *out_text = copy_out(t.writer->metrics_text());
    return TDO_OK;
    TDO_CATCH
}

const char* tdo_last_skip_reason(void) { return TrainingOutput::last_skip_reason(); }

int tdo_writer_set_delivery_callback(tdo_writer* writer, tdo_delivery_callback callback, void* user_data) {
    TDO_TRY
    const Target t = target(writer, "tdo_writer_set_delivery_callback");
    t.writer->set_delivery_callback(delivery_bridge(callback, user_data));
    return TDO_OK;
    TDO_CATCH
}

int tdo_shutdown(void) {
    t_last_error.clear();
    const std::shared_ptr<TrainingOutput> w = take_default();
    if (!w) return TDO_OK;
    // Waits for the calls in progress; the last reference frees it.
    return close_status(*w);
}

const char* tdo_last_error(void) { return t_last_error.c_str(); }

const char* tdo_status_name(int status) {
    switch (status) {
        case TDO_WRITTEN: return "TDO_WRITTEN";
        case TDO_DUPLICATE: return "TDO_DUPLICATE";
        case TDO_SKIPPED: return "TDO_SKIPPED";
        case TDO_DISABLED: return "TDO_DISABLED";
        case TDO_PENDING: return "TDO_PENDING";
        default:
            if (status < 0) return training_output::error_code_name(static_cast<ErrorCode>(status));
            return "TDO_UNKNOWN";
    }
}

void tdo_free(void* ptr) { std::free(ptr); }

int tdo_set_span_callback(tdo_span_callback callback, void* user_data) {
    TDO_TRY
    if (!callback) {
        training_output::set_span_callback({});
        return TDO_OK;
    }
    training_output::set_span_callback([callback, user_data](const training_output::Span& s) {
        auto nanos = [](std::chrono::system_clock::time_point t) {
            return static_cast<long long>(
                std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count());
        };
        const std::string name(s.name), traceparent(s.traceparent), attributes(s.attributes_json);
        tdo_span c{};
        c.struct_size = sizeof c;
        c.name = name.c_str();
        c.start_unix_nanos = nanos(s.start);
        c.end_unix_nanos = nanos(s.end);
        c.traceparent = traceparent.empty() ? nullptr : traceparent.c_str();
        c.attributes_json = attributes.c_str();
        c.status = s.status;
        callback(&c, user_data);
    });
    return TDO_OK;
    TDO_CATCH
}

int tdo_set_log_callback(tdo_log_callback callback, int min_level, void* user_data) {
    TDO_TRY
    if (!callback) {
        training_output::set_log_callback({}, LogLevel::Off);
        return TDO_OK;
    }
    training_output::set_log_callback(
        [callback, user_data](LogLevel level, std::string_view event, std::string_view json) {
            // Both views end where NUL-terminated copies are needed.
            std::string e(event), j(json);
            callback(static_cast<int>(level), e.c_str(), j.c_str(), user_data);
        },
        static_cast<LogLevel>(min_level));
    return TDO_OK;
    TDO_CATCH
}

}  // extern "C"
