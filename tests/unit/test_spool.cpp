// The spool: records, torn writes, recovery exactly once, full-spool
// policies, adoption of orphans, and writers killed with SIGKILL.
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <filesystem>
#include <random>
#include <thread>

#include "append/batch_objects.hpp"
#include "common/crc32c.hpp"
#include "crash_harness.hpp"
#include "shared_sink.hpp"
#include "spool/record.hpp"
#include "spool/spool.hpp"
#include "test_util.hpp"
#include "training_output/error.hpp"
#include "training_output/training_output.hpp"

using namespace training_output;
using tdo_test::message_json;
using tdo_test::result_json;

namespace {

const std::string kKey = "training/metabolic_diabetes/2025/11/health_journal_2025_11.jsonl";

// The spool options of a writer whose output_dir is `dir`.
SpoolOptions spool_in(const tdo_test::TempDir& dir, SpoolFsync fsync = SpoolFsync::Never) {
    Config c;
    c.output_dir = dir.path();
    c.finalize();
    SpoolOptions o;
    o.destination = c.destination();
    o.dir = dir / ".spool";
    o.fsync = fsync;
    return o;
}

Config config_in(const tdo_test::TempDir& dir) {
    Config c;
    c.output_dir = dir.path();
    c.dedup_store = "memory";
    c.directory_fsync = false;
    c.log_level = LogLevel::Off;
    c.finalize();
    return c;
}

// A 64 KiB spool: a few dozen of the ~1 KB lines the full-spool tests write fill it.
Config small_spool_config(const tdo_test::TempDir& dir, const std::string& policy) {
    Config c = config_in(dir);
    c.spool_max_bytes = 64 << 10;
    c.max_line_bytes = 16 << 10;
    c.spool_full_policy = policy;
    return c;
}

std::string only_segment(const std::string& spool_dir) {
    std::string found;
    for (const auto& w : tdo_test::list_dir(spool_dir)) {
        for (const auto& f : tdo_test::list_dir(spool_dir + "/" + w)) {
            if (f.rfind("seg-", 0) == 0) {
                REQUIRE(found.empty());
                found = spool_dir + "/" + w + "/" + f;
            }
        }
    }
    REQUIRE(!found.empty());
    return found;
}

std::string line(int i) { return "{\"n\":" + std::to_string(i) + "}\n"; }

SpoolBatch batch_of(Spool& s, std::vector<SpoolLineRef> refs, const std::string& key = kKey) {
    return SpoolBatch{s.new_batch_id(), key, std::move(refs)};
}

// Records a batch as written at `size` and landed.
void land(Spool& s, const SpoolBatch& b, std::uint64_t size, const std::string& etag = "\"e\"") {
    s.record_intent(b, BatchIntent{b.object_key, etag, size, "", 0, 0});
    s.record_done(b);
}

// The one orphan under o.dir, adopted, with what replay found for its one
// object key, the lines read back, and how many torn records it dropped.
struct Adopted {
    std::unique_ptr<Spool> spool;
    SpoolRecovered recovered;
    std::vector<SpooledLine> lines;
    std::uint64_t torn = 0;
};
Adopted adopt_the_orphan(const SpoolOptions& o) {
    auto adopted = Spool::adopt_orphans(o, nullptr);
    REQUIRE(adopted.size() == 1);
    Adopted a;
    a.spool = std::move(adopted[0]);
    a.torn = a.spool->stats().torn_records;
    auto rec = a.spool->take_recovered();
    REQUIRE(rec.size() == 1);
    a.recovered = std::move(rec[0]);
    a.lines = a.spool->read(a.recovered.lines);
    return a;
}

// Left behind as if its writer had been killed: lines logged, nothing delivered.
void orphan_with_lines(const SpoolOptions& o, int first, int count, const std::string& key = kKey) {
    auto s = Spool::create(o, nullptr);
    for (int i = first; i < first + count; ++i) s->append_line(key, "", line(i));
}

}  // namespace

TEST_CASE("spool: CRC-32C of records, with the CPU instruction and without", "[unit][spool]") {
    CHECK(crc32c::compute("123456789") == 0xE3069283u);  // the check value of the standard
    CHECK(crc32c::compute_bytewise("123456789") == 0xE3069283u);
    CHECK(crc32c::compute("") == 0u);
    std::mt19937 gen(7);
    std::string data(5000, '\0');
    for (auto& c : data) c = static_cast<char>(gen());
    // Every length around the three-stream blocks (768 bytes), at odd offsets,
    // and continued from a previous CRC.
    for (std::size_t n = 0; n <= 2400; n += (n < 800 ? 1 : 7)) {
        const std::string_view piece = std::string_view(data).substr(n % 13, n);
        REQUIRE(crc32c::compute(piece) == crc32c::compute_bytewise(piece));
        REQUIRE(crc32c::compute(piece, 0x12345678u) == crc32c::compute_bytewise(piece, 0x12345678u));
    }
    CHECK(crc32c::compute(data.substr(0, 1000), crc32c::compute(data.substr(1000))) !=
          crc32c::compute(data));  // order matters
    CHECK(
        crc32c::compute(std::string_view(data).substr(1000), crc32c::compute(std::string_view(data).substr(0, 1000))) ==
        crc32c::compute(data));  // and continues
}

TEST_CASE("spool: lines come back from an orphan, in order, with their dedup keys", "[unit][spool]") {
    auto fsync = GENERATE(SpoolFsync::Never, SpoolFsync::Interval, SpoolFsync::Always);
    tdo_test::TempDir dir;
    auto o = spool_in(dir, fsync);
    {
        auto s = Spool::create(o, nullptr);
        CHECK(s->append_line(kKey, "training:aa", line(1)).seq == 1);
        CHECK(s->append_line("other/key.jsonl", "", line(2)).seq == 2);
        CHECK(s->append_line(kKey, "training:bb", line(3)).seq == 3);
        CHECK_FALSE(s->empty());
    }
    // A live writer's spool is never adopted; this one's owner is gone.
    auto adopted = Spool::adopt_orphans(o, nullptr);
    REQUIRE(adopted.size() == 1);
    CHECK(Spool::adopt_orphans(o, nullptr).empty());  // locked by us now
    auto rec = adopted[0]->take_recovered();
    REQUIRE(rec.size() == 2);
    const auto& mine = rec[0].object_key == kKey ? rec[0] : rec[1];
    REQUIRE(mine.lines.size() == 2);
    auto lines = adopted[0]->read(mine.lines);
    CHECK(lines[0].line == line(1));
    CHECK(lines[0].dedup_key == "training:aa");
    CHECK(lines[1].line == line(3));
    CHECK(mine.undecided.empty());
    CHECK(adopted[0]->last_seq() == 3);
}

TEST_CASE("spool: a torn last record is detected by its checksum, and the records before it are recovered",
          "[unit][spool]") {
    auto damage = GENERATE(std::string("truncated"), std::string("flipped byte"));
    tdo_test::TempDir dir;
    auto o = spool_in(dir);
    orphan_with_lines(o, 1, 3);
    const std::string seg = only_segment(o.dir);
    std::string data = tdo_test::read_file(seg);
    // Segments are preallocated: the records, then zeros.
    const std::size_t used = data.find_last_not_of('\0') + 1;
    if (damage == "truncated") {
        std::fill(data.begin() + static_cast<long>(used - 5), data.begin() + static_cast<long>(used), '\0');
    } else {
        data[used - 3] ^= 0x20;  // inside the last line's text
    }
    tdo_test::write_file(seg, data);
    auto a = adopt_the_orphan(o);
    CHECK(a.torn == 1);
    REQUIRE(a.lines.size() == 2);
    CHECK(a.lines[0].line == line(1));
    CHECK(a.lines[1].line == line(2));
    // The torn tail is zeroed, so that the next replay ends where this one did.
    const std::string after = tdo_test::read_file(seg);
    CHECK(after.find_last_not_of('\0') + 1 < used - 5);
}

std::vector<std::string> files_with_prefix(const std::string& spool_dir, const std::string& prefix) {
    std::vector<std::string> found;
    for (const auto& w : tdo_test::list_dir(spool_dir)) {
        for (const auto& f : tdo_test::list_dir(spool_dir + "/" + w)) {
            if (f.rfind(prefix, 0) == 0) found.push_back(spool_dir + "/" + w + "/" + f);
        }
    }
    return found;
}

TEST_CASE("spool: a torn last control record is dropped, and the INTENT before it still decides", "[unit][spool]") {
    tdo_test::TempDir dir;
    auto o = spool_in(dir, SpoolFsync::Interval);
    {
        auto s = Spool::create(o, nullptr);
        auto b = batch_of(*s, {s->append_line(kKey, "", line(1)), s->append_line(kKey, "", line(2))});
        s->append_line(kKey, "", line(3));  // not delivered: the spool stays
        s->record_intent(b, BatchIntent{kKey, "\"etag\"", 13, "", 18, 0x1234});
        s->record_done(b);
    }
    // Control records live in their own file, not among the lines.
    const auto controls = files_with_prefix(o.dir, "ctl-");
    REQUIRE(controls.size() == 1);
    CHECK(tdo_test::read_file(only_segment(o.dir)).find("\"etag\"") == std::string::npos);
    // The DONE was being written when the process died.
    std::string data = tdo_test::read_file(controls[0]);
    tdo_test::write_file(controls[0], data.substr(0, data.size() - 5));
    auto a = adopt_the_orphan(o);
    CHECK(a.torn == 1);
    CHECK(a.lines.size() == 1);  // line 3; lines 1 and 2 are the undecided batch
    REQUIRE(a.recovered.undecided.size() == 1);
    const auto& u = a.recovered.undecided[0];
    REQUIRE(u.lines.size() == 2);
    CHECK(u.lines[0].seq == 1);
    CHECK(u.lines[1].seq == 2);
    CHECK(u.complete);
    CHECK(u.intent.etag == "\"etag\"");
    CHECK(u.intent.offset == 13);
    CHECK(u.intent.bytes == 18);
    CHECK(u.intent.crc == 0x1234u);
    CHECK_FALSE(u.intent.as_object());
}

TEST_CASE("spool: a batch written as its own object comes back from replay with its object's name, not an ETag",
          "[unit][spool][batches]") {
    tdo_test::TempDir dir;
    auto o = spool_in(dir, SpoolFsync::Interval);
    const std::string object = batch_objects::key(kKey, "0123456789abcdef0123456789abcdef", 1);
    {
        auto s = Spool::create(o, nullptr);
        auto b = batch_of(*s, {s->append_line(kKey, "", line(1))});
        s->record_intent(b, batch_objects::intent(kKey, object, line(1).size(), 0x77));
    }
    auto a = adopt_the_orphan(o);
    REQUIRE(a.recovered.undecided.size() == 1);
    const BatchIntent& in = a.recovered.undecided[0].intent;
    CHECK(in.as_object());
    CHECK(in.batch_object == object);
    CHECK(in.etag.empty());
    CHECK(in.key == kKey);
    CHECK(in.bytes == line(1).size());
    CHECK(in.crc == 0x77u);
}

TEST_CASE("spool: control files go once no segment holds a line they name, and replay stays exact", "[unit][spool]") {
    tdo_test::TempDir dir;
    auto o = spool_in(dir);
    o.segment_bytes = 4096;  // ~30 lines a segment: segments come and go
    const int n = 12000, left = 5;
    {
        auto s = Spool::create(o, nullptr);
        for (int i = 1; i <= n; ++i) {
            const SpoolLineRef ref = s->append_line(kKey, "", line(i));
            REQUIRE(ref.seq == static_cast<std::uint64_t>(i));
            if (i > n - left) continue;  // these stay spooled
            land(*s, batch_of(*s, {ref}), static_cast<std::uint64_t>(i));
        }
        // ~200 bytes of control records per line: several files were written,
        // the ones naming only deleted lines are gone.
        CHECK(files_with_prefix(o.dir, "ctl-").size() <= 2);
        CHECK(files_with_prefix(o.dir, "seg-").size() <= 2);
    }
    // Exactly the lines that never landed: the DONE records of their landed
    // neighbours in the same segment were kept.
    auto a = adopt_the_orphan(o);
    REQUIRE(a.lines.size() == static_cast<std::size_t>(left));
    for (int i = 0; i < left; ++i) CHECK(a.lines[static_cast<std::size_t>(i)].line == line(n - left + 1 + i));
    CHECK(a.recovered.undecided.empty());
}

TEST_CASE("spool: a drained spool goes on in its segment; no segment is made, faulted in or synced per line",
          "[unit][spool]") {
    tdo_test::TempDir dir;
    auto o = spool_in(dir, SpoolFsync::Interval);
    auto s = Spool::create(o, nullptr);
    CHECK(files_with_prefix(o.dir, "seg-").empty());  // an idle writer has no segment yet
    CHECK(files_with_prefix(o.dir, "spare-").empty());
    std::vector<std::string> segments;
    for (int i = 1; i <= 50; ++i) {
        // One line, delivered: the spool drains after each (a quiet service).
        const SpoolLineRef ref = s->append_line(kKey, "training:k" + std::to_string(i), line(i));
        land(*s, batch_of(*s, {ref}), static_cast<std::uint64_t>(i));
        CHECK(s->empty());
        const auto now = files_with_prefix(o.dir, "seg-");
        REQUIRE(now.size() == 1u);
        if (segments.empty()) segments = now;
        CHECK(now == segments);  // the same file every time
        CHECK(ref.segment == 1u);
    }
    CHECK(files_with_prefix(o.dir, "spare-").empty());  // the segment is far from half full
    CHECK(s->stats().segments == 1u);
}

TEST_CASE("spool: landed segments are reused, and nothing they held comes back", "[unit][spool]") {
    tdo_test::TempDir dir;
    auto o = spool_in(dir);
    o.segment_bytes = 4096;
    const int rounds = 60, per_round = 40, left = 30;
    {
        auto s = Spool::create(o, nullptr);
        int n = 0;
        for (int round = 0; round < rounds; ++round) {
            std::vector<SpoolLineRef> refs;
            for (int i = 0; i < per_round; ++i) refs.push_back(s->append_line(kKey, "", line(++n)));
            for (const auto& r : refs) land(*s, batch_of(*s, {r}), r.seq);
            std::this_thread::sleep_for(std::chrono::milliseconds(2));  // the preparer takes what landed
        }
        CHECK(s->stats().segments_reused > 0);
        for (int i = 0; i < left; ++i) s->append_line(kKey, "", line(100000 + i));
    }
    auto a = adopt_the_orphan(o);
    CHECK(a.torn == 0);
    REQUIRE(a.lines.size() == static_cast<std::size_t>(left));
    for (int i = 0; i < left; ++i) CHECK(a.lines[static_cast<std::size_t>(i)].line == line(100000 + i));
}

TEST_CASE("spool: a record checksummed for another segment's number is not read", "[unit][spool]") {
    // What a reused segment would show if the zeros written over its old
    // records were lost to a power loss: valid records, of another life.
    tdo_test::TempDir dir;
    auto o = spool_in(dir);
    orphan_with_lines(o, 1, 3);
    const std::string seg = only_segment(o.dir);
    const std::string digits = "00000000000000000001";
    const auto at = seg.rfind(digits);
    REQUIRE(at != std::string::npos);
    std::string copy = seg;
    copy.replace(at, digits.size(), "00000000000000000002");
    tdo_test::write_file(copy, tdo_test::read_file(seg));
    auto a = adopt_the_orphan(o);
    CHECK(a.torn == 1);
    REQUIRE(a.lines.size() == 3);  // once, from the segment they were written to
    CHECK(a.lines[2].line == line(3));
}

TEST_CASE("spool: segments of the first format (checksums not seeded) are still read", "[unit][spool]") {
    tdo_test::TempDir dir;
    auto o = spool_in(dir);
    const std::string w = o.dir + "/w-0123456789abcdef";
    std::filesystem::create_directories(w);
    tdo_test::write_file(w + "/lock", "");
    auto u32 = [](std::uint32_t v) {
        std::string b;
        for (int i = 0; i < 4; ++i) b.push_back(static_cast<char>(v >> (8 * i)));
        return b;
    };
    auto field = [&](const std::string& text) { return u32(static_cast<std::uint32_t>(text.size())) + text; };
    std::string payload = "\x01";
    payload += u32(7) + u32(0);  // seq 7, little endian
    payload += field(kKey) + field("training:legacy") + field(line(7));
    const std::string body = u32(static_cast<std::uint32_t>(payload.size())) + payload;
    std::string file = "TDOSPL1\n" + u32(crc32c::compute(body)) + body;
    file.resize(4096, '\0');
    tdo_test::write_file(w + "/seg-00000000000000000001.log", file);
    auto a = adopt_the_orphan(o);
    CHECK(a.torn == 0);
    REQUIRE(a.lines.size() == 1);
    CHECK(a.lines[0].line == line(7));
    CHECK(a.lines[0].dedup_key == "training:legacy");
    CHECK(a.spool->last_seq() == 7);
}

TEST_CASE("spool: after a crash, a batch that had landed is not appended again, and one that had not is",
          "[unit][spool][recovery]") {
    const bool landed = GENERATE(true, false);
    tdo_test::TempDir dir;
    MemorySink memory;
    REQUIRE(memory.put(kKey, "{\"before\":1}\n", ObjectAttributes{}, WriteConditions{}).ok());
    const std::string etag = memory.head(kKey).etag;
    {
        // The writer recorded its intent, maybe wrote, and died before DONE.
        auto s = Spool::create(spool_in(dir), nullptr);
        auto b =
            batch_of(*s, {s->append_line(kKey, "training:a", line(1)), s->append_line(kKey, "training:b", line(2))});
        s->record_intent(b, BatchIntent{kKey, etag, 13, "", 18, crc32c::compute(line(1) + line(2))});
        if (landed) {
            REQUIRE(
                memory.put(kKey, "{\"before\":1}\n" + line(1) + line(2), ObjectAttributes{}, WriteConditions{}).ok());
        }
    }
    WriterComponents parts;
    parts.sink = std::make_unique<tdo_test::SharedSink>(memory);
    Config c = config_in(dir);
    TrainingOutput w(c, std::move(parts));
    CHECK(w.stats().lines_recovered == 2);
    w.flush();
    CHECK(memory.object(kKey).value() == "{\"before\":1}\n" + line(1) + line(2));
    CHECK(w.stats().batches_found_landed == (landed ? 1u : 0u));
    w.close();
    CHECK(tdo_test::list_dir(dir / ".spool").empty());
}

TEST_CASE("spool: a failed attempt that may have written is checked before the key is appended again",
          "[unit][spool][recovery]") {
    tdo_test::TempDir dir;
    MemorySink memory;
    // The first PUT lands but its answer is lost; later requests work.
    std::atomic<int> puts{0};
    memory.set_fault_hook([&](MemorySink::Op op, const std::string&) -> std::optional<MemorySink::Fault> {
        if (op != MemorySink::Op::Put || puts++ > 0) return std::nullopt;
        SinkResponse r;
        r.status = SinkStatus::Auth;  // gives up at once, after the server acted
        r.detail = "answer lost";
        return MemorySink::Fault{r, true};
    });
    WriterComponents parts;
    parts.sink = std::make_unique<tdo_test::SharedSink>(memory);
    TrainingOutput w(config_in(dir), std::move(parts));
    CHECK(w.generate("Only once.", message_json("BloodGlucoseRecord"), result_json()) == Outcome::Written);
    CHECK_THROWS_AS(w.flush(), Error);
    CHECK(w.generate("Second line.", message_json("BloodGlucoseRecord"), result_json()) == Outcome::Written);
    w.flush();
    auto lines = tdo_test::lines_of(memory.object(kKey).value());
    REQUIRE(lines.size() == 2);
    CHECK_THAT(lines[0], Catch::Contains("Only once."));
    CHECK_THAT(lines[1], Catch::Contains("Second line."));
    CHECK(w.stats().batches_found_landed == 1);
}

TEST_CASE("spool: full, reject answers TDO_E_BACKPRESSURE and claims nothing", "[unit][spool][backpressure]") {
    tdo_test::TempDir dir;
    MemorySink memory;
    std::atomic<bool> down{true};
    tdo_test::fail_while(memory, down, SinkStatus::Auth, "InvalidAccessKeyId");
    WriterComponents parts;
    parts.sink = std::make_unique<tdo_test::SharedSink>(memory);
    Config c = small_spool_config(dir, "reject");
    TrainingOutput w(c, std::move(parts));
    const std::string pad(1000, 'x');
    int accepted = 0;
    std::string rejected;
    for (int i = 0; i < 200 && rejected.empty(); ++i) {
        const std::string narrative = "Narrative " + std::to_string(i) + " " + pad;
        Outcome outcome = Outcome::Disabled;
        try {
            outcome = w.generate(narrative, message_json("BloodGlucoseRecord"), result_json());
            ++accepted;
        } catch (const Error& e) {
            CHECK(e.code() == ErrorCode::Backpressure);
            CHECK_THAT(e.what(), Catch::Contains("spool is full"));
            rejected = narrative;
            continue;
        }
        CHECK(outcome == Outcome::Written);
    }
    REQUIRE(!rejected.empty());
    CHECK(accepted > 10);
    CHECK(w.stats().spool_bytes <= static_cast<std::uint64_t>(c.spool_max_bytes));
    down = false;
    w.flush();
    CHECK(tdo_test::lines_of(memory.object(kKey).value()).size() == static_cast<std::size_t>(accepted));
    // The rejected example was not accepted, so it can be written now.
    CHECK(w.generate(rejected, message_json("BloodGlucoseRecord"), result_json()) == Outcome::Written);
    w.flush();
    CHECK(tdo_test::lines_of(memory.object(kKey).value()).size() == static_cast<std::size_t>(accepted + 1));
}

TEST_CASE("spool: full, block waits for room, up to its timeout", "[unit][spool][backpressure]") {
    tdo_test::TempDir dir;
    MemorySink memory;
    std::atomic<bool> down{true};
    tdo_test::fail_while(memory, down, SinkStatus::Auth, "InvalidAccessKeyId");
    WriterComponents parts;
    parts.sink = std::make_unique<tdo_test::SharedSink>(memory);
    Config c = small_spool_config(dir, "block");
    c.spool_block_timeout_ms = 300;
    TrainingOutput w(c, std::move(parts));
    const std::string pad(1000, 'x');
    int accepted = 0;
    bool timed_out = false;
    for (int i = 0; i < 200 && !timed_out; ++i) {
        auto t0 = std::chrono::steady_clock::now();
        try {
            w.generate("Narrative " + std::to_string(i) + " " + pad, message_json("BloodGlucoseRecord"), result_json());
            ++accepted;
        } catch (const Error& e) {
            CHECK(e.code() == ErrorCode::Timeout);
            CHECK(std::chrono::steady_clock::now() - t0 >= std::chrono::milliseconds(300));
            timed_out = true;
        }
    }
    REQUIRE(timed_out);
    // The store comes back while a call is blocked: the call goes through.
    std::thread heal([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        down = false;
        try {
            w.flush();
        } catch (const Error&) {}
    });
    Outcome o = Outcome::Disabled;
    for (int attempt = 0; attempt < 20 && o != Outcome::Written; ++attempt) {
        try {
            o = w.generate("After the outage " + pad, message_json("BloodGlucoseRecord"), result_json());
        } catch (const Error& e) {
            CHECK(e.code() == ErrorCode::Timeout);
        }
    }
    heal.join();
    CHECK(o == Outcome::Written);
    w.flush();
    CHECK(tdo_test::lines_of(memory.object(kKey).value()).size() == static_cast<std::size_t>(accepted + 1));
}

TEST_CASE("spool: writers opening at once on a directory full of orphans deliver each exactly once",
          "[unit][spool][concurrency][slow]") {
    tdo_test::TempDir dir;
    const auto o = spool_in(dir);
    const int kOrphans = 12, kLines = 50;
    for (int i = 0; i < kOrphans; ++i) orphan_with_lines(o, i * kLines, kLines);
    REQUIRE(tdo_test::list_dir(o.dir).size() == static_cast<std::size_t>(kOrphans));

    std::atomic<int> ready{0};
    std::atomic<std::uint64_t> adopted{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&] {
            ready.fetch_add(1);
            while (ready.load() < 4) std::this_thread::yield();
            TrainingOutput w(config_in(dir));
            w.flush();
            adopted += w.stats().spools_adopted;
            w.close();
        });
    }
    for (auto& t : threads) t.join();
    CHECK(adopted == static_cast<std::uint64_t>(kOrphans));
    auto lines = tdo_test::lines_of(tdo_test::read_file(dir / kKey));
    CHECK(lines.size() == static_cast<std::size_t>(kOrphans * kLines));
    std::set<std::string> distinct(lines.begin(), lines.end());
    CHECK(distinct.size() == lines.size());
    CHECK(tdo_test::list_dir(o.dir).empty());
}

TEST_CASE("spool: processes SIGKILLed at random lose no accepted line and double none (local directory)",
          "[unit][spool][crash]") {
    tdo_test::TempDir dir;
    const std::string config = "{\"output_dir\":\"" + dir.path() +
                               "\",\"log_level\":\"off\",\"flush_interval_ms\":30,\"directory_fsync\":false}";
    tdo_test::CrashRun run;
    run.workers = 4;
    run.per_worker = 600;
    run.min_kills = 12;
    run.delay_us = 1000;
    run.kill_every_min = std::chrono::milliseconds(20);
    run.kill_every_max = std::chrono::milliseconds(80);
    auto result = tdo_test::run_crash_harness(TDO_TEST_CRASH_WRITER, config, run);
    CHECK(result.kills >= run.min_kills);
    INFO(result.first_error);
    CHECK(result.errors == 0);
    {
        // What the last killed workers left is delivered by the next writer.
        TrainingOutput last(Config::from_json(config));
        INFO("last writer adopted " << last.stats().spools_adopted << " spools, " << last.stats().lines_recovered
                                    << " lines");
        last.flush();
        last.close();
        // No writer's spool is left behind (a worker killed while creating its
        // directory may leave an empty ".new-" one, cleaned up a minute later).
        for (const auto& d : tdo_test::list_dir(dir / ".spool")) CHECK(d.rfind(".new-", 0) == 0);
    }
    tdo_test::check_exactly_once(
        tdo_test::read_file(dir / "training/physical_activity/2025/11/health_journal_2025_11.jsonl"), result, run);
    CHECK(result.accepted.size() > 0);
}

TEST_CASE("spool: spool_fsync=always from many threads: every call durable, every line delivered once",
          "[unit][spool][concurrency]") {
    tdo_test::TempDir dir;
    Config c = config_in(dir);
    c.spool_fsync = "always";
    TrainingOutput w(c);
    std::vector<std::thread> threads;
    std::atomic<int> written{0};
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&, t] {
            for (int i = 0; i < 100; ++i) {
                const std::string n = "Thread " + std::to_string(t) + " narrative " + std::to_string(i) + ".";
                if (w.generate(n, message_json("BloodGlucoseRecord"), result_json()) == Outcome::Written) ++written;
            }
        });
    }
    for (auto& t : threads) t.join();
    CHECK(written == 400);
    w.flush();
    auto lines = tdo_test::lines_of(tdo_test::read_file(dir / kKey));
    CHECK(lines.size() == 400u);
    CHECK(std::set<std::string>(lines.begin(), lines.end()).size() == 400u);
}

TEST_CASE("spool: adoption stops at a byte budget, and the rest is adopted by later calls", "[unit][spool]") {
    tdo_test::TempDir dir;
    const auto o = spool_in(dir);
    for (int i = 1; i <= 3; ++i) orphan_with_lines(o, i * 10, 10);  // 10 lines of 9 bytes each
    auto first = Spool::adopt_orphans(o, nullptr, 50);
    REQUIRE(first.size() == 1);  // at least one, then the budget is spent
    CHECK(first[0]->recovered_bytes() == 90u);
    auto second = Spool::adopt_orphans(o, nullptr, 200);
    CHECK(second.size() == 2);  // the others; the first is still held
    CHECK(Spool::adopt_orphans(o, nullptr).empty());
}

TEST_CASE("spool: replay rejects control records that do not match their lines, and keeps every undecided batch",
          "[unit][spool][replay]") {
    tdo_test::TempDir dir;
    auto o = spool_in(dir);
    const std::string other = "training/other/2025/11/health_journal_2025_11.jsonl";
    {
        auto s = Spool::create(o, nullptr);
        std::vector<SpoolLineRef> k, l;
        for (int i = 1; i <= 4; ++i) k.push_back(s->append_line(kKey, "", line(i)));
        for (int i = 5; i <= 6; ++i) l.push_back(s->append_line(other, "", line(i)));
        // Two undecided batches of one key: both stay undecided.
        const SpoolBatch a = batch_of(*s, {k[0], k[1]}), b = batch_of(*s, {k[2]});
        s->record_intent(a, BatchIntent{kKey, "\"e1\"", 10, "", 14, 1});
        s->record_intent(b, BatchIntent{kKey, "\"e2\"", 24, "", 7, 2});
        // Damage that a checksum cannot see: an INTENT naming a line of
        // another key, a DONE naming a line its batch's INTENT does not.
        s->record_intent(SpoolBatch{99, kKey, {l[0]}}, BatchIntent{kKey, "\"e3\"", 0, "", 7, 3});
        s->record_done(SpoolBatch{a.id, kKey, {k[3]}});
    }
    auto adopted = Spool::adopt_orphans(o, nullptr);
    REQUIRE(adopted.size() == 1);
    CHECK(adopted[0]->stats().rejected_records == 2);
    auto rec = adopted[0]->take_recovered();
    REQUIRE(rec.size() == 2);
    const auto& mine = rec[0].object_key == kKey ? rec[0] : rec[1];
    const auto& theirs = rec[0].object_key == kKey ? rec[1] : rec[0];
    REQUIRE(mine.undecided.size() == 2);
    CHECK(mine.undecided[0].lines.size() == 2);
    CHECK(mine.undecided[0].intent.etag == "\"e1\"");
    CHECK(mine.undecided[1].lines.size() == 1);
    CHECK(mine.undecided[1].lines[0].seq == 3);
    CHECK(mine.undecided[1].intent.etag == "\"e2\"");
    REQUIRE(mine.lines.size() == 1);  // line 4: the bad DONE did not land it
    CHECK(mine.lines[0].seq == 4);
    CHECK(theirs.undecided.empty());
    CHECK(theirs.lines.size() == 2);
}

TEST_CASE("spool: INTENT and DONE records of the range format are still read", "[unit][spool][replay]") {
    tdo_test::TempDir dir;
    auto o = spool_in(dir);
    orphan_with_lines(o, 1, 3);
    const std::string seg = only_segment(o.dir);
    const std::string w = seg.substr(0, seg.rfind('/'));
    std::string ctl(spool::kMagic, spool::kMagicBytes);
    const std::uint32_t seed = spool::checksum_seed(1);
    // Lines 1..3 have seqs 1..3: the first landed, the second was being written.
    ctl += spool::encode_range_intent({1, 1, kKey, "\"e\"", 0}, seed);
    ctl += spool::encode_range_done({1, 1, kKey, "", 0}, seed);
    ctl += spool::encode_range_intent({2, 2, kKey, "\"f\"", 9}, seed);
    tdo_test::write_file(w + "/" + spool::file_name("ctl", 1), ctl);
    auto a = adopt_the_orphan(o);
    CHECK(a.torn == 0);
    REQUIRE(a.recovered.undecided.size() == 1);
    REQUIRE(a.recovered.undecided[0].lines.size() == 1);
    CHECK(a.recovered.undecided[0].lines[0].seq == 2);
    CHECK(a.recovered.undecided[0].intent.etag == "\"f\"");
    CHECK(a.recovered.undecided[0].complete);
    REQUIRE(a.lines.size() == 1);
    CHECK(a.lines[0].line == line(3));
}
