// What the stores of one machine (SQLite, log) number an owner by when it
// never registered.
#pragma once

#include <cstdint>
#include <string>

namespace training_output::dedup {

// Negative, so never a registered owner's (theirs count up from 1), and the
// same in every process: an FNV-1a hash of the id. A claim under such a
// number is an orphan: free to be taken.
inline std::int64_t unregistered_owner_number(const std::string& id) {
    std::uint64_t h = 1469598103934665603ull;
    for (unsigned char c : id) h = (h ^ c) * 1099511628211ull;
    return -static_cast<std::int64_t>(h >> 1) - 1;
}

}  // namespace training_output::dedup
