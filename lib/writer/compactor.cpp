#include "writer/compactor.hpp"

#include "common/thread.hpp"
#include "training_output/error.hpp"

namespace training_output {

Compactor::Compactor(BatchObjects& batches, const Logger& logger, std::chrono::milliseconds interval,
                     std::function<void()> stop_work, Folded folded)
    : batches_(batches),
      logger_(logger),
      interval_(interval),
      stop_work_(std::move(stop_work)),
      folded_(std::move(folded)) {
    thread_ = start_thread([this] { run(); });
}

Compactor::~Compactor() { stop(); }

void Compactor::stop() {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        if (stopping_ && !thread_.joinable()) return;
        stopping_ = true;
        if (working_ && stop_work_) stop_work_();
    }
    wake_.notify_all();
    if (thread_.joinable()) thread_.join();
}

void Compactor::run() {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
        wake_.wait_for(lock, interval_, [&] { return stopping_; });
        if (stopping_) return;
        for (auto& m : batches_.take_months_written()) months_.insert(m);
        working_ = true;
        lock.unlock();
        for (auto it = months_.begin(); it != months_.end();) {
            const auto started = std::chrono::steady_clock::now();
            bool forget = false;
            try {
                Compaction c(batches_, *it);
                while (const Fold* fold = c.next()) {
                    if (folded_) folded_(*it, *fold);
                }
                const CompactionResult& r = c.result();
                forget = r.ran && r.folds == 0;
                if (r.folds > 0) {
                    logger_.log(LogLevel::Info, "training_output_compacted",
                                {{"key", *it},
                                 {"batch_objects", r.batches},
                                 {"bytes", r.bytes},
                                 {"folds", r.folds},
                                 {"removed", r.deleted},
                                 {"duration_ms",
                                  static_cast<std::int64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                                                std::chrono::steady_clock::now() - started)
                                                                .count())}});
                }
            } catch (const Error& e) {
                // Cut short by close() is no failure: the next compaction finishes it.
                logger_.log(e.code() == ErrorCode::Closed ? LogLevel::Info : LogLevel::Warning,
                            "training_output_compaction_failed", {{"key", *it}, {"error", e.what()}});
            } catch (const std::exception& e) {
                logger_.log(LogLevel::Warning, "training_output_compaction_failed",
                            {{"key", *it}, {"error", e.what()}});
            }
            it = forget ? months_.erase(it) : std::next(it);
            std::lock_guard<std::mutex> check(mutex_);
            if (stopping_) break;
        }
        lock.lock();
        working_ = false;
    }
}

}  // namespace training_output
