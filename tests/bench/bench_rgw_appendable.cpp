// What RGW's appendable objects take, against a running Ceph RGW
// (scripts/bench.sh appendable starts one): N native appends of one small
// line to one key, timed per block (does an append cost more as the object
// collects parts?), where the first refused one stops it; then what the
// other operations do with an appendable object: a server-side copy
// (UploadPartCopy) from it, a ranged read across appends, a plain PUT over
// it, and a native append to a plain object.
//
// Environment: TDO_BENCH_ENDPOINT (http://127.0.0.1:7480), TDO_BENCH_ACCESS_KEY
// (testkey), TDO_BENCH_SECRET_KEY (testsecret). Arguments: [appends] (20000).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "bench_server.hpp"
#include "s3/curl_s3_sink.hpp"

namespace to = training_output;
using Clock = std::chrono::steady_clock;

int main(int argc, char** argv) {
    const int appends = argc > 1 ? std::atoi(argv[1]) : 20000;
    const std::string bucket = bench::make_bucket("appendable");
    to::CurlS3Sink sink(bench::sink_options(bucket));
    if (!sink.capabilities().native_append) {
        std::printf("the server has no native appends\n");
        return 1;
    }
    const std::string key = "appendable.jsonl";
    const std::string line = "{\"n\":\"0123456789\"}\n";  // 19 bytes
    std::uint64_t at = 0;
    int done = 0;
    std::string refused;
    auto block = Clock::now();
    const int report_every = appends >= 10000 ? appends / 10 : std::max(1, appends / 5);
    std::printf("%d appends of %zu bytes to one key\n", appends, line.size());
    std::printf("%12s %16s\n", "appends", "ms per append");
    for (int i = 0; i < appends; ++i) {
        const auto r = sink.append_at(key, line, at, to::ObjectAttributes{});
        if (!r.ok()) {
            refused = r.describe();
            break;
        }
        at += line.size();
        ++done;
        if (done % report_every == 0) {
            const double ms = std::chrono::duration<double, std::milli>(Clock::now() - block).count() / report_every;
            std::printf("%12d %16.2f\n", done, ms);
            std::fflush(stdout);
            block = Clock::now();
        }
    }
    std::printf("appends taken: %d%s%s\n", done, refused.empty() ? "" : "; then refused: ", refused.c_str());
    const auto h = sink.head(key);
    std::printf("HEAD: %s, size %llu (expected %llu), appendable %s\n", h.ok() ? "ok" : h.describe().c_str(),
                static_cast<unsigned long long>(h.size), static_cast<unsigned long long>(at),
                h.appendable ? "yes" : "no");
    // A read across many appends.
    const auto g = sink.get(key, to::ByteRange{at / 2 - 100, at / 2 + 100});
    std::printf("ranged GET across appends: %s\n", g.ok() && g.body.size() == 201 ? "exact" : g.describe().c_str());
    // A server-side copy from it (a compaction's UploadPartCopy source).
    auto up = sink.create_multipart("copy.jsonl", to::ObjectAttributes{});
    const auto pc = sink.upload_part_copy("copy.jsonl", up.upload_id, 1, key, h.etag);
    const auto done_copy =
        pc.ok() ? sink.complete_multipart("copy.jsonl", up.upload_id, {{1, pc.etag}}, to::WriteConditions{}) : pc;
    const auto ch = sink.head("copy.jsonl");
    const auto whole = sink.get(key);
    const auto copied = sink.get("copy.jsonl");
    std::printf("UploadPartCopy from it: %s; the copy: %s bytes, equal %s, appendable %s\n",
                done_copy.ok() ? "ok" : done_copy.describe().c_str(), std::to_string(ch.size).c_str(),
                whole.ok() && copied.ok() && whole.body == copied.body ? "yes" : "no", ch.appendable ? "yes" : "no");
    // Appending natively to the plain copy, then a plain PUT over the appendable one.
    const auto plain_append = sink.append_at("copy.jsonl", line, ch.size, to::ObjectAttributes{});
    std::printf("native append to the (plain) copy: %s\n", plain_append.describe().c_str());
    const auto put = sink.put(key, line, to::ObjectAttributes{}, to::WriteConditions{});
    const auto after = sink.head(key);
    std::printf("plain PUT over the appendable object: %s; then appendable %s, size %llu\n",
                put.ok() ? "ok" : put.describe().c_str(), after.appendable ? "yes" : "no",
                static_cast<unsigned long long>(after.size));
    sink.remove(key);
    sink.remove("copy.jsonl");
    return 0;
}
