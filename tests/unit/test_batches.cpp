// The batches mode: batch objects, compaction, the manifest, readers.
#include <atomic>
#include <catch2/catch.hpp>
#include <set>
#include <thread>

#include "append/batch_objects.hpp"
#include "append/object_appender.hpp"
#include "memory_sink.hpp"
#include "shared_sink.hpp"
#include "test_util.hpp"
#include "training_output/error.hpp"
#include "training_output/training_output.hpp"

using namespace training_output;
using Op = MemorySink::Op;
using tdo_test::message_json;
using tdo_test::result_json;

namespace {

const std::string kMonth = "training/d/2026/12/health_journal_2026_12.jsonl";
const std::string kSpoolA = "0123456789abcdef0123456789abcdef";
const std::string kSpoolB = "fedcba9876543210fedcba9876543210";

AppendOptions fast() {
    AppendOptions o;
    o.backoff_base = std::chrono::milliseconds(1);
    o.backoff_max = std::chrono::milliseconds(5);
    o.lease_wait = std::chrono::milliseconds(2000);
    return o;
}

std::multiset<std::string> line_set(const std::string& body) {
    auto lines = tdo_test::lines_of(body);
    return {lines.begin(), lines.end()};
}

std::string batch_of(const std::string& tag, int first, int count) {
    std::string out;
    for (int i = first; i < first + count; ++i) out += "{\"line\":\"" + tag + "-" + std::to_string(i) + "\"}\n";
    return out;
}

// Lands `batches` batches of `per` lines for each of two spools; returns every line.
std::string land_some(BatchObjects& b, int batches, int per, std::uint64_t first_seq = 1) {
    std::string all;
    for (const auto& spool : {kSpoolA, kSpoolB}) {
        for (int i = 0; i < batches; ++i) {
            const std::uint64_t seq = first_seq + static_cast<std::uint64_t>(i * per);
            const std::string body = batch_of(spool.substr(0, 4), static_cast<int>(seq), per);
            b.land(kMonth, batch_objects::key(kMonth, spool, seq), body);
            all += body;
        }
    }
    return all;
}

std::size_t batch_object_count(const MemorySink& sink) {
    std::size_t n = 0;
    for (const auto& [k, v] : sink.objects()) {
        if (k.rfind(batch_objects::prefix(kMonth), 0) == 0) ++n;
    }
    return n;
}

}  // namespace

TEST_CASE("batch objects: names, intents and the manifest's format", "[unit][batches]") {
    const std::string key = batch_objects::key(kMonth, kSpoolA, 0x2a);
    CHECK(key == "training/d/2026/12/health_journal_2026_12.batches/" + kSpoolA + "-000000000000002a.jsonl");
    CHECK(batch_objects::manifest_key(kMonth) == "training/d/2026/12/health_journal_2026_12.batches.json");
    auto name = batch_objects::parse(kMonth, key);
    REQUIRE(name);
    CHECK(name->spool == kSpoolA);
    CHECK(name->seq == 0x2a);
    CHECK_FALSE(batch_objects::parse(kMonth, kMonth));
    CHECK_FALSE(batch_objects::parse(kMonth, batch_objects::prefix(kMonth) + "x-000000000000002a.jsonl"));
    CHECK_FALSE(batch_objects::parse(kMonth, batch_objects::prefix(kMonth) + kSpoolA + "-2a.jsonl"));
    CHECK(batch_objects::intent(kMonth, key).as_object());
    CHECK(batch_objects::intent(kMonth, key).batch_object == key);
    CHECK_FALSE((BatchIntent{kMonth, "d41d8cd98f00b204e9800998ecf8427e", 10, "", 0, 0}.as_object()));

    BatchManifest m;
    m.file_bytes = 1234;
    m.folded[kSpoolA] = 7;
    BatchManifest::Fold f;
    f.intent = BatchIntent{kMonth, "abc", 1234, "", 99, 0xFFFFFFFFu};
    f.upto[kSpoolB] = 12;
    m.folding = f;
    BatchManifest d = BatchManifest::decode(m.encode());
    CHECK(d.file_bytes == 1234);
    CHECK(d.folded == m.folded);
    REQUIRE(d.folding);
    CHECK(d.folding->intent.etag == "abc");
    CHECK(d.folding->intent.offset == 1234);
    CHECK(d.folding->intent.bytes == 99);
    CHECK(d.folding->intent.crc == 0xFFFFFFFFu);
    CHECK(d.folding->upto == f.upto);
    CHECK(d.folded_in(BatchName{kSpoolA, 7}));
    CHECK_FALSE(d.folded_in(BatchName{kSpoolA, 8}));
    CHECK_FALSE(d.folded_in(BatchName{kSpoolB, 1}));
    CHECK_THROWS_AS(BatchManifest::decode("{\"format\":\"other\"}"), Error);
    CHECK_THROWS_AS(BatchManifest::decode("[1,2]"), Error);
    CHECK_THROWS_AS(BatchManifest::decode("{\"format\":\"training_output.batches/1\",\"file_bytes\":-1,\"folded\":{}}"),
                    Error);
}

TEST_CASE("batch objects: one PUT per batch, and a retry of a batch that landed finds it", "[unit][batches]") {
    MemorySink sink;
    ObjectAppender appender(sink, fast());
    BatchObjects b(sink, appender, {});
    const std::string key = batch_objects::key(kMonth, kSpoolA, 1);
    std::vector<BatchIntent> intents;
    intents.push_back(batch_objects::intent(kMonth, key, 1));  // recorded before the write, as delivery does
    AppendResult r = b.land(kMonth, key, batch_of("a", 1, 3));
    CHECK_FALSE(r.found_landed);
    CHECK_FALSE(r.contended);
    REQUIRE(intents.size() == 1);
    CHECK(intents[0].key == kMonth);
    CHECK(intents[0].batch_object == key);
    CHECK(sink.request_count(Op::Put) == 1);
    CHECK(sink.request_count(Op::Get) == 0);
    CHECK(sink.object(key).value() == batch_of("a", 1, 3));
    // The same batch again (a retry after a lost answer, a replay): 412, landed.
    r = b.land(kMonth, key, batch_of("a", 1, 3));
    CHECK(r.found_landed);
    CHECK(b.check_landed(intents[0]) == Landed::Yes);
    CHECK(b.check_landed(batch_objects::intent(kMonth, batch_objects::key(kMonth, kSpoolA, 9), 1)) == Landed::NotYet);
    CHECK(b.take_months_written() == std::set<std::string>{kMonth});
    CHECK(b.take_months_written().empty());
}

TEST_CASE("batch objects: a PUT whose answer was lost stays undecided and is written under the same name",
          "[unit][batches]") {
    MemorySink sink;
    ObjectAppender appender(sink, fast());
    BatchObjects b(sink, appender, {});
    const std::string key = batch_objects::key(kMonth, kSpoolA, 1);
    sink.set_fault_hook([&](Op op, const std::string&) -> std::optional<MemorySink::Fault> {
        if (op != Op::Put) return std::nullopt;
        SinkResponse r;
        r.status = SinkStatus::Transient;
        r.detail = "connection reset";
        return MemorySink::Fault{r, true};  // it landed; the answer did not come
    });
    std::optional<BatchIntent> left;
    CHECK_THROWS_AS(b.land(kMonth, key, batch_of("a", 1, 3), &left), Error);
    REQUIRE(left);
    CHECK(left->batch_object == key);
    CHECK(left->bytes == batch_of("a", 1, 3).size());
    sink.set_fault_hook({});
    CHECK(b.check_landed(*left) == Landed::Yes);
    CHECK(b.land(kMonth, key, batch_of("a", 1, 3)).found_landed);
    CHECK(line_set(b.read_month(kMonth)) == line_set(batch_of("a", 1, 3)));
}

TEST_CASE("batch objects: an empty batch fences its name; the batch never lands under it, and compactions fold it away",
          "[unit][batches]") {
    MemorySink sink;
    ObjectAppender appender(sink, fast());
    BatchObjects b(sink, appender, {});
    REQUIRE(sink.put(kMonth, batch_of("earlier", 1, 2), {}, {}).ok());  // the month so far, from another mode
    const std::string fenced = batch_objects::key(kMonth, kSpoolA, 1);
    const std::string body = batch_of("a", 1, 3);
    // A writer that found this batch's lines delivered elsewhere fences its name.
    CHECK_FALSE(b.land(kMonth, fenced, "").found_landed);
    REQUIRE(sink.object(fenced) == std::optional<std::string>(""));
    const BatchIntent in = batch_objects::intent(kMonth, fenced, body.size());
    CHECK(b.check_landed(in) == Landed::No);
    // A late write of the batch (its writer's request, or a retry) does not land, and says so.
    std::optional<BatchIntent> left = in;
    try {
        b.land(kMonth, fenced, body, &left);
        FAIL("expected the fenced name to refuse the batch");
    } catch (const Error& e) {
        CHECK_THAT(e.what(), Catch::Contains("fenced"));
    }
    CHECK_FALSE(left);  // none of it can land
    CHECK(sink.object(fenced) == std::optional<std::string>(""));
    // Readers find nothing in it; a compaction of fences alone keeps the month as it was.
    b.land(kMonth, batch_objects::key(kMonth, kSpoolB, 1), "");
    CHECK(line_set(b.read_month(kMonth)) == line_set(batch_of("earlier", 1, 2)));
    CompactionResult r = b.compact(kMonth);
    CHECK(r.folds == 1);
    CHECK(r.deleted == 2);
    CHECK(batch_object_count(sink) == 0);
    CHECK(sink.object(kMonth) == std::optional<std::string>(batch_of("earlier", 1, 2)));
    CHECK(line_set(b.read_month(kMonth)) == line_set(batch_of("earlier", 1, 2)));
    CHECK(b.read_manifest(kMonth).folded_in(BatchName{kSpoolA, 1}));
    // Lines landed later are read and folded after it.
    b.land(kMonth, batch_objects::key(kMonth, kSpoolA, 4), batch_of("a", 4, 2));
    CHECK(line_set(b.read_month(kMonth)) == line_set(batch_of("earlier", 1, 2) + batch_of("a", 4, 2)));
    b.compact(kMonth);
    CHECK(line_set(sink.object(kMonth).value()) == line_set(batch_of("earlier", 1, 2) + batch_of("a", 4, 2)));
}

TEST_CASE("compaction folds batch objects into the monthly file, and readers see every line once before and after",
          "[unit][batches][compaction]") {
    MemorySink sink;
    ObjectAppender appender(sink, fast());
    BatchObjects b(sink, appender, {});
    sink.put(kMonth, "{\"line\":\"earlier\"}\n", {}, {});  // written in another mode before
    const std::string all = "{\"line\":\"earlier\"}\n" + land_some(b, 5, 4);
    CHECK(batch_object_count(sink) == 10);
    CHECK(line_set(b.read_month(kMonth)) == line_set(all));

    CompactionResult r = b.compact(kMonth);
    CHECK(r.ran);
    CHECK(r.folds == 1);
    CHECK(r.batches == 10);
    CHECK(r.deleted == 10);
    CHECK(batch_object_count(sink) == 0);
    // The seed's view: the monthly file alone is the month.
    CHECK(line_set(sink.object(kMonth).value()) == line_set(all));
    CHECK(line_set(b.read_month(kMonth)) == line_set(all));
    BatchManifest m = b.read_manifest(kMonth);
    CHECK(m.file_bytes == sink.object(kMonth)->size());
    CHECK_FALSE(m.folding);
    CHECK(m.folded.at(kSpoolA) == 17);
    CHECK(m.folded.at(kSpoolB) == 17);

    // More batches, then a late copy of a folded one (a request that
    // arrived after its sender retried): never folded twice, removed.
    const std::string more = land_some(b, 2, 4, 21);
    b.land(kMonth, batch_objects::key(kMonth, kSpoolA, 5), batch_of("0123", 5, 4));
    CHECK(line_set(b.read_month(kMonth)) == line_set(all + more));
    r = b.compact(kMonth);
    CHECK(r.batches == 4);
    CHECK(r.deleted == 5);
    CHECK(batch_object_count(sink) == 0);
    CHECK(line_set(sink.object(kMonth).value()) == line_set(all + more));
    // Nothing to fold: the listing is all it costs.
    const auto puts = sink.request_count(Op::Put);
    r = b.compact(kMonth);
    CHECK(r.ran);
    CHECK(r.folds == 0);
    CHECK(sink.request_count(Op::Put) == puts + 2);  // the compaction lease, taken and released
}

TEST_CASE("compaction in rounds of compaction_max_bytes takes each spool's batches in order",
          "[unit][batches][compaction]") {
    MemorySink sink;
    ObjectAppender appender(sink, fast());
    BatchObjectsOptions o;
    o.compaction_max_bytes = 200;
    BatchObjects b(sink, appender, o);
    sink.list_page_size = 3;  // several pages
    const std::string all = land_some(b, 6, 2);
    CompactionResult r = b.compact(kMonth);
    CHECK(r.folds >= 3);
    CHECK(r.batches == 12);
    CHECK(batch_object_count(sink) == 0);
    CHECK(line_set(sink.object(kMonth).value()) == line_set(all));
}

TEST_CASE("compaction cut short at every request: readers never see a line lost or twice, the next one finishes",
          "[unit][batches][compaction][crash]") {
    for (int cut = 0;; ++cut) {
        INFO("the compaction's requests fail from number " << cut);
        MemorySink sink;
        ObjectAppender appender(sink, fast());
        BatchObjects b(sink, appender, {});
        sink.put(kMonth, "{\"line\":\"earlier\"}\n", {}, {});
        const std::string all = "{\"line\":\"earlier\"}\n" + land_some(b, 3, 3);
        // Every request from number `cut` on fails, half of them after the server acted.
        std::atomic<int> n{0};
        sink.set_fault_hook([&](Op, const std::string&) -> std::optional<MemorySink::Fault> {
            const int i = n++;
            if (i < cut) return std::nullopt;
            SinkResponse r;
            r.status = SinkStatus::Transient;
            r.detail = "the compactor died";
            return MemorySink::Fault{r, i % 2 == 1};
        });
        bool finished = false;
        try {
            b.compact(kMonth);
            finished = n.load() <= cut;  // no request failed
        } catch (const Error&) {}
        sink.set_fault_hook({});
        CHECK(line_set(b.read_month(kMonth)) == line_set(all));
        // A late copy of every batch arrives too (their senders retried).
        land_some(b, 3, 3);
        // The next compactor (after the dead one's lease ran out).
        ObjectAppender other(sink, [] {
            AppendOptions o = fast();
            o.lease_ttl = std::chrono::seconds(0);
            return o;
        }());
        BatchObjects next(sink, other, {});
        next.compact(kMonth);
        CHECK(batch_object_count(sink) == 0);
        CHECK(line_set(sink.object(kMonth).value()) == line_set(all));
        CHECK(line_set(next.read_month(kMonth)) == line_set(all));
        if (finished) break;
    }
}

TEST_CASE("readers during a compaction see every line exactly once at every step", "[unit][batches][compaction]") {
    MemorySink sink;
    ObjectAppender appender(sink, fast());
    BatchObjects b(sink, appender, {});
    BatchObjectsOptions serial;
    serial.parallel_requests = 1;  // the hook reads on the thread that makes the request
    BatchObjects reader(sink, appender, serial);
    const std::string all = land_some(b, 4, 3);
    thread_local bool reading = false;
    int reads = 0;
    bool ok = true;
    sink.set_fault_hook([&](Op, const std::string&) -> std::optional<MemorySink::Fault> {
        if (reading) return std::nullopt;
        reading = true;
        if (line_set(reader.read_month(kMonth)) != line_set(all)) ok = false;
        ++reads;
        reading = false;
        return std::nullopt;
    });
    BatchObjects compactor(sink, appender, serial);
    CHECK(compactor.compact(kMonth).batches == 8);
    sink.set_fault_hook({});
    CHECK(reads > 10);
    CHECK(ok);
}

TEST_CASE("compaction: one compactor at a time, another finds the lease held and leaves",
          "[unit][batches][compaction][slow]") {
    MemorySink sink;
    ObjectAppender appender(sink, fast());
    BatchObjects b(sink, appender, {});
    land_some(b, 2, 2);
    bool inner_ran = true;
    AppendOptions o = fast();
    o.lease_wait = std::chrono::milliseconds(0);
    ObjectAppender other_appender(sink, o);
    BatchObjects other(sink, other_appender, {});
    {
        KeyLease held(appender, batch_objects::manifest_key(kMonth), std::chrono::milliseconds(0));
        REQUIRE(held.held());
        inner_ran = other.compact(kMonth).ran;
    }
    CHECK_FALSE(inner_ran);
    CHECK(batch_object_count(sink) == 4);
    CHECK(b.compact(kMonth).batches == 4);
}

TEST_CASE("writer in the batches mode: 4 writers, one key, each line once, compacted by whoever comes first",
          "[unit][batches][writer]") {
    MemorySink memory;
    std::vector<std::unique_ptr<tdo_test::TempDir>> dirs;
    std::vector<std::thread> threads;
    std::atomic<int> written{0};
    for (int w = 0; w < 4; ++w) dirs.push_back(std::make_unique<tdo_test::TempDir>());
    for (int w = 0; w < 4; ++w) {
        threads.emplace_back([&, w] {
            Config c;
            c.output_dir = dirs[w]->path();
            c.dedup_store = "memory";
            c.log_level = LogLevel::Off;
            c.s3_append_mode = "batches";
            c.flush_interval_ms = 5;
            c.s3_compaction_interval_seconds = 1;
            WriterComponents parts;
            parts.sink = std::make_unique<tdo_test::SharedSink>(memory);
            TrainingOutput out(c, std::move(parts));
            for (int i = 0; i < 150; ++i) {
                const std::string text = "Writer " + std::to_string(w) + " example " + std::to_string(i) + ".";
                if (out.generate(text, message_json("BloodGlucoseRecord"), result_json()) == Outcome::Written) {
                    ++written;
                }
                if (i % 50 == 49) std::this_thread::sleep_for(std::chrono::milliseconds(800));
            }
            out.close();
        });
    }
    for (auto& t : threads) t.join();
    CHECK(written == 600);
    const std::string key = "training/metabolic_diabetes/2025/11/health_journal_2025_11.jsonl";
    ObjectAppender appender(memory, fast());
    BatchObjects b(memory, appender, {});
    const std::string month = b.read_month(key);
    CHECK(tdo_test::lines_of(month).size() == 600);
    CHECK(line_set(month).size() == 600);
    // Some were compacted on the way (the writers ran for about 2 s).
    CHECK(b.read_manifest(key).file_bytes > 0);
    b.compact(key);
    CHECK(tdo_test::lines_of(memory.object(key).value()).size() == 600);
}

namespace {

// A memory store in which a gone owner, "gone", holds every key and has a
// batch object in flight: claims fail as a store that is down would while
// `down`, then answer OwnersToSettle until that owner's record is cleared.
class GoneOwnerStore : public DedupStore {
public:
    explicit GoneOwnerStore(std::string in_flight) : in_flight_(std::move(in_flight)) {}
    std::atomic<bool> down{true};
    std::atomic<bool> cleared{false};
    std::atomic<bool> committed_before_cleared{false};

    ClaimState claim(const std::string& key, const std::string& owner, std::chrono::seconds ttl) override {
        return claim_batch({key}, owner, ttl)[0];
    }
    std::vector<ClaimState> claim_batch(const std::vector<std::string>& keys, const std::string& owner,
                                        std::chrono::seconds ttl) override {
        if (down) throw Error(ErrorCode::DedupStore, "the store is down");
        if (!cleared) throw OwnersToSettle({"gone"});
        return inner_->claim_batch(keys, owner, ttl);
    }
    void commit(const std::vector<std::string>& keys, std::chrono::seconds ttl) override {
        if (!cleared) committed_before_cleared = true;
        inner_->commit(keys, ttl);
    }
    void register_owner(const OwnerRecord& owner) override { inner_->register_owner(owner); }
    void retire_owner(const std::string& owner) override { inner_->retire_owner(owner); }
    std::vector<InflightBatch> inflight(const std::string& owner) override {
        if (owner != "gone" || cleared) return {};
        return {InflightBatch{in_flight_, 100, {}}};
    }
    void clear_inflight(const std::string& owner, const std::vector<std::string>& object_keys,
                        std::chrono::seconds) override {
        if (owner == "gone" && object_keys == std::vector<std::string>{in_flight_}) cleared = true;
    }
    const char* kind() const noexcept override { return "test"; }
    bool cheap_claims() const noexcept override { return true; }

private:
    std::string in_flight_;
    std::unique_ptr<DedupStore> inner_ = make_memory_dedup_store();
};

}  // namespace

TEST_CASE("writer in the batches mode: claims confirmed at delivery settle a gone owner's batch in flight first",
          "[unit][batches][writer]") {
    // The lines' claims failed when they were accepted (the store was down),
    // so they are confirmed before delivery; the store then answers that a
    // gone owner with a batch object in flight holds them. Before they are
    // written, that batch's name is fenced and its record cleared, then the
    // claims are taken over: a late copy of the gone owner's request can no
    // longer land beside them.
    MemorySink memory;
    tdo_test::TempDir dir;
    const std::string month = "training/metabolic_diabetes/2025/11/health_journal_2025_11.jsonl";
    const std::string theirs = batch_objects::key(month, "0123456789abcdef0123456789abcdef", 1);
    auto store = std::make_unique<GoneOwnerStore>(theirs);
    GoneOwnerStore& s = *store;
    Config c;
    c.output_dir = dir.path();
    c.log_level = LogLevel::Off;
    c.s3_append_mode = "batches";
    c.s3_compaction_interval_seconds = 0;
    WriterComponents parts;
    parts.sink = std::make_unique<tdo_test::SharedSink>(memory);
    parts.dedup_store = std::move(store);
    TrainingOutput out(c, std::move(parts));
    for (int i = 0; i < 3; ++i) {
        CHECK(out.generate("Example " + std::to_string(i) + ".", message_json("BloodGlucoseRecord"), result_json()) ==
              Outcome::Written);  // failed open
    }
    s.down = false;
    out.flush();
    CHECK(s.cleared);
    CHECK_FALSE(s.committed_before_cleared);
    CHECK(memory.object(theirs) == std::optional<std::string>(""));  // fenced
    ObjectAppender appender(memory, fast());
    BatchObjects b(memory, appender, {});
    const auto lines = tdo_test::lines_of(b.read_month(month));
    CHECK(lines.size() == 3);
    CHECK(std::set<std::string>(lines.begin(), lines.end()).size() == 3);
    out.close();
}

TEST_CASE("writer: the batches mode needs an S3 store", "[unit][batches][config]") {
    tdo_test::TempDir dir;
    Config c;
    c.output_dir = dir.path();
    c.s3_append_mode = "batches";
    c.log_level = LogLevel::Off;
    try {
        TrainingOutput w(c);
        FAIL("expected an error");
    } catch (const Error& e) {
        CHECK(e.code() == ErrorCode::Config);
        CHECK_THAT(e.what(), Catch::Contains("s3_append_mode") && Catch::Contains("S3 store"));
    }
}

TEST_CASE("readers: a whole conversion of the monthly file between the reader's two looks at its marker is seen",
          "[unit][batches][convert]") {
    MemorySink sink;
    ObjectAppender appender(sink, fast());
    BatchObjects b(sink, appender, {});
    const std::string month = batch_of("m", 1, 6);
    REQUIRE(sink.put(kMonth, month, {}, {}).ok());  // a plain monthly file, from another mode
    const std::string half = month.substr(0, month.size() / 2);
    // The reader finds no conversion marker; while it reads the file, a
    // conversion starts (the file removed and written again: the reader's
    // GET gets half of it) and ends (its marker gone) before the reader
    // looks at the marker again.
    bool inside = false;
    int file_gets = 0;
    sink.set_fault_hook([&](Op op, const std::string& key) -> std::optional<MemorySink::Fault> {
        if (inside) return std::nullopt;
        inside = true;
        if (op == Op::Get && key == kMonth && file_gets++ == 0) {
            sink.put(conversion_marker_key(kMonth), "{\"owner\":\"x\",\"converting\":true}\n", {}, {});
            sink.put(conversion_copy_key(kMonth), month, {}, {});
            sink.remove(kMonth);
            sink.put(kMonth, half, {}, {});
        } else if (op == Op::Head && key == batch_objects::manifest_key(kMonth) && file_gets == 1) {
            sink.put(kMonth, month, {}, {});
            sink.remove(conversion_copy_key(kMonth));
            sink.remove(conversion_marker_key(kMonth));
        }
        inside = false;
        return std::nullopt;
    });
    CHECK(line_set(b.read_month(kMonth)) == line_set(month));
    CHECK(file_gets == 2);  // it read again
}
