// A processor-like process for multi-process tests:
//   tdo_test_writer_process <config-json> <worker-id> <count> <shared-every> [record-type]
// writes <count> examples; example i is shared by all workers when
// i % shared-every == 0 (0 = none shared), else unique to this worker. The
// record type alternates between two domains unless one is given.
#include <cstdio>
#include <cstdlib>
#include <string>

#include "training_output/training_output.hpp"

int main(int argc, char** argv) {
    if (argc != 5 && argc != 6) {
        std::fprintf(stderr, "usage: %s CONFIG WORKER COUNT SHARED_EVERY [RECORD_TYPE]\n", argv[0]);
        return 2;
    }
    namespace to = training_output;
    std::string worker = argv[2];
    int count = std::atoi(argv[3]);
    int shared_every = std::atoi(argv[4]);
    int written = 0, duplicates = 0, errors = 0;
    try {
        to::TrainingOutput writer(to::Config::from_json(argv[1]));
        for (int i = 0; i < count; ++i) {
            bool shared = shared_every > 0 && i % shared_every == 0;
            std::string narrative = shared ? "Shared narrative number " + std::to_string(i) + "."
                                           : "Worker " + worker + " narrative number " + std::to_string(i) + ".";
            std::string record = argc == 6 ? argv[5] : i % 2 ? "HeartRateRecord" : "StepsRecord";
            try {
                auto outcome = writer.generate(narrative, "{\"record_type\":\"" + record + "\",\"user_id\":\"" + worker + "\"}",
                                               "{\"record_count\":5,\"processing_timestamp\":\"2025-11-18T10:30:00Z\"}");
                if (outcome == to::Outcome::Written) ++written;
                else if (outcome == to::Outcome::Duplicate) ++duplicates;
            } catch (const to::Error& e) {
                ++errors;
                std::fprintf(stderr, "worker %s: %s\n", worker.c_str(), e.what());
            }
        }
        writer.flush();
    } catch (const to::Error& e) {
        std::fprintf(stderr, "worker %s: %s\n", worker.c_str(), e.what());
        return 1;
    }
    if (errors) std::fprintf(stderr, "worker %s: %d written, %d duplicates, %d errors\n", worker.c_str(), written, duplicates, errors);
    return errors ? 1 : 0;
}
