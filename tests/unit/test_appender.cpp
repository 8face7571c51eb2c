#include <atomic>
#include <catch2/catch.hpp>
#include <functional>
#include <set>
#include <thread>

#include "append/batch_objects.hpp"
#include "append/object_appender.hpp"
#include "common/crc32c.hpp"
#include "memory_sink.hpp"
#include "shared_sink.hpp"
#include "test_util.hpp"
#include "training_output/error.hpp"

using namespace training_output;
using Op = MemorySink::Op;

namespace {

AppendOptions fast() {
    AppendOptions o;
    o.backoff_base = std::chrono::milliseconds(1);
    o.backoff_max = std::chrono::milliseconds(5);
    return o;
}

SinkResponse transient(const char* detail = "operation timed out") {
    SinkResponse r;
    r.status = SinkStatus::Transient;
    r.detail = detail;
    return r;
}

SinkResponse http(SinkStatus s, int code, const char* s3code) {
    SinkResponse r;
    r.status = s;
    r.http_status = code;
    r.error.code = s3code;
    return r;
}

// An append through its job, as delivery runs it: `record` sees each
// write's intent before the write; `left`, on every way out, what of the
// batch may still land.
AppendResult append_recording(ObjectAppender& appender, const std::string& key, std::string_view batch,
                              const std::function<void(const BatchIntent&)>& record,
                              std::optional<BatchIntent> undecided = std::nullopt,
                              std::optional<BatchIntent>* left = nullptr) {
    AppendJob job(appender, key, batch, crc32c::compute(batch), std::move(undecided));
    try {
        while (const BatchIntent* in = job.prepare()) {
            record(*in);
            job.write_once();
        }
    } catch (...) {
        if (left) *left = job.undecided();
        throw;
    }
    if (left) *left = job.undecided();
    return job.result();
}

std::multiset<std::string> line_set(const std::string& body) {
    auto lines = tdo_test::lines_of(body);
    return {lines.begin(), lines.end()};
}

}  // namespace

TEST_CASE("appender creates, then appends below the multipart threshold", "[unit][append]") {
    MemorySink sink(SinkCapabilities{true, true, true, 1024});
    ObjectAppender appender(sink, fast());
    std::vector<BatchIntent> intents;
    auto r1 = append_recording(appender, "k", "a\n", [&](const BatchIntent& i) { intents.push_back(i); });
    CHECK(r1.offset == 0);
    auto r2 = append_recording(appender, "k", "b\nc\n", [&](const BatchIntent& i) { intents.push_back(i); });
    CHECK(r2.offset == 2);
    CHECK(sink.object("k") == std::optional<std::string>("a\nb\nc\n"));
    REQUIRE(intents.size() == 2);
    CHECK(intents[0].etag.empty());
    CHECK(intents[1].offset == 2);
    CHECK_FALSE(intents[1].etag.empty());
    CHECK(sink.request_count(Op::Put) == 2);
    CHECK(sink.request_count(Op::Get) == 1);
    CHECK(sink.request_count(Op::CreateMultipart) == 0);
}

TEST_CASE("appender adds a newline when an object lacks its last one", "[unit][append]") {
    MemorySink sink(SinkCapabilities{true, true, true, 1024});
    REQUIRE(sink.put("k", "{\"a\":1}", ObjectAttributes{}, WriteConditions{}).ok());
    ObjectAppender appender(sink, fast());
    auto r = appender.append("k", "{\"b\":2}\n");
    CHECK(r.offset == 8);
    CHECK(sink.object("k") == std::optional<std::string>("{\"a\":1}\n{\"b\":2}\n"));
}

TEST_CASE("appender sends only the new bytes above the threshold", "[unit][append]") {
    MemorySink sink(SinkCapabilities{true, true, true, 1000});
    std::string big(5000, 'x');
    big.back() = '\n';
    REQUIRE(sink.put("k", big, ObjectAttributes{}, WriteConditions{}).ok());
    const auto before = sink.bytes_received();
    ObjectAppender appender(sink, fast());
    appender.append("k", "new line\n");
    CHECK(sink.bytes_received() - before == 9);
    CHECK(sink.object("k") == std::optional<std::string>(big + "new line\n"));
    CHECK(sink.request_count(Op::UploadPartCopy) == 1);
    CHECK(sink.request_count(Op::Complete) == 1);
    CHECK(sink.open_uploads() == 0);
}

namespace {

// Reports an 11 GiB object and records the copy ranges asked for.
class HugeObjectSink : public MemorySink {
public:
    HugeObjectSink() : MemorySink(SinkCapabilities{true, true, true, 5u << 20}) {}
    SinkResponse head(const std::string&) override {
        SinkResponse r;
        r.http_status = 200;
        r.etag = "huge";
        r.size = 11ull << 30;
        return r;
    }
    SinkResponse get(const std::string&, std::optional<ByteRange> range) override {
        REQUIRE(range);  // only the last byte: is there a final newline?
        CHECK(range->first == (11ull << 30) - 1);
        SinkResponse r;
        r.http_status = 206;
        r.etag = "huge";
        r.size = 11ull << 30;
        r.body = "\n";
        return r;
    }
    SinkResponse upload_part_copy(const std::string&, const std::string&, int part_number, const std::string&,
                                  const std::string& source_if_match, std::optional<ByteRange> range) override {
        CHECK(source_if_match == "huge");
        REQUIRE(range);
        ranges.push_back(*range);
        SinkResponse r;
        r.http_status = 200;
        r.etag = "copy" + std::to_string(part_number);
        return r;
    }
    SinkResponse complete_multipart(const std::string&, const std::string&, const std::vector<CompletedPart>& parts,
                                    const WriteConditions& conditions) override {
        completed = parts;
        CHECK(conditions.if_match == "huge");
        SinkResponse r;
        r.http_status = 200;
        return r;
    }
    std::vector<ByteRange> ranges;
    std::vector<CompletedPart> completed;
};

}  // namespace

TEST_CASE("appender copies objects above 5 GiB in ranges of at most 5 GiB", "[unit][append]") {
    HugeObjectSink sink;
    ObjectAppender appender(sink, fast());
    appender.append("k", "tail\n");
    const std::uint64_t size = 11ull << 30;
    REQUIRE(sink.ranges.size() == 3);
    CHECK(sink.ranges.front().first == 0);
    CHECK(sink.ranges.back().last == size - 1);
    for (std::size_t i = 0; i < sink.ranges.size(); ++i) {
        CHECK(sink.ranges[i].last - sink.ranges[i].first + 1 <= (5ull << 30));
        if (i > 0) CHECK(sink.ranges[i].first == sink.ranges[i - 1].last + 1);
    }
    REQUIRE(sink.completed.size() == 4);
    CHECK(sink.completed[3].number == 4);
}

TEST_CASE("appender: 412 races with another writer end with every line once", "[unit][append]") {
    auto threshold = GENERATE(std::uint64_t(1), std::uint64_t(1u << 20));  // multipart path and GET+PUT path
    MemorySink sink(SinkCapabilities{true, true, true, 1});
    REQUIRE(sink.put("k", "first\n", ObjectAttributes{}, WriteConditions{}).ok());
    AppendOptions o = fast();
    o.multipart_threshold = threshold;
    ObjectAppender appender(sink, o);
    int interfered = 0;
    bool inside = false;
    sink.set_fault_hook([&](Op op, const std::string&) -> std::optional<MemorySink::Fault> {
        if (inside || !(op == Op::Put || op == Op::Complete) || interfered >= 3) return std::nullopt;
        // Another writer appends just before our conditional write lands.
        inside = true;
        ++interfered;
        auto cur = sink.object("k").value_or("");
        sink.put("k", cur + "other " + std::to_string(interfered) + "\n", ObjectAttributes{}, WriteConditions{});
        inside = false;
        return std::nullopt;
    });
    auto r = appender.append("k", "mine\n");
    CHECK(interfered == 3);
    CHECK(r.attempts == 4);
    CHECK(appender.conflicts() == 3);
    auto lines = line_set(sink.object("k").value());
    CHECK(lines == std::multiset<std::string>{"first", "other 1", "other 2", "other 3", "mine"});
    CHECK(sink.open_uploads() == 0);
}

TEST_CASE("appender: 500s and timeouts before the write are retried", "[unit][append]") {
    MemorySink sink(SinkCapabilities{true, true, true, 1024});
    int failures = 0;
    sink.set_fault_hook([&](Op op, const std::string&) -> std::optional<MemorySink::Fault> {
        if ((op == Op::Head || op == Op::Get) && failures < 4) {
            ++failures;
            return MemorySink::Fault{failures % 2 ? http(SinkStatus::Transient, 500, "InternalError") : transient(),
                                     false};
        }
        return std::nullopt;
    });
    ObjectAppender appender(sink, fast());
    appender.append("k", "a\n");
    appender.append("k", "b\n");
    CHECK(sink.object("k") == std::optional<std::string>("a\nb\n"));
    CHECK(failures == 4);
}

TEST_CASE("appender: a lost answer after the write landed does not write twice", "[unit][append]") {
    auto path = GENERATE(as<std::string>{}, "create", "put", "multipart");
    MemorySink sink(SinkCapabilities{true, true, true, 1});
    AppendOptions o = fast();
    if (path == "put") o.multipart_threshold = 1u << 20;
    if (path != "create") REQUIRE(sink.put("k", "old\n", ObjectAttributes{}, WriteConditions{}).ok());
    ObjectAppender appender(sink, o);
    bool lost = false;
    sink.set_fault_hook([&](Op op, const std::string&) -> std::optional<MemorySink::Fault> {
        if ((op == Op::Put || op == Op::Complete) && !lost) {
            lost = true;
            return MemorySink::Fault{transient("the connection dropped after sending"), true};
        }
        return std::nullopt;
    });
    auto r = appender.append("k", "new\n");
    CHECK(lost);
    CHECK(r.found_landed);
    CHECK(sink.object("k") == std::optional<std::string>(path == "create" ? "new\n" : "old\nnew\n"));
}

TEST_CASE("appender: a lost answer for a write that did not land writes it once", "[unit][append]") {
    MemorySink sink(SinkCapabilities{true, true, true, 1});
    REQUIRE(sink.put("k", "old\n", ObjectAttributes{}, WriteConditions{}).ok());
    ObjectAppender appender(sink, fast());
    int lost = 0;
    sink.set_fault_hook([&](Op op, const std::string&) -> std::optional<MemorySink::Fault> {
        if (op == Op::Complete && lost < 2) {
            ++lost;
            return MemorySink::Fault{transient(), false};
        }
        return std::nullopt;
    });
    auto r = appender.append("k", "new\n");
    CHECK_FALSE(r.found_landed);
    CHECK(r.attempts == 3);
    CHECK(sink.object("k") == std::optional<std::string>("old\nnew\n"));
}

TEST_CASE("appender: when it cannot tell whether a write landed, it does not write again", "[unit][append]") {
    MemorySink sink(SinkCapabilities{true, true, true, 1024});
    REQUIRE(sink.put("k", "old\n", ObjectAttributes{}, WriteConditions{}).ok());
    AppendOptions o = fast();
    o.max_attempts = 5;
    ObjectAppender appender(sink, o);
    bool wrote = false;
    sink.set_fault_hook([&](Op op, const std::string&) -> std::optional<MemorySink::Fault> {
        if (op == Op::Put) {
            wrote = true;
            return MemorySink::Fault{transient(), true};  // landed, answer lost
        }
        if (op == Op::Head && wrote) return MemorySink::Fault{transient("unreachable"), false};
        return std::nullopt;
    });
    CHECK_THROWS_AS(appender.append("k", "new\n"), Error);
    CHECK(sink.request_count(Op::Put) == 2);  // the setup and one attempt
    CHECK(sink.object("k") == std::optional<std::string>("old\nnew\n"));
}

TEST_CASE("appender: 200 with an error inside Complete is retried safely", "[unit][append]") {
    MemorySink sink(SinkCapabilities{true, true, true, 1});
    REQUIRE(sink.put("k", "old\n", ObjectAttributes{}, WriteConditions{}).ok());
    ObjectAppender appender(sink, fast());
    bool once = false;
    sink.set_fault_hook([&](Op op, const std::string&) -> std::optional<MemorySink::Fault> {
        if (op == Op::Complete && !once) {
            once = true;
            auto r = http(SinkStatus::Transient, 200, "InternalError");
            r.error.message = "We encountered an internal error. Please try again.";
            return MemorySink::Fault{r, false};
        }
        return std::nullopt;
    });
    appender.append("k", "new\n");
    CHECK(sink.object("k") == std::optional<std::string>("old\nnew\n"));
}

TEST_CASE("appender falls back to GET+PUT when UploadPartCopy is not implemented", "[unit][append]") {
    MemorySink sink(SinkCapabilities{true, true, false, 1});
    REQUIRE(sink.put("k", "old\n", ObjectAttributes{}, WriteConditions{}).ok());
    ObjectAppender appender(sink, fast());
    appender.append("k", "a\n");
    appender.append("k", "b\n");
    CHECK(sink.object("k") == std::optional<std::string>("old\na\nb\n"));
    CHECK(sink.request_count(Op::UploadPartCopy) == 1);  // tried once, then remembered
    CHECK(sink.open_uploads() == 0);
}

TEST_CASE("appender stops at once on auth and fatal errors", "[unit][append]") {
    MemorySink sink;
    sink.set_fault_hook([&](Op, const std::string&) -> std::optional<MemorySink::Fault> {
        auto r = http(SinkStatus::Auth, 403, "SignatureDoesNotMatch");
        return MemorySink::Fault{r, false};
    });
    ObjectAppender appender(sink, fast());
    try {
        appender.append("k", "a\n");
        FAIL("expected an error");
    } catch (const Error& e) {
        CHECK(e.code() == ErrorCode::Auth);
        CHECK_THAT(e.what(), Catch::Contains("SignatureDoesNotMatch"));
    }
    CHECK(sink.request_count(Op::Head) == 1);
}

TEST_CASE("4 threads appending to one key: every line exactly once", "[unit][append][concurrency]") {
    auto threshold = GENERATE(std::uint64_t(1), std::uint64_t(1u << 30));
    MemorySink sink(SinkCapabilities{true, true, true, 1});
    AppendOptions o = fast();
    o.multipart_threshold = threshold;
    o.max_attempts = 1000;
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&, t] {
            ObjectAppender appender(sink, o);
            for (int i = 0; i < 50; ++i) {
                appender.append("k", "t" + std::to_string(t) + "-" + std::to_string(i) + "\n");
            }
        });
    }
    for (auto& t : threads) t.join();
    auto lines = line_set(sink.object("k").value());
    CHECK(lines.size() == 200);
    CHECK(std::set<std::string>(lines.begin(), lines.end()).size() == 200);
}

TEST_CASE("appender without conditional writes sends no conditions", "[unit][append]") {
    MemorySink sink(SinkCapabilities{false, false, true, 1024});
    ObjectAppender appender(sink, fast());
    appender.append("k", "a\n");
    appender.append("k", "b\n");
    CHECK(sink.object("k") == std::optional<std::string>("a\nb\n"));
}

TEST_CASE("appender: an earlier write that may still land keeps the batch conditional on its ETag",
          "[unit][append][undecided]") {
    // The earlier write (If-Match on the ETag it read) is on its way; it
    // lands before or after the new attempt. Exactly one of them may land.
    const bool late_first = GENERATE(true, false);
    auto threshold = GENERATE(std::uint64_t(1), std::uint64_t(1u << 20));  // multipart path and GET+PUT path
    MemorySink sink(SinkCapabilities{true, true, true, 1});
    REQUIRE(sink.put("k", "old\n", ObjectAttributes{}, WriteConditions{}).ok());
    const std::string etag = sink.head("k").etag;
    const BatchIntent earlier{"k", etag, 4, "", 6, crc32c::compute("batch\n")};
    auto late_write = [&] {
        WriteConditions c;
        c.if_match = etag;
        return sink.put("k", "old\nbatch\n", ObjectAttributes{}, c);
    };
    AppendOptions o = fast();
    o.multipart_threshold = threshold;
    ObjectAppender appender(sink, o);
    CHECK(appender.check_landed(earlier, "batch\n") == Landed::NotYet);
    if (late_first) REQUIRE(late_write().ok());
    auto r = appender.append("k", "batch\n", earlier);
    CHECK(r.found_landed == late_first);
    if (!late_first) CHECK(late_write().status == SinkStatus::PreconditionFailed);  // too late: refused
    CHECK(sink.object("k") == std::optional<std::string>("old\nbatch\n"));
    CHECK(appender.check_landed(earlier, "batch\n") == Landed::Yes);
}

TEST_CASE("appender: an earlier write that can no longer land is decided by the bytes at its offset",
          "[unit][append][undecided]") {
    MemorySink sink(SinkCapabilities{true, true, true, 1});
    REQUIRE(sink.put("k", "old\n", ObjectAttributes{}, WriteConditions{}).ok());
    const BatchIntent earlier{"k", sink.head("k").etag, 4, "", 6, crc32c::compute("batch\n")};
    REQUIRE(sink.put("k", "old\nsomeone else\n", ObjectAttributes{}, WriteConditions{}).ok());  // moved on
    ObjectAppender appender(sink, fast());
    CHECK(appender.check_landed(earlier, "batch\n") == Landed::No);
    auto r = appender.append("k", "batch\n", earlier);
    CHECK_FALSE(r.found_landed);
    CHECK(sink.object("k") == std::optional<std::string>("old\nsomeone else\nbatch\n"));
    // A creation (no ETag) that may still land is decided once the object exists.
    BatchIntent create{"new", "", 0, "", 2, crc32c::compute("x\n")};
    CHECK(appender.check_landed(create, "x\n") == Landed::NotYet);
    REQUIRE(sink.put("new", "x\n", ObjectAttributes{}, WriteConditions{}).ok());
    CHECK(appender.check_landed(create, "x\n") == Landed::Yes);
    CHECK(appender.check_landed(create) == Landed::Yes);
    create.crc = crc32c::compute("y\n");
    CHECK(appender.check_landed(create) == Landed::No);
}

TEST_CASE("appender: the multipart path adds the newline an object lacks", "[unit][append]") {
    MemorySink sink(SinkCapabilities{true, true, true, 1});
    REQUIRE(sink.put("k", "no newline at the end", ObjectAttributes{}, WriteConditions{}).ok());
    ObjectAppender appender(sink, fast());
    std::optional<BatchIntent> recorded;
    auto r = append_recording(appender, "k", "next\n", [&](const BatchIntent& in) { recorded = in; });
    CHECK(sink.object("k") == std::optional<std::string>("no newline at the end\nnext\n"));
    REQUIRE(recorded);
    CHECK(recorded->offset == 22);  // where the batch itself starts
    CHECK(r.offset == 22);
    CHECK(sink.request_count(Op::Complete) == 1);
    CHECK(appender.check_landed(*recorded, "next\n") == Landed::Yes);
}

TEST_CASE("appender: leases are released by a conditional overwrite and taken over by the taker's clock",
          "[unit][append][lease]") {
    // A server like RGW 16: conditional PUT, but If-Match on Complete ignored.
    MemorySink sink(SinkCapabilities{true, false, true, 1});
    AppendOptions o = fast();
    o.lease_ttl = std::chrono::seconds(1);
    ObjectAppender appender(sink, o);
    appender.append("k", "a\n");
    const std::string lease = o.lease_prefix + "k";
    REQUIRE(sink.object(lease).has_value());  // released, never deleted
    CHECK(sink.object(lease)->rfind("{\"released\":true,\"by\":\"", 0) == 0);
    CHECK(sink.request_count(Op::Remove) == 0);

    // A holder that died: its lease object stays; another appender takes it
    // only once it saw the same ETag for lease_ttl by its own clock.
    REQUIRE(sink.put(lease, "{\"owner\":\"dead\"}\n", ObjectAttributes{}, WriteConditions{}).ok());
    const auto t0 = std::chrono::steady_clock::now();
    appender.append("k", "b\n");
    CHECK(std::chrono::steady_clock::now() - t0 >= std::chrono::seconds(1));
    CHECK(sink.object("k") == std::optional<std::string>("a\nb\n"));

    // A live holder that renews (its ETag changes) keeps it.
    REQUIRE(sink.put(lease, "{\"owner\":\"alive\",\"renewal\":0}\n", ObjectAttributes{}, WriteConditions{}).ok());
    std::atomic<bool> stop{false};
    std::thread holder([&] {
        for (int n = 1; !stop; ++n) {
            sink.put(lease, "{\"owner\":\"alive\",\"renewal\":" + std::to_string(n) + "}\n", ObjectAttributes{},
                     WriteConditions{});
            std::this_thread::sleep_for(std::chrono::milliseconds(200));
        }
    });
    AppendOptions impatient = o;
    impatient.lease_wait = std::chrono::milliseconds(2500);
    ObjectAppender other(sink, impatient);
    CHECK_THROWS_AS(other.append("k", "c\n"), Error);
    stop = true;
    holder.join();
    CHECK(sink.object("k") == std::optional<std::string>("a\nb\n"));

    // A release of a lease someone else holds now does nothing.
    WriteConditions stale;
    stale.if_match = "not-the-current-etag";
    CHECK(sink.put(lease, "{\"released\":true,\"by\":\"x\"}\n", ObjectAttributes{}, stale).status ==
          SinkStatus::PreconditionFailed);
}

namespace {

// A store whose appends are an atomic compare-and-append (no lease needed).
SinkCapabilities native_caps() {
    SinkCapabilities c{true, false, true, 1};
    c.native_append = true;
    c.native_append_atomic = true;
    return c;
}

}  // namespace

TEST_CASE("native appends: one request per batch for a sole writer, no read, no copy, no lease",
          "[unit][append][native]") {
    MemorySink sink(native_caps());
    ObjectAppender appender(sink, fast());
    std::vector<BatchIntent> intents;
    auto record = [&](const BatchIntent& i) { intents.push_back(i); };
    CHECK(append_recording(appender, "k", "a\n", record).offset == 0);
    CHECK(append_recording(appender, "k", "b\nc\n", record).offset == 2);
    CHECK(append_recording(appender, "k", "d\n", record).offset == 6);
    CHECK(sink.object("k") == std::optional<std::string>("a\nb\nc\nd\n"));
    CHECK(sink.head("k").appendable);
    CHECK(sink.request_count(Op::Append) == 3);
    CHECK(sink.request_count(Op::Head) == 2);  // the first append's and the check above
    CHECK(sink.request_count(Op::Get) == 0);
    CHECK(sink.request_count(Op::Put) == 0);  // no lease, no rewrite
    CHECK(sink.request_count(Op::UploadPartCopy) == 0);
    REQUIRE(intents.size() == 3);
    CHECK(intents[0].offset == 0);
    CHECK(intents[2].offset == 6);
    CHECK(intents[2].etag.empty());  // a native append's intent is its offset
}

TEST_CASE("native appends: another writer's append moves the end, and the newline guard holds",
          "[unit][append][native]") {
    MemorySink sink(native_caps());
    ObjectAppender appender(sink, fast());
    appender.append("k", "a\n");
    REQUIRE(sink.append_at("k", "other without newline", 2, ObjectAttributes{}).ok());
    auto r = appender.append("k", "b\n");
    CHECK(r.offset == 2 + 21 + 1);
    CHECK(appender.conflicts() == 1);  // the remembered end was stale: 409, then HEAD
    CHECK(sink.object("k") == std::optional<std::string>("a\nother without newline\nb\n"));
    CHECK(sink.request_count(Op::Append) == 5);  // a, other, b (409), the newline, b
    CHECK(sink.request_count(Op::Get) == 1);     // the last byte
}

TEST_CASE("native appends: a plain object is appended to by copy, and the key is remembered as plain",
          "[unit][append][native]") {
    MemorySink sink(native_caps());
    REQUIRE(sink.put("k", "old\n", ObjectAttributes{}, WriteConditions{}).ok());
    ObjectAppender appender(sink, fast());
    appender.append("k", "a\n");
    appender.append("k", "b\n");
    CHECK(sink.object("k") == std::optional<std::string>("old\na\nb\n"));
    CHECK(sink.request_count(Op::Append) == 0);  // the HEAD said plain: never tried
    CHECK_FALSE(sink.head("k").appendable);
}

TEST_CASE("native appends: a lost answer is settled by the position, never written twice",
          "[unit][append][native][undecided]") {
    // The first append's answer is lost (it landed, or not); a second writer
    // may append in between. Every line is in the object once.
    const bool landed = GENERATE(true, false);
    const bool other_between = GENERATE(true, false);
    MemorySink sink(native_caps());
    ObjectAppender appender(sink, fast());
    appender.append("k", "old\n");
    AppendOptions one = fast();
    one.max_attempts = 1;
    ObjectAppender first_try(sink, one);
    first_try.append("k", "old2\n");  // learns the end
    bool lost = false;
    sink.set_fault_hook([&](Op op, const std::string&) -> std::optional<MemorySink::Fault> {
        if (op == Op::Append && !lost) {
            lost = true;
            auto r = transient("the connection dropped after sending");
            r.may_have_applied = true;
            return MemorySink::Fault{r, landed};
        }
        return std::nullopt;
    });
    std::vector<BatchIntent> intents;
    std::optional<BatchIntent> left;
    CHECK_THROWS_AS(
        append_recording(
            first_try, "k", "batch\n", [&](const BatchIntent& i) { intents.push_back(i); }, std::nullopt, &left),
        Error);
    REQUIRE(left.has_value());
    sink.set_fault_hook({});
    if (other_between) REQUIRE(sink.append_at("k", "other\n", sink.head("k").size, ObjectAttributes{}).ok());
    auto r = appender.append("k", "batch\n", left);
    CHECK(r.found_landed == landed);
    const std::string body = sink.object("k").value();
    std::multiset<std::string> expected{"old", "old2", "batch"};
    if (other_between) expected.insert("other");
    CHECK(line_set(body) == expected);
    // At its recorded offset unless another append took that place first.
    CHECK(appender.check_landed(*left, "batch\n") == (landed || !other_between ? Landed::Yes : Landed::No));
}

TEST_CASE("native appends: an undecided append keeps its position until the object moves on",
          "[unit][append][native][undecided]") {
    // The earlier append (at position 4) is on its way and lands before or
    // after the new attempt: only one of them can.
    const bool late_first = GENERATE(true, false);
    MemorySink sink(native_caps());
    REQUIRE(sink.append_at("k", "old\n", 0, ObjectAttributes{}).ok());
    const BatchIntent earlier{"k", "", 4, "", 6, crc32c::compute("batch\n")};
    auto late_write = [&] { return sink.append_at("k", "batch\n", 4, ObjectAttributes{}); };
    ObjectAppender appender(sink, fast());
    CHECK(appender.check_landed(earlier, "batch\n") == Landed::NotYet);
    if (late_first) REQUIRE(late_write().ok());
    auto r = appender.append("k", "batch\n", earlier);
    CHECK(r.found_landed == late_first);
    if (!late_first) CHECK(late_write().status == SinkStatus::Conflict);  // too late: refused
    CHECK(sink.object("k") == std::optional<std::string>("old\nbatch\n"));
}

TEST_CASE("native appends where the position check is not atomic (RGW) are made under a lease",
          "[unit][append][native][lease][slow]") {
    SinkCapabilities caps = native_caps();
    caps.native_append_atomic = false;
    MemorySink sink(caps);
    ObjectAppender appender(sink, fast());
    appender.append("k", "a\n");
    appender.append("k", "b\n");
    CHECK(sink.object("k") == std::optional<std::string>("a\nb\n"));
    CHECK(sink.request_count(Op::Append) == 2);
    CHECK(sink.request_count(Op::Put) == 4);  // per batch: the lease taken and released
    CHECK(sink.request_count(Op::Get) == 0);  // no read of the object
    CHECK(sink.object(".training_output/leases/k")->rfind("{\"released\":true", 0) == 0);
}

TEST_CASE("native appends: 8 threads with their own appenders on one key, every line once",
          "[unit][append][native][concurrency]") {
    SinkCapabilities caps = native_caps();
    caps.native_append_atomic = GENERATE(true, false);
    MemorySink sink(caps);
    AppendOptions o = fast();
    o.max_attempts = 1000;
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t) {
        threads.emplace_back([&, t] {
            ObjectAppender appender(sink, o);
            for (int i = 0; i < 50; ++i) appender.append("k", "t" + std::to_string(t) + "-" + std::to_string(i) + "\n");
        });
    }
    for (auto& t : threads) t.join();
    auto lines = line_set(sink.object("k").value());
    CHECK(lines.size() == 400);
    CHECK(std::set<std::string>(lines.begin(), lines.end()).size() == 400);
    if (caps.native_append_atomic) CHECK(sink.request_count(Op::Put) == 0);
}

TEST_CASE("appender: always_lease takes a lease even where Complete is conditional", "[unit][append][lease][slow]") {
    MemorySink sink(SinkCapabilities{true, true, true, 1024});
    AppendOptions o = fast();
    o.always_lease = true;
    ObjectAppender appender(sink, o);
    appender.append("k", "a\n");
    appender.append("k", "b\n");
    CHECK(sink.object("k") == std::optional<std::string>("a\nb\n"));
    // Each append: the lease taken (PUT), the write, the release (PUT).
    CHECK(sink.request_count(Op::Put) == 6);
}

namespace {

// Answers a lease's first PUT (taking it) `delay` late, after it landed.
class SlowLeaseAnswers : public MemorySink {
public:
    SlowLeaseAnswers(SinkCapabilities caps, std::chrono::milliseconds delay) : MemorySink(caps), delay_(delay) {}
    SinkResponse put(const std::string& key, std::string_view body, const ObjectAttributes& attributes,
                     const WriteConditions& conditions) override {
        SinkResponse r = MemorySink::put(key, body, attributes, conditions);
        if (key.find("/leases/") != std::string::npos) {
            lease_puts.fetch_add(1);
            if (body.find("\"renewal\":0") != std::string::npos) std::this_thread::sleep_for(delay_);
        }
        return r;
    }
    std::atomic<int> lease_puts{0};

private:
    std::chrono::milliseconds delay_;
};

}  // namespace

TEST_CASE("appender: a lease's age starts when the request to take it was sent, not when its answer came",
          "[unit][append][lease]") {
    // The lease landed at once, its answer came 1.2 s later: others count its
    // age from when they saw it, so more than half of a 2 s lease is gone
    // when the write is sent. The holder renews it first.
    SlowLeaseAnswers sink(SinkCapabilities{true, true, true, 1024}, std::chrono::milliseconds(1200));
    AppendOptions o = fast();
    o.always_lease = true;
    o.lease_ttl = std::chrono::seconds(2);
    ObjectAppender appender(sink, o);
    appender.append("k", "a\n");
    CHECK(sink.object("k") == std::optional<std::string>("a\n"));
    CHECK(sink.lease_puts.load() == 3);  // taken, renewed before the write, released
}

TEST_CASE("native appends: an object seen appendable is appended to natively before the probe is answered",
          "[unit][append][native]") {
    // The safe capabilities of an unanswered probe (conditional PUT, no
    // native appends known): a copy would make the appendable object plain.
    MemorySink memory(native_caps());
    REQUIRE(memory.append_at("k", "old\n", 0, ObjectAttributes{}).ok());
    tdo_test::SharedSink unprobed(memory, SinkCapabilities{true, false, true, 1});
    ObjectAppender appender(unprobed, fast());
    appender.append("k", "a\n");
    CHECK(memory.object("k") == std::optional<std::string>("old\na\n"));
    CHECK(memory.head("k").appendable);
    CHECK(memory.request_count(Op::Append) == 2);
    // s3_append_mode copy or lease: never.
    AppendOptions copy = fast();
    copy.native_when_appendable = false;
    ObjectAppender copier(unprobed, copy);
    copier.append("k", "b\n");
    CHECK(memory.object("k") == std::optional<std::string>("old\na\nb\n"));
    CHECK_FALSE(memory.head("k").appendable);
}

namespace {

// RGW's semantics: native appends (not atomic: they take the lease), a
// Complete that ignores If-Match.
SinkCapabilities rgw_like() {
    SinkCapabilities c;
    c.conditional_complete = false;
    c.native_append = true;
    c.native_append_atomic = false;
    c.min_part_size = 64;
    return c;
}

}  // namespace

TEST_CASE("native appends: a plain object is converted once to an appendable one, its bytes intact",
          "[unit][append][convert]") {
    MemorySink sink(rgw_like());
    const std::string month = std::string(300, 'x') + "\n";
    REQUIRE(sink.put("k", month, ObjectAttributes{}, WriteConditions{}).ok());
    const std::int64_t plain_time = sink.head("k").last_modified;
    AppendOptions o = fast();
    o.convert_plain = true;
    o.max_attempts = 1;  // the conversion is not one of the append's attempts
    ObjectAppender a(sink, o);
    a.append("k", "b1\n");
    a.append("k", "b2\n");
    CHECK(sink.object("k").value() == month + "b1\nb2\n");
    CHECK(sink.head("k").appendable);
    // Written again in a later second than the plain object: a delete of
    // that one (unmodified since its time) that lands late is refused.
    CHECK(sink.head("k").last_modified > plain_time);
    CHECK(sink.remove_if_unmodified_since("k", plain_time).status == SinkStatus::PreconditionFailed);
    CHECK_FALSE(sink.object(conversion_marker_key("k")));
    CHECK_FALSE(sink.object(conversion_copy_key("k")));
    // Appends after it are native: no more copies.
    CHECK(sink.request_count(Op::UploadPartCopy) == 1);  // the copy aside
    CHECK(sink.request_count(Op::Append) >= 3);          // the month again, b1, b2
    // Without convert_plain, a plain object stays plain (appended to by copy).
    MemorySink other(rgw_like());
    REQUIRE(other.put("k", month, ObjectAttributes{}, WriteConditions{}).ok());
    ObjectAppender b(other, fast());
    b.append("k", "b1\n");
    CHECK_FALSE(other.head("k").appendable);
    CHECK(other.object("k").value() == month + "b1\n");
}

TEST_CASE("native appends: a conversion cut short at every request is finished by the next append, exactly once",
          "[unit][append][convert][crash]") {
    const std::string month = std::string(300, 'x') + "\n";
    for (int cut = 0;; ++cut) {
        INFO("requests fail from number " << cut);
        MemorySink sink(rgw_like());
        REQUIRE(sink.put("k", month, ObjectAttributes{}, WriteConditions{}).ok());
        sink.set_last_modified("k", std::time(nullptr) - 60);  // no wait for the store's clock to pass it
        std::atomic<int> n{0};
        sink.set_fault_hook([&](Op, const std::string&) -> std::optional<MemorySink::Fault> {
            const int i = n++;
            if (i < cut) return std::nullopt;
            return MemorySink::Fault{transient("the writer died"), i % 2 == 1};
        });
        AppendOptions o = fast();
        o.convert_plain = true;
        o.max_attempts = 3;
        std::optional<BatchIntent> left;
        bool done = false;
        {
            ObjectAppender a(sink, o);
            try {
                append_recording(
                    a, "k", "b1\n", [](const BatchIntent&) {}, std::nullopt, &left);
                done = true;
            } catch (const Error&) {}
        }
        const bool finished = n.load() <= cut;  // no request failed
        sink.set_fault_hook({});
        // Whatever state it left, a reader following the month rule sees the month whole.
        ObjectAppender reader_appender(sink, fast());
        BatchObjects reader(sink, reader_appender, BatchObjectsOptions{});
        const std::string seen = reader.read_month("k");
        CHECK((seen == month || seen == month + "b1\n"));
        // The next writer (after the dead one's lease ran out) appends the
        // same batch again, as its spool would, and then another.
        AppendOptions next = o;
        next.lease_ttl = std::chrono::seconds(0);
        next.max_attempts = 25;
        ObjectAppender b(sink, next);
        if (!done) {
            // An earlier write of it that may still land is checked first, as the flusher does.
            const Landed l = left ? b.check_landed(*left, "b1\n") : Landed::No;
            if (l != Landed::Yes) b.append("k", "b1\n", l == Landed::NotYet ? left : std::nullopt);
        }
        b.append("k", "b2\n");
        CHECK(sink.object("k").value() == month + "b1\nb2\n");
        CHECK(sink.head("k").appendable);
        CHECK_FALSE(sink.object(conversion_marker_key("k")));
        CHECK_FALSE(sink.object(conversion_copy_key("k")));
        if (finished) break;
    }
}
