// TrainingOutput's insides, shared by the files of the writer:
//   wiring.cpp          the configuration turned into components, built and started;
//   accept.cpp          the accept path: generate() -> format -> spool -> claim;
//   training_output.cpp the writer's life: flush, drain, close, stats, and what
//                       follows a landed batch (manifest, metrics, span, log,
//                       the host's callback).
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "append/batch_objects.hpp"
#include "append/object_appender.hpp"
#include "dedup/deduplicator.hpp"
#include "delivery/flusher.hpp"
#include "format/formatter.hpp"
#include "log/logger.hpp"
#include "manifest/manifest.hpp"
#include "spool/spool.hpp"
#include "training_output/training_output.hpp"
#include "writer/claimer.hpp"
#include "writer/compactor.hpp"
#include "writer/metrics.hpp"

namespace training_output {

// Counts the fork()s of this process, as seen by each child: a writer opened
// before the count changed belongs to another process.
std::uint64_t fork_generation();

// Why the thread's last call was skipped ("" when it was not).
extern thread_local const char* t_last_skip_reason;

struct TrainingOutput::Impl {
    Config config;
    Choices choices;  // config's enumerated values, parsed once
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
    bool forked() const { return fork_generation() != fork_generation_at_open; }
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

    // wiring.cpp
    Impl(Config c, WriterComponents components);

    // accept.cpp
    // An argument larger than a whole line is refused before any work on it
    // (a line holds the narrative, escaped, and what it keeps of the JSON).
    void check_size(std::string_view text, const char* what) const;
    template <class FormatFn>
    Outcome generate(FormatFn&& format);
    Outcome accepted(const TrainingExample& ex, const std::string& key);
    // Duplicate: written already; Pending: held by a live writer's line.
    Outcome duplicate(const TrainingExample& ex, const std::string& key, ClaimOutcome claim);

    // training_output.cpp
    // A batch landed: its manifest first, then the host's callback.
    void landed(const LandedBatch& l) noexcept;
};

// After fork(), in the child: the parent's threads, locks and spool are not
// this process's. The writer's memory is left as it is (freeing it would
// join threads that do not exist here and remove the parent's files).
template <class Impl>
bool abandon_if_forked(std::unique_ptr<Impl>& impl) {
    if (!impl || !impl->forked()) return false;
    (void)impl.release();
    return true;
}

}  // namespace training_output
