/*
 * training_output.h - the C ABI of the training_output library.
 *
 * Turns the clinical narratives that health-data processors write into
 * supervised fine-tuning examples (JSON lines: instruction / input / output /
 * metadata), drops duplicates by SHA-256 content hash and appends them to
 * monthly, per-domain JSONL objects (a local directory by default).
 *
 * Conventions
 *   - Every entry point that can fail returns an int status: 0 or a small
 *     positive outcome (TDO_WRITTEN, TDO_DUPLICATE, TDO_SKIPPED,
 *     TDO_DISABLED, TDO_PENDING) on success, a negative TDO_E_* code on
 *     error. The message of the last error on the calling thread is returned
 *     by tdo_last_error(). The functions that cannot fail return what they
 *     name instead: tdo_version_number(), tdo_version_string(),
 *     tdo_last_error(), tdo_last_skip_reason(), tdo_status_name(), tdo_free().
 *   - A writer argument is a writer from tdo_writer_open(), or
 *     TDO_DEFAULT_WRITER for the process-wide writer. NULL is an error
 *     (TDO_E_INVALID_ARGUMENT), never another writer: a writer whose open
 *     failed is never silently replaced.
 *   - Strings passed in are borrowed for the duration of the call and must be
 *     NUL-terminated UTF-8. Strings returned through `char**` out parameters
 *     are allocated by the library and must be released with tdo_free().
 *     Strings returned as `const char*` are owned by the library (see each
 *     function for how long they stay valid).
 *   - No C++ exception ever crosses this boundary.
 *
 * Thread safety
 *   - A tdo_writer may be used from any number of threads at once, except
 *     tdo_writer_close(), which must not race with other calls on the same
 *     writer. The process-wide writer may: tdo_shutdown() waits for the calls
 *     in progress on it, and later calls open a new one.
 *   - tdo_last_error() is per thread.
 *   - A writer belongs to the process that opened it: after fork(), the child
 *     gets TDO_E_FORKED from every call on it (tdo_writer_close() only frees
 *     the handle) and opens writers of its own.
 *   - The log callback may be called from any thread that uses a writer and
 *     from the writer's background threads.
 */
#ifndef TRAINING_OUTPUT_H
#define TRAINING_OUTPUT_H

#include <stddef.h>

#define TDO_VERSION_MAJOR 0
#define TDO_VERSION_MINOR 4
#define TDO_VERSION_PATCH 0
#define TDO_VERSION_NUMBER (TDO_VERSION_MAJOR * 10000 + TDO_VERSION_MINOR * 100 + TDO_VERSION_PATCH)

#if defined(_WIN32) && defined(TDO_SHARED_BUILD)
#define TDO_API __declspec(dllexport)
#elif defined(_WIN32) && defined(TDO_SHARED)
#define TDO_API __declspec(dllimport)
#elif defined(__GNUC__)
#define TDO_API __attribute__((visibility("default")))
#else
#define TDO_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ---- outcomes (>= 0) ----------------------------------------------------- */
#define TDO_OK 0
#define TDO_WRITTEN 0   /* the example was accepted and will be in its object */
#define TDO_DUPLICATE 1 /* the same content was already written: dropped */
/* Nothing to write: tdo_last_skip_reason() says why (an empty narrative, a
 * quality filter, a redaction that could not run). */
#define TDO_SKIPPED 2
#define TDO_DISABLED 3 /* enable_training_output is false: nothing done */
/* dedup_pending_outcome only: another live writer holds the same content and
 * has not delivered it yet; do not acknowledge the message yet. */
#define TDO_PENDING 4

/* ---- errors (< 0) -------------------------------------------------------- */
#define TDO_E_INVALID_ARGUMENT -1 /* NULL where a value is required, bad handle */
#define TDO_E_INVALID_JSON -2     /* a JSON argument does not parse */
#define TDO_E_INVALID_INPUT -3    /* valid JSON of the wrong shape, missing record_type, bad UTF-8 */
#define TDO_E_CONFIG -4           /* configuration: unknown key, wrong type, bad value */
#define TDO_E_STORAGE -5          /* the object store or local files failed */
#define TDO_E_DEDUP_STORE -6      /* the dedup store could not be opened */
#define TDO_E_BACKPRESSURE -7     /* the local spool is full (spool_full_policy=reject) */
#define TDO_E_TIMEOUT -8          /* a flush or a blocked call ran out of time */
#define TDO_E_AUTH -9             /* the object store rejected the credentials */
#define TDO_E_CLOSED -10          /* the writer is closing */
#define TDO_E_NOMEM -11           /* out of memory */
#define TDO_E_FORKED -12          /* the writer was opened in another process (before a fork()) */
#define TDO_E_INTERNAL -99        /* a bug: please report it with tdo_last_error() */

/* ---- log levels ---------------------------------------------------------- */
#define TDO_LOG_DEBUG 10
#define TDO_LOG_INFO 20
#define TDO_LOG_WARNING 30
#define TDO_LOG_ERROR 40
#define TDO_LOG_OFF 100

typedef struct tdo_writer tdo_writer;

/*
 * The process-wide writer: opened from the environment (ETL_*) on first use,
 * closed by tdo_shutdown() (or at exit). Any entry point that takes a writer
 * takes it.
 */
#ifdef __cplusplus
#define TDO_DEFAULT_WRITER (reinterpret_cast<tdo_writer*>(static_cast<size_t>(1)))
#else
#define TDO_DEFAULT_WRITER ((tdo_writer*)(size_t)1)
#endif

/*
 * Every configuration key this library understands, as JSON: its type,
 * default, range or allowed values, environment variable and description
 * (docs/configuration.md is generated from it). *out_json must be freed with
 * tdo_free().
 */
TDO_API int tdo_config_describe(char** out_json);

/* Version of the library actually loaded (compare with TDO_VERSION_NUMBER). */
TDO_API int tdo_version_number(void);
/* "MAJOR.MINOR.PATCH"; static storage. */
TDO_API const char* tdo_version_string(void);

/*
 * Opens a writer. `config_json` is a JSON object of configuration keys
 * (docs/configuration.md, or tdo_config_describe()); NULL reads the
 * configuration from the environment (ETL_*).
 * On success *out receives the writer and TDO_OK is returned; on error *out
 * is set to NULL (and passing that NULL on is an error, TDO_E_INVALID_ARGUMENT).
 * Open does not wait on the network past its own bounds: at most 500 ms for
 * the S3 store's first answers (its capability probe goes on in the
 * background) and redis_timeout_ms for Redis (name resolution aside); a
 * store that does not answer is not an error at open.
 */
TDO_API int tdo_writer_open(tdo_writer** out, const char* config_json);

/*
 * Turns one processing result into a training example and writes it.
 *   narrative          UTF-8 text: the example's output.
 *   message_data_json  JSON object: record_type (required), user_id,
 *                      correlation_id, bucket, key.
 *   result_json        JSON object: quality_score, record_count,
 *                      processing_time_seconds, clinical_insights,
 *                      processing_timestamp (ISO-8601; its month picks the
 *                      file). NULL is the same as "{}".
 * `writer`: from tdo_writer_open(), or TDO_DEFAULT_WRITER.
 * Returns TDO_WRITTEN, TDO_DUPLICATE, TDO_SKIPPED, TDO_DISABLED, TDO_PENDING
 * (only with dedup_pending_outcome) or an error.
 */
TDO_API int generate_training_output(tdo_writer* writer, const char* narrative, const char* message_data_json,
                                     const char* result_json);

/*
 * The writer's metrics in the Prometheus text exposition format (0.0.4):
 * etl_training_examples_generated_total, etl_training_output_duration_seconds,
 * etl_training_deduplication_hits_total, etl_training_file_size_bytes and the
 * rest listed in docs/observability.md. *out_text must be freed with
 * tdo_free(). The library opens no port: the host serves or pushes the text.
 */
TDO_API int tdo_writer_metrics(tdo_writer* writer, char** out_text);

/*
 * Why the last generate_training_output() on the calling thread returned
 * TDO_SKIPPED: "empty_narrative", "low_quality" (quality_score below
 * min_quality_score), "no_quality_score" (none, where a threshold applies) or
 * "redaction_failed" (redact_phi could not run: the example is never written
 * unredacted); "" after any other outcome. Static storage.
 */
TDO_API const char* tdo_last_skip_reason(void);

/* Returns once every example accepted before the call is in its object. */
TDO_API int tdo_writer_flush(tdo_writer* writer);

/*
 * Flushes, closes and frees the writer (NULL is fine: TDO_OK). Must not race
 * with other calls on the same writer. Returns TDO_OK when every line it
 * accepted is in its object; otherwise the error (TDO_E_TIMEOUT,
 * TDO_E_STORAGE, TDO_E_AUTH), and tdo_last_error() says how many lines stayed
 * in which spool directory: the next writer opened on that spool delivers
 * them. The writer is freed either way. TDO_DEFAULT_WRITER: tdo_shutdown().
 */
TDO_API int tdo_writer_close(tdo_writer* writer);

/*
 * Counters of the writer as a JSON object (written, duplicates, skipped,
 * errors, dedup_store_errors, ...). *out_json must be freed with tdo_free().
 */
TDO_API int tdo_writer_stats(tdo_writer* writer, char** out_json);

/*
 * Delivers what writers of this configuration left in their spools (they
 * died, or closed before they could deliver): opens a writer on
 * `config_json` (NULL: the environment), adopts every orphaned spool,
 * delivers its lines and closes. Spools of live writers are left to them.
 * TDO_OK when nothing orphaned is left; otherwise the error, and
 * tdo_last_error() says why (TDO_E_TIMEOUT after flush_timeout_ms,
 * TDO_E_STORAGE when a spool could not be adopted). When `out_report_json`
 * is not NULL it receives {"spools_adopted":N,"lines_recovered":N,
 * "lines_appended":N,"lines_voided":N,"lines_found_landed":N} on success
 * (release with tdo_free()). lines_found_landed counts the lines, of
 * lines_appended, that a writer killed while it delivered had appended
 * already: found in their objects, not written again.
 */
TDO_API int tdo_drain(const char* config_json, char** out_report_json);

/* A batch that landed (tdo_writer_set_delivery_callback). */
typedef struct tdo_delivery {
    size_t struct_size;       /* sizeof(tdo_delivery) in the library: later versions add fields at the end */
    const char* object_key;   /* the monthly file, or (s3_append_mode=batches) the batch's own object */
    unsigned long long lines; /* of the batch */
    unsigned long long bytes;
    unsigned long long object_size; /* the object's size once the batch was in it */
    long long manifest_version;     /* the version of the object's manifest that counts the batch; -1: none
                                       (write_manifests off, a batch object, or the manifest lags) */
} tdo_delivery;

/* `delivery` and its strings are borrowed for the duration of the call. */
typedef void (*tdo_delivery_callback)(const tdo_delivery* delivery, void* user_data);

/* Options of tdo_writer_open_ex(); zero-initialize, then set struct_size. */
typedef struct tdo_open_options {
    size_t struct_size;                /* sizeof(tdo_open_options) as the caller knows it */
    tdo_delivery_callback on_delivery; /* NULL: none (see tdo_writer_set_delivery_callback) */
    void* delivery_user_data;
} tdo_open_options;

/*
 * tdo_writer_open() with options: a delivery callback that is set before
 * the writer adopts the spools of writers that died, so their batches are
 * reported too. `options` NULL is tdo_writer_open().
 */
TDO_API int tdo_writer_open_ex(tdo_writer** out, const char* config_json, const tdo_open_options* options);

/*
 * Calls `callback` once for each batch of `writer` that lands from now on,
 * in landing order, on a thread of the writer's (not the one that delivers:
 * a slow callback holds back no delivery until 64 calls wait), after the
 * batch is recorded as delivered: never for a batch that did not land,
 * never twice for one. tdo_writer_flush() returns once the calls for what
 * it delivered are made. A
 * batch that a writer that died had landed is reported by the writer that
 * adopts its spool. NULL stops the calls. Once this returns, the callback it
 * replaced is not running and will not be called again. The callback must
 * not call back into the library.
 */
TDO_API int tdo_writer_set_delivery_callback(tdo_writer* writer, tdo_delivery_callback callback, void* user_data);

/*
 * Closes the process-wide writer (TDO_DEFAULT_WRITER), if one was opened:
 * calls in progress on it finish first, later calls open a new one. Safe to
 * call more than once, and from any thread while others use it. Returns as
 * tdo_writer_close().
 */
TDO_API int tdo_shutdown(void);

/*
 * Message of the last error on the calling thread. Never NULL ("" when there
 * was none); valid until the next library call on this thread.
 */
TDO_API const char* tdo_last_error(void);

/* Symbolic name of a status code ("TDO_E_CONFIG", ...); static storage. */
TDO_API const char* tdo_status_name(int status);

/* Frees memory that the library allocated for the caller. NULL is fine. */
TDO_API void tdo_free(void* ptr);

/*
 * Receives every log event at or above `min_level`:
 *   level      one of TDO_LOG_*
 *   event      the event name ("training_output_failed", ...)
 *   json_line  the whole event as one JSON object (no newline)
 * Both strings are borrowed for the duration of the call. The callback may
 * be called from any thread, including the library's background threads,
 * and must not call back into the library.
 */
typedef void (*tdo_log_callback)(int level, const char* event, const char* json_line, void* user_data);

/*
 * Routes log events of the whole process to `callback` (NULL restores the
 * default: JSON lines on stderr at the level configured by log_level,
 * warnings and up unless asked). Once this returns, the callback it replaced
 * is not running and will not be called again. Returns TDO_OK.
 */
TDO_API int tdo_set_log_callback(tdo_log_callback callback, int min_level, void* user_data);

/* A span of the library's work (tdo_set_span_callback). */
typedef struct tdo_span {
    size_t struct_size;         /* sizeof(tdo_span) in the library: later versions add fields at the end */
    const char* name;           /* "generate", "batch_append" or "flush" */
    long long start_unix_nanos; /* by the system clock */
    long long end_unix_nanos;
    const char* traceparent;     /* generate: message_data's "traceparent" (W3C trace context) when it
                                    holds a valid one, else NULL: the span's parent */
    const char* attributes_json; /* one JSON object: record_type, health_domain, outcome, skip_reason,
                                    bytes (generate); object_key, lines, bytes, object_size,
                                    manifest_version (batch_append); lines (flush) */
    int status;                  /* TDO_OK, or the TDO_E_* code it ended in */
} tdo_span;

/* `span` and its strings are borrowed for the duration of the call. */
typedef void (*tdo_span_callback)(const tdo_span* span, void* user_data);

/*
 * Tracing for the whole process: `callback` receives a span for each
 * generate_training_output() call, each batch that lands and each flush, on
 * the thread that did the work, for the host to bridge to OpenTelemetry (the
 * library links no tracing SDK). NULL stops the spans; once this returns, the
 * callback it replaced is not running. The callback must not call back into
 * the library. Returns TDO_OK.
 */
TDO_API int tdo_set_span_callback(tdo_span_callback callback, void* user_data);

#ifdef __cplusplus
}
#endif

#endif /* TRAINING_OUTPUT_H */
