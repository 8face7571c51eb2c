// TrainingOutput: the writer's life (writer_impl.hpp): open, flush, drain,
// close, stats, and what follows a landed batch. The accept path is in
// accept.cpp, the wiring in wiring.cpp; delivery in lib/delivery/.
#include "training_output/training_output.hpp"

#include <pthread.h>

#include <thread>

#include "common/json.hpp"
#include "writer/spans.hpp"
#include "writer/stats_table.hpp"
#include "writer/wiring.hpp"
#include "writer/writer_impl.hpp"

namespace training_output {

namespace {
std::atomic<std::uint64_t> g_forks{0};
}  // namespace

std::uint64_t fork_generation() {
    static const bool registered = [] {
        ::pthread_atfork(nullptr, nullptr, [] { g_forks.fetch_add(1, std::memory_order_relaxed); });
        return true;
    }();
    (void)registered;
    return g_forks.load(std::memory_order_relaxed);
}

void TrainingOutput::Impl::landed(const LandedBatch& l) noexcept {
    try {
        Delivery d;
        d.object_key = l.key;
        d.lines = l.lines;
        d.bytes = l.size;
        d.object_size = l.offset + l.size;
        if (manifests && !l.batch_object) d.manifest_version = manifests->advance(l.key, l.offset + l.size, l.bytes);
        if (!l.batch_object) metrics.object_size(wiring::domain_of(l.key), d.object_size);
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

TrainingOutput::TrainingOutput(Config config, WriterComponents components)
    : impl_(std::make_unique<Impl>(std::move(config), std::move(components))) {}

TrainingOutput::~TrainingOutput() {
    try {
        close();
    } catch (...) {}
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
    const SpoolOptions so = wiring::spool_options(impl_->config, impl_->choices);
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

void TrainingOutput::set_delivery_callback(DeliveryCallback callback) {
    if (!impl_) throw Error(ErrorCode::Forked, "this writer was opened in another process (before a fork())");
    impl_->check_process();
    std::lock_guard<std::mutex> lock(impl_->delivery_mutex);
    impl_->delivery_callback = std::move(callback);
}

}  // namespace training_output
