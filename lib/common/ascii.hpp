// ASCII case, for names that are case-insensitive on the wire (URL schemes
// and hosts, HTTP header names, boolean words in the environment).
#pragma once

#include <cctype>
#include <string>
#include <string_view>

namespace training_output {

// `s` with A-Z lower-cased; every other byte as it is.
inline std::string ascii_lower(std::string_view s) {
    std::string out(s);
    for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return out;
}

}  // namespace training_output
