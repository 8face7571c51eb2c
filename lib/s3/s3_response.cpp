#include "s3/s3_response.hpp"

#include <ctime>

namespace training_output::s3resp {
namespace {

const std::string& header(const std::map<std::string, std::string>& h, const char* name) {
    static const std::string none;
    auto it = h.find(name);
    return it == h.end() ? none : it->second;
}

// A decimal size, all digits and no overflow; 0 otherwise.
std::uint64_t parse_size(const std::string& text) {
    if (text.empty() || text.size() > 19) return 0;
    std::uint64_t v = 0;
    for (char c : text) {
        if (c < '0' || c > '9') return 0;
        v = v * 10 + static_cast<std::uint64_t>(c - '0');
    }
    return v;
}

}  // namespace

std::string unquote_etag(std::string etag) {
    if (etag.size() >= 2 && etag.front() == '"' && etag.back() == '"') return etag.substr(1, etag.size() - 2);
    if (etag.size() >= 4 && etag.rfind("W/\"", 0) == 0 && etag.back() == '"') return etag.substr(3, etag.size() - 4);
    return etag;
}

std::int64_t parse_http_date(const std::string& text) {
    if (text.empty()) return 0;
    struct tm tm {};
    const char* end = strptime(text.c_str(), "%a, %d %b %Y %H:%M:%S GMT", &tm);
    if (!end) return 0;
    return static_cast<std::int64_t>(timegm(&tm));
}

std::int64_t parse_iso_time(const std::string& text) {
    struct tm tm {};
    const char* end = strptime(text.c_str(), "%Y-%m-%dT%H:%M:%S", &tm);
    if (!end) return 0;
    return static_cast<std::int64_t>(timegm(&tm));
}

void read_object_headers(const std::map<std::string, std::string>& headers, SinkResponse& r) {
    r.etag = unquote_etag(header(headers, "etag"));
    r.last_modified = parse_http_date(header(headers, "last-modified"));
    const std::string& range = header(headers, "content-range");  // "bytes 0-9/1234"
    const auto slash = range.rfind('/');
    if (slash != std::string::npos && range.substr(slash + 1) != "*") {
        r.size = parse_size(range.substr(slash + 1));
    } else if (!header(headers, "content-length").empty()) {
        r.size = parse_size(header(headers, "content-length"));
    }
    r.appendable = header(headers, "x-rgw-object-type") == "Appendable";
    for (const auto& [name, value] : headers) {
        if (name.rfind("x-amz-meta-", 0) == 0) r.metadata.emplace_back(name.substr(11), value);
    }
}

std::optional<std::uint64_t> next_append_position(const std::map<std::string, std::string>& headers) {
    const std::string& text = header(headers, "x-rgw-next-append-position");
    if (text.empty() || (text != "0" && parse_size(text) == 0)) return std::nullopt;
    return parse_size(text);
}

}  // namespace training_output::s3resp
