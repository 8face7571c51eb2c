// Bounded waits: whatever the store does, open returns within a second,
// flush() and close() within flush_timeout_ms plus a second, and what was not
// delivered stays spooled.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <thread>
#include <vector>

#include "common/sha256.hpp"
#include "test_util.hpp"
#include "training_output/error.hpp"
#include "training_output/training_output.hpp"

using namespace training_output;

namespace {

const char* const kKey = "training/metabolic_diabetes/2025/11/health_journal_2025_11.jsonl";

// Another process takes the directory sink's lock on kKey and hangs until
// the test kills it: every append to that object waits.
class HungLockHolder {
public:
    explicit HungLockHolder(const tdo_test::TempDir& dir) {
        const std::string lock_dir = dir / ".sink/locks";
        std::filesystem::create_directories(lock_dir);
        const std::string lock_file = lock_dir + "/" + crypto::hex(crypto::sha256(kKey)).substr(0, 32) + ".lock";
        int ready[2];
        REQUIRE(::pipe(ready) == 0);
        pid_ = ::fork();
        REQUIRE(pid_ >= 0);
        if (pid_ == 0) {
            int fd = ::open(lock_file.c_str(), O_RDWR | O_CREAT, 0644);
            if (fd < 0 || ::flock(fd, LOCK_EX) != 0) std::_Exit(1);
            (void)!::write(ready[1], "x", 1);
            for (;;) ::pause();
        }
        char x;
        REQUIRE(::read(ready[0], &x, 1) == 1);
        ::close(ready[0]);
        ::close(ready[1]);
    }
    ~HungLockHolder() { release(); }
    void release() {
        if (pid_ <= 0) return;
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, nullptr, 0);
        pid_ = -1;
    }

private:
    pid_t pid_ = -1;
};

Config directory_config(const tdo_test::TempDir& dir) {
    Config c;
    c.output_dir = dir.path();
    c.directory_fsync = false;
    c.log_level = LogLevel::Off;
    return c;
}

}  // namespace

TEST_CASE("bounded waits: a key locked by a hung process does not hold close() past its timeout",
          "[unit][bounded][sink][slow]") {
    tdo_test::TempDir dir;
    Config c = directory_config(dir);
    c.flush_timeout_ms = 3000;
    c.finalize();
    const std::string key = kKey;
    HungLockHolder holder(dir);
    {
        TrainingOutput w(c);
        CHECK(w.generate("Waits for the lock.", tdo_test::message_json("BloodGlucoseRecord"),
                         tdo_test::result_json()) == Outcome::Written);
        const auto took = tdo_test::close_reporting_undelivered(w, 1);
        INFO(took.count() << " ms");
        CHECK(took < std::chrono::milliseconds(c.flush_timeout_ms + 1000));
    }
    holder.release();
    // The lock is free again: the next writer delivers the line, once.
    TrainingOutput next(c);
    CHECK(next.stats().lines_recovered == 1);
    next.close();
    CHECK(tdo_test::lines_of(tdo_test::read_file(dir / key)).size() == 1u);
}

TEST_CASE("bounded waits: calls blocked on a full spool do not hold close() past its bound",
          "[unit][bounded][spool][slow]") {
    tdo_test::TempDir dir;
    Config c = directory_config(dir);
    c.flush_timeout_ms = 1000;
    c.max_line_bytes = 16 * 1024;
    c.spool_max_bytes = 64 * 1024;
    c.spool_full_policy = "block";
    c.spool_block_timeout_ms = 30000;  // far past the bound: only close() can end the waits
    c.finalize();
    HungLockHolder holder(dir);
    std::atomic<int> written{0}, closed{0}, other{0};
    std::chrono::milliseconds took{};
    {
        TrainingOutput w(c);
        // Two threads write until the spool is full and their calls wait for room.
        auto write = [&](int thread) {
            for (int i = 0;; ++i) {
                try {
                    const std::string text = "Blocked writer " + std::to_string(thread) + " reading " +
                                             std::to_string(i) + ": " + std::string(2000, 'x');
                    if (w.generate(text, tdo_test::message_json("BloodGlucoseRecord"), tdo_test::result_json()) ==
                        Outcome::Written)
                        written.fetch_add(1);
                } catch (const Error& e) {
                    (e.code() == ErrorCode::Closed ? closed : other).fetch_add(1);
                    return;
                }
            }
        };
        std::thread a(write, 0), b(write, 1);
        // Wait until the spool is full and both calls wait for room (the
        // spool says so): nothing more can be accepted before close().
        const auto waiting_by = std::chrono::steady_clock::now() + std::chrono::seconds(10);
        while (w.stats().calls_waiting_for_room < 2 && std::chrono::steady_clock::now() < waiting_by) {
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }
        REQUIRE(w.stats().calls_waiting_for_room == 2);
        const int before_close = written.load();
        const auto t0 = std::chrono::steady_clock::now();
        try {
            w.close();
            FAIL("expected close to report the lines it could not deliver");
        } catch (const Error& e) {
            CHECK_THAT(e.what(), Catch::Contains("lines are not in their objects yet"));
        }
        took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0);
        a.join();
        b.join();
        CHECK(written.load() == before_close);  // nothing accepted while closing
    }
    INFO(took.count() << " ms; " << written.load() << " written");
    CHECK(took < std::chrono::milliseconds(c.flush_timeout_ms + 1000));
    // The waiting calls were refused as closed: their examples were not taken.
    CHECK(closed.load() == 2);
    CHECK(other.load() == 0);
    REQUIRE(written.load() > 0);
    holder.release();
    // Every accepted example is delivered once by the next writer.
    TrainingOutput next(c);
    next.close();
    CHECK(tdo_test::lines_of(tdo_test::read_file(dir / kKey)).size() == static_cast<std::size_t>(written.load()));
}

namespace {

// An S3 endpoint that accepts connections and never answers, or that
// trickles one byte of an answer every 300 ms.
class UnansweringEndpoint {
public:
    explicit UnansweringEndpoint(bool trickle) : trickle_(trickle) {
        fd_ = tdo_test::bound_loopback_socket(&port_);
        REQUIRE(::listen(fd_, 64) == 0);
        thread_ = std::thread([this] { run(); });
    }
    ~UnansweringEndpoint() {
        stop_ = true;
        thread_.join();
        for (int fd : clients_) ::close(fd);
        ::close(fd_);
    }
    std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
    int connections() const { return accepted_.load(); }

private:
    void run() {
        static const char answer[] = "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n";
        std::size_t sent = 0;
        while (!stop_) {
            pollfd p{fd_, POLLIN, 0};
            if (::poll(&p, 1, 300) > 0) {
                const int c = ::accept(fd_, nullptr, nullptr);
                if (c >= 0) {
                    clients_.push_back(c);
                    accepted_.fetch_add(1);
                }
            }
            if (!trickle_) continue;
            for (int c : clients_) (void)!::send(c, answer + sent % (sizeof answer - 1), 1, MSG_NOSIGNAL);
            ++sent;
        }
    }
    bool trickle_;
    int fd_ = -1;
    int port_ = 0;
    std::atomic<bool> stop_{false};
    std::atomic<int> accepted_{0};
    std::vector<int> clients_;
    std::thread thread_;
};

}  // namespace

TEST_CASE("bounded waits: open, generate and close keep their bounds against an S3 endpoint that never answers",
          "[unit][bounded][s3][slow]") {
    const bool trickle = GENERATE(false, true);
    INFO((trickle ? "trickling" : "silent") << " endpoint");
    UnansweringEndpoint endpoint(trickle);
    tdo_test::TempDir dir;
    Config c;
    c.output_dir = dir.path();
    c.log_level = LogLevel::Off;
    c.s3_endpoint_url = endpoint.url();
    c.s3_bucket_name = "health-data";
    c.s3_access_key = "AKIDEXAMPLE";
    c.s3_secret_key = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    c.flush_timeout_ms = 1000;
    c.finalize();
    const auto t0 = std::chrono::steady_clock::now();
    auto since = [](std::chrono::steady_clock::time_point t) {
        return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t);
    };
    TrainingOutput w(c);
    const auto opened = since(t0);
    CHECK(opened < std::chrono::milliseconds(1000));
    CHECK(endpoint.connections() >= 1);  // it did ask the store, from another thread
    const auto t1 = std::chrono::steady_clock::now();
    CHECK(w.generate("Spooled while the store is silent.", tdo_test::message_json("BloodGlucoseRecord"),
                     tdo_test::result_json()) == Outcome::Written);
    const auto generated = since(t1);
    CHECK(generated < std::chrono::milliseconds(1000));
    const auto closed = tdo_test::close_reporting_undelivered(w, 1);
    INFO("open " << opened.count() << " ms, generate " << generated.count() << " ms, close " << closed.count()
                 << " ms");
    CHECK(closed < std::chrono::milliseconds(c.flush_timeout_ms + 1000));
}
