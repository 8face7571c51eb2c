// TrainingOutput: the writer. format -> claim -> append -> commit.
#include "training_output/training_output.hpp"

#include <array>
#include <atomic>
#include <mutex>

#include "common/json.hpp"
#include "training_output/deduplicator.hpp"
#include "training_output/directory_sink.hpp"
#include "training_output/object_appender.hpp"

namespace training_output {
namespace {

std::unique_ptr<DedupStore> open_store(const Config& c) {
    if (c.dedup_store == "memory") return make_memory_dedup_store();
    SqliteStoreOptions o;
    o.path = c.dedup_db_path;
    o.busy_timeout = std::chrono::milliseconds(c.dedup_busy_timeout_ms);
    return make_sqlite_dedup_store(o);
}

}  // namespace

struct TrainingOutput::Impl {
    Config config;
    Logger logger;
    TrainingDataFormatter formatter;
    std::unique_ptr<S3Sink> sink;
    std::unique_ptr<TrainingDeduplicator> dedup;
    std::unique_ptr<ObjectAppender> appender;
    // Appends to one key from threads of this process take turns instead of
    // racing each other through conditional-write conflicts.
    std::array<std::mutex, 16> key_locks;
    std::atomic<bool> closed{false};

    std::atomic<std::uint64_t> written{0}, duplicates{0}, skipped{0}, disabled{0}, errors{0};
    std::atomic<std::uint64_t> lines_appended{0}, bytes_appended{0}, batches_appended{0};

    Impl(Config c, WriterComponents components)
        : config((c.finalize(), std::move(c))),
          logger(config.log_level),
          formatter(FormatterOptions{config.include_training_metadata, config.training_data_prefix},
                    config.templates_file.empty() ? TemplateTable::builtin()
                                                  : TemplateTable::from_file_over_builtin(config.templates_file)) {
        if (!config.enable_training_output) {
            logger.log(LogLevel::Info, "training_output_disabled", {});
            return;  // no I/O at all
        }
        if (!config.s3_endpoint_url.empty()) {
            throw Error(ErrorCode::Config, "configuration key \"s3_endpoint_url\": this build has no S3 sink yet");
        }
        sink = components.sink ? std::move(components.sink)
                               : make_directory_sink(DirectorySinkOptions{config.output_dir, config.directory_fsync});
        auto store = components.dedup_store ? std::move(components.dedup_store) : open_store(config);
        DeduplicatorOptions d;
        d.key_namespace = config.dedup_namespace;
        d.claim_ttl = std::chrono::seconds(config.dedup_claim_ttl_seconds);
        d.committed_ttl = std::chrono::seconds(config.dedup_ttl_seconds);
        const char* store_kind = store->kind();
        dedup = std::make_unique<TrainingDeduplicator>(std::move(store), d, &logger);
        appender = std::make_unique<ObjectAppender>(*sink, AppendOptions{}, &logger);
        logger.log(LogLevel::Info, "training_output_enabled",
                   {{"sink", sink->describe()},
                    {"dedup_store", store_kind},
                    {"prefix", config.training_data_prefix},
                    {"include_metadata", config.include_training_metadata}});
    }

    template <class FormatFn>
    Outcome generate(FormatFn&& format) {
        if (closed.load(std::memory_order_acquire)) throw Error(ErrorCode::Closed, "the writer is closed");
        if (!config.enable_training_output) {
            disabled.fetch_add(1, std::memory_order_relaxed);
            return Outcome::Disabled;
        }
        TrainingExample ex;
        try {
            ex = format();
            if (ex.line.size() > static_cast<std::uint64_t>(config.max_line_bytes)) {
                throw Error(ErrorCode::InvalidInput, "the example is " + std::to_string(ex.line.size()) +
                                                         " bytes; max_line_bytes is " +
                                                         std::to_string(config.max_line_bytes));
            }
        } catch (const Error& e) {
            errors.fetch_add(1, std::memory_order_relaxed);
            logger.log(LogLevel::Info, "training_output_error", {{"error", e.what()}, {"code", error_code_name(e.code())}});
            throw;
        }
        if (ex.skipped()) {
            skipped.fetch_add(1, std::memory_order_relaxed);
            logger.log(LogLevel::Info, "training_output_skipped",
                       {{"record_type", ex.record_type}, {"reason", ex.skip_reason}});
            return Outcome::Skipped;
        }

        const std::string key = dedup->key_for(ex.content_hash);
        ClaimOutcome claim = dedup->claim(key);
        if (claim == ClaimOutcome::Duplicate) {
            duplicates.fetch_add(1, std::memory_order_relaxed);
            logger.log(LogLevel::Info, "skipping_duplicate_training_example",
                       {{"record_type", ex.record_type}, {"content_hash", key}, {"health_domain", ex.health_domain}});
            return Outcome::Duplicate;
        }
        try {
            std::lock_guard<std::mutex> lock(key_locks[std::hash<std::string>{}(ex.object_key) % key_locks.size()]);
            appender->append(ex.object_key, ex.line);
        } catch (const std::exception& e) {
            if (claim == ClaimOutcome::Claimed) dedup->release(key);
            errors.fetch_add(1, std::memory_order_relaxed);
            logger.log(LogLevel::Error, "training_output_failed",
                       {{"record_type", ex.record_type}, {"object_key", ex.object_key}, {"error", e.what()}});
            if (dynamic_cast<const Error*>(&e)) throw;
            throw Error(ErrorCode::Storage, e.what());
        }
        if (claim == ClaimOutcome::Claimed) dedup->commit({key});
        lines_appended.fetch_add(1, std::memory_order_relaxed);
        bytes_appended.fetch_add(ex.line.size(), std::memory_order_relaxed);
        batches_appended.fetch_add(1, std::memory_order_relaxed);
        written.fetch_add(1, std::memory_order_relaxed);
        logger.log(LogLevel::Info, "training_output_generated",
                   {{"record_type", ex.record_type},
                    {"health_domain", ex.health_domain},
                    {"object_key", ex.object_key},
                    {"content_hash", key}});
        return Outcome::Written;
    }
};

TrainingOutput::TrainingOutput(Config config, WriterComponents components)
    : impl_(std::make_unique<Impl>(std::move(config), std::move(components))) {}

TrainingOutput::~TrainingOutput() {
    try {
        close();
    } catch (...) {
    }
}

Outcome TrainingOutput::generate(std::string_view narrative, std::string_view message_data_json,
                                 std::string_view result_json) {
    return impl_->generate([&] { return impl_->formatter.format_json(narrative, message_data_json, result_json); });
}

Outcome TrainingOutput::generate(std::string_view narrative, const MessageData& message,
                                 const ProcessingResult& result) {
    return impl_->generate([&] { return impl_->formatter.format(narrative, message, result); });
}

void TrainingOutput::flush() {
    if (impl_->closed.load(std::memory_order_acquire)) throw Error(ErrorCode::Closed, "the writer is closed");
    // Every accepted example is already in its object.
}

void TrainingOutput::close() { impl_->closed.store(true, std::memory_order_release); }

WriterStats TrainingOutput::stats() const {
    WriterStats s;
    s.written = impl_->written.load();
    s.duplicates = impl_->duplicates.load();
    s.skipped = impl_->skipped.load();
    s.disabled = impl_->disabled.load();
    s.errors = impl_->errors.load();
    s.dedup_store_errors = impl_->dedup ? impl_->dedup->store_errors() : 0;
    s.lines_appended = impl_->lines_appended.load();
    s.bytes_appended = impl_->bytes_appended.load();
    s.batches_appended = impl_->batches_appended.load();
    s.append_conflicts = impl_->appender ? impl_->appender->conflicts() : 0;
    return s;
}

std::string TrainingOutput::stats_json() const {
    WriterStats s = stats();
    rapidjson::StringBuffer buffer;
    rapidjson::Writer<rapidjson::StringBuffer> w(buffer);
    w.StartObject();
    const std::pair<const char*, std::uint64_t> fields[] = {
        {"written", s.written},
        {"duplicates", s.duplicates},
        {"skipped", s.skipped},
        {"disabled", s.disabled},
        {"errors", s.errors},
        {"dedup_store_errors", s.dedup_store_errors},
        {"lines_appended", s.lines_appended},
        {"bytes_appended", s.bytes_appended},
        {"batches_appended", s.batches_appended},
        {"append_conflicts", s.append_conflicts},
    };
    for (const auto& [name, value] : fields) {
        w.Key(name);
        w.Uint64(value);
    }
    w.EndObject();
    return std::string(buffer.GetString(), buffer.GetSize());
}

const Config& TrainingOutput::config() const { return impl_->config; }

}  // namespace training_output
