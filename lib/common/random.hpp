// Randomness that needs no seeding ceremony: tokens and backoff jitter.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace training_output::random {

// `bytes` random bytes from OpenSSL, as lower-case hex.
std::string token_hex(std::size_t bytes = 16);

// Uniform in [0, bound) from a per-thread generator.
std::uint64_t uniform(std::uint64_t bound);

// Full-jitter exponential backoff: uniform in [0, min(cap, base * 2^attempt)).
std::chrono::milliseconds full_jitter(int attempt, std::chrono::milliseconds base, std::chrono::milliseconds cap);

}  // namespace training_output::random
