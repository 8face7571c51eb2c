// Parsing `redis_url`. Errors describe what is wrong without quoting the URL:
// it may hold a password.
#include "config/redis_url.hpp"

#include <cctype>

#include "common/ascii.hpp"
#include "common/json.hpp"
#include "training_output/error.hpp"

namespace training_output {
namespace {

[[noreturn]] void bad(const std::string& why) {
    throw Error(ErrorCode::Config, "configuration key \"redis_url\": " + why);
}

int hex_value(char ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

std::string percent_decode(std::string_view s, const char* what) {
    std::string out;
    out.reserve(s.size());
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] != '%') {
            out.push_back(s[i]);
            continue;
        }
        int hi = i + 2 < s.size() ? hex_value(s[i + 1]) : -1;
        int lo = i + 2 < s.size() ? hex_value(s[i + 2]) : -1;
        if (hi < 0 || lo < 0) bad(std::string("bad percent-encoding in the ") + what + " (write '%' as %25)");
        out.push_back(static_cast<char>(hi * 16 + lo));
        i += 2;
    }
    return out;
}

// Non-negative decimal without sign or spaces, at most `max`.
bool parse_number(std::string_view s, std::int64_t max, std::int64_t& out) {
    if (s.empty() || s.size() > 10) return false;
    std::int64_t v = 0;
    for (char ch : s) {
        if (ch < '0' || ch > '9') return false;
        v = v * 10 + (ch - '0');
    }
    if (v > max) return false;
    out = v;
    return true;
}

void parse_db(std::string_view s, RedisUrl& u) {
    if (!parse_number(s, 0x7FFFFFFF, u.db)) bad("the database must be a number, got " + json::quote(std::string(s)));
}

// "db=N" only.
void parse_query(std::string_view query, RedisUrl& u, bool db_in_path) {
    std::size_t start = 0;
    while (start <= query.size()) {
        std::size_t end = query.find('&', start);
        if (end == std::string_view::npos) end = query.size();
        std::string_view param = query.substr(start, end - start);
        if (param.substr(0, 3) == "db=") {
            if (db_in_path) bad("the database is given twice (path and ?db=)");
            parse_db(param.substr(3), u);
        } else if (!param.empty()) {
            std::string_view name = param.substr(0, param.find('='));
            bad("unknown parameter " + json::quote(std::string(name)) + " (only db=N is understood)");
        }
        start = end + 1;
    }
}

}  // namespace

std::string RedisUrl::redacted() const {
    std::string auth;
    if (!password.empty()) auth = user + ":***@";
    std::string db_text = std::to_string(db);
    if (unix_socket) return "unix://" + auth + path + "?db=" + db_text;
    std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
    return (tls ? "rediss://" : "redis://") + auth + h + ":" + std::to_string(port) + "/" + db_text;
}

RedisUrl parse_redis_url(std::string_view url) {
    RedisUrl u;
    std::size_t colon = url.find("://");
    if (colon == std::string_view::npos) {
        bad("expected redis[s]://[[user]:password@]host[:port][/db] or unix:///path[?db=N]");
    }
    std::string scheme = ascii_lower(url.substr(0, colon));
    if (scheme != "redis" && scheme != "rediss" && scheme != "unix") {
        bad("unknown scheme " + json::quote(scheme) + ", expected redis://, rediss:// (TLS) or unix://");
    }
    u.unix_socket = scheme == "unix";
    u.tls = scheme == "rediss";
    std::string_view rest = url.substr(colon + 3);
    for (unsigned char ch : rest) {
        if (ch < 0x20 || ch == 0x7F || ch == ' ') bad("must not contain spaces or control characters");
    }

    // Userinfo: up to the last '@', so that a password may hold '@', '/' or '?'.
    std::size_t at = rest.rfind('@');
    if (at != std::string_view::npos) {
        std::string_view userinfo = rest.substr(0, at);
        rest = rest.substr(at + 1);
        std::size_t sep = userinfo.find(':');
        if (sep == std::string_view::npos) bad("the part before '@' must be ':password' or 'user:password'");
        u.user = percent_decode(userinfo.substr(0, sep), "user name");
        u.password = percent_decode(userinfo.substr(sep + 1), "password");
        if (u.password.empty()) bad("the password before '@' is empty");
    }

    std::string_view query;
    std::size_t q = rest.find('?');
    if (q != std::string_view::npos) {
        query = rest.substr(q + 1);
        rest = rest.substr(0, q);
    }
    if (rest.find('#') != std::string_view::npos) bad("must not contain a fragment ('#')");

    if (u.unix_socket) {
        if (rest.empty() || rest.front() != '/')
            bad("unix:// must be followed by an absolute socket path (unix:///run/redis.sock)");
        u.path = percent_decode(rest, "socket path");
        parse_query(query, u, false);
        return u;
    }

    std::size_t slash = rest.find('/');
    std::string_view authority = rest.substr(0, slash);
    std::string_view path = slash == std::string_view::npos ? std::string_view() : rest.substr(slash + 1);
    std::string_view port_text;
    bool has_port = false;
    if (!authority.empty() && authority.front() == '[') {
        std::size_t close = authority.find(']');
        if (close == std::string_view::npos) bad("an IPv6 address needs its closing ']'");
        u.host = std::string(authority.substr(1, close - 1));
        std::string_view after = authority.substr(close + 1);
        if (!after.empty()) {
            if (after.front() != ':') bad("expected ':port' after the IPv6 address");
            has_port = true;
            port_text = after.substr(1);
        }
    } else {
        std::size_t c = authority.find(':');
        u.host = std::string(authority.substr(0, c));
        if (c != std::string_view::npos) {
            has_port = true;
            port_text = authority.substr(c + 1);
        }
    }
    if (u.host.empty()) bad("the host is missing");
    if (has_port) {
        std::int64_t port = 0;
        if (!parse_number(port_text, 65535, port) || port == 0) {
            bad("the port must be a number from 1 to 65535, got " + json::quote(std::string(port_text)));
        }
        u.port = static_cast<int>(port);
    }
    if (!path.empty()) parse_db(path, u);
    parse_query(query, u, !path.empty());
    return u;
}

}  // namespace training_output
