#include <catch2/catch.hpp>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include "memory_sink.hpp"
#include "shared_sink.hpp"
#include "test_util.hpp"
#include "training_output/error.hpp"
#include "training_output/training_output.hpp"

using namespace training_output;
using tdo_test::message_json;
using tdo_test::result_json;

namespace {

Config config_in(const tdo_test::TempDir& dir, const std::string& store = "sqlite") {
    Config c;
    c.output_dir = dir.path();
    c.dedup_store = store;
    c.directory_fsync = false;
    c.log_level = LogLevel::Off;
    c.finalize();
    return c;
}

const std::string kKey = "training/metabolic_diabetes/2025/11/health_journal_2025_11.jsonl";

// A store whose every call fails.
class BrokenStore : public DedupStore {
public:
    ClaimState claim(const std::string&, const std::string&, std::chrono::seconds) override {
        throw Error(ErrorCode::DedupStore, "store down");
    }
    void commit(const std::vector<std::string>&, std::chrono::seconds) override {
        throw Error(ErrorCode::DedupStore, "store down");
    }
    void register_owner(const OwnerRecord&) override { throw Error(ErrorCode::DedupStore, "store down"); }
    void retire_owner(const std::string&) override { throw Error(ErrorCode::DedupStore, "store down"); }
    const char* kind() const noexcept override { return "broken"; }
};

}  // namespace

TEST_CASE("writer creates the monthly file and appends to it", "[unit][writer]") {
    tdo_test::TempDir dir;
    TrainingOutput w(config_in(dir));
    CHECK(w.generate("First narrative.", message_json("BloodGlucoseRecord"), result_json(450)) == Outcome::Written);
    CHECK(w.stats().pending_lines == 1);
    w.flush();
    CHECK(w.stats().pending_lines == 0);
    REQUIRE(std::filesystem::exists(dir / kKey));
    CHECK(tdo_test::lines_of(tdo_test::read_file(dir / kKey)).size() == 1);
    CHECK(w.generate("Second narrative.", message_json("BloodGlucoseRecord"), result_json(450)) == Outcome::Written);
    w.flush();
    auto lines = tdo_test::lines_of(tdo_test::read_file(dir / kKey));
    REQUIRE(lines.size() == 2);
    CHECK(std::string(tdo_test::parse(lines[0])["output"].GetString()) == "First narrative.");
    CHECK(std::string(tdo_test::parse(lines[1])["output"].GetString()) == "Second narrative.");
    CHECK(w.stats().written == 2);
    CHECK(w.stats().lines_appended == 2);
    CHECK(tdo_test::jsonl_files(dir.path()) == std::vector<std::string>{kKey});
}

TEST_CASE("writer drops duplicates, in one run and across a reopen", "[unit][writer]") {
    tdo_test::TempDir dir;
    {
        TrainingOutput w(config_in(dir));
        CHECK(w.generate("Same.", message_json("BloodGlucoseRecord", "u1", "c1"), result_json(5)) == Outcome::Written);
        // Another user, another correlation id, another time: the same example.
        CHECK(w.generate("Same.", message_json("BloodGlucoseRecord", "u2", "c2"),
                         result_json(5, "2025-11-20T00:00:00Z")) == Outcome::Duplicate);
        CHECK(w.stats().duplicates == 1);
    }
    TrainingOutput w(config_in(dir));
    CHECK(w.generate("Same.", message_json("BloodGlucoseRecord"), result_json(5)) == Outcome::Duplicate);
    CHECK(w.generate("Different.", message_json("BloodGlucoseRecord"), result_json(5)) == Outcome::Written);
    w.flush();
    CHECK(tdo_test::lines_of(tdo_test::read_file(dir / kKey)).size() == 2);
}

TEST_CASE("writer skips empty narratives and logs why", "[unit][writer]") {
    tdo_test::TempDir dir;
    std::vector<std::string> events;
    std::mutex m;
    set_log_callback(
        [&](LogLevel, std::string_view event, std::string_view json) {
            std::lock_guard<std::mutex> lock(m);
            events.push_back(std::string(event) + " " + std::string(json));
        },
        LogLevel::Info);
    TrainingOutput w(config_in(dir));
    CHECK(w.generate(" \n ", message_json("StepsRecord"), result_json()) == Outcome::Skipped);
    set_log_callback({}, LogLevel::Off);
    CHECK(w.stats().skipped == 1);
    CHECK(tdo_test::jsonl_files(dir.path()).empty());
    bool found = false;
    for (const auto& e : events) {
        if (e.rfind("training_output_skipped ", 0) == 0) {
            found = true;
            CHECK_THAT(e, Catch::Contains("empty_narrative") && Catch::Contains("StepsRecord"));
        }
    }
    CHECK(found);
}

TEST_CASE("writer: metadata on and off", "[unit][writer]") {
    tdo_test::TempDir dir;
    Config c = config_in(dir);
    c.include_training_metadata = false;
    TrainingOutput w(c);
    w.generate("No metadata.", message_json("BloodGlucoseRecord"), result_json());
    w.flush();
    auto doc = tdo_test::parse(tdo_test::lines_of(tdo_test::read_file(dir / kKey)).at(0));
    CHECK_FALSE(doc.HasMember("metadata"));
    CHECK(doc.HasMember("instruction"));
}

TEST_CASE("writer disabled does no I/O at all", "[unit][writer]") {
    tdo_test::TempDir dir;
    Config c = config_in(dir);
    c.output_dir = dir / "never-created";
    c.dedup_db_path.clear();
    c.enable_training_output = false;
    c.finalize();
    TrainingOutput w(c);
    CHECK(w.generate("Text.", message_json("StepsRecord"), result_json()) == Outcome::Disabled);
    CHECK(w.generate("", "not even json", "") == Outcome::Disabled);
    w.flush();
    CHECK_FALSE(std::filesystem::exists(dir / "never-created"));
    CHECK(w.stats().disabled == 2);
}

TEST_CASE("writer fails open when the dedup store is broken", "[unit][writer]") {
    tdo_test::TempDir dir;
    WriterComponents parts;
    parts.dedup_store = std::make_unique<BrokenStore>();
    TrainingOutput w(config_in(dir), std::move(parts));
    CHECK(w.generate("Same.", message_json("BloodGlucoseRecord"), result_json()) == Outcome::Written);
    CHECK(w.generate("Same.", message_json("BloodGlucoseRecord"), result_json()) == Outcome::Written);
    w.flush();
    CHECK(tdo_test::lines_of(tdo_test::read_file(dir / kKey)).size() == 2);
    CHECK(w.stats().dedup_store_errors >= 2);  // registering the spool, claiming, committing
    CHECK(w.stats().written == 2);
    CHECK(w.stats().pending_commits == 2);  // retried until the store answers (by the next writer, if need be)
}

TEST_CASE("writer retries a failing batch until it lands, then commits it", "[unit][writer]") {
    tdo_test::TempDir dir;
    std::vector<std::string> events;
    std::mutex events_mutex;
    set_log_callback(
        [&](LogLevel, std::string_view event, std::string_view json) {
            if (event != "training_output_failed" && event != "training_output_append_recovered") return;
            std::lock_guard<std::mutex> lock(events_mutex);
            events.push_back(std::string(json));
        },
        LogLevel::Debug);
    struct Restore {
        ~Restore() { set_log_callback({}, LogLevel::Off); }
    } restore;
    MemorySink memory;
    std::atomic<bool> down{true};
    memory.set_fault_hook([&](MemorySink::Op, const std::string&) -> std::optional<MemorySink::Fault> {
        if (!down) return std::nullopt;
        SinkResponse r;
        r.status = SinkStatus::Fatal;
        r.http_status = 404;
        r.error.code = "NoSuchBucket";
        return MemorySink::Fault{r, false};
    });
    WriterComponents parts;
    parts.sink = std::make_unique<tdo_test::SharedSink>(memory);
    Config c = config_in(dir);
    c.flush_timeout_ms = 300;
    TrainingOutput w(c, std::move(parts));
    CHECK(w.generate("Retry me.", message_json("BloodGlucoseRecord"), result_json()) == Outcome::Written);
    try {
        w.flush();
        FAIL("expected an error");
    } catch (const Error& e) {
        CHECK(e.code() == ErrorCode::Timeout);
        CHECK_THAT(e.what(), Catch::Contains("NoSuchBucket") && Catch::Contains("1 lines pending"));
    }
    CHECK(w.stats().append_failures >= 1);
    CHECK(w.stats().pending_lines == 1);
    down = false;
    w.flush();  // within flush_timeout_ms of the retry backoff
    CHECK(tdo_test::lines_of(memory.object(kKey).value()).size() == 1);
    CHECK(w.generate("Retry me.", message_json("BloodGlucoseRecord"), result_json()) == Outcome::Duplicate);
    // One event for the run of failures (however many), one when it ended.
    std::lock_guard<std::mutex> lock(events_mutex);
    REQUIRE(events.size() == 2);
    const std::string bytes = std::to_string(memory.object(kKey).value().size());
    CHECK_THAT(events[0], Catch::Contains("\"event\":\"training_output_failed\"") &&
                              Catch::Contains("\"level\":\"warning\"") && Catch::Contains("\"lines\":1,") &&
                              Catch::Contains("\"bytes\":" + bytes + ",") && Catch::Contains("\"retry_in_ms\":") &&
                              Catch::Contains("NoSuchBucket") && Catch::Contains("\"code\":\"TDO_E_STORAGE\""));
    CHECK_THAT(events[1], Catch::Contains("\"event\":\"training_output_append_recovered\"") &&
                              Catch::Contains("\"lines\":1,") && Catch::Contains("\"bytes\":" + bytes + ",") &&
                              Catch::Contains("\"object_key\":\"" + std::string(kKey) + "\""));
    CHECK(events[1].find("\"failures\":0") == std::string::npos);
}

TEST_CASE("lines a writer could not deliver stay spooled, and the next writer delivers them once",
          "[unit][writer][spool]") {
    tdo_test::TempDir dir;
    {
        MemorySink memory;
        memory.set_fault_hook([&](MemorySink::Op, const std::string&) -> std::optional<MemorySink::Fault> {
            SinkResponse r;
            r.status = SinkStatus::Transient;
            r.detail = "connection refused";
            return MemorySink::Fault{r, false};
        });
        WriterComponents parts;
        parts.sink = std::make_unique<tdo_test::SharedSink>(memory);
        Config c = config_in(dir);
        c.flush_timeout_ms = 200;
        TrainingOutput w(c, std::move(parts));
        CHECK(w.generate("Undeliverable.", message_json("BloodGlucoseRecord"), result_json()) == Outcome::Written);
        try {
            w.close();
            FAIL("expected an error");
        } catch (const Error& e) {
            CHECK(e.code() == ErrorCode::Timeout);
            CHECK_THAT(e.what(),
                       Catch::Contains("1 lines are not in their objects yet") && Catch::Contains("stay in the spool"));
        }
    }
    // A writer on the same spool and dedup store, with a working sink: it
    // adopts the line; the same content again is a duplicate of it.
    TrainingOutput w(config_in(dir));
    CHECK(w.stats().spools_adopted == 1);
    CHECK(w.stats().lines_recovered == 1);
    CHECK(w.generate("Undeliverable.", message_json("BloodGlucoseRecord"), result_json()) == Outcome::Duplicate);
    w.flush();
    CHECK(tdo_test::lines_of(tdo_test::read_file(dir / kKey)).size() == 1);
    w.close();
    // Delivered spools are removed.
    CHECK(tdo_test::list_dir(dir / ".spool").empty());
}

TEST_CASE("8 threads racing on shared and distinct content: each unique example once", "[unit][writer][concurrency]") {
    auto store = GENERATE(std::string("memory"), std::string("sqlite"));
    tdo_test::TempDir dir;
    TrainingOutput w(config_in(dir, store));
    constexpr int kThreads = 8, kPerThread = 40;
    std::atomic<int> written{0}, duplicates{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
        threads.emplace_back([&, t] {
            for (int i = 0; i < kPerThread; ++i) {
                // Even i: the same content in every thread. Odd i: this thread's own.
                std::string narrative = i % 2 == 0 ? "Shared " + std::to_string(i)
                                                   : "Thread " + std::to_string(t) + " item " + std::to_string(i);
                const char* type = i % 4 < 2 ? "StepsRecord" : "SleepSessionRecord";
                auto o = w.generate(narrative, message_json(type, "u" + std::to_string(t)), result_json());
                (o == Outcome::Written ? written : duplicates)++;
            }
        });
    }
    for (auto& t : threads) t.join();
    w.flush();
    const int shared = kPerThread / 2, own = kThreads * kPerThread / 2;
    CHECK(written == shared + own);
    CHECK(duplicates == shared * (kThreads - 1));
    std::multiset<std::string> outputs;
    for (const auto& f : tdo_test::jsonl_files(dir.path())) {
        for (const auto& line : tdo_test::lines_of(tdo_test::read_file(dir / f))) {
            auto doc = tdo_test::parse(line);
            REQUIRE_FALSE(doc.HasParseError());
            outputs.insert(doc["output"].GetString());
        }
    }
    CHECK(outputs.size() == static_cast<std::size_t>(shared + own));
    CHECK(std::set<std::string>(outputs.begin(), outputs.end()).size() == outputs.size());
}

TEST_CASE("several processes on one directory: each unique example once", "[unit][writer][concurrency]") {
    tdo_test::TempDir dir;
    const std::string config =
        "{\"output_dir\":\"" + dir.path() + "\",\"directory_fsync\":false,\"log_level\":\"off\"}";
    constexpr int kProcs = 4, kCount = 60, kSharedEvery = 3;
    std::vector<pid_t> pids;
    for (int p = 0; p < kProcs; ++p) {
        pids.push_back(tdo_test::spawn(
            {TDO_TEST_WRITER, config, std::to_string(p), std::to_string(kCount), std::to_string(kSharedEvery)}));
        REQUIRE(pids.back() > 0);
    }
    for (pid_t pid : pids) CHECK(tdo_test::wait_for(pid) == 0);
    std::multiset<std::string> outputs;
    for (const auto& f : tdo_test::jsonl_files(dir.path())) {
        for (const auto& line : tdo_test::lines_of(tdo_test::read_file(dir / f))) {
            auto doc = tdo_test::parse(line);
            REQUIRE_FALSE(doc.HasParseError());
            outputs.insert(doc["output"].GetString());
        }
    }
    const int shared = (kCount + kSharedEvery - 1) / kSharedEvery;
    const int own = kProcs * (kCount - shared);
    CHECK(outputs.size() == static_cast<std::size_t>(shared + own));
    CHECK(std::set<std::string>(outputs.begin(), outputs.end()).size() == outputs.size());
}

TEST_CASE("writer rejects examples above max_line_bytes", "[unit][writer]") {
    tdo_test::TempDir dir;
    Config c = config_in(dir);
    c.max_line_bytes = 1024;
    TrainingOutput w(c);
    try {
        w.generate(std::string(2000, 'a'), message_json("StepsRecord"), result_json());
        FAIL("expected an error");
    } catch (const Error& e) {
        CHECK(e.code() == ErrorCode::InvalidInput);
        CHECK_THAT(e.what(), Catch::Contains("max_line_bytes"));
    }
    CHECK(tdo_test::jsonl_files(dir.path()).empty());
}

TEST_CASE("writer after close refuses work", "[unit][writer][slow]") {
    tdo_test::TempDir dir;
    TrainingOutput w(config_in(dir));
    w.close();
    w.close();
    CHECK_THROWS_AS(w.generate("x", message_json("StepsRecord"), result_json()), Error);
    CHECK_THROWS_AS(w.flush(), Error);
}

TEST_CASE("writer: appends that meet other writers make the key's batches larger, and smaller again when they do not",
          "[unit][writer][congestion]") {
    // Every other append loses to "another writer" (409 at a stale
    // position): each batch takes two attempts, and the key's flush interval
    // doubles, up to 8 times the configured 100 ms.
    const bool contended = GENERATE(false, true);
    tdo_test::TempDir dir;
    SinkCapabilities caps{true, true, true, 1};
    caps.native_append = true;
    caps.native_append_atomic = true;
    MemorySink memory(caps);
    std::atomic<int> appends{0};
    memory.set_fault_hook([&](MemorySink::Op op, const std::string&) -> std::optional<MemorySink::Fault> {
        if (!contended || op != MemorySink::Op::Append || appends++ % 2 == 1) return std::nullopt;
        SinkResponse r;
        r.status = SinkStatus::Conflict;
        r.http_status = 409;
        r.error.code = "PositionNotEqualToLength";
        return MemorySink::Fault{r, false};
    });
    WriterComponents parts;
    parts.sink = std::make_unique<tdo_test::SharedSink>(memory);
    Config c = config_in(dir, "memory");
    c.flush_interval_ms = 100;
    TrainingOutput w(c, std::move(parts));
    // 2 s of a steady stream: about 20 batches at 100 ms, 5 or so when the
    // interval grows to 800 ms.
    for (int i = 0; i < 200; ++i) {
        REQUIRE(w.generate("Steady narrative " + std::to_string(i) + ".", tdo_test::message_json("BloodGlucoseRecord"),
                           tdo_test::result_json()) == Outcome::Written);
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    w.flush();
    const auto batches = w.stats().batches_appended;
    INFO(batches << " batches");
    if (contended) {
        CHECK(batches <= 9);
    } else {
        CHECK(batches >= 12);
    }
    CHECK(tdo_test::lines_of(memory.object(kKey).value()).size() == 200u);
}

namespace {

// Every file under the spool directory and its size.
std::map<std::string, std::uintmax_t> spool_files(const tdo_test::TempDir& dir) {
    std::map<std::string, std::uintmax_t> out;
    for (const auto& e : std::filesystem::recursive_directory_iterator(dir / ".spool")) {
        if (e.is_regular_file()) out[e.path().string()] = e.file_size();
    }
    return out;
}

int threads_now() {
    std::istringstream in(tdo_test::read_file("/proc/self/status"));
    for (std::string line; std::getline(in, line);) {
        if (line.rfind("Threads:", 0) == 0) return std::stoi(line.substr(8));
    }
    return -1;
}

}  // namespace

TEST_CASE("writer: a duplicate after a flush touches no spool file; a re-run's duplicates neither",
          "[unit][writer][dedup]") {
    tdo_test::TempDir dir;
    Config c = config_in(dir);
    {
        TrainingOutput w(c);
        for (int i = 0; i < 20; ++i)
            CHECK(w.generate("Seen before " + std::to_string(i) + ".", message_json("BloodGlucoseRecord"),
                             result_json()) == Outcome::Written);
        w.flush();
        const auto files = spool_files(dir);
        const auto record = w.stats();
        // A redelivery: each is answered before anything is spooled.
        for (int i = 0; i < 20; ++i)
            CHECK(w.generate("Seen before " + std::to_string(i) + ".", message_json("BloodGlucoseRecord"),
                             result_json()) == Outcome::Duplicate);
        CHECK(spool_files(dir) == files);  // no LINE record, no VOID record, no new file
        CHECK(w.stats().spool_bytes == record.spool_bytes);
        CHECK(w.stats().lines_voided == 0);
        w.close();
    }
    // A new writer on the same directory (a re-run after a crash): the store answers.
    TrainingOutput again(c);
    const auto files = spool_files(dir);
    for (int i = 0; i < 20; ++i)
        CHECK(again.generate("Seen before " + std::to_string(i) + ".", message_json("BloodGlucoseRecord"),
                             result_json()) == Outcome::Duplicate);
    CHECK(spool_files(dir) == files);
    CHECK(again.stats().duplicates == 20);
    again.close();
    CHECK(tdo_test::lines_of(tdo_test::read_file(dir / kKey)).size() == 20u);
}

TEST_CASE("writer: idle writers hold no segment and share their background thread", "[unit][writer][threads]") {
    std::vector<std::unique_ptr<tdo_test::TempDir>> dirs;
    std::vector<std::unique_ptr<TrainingOutput>> writers;
    const int before = threads_now();
    constexpr int kWriters = 8;
    for (int i = 0; i < kWriters; ++i) {
        dirs.push_back(std::make_unique<tdo_test::TempDir>());
        writers.push_back(std::make_unique<TrainingOutput>(config_in(*dirs.back())));
    }
    // A flusher each, and one thread for all their spools (fsyncs, pages
    // faulted in ahead, segments prepared); no claimer until a line comes.
    CHECK(threads_now() - before <= kWriters + 1);
    for (const auto& d : dirs) {
        int segments = 0;
        for (const auto& e : std::filesystem::recursive_directory_iterator(*d / ".spool"))
            segments += e.path().filename().string().rfind("seg-", 0) == 0 ||
                        e.path().filename().string().rfind("spare-", 0) == 0;
        CHECK(segments == 0);
    }
    CHECK(writers[0]->generate("One line.", message_json("BloodGlucoseRecord"), result_json()) == Outcome::Written);
    writers[0]->flush();
    for (auto& w : writers) w->close();
}
