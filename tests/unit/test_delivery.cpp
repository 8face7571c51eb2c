// A batch's way to its object, state by state (lib/delivery/batch_state.hpp):
// each transition is logged (training_output_batch_state), and one the
// protocol does not make is reported (training_output_batch_state_unexpected).
#include <rapidjson/document.h>
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/crash_point.hpp"
#include "delivery/batch_state.hpp"
#include "delivery/events.hpp"
#include "memory_sink.hpp"
#include "shared_sink.hpp"
#include "test_util.hpp"
#include "training_output/training_output.hpp"

using namespace training_output;

namespace {

// The transitions the writers of the test made, "from>to", in order.
class Transitions {
public:
    Transitions() {
        set_log_callback(
            [this](LogLevel, std::string_view event, std::string_view json) {
                std::lock_guard<std::mutex> lock(mutex_);
                if (event == "training_output_batch_state_unexpected") unexpected_.emplace_back(json);
                if (event != "training_output_batch_state") return;
                rapidjson::Document d;
                d.Parse(json.data(), json.size());
                seen_.push_back(std::string(d["from"].GetString()) + ">" + d["to"].GetString());
            },
            LogLevel::Debug);
    }
    ~Transitions() { set_log_callback({}, LogLevel::Off); }
    std::vector<std::string> seen() const {
        std::lock_guard<std::mutex> lock(mutex_);
        return seen_;
    }
    std::vector<std::string> unexpected() const {
        std::lock_guard<std::mutex> lock(mutex_);
        return unexpected_;
    }

private:
    mutable std::mutex mutex_;
    std::vector<std::string> seen_, unexpected_;
};

Config config_in(const tdo_test::TempDir& dir) {
    Config c;
    c.output_dir = dir.path();
    c.directory_fsync = false;
    c.log_level = LogLevel::Off;
    c.s3_retry_base_ms = 1;
    c.finalize();
    return c;
}

Outcome glucose(TrainingOutput& w, const std::string& narrative) {
    return w.generate(narrative, tdo_test::message_json("BloodGlucoseRecord"), tdo_test::result_json());
}

const std::string kGlucoseKey = "training/metabolic_diabetes/2025/11/health_journal_2025_11.jsonl";

}  // namespace

TEST_CASE("delivery: a batch goes queued, intent recorded, writing, landed, committed, done", "[unit][delivery]") {
    tdo_test::TempDir dir;
    Transitions t;
    TrainingOutput w(config_in(dir));
    CHECK(glucose(w, "Straight through.") == Outcome::Written);
    w.flush();
    const std::vector<std::string> expect = {"queued>intent_recorded", "intent_recorded>writing", "writing>landed",
                                             "landed>committed", "committed>done"};
    CHECK(t.seen() == expect);
    CHECK(t.unexpected().empty());
    w.close();
}

TEST_CASE("delivery: a batch whose DONE could not be written may have landed, and is found landed",
          "[unit][delivery][done]") {
    tdo_test::TempDir dir;
    Transitions t;
    TrainingOutput w(config_in(dir));
    CHECK(glucose(w, "Landed, then its DONE failed.") == Outcome::Written);
    arm_fault("spool.record_done", 1);
    w.flush();
    arm_fault("spool.record_done", 0);
    const std::vector<std::string> expect = {
        "queued>intent_recorded",    "intent_recorded>writing", "writing>landed",   "landed>committed",
        "committed>may_have_landed", "may_have_landed>landed",  "landed>committed", "committed>done"};
    CHECK(t.seen() == expect);
    CHECK(t.unexpected().empty());
    CHECK(tdo_test::lines_of(tdo_test::read_file(dir / kGlucoseKey)).size() == 1u);
    w.close();
}

TEST_CASE("delivery: a write refused for good goes back to the queue; one that may have applied is checked",
          "[unit][delivery]") {
    tdo_test::TempDir dir;
    MemorySink memory;
    int faults = 1;
    bool applied = false;
    memory.set_fault_hook([&](MemorySink::Op op, const std::string& key) -> std::optional<MemorySink::Fault> {
        if (key != kGlucoseKey || op == MemorySink::Op::Head || op == MemorySink::Op::Get || faults == 0)
            return std::nullopt;
        --faults;
        SinkResponse r;
        r.status = applied ? SinkStatus::Transient : SinkStatus::Fatal;
        r.detail = applied ? "the answer was lost" : "refused";
        r.may_have_applied = applied;
        return MemorySink::Fault{r, applied};
    });
    WriterComponents parts;
    parts.sink = std::make_unique<tdo_test::SharedSink>(memory);
    Transitions t;
    TrainingOutput w(config_in(dir), std::move(parts));
    SECTION("refused: nothing of it can have landed, it is written again from the queue") {
        CHECK(glucose(w, "Refused once.") == Outcome::Written);
        w.flush();
        const std::vector<std::string> expect = {"queued>intent_recorded", "intent_recorded>writing", "writing>queued",
                                                 "queued>intent_recorded", "intent_recorded>writing", "writing>landed",
                                                 "landed>committed",       "committed>done"};
        CHECK(t.seen() == expect);
        CHECK(w.stats().batches_found_landed == 0);
    }
    SECTION("applied, its answer lost: found in the object, not written again") {
        applied = true;
        CHECK(glucose(w, "Applied, answer lost.") == Outcome::Written);
        w.flush();
        const std::vector<std::string> expect = {"queued>intent_recorded", "intent_recorded>writing", "writing>landed",
                                                 "landed>committed", "committed>done"};
        CHECK(t.seen() == expect);
        CHECK(w.stats().batches_found_landed == 1);
        CHECK(w.stats().append_failures == 0);  // settled within the attempt
        CHECK(w.stats().lines_appended == 1);
        CHECK(memory.object(kGlucoseKey).has_value());
        CHECK(tdo_test::lines_of(*memory.object(kGlucoseKey)).size() == 1u);
    }
    CHECK(t.unexpected().empty());
    w.close();
}

TEST_CASE("delivery: the states' table", "[unit][delivery]") {
    using S = BatchState;
    const S all[] = {S::Queued, S::Confirming, S::IntentRecorded, S::Writing, S::MayHaveLanded,
                     S::Landed, S::Committed,  S::Done,           S::Voided};
    std::set<std::string> names;
    for (S s : all) names.insert(batch_state_name(s));
    CHECK(names.size() == 9u);
    for (S to : all) {
        // Done and Voided are the ends: nothing follows them.
        CHECK_FALSE(batch_transition_allowed(S::Done, to));
        CHECK_FALSE(batch_transition_allowed(S::Voided, to));
    }
    // Nothing is written without its INTENT, nothing is done before its commit.
    CHECK_FALSE(batch_transition_allowed(S::Queued, S::Writing));
    CHECK_FALSE(batch_transition_allowed(S::Queued, S::Landed));
    CHECK_FALSE(batch_transition_allowed(S::Landed, S::Done));
    CHECK_FALSE(batch_transition_allowed(S::Writing, S::Committed));
    // A batch that may have landed is never queued as new without a check.
    CHECK_FALSE(batch_transition_allowed(S::Committed, S::Queued));
    CHECK_FALSE(batch_transition_allowed(S::Landed, S::Queued));
}

TEST_CASE("delivery: what follows a landed batch runs in order, off the delivery thread, bounded",
          "[unit][delivery][events]") {
    std::mutex m;
    std::condition_variable cv;
    std::vector<std::string> served;
    bool hold = true;
    auto* events = new LandedEvents(
        [&](const LandedBatch& b) {
            std::unique_lock<std::mutex> lock(m);
            cv.wait(lock, [&] { return !hold || b.key != "first"; });
            served.push_back(b.key + ":" + std::string(b.bytes));
        },
        2);
    LandedBatch b;
    b.key = "first";
    std::string bytes = "a\n";
    b.bytes = bytes;
    events->post(b, bytes);
    b.key = "second";
    b.bytes = "b\n";
    events->post(b, "b\n");
    // The queue holds 2: a third post waits until the first was served.
    std::atomic<bool> third_posted{false};
    std::thread poster([&] {
        LandedBatch c;
        c.key = "third";
        c.bytes = "c\n";
        events->post(c, "c\n");
        third_posted = true;
    });
    SECTION("drain() waits for what was posted; the handler keeps the landing order") {
        {
            std::lock_guard<std::mutex> lock(m);
            CHECK(served.empty());
        }
        CHECK_FALSE(third_posted.load());  // no room while "first" is held
        {
            std::lock_guard<std::mutex> lock(m);
            hold = false;
        }
        cv.notify_all();
        poster.join();
        events->drain();
        const std::vector<std::string> expect = {"first:a\n", "second:b\n", "third:c\n"};
        std::lock_guard<std::mutex> lock(m);
        CHECK(served == expect);
    }
    SECTION("the destructor serves what waits") {
        {
            std::lock_guard<std::mutex> lock(m);
            hold = false;
        }
        cv.notify_all();
        poster.join();
        delete events;
        events = nullptr;
        std::lock_guard<std::mutex> lock(m);
        CHECK(served.size() == 3u);
    }
    delete events;
}

TEST_CASE("delivery: a host's slow delivery callback does not hold the next batch back", "[unit][delivery][events]") {
    tdo_test::TempDir dir;
    Config c = config_in(dir);
    c.flush_interval_ms = 1;
    std::mutex m;
    std::condition_variable cv;
    bool release = false;
    std::atomic<int> called{0};
    WriterComponents parts;
    parts.on_delivery = [&](const Delivery&) {
        ++called;
        std::unique_lock<std::mutex> lock(m);
        cv.wait(lock, [&] { return release; });
    };
    TrainingOutput w(c, std::move(parts));
    CHECK(glucose(w, "The first batch: its callback is slow.") == Outcome::Written);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (called.load() == 0 && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
    REQUIRE(called.load() == 1);
    // The callback still runs: the second batch lands all the same.
    CHECK(w.generate("Steps after the first batch.", tdo_test::message_json("StepsRecord"), tdo_test::result_json()) ==
          Outcome::Written);
    while (w.stats().lines_appended < 2 && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
    CHECK(w.stats().lines_appended == 2);
    CHECK(called.load() == 1);
    {
        std::lock_guard<std::mutex> lock(m);
        release = true;
    }
    cv.notify_all();
    w.flush();  // returns once the second batch's callback was made too
    CHECK(called.load() == 2);
    w.close();
}
