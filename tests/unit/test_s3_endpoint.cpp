// Where requests go (lib/s3/endpoint.hpp): the endpoint URL and the bucket's
// addressing style.
#include <catch2/catch.hpp>

#include <string>

#include "s3/endpoint.hpp"
#include "training_output/error.hpp"

using namespace training_output;

TEST_CASE("S3 endpoint: URLs as configured, and those refused", "[unit][s3][endpoint]") {
    const s3::Endpoint a = s3::parse_endpoint("HTTP://LocalHost:80/base/path//");
    CHECK(a.scheme == "http");
    CHECK(a.host == "localhost");  // lower-cased, the default port dropped
    CHECK(a.base == "/base/path");
    const s3::Endpoint b = s3::parse_endpoint("https://s3.eu-west-1.amazonaws.com:443");
    CHECK(b.host == "s3.eu-west-1.amazonaws.com");
    CHECK(s3::parse_endpoint("http://127.0.0.1:9000").host == "127.0.0.1:9000");
    for (const char* bad : {"127.0.0.1:9000", "ftp://host", "http://", "http://key:hunter2@host", "http://ho st"}) {
        INFO(bad);
        try {
            s3::parse_endpoint(bad);
            FAIL("accepted");
        } catch (const Error& e) {
            CHECK(e.code() == ErrorCode::Config);
            CHECK(std::string(e.what()).find("s3_endpoint_url") != std::string::npos);
            CHECK(std::string(e.what()).find("hunter2") == std::string::npos);  // never echoes credentials
        }
    }
}

TEST_CASE("S3 endpoint: the bucket in the host or in the path", "[unit][s3][endpoint]") {
    const s3::Endpoint aws = s3::parse_endpoint("https://s3.us-east-1.amazonaws.com");
    const s3::Endpoint local = s3::parse_endpoint("http://127.0.0.1:9000");
    CHECK(s3::virtual_host(AddressingStyle::Auto, aws, "training-data"));
    CHECK_FALSE(s3::virtual_host(AddressingStyle::Auto, aws, "training.data"));  // dots break TLS names
    CHECK_FALSE(s3::virtual_host(AddressingStyle::Auto, local, "training-data"));
    CHECK_FALSE(s3::virtual_host(AddressingStyle::Path, aws, "training-data"));
    CHECK(s3::virtual_host(AddressingStyle::Virtual, local, "training-data"));
    CHECK_THROWS_AS(s3::virtual_host(AddressingStyle::Virtual, aws, "Training_Data"), Error);
    CHECK(s3::dns_compatible("abc"));
    CHECK_FALSE(s3::dns_compatible("ab"));
    CHECK_FALSE(s3::dns_compatible(std::string(64, 'a')));
    CHECK(s3::is_directory_bucket("logs--use1-az4--x-s3"));
    CHECK_FALSE(s3::is_directory_bucket("--x-s3"));
}
