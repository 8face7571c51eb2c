// The names the library gives objects beside a monthly file.
#pragma once

#include <string>
#include <string_view>

namespace training_output {

// "<stem>" of a monthly file "<stem>.jsonl" (the key itself without that ending):
// its batch objects, batches manifest and manifest are named after it.
inline std::string object_stem(std::string_view key) {
    constexpr std::string_view ext = ".jsonl";
    if (key.size() > ext.size() && key.substr(key.size() - ext.size()) == ext) key.remove_suffix(ext.size());
    return std::string(key);
}

}  // namespace training_output
