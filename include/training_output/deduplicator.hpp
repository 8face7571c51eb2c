// TrainingDeduplicator: content hash -> "{namespace}:{hex}" -> DedupStore,
// with the fail-open policy: when the store cannot answer, the example is
// written anyway and the error is counted and logged (once per outage).
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "training_output/dedup_store.hpp"
#include "training_output/formatter.hpp"
#include "training_output/log.hpp"

namespace training_output {

enum class ClaimOutcome {
    Claimed,     // new content: write it, then commit (or release on failure)
    Duplicate,   // already written (or being written by someone else)
    FailedOpen,  // the store failed; write it anyway, nothing to commit
};

struct DeduplicatorOptions {
    std::string key_namespace = "training";
    std::chrono::seconds claim_ttl{86400};
    std::chrono::seconds committed_ttl{0};  // 0 = forever
};

class TrainingDeduplicator {
public:
    TrainingDeduplicator(std::unique_ptr<DedupStore> store, DeduplicatorOptions options,
                         const Logger* logger);

    std::string key_for(const Sha256& hash) const;

    ClaimOutcome claim(const std::string& key);
    // claim() for many keys in one store call (pipelined on Redis); when the
    // store fails, every outcome is FailedOpen.
    std::vector<ClaimOutcome> claim_batch(const std::vector<std::string>& keys);
    // Store errors are counted and logged, never thrown: the line is written.
    void commit(const std::vector<std::string>& keys);
    void release(const std::string& key);

    std::uint64_t store_errors() const { return store_errors_.load(std::memory_order_relaxed); }
    DedupStore& store() { return *store_; }

private:
    void on_store_error(const char* operation, const std::exception& e);
    void on_store_success();

    std::unique_ptr<DedupStore> store_;
    DeduplicatorOptions options_;
    const Logger* logger_;
    std::atomic<std::uint64_t> store_errors_{0};
    std::atomic<bool> in_outage_{false};
};

}  // namespace training_output
