// The writer's wiring (wiring.hpp): its configuration turned into its
// components' options, and the components built and started.
#include "writer/wiring.hpp"

#include "common/fs.hpp"
#include "common/sha256.hpp"
#include "common/version.hpp"
#include "manifest/manifest.hpp"
#include "s3/curl_s3_sink.hpp"
#include "sink/directory_sink.hpp"
#include "writer/writer_impl.hpp"

namespace training_output {
namespace wiring {

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

std::unique_ptr<DedupStore> open_store(const Config& c, const Choices& ch, const Logger& logger) {
    if (ch.dedup_store == DedupStoreKind::Memory) return make_memory_dedup_store();
    if (ch.dedup_store == DedupStoreKind::Log) {
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
    if (ch.dedup_store == DedupStoreKind::Redis) {
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

std::unique_ptr<S3Sink> open_sink(const Config& c, const Choices& ch, const Logger& logger) {
    if (c.s3_endpoint_url.empty()) return make_directory_sink(DirectorySinkOptions{c.output_dir, c.directory_fsync});
    S3SinkOptions o;
    o.endpoint_url = c.s3_endpoint_url;
    o.region = c.s3_region;
    o.bucket = c.s3_bucket_name;
    o.credentials = sigv4::Credentials{c.s3_access_key, c.s3_secret_key, c.s3_session_token};
    o.addressing = ch.s3_addressing_style;
    o.verify_tls = c.s3_verify_tls;
    o.ca_file = c.s3_ca_file;
    o.connect_timeout = std::chrono::milliseconds(c.s3_connect_timeout_ms);
    o.request_timeout = std::chrono::milliseconds(c.s3_request_timeout_ms);
    o.max_attempts = static_cast<int>(c.s3_max_attempts);
    o.retry_base = std::chrono::milliseconds(c.s3_retry_base_ms);
    o.retry_max = std::chrono::milliseconds(c.s3_retry_max_ms);
    o.conditional_writes = ch.s3_conditional_writes;
    switch (ch.s3_append_mode) {
        case AppendMode::Native: o.native_append = NativeAppend::On; break;
        // batches: a compaction appends to the monthly file as auto would.
        case AppendMode::Auto:
        case AppendMode::Batches: o.native_append = NativeAppend::Auto; break;
        case AppendMode::Copy:
        case AppendMode::Lease: o.native_append = NativeAppend::Off; break;
    }
    return std::make_unique<CurlS3Sink>(o, &logger);
}

AppendOptions append_options(const Config& c, const Choices& ch) {
    AppendOptions o;
    if (!c.s3_endpoint_url.empty()) o.multipart_threshold = static_cast<std::uint64_t>(c.s3_multipart_threshold);
    o.lease_ttl = std::chrono::seconds(c.s3_lease_seconds);
    o.always_lease = ch.s3_append_mode == AppendMode::Lease;
    o.native_when_appendable = ch.s3_append_mode == AppendMode::Auto || ch.s3_append_mode == AppendMode::Native ||
                               ch.s3_append_mode == AppendMode::Batches;
    o.convert_plain = o.native_when_appendable && c.s3_convert_plain_objects;
    o.attributes.content_type = "application/jsonl";
    o.attributes.metadata = {{"generator", std::string("training_output/") + library_version()}};
    return o;
}

FormatterOptions formatter_options(const Config& c, const Choices& ch) {
    FormatterOptions o;
    o.include_metadata = c.include_training_metadata;
    o.prefix = c.training_data_prefix;
    o.format = ch.output_format;
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

SpoolOptions spool_options(const Config& c, const Choices& ch) {
    SpoolOptions o;
    o.dir = c.spool_dir;
    o.destination = c.destination();
    o.fsync = ch.spool_fsync;
    o.max_bytes = static_cast<std::uint64_t>(c.spool_max_bytes);
    o.full_policy = ch.spool_full_policy;
    o.block_timeout = std::chrono::milliseconds(c.spool_block_timeout_ms);
    return o;
}

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

}  // namespace wiring

using namespace wiring;

TrainingOutput::Impl::Impl(Config c, WriterComponents components)
    : config(with_absolute_paths(std::move(c))),
      choices(choices_of(config)),
      logger(config.log_level),
      formatter(formatter_options(config, choices),
                config.templates_file.empty() ? TemplateTable::builtin()
                                              : TemplateTable::from_file_over_builtin(config.templates_file)) {
    if (!config.enable_training_output) {
        logger.log(LogLevel::Info, "training_output_disabled", {});
        return;  // no I/O at all
    }
    if (choices.s3_append_mode == AppendMode::Batches && !components.sink && config.s3_endpoint_url.empty()) {
        throw Error(ErrorCode::Config,
                    "configuration key \"s3_append_mode\": batches needs an S3 store "
                    "(s3_endpoint_url); a local directory is appended to in place");
    }
    delivery_callback = std::move(components.on_delivery);
    sink = components.sink ? std::move(components.sink) : open_sink(config, choices, logger);
    auto store = components.dedup_store ? std::move(components.dedup_store) : open_store(config, choices, logger);
    DeduplicatorOptions d;
    d.key_namespace = config.dedup_namespace;
    d.claim_ttl = std::chrono::seconds(config.dedup_claim_ttl_seconds);
    d.committed_ttl = std::chrono::seconds(config.dedup_ttl_seconds);
    const char* store_kind = store->kind();
    dedup = std::make_unique<TrainingDeduplicator>(std::move(store), d, &logger);
    const AppendOptions ao = append_options(config, choices);
    appender = std::make_unique<ObjectAppender>(*sink, ao, &logger);
    if (config.write_manifests) {
        ManifestOptions mo;
        mo.library_version = library_version();
        mo.attributes = ao.attributes;
        manifests = std::make_unique<Manifests>(*sink, mo, &logger);
    }
    BatchObjectsOptions bo;
    bo.attributes = ao.attributes;
    bo.compaction_max_bytes = static_cast<std::uint64_t>(config.s3_compaction_max_bytes);
    batches = std::make_unique<BatchObjects>(*sink, *appender, bo, &logger);
    const bool batch_mode = choices.s3_append_mode == AppendMode::Batches;
    FlusherOptions f;
    f.batch_objects = batch_mode;
    f.max_bytes = static_cast<std::uint64_t>(config.flush_max_bytes);
    f.interval = std::chrono::milliseconds(config.flush_interval_ms);
    f.timeout = std::chrono::milliseconds(config.flush_timeout_ms);
    f.hurry_bytes = static_cast<std::uint64_t>(config.spool_max_bytes) / 2;
    f.adopt_max_bytes = static_cast<std::uint64_t>(config.spool_max_bytes);
    f.on_landed = [this](const LandedBatch& l) { landed(l); };
    const SpoolOptions so = spool_options(config, choices);
    spool = Spool::create(so, &logger);
    // Registered before its first claim: its claims are held while it lives.
    dedup->hold_owner(spool->id(), spool->path());
    flusher = std::make_unique<Flusher>(*appender, *batches, *dedup, logger, f, *spool, so);
    if (!dedup->cheap_claims()) claimer = std::make_unique<Claimer>(*dedup, *spool, *flusher, logger);
    if (batch_mode && config.s3_compaction_interval_seconds > 0) {
        compactor = std::make_unique<Compactor>(
            *batches, logger, std::chrono::seconds(config.s3_compaction_interval_seconds),
            [this] { appender->cancel(); },
            [this](const std::string& month_key, const Fold& fold) {
                if (manifests) manifests->advance(month_key, fold.end, fold.body);
                metrics.object_size(domain_of(month_key), fold.end);
            });
    }
    logger.log(LogLevel::Info, "training_output_enabled",
               {{"sink", sink->describe()},
                {"dedup_store", store_kind},
                {"spool", spool->path()},
                {"prefix", config.training_data_prefix},
                {"include_metadata", config.include_training_metadata}});
}

}  // namespace training_output
