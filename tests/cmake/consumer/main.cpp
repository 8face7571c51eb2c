// A C++ program on the public headers only: a writer with a dedup store of
// its own (the DedupStore interface), one example written, then a duplicate.
#include <cstdio>
#include <map>
#include <mutex>

#include "training_output/sys/dedup_store.hpp"
#include "training_output/training_output.hpp"

namespace {

class MapStore : public training_output::DedupStore {
public:
    training_output::ClaimState claim(const std::string& key, const std::string& owner, std::chrono::seconds) override {
        std::lock_guard<std::mutex> lock(mutex_);
        auto [it, inserted] = keys_.emplace(key, owner);
        if (inserted) return training_output::ClaimState::Claimed;
        if (it->second.empty()) return training_output::ClaimState::Committed;
        return it->second == owner ? training_output::ClaimState::Own : training_output::ClaimState::Held;
    }
    void commit(const std::vector<std::string>& keys, std::chrono::seconds) override {
        std::lock_guard<std::mutex> lock(mutex_);
        for (const auto& k : keys) keys_[k].clear();
        ++commits;
    }
    void register_owner(const training_output::OwnerRecord&) override {}
    void retire_owner(const std::string&) override {}
    const char* kind() const noexcept override { return "consumer-map"; }
    int commits = 0;

private:
    std::mutex mutex_;
    std::map<std::string, std::string> keys_;  // key -> owner ("" once committed)
};

}  // namespace

int main(int argc, char** argv) {
    training_output::Config c;
    c.output_dir = argc > 1 ? argv[1] : "./out";
    c.log_level = training_output::LogLevel::Off;
    c.finalize();
    auto store = std::make_unique<MapStore>();
    MapStore* seen = store.get();
    training_output::WriterComponents parts;
    parts.dedup_store = std::move(store);
    training_output::TrainingOutput w(c, std::move(parts));
    const auto first = w.generate("Consumer narrative.", R"({"record_type":"StepsRecord"})", "{}");
    const auto again = w.generate("Consumer narrative.", R"({"record_type":"StepsRecord"})", "{}");
    w.close();
    std::printf("%s %s, %d commit(s) in the consumer's store\n", training_output::outcome_name(first),
                training_output::outcome_name(again), seen->commits);
    return first == training_output::Outcome::Written && again == training_output::Outcome::Duplicate &&
                   seen->commits > 0
               ? 0
               : 1;
}
