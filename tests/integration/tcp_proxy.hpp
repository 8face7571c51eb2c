// A TCP forwarder on loopback between a client and a server, which a test
// can cut (every connection closed, new ones closed at once: the server is
// unreachable for this client only, as in a network partition) and restore.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "../unit/test_util.hpp"

namespace tdo_test {

class TcpProxy {
public:
    explicit TcpProxy(int target_port) : target_port_(target_port) {
        listen_fd_ = bound_loopback_socket(&port_);
        REQUIRE(::listen(listen_fd_, 64) == 0);
        thread_ = std::thread([this] { run(); });
    }
    ~TcpProxy() {
        stop_ = true;
        thread_.join();
        for (auto& [a, b] : pairs_) {
            ::close(a);
            ::close(b);
        }
        ::close(listen_fd_);
    }
    TcpProxy(const TcpProxy&) = delete;
    TcpProxy& operator=(const TcpProxy&) = delete;

    int port() const { return port_; }
    void cut() { cut_ = true; }
    void restore() { cut_ = false; }

private:
    void run() {
        char buf[16384];
        while (!stop_) {
            if (cut_) {
                for (auto& [a, b] : pairs_) {
                    ::close(a);
                    ::close(b);
                }
                pairs_.clear();
            }
            std::vector<pollfd> fds{{listen_fd_, POLLIN, 0}};
            for (auto& [a, b] : pairs_) {
                fds.push_back({a, POLLIN, 0});
                fds.push_back({b, POLLIN, 0});
            }
            if (::poll(fds.data(), fds.size(), 20) <= 0) continue;
            if (fds[0].revents & POLLIN) accept_one();
            std::vector<std::size_t> dead;
            for (std::size_t i = 1; i < fds.size(); ++i) {
                if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
                const std::size_t pair = (i - 1) / 2;
                const int from = fds[i].fd;
                const int to = (i % 2 == 1) ? pairs_[pair].second : pairs_[pair].first;
                ssize_t n = ::recv(from, buf, sizeof buf, 0);
                if (n <= 0 || ::send(to, buf, static_cast<std::size_t>(n), MSG_NOSIGNAL) != n) dead.push_back(pair);
            }
            std::sort(dead.begin(), dead.end());
            dead.erase(std::unique(dead.begin(), dead.end()), dead.end());
            for (auto it = dead.rbegin(); it != dead.rend(); ++it) {
                ::close(pairs_[*it].first);
                ::close(pairs_[*it].second);
                pairs_.erase(pairs_.begin() + static_cast<long>(*it));
            }
        }
    }

    void accept_one() {
        int client = ::accept(listen_fd_, nullptr, nullptr);
        if (client < 0) return;
        if (cut_) {
            ::close(client);
            return;
        }
        int server = ::socket(AF_INET, SOCK_STREAM, 0);
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_port = htons(static_cast<std::uint16_t>(target_port_));
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (::connect(server, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
            ::close(server);
            ::close(client);
            return;
        }
        pairs_.emplace_back(client, server);
    }

    int target_port_;
    int port_ = 0;
    int listen_fd_ = -1;
    std::atomic<bool> stop_{false};
    std::atomic<bool> cut_{false};
    std::vector<std::pair<int, int>> pairs_;  // client, server (the proxy thread's only)
    std::thread thread_;
};

}  // namespace tdo_test
