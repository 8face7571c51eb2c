// The Redis dedup store against a real redis-server: the one the test
// fixture starts on loopback (TDO_TEST_REDIS_URL; scripts/services/redis.sh),
// and, for restarts and outages, servers a test starts itself with the same
// script. If Redis cannot be reached where it should be, the tests fail.
#include <hiredis/hiredis.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "../unit/dedup_conformance.hpp"
#include "../unit/test_util.hpp"
#include "config/redis_url.hpp"
#include "tcp_proxy.hpp"
#include "training_output.h"
#include "training_output/error.hpp"
#include "training_output/training_output.hpp"

using namespace training_output;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

std::string env_or_fail(const char* name) {
    const char* v = std::getenv(name);
    if (!v || !*v) FAIL(std::string(name) + " is not set: the test fixture starts redis-server");
    return v;
}

// The fixture's server, as the default user (password), an ACL user, a unix socket.
std::string redis_url() { return env_or_fail("TDO_TEST_REDIS_URL"); }
int redis_port() { return parse_redis_url(redis_url()).port; }
std::string acl_url(const std::string& password = TDO_TEST_REDIS_ACL_PASSWORD) {
    return std::string("redis://") + TDO_TEST_REDIS_ACL_USER + ":" + password +
           "@127.0.0.1:" + std::to_string(redis_port()) + "/0";
}
std::string unix_url(int db) {
    return std::string("unix://:") + TDO_TEST_REDIS_PASSWORD + "@" + TDO_TEST_REDIS_SOCKET +
           "?db=" + std::to_string(db);
}

// Keys of each test under their own namespace: the server is shared.
std::string unique_namespace(const std::string& prefix = "tdo-test") {
    static std::atomic<int> counter{0};
    return prefix + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter++) + "-" +
           std::to_string(std::random_device{}() % 1000000);
}

// Inspects the server with hiredis' blocking API, independently of the store.
class RawRedis {
public:
    explicit RawRedis(const std::string& url) {
        RedisUrl u = parse_redis_url(url);
        c_ = u.unix_socket ? redisConnectUnix(u.path.c_str()) : redisConnect(u.host.c_str(), u.port);
        REQUIRE(c_);
        INFO(c_->errstr);
        REQUIRE(c_->err == 0);
        if (!u.password.empty()) {
            REQUIRE((u.user.empty() ? cmd({"AUTH", u.password}) : cmd({"AUTH", u.user, u.password})) == "OK");
        }
        if (u.db) REQUIRE(cmd({"SELECT", std::to_string(u.db)}) == "OK");
    }
    ~RawRedis() { redisFree(c_); }
    RawRedis(const RawRedis&) = delete;
    RawRedis& operator=(const RawRedis&) = delete;

    // The reply as text: strings and statuses as they are, integers in
    // decimal, "(nil)", "(error) ...", arrays as their element count.
    std::string cmd(const std::vector<std::string>& args) {
        std::vector<const char*> argv;
        std::vector<std::size_t> lens;
        for (const auto& a : args) {
            argv.push_back(a.data());
            lens.push_back(a.size());
        }
        auto* r =
            static_cast<redisReply*>(redisCommandArgv(c_, static_cast<int>(args.size()), argv.data(), lens.data()));
        REQUIRE(r);
        std::string out;
        switch (r->type) {
            case REDIS_REPLY_STRING:
            case REDIS_REPLY_STATUS: out.assign(r->str, r->len); break;
            case REDIS_REPLY_INTEGER: out = std::to_string(r->integer); break;
            case REDIS_REPLY_NIL: out = "(nil)"; break;
            case REDIS_REPLY_ERROR: out = "(error) " + std::string(r->str, r->len); break;
            case REDIS_REPLY_ARRAY: out = std::to_string(r->elements); break;
        }
        freeReplyObject(r);
        return out;
    }

    std::vector<std::string> keys(const std::string& pattern) {
        const char* argv[] = {"KEYS", pattern.c_str()};
        auto* r = static_cast<redisReply*>(redisCommandArgv(c_, 2, argv, nullptr));
        REQUIRE(r);
        REQUIRE(r->type == REDIS_REPLY_ARRAY);
        std::vector<std::string> out;
        for (std::size_t i = 0; i < r->elements; ++i) out.emplace_back(r->element[i]->str, r->element[i]->len);
        freeReplyObject(r);
        std::sort(out.begin(), out.end());
        return out;
    }

private:
    redisContext* c_ = nullptr;
};

// A redis-server of the test's own (to stop and restart), on a free port.
class OwnRedis {
public:
    OwnRedis() : port_(tdo_test::free_port()) {
        ::setenv("REDIS_PASSWORD", TDO_TEST_REDIS_PASSWORD, 1);
        ::setenv("REDIS_ACL_USER", TDO_TEST_REDIS_ACL_USER, 1);
        ::setenv("REDIS_ACL_PASSWORD", TDO_TEST_REDIS_ACL_PASSWORD, 1);
    }
    ~OwnRedis() { tdo_test::wait_for(tdo_test::spawn({TDO_TEST_REDIS_SCRIPT, "stop", dir_ / "redis"})); }
    OwnRedis(const OwnRedis&) = delete;
    OwnRedis& operator=(const OwnRedis&) = delete;

    void start() {
        REQUIRE(tdo_test::wait_for(
                    tdo_test::spawn({TDO_TEST_REDIS_SCRIPT, "start", dir_ / "redis", std::to_string(port_)})) == 0);
    }
    void stop() { REQUIRE(tdo_test::wait_for(tdo_test::spawn({TDO_TEST_REDIS_SCRIPT, "stop", dir_ / "redis"})) == 0); }
    std::string url() const {
        return std::string("redis://:") + TDO_TEST_REDIS_PASSWORD + "@127.0.0.1:" + std::to_string(port_) + "/0";
    }

private:
    tdo_test::TempDir dir_;
    int port_;
};

// Every log event of the process while it lives.
class LogCapture {
public:
    LogCapture() {
        set_log_callback(
            [this](LogLevel, std::string_view event, std::string_view json) {
                std::lock_guard<std::mutex> lock(mutex_);
                events_.emplace_back(std::string(event), std::string(json));
            },
            LogLevel::Debug);
    }
    ~LogCapture() { set_log_callback({}, LogLevel::Off); }
    LogCapture(const LogCapture&) = delete;
    LogCapture& operator=(const LogCapture&) = delete;

    int count(const std::string& event) const {
        std::lock_guard<std::mutex> lock(mutex_);
        int n = 0;
        for (const auto& e : events_) n += e.first == event;
        return n;
    }
    std::string first(const std::string& event) const {
        std::lock_guard<std::mutex> lock(mutex_);
        for (const auto& e : events_) {
            if (e.first == event) return e.second;
        }
        return "";
    }
    std::string all() const {
        std::lock_guard<std::mutex> lock(mutex_);
        std::string out;
        for (const auto& e : events_) out += e.second + "\n";
        return out;
    }

private:
    mutable std::mutex mutex_;
    std::vector<std::pair<std::string, std::string>> events_;
};

std::string writer_json(const std::string& dir, const std::string& url, const std::string& ns,
                        const std::string& extra = "") {
    return "{\"output_dir\":\"" + dir + "\",\"dedup_store\":\"redis\",\"redis_url\":\"" + url +
           "\",\"dedup_namespace\":\"" + ns + "\",\"log_level\":\"off\",\"flush_interval_ms\":50" + extra + "}";
}

std::unique_ptr<DedupStore> open_store(const std::string& url, std::chrono::milliseconds timeout = 2000ms,
                                       std::size_t pool = 8, const std::string& ns = "tdo-test") {
    RedisStoreOptions o;
    o.url = url;
    o.timeout = timeout;
    o.pool_size = pool;
    o.owner_key_prefix = ns + ":owner:";
    return make_redis_dedup_store(o);
}

Outcome generate(TrainingOutput& w, const std::string& narrative) {
    return w.generate(narrative, tdo_test::message_json("StepsRecord"), tdo_test::result_json());
}

// Generates fresh content until the store answers again (its claim and its
// commit, made by the time flush() returns, fail no more), for at most `limit`.
bool wait_until_deduplicating(TrainingOutput& w, const std::string& tag, std::chrono::seconds limit) {
    const auto deadline = Clock::now() + limit;
    for (int i = 0; Clock::now() < deadline; ++i) {
        const std::string text = tag + " " + std::to_string(i);
        const auto errors = w.stats().dedup_store_errors;
        if (generate(w, text) != Outcome::Written) return false;
        w.flush();
        if (w.stats().dedup_store_errors == errors) return true;
        std::this_thread::sleep_for(10ms);
    }
    return false;
}

// The outputs of every line in the JSONL files under each directory.
std::multiset<std::string> outputs_in(const std::vector<std::string>& dirs) {
    std::multiset<std::string> out;
    for (const auto& dir : dirs) {
        for (const auto& f : tdo_test::jsonl_files(dir)) {
            for (const auto& line : tdo_test::lines_of(tdo_test::read_file(dir + "/" + f))) {
                auto doc = tdo_test::parse(line);
                REQUIRE_FALSE(doc.HasParseError());
                out.insert(doc["output"].GetString());
            }
        }
    }
    return out;
}

std::uint64_t stat_of(const std::string& stats_json, const char* name) {
    auto doc = tdo_test::parse(stats_json);
    REQUIRE(doc.IsObject());
    REQUIRE(doc.HasMember(name));
    return doc[name].GetUint64();
}

}  // namespace

TEST_CASE("Redis: claims owned by spools, commits, expiry and batches like every store", "[integration][redis]") {
    tdo_test::TempDir dir;
    const std::string ns = unique_namespace();
    auto store = open_store(redis_url(), 2000ms, 8, ns);
    CHECK(std::string(store->kind()) == "redis");
    tdo_test::check_dedup_conformance(*store, ns, dir.path());
}

TEST_CASE("Redis: two writers see each other's owners and claims", "[integration][redis]") {
    tdo_test::TempDir dir;
    const std::string ns = unique_namespace();
    auto a = open_store(redis_url(), 2000ms, 8, ns);
    auto b = open_store(redis_url(), 2000ms, 8, ns);
    tdo_test::check_dedup_two_writers(*a, *b, ns, dir.path());
}

TEST_CASE("Redis: an owner whose liveness key expired loses its claims to a live one, atomically",
          "[integration][redis]") {
    tdo_test::TempDir dir;
    const std::string ns = unique_namespace();
    RedisStoreOptions o;
    o.url = redis_url();
    o.owner_key_prefix = ns + ":owner:";
    o.owner_ttl = 1s;  // the writer's minimum is 10 s; the store takes what it is given
    auto store = make_redis_dedup_store(o);
    CHECK(store->owner_ttl() == 1s);
    const auto a = tdo_test::make_owner(dir.path(), "a"), b = tdo_test::make_owner(dir.path(), "b");
    store->register_owner(a);
    store->register_owner(b);
    CHECK(store->claim(ns + ":x", a.id, 60s) == ClaimState::Claimed);
    CHECK(store->claim(ns + ":y", a.id, 60s) == ClaimState::Claimed);
    CHECK(store->claim(ns + ":x", b.id, 60s) == ClaimState::Held);
    // a's liveness runs out unrefreshed; b's is refreshed.
    RawRedis raw(redis_url());
    CHECK(raw.cmd({"GET", ns + ":owner:a"}) == a.spool_path);
    const auto deadline = Clock::now() + 5s;
    while (raw.cmd({"EXISTS", ns + ":owner:a"}) == "1" && Clock::now() < deadline) {
        store->refresh_owners({b});
        std::this_thread::sleep_for(100ms);
    }
    REQUIRE(raw.cmd({"EXISTS", ns + ":owner:a"}) == "0");
    store->refresh_owners({b});
    CHECK(store->claim_batch({ns + ":x", ns + ":y", ns + ":z"}, b.id, 60s) ==
          std::vector<ClaimState>{ClaimState::Claimed, ClaimState::Claimed, ClaimState::Claimed});
    CHECK(raw.cmd({"GET", ns + ":x"}) == b.id);
    // a comes back (it was only stalled): the claims are b's now.
    store->refresh_owners({a});
    CHECK(store->claim_batch({ns + ":x", ns + ":y"}, a.id, 60s) ==
          std::vector<ClaimState>{ClaimState::Held, ClaimState::Held});
    store->retire_owner(b.id);
    CHECK(raw.cmd({"EXISTS", ns + ":owner:b"}) == "0");
}

TEST_CASE("Redis: batch objects an owner may be writing are kept until cleared, and settled before a take-over",
          "[integration][redis]") {
    tdo_test::TempDir dir;
    for (const bool acl : {false, true}) {
        INFO((acl ? "an ACL user" : "the default user"));
        const std::string ns = acl ? unique_namespace("tdo-acl") : unique_namespace();
        RedisStoreOptions o;
        o.url = acl ? acl_url() : redis_url();
        o.owner_key_prefix = ns + ":owner:";
        o.owner_ttl = 1s;
        auto store = make_redis_dedup_store(o);
        RawRedis raw(redis_url());
        const auto a = tdo_test::make_owner(dir.path(), acl ? "acl-a" : "a");
        const auto b = tdo_test::make_owner(dir.path(), acl ? "acl-b" : "b");
        store->register_owner(a);
        store->register_owner(b);
        CHECK(store->inflight(a.id).empty());
        store->record_inflight(a.id, {"m.batches/1.jsonl", 120, {ns + ":k1", ns + ":k2"}}, 600s);
        store->record_inflight(a.id, {"m.batches/2.jsonl", 60, {ns + ":k3"}}, 600s);
        store->record_inflight(a.id, {"m.batches/1.jsonl", 120, {ns + ":k1", ns + ":k2"}}, 600s);  // a retry
        const std::string value = raw.cmd({"GET", ns + ":owner:" + a.id + ":batches"});
        CHECK(std::count(value.begin(), value.end(), '\n') == 2);  // the retry added nothing
        auto in = store->inflight(a.id);
        REQUIRE(in.size() == 2);
        CHECK(in[0].object_key == "m.batches/1.jsonl");
        CHECK(in[0].bytes == 120);
        CHECK(in[0].keys == std::vector<std::string>{ns + ":k1", ns + ":k2"});
        CHECK(in[1].object_key == "m.batches/2.jsonl");
        CHECK(in[1].keys == std::vector<std::string>{ns + ":k3"});
        const int ttl = std::stoi(raw.cmd({"TTL", ns + ":owner:" + a.id + ":batches"}));
        CHECK(ttl > 500);
        CHECK(ttl <= 600);
        store->clear_inflight(a.id, {"m.batches/1.jsonl"}, 600s);
        in = store->inflight(a.id);
        REQUIRE(in.size() == 1);
        CHECK(in[0].object_key == "m.batches/2.jsonl");
        CHECK(store->inflight(b.id).empty());

        // a's claims, a's liveness lapsed, a batch of a's still in flight:
        // nothing is taken over, and the store names a to be settled first.
        CHECK(store->claim_batch({ns + ":k3", ns + ":k4"}, a.id, 60s) ==
              std::vector<ClaimState>{ClaimState::Claimed, ClaimState::Claimed});
        const auto deadline = Clock::now() + 5s;
        while (raw.cmd({"EXISTS", ns + ":owner:" + a.id}) == "1" && Clock::now() < deadline) {
            store->refresh_owners({b});
            std::this_thread::sleep_for(100ms);
        }
        REQUIRE(raw.cmd({"EXISTS", ns + ":owner:" + a.id}) == "0");
        store->refresh_owners({b});
        try {
            store->claim_batch({ns + ":k3", ns + ":k4", ns + ":k5"}, b.id, 60s);
            FAIL("expected OwnersToSettle");
        } catch (const OwnersToSettle& e) {
            CHECK(e.owners() == std::vector<std::string>{a.id});
            CHECK(e.code() == ErrorCode::DedupStore);
        }
        CHECK(raw.cmd({"GET", ns + ":k3"}) == a.id);
        CHECK(raw.cmd({"GET", ns + ":k4"}) == a.id);
        CHECK_THROWS_AS(store->claim(ns + ":k3", b.id, 60s), OwnersToSettle);
        // Settled (its records cleared): taken over.
        store->clear_inflight(a.id, {"m.batches/2.jsonl"}, 600s);
        CHECK(store->inflight(a.id).empty());
        CHECK(raw.cmd({"EXISTS", ns + ":owner:" + a.id + ":batches"}) == "0");
        CHECK(store->claim_batch({ns + ":k3", ns + ":k4"}, b.id, 60s) ==
              std::vector<ClaimState>{ClaimState::Claimed, ClaimState::Claimed});
        CHECK(raw.cmd({"GET", ns + ":k3"}) == b.id);
    }
}

TEST_CASE("Redis: what the store keeps: owners, committed keys, TTLs", "[integration][redis]") {
    const std::string ns = unique_namespace();
    auto store = open_store(redis_url(), 2000ms, 8, ns);
    RawRedis raw(redis_url());
    tdo_test::TempDir dir;
    const auto me = tdo_test::make_owner(dir.path(), "me");
    store->register_owner(me);
    int ttl = std::stoi(raw.cmd({"TTL", ns + ":owner:me"}));
    CHECK(ttl > 100);
    CHECK(ttl <= 120);

    CHECK(store->claim(ns + ":a", me.id, 60s) == ClaimState::Claimed);
    CHECK(raw.cmd({"GET", ns + ":a"}) == me.id);
    ttl = std::stoi(raw.cmd({"TTL", ns + ":a"}));
    CHECK(ttl > 50);
    CHECK(ttl <= 60);

    store->commit({ns + ":a"}, 0s);
    CHECK(raw.cmd({"GET", ns + ":a"}) == "1");
    CHECK(raw.cmd({"TTL", ns + ":a"}) == "-1");  // permanent
    store->commit({ns + ":b"}, 30s);
    ttl = std::stoi(raw.cmd({"TTL", ns + ":b"}));
    CHECK(ttl > 0);
    CHECK(ttl <= 30);

    // The writer's keys are {dedup_namespace}:{sha256 hex}, committed with
    // dedup_ttl_seconds; its spool's liveness key goes once the spool is.
    tdo_test::TempDir out;
    const std::string wns = unique_namespace();
    {
        TrainingOutput w(Config::from_json(writer_json(out.path(), redis_url(), wns, ",\"dedup_ttl_seconds\":3600")));
        CHECK(generate(w, "Steps were steady all week.") == Outcome::Written);
        CHECK(generate(w, "Steps were steady all week.") == Outcome::Duplicate);
        w.flush();
        CHECK(w.stats().dedup_store_errors == 0);
    }
    auto keys = raw.keys(wns + ":*");
    REQUIRE(keys.size() == 1);  // no owner key left
    CHECK(keys[0].size() == wns.size() + 1 + 64);
    CHECK(raw.cmd({"GET", keys[0]}) == "1");
    ttl = std::stoi(raw.cmd({"TTL", keys[0]}));
    CHECK(ttl > 3500);
    CHECK(ttl <= 3600);
}

TEST_CASE("Redis: threads claiming the same keys: exactly one wins each", "[integration][redis][concurrency]") {
    tdo_test::TempDir dir;
    const std::string ns = unique_namespace(), ns2 = unique_namespace();
    auto store = open_store(redis_url(), 2000ms, 8, ns);
    tdo_test::check_dedup_threads(*store, ns, dir.path(), 8, 300);
    // More threads than connections: they wait their turn, within the timeout.
    auto small = open_store(redis_url(), 2000ms, 2, ns2);
    tdo_test::check_dedup_threads(*small, ns2, dir.path(), 16, 200);
}

TEST_CASE("Redis: duplicates across two processes with their own output directories",
          "[integration][redis][concurrency]") {
    tdo_test::TempDir dir;
    const std::string ns = unique_namespace();
    constexpr int kCount = 300, kSharedEvery = 3;
    std::vector<pid_t> pids;
    for (int p = 0; p < 2; ++p) {
        const std::string out = dir / ("out" + std::to_string(p));
        pids.push_back(tdo_test::spawn({TDO_TEST_WRITER, writer_json(out, redis_url(), ns), "w" + std::to_string(p),
                                        std::to_string(kCount), std::to_string(kSharedEvery), "-", "1",
                                        dir / ("stats" + std::to_string(p))}));
        REQUIRE(pids.back() > 0);
    }
    for (pid_t pid : pids) CHECK(tdo_test::wait_for(pid) == 0);
    const int shared = kCount / kSharedEvery;
    const int own = 2 * (kCount - shared);
    auto outputs = outputs_in({dir / "out0", dir / "out1"});
    CHECK(outputs.size() == static_cast<std::size_t>(shared + own));
    CHECK(std::set<std::string>(outputs.begin(), outputs.end()).size() == outputs.size());
    std::uint64_t written = 0, duplicates = 0, errors = 0, voided = 0;
    for (int p = 0; p < 2; ++p) {
        const std::string stats = tdo_test::read_file(dir / ("stats" + std::to_string(p)));
        written += stat_of(stats, "written");
        duplicates += stat_of(stats, "duplicates");
        errors += stat_of(stats, "dedup_store_errors");
        voided += stat_of(stats, "lines_voided");
    }
    // Each call is answered once; a shared example the other process had
    // accepted in the same instant is answered WRITTEN and its line voided
    // (its claim found the other's): what was written and not voided is
    // exactly what is in the objects.
    CHECK(written + duplicates == static_cast<std::uint64_t>(shared + own + shared));
    CHECK(written - voided == static_cast<std::uint64_t>(shared + own));
    CHECK(errors == 0);  // deduplicated by Redis, not written by failing open
}

TEST_CASE("Redis: 2 processes x 8 threads racing on the same content: exactly one written",
          "[integration][redis][concurrency]") {
    tdo_test::TempDir dir;
    const std::string ns = unique_namespace();
    constexpr int kCount = 200, kThreads = 8;
    std::vector<pid_t> pids;
    for (int p = 0; p < 2; ++p) {
        const std::string out = dir / ("out" + std::to_string(p));
        pids.push_back(tdo_test::spawn({TDO_TEST_WRITER, writer_json(out, redis_url(), ns), "w" + std::to_string(p),
                                        std::to_string(kCount), "1", "-", std::to_string(kThreads),
                                        dir / ("stats" + std::to_string(p))}));
        REQUIRE(pids.back() > 0);
    }
    for (pid_t pid : pids) CHECK(tdo_test::wait_for(pid) == 0);
    auto outputs = outputs_in({dir / "out0", dir / "out1"});
    CHECK(outputs.size() == kCount);
    CHECK(std::set<std::string>(outputs.begin(), outputs.end()).size() == kCount);
    std::uint64_t written = 0, duplicates = 0, errors = 0, voided = 0;
    for (int p = 0; p < 2; ++p) {
        const std::string stats = tdo_test::read_file(dir / ("stats" + std::to_string(p)));
        written += stat_of(stats, "written");
        duplicates += stat_of(stats, "duplicates");
        errors += stat_of(stats, "dedup_store_errors");
        voided += stat_of(stats, "lines_voided");
    }
    // Within a process the racing threads are told DUPLICATE at once; across
    // the two, the loser's line is voided when its claim is made.
    CHECK(written + duplicates == 2 * kThreads * kCount);
    CHECK(written - voided == kCount);
    CHECK(written <= 2 * kCount);
    CHECK(errors == 0);
}

TEST_CASE("Redis: restarted mid-run: fail open during the gap, used again after", "[integration][redis]") {
    OwnRedis redis;
    redis.start();
    tdo_test::TempDir dir;
    const std::string ns = unique_namespace();
    LogCapture logs;
    TrainingOutput w(Config::from_json(writer_json(dir.path(), redis.url(), ns, ",\"redis_timeout_ms\":300")));
    CHECK(generate(w, "before the restart") == Outcome::Written);
    CHECK(generate(w, "before the restart") == Outcome::Duplicate);
    w.flush();
    CHECK(w.stats().dedup_store_errors == 0);

    redis.stop();
    // The gap: every example is written (fail open), no call waits past the
    // timeout. The first one's claim (made by the claimer) meets the outage;
    // from then on nothing is deduplicated.
    Clock::duration slowest{};
    for (int i = 0; i < 50; ++i) {
        auto t0 = Clock::now();
        CHECK(generate(w, "during the gap " + std::to_string(i % 25)) == Outcome::Written);
        slowest = std::max(slowest, Clock::now() - t0);
        if (i == 0) w.flush();
    }
    CHECK(slowest < 300ms + 1s);  // the margin is for a busy machine under sanitizers
    CHECK(w.stats().dedup_store_errors >= 2);
    CHECK(logs.count("training_output_dedup_store_unavailable") == 1);  // once per outage, not per call
    CHECK(logs.count("training_output_error") == 1);
    CHECK_THAT(logs.first("training_output_dedup_store_unavailable"), Catch::Contains("redis://:***@127.0.0.1"));

    redis.start();  // empty: no persistence
    REQUIRE(wait_until_deduplicating(w, "after the restart", 20s));
    CHECK(logs.count("training_output_dedup_store_reconnected") == 1);
    CHECK(logs.count("training_output_dedup_recovered") == 1);
    CHECK(logs.count("training_output_dedup_store_unavailable") == 1);
    const auto errors = w.stats().dedup_store_errors;
    CHECK(generate(w, "after recovery") == Outcome::Written);
    CHECK(generate(w, "after recovery") == Outcome::Duplicate);
    w.close();
    CHECK(w.stats().dedup_store_errors == errors);
    CHECK_THAT(logs.all(), !Catch::Contains(TDO_TEST_REDIS_PASSWORD));

    auto outputs = outputs_in({dir.path()});
    CHECK(outputs.count("before the restart") == 1);
    for (int i = 0; i < 25; ++i) CHECK(outputs.count("during the gap " + std::to_string(i)) == 2);  // no dedup
    CHECK(outputs.count("after recovery") == 1);
    RawRedis raw(redis.url());
    CHECK(raw.keys(ns + ":*").size() >= 2);  // the restarted server is in use
}

TEST_CASE("Redis: down at open: the writer opens, fails open, and uses Redis once it is up", "[integration][redis]") {
    OwnRedis redis;  // not started yet
    tdo_test::TempDir dir;
    const std::string ns = unique_namespace();
    LogCapture logs;
    tdo_writer* w = nullptr;
    auto t0 = Clock::now();
    REQUIRE(tdo_writer_open(&w, writer_json(dir.path(), redis.url(), ns, ",\"redis_timeout_ms\":300").c_str()) ==
            TDO_OK);
    CHECK(Clock::now() - t0 < 2s);
    CHECK(logs.count("training_output_dedup_store_unavailable") == 1);
    const std::string warning = logs.first("training_output_dedup_store_unavailable");
    CHECK_THAT(warning, Catch::Contains("\"when\":\"open\"") && Catch::Contains("\"level\":\"warning\""));
    CHECK_THAT(warning, !Catch::Contains(TDO_TEST_REDIS_PASSWORD));

    const std::string msg = tdo_test::message_json("SleepSessionRecord"), res = tdo_test::result_json();
    CHECK(generate_training_output(w, "Slept well.", msg.c_str(), res.c_str()) == TDO_WRITTEN);
    CHECK(generate_training_output(w, "Slept well.", msg.c_str(), res.c_str()) == TDO_WRITTEN);  // no dedup yet
    char* stats = nullptr;
    REQUIRE(tdo_writer_stats(w, &stats) == TDO_OK);
    CHECK(stat_of(stats, "dedup_store_errors") >= 1);  // the two claims may be one store call
    tdo_free(stats);

    redis.start();
    const auto deadline = Clock::now() + 20s;
    bool deduplicating = false;
    for (int i = 0; !deduplicating && Clock::now() < deadline; ++i) {
        const std::string text = "Slept well, night " + std::to_string(i) + ".";
        deduplicating = generate_training_output(w, text.c_str(), msg.c_str(), res.c_str()) == TDO_WRITTEN &&
                        generate_training_output(w, text.c_str(), msg.c_str(), res.c_str()) == TDO_DUPLICATE;
        if (!deduplicating) std::this_thread::sleep_for(10ms);
    }
    CHECK(deduplicating);
    CHECK(logs.count("training_output_dedup_store_reconnected") == 1);
    CHECK(tdo_writer_flush(w) == TDO_OK);
    tdo_writer_close(w);
}

TEST_CASE("Redis: a wrong password is an error at open that never shows the password", "[integration][redis]") {
    const std::string port = std::to_string(redis_port());
    const std::string urls[] = {
        "redis://:hunter2-wrong@127.0.0.1:" + port + "/0",             // default user
        acl_url("hunter2-wrong"),                                      // ACL user
        "redis://nobody-here:hunter2-wrong@127.0.0.1:" + port + "/0",  // unknown user
        "redis://127.0.0.1:" + port + "/0",                            // none, but one is required
    };
    for (const auto& url : urls) {
        INFO(url);
        tdo_test::TempDir dir;
        LogCapture logs;
        tdo_writer* w = nullptr;
        CHECK(tdo_writer_open(&w, writer_json(dir.path(), url, unique_namespace()).c_str()) == TDO_E_DEDUP_STORE);
        CHECK(w == nullptr);
        const std::string error = tdo_last_error();
        CHECK_THAT(error, Catch::Contains("authentication failed"));
        CHECK_THAT(error, Catch::Contains("127.0.0.1:" + port));
        CHECK_THAT(error, !Catch::Contains("hunter2"));
        CHECK_THAT(logs.all(), !Catch::Contains("hunter2"));
        tdo_writer_close(w);
    }
    // The C++ API: the same, as Error(DedupStore).
    try {
        open_store(acl_url("hunter2-wrong"));
        FAIL("expected an error");
    } catch (const Error& e) {
        CHECK(e.code() == ErrorCode::DedupStore);
        CHECK_THAT(e.what(), Catch::Contains("authentication failed for user " TDO_TEST_REDIS_ACL_USER));
        CHECK_THAT(e.what(), !Catch::Contains("hunter2"));
    }
    // A database the server does not have is refused at open too.
    try {
        open_store("redis://:" TDO_TEST_REDIS_PASSWORD "@127.0.0.1:" + port + "/999");
        FAIL("expected an error");
    } catch (const Error& e) {
        CHECK(e.code() == ErrorCode::DedupStore);
        CHECK_THAT(e.what(), Catch::Contains("database 999"));
        CHECK_THAT(e.what(), !Catch::Contains(TDO_TEST_REDIS_PASSWORD));
    }
}

TEST_CASE("Redis: an ACL user allowed only what the store needs", "[integration][redis]") {
    // The fixture's user: -@all +ping +select +set +get +del +exists +eval on keys tdo-acl*.
    tdo_test::TempDir owners;
    const std::string ns = unique_namespace("tdo-acl");
    auto store = open_store(acl_url(), 2000ms, 8, ns);
    tdo_test::check_dedup_conformance(*store, ns, owners.path());
    // A key outside its patterns: the server's answer is an error for that
    // call, not an outage.
    try {
        store->claim("elsewhere:abc", ns + "-a", 60s);
        FAIL("expected an error");
    } catch (const Error& e) {
        CHECK(e.code() == ErrorCode::DedupStore);
        CHECK_THAT(e.what(), Catch::Contains("NOPERM"));
    }
    CHECK(store->claim(ns + ":after", ns + "-a", 60s) == ClaimState::Claimed);

    tdo_test::TempDir dir;
    TrainingOutput w(Config::from_json(writer_json(dir.path(), acl_url(), unique_namespace("tdo-acl"))));
    CHECK(generate(w, "Heart rate recovered quickly.") == Outcome::Written);
    CHECK(generate(w, "Heart rate recovered quickly.") == Outcome::Duplicate);
    w.close();
    CHECK(w.stats().dedup_store_errors == 0);
    CHECK(w.stats().lines_appended == 1);
}

TEST_CASE("Redis: a maxmemory-policy that can evict the store's keys is warned of at open", "[integration][redis]") {
    OwnRedis redis;  // a server of the test's own: its configuration changes
    redis.start();
    RawRedis admin(redis.url());
    struct Case {
        const char* policy;
        const char* maxmemory;
        const char* level;  // of training_output_redis_eviction_policy; "" = none
    } cases[] = {{"noeviction", "100mb", ""},
                 {"volatile-lru", "100mb", "warning"},
                 {"allkeys-lfu", "100mb", "warning"},
                 {"volatile-ttl", "0", "info"}};
    for (const auto& c : cases) {
        INFO(c.policy << ", maxmemory " << c.maxmemory);
        REQUIRE(admin.cmd({"CONFIG", "SET", "maxmemory-policy", c.policy}) == "OK");
        REQUIRE(admin.cmd({"CONFIG", "SET", "maxmemory", c.maxmemory}) == "OK");
        LogCapture logs;
        tdo_test::TempDir dir;
        TrainingOutput w(Config::from_json(writer_json(dir.path(), redis.url(), unique_namespace())));
        const std::string event = logs.first("training_output_redis_eviction_policy");
        if (*c.level == 0) {
            CHECK(logs.count("training_output_redis_eviction_policy") == 0);
        } else {
            CHECK(logs.count("training_output_redis_eviction_policy") == 1);
            CHECK_THAT(event, Catch::Contains(std::string("\"level\":\"") + c.level + "\"") &&
                                  Catch::Contains(std::string("\"maxmemory_policy\":\"") + c.policy + "\"") &&
                                  Catch::Contains("noeviction"));
            CHECK_THAT(event, !Catch::Contains(TDO_TEST_REDIS_PASSWORD));
        }
        CHECK(generate(w, std::string("Warned of ") + c.policy + ".") == Outcome::Written);
        w.close();
    }
    // A user that may not read the configuration: said at info level, the writer works.
    LogCapture logs;
    tdo_test::TempDir dir;
    TrainingOutput w(Config::from_json(writer_json(dir.path(), acl_url(), unique_namespace("tdo-acl"))));
    CHECK_THAT(logs.first("training_output_redis_eviction_policy"),
               Catch::Contains("\"level\":\"info\"") && Catch::Contains("cannot read maxmemory-policy") &&
                   Catch::Contains("NOPERM"));
    CHECK(generate(w, "Read by a user without CONFIG.") == Outcome::Written);
    w.close();
    CHECK(w.stats().dedup_store_errors == 0);
}

TEST_CASE("Redis: a unix socket and a database number", "[integration][redis]") {
    tdo_test::TempDir owners;
    const std::string ns = unique_namespace();
    auto store = open_store(unix_url(3), 2000ms, 8, ns);
    tdo_test::check_dedup_conformance(*store, ns, owners.path());
    CHECK(store->claim(ns + ":db3", ns + "-a", 60s) == ClaimState::Claimed);
    RawRedis db3(unix_url(3)), db0(redis_url());
    CHECK(db3.cmd({"EXISTS", ns + ":db3"}) == "1");
    CHECK(db0.cmd({"EXISTS", ns + ":db3"}) == "0");
    auto tcp_db3 = open_store(redis_url().substr(0, redis_url().rfind('/')) + "/3", 2000ms, 8, ns);
    CHECK(tcp_db3->claim(ns + ":db3", ns + "-b", 60s) == ClaimState::Held);  // the same database over TCP
}

TEST_CASE("Redis: a server that never answers: no call waits past the timeout", "[integration][redis]") {
    // A socket that listens but never reads: connections complete, requests go unanswered.
    int port = 0;
    const int fd = tdo_test::bound_loopback_socket(&port);
    REQUIRE(::listen(fd, 64) == 0);
    const std::string url = "redis://:hunter2-silent@127.0.0.1:" + std::to_string(port) + "/0";

    LogCapture logs;
    tdo_test::TempDir dir;
    auto t0 = Clock::now();
    TrainingOutput w(Config::from_json(writer_json(dir.path(), url, unique_namespace(), ",\"redis_timeout_ms\":200")));
    const auto open_time = Clock::now() - t0;
    CHECK(open_time >= 150ms);      // it did wait for an answer ...
    CHECK(open_time < 200ms + 1s);  // ... for the timeout only (the margin: a busy machine)
    CHECK_THAT(logs.first("training_output_dedup_store_unavailable"), Catch::Contains("no answer within 200 ms"));

    Clock::duration slowest{};
    const auto start = Clock::now();
    for (int i = 0; i < 200; ++i) {
        auto t = Clock::now();
        CHECK(generate(w, "Quiet night " + std::to_string(i % 10)) == Outcome::Written);
        slowest = std::max(slowest, Clock::now() - t);
    }
    CHECK(slowest < 200ms + 1s);
    CHECK(Clock::now() - start < 10s);  // most calls fail at once; a few try to reconnect
    CHECK(logs.count("training_output_dedup_store_unavailable") == 1);
    CHECK_THAT(logs.all(), !Catch::Contains("hunter2"));
    w.close();
    ::close(fd);
}

TEST_CASE("Redis: a writer whose liveness lapsed delivers nothing another writer took over", "[integration][redis]") {
    // Writer A reaches Redis through a proxy the test cuts (a partition: A
    // alone loses Redis); its line waits, undeliverable, in its spool.
    // Once A's liveness key expired, writer B takes the content over and
    // delivers it. A must not deliver it too: not while it cannot reach
    // Redis, and not after, once it confirms its claims.
    tdo_test::TcpProxy proxy(redis_port());
    const std::string ns = unique_namespace();
    tdo_test::TempDir x, y;
    const std::string through_proxy =
        std::string("redis://:") + TDO_TEST_REDIS_PASSWORD + "@127.0.0.1:" + std::to_string(proxy.port()) + "/0";
    const std::string blocker = x / "training/physical_activity";
    tdo_test::write_file(blocker, "in the way\n");  // A's monthly file cannot be created yet
    TrainingOutput a(Config::from_json(
        writer_json(x.path(), through_proxy, ns,
                    ",\"dedup_owner_ttl_seconds\":10,\"flush_timeout_ms\":6000,\"redis_timeout_ms\":300")));
    CHECK(generate(a, "Claimed by A, delivered once.") == Outcome::Written);
    RawRedis raw(redis_url());
    const auto owners = raw.keys(ns + ":owner:*");
    REQUIRE(owners.size() == 1);

    proxy.cut();
    const auto deadline = Clock::now() + 15s;
    while (raw.cmd({"EXISTS", owners[0]}) == "1" && Clock::now() < deadline) std::this_thread::sleep_for(100ms);
    REQUIRE(raw.cmd({"EXISTS", owners[0]}) == "0");

    TrainingOutput b(Config::from_json(writer_json(y.path(), redis_url(), ns)));
    CHECK(generate(b, "Claimed by A, delivered once.") == Outcome::Written);  // taken over
    b.flush();
    CHECK(outputs_in({y.path()}).count("Claimed by A, delivered once.") == 1);

    // A's way to its file is clear, but its liveness lapsed: it waits.
    std::filesystem::remove(blocker);
    try {
        a.flush();
        FAIL("expected the flush to wait for Redis");
    } catch (const Error& e) {
        CHECK(e.code() == ErrorCode::Timeout);
        CHECK_THAT(e.what(), Catch::Contains("liveness"));
    }
    CHECK(outputs_in({x.path()}).count("Claimed by A, delivered once.") == 0);

    // Redis is back for A: it refreshes, confirms, and voids its line.
    proxy.restore();
    a.flush();
    CHECK(a.stats().lines_voided == 1);
    a.close();
    b.close();
    auto outputs = outputs_in({x.path(), y.path()});
    CHECK(outputs.count("Claimed by A, delivered once.") == 1);
}
