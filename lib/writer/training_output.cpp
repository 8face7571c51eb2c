// TrainingOutput: the writer. format -> spool -> claim; in the background,
// the flusher: confirm -> INTENT -> append -> commit -> DONE.
#include "training_output/training_output.hpp"

#include <pthread.h>

#include <atomic>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>

#include "append/object_appender.hpp"
#include "common/crash_point.hpp"
#include "common/fs.hpp"
#include "common/json.hpp"
#include "common/sha256.hpp"
#include "common/version.hpp"
#include "dedup/deduplicator.hpp"
#include "delivery/flusher.hpp"
#include "manifest/manifest.hpp"
#include "s3/curl_s3_sink.hpp"
#include "sink/directory_sink.hpp"
#include "spool/spool.hpp"
#include "writer/claimer.hpp"
#include "writer/compactor.hpp"
#include "writer/metrics.hpp"
#include "writer/stats_table.hpp"

namespace training_output {
namespace {

// The configuration with every path the writer registers or compares (the
// output directory, the spool, the dedup file: claims name their owner's
// spool by its path) absolute and canonical, so that writers started in
// different directories, or naming one directory differently, agree on them.
Config with_absolute_paths(Config c) {
    c.finalize();
    if (!c.enable_training_output) return c;  // no I/O at all
    const bool default_db = c.dedup_db_path == c.default_dedup_db_path();
    const bool default_spool = c.spool_dir == c.default_spool_dir();
    c.output_dir = fs::absolute_path(c.output_dir, "output_dir");
    c.dedup_db_path = default_db ? c.default_dedup_db_path() : fs::absolute_path(c.dedup_db_path, "dedup_db_path");
    c.spool_dir = default_spool ? c.default_spool_dir() : fs::absolute_path(c.spool_dir, "spool_dir");
    return c;
}

std::unique_ptr<DedupStore> open_store(const Config& c, const Logger& logger) {
    if (c.dedup_store == "memory") return make_memory_dedup_store();
    if (c.dedup_store == "log") {
        LogStoreOptions o;
        o.path = c.dedup_db_path;
        // The default file is one destination's: named after it, so that the
        // writers of two destinations in one directory never share one.
        if (c.dedup_db_path == c.default_dedup_db_path()) {
            const crypto::Digest d = crypto::sha256(c.destination());
            o.path = c.output_dir + "/.dedup-" + crypto::hex(d.data(), d.size()).substr(0, 12) + ".log";
        }
        return make_log_dedup_store(o);
    }
    if (c.dedup_store == "redis") {
        RedisStoreOptions o;
        o.url = c.redis_url;
        o.timeout = std::chrono::milliseconds(c.redis_timeout_ms);
        o.pool_size = static_cast<std::size_t>(c.redis_pool_size);
        o.owner_key_prefix = c.dedup_namespace + ":owner:";
        o.owner_ttl = std::chrono::seconds(c.dedup_owner_ttl_seconds);
        o.logger = &logger;
        o.tls.ca_file = c.redis_tls_ca_file;
        o.tls.cert_file = c.redis_tls_cert_file;
        o.tls.key_file = c.redis_tls_key_file;
        o.tls.server_name = c.redis_tls_server_name;
        o.tls.verify = c.redis_tls_verify;
        return make_redis_dedup_store(o);
    }
    SqliteStoreOptions o;
    o.path = c.dedup_db_path;
    o.busy_timeout = std::chrono::milliseconds(c.dedup_busy_timeout_ms);
    // The default file is one destination's; a writer for another gets its
    // own beside it. A path given explicitly is shared as given.
    if (c.dedup_db_path == c.default_dedup_db_path()) {
        o.destination = c.destination();
        o.own_file_for_others = true;
    }
    return make_sqlite_dedup_store(o);
}

std::unique_ptr<S3Sink> open_sink(const Config& c, const Logger& logger) {
    if (c.s3_endpoint_url.empty()) return make_directory_sink(DirectorySinkOptions{c.output_dir, c.directory_fsync});
    S3SinkOptions o;
    o.endpoint_url = c.s3_endpoint_url;
    o.region = c.s3_region;
    o.bucket = c.s3_bucket_name;
    o.credentials = sigv4::Credentials{c.s3_access_key, c.s3_secret_key, c.s3_session_token};
    o.addressing = parse_addressing_style(c.s3_addressing_style);
    o.verify_tls = c.s3_verify_tls;
    o.ca_file = c.s3_ca_file;
    o.connect_timeout = std::chrono::milliseconds(c.s3_connect_timeout_ms);
    o.request_timeout = std::chrono::milliseconds(c.s3_request_timeout_ms);
    o.max_attempts = static_cast<int>(c.s3_max_attempts);
    o.retry_base = std::chrono::milliseconds(c.s3_retry_base_ms);
    o.retry_max = std::chrono::milliseconds(c.s3_retry_max_ms);
    o.conditional_writes = parse_conditional_writes(c.s3_conditional_writes);
    o.native_append = parse_native_append(c.s3_append_mode);
    return std::make_unique<CurlS3Sink>(o, &logger);
}

AppendOptions append_options(const Config& c) {
    AppendOptions o;
    if (!c.s3_endpoint_url.empty()) o.multipart_threshold = static_cast<std::uint64_t>(c.s3_multipart_threshold);
    o.lease_ttl = std::chrono::seconds(c.s3_lease_seconds);
    o.always_lease = c.s3_append_mode == "lease";
    o.native_when_appendable =
        c.s3_append_mode == "auto" || c.s3_append_mode == "native" || c.s3_append_mode == "batches";
    o.convert_plain = o.native_when_appendable && c.s3_convert_plain_objects;
    o.attributes.content_type = "application/jsonl";
    o.attributes.metadata = {{"generator", std::string("training_output/") + library_version()}};
    return o;
}

FormatterOptions formatter_options(const Config& c) {
    FormatterOptions o;
    o.include_metadata = c.include_training_metadata;
    o.prefix = c.training_data_prefix;
    o.format = parse_output_format(c.output_format);
    o.redact_phi = c.redact_phi;
    o.pseudonymize_ids = c.pseudonymize_ids;
    o.pseudonymization_key = c.pseudonymization_key;
    o.pseudonymization_key_id = c.pseudonymization_key_id;
    o.min_quality_score = c.min_quality_score;
    o.min_quality_score_by_domain.insert(c.min_quality_score_by_domain.begin(), c.min_quality_score_by_domain.end());
    o.validation_fraction = c.validation_fraction;
    o.split_objects = c.split_objects;
    return o;
}

SpoolOptions spool_options(const Config& c) {
    SpoolOptions o;
    o.dir = c.spool_dir;
    o.destination = c.destination();
    o.fsync = parse_spool_fsync(c.spool_fsync);
    o.max_bytes = static_cast<std::uint64_t>(c.spool_max_bytes);
    o.full_policy = parse_spool_full_policy(c.spool_full_policy);
    o.block_timeout = std::chrono::milliseconds(c.spool_block_timeout_ms);
    return o;
}

thread_local const char* t_last_skip_reason = "";

// The health domain in a monthly file's key: ".../{domain}/{yyyy}/{mm}/health_journal_....jsonl".
std::string_view domain_of(std::string_view key) {
    std::size_t end = key.size();
    for (int i = 0; i < 3; ++i) {
        end = key.rfind('/', end - 1);
        if (end == std::string_view::npos || end == 0) return "unknown";
    }
    const std::size_t start = key.rfind('/', end - 1);
    return key.substr(start == std::string_view::npos ? 0 : start + 1,
                      end - (start == std::string_view::npos ? 0 : start + 1));
}

// What a generate() span says of its example (filled while tracing).
struct GenerateSpan {
    std::string record_type, health_domain, traceparent, skip_reason;
    std::uint64_t bytes = 0;
};
thread_local GenerateSpan t_span;

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
          std::string_view traceparent, Attributes& attributes, int status) {
    Span s;
    s.name = name;
    s.start = start;
    s.end = start + std::chrono::duration_cast<std::chrono::system_clock::duration>(took);
    s.traceparent = traceparent;
    s.attributes_json = attributes.done();
    s.status = status;
    emit_span(s);
}

void emit_generate(std::chrono::system_clock::time_point start, std::chrono::nanoseconds took, const char* outcome,
                   int status) {
    Attributes a;
    a.add("record_type", t_span.record_type)
        .add("health_domain", t_span.health_domain)
        .add("outcome", outcome)
        .add("skip_reason", t_span.skip_reason)
        .add("bytes", static_cast<std::int64_t>(t_span.bytes));
    emit("generate", start, took, t_span.traceparent, a, status);
}

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

// Counts the fork()s of this process, as seen by each child: a writer opened
// before the count changed belongs to another process.
std::atomic<std::uint64_t> g_forks{0};

std::uint64_t fork_generation() {
    static const bool registered = [] {
        ::pthread_atfork(nullptr, nullptr, [] { g_forks.fetch_add(1, std::memory_order_relaxed); });
        return true;
    }();
    (void)registered;
    return g_forks.load(std::memory_order_relaxed);
}

}  // namespace

struct TrainingOutput::Impl {
    Config config;
    Logger logger;
    TrainingDataFormatter formatter;
    std::unique_ptr<S3Sink> sink;
    std::unique_ptr<TrainingDeduplicator> dedup;
    std::unique_ptr<ObjectAppender> appender;
    std::unique_ptr<Manifests> manifests;  // write_manifests
    std::unique_ptr<BatchObjects> batches;
    std::mutex delivery_mutex;
    DeliveryCallback delivery_callback;
    WriterMetrics metrics;

    // At most `per_second` events a second; admit() says how many were
    // suppressed since the last one admitted, or nothing when this one is.
    struct RateLimit {
        std::mutex mutex;
        std::chrono::steady_clock::time_point window{};
        int in_window = 0;
        std::uint64_t suppressed = 0;
        static constexpr int per_second = 10;
        std::optional<std::uint64_t> admit() {
            std::lock_guard<std::mutex> lock(mutex);
            const auto now = std::chrono::steady_clock::now();
            if (now - window >= std::chrono::seconds(1)) {
                window = now;
                in_window = 0;
            }
            if (in_window >= per_second) {
                ++suppressed;
                return std::nullopt;
            }
            ++in_window;
            return std::exchange(suppressed, 0);
        }
    } rejected_log;
    std::unique_ptr<Spool> spool;
    std::unique_ptr<Flusher> flusher;
    std::unique_ptr<Claimer> claimer;      // stores whose claims are not cheap
    std::unique_ptr<Compactor> compactor;  // batches mode
    FlusherStats final_flusher_stats;      // kept after close()
    SpoolStats final_spool_stats;
    std::atomic<bool> closed{false};
    std::atomic<int> active{0};  // generate() calls in progress
    const std::uint64_t fork_generation_at_open = fork_generation();

    std::atomic<std::uint64_t> written{0}, duplicates{0}, held_elsewhere{0}, skipped{0}, disabled{0}, errors{0};
    std::atomic<std::uint64_t> skipped_empty{0}, skipped_low_quality{0}, skipped_no_quality{0},
        skipped_redaction_failed{0}, redactions{0};

    // A writer is its opening process's: a child after fork() would write
    // into the parent's spool through the mappings it inherited.
    bool forked() const { return g_forks.load(std::memory_order_relaxed) != fork_generation_at_open; }
    void check_process() const {
        if (forked()) {
            throw Error(ErrorCode::Forked,
                        "this writer was opened in another process (before a fork()): open a writer in this process");
        }
    }

    // Holds close() back until the calls in progress are done.
    struct Call {
        Impl& impl;
        explicit Call(Impl& i) : impl(i) {
            impl.active.fetch_add(1);
            if (impl.closed.load()) {
                impl.active.fetch_sub(1);
                throw Error(ErrorCode::Closed, "the writer is closed");
            }
        }
        ~Call() { impl.active.fetch_sub(1); }
        Call(const Call&) = delete;
        Call& operator=(const Call&) = delete;
    };

    Impl(Config c, WriterComponents components)
        : config(with_absolute_paths(std::move(c))),
          logger(config.log_level),
          formatter(formatter_options(config), config.templates_file.empty()
                                                   ? TemplateTable::builtin()
                                                   : TemplateTable::from_file_over_builtin(config.templates_file)) {
        if (!config.enable_training_output) {
            logger.log(LogLevel::Info, "training_output_disabled", {});
            return;  // no I/O at all
        }
        if (config.s3_append_mode == "batches" && !components.sink && config.s3_endpoint_url.empty()) {
            throw Error(ErrorCode::Config,
                        "configuration key \"s3_append_mode\": batches needs an S3 store "
                        "(s3_endpoint_url); a local directory is appended to in place");
        }
        delivery_callback = std::move(components.on_delivery);
        sink = components.sink ? std::move(components.sink) : open_sink(config, logger);
        auto store = components.dedup_store ? std::move(components.dedup_store) : open_store(config, logger);
        DeduplicatorOptions d;
        d.key_namespace = config.dedup_namespace;
        d.claim_ttl = std::chrono::seconds(config.dedup_claim_ttl_seconds);
        d.committed_ttl = std::chrono::seconds(config.dedup_ttl_seconds);
        const char* store_kind = store->kind();
        dedup = std::make_unique<TrainingDeduplicator>(std::move(store), d, &logger);
        appender = std::make_unique<ObjectAppender>(*sink, append_options(config), &logger);
        if (config.write_manifests) {
            ManifestOptions mo;
            mo.library_version = library_version();
            mo.attributes = append_options(config).attributes;
            manifests = std::make_unique<Manifests>(*sink, mo, &logger);
        }
        BatchObjectsOptions bo;
        bo.attributes = append_options(config).attributes;
        bo.on_fold = [this](const std::string& month_key, std::uint64_t end, std::string_view body) {
            if (manifests) manifests->advance(month_key, end, body);
            metrics.object_size(domain_of(month_key), end);
        };
        bo.compaction_max_bytes = static_cast<std::uint64_t>(config.s3_compaction_max_bytes);
        batches = std::make_unique<BatchObjects>(*sink, *appender, bo, &logger);
        const bool batch_mode = config.s3_append_mode == "batches";
        FlusherOptions f;
        f.batch_objects = batch_mode;
        f.max_bytes = static_cast<std::uint64_t>(config.flush_max_bytes);
        f.interval = std::chrono::milliseconds(config.flush_interval_ms);
        f.timeout = std::chrono::milliseconds(config.flush_timeout_ms);
        f.hurry_bytes = static_cast<std::uint64_t>(config.spool_max_bytes) / 2;
        f.adopt_max_bytes = static_cast<std::uint64_t>(config.spool_max_bytes);
        f.on_landed = [this](const LandedBatch& l) { landed(l); };
        const SpoolOptions so = spool_options(config);
        spool = Spool::create(so, &logger);
        // Registered before its first claim: its claims are held while it lives.
        dedup->hold_owner(spool->id(), spool->path());
        flusher = std::make_unique<Flusher>(
            *appender, *batches, *dedup, logger, f, *spool,
            [so, this](std::uint64_t max_bytes) { return Spool::adopt_orphans(so, &logger, max_bytes); });
        if (!dedup->cheap_claims()) claimer = std::make_unique<Claimer>(*dedup, *spool, *flusher, logger);
        if (batch_mode && config.s3_compaction_interval_seconds > 0) {
            compactor = std::make_unique<Compactor>(*batches, logger,
                                                    std::chrono::seconds(config.s3_compaction_interval_seconds),
                                                    [this] { appender->cancel(); });
        }
        logger.log(LogLevel::Info, "training_output_enabled",
                   {{"sink", sink->describe()},
                    {"dedup_store", store_kind},
                    {"spool", spool->path()},
                    {"prefix", config.training_data_prefix},
                    {"include_metadata", config.include_training_metadata}});
    }

    // An argument larger than a whole line is refused before any work on it
    // (a line holds the narrative, escaped, and what it keeps of the JSON).
    void check_size(std::string_view text, const char* what) const {
        if (text.size() > static_cast<std::uint64_t>(config.max_line_bytes)) {
            throw Error(ErrorCode::InvalidInput, std::string(what) + " is " + std::to_string(text.size()) +
                                                     " bytes; max_line_bytes is " +
                                                     std::to_string(config.max_line_bytes));
        }
    }

    // A batch landed: its manifest first, then the host's callback.
    void landed(const LandedBatch& l) noexcept {
        try {
            Delivery d;
            d.object_key = l.key;
            d.lines = l.lines;
            d.bytes = l.size;
            d.object_size = l.offset + l.size;
            if (manifests && !l.batch_object)
                d.manifest_version = manifests->advance(l.key, l.offset + l.size, l.bytes);
            if (!l.batch_object) metrics.object_size(domain_of(l.key), d.object_size);
            if (tracing()) {
                Attributes a;
                a.add("object_key", l.key)
                    .add("lines", static_cast<std::int64_t>(l.lines))
                    .add("bytes", static_cast<std::int64_t>(l.size))
                    .add("object_size", static_cast<std::int64_t>(d.object_size))
                    .add("manifest_version", d.manifest_version);
                const auto took =
                    std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::duration<double>(l.seconds));
                emit("batch_append", l.done_at - took, took, {}, a, 0);
            }
            logger.log(LogLevel::Info, "training_output_batch_landed",
                       {{"object_key", l.key},
                        {"lines", static_cast<std::int64_t>(l.lines)},
                        {"bytes", static_cast<std::int64_t>(l.size)},
                        {"object_size", static_cast<std::int64_t>(d.object_size)},
                        {"manifest_version", d.manifest_version},
                        {"batch_object", l.batch_object},
                        {"seconds", l.seconds}});
            // Called under the lock: once set_delivery_callback() returns, the
            // callback it replaced is not running (its host may free it).
            std::lock_guard<std::mutex> lock(delivery_mutex);
            if (delivery_callback) delivery_callback(d);
        } catch (const std::exception& e) {
            logger.log(LogLevel::Error, "training_output_delivery_callback_failed",
                       {{"object_key", l.key}, {"error", e.what()}});
        } catch (...) {
            logger.log(LogLevel::Error, "training_output_delivery_callback_failed",
                       {{"object_key", l.key}, {"error", "an exception that is not a std::exception"}});
        }
    }

    template <class FormatFn>
    Outcome generate(FormatFn&& format) {
        t_last_skip_reason = "";
        check_process();
        Call call(*this);
        if (!config.enable_training_output) {
            disabled.fetch_add(1, std::memory_order_relaxed);
            return Outcome::Disabled;
        }
        TrainingExample ex;
        try {
            ex = format();
            if (tracing()) {
                t_span.record_type = ex.record_type;
                t_span.health_domain = ex.health_domain;
                t_span.traceparent = ex.traceparent;
                t_span.skip_reason = ex.skip_reason;
                t_span.bytes = ex.line.size();
            }
            if (ex.line.size() > static_cast<std::uint64_t>(config.max_line_bytes)) {
                throw Error(ErrorCode::InvalidInput, "the example is " + std::to_string(ex.line.size()) +
                                                         " bytes; max_line_bytes is " +
                                                         std::to_string(config.max_line_bytes));
            }
        } catch (const Error& e) {
            errors.fetch_add(1, std::memory_order_relaxed);
            // Rejected input is the host's to fix: a warning, at most 10 a second per writer.
            if (const auto suppressed = rejected_log.admit()) {
                logger.log(LogLevel::Warning, "training_output_error",
                           {{"error", e.what()},
                            {"code", error_code_name(e.code())},
                            {"suppressed", static_cast<std::int64_t>(*suppressed)}});
            }
            throw;
        }
        if (ex.skipped()) {
            skipped.fetch_add(1, std::memory_order_relaxed);
            const struct {
                const char* reason;
                std::atomic<std::uint64_t>* counter;
            } reasons[] = {{"empty_narrative", &skipped_empty},
                           {"low_quality", &skipped_low_quality},
                           {"no_quality_score", &skipped_no_quality},
                           {"redaction_failed", &skipped_redaction_failed}};
            for (const auto& r : reasons) {
                if (ex.skip_reason == r.reason) {
                    r.counter->fetch_add(1, std::memory_order_relaxed);
                    t_last_skip_reason = r.reason;
                }
            }
            // An example that could not be redacted is a failure to look at.
            logger.log(
                ex.skip_reason == "redaction_failed" ? LogLevel::Error : LogLevel::Info, "training_output_skipped",
                {{"record_type", ex.record_type}, {"correlation_id", ex.correlation_id}, {"reason", ex.skip_reason}});
            return Outcome::Skipped;
        }

        // What this process and the store know of the content, without a
        // write: a duplicate is answered before anything is spooled.
        const std::string& owner = spool->id();
        const std::string key = dedup->key_for(ex.content_hash);
        const Precheck known = dedup->precheck(ex.content_hash, key, owner);
        if (known == Precheck::Duplicate || known == Precheck::Pending) {
            crash_point("generate.after_void");  // decided, not answered
            return duplicate(ex, key, known == Precheck::Pending ? ClaimOutcome::Pending : ClaimOutcome::Duplicate);
        }

        // The line is spooled first, then its content claimed for this
        // spool: no claim ever exists without its line (a crash in between
        // leaves a line whose claim the adopter settles).
        Flusher::Handle handle;
        SpoolLineRef ref;
        try {
            ref = spool->append_line(ex.object_key, key, ex.line,
                                     [&](const SpoolLineRef& r) { handle = flusher->add(ex.object_key, r); });
        } catch (const Error& e) {
            // Not accepted, nothing claimed: the same content may come again.
            if (known == Precheck::New) dedup->forget(key, owner);
            errors.fetch_add(1, std::memory_order_relaxed);
            logger.log(LogLevel::Warning, "training_output_failed",
                       {{"record_type", ex.record_type}, {"error", e.what()}, {"code", error_code_name(e.code())}});
            throw;
        }
        if (known == Precheck::New && claimer && !config.dedup_pending_outcome) {
            // New content: claimed from the claimer's thread with others.
            // (A host that asked for TDO_PENDING acknowledges only WRITTEN
            // and DUPLICATE: its calls wait for their claims, so that content
            // another live writer holds is never answered WRITTEN.)
            claimer->add(Claimer::Item{key, ex.object_key, ref, handle});
            return accepted(ex, key);
        }
        // Claimed now: a store whose claims cost a lookup (memory), or
        // content another owner's claim holds (taken over if it is gone).
        const std::uint64_t epoch = dedup->liveness_epoch();
        const ClaimOutcome claim = dedup->claim(key, owner);
        crash_point("generate.after_claim");
        if (claim == ClaimOutcome::Duplicate || claim == ClaimOutcome::Pending) {
            flusher->void_line(*spool, handle, ex.object_key, ref, epoch);
            dedup->settled_elsewhere(key, owner, claim);
            crash_point("generate.after_void");
            return duplicate(ex, key, claim);
        }
        flusher->settle(handle,
                        claim == ClaimOutcome::Claimed ? Flusher::LineState::Ready : Flusher::LineState::Unconfirmed,
                        epoch);
        return accepted(ex, key);
    }

    Outcome accepted(const TrainingExample& ex, const std::string& key) {
        written.fetch_add(1, std::memory_order_relaxed);
        redactions.fetch_add(ex.redactions, std::memory_order_relaxed);
        metrics.generated(ex.record_type, ex.health_domain);
        if (logger.enabled(LogLevel::Info)) {
            logger.log(LogLevel::Info, "training_output_generated",
                       {{"record_type", ex.record_type},
                        {"correlation_id", ex.correlation_id},
                        {"health_domain", ex.health_domain},
                        {"object_key", ex.object_key},
                        {"content_hash", key}});
        }
        return Outcome::Written;
    }

    // Duplicate: written already; Pending: held by a live writer's line.
    Outcome duplicate(const TrainingExample& ex, const std::string& key, ClaimOutcome claim) {
        duplicates.fetch_add(1, std::memory_order_relaxed);
        metrics.duplicate(ex.record_type);
        if (claim == ClaimOutcome::Pending) held_elsewhere.fetch_add(1, std::memory_order_relaxed);
        if (logger.enabled(LogLevel::Info)) {
            logger.log(LogLevel::Info, "skipping_duplicate_training_example",
                       {{"record_type", ex.record_type},
                        {"correlation_id", ex.correlation_id},
                        {"content_hash", key},
                        {"health_domain", ex.health_domain},
                        {"delivered", claim == ClaimOutcome::Duplicate}});
        }
        return claim == ClaimOutcome::Pending && config.dedup_pending_outcome ? Outcome::Pending : Outcome::Duplicate;
    }
};

TrainingOutput::TrainingOutput(Config config, WriterComponents components)
    : impl_(std::make_unique<Impl>(std::move(config), std::move(components))) {}

TrainingOutput::~TrainingOutput() {
    try {
        close();
    } catch (...) {}
}

namespace {
// After fork(), in the child: the parent's threads, locks and spool are not
// this process's. The writer's memory is left as it is (freeing it would
// join threads that do not exist here and remove the parent's files).
template <class Impl>
bool abandon_if_forked(std::unique_ptr<Impl>& impl) {
    if (!impl || !impl->forked()) return false;
    (void)impl.release();
    return true;
}
}  // namespace

Outcome TrainingOutput::generate(std::string_view narrative, std::string_view message_data_json,
                                 std::string_view result_json) {
    if (!impl_) throw Error(ErrorCode::Forked, "this writer was opened in another process (before a fork())");
    return timed(*impl_, [&] {
        return impl_->generate([&] {
            impl_->check_size(narrative, "narrative");
            impl_->check_size(message_data_json, "message_data");
            impl_->check_size(result_json, "result");
            return impl_->formatter.format_json(narrative, message_data_json, result_json);
        });
    });
}

Outcome TrainingOutput::generate(std::string_view narrative, const MessageData& message,
                                 const ProcessingResult& result) {
    if (!impl_) throw Error(ErrorCode::Forked, "this writer was opened in another process (before a fork())");
    return timed(*impl_, [&] {
        return impl_->generate([&] {
            impl_->check_size(narrative, "narrative");
            impl_->check_size(result.clinical_insights_json, "result.clinical_insights");
            return impl_->formatter.format(narrative, message, result);
        });
    });
}

void TrainingOutput::flush() {
    if (!impl_) throw Error(ErrorCode::Forked, "this writer was opened in another process (before a fork())");
    impl_->check_process();
    Impl::Call call(*impl_);
    const bool traced = tracing();
    const auto wall = std::chrono::system_clock::now();
    const auto t0 = std::chrono::steady_clock::now();
    const auto pending = traced && impl_->flusher ? impl_->flusher->stats().pending_lines : 0;
    auto span = [&](int status) {
        if (!traced) return;
        Attributes a;
        a.add("lines", static_cast<std::int64_t>(pending));
        emit("flush", wall, std::chrono::steady_clock::now() - t0, {}, a, status);
    };
    try {
        if (impl_->claimer) impl_->claimer->drain();  // every line accepted before is deliverable or void
        if (impl_->flusher) impl_->flusher->flush();
    } catch (const Error& e) {
        span(static_cast<int>(e.code()));
        throw;
    }
    span(0);
}

DrainReport TrainingOutput::drain() {
    if (!impl_) throw Error(ErrorCode::Forked, "this writer was opened in another process (before a fork())");
    impl_->check_process();
    Impl::Call call(*impl_);
    DrainReport r;
    if (!impl_->flusher) return r;  // enable_training_output is false
    const SpoolOptions so = spool_options(impl_->config);
    for (;;) {
        flush();
        const std::size_t left = Spool::count_orphans(so);
        if (left == 0) break;
        // Adoption stops at spool_max_bytes of lines a round; those are delivered, then the next.
        const std::uint64_t adopted = impl_->flusher->stats().spools_adopted;
        impl_->flusher->adopt_soon();
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
        while (impl_->flusher->stats().spools_adopted == adopted && std::chrono::steady_clock::now() < deadline) {
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        if (impl_->flusher->stats().spools_adopted == adopted) {
            throw Error(ErrorCode::Storage, std::to_string(left) + " orphaned spool(s) in " + json::quote(so.dir) +
                                                " could not be adopted (the log says why); they stay for a "
                                                "later writer");
        }
    }
    const FlusherStats f = impl_->flusher->stats();
    r.spools_adopted = f.spools_adopted;
    r.lines_recovered = f.lines_recovered;
    r.lines_appended = f.lines_appended;
    r.lines_voided = f.lines_voided;
    r.lines_found_landed = f.lines_found_landed;
    return r;
}

DrainReport TrainingOutput::drain(Config config) {
    TrainingOutput writer(std::move(config));
    const DrainReport r = writer.drain();
    writer.close();
    return r;
}

void TrainingOutput::close() {
    if (!impl_ || abandon_if_forked(impl_)) return;
    if (impl_->closed.exchange(true)) return;
    // Calls in progress finish first (a line between its spool record and
    // its claim is settled before the flusher goes); those waiting for room
    // in a full spool are refused now, not when their wait times out.
    if (impl_->spool) impl_->spool->stop_waiting();
    while (impl_->active.load() != 0) std::this_thread::yield();
    if (!impl_->flusher) return;
    // Every accepted line's claim settled before the last flush.
    impl_->claimer.reset();
    auto stop = [this] {
        if (impl_->compactor) impl_->compactor->stop();
        impl_->final_flusher_stats = impl_->flusher->stats();
        impl_->final_spool_stats = impl_->spool->stats();
        impl_->flusher.reset();
        const bool settled = impl_->spool->empty();
        const std::string id = impl_->spool->id();
        impl_->spool.reset();            // unlocked: the next writer on the spool delivers what is left
        impl_->dedup->forget_owner(id);  // what it holds, the store answers for now
        // Its claims are all committed: nothing of it is left to hold them.
        if (settled) impl_->dedup->release_owner(id);
    };
    const auto t0 = std::chrono::steady_clock::now();
    auto closed_event = [&](const char* error) {
        const FlusherStats& f = impl_->final_flusher_stats;
        impl_->logger.log(error ? LogLevel::Warning : LogLevel::Info, "training_output_closed",
                          {{"lines_appended", static_cast<std::int64_t>(f.lines_appended)},
                           {"bytes_appended", static_cast<std::int64_t>(f.bytes_appended)},
                           {"lines_left_in_spool", static_cast<std::int64_t>(f.pending_lines)},
                           {"seconds", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()},
                           {"error", error ? error : ""}});
    };
    try {
        impl_->flusher->close();
    } catch (const std::exception& e) {
        stop();
        closed_event(e.what());
        throw;
    }
    stop();
    closed_event(nullptr);
}

WriterStats TrainingOutput::stats() const {
    if (!impl_) throw Error(ErrorCode::Forked, "this writer was opened in another process (before a fork())");
    impl_->check_process();
    WriterStats s;
    s.written = impl_->written.load();
    s.duplicates = impl_->duplicates.load();
    s.held_elsewhere = impl_->held_elsewhere.load();
    s.skipped = impl_->skipped.load();
    s.skipped_empty_narrative = impl_->skipped_empty.load();
    s.skipped_low_quality = impl_->skipped_low_quality.load();
    s.skipped_no_quality_score = impl_->skipped_no_quality.load();
    s.skipped_redaction_failed = impl_->skipped_redaction_failed.load();
    s.redactions = impl_->redactions.load();
    s.disabled = impl_->disabled.load();
    s.errors = impl_->errors.load();
    s.dedup_store_errors = impl_->dedup ? impl_->dedup->store_errors() : 0;
    if (impl_->appender) {
        FlusherStats f = impl_->flusher ? impl_->flusher->stats() : impl_->final_flusher_stats;
        s.lines_appended = f.lines_appended;
        s.bytes_appended = f.bytes_appended;
        s.batches_appended = f.batches_appended;
        s.append_failures = f.append_failures;
        s.pending_lines = f.pending_lines;
        s.pending_bytes = f.pending_bytes;
        s.batches_found_landed = f.batches_found_landed;
        s.lines_found_landed = f.lines_found_landed;
        s.spools_adopted = f.spools_adopted;
        s.lines_recovered = f.lines_recovered;
        s.torn_records = f.torn_records;
        s.lines_voided = f.lines_voided;
        s.pending_commits = f.pending_commits;
    }
    const SpoolStats spool = impl_->spool ? impl_->spool->stats() : impl_->final_spool_stats;
    s.spool_bytes = impl_->spool ? spool.bytes : 0;
    s.spool_fsync_errors = spool.fsync_errors;
    s.calls_waiting_for_room = impl_->spool ? spool.waiting_for_room : 0;
    s.append_conflicts = impl_->appender ? impl_->appender->conflicts() : 0;
    return s;
}

std::string TrainingOutput::stats_json() const {
    WriterStats s = stats();
    rapidjson::StringBuffer buffer;
    rapidjson::Writer<rapidjson::StringBuffer> w(buffer);
    w.StartObject();
    for (const StatField& f : kStatFields) {
        w.Key(f.name);
        w.Uint64(s.*(f.field));
    }
    w.EndObject();
    return std::string(buffer.GetString(), buffer.GetSize());
}

const Config& TrainingOutput::config() const { return impl_->config; }

std::string TrainingOutput::metrics_text() const {
    WriterMetrics::Sources in;
    in.stats = stats();  // checks the process
    if (const auto* s3 = dynamic_cast<const CurlS3Sink*>(impl_->sink.get())) in.s3 = s3->stats();
    if (impl_->appender) {
        in.lease_waits = impl_->appender->lease_waits();
        in.lease_wait_seconds = impl_->appender->lease_wait_seconds();
    }
    if (impl_->flusher) {
        const auto oldest = impl_->flusher->stats().oldest_pending;
        if (oldest != std::chrono::steady_clock::time_point{}) {
            in.backlog_age_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - oldest).count();
        }
    }
    return impl_->metrics.prometheus(in);
}

const char* TrainingOutput::last_skip_reason() noexcept { return t_last_skip_reason; }

void TrainingOutput::set_delivery_callback(DeliveryCallback callback) {
    if (!impl_) throw Error(ErrorCode::Forked, "this writer was opened in another process (before a fork())");
    impl_->check_process();
    std::lock_guard<std::mutex> lock(impl_->delivery_mutex);
    impl_->delivery_callback = std::move(callback);
}

}  // namespace training_output
