// Fuzzes the formatter's JSON entry point: narrative, message_data and result
// separated by NUL bytes. Whatever the input, it either throws
// training_output::Error or returns a single valid JSON line.
#include <rapidjson/document.h>

#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "format/formatter.hpp"
#include "training_output/error.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string_view in(reinterpret_cast<const char*>(data), size);
    std::string_view parts[3];
    for (int i = 0; i < 3; ++i) {
        auto nul = in.find('\0');
        parts[i] = in.substr(0, nul);
        in = nul == std::string_view::npos ? std::string_view() : in.substr(nul + 1);
    }
    static const training_output::TrainingDataFormatter formatter;
    try {
        auto ex = formatter.format_json(parts[0], parts[1], parts[2].empty() ? std::string_view("{}") : parts[2]);
        if (ex.skipped()) return 0;
        if (ex.line.empty() || ex.line.back() != '\n' || ex.line.find('\n') != ex.line.size() - 1) std::abort();
        if (!training_output::is_valid_utf8(ex.line)) std::abort();
        rapidjson::Document doc;
        doc.Parse<rapidjson::kParseValidateEncodingFlag>(ex.line.data(), ex.line.size() - 1);
        if (doc.HasParseError() || !doc.IsObject()) std::abort();
    } catch (const training_output::Error&) {}
    return 0;
}
