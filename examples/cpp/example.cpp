// The C++ API: typed inputs, exceptions for errors.
#include <iostream>

#include "training_output/training_output.hpp"

int main(int argc, char** argv) {
    namespace to = training_output;
    try {
        to::Config config;
        config.output_dir = argc > 1 ? argv[1] : "./training-data";
        config.finalize();
        to::TrainingOutput writer(config);

        to::MessageData message;
        message.record_type = "SleepSessionRecord";
        message.user_id = "user-42";
        to::ProcessingResult result;
        result.record_count = 7;
        result.quality_score = 0.91;
        result.clinical_insights_json = R"({"avg_duration_hours": 7.4, "sleep_efficiency": 0.9})";
        result.processing_timestamp = "2025-11-18T10:30:00Z";

        to::Outcome outcome =
            writer.generate("Sleep averaged 7 h 24 min per night with 90% efficiency over one week.", message, result);
        std::cout << "outcome: " << to::outcome_name(outcome) << "\n";
        writer.flush();
        std::cout << "stats: " << writer.stats_json() << "\n";
    } catch (const to::Error& e) {
        std::cerr << to::error_code_name(e.code()) << ": " << e.what() << "\n";
        return 1;
    }
    return 0;
}
