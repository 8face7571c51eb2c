// Crash points against real servers: a writer killed at each step of the
// write and delivery path, restarted and handed every example again, with
// the Redis dedup store (local directory), and against RGW with the SQLite
// and the Redis store. The local directory with SQLite is in the unit tests.
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <random>
#include <thread>

#include "../unit/crash_points.hpp"
#include "../unit/test_util.hpp"
#include "s3_test_servers.hpp"

using namespace training_output;

namespace {

const std::string kStepsKey = "training/physical_activity/2025/11/health_journal_2025_11.jsonl";
const std::string kFastFlush = ",\"flush_interval_ms\":5,\"flush_max_bytes\":2048";

std::string redis_url() {
    const char* v = std::getenv("TDO_TEST_REDIS_URL");
    if (!v || !*v) FAIL("TDO_TEST_REDIS_URL is not set: the test fixture starts redis-server");
    return v;
}

// The Redis store, under a namespace of the scenario's own (the server is shared).
std::string redis_settings() {
    static int n = 0;
    return ",\"dedup_store\":\"redis\",\"redis_url\":\"" + redis_url() + "\",\"dedup_namespace\":\"tdo-crash-" +
           std::to_string(::getpid()) + "-" + std::to_string(n++) + "-" +
           std::to_string(std::random_device{}() % 100000) + "\"";
}

void run_rgw_scenarios(bool redis, const std::string& append_mode) {
    for (const auto& scenario : tdo_test::crash_point_scenarios()) {
        if (!tdo_test::scenario_applies(scenario, true)) continue;
        INFO("scenario starting with " << scenario.front());
        std::string bucket;
        auto sink = tdo_test::fresh_bucket(tdo_test::rgw(), bucket);
        tdo_test::TempDir dir;
        // A lease left by a killed writer is taken over after 5 s.
        std::string extra = kFastFlush + ",\"s3_lease_seconds\":5,\"s3_request_timeout_ms\":10000";
        if (redis) extra += redis_settings();
        extra += ",\"s3_append_mode\":\"" + append_mode + "\"";
        if (append_mode == "batches") extra += ",\"s3_compaction_interval_seconds\":1";  // compactions between crashes
        const std::string config = tdo_test::writer_config(tdo_test::rgw(), bucket, dir.path(), extra);
        tdo_test::check_crash_scenario(config, scenario, [&] { return tdo_test::month_of(*sink, kStepsKey); });
        CHECK(tdo_test::list_dir(dir / ".spool").empty());
    }
}

}  // namespace

TEST_CASE(
    "crash points: a writer killed at each step, restarted and handed every example again (local directory, "
    "Redis)",
    "[integration][redis][crash-points]") {
    for (const auto& scenario : tdo_test::crash_point_scenarios()) {
        if (!tdo_test::scenario_applies(scenario, false)) continue;
        INFO("scenario starting with " << scenario.front());
        tdo_test::TempDir dir;
        const std::string config = "{\"output_dir\":\"" + dir.path() +
                                   "\",\"log_level\":\"off\",\"directory_fsync\":false" + kFastFlush +
                                   redis_settings() + "}";
        tdo_test::check_crash_scenario(config, scenario, [&] { return tdo_test::read_file(dir / kStepsKey); });
        CHECK(tdo_test::list_dir(dir / ".spool").empty());
    }
}

TEST_CASE("crash points: a writer killed at each step, restarted and handed every example again (RGW, SQLite)",
          "[integration][rgw][crash-points]") {
    // Native appends (RGW's, under a lease), copies (under a lease: RGW's
    // Complete ignores If-Match), always under a lease, batch objects.
    const std::string mode = GENERATE(as<std::string>{}, "native", "copy", "lease", "batches");
    INFO("s3_append_mode " << mode);
    run_rgw_scenarios(false, mode);
}

TEST_CASE("crash points: a writer killed at each step, restarted and handed every example again (RGW, Redis)",
          "[integration][rgw-redis][crash-points]") {
    run_rgw_scenarios(true, "native");
}

TEST_CASE("crash points: a writer killed while it converts a plain monthly object to an appendable one (RGW)",
          "[integration][rgw][crash-points][convert]") {
    for (const std::string point : {"convert.after_marker", "convert.after_copy", "convert.after_delete",
                                    "convert.mid_append", "convert.after_done", "convert.after_copy_removed"}) {
        INFO("killed at " << point);
        std::string bucket;
        auto sink = tdo_test::fresh_bucket(tdo_test::rgw(), bucket);
        // The month so far, written by an older version as a plain object.
        const std::string earlier = tdo_test::big_jsonl(6u << 20);
        REQUIRE(sink->put(kStepsKey, earlier, ObjectAttributes{}, WriteConditions{}).ok());
        tdo_test::TempDir dir;
        const std::string config =
            tdo_test::writer_config(tdo_test::rgw(), bucket, dir.path(),
                                    kFastFlush + ",\"s3_lease_seconds\":5,\"s3_request_timeout_ms\":10000");
        tdo_test::WriterRun killed = tdo_test::run_crash_writer(config, 0, 20, point + ":1");
        CHECK(killed.killed);
        // Whatever it left, a reader that follows the month rule reads the month whole.
        std::string seen = tdo_test::month_of(*sink, kStepsKey);
        REQUIRE(seen.size() >= earlier.size());
        CHECK(seen.compare(0, earlier.size(), earlier) == 0);
        // Restarted and handed every example again: the next writer finishes the conversion.
        tdo_test::WriterRun last = tdo_test::run_crash_writer(config, 0, 20, "");
        REQUIRE(last.done);
        CHECK(last.errors == 0);
        const std::string month = tdo_test::month_of(*sink, kStepsKey);
        SinkResponse g = sink->get(kStepsKey);
        REQUIRE(g.ok());
        CHECK(g.body == month);  // the object alone is the month again
        REQUIRE(month.size() > earlier.size());
        CHECK(month.compare(0, earlier.size(), earlier) == 0);
        std::map<int, int> examples;
        for (const auto& line : tdo_test::lines_of(month.substr(earlier.size()))) {
            int w = -1, i = -1;
            auto d = tdo_test::parse(line);
            REQUIRE(d.IsObject());
            REQUIRE(std::sscanf(d["output"].GetString(), "Worker %d example %d.", &w, &i) == 2);
            ++examples[i];
        }
        CHECK(examples.size() == 20u);
        for (const auto& [i, n] : examples) CHECK(n == 1);
        CHECK(sink->head(kStepsKey).appendable);
        CHECK(sink->head(conversion_marker_key(kStepsKey)).status == SinkStatus::NotFound);
        CHECK(sink->head(conversion_copy_key(kStepsKey)).status == SinkStatus::NotFound);
    }
}

TEST_CASE(
    "crash points: batches mode, a writer killed after its INTENT whose content another writer took over: its spool, "
    "adopted later, writes nothing twice",
    "[integration][rgw-redis][crash-points][batches]") {
    // Writer A (machine X) is killed right after its first batch's INTENT,
    // before the batch object is written. Machine X stays down past the
    // owner TTL: A's liveness key expires. Writer C (machine Y) is handed the
    // same examples, takes A's claims over and writes them in a batch object
    // of its own. Then X comes back, and a writer there adopts A's spool: the
    // undecided batch's claims are confirmed before anything is written under
    // its name (an empty object fences it), so each line is in the month once.
    std::string bucket;
    auto sink = tdo_test::fresh_bucket(tdo_test::rgw(), bucket);
    tdo_test::TempDir x, y;
    const std::string extra = kFastFlush + redis_settings() +
                              ",\"s3_append_mode\":\"batches\",\"s3_compaction_interval_seconds\":0,"
                              "\"dedup_owner_ttl_seconds\":10,\"s3_request_timeout_ms\":4000,\"s3_lease_seconds\":5";
    const std::string on_x = tdo_test::writer_config(tdo_test::rgw(), bucket, x.path(), extra);
    const std::string on_y = tdo_test::writer_config(tdo_test::rgw(), bucket, y.path(), extra);
    const int examples = 5;
    tdo_test::WriterRun a = tdo_test::run_crash_writer(on_x, 0, examples, "flusher.after_intent:1");
    REQUIRE(a.killed);
    REQUIRE_FALSE(tdo_test::list_dir(x / ".spool").empty());
    std::this_thread::sleep_for(std::chrono::seconds(11));  // A's liveness key expires
    tdo_test::WriterRun c = tdo_test::run_crash_writer(on_y, 0, examples, "");
    REQUIRE(c.done);
    CHECK(c.errors == 0);
    CHECK(c.answered.size() == static_cast<std::size_t>(examples));
    // X is back: a writer there adopts A's spool (and is handed the examples again).
    tdo_test::WriterRun d = tdo_test::run_crash_writer(on_x, 0, examples, "");
    REQUIRE(d.done);
    CHECK(d.errors == 0);
    CHECK(tdo_test::list_dir(x / ".spool").empty());
    std::map<int, int> seen;
    for (const auto& line : tdo_test::lines_of(tdo_test::month_of(*sink, kStepsKey))) {
        int w = -1, i = -1;
        auto doc = tdo_test::parse(line);
        REQUIRE(doc.IsObject());
        REQUIRE(std::sscanf(doc["output"].GetString(), "Worker %d example %d.", &w, &i) == 2);
        ++seen[i];
    }
    CHECK(seen.size() == static_cast<std::size_t>(examples));
    for (const auto& [i, n] : seen) {
        INFO("example " << i);
        CHECK(n == 1);
    }
    // Compacted, the monthly file alone holds each line once.
    tdo_test::compact(*sink, kStepsKey);
    CHECK(tdo_test::lines_of(sink->get(kStepsKey).body).size() == static_cast<std::size_t>(examples));
}
