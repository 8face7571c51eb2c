// Helpers shared by the unit tests.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <rapidjson/document.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace tdo_test {

// A fresh directory under the system temp dir, removed at scope exit.
class TempDir {
public:
    TempDir() {
        std::string pattern = (std::filesystem::temp_directory_path() / "tdo-test-XXXXXX").string();
        std::vector<char> buf(pattern.begin(), pattern.end());
        buf.push_back('\0');
        if (!::mkdtemp(buf.data())) throw std::runtime_error("mkdtemp failed");
        path_ = buf.data();
    }
    ~TempDir() {
        std::error_code ec;
        std::filesystem::remove_all(path_, ec);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    const std::string& path() const { return path_; }
    std::string operator/(const std::string& rel) const { return path_ + "/" + rel; }

private:
    std::string path_;
};

inline std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

inline void write_file(const std::string& path, const std::string& data) {
    std::filesystem::create_directories(std::filesystem::path(path).parent_path());
    std::ofstream out(path, std::ios::binary);
    out << data;
}

inline std::vector<std::string> lines_of(const std::string& text) {
    std::vector<std::string> out;
    std::size_t start = 0;
    while (start < text.size()) {
        std::size_t nl = text.find('\n', start);
        if (nl == std::string::npos) nl = text.size();
        out.push_back(text.substr(start, nl - start));
        start = nl + 1;
    }
    return out;
}

inline rapidjson::Document parse(const std::string& text) {
    rapidjson::Document d;
    d.Parse<rapidjson::kParseValidateEncodingFlag>(text.c_str(), text.size());
    return d;
}

// Every regular file under `root` ending in .jsonl, relative to root.
inline std::vector<std::string> jsonl_files(const std::string& root) {
    std::vector<std::string> out;
    std::error_code ec;
    for (auto it = std::filesystem::recursive_directory_iterator(root, ec);
         it != std::filesystem::recursive_directory_iterator(); ++it) {
        if (it->is_regular_file() && it->path().extension() == ".jsonl") {
            out.push_back(std::filesystem::relative(it->path(), root).string());
        }
    }
    std::sort(out.begin(), out.end());
    return out;
}

// A TCP socket bound to a free loopback port (not listening); its port in *port.
inline int bound_loopback_socket(int* port) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd >= 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), len) == 0);
    REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
    *port = ntohs(addr.sin_port);
    return fd;
}

// A loopback port nobody listens on (bound, then closed).
inline int free_port() {
    int port = 0;
    ::close(bound_loopback_socket(&port));
    return port;
}

// Names in a directory (none when it does not exist).
inline std::vector<std::string> list_dir(const std::string& dir) {
    std::vector<std::string> out;
    std::error_code ec;
    for (auto it = std::filesystem::directory_iterator(dir, ec); !ec && it != std::filesystem::directory_iterator();
         ++it) {
        out.push_back(it->path().filename().string());
    }
    std::sort(out.begin(), out.end());
    return out;
}

// Starts a program; returns its pid.
inline pid_t spawn(const std::vector<std::string>& argv) {
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    pid_t pid = 0;
    if (posix_spawn(&pid, args[0], nullptr, nullptr, args.data(), environ) != 0) return -1;
    return pid;
}

// Starts a server that writes the port it listens on to `port_file` once
// it listens; waits up to 10 s for it. Returns its pid and sets `port`.
inline pid_t spawn_server(const std::vector<std::string>& argv, const std::string& port_file, std::string& port) {
    const pid_t pid = spawn(argv);
    if (pid <= 0) return pid;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (::access(port_file.c_str(), F_OK) != 0) {
        if (std::chrono::steady_clock::now() >= deadline) return -1;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    port = read_file(port_file);
    return pid;
}

// Waits for a pid; returns its exit status (or 128 + signal).
inline int wait_for(pid_t pid) {
    int status = 0;
    if (waitpid(pid, &status, 0) != pid) return -1;
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return -1;
}

// Closes a writer that must report `lines` lines it could not deliver; how
// long closing took.
template <class Writer>
std::chrono::milliseconds close_reporting_undelivered(Writer& w, int lines) {
    const auto t0 = std::chrono::steady_clock::now();
    try {
        w.close();
        FAIL("expected close to report the lines it could not deliver");
    } catch (const std::exception& e) {
        CHECK_THAT(e.what(), Catch::Contains(std::to_string(lines) + " lines are not in their objects yet"));
    }
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0);
}

// JSON for message_data / result built from pieces.
inline std::string message_json(const std::string& record_type, const std::string& user = "u1",
                                const std::string& correlation = "c1") {
    return "{\"record_type\":\"" + record_type + "\",\"user_id\":\"" + user + "\",\"correlation_id\":\"" + correlation +
           "\",\"bucket\":\"health-data\",\"key\":\"raw/x.avro\"}";
}

inline std::string result_json(int record_count = 10, const std::string& ts = "2025-11-18T10:30:00Z") {
    return "{\"quality_score\":0.95,\"record_count\":" + std::to_string(record_count) +
           ",\"processing_time_seconds\":2.5,\"clinical_insights\":{\"status\":\"fair\",\"events\":[1,2]},"
           "\"processing_timestamp\":\"" +
           ts + "\"}";
}

}  // namespace tdo_test
