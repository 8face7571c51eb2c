// The C ABI: every entry point is wrapped so that no C++ exception crosses it;
// errors become a status code and a thread-local message.
#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <string>

#include "training_output.h"
#include "training_output/formatter.hpp"
#include "training_output/training_output.hpp"

using training_output::Config;
using training_output::Error;
using training_output::ErrorCode;
using training_output::TrainingOutput;

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

std::mutex g_default_mutex;
tdo_writer* g_default = nullptr;
bool g_atexit_registered = false;

}  // namespace

#define TDO_TRY      \
    t_last_error.clear(); \
    try {
#define TDO_CATCH                                                           \
    }                                                                       \
    catch (const Error& e) {                                                \
        return fail(static_cast<int>(e.code()), e.what());                  \
    }                                                                       \
    catch (const std::bad_alloc&) {                                         \
        return fail(TDO_E_NOMEM, "out of memory");                          \
    }                                                                       \
    catch (const std::exception& e) {                                       \
        return fail(TDO_E_INTERNAL, e.what());                              \
    }                                                                       \
    catch (...) {                                                           \
        return fail(TDO_E_INTERNAL, "unknown internal error");              \
    }

namespace {

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

extern "C" {

int tdo_version_number(void) { return TDO_VERSION_NUMBER; }

const char* tdo_version_string(void) {
#define TDO_STR2(x) #x
#define TDO_STR(x) TDO_STR2(x)
    return TDO_STR(TDO_VERSION_MAJOR) "." TDO_STR(TDO_VERSION_MINOR) "." TDO_STR(TDO_VERSION_PATCH);
#undef TDO_STR
#undef TDO_STR2
}


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
    if (!writer) {
        std::lock_guard<std::mutex> lock(g_default_mutex);
        if (!g_default) {
            auto w = std::make_unique<tdo_writer>();
            w->impl = std::make_unique<TrainingOutput>(Config::from_environment());
            g_default = w.release();
            if (!g_atexit_registered) {
                g_atexit_registered = true;
                std::atexit(tdo_shutdown);
            }
        }
        writer = g_default;
    }
    return static_cast<int>(
        writer->impl->generate(narrative, message_data_json, result_json ? std::string_view(result_json) : "{}"));
    TDO_CATCH
}

int tdo_writer_flush(tdo_writer* writer) {
    TDO_TRY
    if (!writer) return fail(TDO_E_INVALID_ARGUMENT, "tdo_writer_flush: writer is NULL");
    writer->impl->flush();
    return TDO_OK;
    TDO_CATCH
}

void tdo_writer_close(tdo_writer* writer) {
    if (!writer) return;
    try {
        writer->impl->close();
    } catch (const training_output::Error& e) {
        // Lines that are not delivered stay in the spool for the next writer.
        fail(static_cast<int>(e.code()), e.what());
    } catch (const std::exception& e) {
        fail(TDO_E_STORAGE, e.what());
    } catch (...) {
        fail(TDO_E_INTERNAL, "unknown internal error while closing");
    }
    delete writer;
}

int tdo_writer_stats(tdo_writer* writer, char** out_json) {
    TDO_TRY
    if (!out_json) return fail(TDO_E_INVALID_ARGUMENT, "tdo_writer_stats: out_json is NULL");
    *out_json = nullptr;
    if (!writer) return fail(TDO_E_INVALID_ARGUMENT, "tdo_writer_stats: writer is NULL");
    std::string json = writer->impl->stats_json();
    char* copy = static_cast<char*>(std::malloc(json.size() + 1));
    if (!copy) return fail(TDO_E_NOMEM, "out of memory");
    std::memcpy(copy, json.c_str(), json.size() + 1);
    *out_json = copy;
    return TDO_OK;
    TDO_CATCH
}

const char* tdo_last_skip_reason(void) { return TrainingOutput::last_skip_reason(); }

int tdo_writer_set_delivery_callback(tdo_writer* writer, tdo_delivery_callback callback, void* user_data) {
    TDO_TRY
    if (!writer) return fail(TDO_E_INVALID_ARGUMENT, "tdo_writer_set_delivery_callback: writer is NULL");
    writer->impl->set_delivery_callback(delivery_bridge(callback, user_data));
    return TDO_OK;
    TDO_CATCH
}

void tdo_shutdown(void) {
    tdo_writer* w = nullptr;
    {
        std::lock_guard<std::mutex> lock(g_default_mutex);
        w = g_default;
        g_default = nullptr;
    }
    tdo_writer_close(w);
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

int tdo_set_log_callback(tdo_log_callback callback, int min_level, void* user_data) {
    TDO_TRY
    if (!callback) {
        training_output::set_log_callback({}, training_output::LogLevel::Off);
        return TDO_OK;
    }
    training_output::set_log_callback(
        [callback, user_data](training_output::LogLevel level, std::string_view event, std::string_view json) {
            // Both views end where NUL-terminated copies are needed.
            std::string e(event), j(json);
            callback(static_cast<int>(level), e.c_str(), j.c_str(), user_data);
        },
        static_cast<training_output::LogLevel>(min_level));
    return TDO_OK;
    TDO_CATCH
}

}  // extern "C"
