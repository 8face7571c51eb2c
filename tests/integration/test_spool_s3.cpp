// The spool against a real S3 server (Ceph RGW, started by the fixture):
// writer processes SIGKILLed at random, and the gateway taken away for 30 s.
#include <catch2/catch.hpp>
#include <cstdlib>
#include <thread>

#include "../unit/crash_harness.hpp"
#include "../unit/test_util.hpp"
#include "s3_test_servers.hpp"
#include "training_output/training_output.hpp"

using namespace training_output;
using namespace tdo_test;

namespace {

const std::string kStepsKey = "training/physical_activity/2025/11/health_journal_2025_11.jsonl";

std::string rgw_dir() {
    const char* v = std::getenv("TDO_TEST_RGW_DIR");
    return v && *v ? v : TDO_RGW_DIR;
}

bool gateway(const std::string& what) {
    const std::string cmd = std::string(TDO_RGW_GATEWAY) + " " + what + " " + rgw_dir() + " >/dev/null";
    return std::system(cmd.c_str()) == 0;
}

// A last writer on the same configuration adopts and delivers what is left.
void deliver_leftovers(const std::string& config) {
    TrainingOutput last(Config::from_json(config));
    last.flush();
    last.close();
}

}  // namespace

TEST_CASE(
    "RGW: 4 processes x 2,500 examples into one object, SIGKILLed at random 20+ times: each accepted "
    "example exactly once",
    "[integration][rgw][spool][crash]") {
    std::string bucket;
    auto sink = fresh_bucket(rgw(), bucket);
    tdo_test::TempDir dir;
    const std::string config =
        writer_config(rgw(), bucket, dir.path(),
                      ",\"flush_interval_ms\":100,\"flush_max_bytes\":65536,\"s3_lease_seconds\":5,"
                      "\"s3_request_timeout_ms\":10000");
    CrashRun run;
    run.workers = 4;
    run.per_worker = 2500;
    run.min_kills = 24;
    run.delay_us = 800;
    run.kill_every_min = std::chrono::milliseconds(40);
    run.kill_every_max = std::chrono::milliseconds(160);
    auto result = run_crash_harness(TDO_TEST_CRASH_WRITER, config, run);
    CHECK(result.kills >= run.min_kills);
    INFO(result.first_error);
    CHECK(result.errors == 0);
    deliver_leftovers(config);
    SinkResponse g = sink->get(kStepsKey);
    REQUIRE(g.ok());
    check_exactly_once(g.body, result, run);
    // Every example was reported by some worker, written or duplicate (a
    // duplicate after a restart is the example its killed predecessor had
    // accepted without getting to report it).
    CHECK(result.reported.size() == 10000u);
}

TEST_CASE("RGW: the gateway stops for 30 s mid-run: no call fails and every line arrives",
          "[integration][rgw][spool][outage]") {
    std::string bucket;
    auto sink = fresh_bucket(rgw(), bucket);
    tdo_test::TempDir dir;
    const std::string config =
        writer_config(rgw(), bucket, dir.path(),
                      ",\"flush_interval_ms\":1000,\"s3_connect_timeout_ms\":1000,\"s3_request_timeout_ms\":3000,"
                      "\"flush_timeout_ms\":120000");
    CrashRun run;
    run.workers = 4;
    run.per_worker = 1500;
    run.min_kills = 0;
    run.delay_us = 25000;  // 1,500 examples over ~40 s per worker
    std::thread outage;
    bool stopped = false;
    std::atomic<bool> stop_ok{false}, start_ok{false};
    run.tick = [&](int elapsed_ms) {
        if (!stopped && elapsed_ms >= 3000) {
            stopped = true;
            outage = std::thread([&] {
                stop_ok = gateway("stop");
                std::this_thread::sleep_for(std::chrono::seconds(30));
                start_ok = gateway("start");
            });
        }
    };
    auto result = run_crash_harness(TDO_TEST_CRASH_WRITER, config, run);
    if (outage.joinable()) outage.join();
    REQUIRE(stopped);
    REQUIRE(stop_ok);
    REQUIRE(start_ok);
    INFO(result.first_error);
    CHECK(result.errors == 0);
    CHECK(result.accepted.size() == 6000u);
    SinkResponse g = sink->get(kStepsKey);
    REQUIRE(g.ok());
    check_exactly_once(g.body, result, run);
    CHECK(lines_of(g.body).size() == 6000u);
}
