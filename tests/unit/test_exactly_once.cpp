// Exactly once on the writer's side, with real processes: threads sharing a
// writer that is SIGKILLed, and a host that redelivers everything it never
// saw acknowledged. Every example answered WRITTEN or DUPLICATE must be in
// its object exactly once.
#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/crash_point.hpp"
#include "crash_harness.hpp"
#include "crash_points.hpp"
#include "memory_sink.hpp"
#include "shared_sink.hpp"
#include "test_util.hpp"
#include "training_output/error.hpp"
#include "training_output/sys/dedup_store.hpp"
#include "training_output/training_output.hpp"

using namespace training_output;

namespace {

const std::string kStepsKey = "training/physical_activity/2025/11/health_journal_2025_11.jsonl";

std::string local_config(const tdo_test::TempDir& dir, const std::string& extra) {
    return "{\"output_dir\":\"" + dir.path() + "\",\"log_level\":\"off\",\"directory_fsync\":false" + extra + "}";
}

// A fresh writer on the same configuration adopts what the killed ones left.
void adopt_and_close(const std::string& config) {
    TrainingOutput last(Config::from_json(config));
    last.flush();
    last.close();
}

}  // namespace

TEST_CASE(
    "crash points: a writer killed at each step, restarted and handed every example again (local directory, "
    "SQLite)",
    "[unit][crash][crash-points]") {
    for (const auto& scenario : tdo_test::crash_point_scenarios()) {
        if (!tdo_test::scenario_applies(scenario, false)) continue;
        tdo_test::TempDir dir;
        const std::string config = local_config(dir, ",\"flush_interval_ms\":5,\"flush_max_bytes\":2048");
        INFO("scenario starting with " << scenario.front());
        tdo_test::check_crash_scenario(config, scenario, [&] { return tdo_test::read_file(dir / kStepsKey); });
        // Nothing is left behind: every spool was delivered and removed.
        CHECK(tdo_test::list_dir(dir / ".spool").empty());
    }
}

TEST_CASE("exactly once: 8 threads on one writer, SIGKILLed at random, then adopted", "[unit][crash][threads]") {
    // Slow flushing (lines wait in the spool) and fast flushing (batches in
    // flight when the kill comes).
    const std::string flushing =
        GENERATE(std::string(), std::string(",\"flush_interval_ms\":2,\"flush_max_bytes\":4096"));
    for (int round = 0; round < 6; ++round) {
        tdo_test::TempDir dir;
        const std::string config = local_config(dir, flushing);
        tdo_test::CrashRun run;
        run.workers = 1;
        run.threads = 8;
        run.per_worker = 200000;  // more than it can write before the kill
        run.min_kills = 1;
        run.delay_us = 0;
        run.restart = false;
        run.min_reports = 200;  // killed while its threads write, not while it opens
        run.kill_every_min = std::chrono::milliseconds(150);
        run.kill_every_max = std::chrono::milliseconds(400);
        auto result = tdo_test::run_crash_harness(TDO_TEST_CRASH_WRITER, config, run);
        REQUIRE(result.kills == 1);
        INFO(result.first_error);
        CHECK(result.errors == 0);
        adopt_and_close(config);
        INFO("round " << round << (flushing.empty() ? ", default flushing" : ", fast flushing"));
        tdo_test::check_exactly_once(tdo_test::read_file(dir / kStepsKey), result, run);
        REQUIRE(result.accepted.size() > 0);
    }
}

TEST_CASE(
    "exactly once: a processor killed while it waits for room in a full spool, then handed every example "
    "again, loses none",
    "[unit][crash][redelivery][slow]") {
    // The monthly file cannot be created (a file stands where its directory
    // goes), so the spool fills and the next call waits for room; the
    // processor is killed there. The redelivered examples must all land once
    // the way is clear.
    tdo_test::TempDir dir;
    const std::string config =
        local_config(dir,
                     ",\"flush_interval_ms\":10,\"spool_max_bytes\":65536,\"max_line_bytes\":16384,"
                     "\"spool_block_timeout_ms\":60000");
    tdo_test::write_file(dir / "training/physical_activity", "in the way\n");
    tdo_test::CrashRun run;
    run.workers = 1;
    run.per_worker = 400;
    run.delay_us = 0;
    tdo_test::CrashResult result;
    tdo_test::detail::Worker w;
    tdo_test::detail::start(w, TDO_TEST_CRASH_WRITER, config, run);
    // Reports stop coming once a call waits for room.
    std::size_t seen = 0;
    for (int quiet_ms = 0; quiet_ms < 500; quiet_ms += 50) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        REQUIRE(tdo_test::detail::drain(w, result, false));
        if (result.reported.size() != seen) quiet_ms = 0;
        seen = result.reported.size();
    }
    REQUIRE(seen > 10);
    REQUIRE(seen < 400);
    ::kill(w.pid, SIGKILL);
    ::waitpid(w.pid, nullptr, 0);
    tdo_test::detail::drain(w, result, true);
    ::close(w.fd);

    std::filesystem::remove(dir / "training/physical_activity");
    w = tdo_test::detail::Worker{};
    tdo_test::detail::start(w, TDO_TEST_CRASH_WRITER, config, run);
    while (tdo_test::detail::drain(w, result, true)) {}
    ::close(w.fd);
    int status = 0;
    ::waitpid(w.pid, &status, 0);
    REQUIRE(w.done);
    REQUIRE(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    CHECK(result.errors == 0);
    CHECK(result.reported.size() == 400u);
    tdo_test::check_exactly_once(tdo_test::read_file(dir / kStepsKey), result, run);
    CHECK(tdo_test::lines_of(tdo_test::read_file(dir / kStepsKey)).size() == 400u);
}

TEST_CASE("exactly once: a killed processor handed every example again loses none and doubles none",
          "[unit][crash][redelivery]") {
    tdo_test::TempDir dir;
    const std::string config = local_config(dir, ",\"flush_interval_ms\":20");
    tdo_test::CrashRun run;
    run.workers = 3;
    run.per_worker = 400;
    run.min_kills = 40;
    run.delay_us = 200;
    run.redeliver_all = true;
    run.kill_every_min = std::chrono::milliseconds(10);
    run.kill_every_max = std::chrono::milliseconds(60);
    auto result = tdo_test::run_crash_harness(TDO_TEST_CRASH_WRITER, config, run);
    CHECK(result.kills >= run.min_kills);
    INFO(result.first_error);
    CHECK(result.errors == 0);
    adopt_and_close(config);
    tdo_test::check_exactly_once(tdo_test::read_file(dir / kStepsKey), result, run);
    // Each worker's last run went through all its examples.
    CHECK(result.reported.size() == static_cast<std::size_t>(run.workers * run.per_worker));
}

namespace {

Config writer_config(const tdo_test::TempDir& dir) {
    Config c;
    c.output_dir = dir.path();
    c.directory_fsync = false;
    c.log_level = LogLevel::Off;
    c.finalize();
    return c;
}

const std::string kGlucoseKey = "training/metabolic_diabetes/2025/11/health_journal_2025_11.jsonl";

Outcome glucose(TrainingOutput& w, const std::string& narrative) {
    return w.generate(narrative, tdo_test::message_json("BloodGlucoseRecord"), tdo_test::result_json());
}

// A sink whose every request fails (the object store is down) until `up`.
std::unique_ptr<S3Sink> sink_down_until(MemorySink& memory, std::atomic<bool>& up) {
    memory.set_fault_hook([&up](MemorySink::Op, const std::string&) -> std::optional<MemorySink::Fault> {
        if (up) return std::nullopt;
        SinkResponse r;
        r.status = SinkStatus::Transient;
        r.detail = "connection refused";
        return MemorySink::Fault{r, false};
    });
    return std::make_unique<tdo_test::SharedSink>(memory);
}

}  // namespace

TEST_CASE("exactly once: a line whose record is written is accepted even if the spool's fsync fails",
          "[unit][spool][fsync]") {
    tdo_test::TempDir dir;
    Config c = writer_config(dir);
    c.spool_fsync = "always";
    TrainingOutput w(c);
    arm_fault("spool.fsync", 3);
    for (int i = 0; i < 5; ++i) CHECK(glucose(w, "Durable or not " + std::to_string(i) + ".") == Outcome::Written);
    arm_fault("spool.fsync", 0);
    CHECK(w.stats().spool_fsync_errors >= 1);
    CHECK(w.stats().errors == 0);
    w.flush();
    // Each line once: none released and written again, none lost.
    auto lines = tdo_test::lines_of(tdo_test::read_file(dir / kGlucoseKey));
    CHECK(lines.size() == 5u);
    CHECK(std::set<std::string>(lines.begin(), lines.end()).size() == 5u);
    // A retry of the same call is a duplicate of the accepted line, not a second copy.
    CHECK(glucose(w, "Durable or not 0.") == Outcome::Duplicate);
    w.close();
    CHECK(tdo_test::list_dir(dir / ".spool").empty());  // nothing pinned forever
}

TEST_CASE("exactly once: a batch that landed but whose DONE could not be written is not appended again",
          "[unit][spool][done]") {
    // The spool's disk fails (ENOSPC, EIO) right after a batch landed: its
    // DONE cannot be written and the attempt fails. The next attempt must
    // find the batch in its object, not append it a second time.
    tdo_test::TempDir dir;
    Config c = writer_config(dir);
    c.s3_retry_base_ms = 1;
    TrainingOutput w(c);
    for (int i = 0; i < 3; ++i)
        CHECK(glucose(w, "Landed, then the disk failed " + std::to_string(i) + ".") == Outcome::Written);
    arm_fault("spool.record_done", 1);
    w.flush();
    arm_fault("spool.record_done", 0);
    auto lines = tdo_test::lines_of(tdo_test::read_file(dir / kGlucoseKey));
    CHECK(lines.size() == 3u);
    CHECK(std::set<std::string>(lines.begin(), lines.end()).size() == lines.size());
    CHECK(w.stats().append_failures == 1);
    CHECK(w.stats().batches_found_landed == 1);
    CHECK(w.stats().lines_appended == 3);
    w.close();
    CHECK(tdo_test::list_dir(dir / ".spool").empty());
}

TEST_CASE("exactly once: content held by a live writer that has not delivered it is PENDING when asked for",
          "[unit][dedup][pending]") {
    tdo_test::TempDir dir;
    MemorySink memory;
    std::atomic<bool> up{false};
    WriterComponents parts;
    parts.sink = sink_down_until(memory, up);
    Config held_config = writer_config(dir);
    held_config.flush_timeout_ms = 100;
    TrainingOutput holder(held_config, std::move(parts));
    CHECK(glucose(holder, "Held, not delivered.") == Outcome::Written);
    CHECK(glucose(holder, "Held, not delivered.") == Outcome::Duplicate);  // its own line holds it

    // A second writer on the same machine (same SQLite file, its own spool).
    Config c = writer_config(dir);
    c.dedup_pending_outcome = true;
    {
        TrainingOutput other(c);
        CHECK(glucose(other, "Held, not delivered.") == Outcome::Pending);
        CHECK(other.stats().held_elsewhere == 1);
        CHECK(other.stats().duplicates == 1);
    }
    c.dedup_pending_outcome = false;
    {
        TrainingOutput other(c);
        CHECK(glucose(other, "Held, not delivered.") == Outcome::Duplicate);
    }
    up = true;
    holder.flush();
    CHECK(tdo_test::lines_of(memory.object(kGlucoseKey).value()).size() == 1u);
    c.dedup_pending_outcome = true;
    TrainingOutput after(c);
    CHECK(glucose(after, "Held, not delivered.") == Outcome::Duplicate);  // delivered now
}

TEST_CASE("exactly once: a spool is adopted only by writers with its destination", "[unit][spool][destination]") {
    tdo_test::TempDir a_dir, b_dir, spools;
    auto config = [&](const tdo_test::TempDir& out) {
        Config c = writer_config(out);
        c.spool_dir = spools.path();
        c.dedup_db_path = spools / "dedup.sqlite3";  // one machine, one store
        c.flush_timeout_ms = 100;
        c.finalize();
        return c;
    };
    {
        // Writer A cannot deliver: its line stays in its spool.
        MemorySink memory;
        std::atomic<bool> up{false};
        WriterComponents parts;
        parts.sink = sink_down_until(memory, up);
        TrainingOutput a(config(a_dir), std::move(parts));
        CHECK(glucose(a, "For A's directory only.") == Outcome::Written);
        CHECK_THROWS_AS(a.close(), Error);
    }
    {
        // A writer for another directory leaves it alone.
        TrainingOutput b(config(b_dir));
        CHECK(b.stats().spools_adopted == 0);
        b.close();
        CHECK_FALSE(std::filesystem::exists(b_dir / kGlucoseKey));
    }
    TrainingOutput a2(config(a_dir));
    CHECK(a2.stats().spools_adopted == 1);
    a2.flush();
    CHECK(tdo_test::lines_of(tdo_test::read_file(a_dir / kGlucoseKey)).size() == 1u);
}

TEST_CASE(
    "exactly once: writers that name one directory by a relative and by an absolute path, from different working "
    "directories, share its claims",
    "[unit][crash][paths]") {
    // Process A runs in X with output_dir "out" and holds 20 lines it has not
    // delivered; process B, started elsewhere, names X/out by its absolute
    // path and is handed the same 20 examples. B must see A's claims as held
    // by a live writer (A's spool exists), not as a dead writer's to take over.
    tdo_test::TempDir x;
    const std::string common = ",\"log_level\":\"off\",\"directory_fsync\":false,\"flush_interval_ms\":600000";
    // A waits for each claim (the claims are A's before B starts).
    const std::string config_a = "{\"output_dir\":\"out\",\"dedup_pending_outcome\":true" + common + "}";
    const std::string config_b = "{\"output_dir\":\"" + (x / "out") + "\"" + common + "}";
    tdo_test::CrashRun run;
    run.workers = 1;
    run.per_worker = 20;
    tdo_test::CrashResult result;
    int go[2];
    REQUIRE(::pipe(go) == 0);
    const std::string helper = TDO_TEST_CRASH_WRITER;
    auto start = [&](tdo_test::detail::Worker& w, const std::string& cwd, const std::string& config, bool hold) {
        w.pid = tdo_test::detail::fork_with_stdout(&w.fd, [&] {
            if (hold) {
                ::dup2(go[0], 0);
                ::setenv("TDO_TEST_HOLD_BEFORE_FLUSH", "1", 1);
            }
            ::close(go[0]);
            ::close(go[1]);
            if (::chdir(cwd.c_str()) != 0) std::_Exit(126);
            ::execl(helper.c_str(), helper.c_str(), config.c_str(), "0", "0", "20", "0", static_cast<char*>(nullptr));
        });
    };
    tdo_test::detail::Worker a, b;
    start(a, x.path(), config_a, true);
    ::close(go[0]);
    for (int waited_ms = 0; !a.held; waited_ms += 10) {
        REQUIRE(waited_ms < 60000);
        REQUIRE(tdo_test::detail::drain(a, result, false));
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    CHECK(result.accepted.size() == 20u);
    CHECK(std::filesystem::exists(x / "out/.dedup.sqlite3"));

    tdo_test::TempDir elsewhere;
    start(b, elsewhere.path(), config_b, false);
    while (tdo_test::detail::drain(b, result, true)) {}
    ::close(b.fd);
    CHECK(tdo_test::wait_for(b.pid) == 0);
    CHECK(b.done);

    REQUIRE(::write(go[1], "\n", 1) == 1);
    ::close(go[1]);
    while (tdo_test::detail::drain(a, result, true)) {}
    ::close(a.fd);
    CHECK(tdo_test::wait_for(a.pid) == 0);
    CHECK(a.done);
    CHECK(result.errors == 0);
    const std::string object = tdo_test::read_file(x / ("out/" + kStepsKey));
    tdo_test::check_exactly_once(object, result, run);
    CHECK(tdo_test::lines_of(object).size() == 20u);
}

TEST_CASE("exactly once: drain delivers a SIGKILLed writer's spool and leaves a live writer's alone",
          "[unit][crash][drain]") {
    tdo_test::TempDir dir;
    const std::string config = local_config(dir, ",\"flush_interval_ms\":600000");
    tdo_test::CrashRun run;
    run.workers = 1;
    run.per_worker = 300;
    run.delay_us = 5000;  // killed well before its last example
    tdo_test::CrashResult result;
    // A live writer of the same configuration, opened while the other one
    // runs (a writer adopts what is orphaned when it opens, and every 10 s
    // after), holds a line of its own.
    TrainingOutput live(Config::from_json(config));
    CHECK(live.generate("Live writer example.", tdo_test::message_json("StepsRecord"), tdo_test::result_json()) ==
          Outcome::Written);
    tdo_test::detail::Worker w;
    tdo_test::detail::start(w, TDO_TEST_CRASH_WRITER, config, run);
    while (result.reported.size() < 100) {
        REQUIRE(tdo_test::detail::drain(w, result, false));
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    ::kill(w.pid, SIGKILL);
    ::waitpid(w.pid, nullptr, 0);
    tdo_test::detail::drain(w, result, true);
    ::close(w.fd);
    REQUIRE_FALSE(w.done);

    const DrainReport report = TrainingOutput::drain(Config::from_json(config));
    CHECK(report.spools_adopted == 1);
    CHECK(report.lines_appended + report.lines_voided >= result.accepted.size());
    const std::string object = tdo_test::read_file(dir / kStepsKey);
    tdo_test::check_exactly_once(object, result, run);
    CHECK(tdo_test::lines_of(object).size() == result.accepted.size());  // the live writer's line is still its own
    live.close();
    CHECK(tdo_test::lines_of(tdo_test::read_file(dir / kStepsKey)).size() == result.accepted.size() + 1);
    // Nothing left: a second drain adopts nothing.
    CHECK(TrainingOutput::drain(Config::from_json(config)).spools_adopted == 0);
}

TEST_CASE("exactly once: writers of two destinations started in one directory keep their own dedup memory",
          "[unit][dedup][destination][slow]") {
    // Two prefixes (as two buckets would) in one output directory, on the
    // default dedup file: content written for one is not a duplicate for the other.
    tdo_test::TempDir dir;
    auto config = [&](const char* prefix) {
        Config c = writer_config(dir);
        c.training_data_prefix = prefix;
        c.finalize();
        return c;
    };
    TrainingOutput a(config("first"));
    TrainingOutput b(config("second"));
    CHECK(glucose(a, "The same narrative.") == Outcome::Written);
    CHECK(glucose(b, "The same narrative.") == Outcome::Written);
    CHECK(glucose(a, "The same narrative.") == Outcome::Duplicate);
    CHECK(glucose(b, "The same narrative.") == Outcome::Duplicate);
    a.close();
    b.close();
    CHECK(tdo_test::lines_of(tdo_test::read_file(dir / "first/metabolic_diabetes/2025/11/health_journal_2025_11.jsonl"))
              .size() == 1u);
    CHECK(
        tdo_test::lines_of(tdo_test::read_file(dir / "second/metabolic_diabetes/2025/11/health_journal_2025_11.jsonl"))
            .size() == 1u);
    int files = 0;
    for (const auto& f : tdo_test::list_dir(dir.path()))
        files += f.rfind(".dedup", 0) == 0 && f.size() > 8 && f.substr(f.size() - 8) == ".sqlite3";
    CHECK(files == 2);  // the default one, and one beside it named after the second destination
    // An explicitly shared file is shared as given.
    Config explicit_a = config("first"), explicit_b = config("second");
    explicit_a.dedup_db_path = explicit_b.dedup_db_path = dir / "shared.sqlite3";
    TrainingOutput sa(explicit_a), sb(explicit_b);
    CHECK(glucose(sa, "Shared on purpose.") == Outcome::Written);
    CHECK(glucose(sb, "Shared on purpose.") != Outcome::Written);
}

namespace {

// A store with an owner liveness (like Redis) that the test cuts off and
// restores, and whose claims it hands to another owner: what Redis does once
// the writer's liveness key expired and another writer claims the content.
class PartitionedStore : public DedupStore {
public:
    ClaimState claim(const std::string& key, const std::string& owner, std::chrono::seconds ttl) override {
        check();
        {
            std::lock_guard<std::mutex> lock(mutex_);
            keys_.push_back(key);
        }
        return inner_->claim(key, owner, ttl);
    }
    void commit(const std::vector<std::string>& keys, std::chrono::seconds ttl) override {
        check();
        inner_->commit(keys, ttl);
    }
    void register_owner(const OwnerRecord& owner) override {
        check();
        {
            std::lock_guard<std::mutex> lock(mutex_);
            owners_.push_back(owner.id);
        }
        inner_->register_owner(owner);
    }
    void refresh_owners(const std::vector<OwnerRecord>&) override {
        if (cut) {
            ++failed_refreshes;
            check();
        }
        ++refreshes;
    }
    void retire_owner(const std::string& owner) override {
        check();
        inner_->retire_owner(owner);
    }
    std::chrono::seconds owner_ttl() const override { return std::chrono::seconds(3); }
    const char* kind() const noexcept override { return "memory"; }

    // Another writer takes over every claim of this store's owners.
    void take_over(const std::string& other) {
        std::vector<std::string> keys, owners;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            keys = keys_;
            owners = owners_;
        }
        for (const auto& o : owners) inner_->retire_owner(o);
        inner_->register_owner({other, "elsewhere"});
        for (const auto& k : keys) REQUIRE(inner_->claim(k, other, std::chrono::hours(1)) == ClaimState::Claimed);
    }

    std::atomic<bool> cut{false};
    std::atomic<int> refreshes{0}, failed_refreshes{0};

private:
    void check() const {
        if (cut) throw Error(ErrorCode::DedupStore, "the store is cut off");
    }
    std::unique_ptr<DedupStore> inner_ = make_memory_dedup_store();
    std::mutex mutex_;
    std::vector<std::string> keys_, owners_;
};

template <class Pred>
void wait_for(Pred pred) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (!pred() && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    REQUIRE(pred());
}

}  // namespace

TEST_CASE(
    "exactly once: a liveness that lapses and comes back while a batch is on its way: the batch is confirmed again",
    "[unit][dedup][liveness]") {
    // The batch is taken with its claims confirmed; its first request to the
    // object store is slow. Meanwhile the writer loses its dedup store for
    // longer than its liveness lasts, another writer takes the claims over,
    // and the store comes back (the liveness is fresh again). The batch must
    // not be written on the claims it had before the lapse.
    tdo_test::TempDir dir;
    MemorySink memory;
    std::atomic<bool> in_request{false}, release{false};
    memory.set_fault_hook([&](MemorySink::Op, const std::string& key) -> std::optional<MemorySink::Fault> {
        if (key == kGlucoseKey && !release) {
            in_request = true;
            while (!release) std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        return std::nullopt;
    });
    auto store = std::make_unique<PartitionedStore>();
    PartitionedStore& s = *store;
    WriterComponents parts;
    parts.sink = std::make_unique<tdo_test::SharedSink>(memory);
    parts.dedup_store = std::move(store);
    Config c = writer_config(dir);
    c.flush_interval_ms = 1;
    c.flush_timeout_ms = 10000;
    TrainingOutput w(c, std::move(parts));
    CHECK(glucose(w, "Taken over while on its way.") == Outcome::Written);
    wait_for([&] { return in_request.load(); });

    s.cut = true;
    wait_for([&] { return s.failed_refreshes.load() > 0; });
    s.take_over("another-writer");
    const int before = s.refreshes;
    s.cut = false;
    wait_for([&] { return s.refreshes.load() > before; });  // fresh again
    release = true;

    w.flush();
    CHECK(w.stats().lines_voided == 1);
    const auto object = memory.object(kGlucoseKey);
    CHECK_FALSE(object.has_value());  // the other writer delivers it
    w.close();
}
