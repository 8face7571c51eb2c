// What the stores of one machine (SQLite, log) share: the clock their
// commits expire by, and the number of an owner that never registered.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace training_output::dedup {

inline std::int64_t unix_now() {
    return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

// When a commit made now with `ttl` ends (unix seconds). Saturating: a TTL
// of many years never wraps into the past.
inline std::int64_t expiry(std::chrono::seconds ttl) {
    const std::int64_t now = unix_now();
    return ttl.count() > INT64_MAX - now ? INT64_MAX : now + ttl.count();
}

// Negative, so never a registered owner's (theirs count up from 1), and the
// same in every process: an FNV-1a hash of the id. A claim under such a
// number is an orphan: free to be taken.
inline std::int64_t unregistered_owner_number(const std::string& id) {
    std::uint64_t h = 1469598103934665603ull;
    for (unsigned char c : id) h = (h ^ c) * 1099511628211ull;
    return -static_cast<std::int64_t>(h >> 1) - 1;
}

}  // namespace training_output::dedup
