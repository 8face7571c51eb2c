// What every DedupStore must do; run against the memory, SQLite and log stores
// (unit tests) and Redis (integration tests). Keys and owners are made under
// a namespace, so that a shared server needs no cleaning between tests.
#pragma once

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "test_util.hpp"
#include "training_output/sys/dedup_store.hpp"

namespace tdo_test {

using training_output::ClaimState;

// An owner whose spool directory exists under `dir` (SQLite's liveness).
inline training_output::OwnerRecord make_owner(const std::string& dir, const std::string& name) {
    training_output::OwnerRecord o{name, dir + "/w-" + name};
    std::filesystem::create_directories(o.spool_path);
    return o;
}

// make_owner(), registered with `store`.
template <class Store>
training_output::OwnerRecord registered_owner(Store& store, const std::string& dir, const std::string& name) {
    auto o = make_owner(dir, name);
    store.register_owner(o);
    return o;
}

// Polls until `claim` answers `want` or 5 s passed (a TTL running out).
template <class Claim, class State>
bool eventually(Claim&& claim, State want) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (std::chrono::steady_clock::now() < deadline) {
        if (claim() == want) return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
}

// Claims, owners, commits, expiry, batches: one store.
inline void check_dedup_conformance(training_output::DedupStore& store, const std::string& ns, const std::string& dir) {
    using namespace std::chrono_literals;
    const auto k = [&](const char* name) { return ns + ":" + name; };
    const auto a = registered_owner(store, dir, ns + "-a"), b = registered_owner(store, dir, ns + "-b"),
               c = registered_owner(store, dir, ns + "-c");

    CHECK(store.claim(k("a"), a.id, 60s) == ClaimState::Claimed);
    CHECK(store.claim(k("a"), a.id, 60s) == ClaimState::Own);   // its own already (an adopter confirming)
    CHECK(store.claim(k("a"), b.id, 60s) == ClaimState::Held);  // another live owner's
    store.commit({k("a")}, 0s);
    CHECK(store.claim(k("a"), a.id, 60s) == ClaimState::Committed);
    CHECK(store.claim(k("a"), b.id, 60s) == ClaimState::Committed);

    // Committed without a claim; and with a TTL, free again once it runs out.
    store.commit({k("d")}, 0s);
    CHECK(store.claim(k("d"), a.id, 60s) == ClaimState::Committed);
    store.commit({k("e")}, 1s);
    CHECK(store.claim(k("e"), a.id, 60s) == ClaimState::Committed);
    CHECK(eventually([&] { return store.claim(k("e"), a.id, 60s); }, ClaimState::Claimed));
    store.commit({}, 0s);

    // An owner that is gone: its claims may be taken over, once.
    CHECK(store.claim(k("h"), c.id, 60s) == ClaimState::Claimed);
    CHECK(store.claim(k("h"), a.id, 60s) == ClaimState::Held);
    store.retire_owner(c.id);
    CHECK(store.claim(k("h"), a.id, 60s) == ClaimState::Claimed);
    CHECK(store.claim(k("h"), b.id, 60s) == ClaimState::Held);  // a's now
    // A claim by an owner that never registered (a token of an earlier
    // version) is an orphan too.
    CHECK(store.claim(k("i"), ns + "-unregistered", 60s) == ClaimState::Claimed);
    CHECK(store.claim(k("i"), b.id, 60s) == ClaimState::Claimed);

    // Batches: answers in order, as single claims would give them.
    auto got = store.claim_batch({k("g1"), k("a"), k("g2"), k("g1"), k("h"), k("g3")}, b.id, 60s);
    CHECK(got == std::vector<ClaimState>{ClaimState::Claimed, ClaimState::Committed, ClaimState::Claimed,
                                         ClaimState::Own, ClaimState::Held, ClaimState::Claimed});
    CHECK(store.claim(k("g2"), a.id, 60s) == ClaimState::Held);
    CHECK(store.claim_batch({}, a.id, 60s).empty());
    store.commit({k("g1"), k("g2"), k("g3")}, 0s);
    CHECK(store.claim_batch({k("g1"), k("g4")}, a.id, 60s) ==
          std::vector<ClaimState>{ClaimState::Committed, ClaimState::Claimed});
    std::vector<std::string> many;
    for (int i = 0; i < 1000; ++i) many.push_back(k("many") + std::to_string(i));
    auto all = store.claim_batch(many, a.id, 60s);
    CHECK(std::count(all.begin(), all.end(), ClaimState::Claimed) == 1000);
    all = store.claim_batch(many, b.id, 60s);
    CHECK(std::count(all.begin(), all.end(), ClaimState::Held) == 1000);
    all = store.claim_batch(many, a.id, 60s);
    CHECK(std::count(all.begin(), all.end(), ClaimState::Own) == 1000);
}

// Two store objects on the same data are two writers: each sees the other's
// owners and claims.
inline void check_dedup_two_writers(training_output::DedupStore& a, training_output::DedupStore& b,
                                    const std::string& ns, const std::string& dir) {
    using namespace std::chrono_literals;
    const std::string x = ns + ":x", pending = ns + ":pending";
    const auto oa = registered_owner(a, dir, ns + "-wa"), ob = registered_owner(b, dir, ns + "-wb");
    CHECK(a.claim(x, oa.id, 60s) == ClaimState::Claimed);
    a.commit({x}, 0s);
    CHECK(b.claim(x, ob.id, 60s) == ClaimState::Committed);
    CHECK(a.claim(pending, oa.id, 3600s) == ClaimState::Claimed);
    CHECK(b.claim(pending, ob.id, 60s) == ClaimState::Held);  // a live claim of another writer
    CHECK(b.claim_batch({pending, ns + ":y"}, ob.id, 60s) ==
          std::vector<ClaimState>{ClaimState::Held, ClaimState::Claimed});
    a.retire_owner(oa.id);  // a's spool is gone: its claim is b's to take
    CHECK(b.claim(pending, ob.id, 60s) == ClaimState::Claimed);
    CHECK(b.claim(pending, ob.id, 60s) == ClaimState::Own);
    CHECK(a.claim(pending, oa.id, 60s) == ClaimState::Held);
}

// `threads` threads, each its own owner, claim the same keys (singly and in
// batches): exactly one wins each.
inline void check_dedup_threads(training_output::DedupStore& store, const std::string& ns, const std::string& dir,
                                int threads = 8, int keys = 200) {
    using namespace std::chrono_literals;
    std::vector<training_output::OwnerRecord> owners;
    for (int t = 0; t < threads; ++t) {
        owners.push_back(make_owner(dir, ns + "-t" + std::to_string(t)));
        store.register_owner(owners.back());
    }
    std::vector<std::atomic<int>> wins(static_cast<std::size_t>(keys));
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
        pool.emplace_back([&, t] {
            const std::string& me = owners[static_cast<std::size_t>(t)].id;
            if (t % 2) {
                for (int k = 0; k < keys; ++k) {
                    if (store.claim(ns + ":k" + std::to_string(k), me, 60s) == ClaimState::Claimed) {
                        wins[static_cast<std::size_t>(k)]++;
                    }
                }
            } else {
                for (int k = 0; k < keys; k += 10) {
                    std::vector<std::string> batch;
                    for (int j = k; j < std::min(k + 10, keys); ++j) batch.push_back(ns + ":k" + std::to_string(j));
                    auto won = store.claim_batch(batch, me, 60s);
                    for (std::size_t j = 0; j < won.size(); ++j) {
                        if (won[j] == ClaimState::Claimed) wins[static_cast<std::size_t>(k) + j]++;
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

// `procs` processes (fork), each with a store of its own from `open` and an
// owner of its own, claim keys k0..k<keys-1> and commit what they win; each
// one's wins go to a file under `dir`. `also` runs in each process after
// every claim (with the claim's answer). Exactly one process wins each key.
template <class Open, class Also>
void check_dedup_processes(const std::string& dir, Open&& open, Also&& also, int procs = 4, int keys = 300) {
    using namespace std::chrono_literals;
    std::vector<pid_t> pids;
    for (int p = 0; p < procs; ++p) {
        pid_t pid = fork();
        REQUIRE(pid >= 0);
        if (pid == 0) {
            int code = 0;
            try {
                auto store = open();
                const auto me = make_owner(dir, "p" + std::to_string(getpid()));
                store->register_owner(me);
                std::ofstream wins(dir + "/wins-" + std::to_string(getpid()));
                for (int k = 0; k < keys; ++k) {
                    const std::string key = "training:k" + std::to_string(k);
                    const ClaimState got = store->claim(key, me.id, 600s);
                    if (got == ClaimState::Claimed) {
                        store->commit({key}, 0s);
                        wins << k << "\n" << std::flush;
                    }
                    also(*store, key, k, got);
                }
            } catch (...) {
                code = 3;
            }
            std::_Exit(code);
        }
        pids.push_back(pid);
    }
    for (pid_t pid : pids) CHECK(wait_for(pid) == 0);
    std::map<int, int> wins;
    for (pid_t pid : pids) {
        for (const auto& line : lines_of(read_file(dir + "/wins-" + std::to_string(pid)))) wins[std::stoi(line)]++;
    }
    CHECK(wins.size() == static_cast<std::size_t>(keys));
    for (const auto& [k, n] : wins) {
        INFO(k);
        CHECK(n == 1);
    }
}

}  // namespace tdo_test
