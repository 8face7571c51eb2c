// A small libcurl client: one request in, status, headers and body out.
// Easy handles are pooled, so connections are reused across requests and
// threads.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace training_output::http {

struct Request {
    std::string method;  // GET HEAD PUT POST DELETE
    std::string url;
    std::vector<std::pair<std::string, std::string>> headers;
    std::string_view body;                 // borrowed for the call
    std::chrono::milliseconds timeout{0};  // 0: ClientOptions::request_timeout
    // The server works before it answers (a server-side copy sends nothing
    // for as long as it copies): no stall limit, the timeout alone bounds it.
    bool server_works = false;
};

struct Response {
    int status = 0;                              // 0: no HTTP answer
    std::map<std::string, std::string> headers;  // names lower-cased
    std::string body;
    int curl_code = 0;       // CURLE_*; 0 when an answer arrived
    std::string curl_error;  // text for curl_code
    bool sent = false;       // the request may have reached the server
    bool timed_out = false;
    bool cancelled = false;  // stopped by ClientOptions::cancelled

    const std::string& header(const std::string& lower_name) const;
};

struct ClientOptions {
    std::chrono::milliseconds connect_timeout{3000};
    std::chrono::milliseconds request_timeout{60000};
    long low_speed_limit = 1024;              // bytes/s ...
    std::chrono::seconds low_speed_time{15};  // ... for this long = a stalled transfer
    bool verify_tls = true;
    std::string ca_file;
    std::size_t max_idle_handles = 16;
    // When set and true, transfers in progress are aborted (their progress
    // callback says so) and new ones are not started.
    const std::atomic<bool>* cancelled = nullptr;
};

class Client {
public:
    explicit Client(ClientOptions options);
    ~Client();
    Client(const Client&) = delete;
    Client& operator=(const Client&) = delete;

    Response perform(const Request& request);

private:
    void* acquire();
    void release(void* handle);

    ClientOptions options_;
    std::mutex mutex_;
    std::vector<void*> idle_;  // CURL*
};

}  // namespace training_output::http
