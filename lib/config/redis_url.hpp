// The `redis_url` setting:
//   redis://[[user]:password@]host[:port][/db]        TCP (port 6379, db 0 by default)
//   rediss://[[user]:password@]host[:port][/db]       the same over TLS
//   unix://[[user]:password@]/path/to/redis.sock[?db=N]
// `?db=N` is accepted on both. User and password are percent-decoded; the
// password may contain any character ('@' and '/' included): the userinfo ends
// at the last '@'.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace training_output {

struct RedisUrl {
    bool unix_socket = false;
    bool tls = false;  // rediss://
    std::string host;  // TCP; an IPv6 address without its brackets
    int port = 6379;
    std::string path;      // unix socket
    std::string user;      // empty: the default user
    std::string password;  // empty: no AUTH
    std::int64_t db = 0;

    // The URL with the password masked, for logs and error messages.
    std::string redacted() const;
};

// Throws Error(Config) naming "redis_url". The message never contains the
// password (nor the URL as given, which might).
RedisUrl parse_redis_url(std::string_view url);

}  // namespace training_output
