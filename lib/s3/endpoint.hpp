// Where requests go: the endpoint URL as the configuration gives it, and
// whether the bucket is addressed as a host (virtual-hosted style, AWS's) or
// as the path's first segment (path style, for custom endpoints).
#pragma once

#include <string>

#include "config/choices.hpp"  // AddressingStyle

namespace training_output {

namespace s3 {

struct Endpoint {
    std::string scheme;  // http | https
    std::string host;    // host[:port], lower-cased, without a default port
    std::string base;    // a path prefix of the endpoint, without trailing '/'
};

// "http://host[:port][/base]" or https; throws Error(Config) naming
// s3_endpoint_url (credentials in the URL are refused).
Endpoint parse_endpoint(const std::string& url);

// A bucket name that can be a host name (and a TLS name): 3 to 63 of
// lower-case letters, digits and '-'.
bool dns_compatible(const std::string& bucket);

// An S3 Express One Zone directory bucket ("<name>--<zone id>--x-s3").
bool is_directory_bucket(const std::string& bucket);

// Whether requests name the bucket in the host: Auto chooses it for
// *.amazonaws.com when the bucket can be a host name. Throws Error(Config)
// for Virtual with a bucket that cannot.
bool virtual_host(AddressingStyle style, const Endpoint& endpoint, const std::string& bucket);

}  // namespace s3
}  // namespace training_output
