// What every DedupStore must do; run against the memory and SQLite stores
// (unit tests) and Redis (integration tests). Keys are made under a
// namespace, so that a shared server needs no cleaning between tests.
#pragma once

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <string>
#include <thread>
#include <vector>

#include "training_output/dedup_store.hpp"

namespace tdo_test {

// Claim, commit, release, expiry, batches: one store.
inline void check_dedup_conformance(training_output::DedupStore& store, const std::string& ns) {
    using namespace std::chrono_literals;
    const auto k = [&](const char* name) { return ns + ":" + name; };

    CHECK(store.claim(k("a"), 60s));
    CHECK_FALSE(store.claim(k("a"), 60s));  // claimed by someone (us): duplicate
    store.commit({k("a")}, 0s);
    CHECK_FALSE(store.claim(k("a"), 60s));  // committed
    store.release(k("a"));                  // a committed key is never released
    CHECK_FALSE(store.claim(k("a"), 60s));

    CHECK(store.claim(k("b"), 60s));
    store.release(k("b"));
    CHECK(store.claim(k("b"), 60s));  // released: claimable again
    store.release(k("never-claimed"));  // nothing to do, no error

    // A claim with no time left has expired: the content is not blocked forever.
    CHECK(store.claim(k("c"), 0s));
    CHECK(store.claim(k("c"), 60s));
    CHECK_FALSE(store.claim(k("c"), 60s));
    CHECK_FALSE(store.claim(k("c"), 0s));  // ... but a live claim still counts

    // Committed without a claim, and with a TTL.
    store.commit({k("d")}, 0s);
    CHECK_FALSE(store.claim(k("d"), 60s));
    CHECK(store.claim(k("e"), 60s));
    store.commit({k("e"), k("f")}, 1s);
    CHECK_FALSE(store.claim(k("f"), 60s));
    CHECK_FALSE(store.claim(k("e"), 60s));
    store.commit({}, 0s);

    // Batches: in order, a key given twice is won once, what is taken is not.
    std::vector<bool> won = store.claim_batch({k("g1"), k("a"), k("g2"), k("g1"), k("b"), k("g3")}, 60s);
    CHECK(won == std::vector<bool>{true, false, true, false, false, true});
    CHECK_FALSE(store.claim(k("g2"), 60s));
    CHECK(store.claim_batch({}, 60s).empty());
    store.commit({k("g1"), k("g2"), k("g3")}, 0s);
    CHECK(store.claim_batch({k("g1"), k("g4")}, 60s) == std::vector<bool>{false, true});
    std::vector<std::string> many;
    for (int i = 0; i < 1000; ++i) many.push_back(k("many") + std::to_string(i));
    std::vector<bool> all = store.claim_batch(many, 60s);
    CHECK(std::count(all.begin(), all.end(), true) == 1000);
    all = store.claim_batch(many, 60s);
    CHECK(std::count(all.begin(), all.end(), true) == 0);
}

// Two store objects on the same data are two writers: each sees the other's
// claims, and a release drops only the releasing writer's own claim.
inline void check_dedup_two_writers(training_output::DedupStore& a, training_output::DedupStore& b,
                                    const std::string& ns) {
    using namespace std::chrono_literals;
    const std::string x = ns + ":x", pending = ns + ":pending";
    CHECK(a.claim(x, 60s));
    a.commit({x}, 0s);
    CHECK_FALSE(b.claim(x, 60s));
    CHECK(a.claim(pending, 3600s));
    CHECK_FALSE(b.claim(pending, 60s));  // a live claim of another writer
    b.release(pending);                  // not b's: stays
    CHECK_FALSE(b.claim(pending, 60s));
    CHECK(b.claim_batch({pending, ns + ":y"}, 60s) == std::vector<bool>{false, true});
    a.release(pending);  // a's own: gone
    CHECK(b.claim(pending, 60s));
    CHECK_FALSE(a.claim(pending, 60s));
}

// `threads` threads claim the same keys (singly and in batches): exactly one wins each.
inline void check_dedup_threads(training_output::DedupStore& store, const std::string& ns, int threads = 8,
                                int keys = 200) {
    using namespace std::chrono_literals;
    std::vector<std::atomic<int>> wins(static_cast<std::size_t>(keys));
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
        pool.emplace_back([&, t] {
            if (t % 2) {
                for (int k = 0; k < keys; ++k) {
                    if (store.claim(ns + ":k" + std::to_string(k), 60s)) wins[static_cast<std::size_t>(k)]++;
                }
            } else {
                for (int k = 0; k < keys; k += 10) {
                    std::vector<std::string> batch;
                    for (int j = k; j < std::min(k + 10, keys); ++j) batch.push_back(ns + ":k" + std::to_string(j));
                    std::vector<bool> won = store.claim_batch(batch, 60s);
                    for (std::size_t j = 0; j < won.size(); ++j) {
                        if (won[j]) wins[static_cast<std::size_t>(k) + j]++;
                    }
                }
            }
        });
    }
    for (auto& t : pool) t.join();
    int wrong = 0;
    for (auto& w : wins) wrong += w != 1;
    CHECK(wrong == 0);
}

}  // namespace tdo_test
