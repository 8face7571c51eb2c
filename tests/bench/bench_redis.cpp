// Redis dedup store benchmark against a running server (scripts/bench.sh redis
// starts one on loopback):
//   1. claims/s from one thread, one claim() per round trip (what a writer's
//      generate() does), with latency percentiles;
//   2. claims/s pipelined through claim_batch(), for several batch sizes;
//   3. claims/s from several threads sharing one store (its connection pool);
//   4. commits/s (a flushed batch's commit, pipelined) and Redis memory per
//      committed key.
// Keys look like the writer's: "{namespace}:{64 hex digits}".
//
// Environment: TDO_BENCH_REDIS_URL (redis://127.0.0.1:6379/0). Arguments:
// [claims per measurement] (default 100000) [threads for part 3] (default 4).
#include <hiredis/hiredis.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "config/redis_url.hpp"
#include "training_output/sys/dedup_store.hpp"

namespace to = training_output;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

namespace {

std::string env(const char* name, const char* fallback) {
    const char* v = std::getenv(name);
    return v && *v ? v : fallback;
}

// `count` distinct keys shaped like the writer's.
std::vector<std::string> make_keys(const std::string& ns, std::size_t count) {
    std::mt19937_64 gen(std::random_device{}());
    std::vector<std::string> keys;
    keys.reserve(count);
    char hex[65];
    for (std::size_t i = 0; i < count; ++i) {
        for (int w = 0; w < 4; ++w) std::snprintf(hex + 16 * w, 17, "%016llx", static_cast<unsigned long long>(gen()));
        keys.push_back(ns + ":" + hex);
    }
    return keys;
}

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// used_memory from INFO, through a plain hiredis connection.
long long used_memory(const std::string& url_text) {
    const to::RedisUrl u = to::parse_redis_url(url_text);
    redisContext* c = u.unix_socket ? redisConnectUnix(u.path.c_str()) : redisConnect(u.host.c_str(), u.port);
    if (!c || c->err) {
        redisFree(c);
        return -1;
    }
    if (!u.password.empty()) {
        freeReplyObject(u.user.empty() ? redisCommand(c, "AUTH %s", u.password.c_str())
                                       : redisCommand(c, "AUTH %s %s", u.user.c_str(), u.password.c_str()));
    }
    auto* r = static_cast<redisReply*>(redisCommand(c, "INFO memory"));
    long long bytes = -1;
    if (r && r->type == REDIS_REPLY_STRING) {
        std::string info(r->str, r->len);
        auto pos = info.find("used_memory:");
        if (pos != std::string::npos) bytes = std::atoll(info.c_str() + pos + 12);
    }
    freeReplyObject(r);
    redisFree(c);
    return bytes;
}

std::unique_ptr<to::DedupStore> open(const std::string& url, std::size_t pool = 8) {
    to::RedisStoreOptions o;
    o.url = url;
    o.timeout = 5000ms;  // measure the server, not the fail-open path
    o.pool_size = pool;
    return to::make_redis_dedup_store(o);
}

}  // namespace

int main(int argc, char** argv) {
    const std::size_t n = argc > 1 ? static_cast<std::size_t>(std::atoll(argv[1])) : 100000;
    const int threads = argc > 2 ? std::atoi(argv[2]) : 4;
    const std::string url = env("TDO_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0");
    const std::string run = "bench-" + std::to_string(std::random_device{}() % 1000000);
    auto store = open(url);
    // Claims are owned by a spool's id, as a writer's are.
    const std::string owner = run + "-owner";
    store->register_owner(to::OwnerRecord{owner, "/tmp/" + run});
    auto claimed = [](to::ClaimState s) { return s == to::ClaimState::Claimed ? 1u : 0u; };
    int failures = 0;

    std::printf("Redis dedup store at %s, %zu claims per measurement, keys of %zu bytes\n",
                to::parse_redis_url(url).redacted().c_str(), n, make_keys(run + "-single", 1).front().size());

    // 1. One claim per round trip.
    {
        auto keys = make_keys(run + "-single", n);
        std::vector<double> latencies;
        latencies.reserve(n);
        const auto start = Clock::now();
        std::size_t won = 0;
        for (const auto& k : keys) {
            const auto t = Clock::now();
            won += claimed(store->claim(k, owner, 86400s));
            latencies.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t).count());
        }
        const double s = seconds_since(start);
        std::sort(latencies.begin(), latencies.end());
        auto pct = [&](double p) { return latencies[static_cast<std::size_t>(p * (latencies.size() - 1))]; };
        std::printf("  single-threaded claim():          %9.0f claims/s   (p50 %.0f us, p99 %.0f us, max %.0f us)\n",
                    double(n) / s, pct(0.50), pct(0.99), latencies.back());
        failures += won != n;
    }

    // 2. Pipelined batches.
    for (std::size_t batch : {10, 100, 1000}) {
        auto keys = make_keys(run + "-batch" + std::to_string(batch), n);
        const auto start = Clock::now();
        std::size_t won = 0;
        for (std::size_t i = 0; i < n; i += batch) {
            std::vector<std::string> part(keys.begin() + static_cast<std::ptrdiff_t>(i),
                                          keys.begin() + static_cast<std::ptrdiff_t>(std::min(n, i + batch)));
            for (auto s : store->claim_batch(part, owner, 86400s)) won += claimed(s);
        }
        const double s = seconds_since(start);
        std::printf("  claim_batch() of %4zu, pipelined:  %9.0f claims/s\n", batch, double(n) / s);
        failures += won != n;
    }

    // 3. Threads sharing one store.
    {
        auto keys = make_keys(run + "-threads", n);
        auto shared = open(url, static_cast<std::size_t>(threads));
        std::vector<std::thread> pool;
        std::vector<std::size_t> won(static_cast<std::size_t>(threads));
        const auto start = Clock::now();
        for (int t = 0; t < threads; ++t) {
            pool.emplace_back([&, t] {
                for (std::size_t i = static_cast<std::size_t>(t); i < n; i += static_cast<std::size_t>(threads)) {
                    won[static_cast<std::size_t>(t)] += claimed(shared->claim(keys[i], owner, 86400s));
                }
            });
        }
        for (auto& t : pool) t.join();
        const double s = seconds_since(start);
        std::size_t total = 0;
        for (auto w : won) total += w;
        std::printf("  %d threads, claim() each:          %9.0f claims/s\n", threads, double(n) / s);
        failures += total != n;
    }

    // 4. Commits of flushed batches, and memory per committed key.
    for (auto ttl : {0s, 2592000s}) {
        auto keys = make_keys(run + "-commit" + std::to_string(ttl.count()), n);
        const long long before = used_memory(url);
        const auto start = Clock::now();
        for (std::size_t i = 0; i < n; i += 1000) {
            std::vector<std::string> part(keys.begin() + static_cast<std::ptrdiff_t>(i),
                                          keys.begin() + static_cast<std::ptrdiff_t>(std::min(n, i + 1000)));
            store->commit(part, ttl);
        }
        const double s = seconds_since(start);
        const long long after = used_memory(url);
        std::printf("  commit() of 1000, pipelined:       %9.0f commits/s, %4.0f bytes of Redis memory per key (%s)\n",
                    double(n) / s, before >= 0 && after >= 0 ? double(after - before) / double(n) : -1.0,
                    ttl.count() ? "dedup_ttl_seconds 30 days" : "permanent");
    }
    if (failures) std::fprintf(stderr, "some claims of fresh keys were not won\n");
    return failures ? 1 : 0;
}
