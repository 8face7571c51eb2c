// TrainingDeduplicator: keys and the fail-open policy.
#include "training_output/deduplicator.hpp"

#include "common/sha256.hpp"
#include "training_output/error.hpp"

namespace training_output {

TrainingDeduplicator::TrainingDeduplicator(std::unique_ptr<DedupStore> store, DeduplicatorOptions options,
                                           const Logger* logger)
    : store_(std::move(store)), options_(std::move(options)), logger_(logger) {}

std::string TrainingDeduplicator::key_for(const Sha256& hash) const {
    std::string key;
    key.reserve(options_.key_namespace.size() + 65);
    key.append(options_.key_namespace);
    key.push_back(':');
    crypto::append_hex(key, hash.data(), hash.size());
    return key;
}

ClaimOutcome TrainingDeduplicator::claim(const std::string& key) {
    try {
        bool claimed = store_->claim(key, options_.claim_ttl);
        on_store_success();
        return claimed ? ClaimOutcome::Claimed : ClaimOutcome::Duplicate;
    } catch (const std::exception& e) {
        on_store_error("claim", e);
        return ClaimOutcome::FailedOpen;
    }
}

std::vector<ClaimOutcome> TrainingDeduplicator::claim_batch(const std::vector<std::string>& keys) {
    std::vector<ClaimOutcome> out;
    if (keys.empty()) return out;
    out.reserve(keys.size());
    try {
        for (bool won : store_->claim_batch(keys, options_.claim_ttl)) {
            out.push_back(won ? ClaimOutcome::Claimed : ClaimOutcome::Duplicate);
        }
        on_store_success();
    } catch (const std::exception& e) {
        on_store_error("claim", e);
        out.assign(keys.size(), ClaimOutcome::FailedOpen);
    }
    return out;
}

void TrainingDeduplicator::commit(const std::vector<std::string>& keys) {
    if (keys.empty()) return;
    try {
        store_->commit(keys, options_.committed_ttl);
        on_store_success();
    } catch (const std::exception& e) {
        on_store_error("commit", e);
    }
}

void TrainingDeduplicator::release(const std::string& key) {
    try {
        store_->release(key);
        on_store_success();
    } catch (const std::exception& e) {
        on_store_error("release", e);
    }
}

void TrainingDeduplicator::on_store_error(const char* operation, const std::exception& e) {
    store_errors_.fetch_add(1, std::memory_order_relaxed);
    // One log line per outage, not per call.
    if (!in_outage_.exchange(true) && logger_) {
        logger_->log(LogLevel::Error, "training_output_error",
                     {{"error", e.what()},
                      {"operation", operation},
                      {"store", store_->kind()},
                      {"detail", "dedup store failed; writing examples without dedup until it recovers"}});
    }
}

void TrainingDeduplicator::on_store_success() {
    if (in_outage_.load(std::memory_order_relaxed) && in_outage_.exchange(false) && logger_) {
        logger_->log(LogLevel::Warning, "training_output_dedup_recovered",
                     {{"store", store_->kind()}, {"store_errors", store_errors_.load()}});
    }
}

}  // namespace training_output
