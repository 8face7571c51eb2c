// Bounded waits: whatever the store does, flush() and close() return within
// flush_timeout_ms plus a second, and what was not delivered stays spooled.
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>

#include "common/sha256.hpp"
#include "test_util.hpp"
#include "training_output/error.hpp"
#include "training_output/training_output.hpp"

using namespace training_output;

TEST_CASE("bounded waits: a key locked by a hung process does not hold close() past its timeout",
          "[unit][bounded][sink]") {
    tdo_test::TempDir dir;
    Config c;
    c.output_dir = dir.path();
    c.directory_fsync = false;
    c.log_level = LogLevel::Off;
    c.flush_timeout_ms = 3000;
    c.finalize();
    const std::string key = "training/metabolic_diabetes/2025/11/health_journal_2025_11.jsonl";
    const std::string lock_dir = dir / ".sink/locks";
    std::filesystem::create_directories(lock_dir);
    const std::string lock_file = lock_dir + "/" + crypto::hex(crypto::sha256(key)).substr(0, 32) + ".lock";
    // Another process takes the key's lock and hangs.
    int ready[2];
    REQUIRE(::pipe(ready) == 0);
    pid_t holder = ::fork();
    REQUIRE(holder >= 0);
    if (holder == 0) {
        int fd = ::open(lock_file.c_str(), O_RDWR | O_CREAT, 0644);
        if (fd < 0 || ::flock(fd, LOCK_EX) != 0) std::_Exit(1);
        (void)!::write(ready[1], "x", 1);
        for (;;) ::pause();
    }
    char x;
    REQUIRE(::read(ready[0], &x, 1) == 1);
    {
        TrainingOutput w(c);
        CHECK(w.generate("Waits for the lock.", tdo_test::message_json("BloodGlucoseRecord"),
                         tdo_test::result_json()) == Outcome::Written);
        const auto took = tdo_test::close_reporting_undelivered(w, 1);
        INFO(took.count() << " ms");
        CHECK(took < std::chrono::milliseconds(c.flush_timeout_ms + 1000));
    }
    ::kill(holder, SIGKILL);
    ::waitpid(holder, nullptr, 0);
    // The lock is free again: the next writer delivers the line, once.
    TrainingOutput next(c);
    CHECK(next.stats().lines_recovered == 1);
    next.close();
    CHECK(tdo_test::lines_of(tdo_test::read_file(dir / key)).size() == 1u);
}
