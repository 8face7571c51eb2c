#include "s3/http_client.hpp"

#include "common/ascii.hpp"
#include "common/crash_point.hpp"

#include <curl/curl.h>

#include <strings.h>
#include <algorithm>
#include <cctype>
#include <cstring>

#include "training_output/error.hpp"

namespace training_output::http {
namespace {

void global_init() {
    static const CURLcode rc = curl_global_init(CURL_GLOBAL_DEFAULT);
    if (rc != CURLE_OK) throw Error(ErrorCode::Internal, std::string("curl_global_init: ") + curl_easy_strerror(rc));
}

struct Upload {
    std::string_view data;
    std::size_t offset = 0;
    bool sent = false;  // the whole body was handed to the connection
    const std::atomic<bool>* cancelled = nullptr;
};

std::size_t read_body(char* buffer, std::size_t size, std::size_t count, void* user) {
    auto* u = static_cast<Upload*>(user);
    std::size_t n = std::min(size * count, u->data.size() - u->offset);
    std::memcpy(buffer, u->data.data() + u->offset, n);
    u->offset += n;
    return n;
}

// Called by libcurl while a transfer runs.
int on_progress(void* user, curl_off_t, curl_off_t, curl_off_t ultotal, curl_off_t ulnow) {
    auto* u = static_cast<Upload*>(user);
    if (u->cancelled && u->cancelled->load(std::memory_order_relaxed)) return 1;  // aborts the transfer
    if (!u->sent && ultotal > 0 && ulnow >= ultotal) {
        u->sent = true;
        crash_point("s3.request_sent");  // the whole body is on its way, no answer yet
    }
    return 0;
}

std::size_t write_body(char* data, std::size_t size, std::size_t count, void* user) {
    static_cast<std::string*>(user)->append(data, size * count);
    return size * count;
}

std::size_t write_header(char* data, std::size_t size, std::size_t count, void* user) {
    auto* r = static_cast<Response*>(user);
    std::string_view line(data, size * count);
    if (line.rfind("HTTP/", 0) == 0) {
        r->headers.clear();  // a new response (after 100 Continue or a redirect)
        return size * count;
    }
    auto colon = line.find(':');
    if (colon == std::string_view::npos) return size * count;
    std::string name = ascii_lower(line.substr(0, colon));
    std::string_view value = line.substr(colon + 1);
    while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
    while (!value.empty() && (value.back() == '\r' || value.back() == '\n' || value.back() == ' '))
        value.remove_suffix(1);
    r->headers[name] = std::string(value);
    return size * count;
}

}  // namespace

const std::string& Response::header(const std::string& lower_name) const {
    static const std::string empty;
    auto it = headers.find(lower_name);
    return it == headers.end() ? empty : it->second;
}

Client::Client(ClientOptions options) : options_(std::move(options)) { global_init(); }

Client::~Client() {
    for (void* h : idle_) curl_easy_cleanup(static_cast<CURL*>(h));
}

void* Client::acquire() {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        if (!idle_.empty()) {
            void* h = idle_.back();
            idle_.pop_back();
            return h;
        }
    }
    CURL* h = curl_easy_init();
    if (!h) throw Error(ErrorCode::NoMemory, "curl_easy_init failed");
    return h;
}

void Client::release(void* handle) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (idle_.size() < options_.max_idle_handles) {
        idle_.push_back(handle);
    } else {
        curl_easy_cleanup(static_cast<CURL*>(handle));
    }
}

Response Client::perform(const Request& request) {
    Response response;
    if (options_.cancelled && options_.cancelled->load()) {
        response.cancelled = true;
        response.curl_code = CURLE_ABORTED_BY_CALLBACK;
        response.curl_error = "cancelled: the writer is closing";
        return response;
    }
    auto* curl = static_cast<CURL*>(acquire());
    curl_easy_reset(curl);  // keeps the connection cache
    curl_slist* headers = nullptr;
    Upload upload{request.body, 0, false, options_.cancelled};
    try {
        curl_easy_setopt(curl, CURLOPT_URL, request.url.c_str());
        curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(options_.connect_timeout.count()));
        const auto timeout = request.timeout.count() > 0 ? request.timeout : options_.request_timeout;
        curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, static_cast<long>(timeout.count()));
        curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, request.server_works ? 0L : options_.low_speed_limit);
        curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME,
                         request.server_works ? 0L : static_cast<long>(options_.low_speed_time.count()));
        curl_easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, options_.verify_tls ? 1L : 0L);
        curl_easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, options_.verify_tls ? 2L : 0L);
        if (!options_.ca_file.empty()) curl_easy_setopt(curl, CURLOPT_CAINFO, options_.ca_file.c_str());
        curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
        curl_easy_setopt(curl, CURLOPT_TCP_KEEPALIVE, 1L);
        curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, write_body);
        curl_easy_setopt(curl, CURLOPT_WRITEDATA, &response.body);
        curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, write_header);
        curl_easy_setopt(curl, CURLOPT_HEADERDATA, &response);
        curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
        curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, on_progress);
        curl_easy_setopt(curl, CURLOPT_XFERINFODATA, &upload);

        if (request.method == "HEAD") {
            curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
        } else if (request.method == "PUT") {
            curl_easy_setopt(curl, CURLOPT_UPLOAD, 1L);
            curl_easy_setopt(curl, CURLOPT_READFUNCTION, read_body);
            curl_easy_setopt(curl, CURLOPT_READDATA, &upload);
            curl_easy_setopt(curl, CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(request.body.size()));
        } else if (request.method == "POST") {
            curl_easy_setopt(curl, CURLOPT_POST, 1L);
            curl_easy_setopt(curl, CURLOPT_POSTFIELDS, request.body.data());
            curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(request.body.size()));
        } else if (request.method != "GET") {
            curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, request.method.c_str());
        }
        bool has_content_type = false;
        for (const auto& [name, value] : request.headers) {
            std::string line = name + ": " + value;
            headers = curl_slist_append(headers, line.c_str());
            if (strcasecmp(name.c_str(), "content-type") == 0) has_content_type = true;
        }
        // No 100-continue round trip; no content type we did not sign.
        headers = curl_slist_append(headers, "Expect:");
        if (!has_content_type) headers = curl_slist_append(headers, "Content-Type:");
        headers = curl_slist_append(headers, "Accept:");
        curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);

        CURLcode rc = curl_easy_perform(curl);
        long status = 0;
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
        curl_off_t connected_after = 0;
        curl_easy_getinfo(curl, CURLINFO_CONNECT_TIME_T, &connected_after);
        response.status = rc == CURLE_OK ? static_cast<int>(status) : 0;
        response.curl_code = rc;
        if (rc != CURLE_OK) {
            response.curl_error = curl_easy_strerror(rc);
            response.timed_out = rc == CURLE_OPERATION_TIMEDOUT;
            response.cancelled = rc == CURLE_ABORTED_BY_CALLBACK;
            if (response.cancelled) response.curl_error = "cancelled: the writer is closing";
            // Before a connection exists, nothing can have reached the server.
            bool never_connected = rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST ||
                                   rc == CURLE_COULDNT_RESOLVE_PROXY || rc == CURLE_SSL_CONNECT_ERROR ||
                                   rc == CURLE_PEER_FAILED_VERIFICATION ||
                                   (rc == CURLE_OPERATION_TIMEDOUT && connected_after == 0);
            response.sent = !never_connected;
        } else {
            response.sent = true;
        }
    } catch (...) {
        curl_slist_free_all(headers);
        release(curl);
        throw;
    }
    curl_slist_free_all(headers);
    release(curl);
    return response;
}

}  // namespace training_output::http
