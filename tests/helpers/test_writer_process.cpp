// A processor-like process for multi-process tests:
//   tdo_test_writer_process <config-json> <worker-id> <count> <shared-every> [record-type [threads [stats-file]]]
// writes <count> examples; example i is shared by all workers when
// i % shared-every == 0 (0 = none shared), else unique to this worker. The
// record type alternates between two domains unless one is given ("-" = alternate).
// With <threads> > 1, every thread of the process writes the same <count>
// examples at once (they race on the same content). The writer's stats JSON
// goes to <stats-file> when given.
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "training_output/training_output.hpp"

int main(int argc, char** argv) {
    if (argc < 5 || argc > 8) {
        std::fprintf(stderr, "usage: %s CONFIG WORKER COUNT SHARED_EVERY [RECORD_TYPE [THREADS [STATS_FILE]]]\n",
                     argv[0]);
        return 2;
    }
    namespace to = training_output;
    const std::string worker = argv[2];
    const int count = std::atoi(argv[3]);
    const int shared_every = std::atoi(argv[4]);
    const std::string fixed_record = argc > 5 && std::string(argv[5]) != "-" ? argv[5] : "";
    const int threads = argc > 6 ? std::max(1, std::atoi(argv[6])) : 1;
    const std::string stats_file = argc > 7 ? argv[7] : "";
    std::atomic<int> errors{0};
    try {
        to::TrainingOutput writer(to::Config::from_json(argv[1]));
        auto run = [&] {
            for (int i = 0; i < count; ++i) {
                bool shared = shared_every > 0 && i % shared_every == 0;
                std::string narrative = shared ? "Shared narrative number " + std::to_string(i) + "."
                                               : "Worker " + worker + " narrative number " + std::to_string(i) + ".";
                std::string record = !fixed_record.empty() ? fixed_record : i % 2 ? "HeartRateRecord" : "StepsRecord";
                try {
                    writer.generate(narrative, "{\"record_type\":\"" + record + "\",\"user_id\":\"" + worker + "\"}",
                                    "{\"record_count\":5,\"processing_timestamp\":\"2025-11-18T10:30:00Z\"}");
                } catch (const to::Error& e) {
                    ++errors;
                    std::fprintf(stderr, "worker %s: %s\n", worker.c_str(), e.what());
                }
            }
        };
        std::vector<std::thread> pool;
        for (int t = 1; t < threads; ++t) pool.emplace_back(run);
        run();
        for (auto& t : pool) t.join();
        try {
            writer.flush();
        } catch (const to::Error&) {
            // What the store answered, for the test's output.
            const std::string m = writer.metrics_text();
            std::size_t at = 0;
            while ((at = m.find("\netl_training_s3_requests_total{", at)) != std::string::npos) {
                const std::size_t end = m.find('\n', at + 1);
                std::fprintf(stderr, "worker %s: %s\n", worker.c_str(), m.substr(at + 1, end - at - 1).c_str());
                at = end;
            }
            throw;
        }
        if (!stats_file.empty()) std::ofstream(stats_file) << writer.stats_json() << "\n";
        if (errors) {
            auto s = writer.stats();
            std::fprintf(stderr, "worker %s: %llu written, %llu duplicates, %d errors\n", worker.c_str(),
                         static_cast<unsigned long long>(s.written), static_cast<unsigned long long>(s.duplicates),
                         errors.load());
        }
    } catch (const to::Error& e) {
        std::fprintf(stderr, "worker %s: %s\n", worker.c_str(), e.what());
        return 1;
    }
    return errors ? 1 : 0;
}
