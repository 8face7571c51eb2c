// Flaky, slow and late object stores: the library against Ceph RGW through a
// fault-injecting proxy (fault_proxy.hpp). Whatever the store does, no
// accepted line is lost or doubled, and no call waits past its bound.
#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <map>
#include <random>
#include <set>
#include <thread>

#include "../unit/crash_harness.hpp"
#include "../unit/test_util.hpp"
#include "config/redis_url.hpp"
#include "fault_proxy.hpp"
#include "s3_test_servers.hpp"
#include "tcp_proxy.hpp"
#include "training_output/error.hpp"
#include "training_output/training_output.hpp"

using namespace training_output;
using namespace tdo_test;
using Clock = std::chrono::steady_clock;

namespace {

const std::string kStepsKey = "training/physical_activity/2025/11/health_journal_2025_11.jsonl";

int rgw_port() {
    const std::string e = rgw().endpoint;
    return std::stoi(e.substr(e.rfind(':') + 1));
}

Server through(const FaultProxy& proxy) { return {proxy.endpoint(), rgw().access_key, rgw().secret_key}; }

// The object's lines: how many times each distinct line is there.
std::map<std::string, int> line_counts(S3Sink& sink, const std::string& key) {
    std::map<std::string, int> counts;
    for (const auto& l : lines_of(month_of(sink, key))) ++counts[l];
    return counts;
}

// Outputs of the object's lines ("output" of each JSON line), counted.
std::map<std::string, int> output_counts(S3Sink& sink, const std::string& key) {
    std::map<std::string, int> out;
    for (const auto& [line, n] : line_counts(sink, key)) {
        auto d = parse(line);
        if (d.IsObject() && d.HasMember("output")) out[d["output"].GetString()] += n;
    }
    return out;
}

Outcome steps(TrainingOutput& w, const std::string& narrative) {
    return w.generate(narrative, message_json("StepsRecord"), result_json());
}

// A 6 MiB object of padding lines: appends to it take the multipart path
// (a plain object), or native appends (an appendable one).
void prefill(S3Sink& sink, const std::string& key, bool appendable = false) {
    const std::string big = big_jsonl(6u << 20);
    REQUIRE((appendable ? sink.append_at(key, big, 0, ObjectAttributes{})
                        : sink.put(key, big, ObjectAttributes{}, WriteConditions{}))
                .ok());
}

// Each test's setting: a fresh bucket on RGW, reached through a fault proxy
// (or directly, with rgw()), and a directory for a writer.
struct ProxiedBucket {
    FaultProxy proxy{rgw_port()};
    std::string bucket;
    std::unique_ptr<CurlS3Sink> sink = fresh_bucket(rgw(), bucket);
    TempDir dir;
    // A writer's configuration: through the proxy, in `dir`.
    std::string proxied(const std::string& extra = "") const {
        return writer_config(through(proxy), bucket, dir.path(), extra);
    }
};

}  // namespace

TEST_CASE_METHOD(ProxiedBucket,
                 "RGW through a proxy: a 503 to one probe request never lowers what the writer relies on",
                 "[integration][rgw][proxy]") {
    // The probe's If-None-Match:* request gets a 503 (on main: read as "no
    // conditional writes", and that writer appended without conditions).
    proxy.add({"PUT", ".training_output/probe/", "", "", "if-none-match", 0, -1, Fault::Status, 503, {}});
    {
        S3SinkOptions o = options_for(through(proxy), bucket);
        CurlS3Sink probed(o);
        const SinkCapabilities caps = probed.capabilities();
        CHECK(caps.conditional_writes);
        CHECK_FALSE(caps.conditional_complete);  // the safe mode: appends take a lease
        CHECK(proxy.faults() >= 1);
    }
    // Two writer processes into one key, one of them probed through the
    // faulty proxy: every line of both, once.
    TempDir b_dir;  // the second writer's; the first one's is `dir`
    const std::string extra = ",\"flush_interval_ms\":50,\"flush_max_bytes\":8192,\"s3_lease_seconds\":5";
    const std::string a_config = proxied(extra);
    const std::string b_config = writer_config(rgw(), bucket, b_dir.path(), extra);
    const int count = 300;
    pid_t a = spawn({TDO_TEST_WRITER, a_config, "a", std::to_string(count), "0", "StepsRecord"});
    pid_t b = spawn({TDO_TEST_WRITER, b_config, "b", std::to_string(count), "0", "StepsRecord"});
    REQUIRE(a > 0);
    REQUIRE(b > 0);
    CHECK(wait_for(a) == 0);
    CHECK(wait_for(b) == 0);
    auto counts = line_counts(*sink, kStepsKey);
    CHECK(counts.size() == static_cast<std::size_t>(2 * count));
    int doubled = 0;
    for (const auto& [line, n] : counts) doubled += n != 1;
    CHECK(doubled == 0);
}

TEST_CASE_METHOD(ProxiedBucket,
                 "RGW through a proxy: a write of a killed writer that lands seconds later is not written twice",
                 "[integration][rgw][proxy]") {
    const std::string path = GENERATE(as<std::string>{}, "native append", "GET+PUT", "multipart", "batch object");
    INFO(path);
    const bool multipart = path == "multipart";
    const bool batch_object = path == "batch object";
    if (multipart) prefill(*sink, kStepsKey);
    const std::string config = proxied(",\"flush_interval_ms\":20,\"s3_lease_seconds\":5,\"s3_append_mode\":\"" +
                                       std::string(path == "native append" ? "auto"
                                                   : batch_object          ? "batches"
                                                                           : "copy") +
                                       "\"");
    // The writer's first write to the object is held by the network...
    proxy.add({multipart ? "POST" : "PUT",
               batch_object ? ".batches/" : "health_journal",
               ".training_output",
               multipart                 ? "uploadId"
               : path == "native append" ? "append"
                                         : "",
               "",
               0,
               1,
               Fault::Hold,
               0,
               {}});
    CrashRun run;
    run.workers = 1;
    run.per_worker = 20;
    run.delay_us = 0;
    CrashResult result;
    detail::Worker w;
    detail::start(w, TDO_TEST_CRASH_WRITER, config, run);
    const auto deadline = Clock::now() + std::chrono::seconds(30);
    // Every example accepted (the held write blocks only the delivery).
    while ((proxy.held() == 0 || result.accepted.size() < 20u) && Clock::now() < deadline) {
        detail::drain(w, result, false);
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    REQUIRE(proxy.held() == 1);
    // ... while the writer is killed.
    ::kill(w.pid, SIGKILL);
    ::waitpid(w.pid, nullptr, 0);
    detail::drain(w, result, true);
    ::close(w.fd);
    REQUIRE(result.accepted.size() == 20u);
    // A writer adopts its spool at once; the held request reaches the store
    // 2 s later, while the adopter waits out the dead writer's lease.
    std::thread late([&] {
        std::this_thread::sleep_for(std::chrono::seconds(2));
        proxy.release_held();
    });
    {
        TrainingOutput adopter(Config::from_json(config));
        CHECK(adopter.stats().lines_recovered == 20);
        adopter.flush();
        adopter.close();
    }
    late.join();
    proxy.drain();
    auto count_wrong = [&] {
        auto outputs = output_counts(*sink, kStepsKey);
        int wrong = 0;
        for (const auto& tag : result.accepted) {
            const int i = std::stoi(tag.substr(tag.find(':') + 1));
            wrong += outputs["Worker 0 example " + std::to_string(i) + "."] != 1;
        }
        return wrong;
    };
    CHECK(count_wrong() == 0);
    if (batch_object) {
        // Folded; then a copy of a folded batch's request arrives (as a
        // proxy that retried would send it): it is never folded again.
        ListPage page;
        REQUIRE(sink->list(batch_objects::prefix(kStepsKey), "", page).ok());
        REQUIRE_FALSE(page.objects.empty());
        SinkResponse first = sink->get(page.objects.front().key);
        REQUIRE(first.ok());
        CHECK(compact(*sink, kStepsKey).batches == page.objects.size());
        REQUIRE(sink->put(page.objects.front().key, first.body, ObjectAttributes{}, WriteConditions{}).ok());
        CHECK(count_wrong() == 0);
        compact(*sink, kStepsKey);
        REQUIRE(sink->list(batch_objects::prefix(kStepsKey), "", page).ok());
        CHECK(page.objects.empty());
        CHECK(count_wrong() == 0);
    }
    if (multipart) CHECK(line_counts(*sink, kStepsKey).size() > 20u);  // the prefix is intact
}

TEST_CASE_METHOD(ProxiedBucket,
                 "RGW through a proxy: a Complete that stalls past the lease never lands over another writer's append",
                 "[integration][rgw][proxy]") {
    // Multipart: A's first Complete is held 7 s, then answered 503 (the S3
    // client used to retry it after the lease had passed to B, and it
    // overwrote B's append). Native: A's first append is answered by a reset
    // at once and reaches RGW 7 s later, after the lease.
    const bool native = GENERATE(false, true);
    INFO((native ? "native append" : "multipart Complete"));
    prefill(*sink, kStepsKey, native);
    TempDir b_dir;  // the second writer's; the first one's is `dir`
    // The plain object is appended to as such (multipart), not converted.
    const std::string extra = ",\"flush_interval_ms\":20,\"s3_lease_seconds\":5,\"s3_convert_plain_objects\":false";
    if (native) {
        proxy.add({"PUT", "health_journal", "", "append", "", 0, 1, Fault::Late, 0, std::chrono::milliseconds(7000)});
    } else {
        proxy.add({"POST", "health_journal", "", "uploadId", "", 0, 1, Fault::StallThenStatus, 503,
                   std::chrono::milliseconds(7000)});
    }
    TrainingOutput a(Config::from_json(proxied(extra)));
    TrainingOutput b(Config::from_json(writer_config(rgw(), bucket, b_dir.path(), extra)));
    CHECK(steps(a, "Written by A.") == Outcome::Written);
    // A's write is on its way: the proxy holds it.
    const auto held_by = Clock::now() + std::chrono::seconds(30);
    while (proxy.faults() == 0 && Clock::now() < held_by) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    REQUIRE(proxy.faults() == 1);
    CHECK(steps(b, "Written by B.") == Outcome::Written);
    b.flush();
    a.flush();
    a.close();
    b.close();
    proxy.drain();  // the late request has reached RGW (and was refused)
    auto outputs = output_counts(*sink, kStepsKey);
    CHECK(outputs["Written by A."] == 1);
    CHECK(outputs["Written by B."] == 1);
    CHECK(proxy.faults() == 1);
    CHECK(sink->head(kStepsKey).appendable == native);
}

TEST_CASE_METHOD(ProxiedBucket,
                 "RGW through a proxy: a conversion's delete of the plain object that lands late never removes the "
                 "month written again",
                 "[integration][rgw][proxy][conversion]") {
    // The writer converts the 6 MiB plain object to an appendable one. Its
    // DELETE of the plain object is answered by a reset at once and reaches
    // RGW 3 s later: the retry deleted it, wrote the month again and
    // appended the lines meanwhile (the late DELETE used to remove all of it).
    prefill(*sink, kStepsKey);
    const std::size_t before = lines_of(sink->get(kStepsKey).body).size();
    proxy.add({"DELETE", "health_journal_2025_11.jsonl", ".conversion", "", "", 0, 1, Fault::Late, 0,
               std::chrono::milliseconds(3000)});
    TrainingOutput w(Config::from_json(proxied(",\"flush_interval_ms\":20,\"s3_lease_seconds\":5")));
    for (int i = 0; i < 20; ++i) CHECK(steps(w, "Line " + std::to_string(i) + ".") == Outcome::Written);
    w.flush();
    w.close();
    proxy.clear();
    proxy.drain();  // the late DELETE has reached RGW
    CHECK(proxy.faults() == 1);
    const SinkResponse h = sink->head(kStepsKey);
    REQUIRE(h.ok());
    CHECK(h.appendable);
    CHECK(lines_of(sink->get(kStepsKey).body).size() == before + 20);
    auto outputs = output_counts(*sink, kStepsKey);
    for (int i = 0; i < 20; ++i) CHECK(outputs["Line " + std::to_string(i) + "."] == 1);
}

TEST_CASE_METHOD(ProxiedBucket,
                 "RGW through a proxy: writes that stall and fail do not hold flush() or close() past their bound",
                 "[integration][rgw][proxy][bounded]") {
    // Every write to the object or its lease: held 3 s, then 503.
    proxy.add(
        {"PUT", "health_journal", "", "", "", 0, -1, Fault::StallThenStatus, 503, std::chrono::milliseconds(3000)});
    const int timeout_ms = 4000;
    TrainingOutput w(Config::from_json(proxied(",\"flush_timeout_ms\":" + std::to_string(timeout_ms))));
    CHECK(steps(w, "Never lands.") == Outcome::Written);
    auto t0 = Clock::now();
    CHECK_THROWS_AS(w.flush(), Error);
    CHECK(Clock::now() - t0 < std::chrono::milliseconds(timeout_ms + 1000));
    const auto took = close_reporting_undelivered(w, 1);
    INFO(took.count() << " ms");
    CHECK(took < std::chrono::milliseconds(timeout_ms + 1000));
    // Nothing landed; the next writer (the same destination) delivers the line once.
    proxy.clear();
    TrainingOutput next(Config::from_json(proxied()));
    next.close();
    CHECK(output_counts(*sink, kStepsKey)["Never lands."] == 1);
}

TEST_CASE_METHOD(ProxiedBucket,
                 "RGW through a proxy: an answer lost after the write, then a HEAD answered 200 with an error and no "
                 "ETag: nothing doubled",
                 "[integration][rgw][proxy]") {
    const bool native = GENERATE(false, true);  // an appendable object, or a plain one (GET+PUT)
    INFO((native ? "native append" : "GET+PUT"));
    REQUIRE((native ? sink->append_at(kStepsKey, "{\"before\":1}\n", 0, ObjectAttributes{})
                    : sink->put(kStepsKey, "{\"before\":1}\n", ObjectAttributes{}, WriteConditions{}))
                .ok());
    proxy.add({"PUT", "health_journal", ".training_output", "", "", 0, 1, Fault::ResetAfter, 0, {}});
    // The object's first HEAD is the write's own; the second, the check of whether it landed.
    proxy.add({"HEAD", "health_journal", ".training_output", "", "", 1, 1, Fault::ErrorIn200, 0, {}});
    TrainingOutput w(Config::from_json(proxied()));
    for (int i = 0; i < 20; ++i) CHECK(steps(w, "Line " + std::to_string(i) + ".") == Outcome::Written);
    w.flush();
    w.close();
    CHECK(proxy.faults() == 2);
    auto outputs = output_counts(*sink, kStepsKey);
    CHECK(outputs.size() == 20u);
    int wrong = 0;
    for (const auto& [out, n] : outputs) wrong += n != 1;
    CHECK(wrong == 0);
}

TEST_CASE_METHOD(
    ProxiedBucket,
    "RGW through a proxy: 20% of all requests fail, stall, land late or lie, and 4 writers x 2,500 examples "
    "land exactly once",
    "[integration][rgw][proxy][mixed]") {
    // The append modes RGW can run: native appends (a new object; a 6 MiB
    // appendable one), copies under a lease (a new object: PUT, then
    // GET+PUT; a 6 MiB plain one: multipart), and conditional PUTs without a
    // lease (s3_conditional_writes=true, every append GET+PUT: RGW enforces
    // If-Match on PUT, not on Complete).
    const std::string mode =
        GENERATE(as<std::string>{}, "native, new object", "native, 6 MiB object", "lease, new object",
                 "lease, 6 MiB object", "conditional PUT", "batches, 6 MiB object");
    INFO(mode);
    const bool big = mode.find("6 MiB") != std::string::npos;
    const bool native = mode.rfind("native", 0) == 0;
    const bool batches = mode.rfind("batches", 0) == 0;
    if (big) prefill(*sink, kStepsKey, native);
    proxy.random_faults(0.2, static_cast<unsigned>(mode.size()), std::chrono::milliseconds(1500));
    const int workers = 4, count = 2500, flush_timeout_ms = 180000;
    std::string extra =
        ",\"flush_interval_ms\":200,\"flush_max_bytes\":262144,\"s3_lease_seconds\":5,\"s3_request_timeout_ms\":2000,"
        "\"s3_connect_timeout_ms\":1000,\"flush_timeout_ms\":" +
        std::to_string(flush_timeout_ms);
    if (mode == "conditional PUT") {
        extra +=
            ",\"s3_append_mode\":\"copy\",\"s3_conditional_writes\":\"true\",\"s3_multipart_threshold\":1073741824";
    } else if (batches) {
        // Compactions while the writers write (and fail, and are faulted).
        extra += ",\"s3_append_mode\":\"batches\",\"s3_compaction_interval_seconds\":1";
    } else if (!native) {
        extra += ",\"s3_append_mode\":\"lease\"";
    }
    const std::string config = proxied(extra);
    const auto t0 = Clock::now();
    std::vector<pid_t> pids;
    for (int p = 0; p < workers; ++p) {
        pids.push_back(
            spawn({TDO_TEST_WRITER, config, "w" + std::to_string(p), std::to_string(count), "0", "StepsRecord"}));
        REQUIRE(pids.back() > 0);
    }
    // Each process flushes (within flush_timeout_ms, or it exits non-zero) and closes.
    for (pid_t pid : pids) CHECK(wait_for(pid) == 0);
    INFO("took " << std::chrono::duration_cast<std::chrono::seconds>(Clock::now() - t0).count() << " s, "
                 << proxy.faults() << " faults in " << proxy.requests() << " requests");
    proxy.clear();
    proxy.drain();                                  // late requests have landed (or were refused) by now
    CHECK(proxy.faults() * 10 > proxy.requests());  // about a fifth of them were faulted
    auto outputs = output_counts(*sink, kStepsKey);
    int lost = 0, doubled = 0;
    for (int p = 0; p < workers; ++p) {
        for (int i = 0; i < count; ++i) {
            const int n = outputs["Worker w" + std::to_string(p) + " narrative number " + std::to_string(i) + "."];
            lost += n == 0;
            doubled += n > 1;
        }
    }
    CHECK(lost == 0);
    CHECK(doubled == 0);
    CHECK(tdo_test::list_dir(dir / ".spool").empty());
    // An appendable object stays so (a writer whose probe was not answered
    // still appends natively to it); a copy makes a plain one.
    if ((big || !native) && !batches) CHECK(sink->head(kStepsKey).appendable == native);
    if (batches) {
        // A last compaction without faults: the monthly file alone holds them all, once.
        compact(*sink, kStepsKey);
        SinkResponse g = sink->get(kStepsKey);
        REQUIRE(g.ok());
        std::size_t writer_lines = 0;
        for (const auto& l : lines_of(g.body)) writer_lines += l.find("narrative number") != std::string::npos;
        CHECK(writer_lines == static_cast<std::size_t>(workers * count));
    }
    // Whatever failed on the way, the manifest never claims a line the file lacks.
    check_manifest(*sink, kStepsKey, false);
}

TEST_CASE_METHOD(
    ProxiedBucket,
    "RGW and Redis through proxies, batches mode: a batch held by the network while its writer's liveness lapsed keeps "
    "its name, and its late write never lands over content another writer took over",
    "[integration][rgw-redis][proxy][batches]") {
    // Writer A's batch object PUTs are held by the network; A loses Redis
    // (a partition), its liveness lapses and its key expires. Writer C is
    // handed the same examples, takes them over and writes them. A gets
    // Redis back: its batch, whose first write may still land, keeps its
    // name (a failed liveness check before a retry used to drop that), its
    // claims are confirmed, and the name is fenced. Then the held requests
    // reach the store: refused, every line is in the month once.
    const char* redis_env = std::getenv("TDO_TEST_REDIS_URL");
    REQUIRE(redis_env);
    TcpProxy redis(parse_redis_url(redis_env).port);
    TempDir y;  // writer C's; A's is `dir`
    const std::string ns =
        "tdo-held-" + std::to_string(::getpid()) + "-" + std::to_string(std::random_device{}() % 100000);
    auto settings = [&](const std::string& url) {
        return ",\"dedup_store\":\"redis\",\"redis_url\":\"" + url + "\",\"dedup_namespace\":\"" + ns +
               "\",\"s3_append_mode\":\"batches\",\"s3_compaction_interval_seconds\":0,\"dedup_owner_ttl_seconds\":10,"
               "\"s3_request_timeout_ms\":3000,\"redis_timeout_ms\":300,\"flush_interval_ms\":20,\"flush_timeout_ms\":"
               "3000";
    };
    const std::string a_redis =
        std::string("redis://:") + TDO_TEST_REDIS_PASSWORD + "@127.0.0.1:" + std::to_string(redis.port()) + "/0";
    proxy.add({"PUT", ".batches/", "", "", "", 0, -1, Fault::Hold, 0, {}});  // every batch object PUT, for now
    const int examples = 3;
    auto text = [](int i) { return "Held by the network, line " + std::to_string(i) + "."; };
    {
        TrainingOutput a(Config::from_json(proxied(settings(a_redis))));
        for (int i = 0; i < examples; ++i) CHECK(steps(a, text(i)) == Outcome::Written);
        const auto held_by = Clock::now() + std::chrono::seconds(10);
        while (proxy.held() == 0 && Clock::now() < held_by) std::this_thread::sleep_for(std::chrono::milliseconds(10));
        REQUIRE(proxy.held() >= 1);
        redis.cut();
        std::this_thread::sleep_for(std::chrono::seconds(11));  // A's liveness key expires
        {
            TrainingOutput c(Config::from_json(writer_config(rgw(), bucket, y.path(), settings(redis_env))));
            for (int i = 0; i < examples; ++i) CHECK(steps(c, text(i)) == Outcome::Written);  // taken over
            c.close();
        }
        proxy.clear();  // new requests go through; those held stay held
        redis.restore();
        a.flush();
        CHECK(a.stats().lines_voided == static_cast<std::uint64_t>(examples));
        a.close();
    }
    proxy.release_held();
    proxy.drain();
    const auto outputs = output_counts(*sink, kStepsKey);
    CHECK(outputs.size() == static_cast<std::size_t>(examples));
    for (int i = 0; i < examples; ++i) {
        INFO(text(i));
        CHECK(outputs.count(text(i)) == 1);
        if (outputs.count(text(i))) CHECK(outputs.at(text(i)) == 1);
    }
}

TEST_CASE_METHOD(
    ProxiedBucket,
    "RGW and Redis through a proxy, batches mode: the batch object request of a writer killed while the network held "
    "it arrives after another writer took its content over: refused, every line once",
    "[integration][rgw-redis][proxy][batches]") {
    // Writer A (a process) writes 5 examples; the PUT of its first batch
    // object is held by the network, and A is killed; its machine stays down
    // past dedup_owner_ttl_seconds. Writer C is handed some of the examples
    // again (all of them, or all but the first), takes their claims over and
    // writes them. Then A's request reaches the store; then A's machine is
    // back and a writer adopts its spool. Before, every example C wrote was
    // in the month twice: C now fences the batch name A recorded in Redis
    // before it takes the claims over, and the adopter writes what is still
    // A's under another name.
    const int first = GENERATE(0, 1);
    INFO("C is handed examples " << first << " to 4");
    const char* redis_env = std::getenv("TDO_TEST_REDIS_URL");
    REQUIRE(redis_env);
    TempDir y;  // writer C's; A's is `dir`
    const std::string ns =
        "tdo-killed-held-" + std::to_string(::getpid()) + "-" + std::to_string(std::random_device{}() % 100000);
    const std::string settings = ",\"dedup_store\":\"redis\",\"redis_url\":\"" + std::string(redis_env) +
                                 "\",\"dedup_namespace\":\"" + ns +
                                 "\",\"s3_append_mode\":\"batches\",\"s3_compaction_interval_seconds\":0,"
                                 "\"dedup_owner_ttl_seconds\":10,\"s3_request_timeout_ms\":3000,"
                                 "\"flush_interval_ms\":20";
    const std::string a_config = proxied(settings);
    proxy.add({"PUT", ".batches/", "", "", "", 0, 1, Fault::Hold, 0, {}});  // A's first batch object
    constexpr int kExamples = 5;
    CrashRun run;
    run.workers = 1;
    run.per_worker = kExamples;
    run.delay_us = 0;
    CrashResult result;
    detail::Worker w;
    detail::start(w, TDO_TEST_CRASH_WRITER, a_config, run);
    const auto deadline = Clock::now() + std::chrono::seconds(30);
    while ((proxy.held() == 0 || result.accepted.size() < static_cast<std::size_t>(kExamples)) &&
           Clock::now() < deadline) {
        detail::drain(w, result, false);
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    REQUIRE(proxy.held() == 1);
    ::kill(w.pid, SIGKILL);
    ::waitpid(w.pid, nullptr, 0);
    detail::drain(w, result, true);
    ::close(w.fd);
    REQUIRE(result.accepted.size() == static_cast<std::size_t>(kExamples));
    std::this_thread::sleep_for(std::chrono::seconds(11));  // A's liveness key expires
    auto text = [](int i) { return "Worker 0 example " + std::to_string(i) + "."; };
    {
        TrainingOutput c(Config::from_json(writer_config(rgw(), bucket, y.path(), settings)));
        for (int i = first; i < kExamples; ++i) {
            CHECK(c.generate(text(i), "{\"record_type\":\"StepsRecord\",\"user_id\":\"0\"}",
                             "{\"record_count\":5,\"processing_timestamp\":\"2025-11-18T10:30:00Z\"}") ==
                  Outcome::Written);  // taken over
        }
        c.close();
        CHECK(c.stats().lines_appended == static_cast<std::uint64_t>(kExamples - first));
    }
    // A's first batch's name is fenced: an empty object under it.
    ListPage page;
    REQUIRE(sink->list(batch_objects::prefix(kStepsKey), "", page).ok());
    CHECK(std::count_if(page.objects.begin(), page.objects.end(), [](const auto& o) { return o.size == 0; }) == 1);
    proxy.clear();
    proxy.release_held();
    proxy.drain();
    auto count_wrong = [&](int from) {
        auto outputs = output_counts(*sink, kStepsKey);
        int wrong = 0;
        for (int i = from; i < kExamples; ++i) {
            INFO(text(i));
            CHECK(outputs[text(i)] == 1);
            wrong += outputs[text(i)] != 1;
        }
        return wrong;
    };
    CHECK(count_wrong(first) == 0);
    {
        TrainingOutput adopter(Config::from_json(a_config));  // A's machine is back
        adopter.flush();
        adopter.close();
    }
    CHECK(count_wrong(0) == 0);
    CHECK(output_counts(*sink, kStepsKey).size() == static_cast<std::size_t>(kExamples));
    if (first == 1) {
        // Example 0, A's first line, was still A's: written under A's spool
        // id and an 'f' (the only spool part of odd length), the fenced
        // name's batch renamed.
        REQUIRE(sink->list(batch_objects::prefix(kStepsKey), "", page).ok());
        CHECK(std::count_if(page.objects.begin(), page.objects.end(), [](const auto& o) {
                  const auto name = batch_objects::parse(kStepsKey, o.key);
                  return name && name->spool.size() % 2 == 1 && name->spool.back() == 'f' && o.size > 0;
              }) == 1);
    }
}
