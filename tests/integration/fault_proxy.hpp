// A fault-injecting HTTP proxy on loopback, between the library and an S3
// server (RGW). Requests are forwarded byte for byte (signatures stay valid;
// only "Connection: close" is added, which no signature covers), one request
// per connection. Scripted faults, matched by method, path and query:
//   ResetBefore      the connection is reset before anything is forwarded
//   ResetAfter       forwarded and answered, then the connection is reset:
//                    the request was applied, its answer is lost
//   Status           answered with `status` and an S3 error document, not forwarded
//   Stall            forwarded at once, the answer held back for `delay`
//   StallThenStatus  held for `delay`, then answered with `status`, not forwarded
//   Truncate         forwarded; half of the answer is sent, then the connection closed
//   ErrorIn200       answered 200 with an S3 <Error> body and no ETag, not forwarded
//   Late             the client's connection is closed at once; the request is
//                    forwarded `delay` later (it lands after its sender gave up or died)
//   Hold             nothing is answered until release_held() (or `delay`, when
//                    set): then the request is forwarded, and its answer relayed
//                    if its client is still there (the test may kill it meanwhile)
// or random faults on a share of all requests (random_faults()).
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "../unit/test_util.hpp"

namespace tdo_test {

enum class Fault { None, ResetBefore, ResetAfter, Status, Stall, StallThenStatus, Truncate, ErrorIn200, Late, Hold };

inline const char* fault_name(Fault f) {
    switch (f) {
        case Fault::None: return "none";
        case Fault::ResetBefore: return "reset-before";
        case Fault::ResetAfter: return "reset-after";
        case Fault::Status: return "status";
        case Fault::Stall: return "stall";
        case Fault::StallThenStatus: return "stall-then-status";
        case Fault::Truncate: return "truncate";
        case Fault::ErrorIn200: return "error-in-200";
        case Fault::Late: return "late";
        case Fault::Hold: return "hold";
    }
    return "?";
}

struct FaultRule {
    std::string method;           // empty: any
    std::string path_contains;    // empty: any
    std::string path_excludes;    // empty: none
    std::string query_contains;   // empty: any
    std::string header_contains;  // empty: any (e.g. "if-none-match")
    int skip = 0;                 // matching requests let through first
    int times = 1;                // then this many get the fault (-1: all)
    Fault fault = Fault::Status;
    int status = 503;
    std::chrono::milliseconds delay{0};
};

class FaultProxy {
public:
    explicit FaultProxy(int target_port) : target_port_(target_port) {
        listen_fd_ = bound_loopback_socket(&port_);
        REQUIRE(::listen(listen_fd_, 128) == 0);
        acceptor_ = std::thread([this] { accept_loop(); });
    }
    ~FaultProxy() {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            stop_ = true;
            held_cv_.notify_all();
        }
        ::shutdown(listen_fd_, SHUT_RDWR);
        acceptor_.join();
        ::close(listen_fd_);
        std::unique_lock<std::mutex> lock(mutex_);
        done_cv_.wait(lock, [&] { return running_ == 0; });
    }
    FaultProxy(const FaultProxy&) = delete;
    FaultProxy& operator=(const FaultProxy&) = delete;

    int port() const { return port_; }
    std::string endpoint() const { return "http://127.0.0.1:" + std::to_string(port_); }

    void add(FaultRule rule) {
        std::lock_guard<std::mutex> lock(mutex_);
        rules_.push_back(Rule{std::move(rule), 0});
    }
    void clear() {
        std::lock_guard<std::mutex> lock(mutex_);
        rules_.clear();
        random_share_ = 0;
    }
    // A share (0..1) of all requests, rules aside, gets one of the faults
    // that keep the server's state explainable: resets before and after,
    // 500/503, stalls (answer held `stall`), truncated answers, errors in a
    // 200, and requests landing `stall` late.
    void random_faults(double share, unsigned seed, std::chrono::milliseconds stall) {
        std::lock_guard<std::mutex> lock(mutex_);
        random_share_ = share;
        gen_.seed(seed);
        random_stall_ = stall;
    }
    // Held requests (Fault::Hold) are forwarded now.
    void release_held() {
        std::lock_guard<std::mutex> lock(mutex_);
        release_ = true;
        held_cv_.notify_all();
    }
    int held() const {
        std::lock_guard<std::mutex> lock(mutex_);
        return held_;
    }
    int faults() const {
        std::lock_guard<std::mutex> lock(mutex_);
        return faults_;
    }
    int requests() const {
        std::lock_guard<std::mutex> lock(mutex_);
        return requests_;
    }
    // Waits until every connection is done (late requests forwarded).
    void drain() {
        std::unique_lock<std::mutex> lock(mutex_);
        done_cv_.wait(lock, [&] { return running_ == 0; });
    }
    std::vector<std::string> log() const {
        std::lock_guard<std::mutex> lock(mutex_);
        return log_;
    }

private:
    struct Rule {
        FaultRule r;
        int seen = 0;
    };
    struct Request {
        std::string raw;  // head and body, as received
        std::string method, path, query, head_lower;
    };

    void accept_loop() {
        for (;;) {
            int client = ::accept(listen_fd_, nullptr, nullptr);
            if (client < 0) {
                std::lock_guard<std::mutex> lock(mutex_);
                if (stop_) return;
                continue;
            }
            std::lock_guard<std::mutex> lock(mutex_);
            if (stop_) {
                ::close(client);
                return;
            }
            ++running_;
            std::thread([this, client] { serve(client); }).detach();
        }
    }

    static bool read_request(int fd, Request& req) {
        char buf[65536];
        std::size_t head_end = std::string::npos;
        while (head_end == std::string::npos) {
            ssize_t n = ::recv(fd, buf, sizeof buf, 0);
            if (n <= 0) return false;
            req.raw.append(buf, static_cast<std::size_t>(n));
            head_end = req.raw.find("\r\n\r\n");
        }
        const std::string head = req.raw.substr(0, head_end);
        req.head_lower = head;
        for (auto& c : req.head_lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        const auto sp1 = head.find(' '), sp2 = head.find(' ', sp1 + 1);
        req.method = head.substr(0, sp1);
        const std::string target = head.substr(sp1 + 1, sp2 - sp1 - 1);
        const auto q = target.find('?');
        req.path = target.substr(0, q);
        req.query = q == std::string::npos ? "" : target.substr(q + 1);
        std::size_t length = 0;
        const auto cl = req.head_lower.find("\r\ncontent-length:");
        if (cl != std::string::npos) length = std::strtoull(req.head_lower.c_str() + cl + 17, nullptr, 10);
        while (req.raw.size() < head_end + 4 + length) {
            ssize_t n = ::recv(fd, buf, sizeof buf, 0);
            if (n <= 0) return false;
            req.raw.append(buf, static_cast<std::size_t>(n));
        }
        return true;
    }

    // The request once more, asking the server to close after its answer.
    static std::string with_connection_close(const std::string& raw) {
        const auto head_end = raw.find("\r\n\r\n");
        return raw.substr(0, head_end) + "\r\nConnection: close" + raw.substr(head_end);
    }

    // Forwards and reads the whole answer (until the server closes); empty on failure.
    std::string forward(const Request& req) {
        int fd = ::socket(AF_INET, SOCK_STREAM, 0);
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_port = htons(static_cast<std::uint16_t>(target_port_));
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        std::string answer;
        if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
            send_all(fd, with_connection_close(req.raw))) {
            char buf[65536];
            for (;;) {
                ssize_t n = ::recv(fd, buf, sizeof buf, 0);
                if (n <= 0) break;
                answer.append(buf, static_cast<std::size_t>(n));
            }
        }
        ::close(fd);
        return answer;
    }

    static bool send_all(int fd, std::string_view data) {
        while (!data.empty()) {
            ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
            if (n <= 0) return false;
            data.remove_prefix(static_cast<std::size_t>(n));
        }
        return true;
    }

    static void reset(int fd) {
        linger l{1, 0};  // RST, not FIN
        ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
        ::close(fd);
    }

    static std::string error_answer(int status, bool in_200) {
        const std::string code = status == 500 ? "InternalError" : "ServiceUnavailable";
        const std::string body =
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>" + code +
            "</Code><Message>injected by the test proxy</Message><RequestId>proxy</RequestId></Error>";
        const std::string line =
            in_200 ? "200 OK"
                   : std::to_string(status) + (status == 500 ? " Internal Server Error" : " Service Unavailable");
        return "HTTP/1.1 " + line +
               "\r\nContent-Type: application/xml\r\nContent-Length: " + std::to_string(body.size()) +
               "\r\nConnection: close\r\n\r\n" + body;
    }

    // The fault for this request (rules first, then the random share).
    FaultRule choose(const Request& req) {
        std::lock_guard<std::mutex> lock(mutex_);
        ++requests_;
        for (auto& rule : rules_) {
            const FaultRule& r = rule.r;
            if (!r.method.empty() && r.method != req.method) continue;
            if (!r.path_contains.empty() && req.path.find(r.path_contains) == std::string::npos) continue;
            if (!r.path_excludes.empty() && req.path.find(r.path_excludes) != std::string::npos) continue;
            if (!r.query_contains.empty() && req.query.find(r.query_contains) == std::string::npos) continue;
            if (!r.header_contains.empty() && req.head_lower.find(r.header_contains) == std::string::npos) continue;
            const int n = rule.seen++;
            if (n < r.skip || (r.times >= 0 && n >= r.skip + r.times)) continue;
            ++faults_;
            log_.push_back(std::string(fault_name(r.fault)) + " " + req.method + " " + req.path + "?" + req.query);
            return r;
        }
        if (random_share_ > 0 && std::uniform_real_distribution<double>(0, 1)(gen_) < random_share_) {
            static const Fault kinds[] = {Fault::ResetBefore, Fault::ResetAfter, Fault::Status,     Fault::Status,
                                          Fault::Stall,       Fault::Truncate,   Fault::ErrorIn200, Fault::Late};
            FaultRule r;
            r.fault = kinds[std::uniform_int_distribution<std::size_t>(0, std::size(kinds) - 1)(gen_)];
            r.status = std::uniform_int_distribution<int>(0, 1)(gen_) ? 500 : 503;
            r.delay = random_stall_;
            ++faults_;
            log_.push_back(std::string(fault_name(r.fault)) + " " + req.method + " " + req.path + "?" + req.query);
            return r;
        }
        FaultRule none;
        none.fault = Fault::None;
        return none;
    }

    void serve(int client) {
        Request req;
        if (read_request(client, req)) handle(client, req);
        std::lock_guard<std::mutex> lock(mutex_);
        if (--running_ == 0) done_cv_.notify_all();
    }

    void handle(int client, const Request& req) {
        const FaultRule r = choose(req);
        switch (r.fault) {
            case Fault::None: {
                std::string answer = forward(req);
                if (answer.empty()) return reset(client);
                send_all(client, answer);
                return (void)::close(client);
            }
            case Fault::ResetBefore: return reset(client);
            case Fault::ResetAfter: forward(req); return reset(client);
            case Fault::Status: send_all(client, error_answer(r.status, false)); return (void)::close(client);
            case Fault::Stall: {
                std::string answer = forward(req);
                sleep_unless_stopped(r.delay);
                send_all(client, answer);
                return (void)::close(client);
            }
            case Fault::StallThenStatus:
                sleep_unless_stopped(r.delay);
                send_all(client, error_answer(r.status, false));
                return (void)::close(client);
            case Fault::Truncate: {
                std::string answer = forward(req);
                send_all(client, std::string_view(answer).substr(0, answer.size() / 2));
                return reset(client);
            }
            case Fault::ErrorIn200:
                send_all(client,
                         req.method == "HEAD"
                             ? std::string("HTTP/1.1 200 OK\r\nContent-Length: 197\r\nConnection: close\r\n\r\n")
                             : error_answer(503, true));
                return (void)::close(client);
            case Fault::Late:
                reset(client);
                sleep_unless_stopped(r.delay);
                forward(req);
                return;
            case Fault::Hold: {
                {
                    std::unique_lock<std::mutex> lock(mutex_);
                    ++held_;
                    auto released = [&] { return release_ || stop_; };
                    if (r.delay.count() > 0) {
                        held_cv_.wait_for(lock, r.delay, released);
                    } else {
                        held_cv_.wait(lock, released);
                    }
                }
                std::string answer = forward(req);
                send_all(client, answer);
                return (void)::close(client);
            }
        }
    }

    void sleep_unless_stopped(std::chrono::milliseconds d) {
        std::unique_lock<std::mutex> lock(mutex_);
        held_cv_.wait_for(lock, d, [&] { return stop_; });
    }

    int target_port_;
    int port_ = 0;
    int listen_fd_ = -1;
    mutable std::mutex mutex_;
    std::condition_variable held_cv_, done_cv_;
    bool stop_ = false;
    bool release_ = false;
    int held_ = 0;
    int running_ = 0;
    int requests_ = 0;
    int faults_ = 0;
    std::vector<Rule> rules_;
    std::vector<std::string> log_;
    double random_share_ = 0;
    std::mt19937 gen_;
    std::chrono::milliseconds random_stall_{0};
    std::thread acceptor_;
};

}  // namespace tdo_test
