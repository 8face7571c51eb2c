// Where requests go (endpoint.hpp).
#include "s3/endpoint.hpp"

#include <cctype>

#include "common/ascii.hpp"
#include "common/json.hpp"
#include "training_output/error.hpp"

namespace training_output {

namespace s3 {

Endpoint parse_endpoint(const std::string& url) {
    auto bad = [&](const char* why) {
        return Error(ErrorCode::Config, std::string("configuration key \"s3_endpoint_url\": ") + why);
    };
    auto sep = url.find("://");
    if (sep == std::string::npos) throw bad("expected http://host[:port] or https://host[:port]");
    Endpoint e;
    e.scheme = ascii_lower(url.substr(0, sep));
    if (e.scheme != "http" && e.scheme != "https") throw bad("the scheme must be http or https");
    std::string rest = url.substr(sep + 3);
    auto slash = rest.find('/');
    e.host = rest.substr(0, slash);
    if (slash != std::string::npos) e.base = rest.substr(slash);
    while (!e.base.empty() && e.base.back() == '/') e.base.pop_back();
    if (e.host.empty()) throw bad("no host");
    if (e.host.find('@') != std::string::npos)
        throw bad("credentials belong in s3_access_key / s3_secret_key, not in the URL");
    if (e.host.find_first_of("?# ") != std::string::npos) throw bad("unexpected characters in the host");
    e.host = ascii_lower(e.host);
    auto strip = [&](const char* port) {
        if (e.host.size() > std::string(port).size() &&
            e.host.compare(e.host.size() - std::string(port).size(), std::string::npos, port) == 0) {
            e.host.erase(e.host.size() - std::string(port).size());
        }
    };
    if (e.scheme == "http") strip(":80");
    if (e.scheme == "https") strip(":443");
    return e;
}

bool dns_compatible(const std::string& bucket) {
    if (bucket.size() < 3 || bucket.size() > 63) return false;
    for (char c : bucket) {
        if (!(std::islower(static_cast<unsigned char>(c)) || std::isdigit(static_cast<unsigned char>(c)) || c == '-')) {
            return false;  // dots break TLS names of virtual hosts
        }
    }
    return true;
}

bool is_directory_bucket(const std::string& bucket) {
    const std::string suffix = "--x-s3";
    return bucket.size() > suffix.size() && bucket.compare(bucket.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool virtual_host(AddressingStyle style, const Endpoint& endpoint, const std::string& bucket) {
    switch (style) {
        case AddressingStyle::Path: return false;
        case AddressingStyle::Virtual:
            if (!dns_compatible(bucket)) {
                throw Error(ErrorCode::Config, "configuration key \"s3_addressing_style\": bucket " +
                                                   json::quote(bucket) + " cannot be a host name (use path)");
            }
            return true;
        case AddressingStyle::Auto: break;
    }
    const std::string suffix = "amazonaws.com";
    const std::string host = endpoint.host.substr(0, endpoint.host.find(':'));
    const bool aws =
        host.size() >= suffix.size() && host.compare(host.size() - suffix.size(), suffix.size(), suffix) == 0;
    return aws && dns_compatible(bucket);
}

}  // namespace s3
}  // namespace training_output
