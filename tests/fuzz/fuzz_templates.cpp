// Fuzzes the templates file's parser: whatever the document, it is either a
// table (every record type has an instruction and an input) or Error(Config).
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "format/formatter.hpp"
#include "training_output/error.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view in(reinterpret_cast<const char*>(data), size);
    try {
        const auto table = training_output::TemplateTable::from_json_over_builtin(in, "fuzz");
        const training_output::TrainingDataFormatter formatter({}, table);
        for (const char* type : {"StepsRecord", "SleepSessionRecord", "Unknown"}) {
            if (formatter.instruction_for(type, 7).empty() || formatter.input_for(type, 3).empty()) std::abort();
        }
    } catch (const training_output::Error& e) {
        if (e.code() != training_output::ErrorCode::Config) std::abort();
    }
    return 0;
}
