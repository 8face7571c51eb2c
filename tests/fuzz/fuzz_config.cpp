// Fuzzes configuration parsing: any input is a Config or an Error(Config).
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "training_output/config.hpp"
#include "training_output/error.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    try {
        training_output::Config::from_json(std::string_view(reinterpret_cast<const char*>(data), size));
    } catch (const training_output::Error& e) {
        if (e.code() != training_output::ErrorCode::Config) std::abort();
    }
    return 0;
}
