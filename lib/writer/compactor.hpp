// Compactor: in the batches mode, the writer's background thread that folds
// the batch objects of the monthly files it wrote into them, every interval
// (a Compaction; one compactor per file at a time, by its lease:
// in a fleet, whoever comes first). Files that had nothing left to fold are
// forgotten until this writer writes to them again.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "append/batch_objects.hpp"
#include "log/logger.hpp"

namespace training_output {

class Compactor {
public:
    // `stop_work` makes a compaction in progress end early (the appender's
    // cancel()); `folded` follows each fold (the writer's manifests and
    // metrics), on the compactor's thread; it must not throw.
    using Folded = std::function<void(const std::string& month_key, const Fold& fold)>;
    Compactor(BatchObjects& batches, const Logger& logger, std::chrono::milliseconds interval,
              std::function<void()> stop_work, Folded folded);
    ~Compactor();
    Compactor(const Compactor&) = delete;
    Compactor& operator=(const Compactor&) = delete;

    // Stops the thread; a compaction in progress is cut short (what it
    // folded stays; a fold it leaves is finished by the next compaction).
    void stop();

private:
    void run();

    BatchObjects& batches_;
    const Logger& logger_;
    const std::chrono::milliseconds interval_;
    std::function<void()> stop_work_;
    Folded folded_;
    std::mutex mutex_;
    std::condition_variable wake_;
    bool stopping_ = false;
    bool working_ = false;
    std::set<std::string> months_;  // to compact (the thread's)
    std::thread thread_;
};

}  // namespace training_output
