#include "common/random.hpp"

#include <openssl/rand.h>

#include <random>

#include "common/sha256.hpp"
#include "training_output/error.hpp"

namespace training_output::random {

std::string token_hex(std::size_t bytes) {
    std::string raw(bytes, '\0');
    if (RAND_bytes(reinterpret_cast<unsigned char*>(raw.data()), static_cast<int>(bytes)) != 1) {
        throw Error(ErrorCode::Internal, "OpenSSL RAND_bytes failed");
    }
    return crypto::hex(reinterpret_cast<const std::uint8_t*>(raw.data()), raw.size());
}

std::uint64_t uniform(std::uint64_t bound) {
    if (bound == 0) return 0;
    thread_local std::mt19937_64 gen([] {
        std::uint64_t seed = 0;
        if (RAND_bytes(reinterpret_cast<unsigned char*>(&seed), sizeof seed) != 1) {
            seed = static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
        }
        return seed;
    }());
    return std::uniform_int_distribution<std::uint64_t>(0, bound - 1)(gen);
}

std::chrono::milliseconds full_jitter(int attempt, std::chrono::milliseconds base, std::chrono::milliseconds cap) {
    std::int64_t ceiling = base.count();
    for (int i = 0; i < attempt && ceiling < cap.count(); ++i) ceiling *= 2;
    if (ceiling > cap.count()) ceiling = cap.count();
    if (ceiling <= 0) return std::chrono::milliseconds(0);
    return std::chrono::milliseconds(static_cast<std::int64_t>(uniform(static_cast<std::uint64_t>(ceiling))));
}

}  // namespace training_output::random
