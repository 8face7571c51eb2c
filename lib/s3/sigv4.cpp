// AWS Signature Version 4 for S3 (header signing, single-chunk payloads).
#include "s3/sigv4.hpp"

#include <algorithm>
#include <array>
#include <cstdint>

#include "common/sha256.hpp"
#include "common/time.hpp"
#include "training_output/error.hpp"

namespace training_output::sigv4 {
namespace {

constexpr const char* kAlgorithm = "AWS4-HMAC-SHA256";
constexpr const char* kEmptySha256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

using Mac = std::array<std::uint8_t, 32>;

Mac hmac(std::string_view key, std::string_view data) { return crypto::hmac_sha256(key, data); }

std::string_view as_view(const Mac& mac) { return {reinterpret_cast<const char*>(mac.data()), mac.size()}; }

char lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

// RFC 9110 token characters: what a header name may contain.
bool is_tchar(char c) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
    return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

// The SigV4 "trimall": no leading or trailing whitespace, inner runs become
// one space. Whitespace is SP and HTAB, the only ones a field value may hold;
// CR, LF and the other controls are refused so that a value can never smuggle
// in a header of its own.
std::string trimall(std::string_view name, std::string_view value) {
    std::string out;
    out.reserve(value.size());
    bool pending_space = false;
    for (char c : value) {
        const auto u = static_cast<unsigned char>(c);
        if (c == ' ' || c == '\t') {
            pending_space = !out.empty();
            continue;
        }
        if (u < 0x20 || u == 0x7F) {
            throw Error(ErrorCode::InvalidArgument,
                        "sigv4: the value of header " + std::string(name) + " contains a control character");
        }
        if (pending_space) out.push_back(' ');
        pending_space = false;
        out.push_back(c);
    }
    return out;
}

std::string lower_name(std::string_view name) {
    if (name.empty()) throw Error(ErrorCode::InvalidArgument, "sigv4: empty header name");
    std::string out;
    out.reserve(name.size());
    for (char c : name) {
        if (!is_tchar(c)) {
            throw Error(ErrorCode::InvalidArgument, "sigv4: invalid header name " + std::string(name));
        }
        out.push_back(lower(c));
    }
    return out;
}

bool is_hex64(std::string_view s) {
    return s.size() == 64 &&
           std::all_of(s.begin(), s.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

// "UNSIGNED-PAYLOAD", "STREAMING-UNSIGNED-PAYLOAD-TRAILER", ... (an upper-case
// hex digest is not one of them: S3 would reject it as a mismatch, late).
bool is_symbolic_payload(std::string_view s) {
    const bool known = s == "UNSIGNED-PAYLOAD" || s.rfind("STREAMING-", 0) == 0;
    return known && std::all_of(s.begin(), s.end(),
                                [](char c) { return (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-'; });
}

// 20130524T000000Z. Years past 9999 would not fit the format.
std::string amz_date_of(std::chrono::system_clock::time_point when) {
    const auto secs = std::chrono::floor<std::chrono::seconds>(when);
    const auto count = secs.time_since_epoch().count();
    if (count < 0 || count >= 253402300800LL) {
        throw Error(ErrorCode::InvalidArgument, "sigv4: the signing time is outside the years 1970-9999");
    }
    std::string out;
    for (char c : format_iso8601(secs)) {  // 2013-05-24T00:00:00Z
        if (c != '-' && c != ':') out.push_back(c);
    }
    return out;
}

void require(bool ok, const char* message) {
    if (!ok) throw Error(ErrorCode::InvalidArgument, message);
}

}  // namespace

std::string uri_encode(std::string_view text, bool encode_slash) {
    static const char digits[] = "0123456789ABCDEF";
    std::string out;
    out.reserve(text.size() * 3);
    for (char c : text) {
        const auto u = static_cast<unsigned char>(c);
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
            c == '_' || c == '~' || (c == '/' && !encode_slash)) {
            out.push_back(c);
        } else {
            out.push_back('%');
            out.push_back(digits[u >> 4]);
            out.push_back(digits[u & 0xF]);
        }
    }
    return out;
}

std::string hex_sha256(std::string_view data) { return crypto::hex(crypto::sha256(data)); }

Signer::Signer(Credentials credentials, Options options)
    : credentials_(std::move(credentials)), options_(std::move(options)) {
    if (credentials_.access_key_id.empty() || credentials_.secret_access_key.empty()) {
        throw Error(ErrorCode::Config, "sigv4: the access key id and the secret access key are required");
    }
    if (options_.region.empty() || options_.service.empty()) {
        throw Error(ErrorCode::Config, "sigv4: the region and the service are required");
    }
    // '/' would break the credential scope apart; whitespace would be trimmed by servers.
    for (const std::string* part : {&options_.region, &options_.service}) {
        if (part->find_first_of("/ \t\r\n") != std::string::npos) {
            throw Error(ErrorCode::Config, "sigv4: invalid region or service " + *part);
        }
    }
}

std::string Signer::signing_key(const std::string& date) const {
    {
        std::lock_guard<std::mutex> lock(cache_mutex_);
        if (date == cached_date_) return cached_key_;
    }
    // Derived outside the lock: threads crossing midnight together may each
    // derive it once, which is cheaper than making the others wait.
    const Mac k_date = hmac("AWS4" + credentials_.secret_access_key, date);
    const Mac k_region = hmac(as_view(k_date), options_.region);
    const Mac k_service = hmac(as_view(k_region), options_.service);
    const Mac k_signing = hmac(as_view(k_service), "aws4_request");
    std::string key(as_view(k_signing));
    std::lock_guard<std::mutex> lock(cache_mutex_);
    // A thread signing for an earlier day (a clock step back) must not evict today's key.
    if (cached_date_.empty() || date >= cached_date_) {
        cached_date_ = date;
        cached_key_ = key;
    }
    return key;
}

Signed Signer::sign(const Request& request, std::chrono::system_clock::time_point when) const {
    require(!request.method.empty() && std::all_of(request.method.begin(), request.method.end(), is_tchar),
            "sigv4: the method must be an HTTP token");
    require(!request.host.empty(), "sigv4: empty host");
    require(!request.path.empty() && request.path.front() == '/', "sigv4: the path must start with '/'");

    Signed out;
    out.amz_date = amz_date_of(when);
    const std::string date = out.amz_date.substr(0, 8);

    std::string payload = request.payload_sha256.empty() ? kEmptySha256 : request.payload_sha256;
    require(is_hex64(payload) || is_symbolic_payload(payload),
            "sigv4: payload_sha256 must be lower-case hex SHA-256 or a symbolic value such as UNSIGNED-PAYLOAD");

    // Canonical URI: S3 takes the path as it is, no dot-segment or slash
    // normalisation, every byte but the unreserved ones and '/' encoded once.
    out.canonical_uri = uri_encode(request.path, false);

    // Canonical query: encoded names and values, sorted by name then value.
    std::vector<std::pair<std::string, std::string>> query;
    query.reserve(request.query.size());
    for (const auto& [name, value] : request.query) query.emplace_back(uri_encode(name, true), uri_encode(value, true));
    std::sort(query.begin(), query.end());
    for (const auto& [name, value] : query) {
        if (!out.canonical_query.empty()) out.canonical_query.push_back('&');
        out.canonical_query += name;
        out.canonical_query.push_back('=');
        out.canonical_query += value;
    }

    // The headers we add ourselves; the caller may not send them too.
    out.headers.emplace_back("x-amz-date", out.amz_date);
    if (options_.content_sha256_header) out.headers.emplace_back("x-amz-content-sha256", payload);
    if (!credentials_.session_token.empty()) {
        out.headers.emplace_back("x-amz-security-token", credentials_.session_token);
    }

    // Every header is signed. A stable sort keeps repeated names in the order
    // given, which is the order their values are joined in.
    std::vector<std::pair<std::string, std::string>> headers;
    headers.reserve(request.headers.size() + out.headers.size() + 1);
    headers.emplace_back("host", trimall("host", request.host));
    for (const auto& [name, value] : request.headers) {
        std::string lname = lower_name(name);
        const bool ours =
            lname == "host" || lname == "authorization" ||
            std::any_of(out.headers.begin(), out.headers.end(), [&](const auto& h) { return h.first == lname; });
        if (ours) {
            throw Error(ErrorCode::InvalidArgument,
                        "sigv4: header " + std::string(name) + " is set by the signer (or Request::host)");
        }
        std::string trimmed = trimall(name, value);
        headers.emplace_back(std::move(lname), std::move(trimmed));
    }
    for (const auto& [name, value] : out.headers) headers.emplace_back(name, trimall(name, value));
    std::stable_sort(headers.begin(), headers.end(), [](const auto& a, const auto& b) { return a.first < b.first; });

    std::string canonical_headers;
    std::string signed_headers;
    for (std::size_t i = 0; i < headers.size(); ++i) {
        const bool repeat = i > 0 && headers[i].first == headers[i - 1].first;
        if (repeat) {
            canonical_headers.push_back(',');
        } else {
            if (i > 0) {
                canonical_headers.push_back('\n');
                signed_headers.push_back(';');
            }
            canonical_headers += headers[i].first;
            canonical_headers.push_back(':');
            signed_headers += headers[i].first;
        }
        canonical_headers += headers[i].second;
    }
    canonical_headers.push_back('\n');

    out.canonical_request.reserve(256 + out.canonical_uri.size() + out.canonical_query.size() +
                                  canonical_headers.size());
    out.canonical_request.append(request.method).push_back('\n');
    out.canonical_request.append(out.canonical_uri).push_back('\n');
    out.canonical_request.append(out.canonical_query).push_back('\n');
    out.canonical_request.append(canonical_headers).push_back('\n');
    out.canonical_request.append(signed_headers).push_back('\n');
    out.canonical_request.append(payload);

    const std::string scope = date + "/" + options_.region + "/" + options_.service + "/aws4_request";
    out.string_to_sign =
        std::string(kAlgorithm) + "\n" + out.amz_date + "\n" + scope + "\n" + hex_sha256(out.canonical_request);

    const Mac signature = hmac(signing_key(date), out.string_to_sign);
    out.signature = crypto::hex(signature.data(), signature.size());

    out.headers.emplace_back("authorization", std::string(kAlgorithm) + " Credential=" + credentials_.access_key_id +
                                                  "/" + scope + ", SignedHeaders=" + signed_headers +
                                                  ", Signature=" + out.signature);
    return out;
}

}  // namespace training_output::sigv4
