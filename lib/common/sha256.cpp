#include "common/sha256.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <cstring>

#include "training_output/error.hpp"

namespace training_output::crypto {
namespace {

const EVP_MD* sha256_md() {
    static const EVP_MD* md = [] {
        const EVP_MD* fetched = EVP_MD_fetch(nullptr, "SHA256", nullptr);
        return fetched ? fetched : EVP_sha256();
    }();
    return md;
}

}  // namespace

Sha256Stream::Sha256Stream() : ctx_(EVP_MD_CTX_new()) {
    if (!ctx_ || EVP_DigestInit_ex(static_cast<EVP_MD_CTX*>(ctx_), sha256_md(), nullptr) != 1) {
        EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(ctx_));
        throw Error(ErrorCode::Internal, "OpenSSL: SHA-256 is not available");
    }
}

Sha256Stream::~Sha256Stream() { EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(ctx_)); }

void Sha256Stream::update(const void* data, std::size_t size) {
    EVP_DigestUpdate(static_cast<EVP_MD_CTX*>(ctx_), data, size);
}

Digest Sha256Stream::finish() {
    Digest out{};
    unsigned int len = 0;
    auto* ctx = static_cast<EVP_MD_CTX*>(ctx_);
    EVP_DigestFinal_ex(ctx, out.data(), &len);
    EVP_DigestInit_ex(ctx, sha256_md(), nullptr);  // ready for the next use
    return out;
}

Digest sha256(std::string_view data) {
    thread_local Sha256Stream stream;
    stream.update(data);
    return stream.finish();
}

Digest hmac_sha256(std::string_view key, std::string_view data) {
    Digest out{};
    unsigned int len = 0;
    if (!HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
              reinterpret_cast<const unsigned char*>(data.data()), data.size(), out.data(), &len) ||
        len != out.size()) {
        throw Error(ErrorCode::Internal, "OpenSSL: HMAC-SHA256 failed");
    }
    return out;
}

HmacSha256::HmacSha256(std::string_view key) : inner_(EVP_MD_CTX_new()), outer_(EVP_MD_CTX_new()) {
    unsigned char block[64] = {};
    if (key.size() > sizeof block) {
        const Digest d = sha256(key);
        std::memcpy(block, d.data(), d.size());
    } else {
        std::memcpy(block, key.data(), key.size());
    }
    unsigned char pad[64];
    auto absorb = [&](void* ctx, unsigned char with) {
        for (std::size_t k = 0; k < sizeof pad; ++k) pad[k] = static_cast<unsigned char>(block[k] ^ with);
        return ctx && EVP_DigestInit_ex(static_cast<EVP_MD_CTX*>(ctx), sha256_md(), nullptr) == 1 &&
               EVP_DigestUpdate(static_cast<EVP_MD_CTX*>(ctx), pad, sizeof pad) == 1;
    };
    const bool ok = absorb(inner_, 0x36) && absorb(outer_, 0x5c);
    OPENSSL_cleanse(block, sizeof block);
    OPENSSL_cleanse(pad, sizeof pad);
    if (!ok) {
        EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(inner_));
        EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(outer_));
        throw Error(ErrorCode::Internal, "OpenSSL: HMAC-SHA256 is not available");
    }
}

HmacSha256::~HmacSha256() {
    EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(inner_));
    EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(outer_));
}

Digest HmacSha256::digest(std::string_view a, std::string_view b, std::string_view c) const {
    struct Work {
        EVP_MD_CTX* ctx = EVP_MD_CTX_new();
        ~Work() { EVP_MD_CTX_free(ctx); }
    };
    thread_local Work work;
    Digest inner{}, out{};
    unsigned int len = 0;
    if (!work.ctx || EVP_MD_CTX_copy_ex(work.ctx, static_cast<const EVP_MD_CTX*>(inner_)) != 1 ||
        EVP_DigestUpdate(work.ctx, a.data(), a.size()) != 1 || EVP_DigestUpdate(work.ctx, b.data(), b.size()) != 1 ||
        EVP_DigestUpdate(work.ctx, c.data(), c.size()) != 1 || EVP_DigestFinal_ex(work.ctx, inner.data(), &len) != 1 ||
        EVP_MD_CTX_copy_ex(work.ctx, static_cast<const EVP_MD_CTX*>(outer_)) != 1 ||
        EVP_DigestUpdate(work.ctx, inner.data(), inner.size()) != 1 ||
        EVP_DigestFinal_ex(work.ctx, out.data(), &len) != 1) {
        throw Error(ErrorCode::Internal, "OpenSSL: HMAC-SHA256 failed");
    }
    return out;
}

void append_hex(std::string& out, const std::uint8_t* data, std::size_t size) {
    static const char digits[] = "0123456789abcdef";
    const std::size_t at = out.size();
    out.resize(at + size * 2);
    for (std::size_t i = 0; i < size; ++i) {
        out[at + 2 * i] = digits[data[i] >> 4];
        out[at + 2 * i + 1] = digits[data[i] & 0xF];
    }
}

namespace {
// Lower-case hex digits' values; -1 for any other byte.
struct HexValues {
    signed char v[256];
    constexpr HexValues() : v() {
        for (int i = 0; i < 256; ++i) v[i] = -1;
        for (int i = 0; i < 10; ++i) v['0' + i] = static_cast<signed char>(i);
        for (int i = 0; i < 6; ++i) v['a' + i] = static_cast<signed char>(10 + i);
    }
};
constexpr HexValues kHexValues;
}  // namespace

bool parse_hex(std::string_view text, std::uint8_t* out, std::size_t size) {
    if (text.size() != 2 * size) return false;
    for (std::size_t i = 0; i < size; ++i) {
        const int hi = kHexValues.v[static_cast<unsigned char>(text[2 * i])];
        const int lo = kHexValues.v[static_cast<unsigned char>(text[2 * i + 1])];
        if (hi < 0 || lo < 0) return false;
        out[i] = static_cast<std::uint8_t>(hi << 4 | lo);
    }
    return true;
}

std::string hex(const std::uint8_t* data, std::size_t size) {
    std::string out;
    append_hex(out, data, size);
    return out;
}

}  // namespace training_output::crypto
