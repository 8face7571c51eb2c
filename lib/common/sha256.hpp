// SHA-256 through OpenSSL's EVP interface, with the digest fetched once and a
// context reused per thread (the hot path hashes every example).
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>

namespace training_output::crypto {

using Digest = std::array<std::uint8_t, 32>;

class Sha256Stream {
public:
    Sha256Stream();
    ~Sha256Stream();
    Sha256Stream(const Sha256Stream&) = delete;
    Sha256Stream& operator=(const Sha256Stream&) = delete;
    void update(const void* data, std::size_t size);
    void update(std::string_view s) { update(s.data(), s.size()); }
    Digest finish();

private:
    void* ctx_;  // EVP_MD_CTX*
};

Digest sha256(std::string_view data);
// HMAC-SHA256 of `data` under `key` (RFC 2104).
Digest hmac_sha256(std::string_view key, std::string_view data);

// HMAC-SHA256 under one key, many times: the padded key is hashed once, and
// each digest starts from copies of those states (two SHA-256 finishes
// instead of a MAC set up per call). Thread-safe.
class HmacSha256 {
public:
    explicit HmacSha256(std::string_view key);
    ~HmacSha256();
    HmacSha256(const HmacSha256&) = delete;
    HmacSha256& operator=(const HmacSha256&) = delete;
    // HMAC(key, a || b || c).
    Digest digest(std::string_view a, std::string_view b = {}, std::string_view c = {}) const;

private:
    void* inner_;  // EVP_MD_CTX* that absorbed key ^ ipad
    void* outer_;  // EVP_MD_CTX* that absorbed key ^ opad
};
std::string hex(const std::uint8_t* data, std::size_t size);
// The same, appended to `out` (no string of its own).
void append_hex(std::string& out, const std::uint8_t* data, std::size_t size);
inline std::string hex(const Digest& d) { return hex(d.data(), d.size()); }
// Lower-case hex digits back to `size` bytes: false unless `text` is exactly
// 2 * size of them.
bool parse_hex(std::string_view text, std::uint8_t* out, std::size_t size);

}  // namespace training_output::crypto
