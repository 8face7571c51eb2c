// Claimer: the dedup claims of new content, made from a thread of the
// writer's, many at a time (one SQLite transaction, one Redis pipeline), so
// that no generate() call waits for a claim of its own.
//
// generate() has spooled the line (no claim without a spooled line) and
// answered WRITTEN; the line waits in the flusher, not deliverable, until its
// claim is settled here: claimed -> deliverable; written already or held by
// another live writer -> voided in the spool, never delivered (counted in
// lines_voided); the store failed -> delivered once its claim is confirmed,
// or anyway (fail open). So a line is only delivered by the spool that holds
// its claim, as before; what changes is when another writer's duplicate is
// found: for two writers that accept the same content in the same instant,
// after the answer instead of before it.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "dedup/deduplicator.hpp"
#include "delivery/flusher.hpp"
#include "log/logger.hpp"
#include "spool/spool.hpp"

namespace training_output {

class Claimer {
public:
    struct Item {
        std::string key;
        std::string object_key;
        SpoolLineRef ref;
        Flusher::Handle handle;
    };

    Claimer(TrainingDeduplicator& dedup, Spool& spool, Flusher& flusher, const Logger& logger);
    ~Claimer();  // settles what was added, then stops
    Claimer(const Claimer&) = delete;
    Claimer& operator=(const Claimer&) = delete;

    void add(Item item);
    // Every item added before the call is settled.
    void drain();

private:
    void run();
    void settle(std::vector<Item>& group);

    TrainingDeduplicator& dedup_;
    Spool& spool_;
    Flusher& flusher_;
    const Logger& logger_;

    std::mutex mutex_;
    std::condition_variable wake_, settled_;
    std::vector<Item> queue_;
    std::uint64_t added_ = 0, done_ = 0;  // items
    bool stopping_ = false;
    bool running_ = false;  // the thread runs (it ends after an idle while; add() starts it again)
    bool idle_ = false;     // the thread waits for lines: the next add() wakes it
    bool hurry_ = false;    // drain() waits: no nap
    std::thread thread_;
};

}  // namespace training_output
