// What one small append costs as the object grows, per append mode, against
// a running Ceph RGW (scripts/bench.sh append starts one with room for it):
// objects of 8 MiB, 128 MiB and 1 GiB; a batch of 20 example-sized lines
// appended `appends` times to each, 0.3 s apart; seconds per append (the
// lease included) and bytes sent per appended byte.
//   native: an appendable object, RGW's append with position (under a lease);
//   copy:   a plain object, UploadPartCopy + the new part + Complete (under a
//           lease, since RGW ignores If-Match on Complete);
//   convert: a plain object, appended to natively after its conversion to an
//           appendable one (the first append converts it: its time is
//           reported on its own line, the later appends are native);
//   batches: a plain object; each batch one object of its own (one PUT),
//           and then one compaction that folds them all into the object
//           (its time reported on its own line).
// A copy that does not finish within the request timeout (120 s, one
// attempt) is reported as such: its abandoned copy stays in the store until
// RGW's garbage collection.
//
// Environment: TDO_BENCH_ENDPOINT (http://127.0.0.1:7480), TDO_BENCH_ACCESS_KEY
// (testkey), TDO_BENCH_SECRET_KEY (testsecret). Arguments: [appends per
// object] (default 5) [largest object in MiB] (default 1024).
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "append/batch_objects.hpp"
#include "append/object_appender.hpp"
#include "bench_server.hpp"
#include "s3/curl_s3_sink.hpp"
#include "training_output/error.hpp"

namespace to = training_output;
using Clock = std::chrono::steady_clock;

namespace {

to::S3SinkOptions sink_options(const std::string& bucket, to::NativeAppend native) {
    auto o = bench::sink_options(bucket);
    o.native_append = native;
    o.request_timeout = std::chrono::milliseconds(120000);
    o.max_attempts = 1;
    return o;
}

// Lines of about an example's size (~250 bytes).
std::string lines(std::uint64_t bytes, std::mt19937& gen) {
    std::string out;
    while (out.size() < bytes)
        out += "{\"seed\":" + std::to_string(gen()) + ",\"pad\":\"" + std::string(220, 'x') + "\"}\n";
    return out;
}

// Builds a `mib` MiB object in pieces of 32 MiB: appendable (native appends)
// or plain (a multipart upload).
bool build(to::CurlS3Sink& sink, const std::string& key, std::uint64_t mib, bool appendable) {
    std::mt19937 gen(7);
    const std::uint64_t piece = 32ull << 20, total = mib << 20;
    if (appendable) {
        for (std::uint64_t at = 0; at < total;) {
            const std::string body = lines(std::min(piece, total - at), gen);
            auto r = sink.append_at(key, body, at, to::ObjectAttributes{});
            if (!r.ok()) return std::fprintf(stderr, "append: %s\n", r.describe().c_str()), false;
            at += body.size();
        }
        return true;
    }
    auto up = sink.create_multipart(key, to::ObjectAttributes{});
    if (!up.ok()) return false;
    std::vector<to::CompletedPart> parts;
    for (std::uint64_t at = 0; at < total;) {
        const std::string body = lines(std::min(piece, total - at), gen);
        auto p = sink.upload_part(key, up.upload_id, static_cast<int>(parts.size() + 1), body);
        if (!p.ok()) return std::fprintf(stderr, "part: %s\n", p.describe().c_str()), false;
        parts.push_back({static_cast<int>(parts.size() + 1), p.etag});
        at += body.size();
    }
    return sink.complete_multipart(key, up.upload_id, parts, to::WriteConditions{}).ok();
}

}  // namespace

int main(int argc, char** argv) {
    const int appends = argc > 1 ? std::max(1, std::atoi(argv[1])) : 5;
    const std::uint64_t largest = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 1024;
    std::printf("one append of 20 lines (~5 KB), %d times per object, against %s\n", appends,
                bench::env("TDO_BENCH_ENDPOINT", "http://127.0.0.1:7480").c_str());
    std::printf("%-7s %10s %14s %14s %20s %10s\n", "mode", "object", "s per append", "max s", "bytes sent/appended",
                "requests");
    const std::string bucket = bench::make_bucket("append");
    bool failed = false;
    for (const std::string mode : {"native", "convert", "copy", "batches"}) {
        const bool native = mode == "native";
        const bool convert = mode == "convert";
        const bool batches = mode == "batches";
        to::CurlS3Sink sink(
            sink_options(bucket, native || convert || batches ? to::NativeAppend::Auto : to::NativeAppend::Off));
        if (native && !sink.capabilities().native_append) {
            std::printf("native  (the server has no native appends)\n");
            continue;
        }
        for (std::uint64_t mib : {8ull, 128ull, 1024ull}) {
            if (mib > largest) continue;
            const std::string key = mode + "-" + std::to_string(mib) + ".jsonl";
            if (!build(sink, key, mib, native)) return std::fprintf(stderr, "cannot build %s\n", key.c_str()), 1;
            to::AppendOptions ao;
            ao.lease_ttl = std::chrono::seconds(300);  // a Complete under a lease gets 2/5 of it
            ao.max_attempts = 1;
            ao.native_when_appendable = native || convert;
            ao.convert_plain = convert;
            to::ObjectAppender appender(sink, ao);
            to::BatchObjects batch_objects(sink, appender, to::BatchObjectsOptions{});
            std::mt19937 gen(11);
            if (convert) {
                const auto c0 = Clock::now();
                const auto s0 = sink.stats();
                try {
                    appender.append(key, lines(1, gen));
                    std::printf(
                        "          conversion of the plain %llu MiB object (with its first append): %.2f s, %llu "
                        "requests\n",
                        static_cast<unsigned long long>(mib), std::chrono::duration<double>(Clock::now() - c0).count(),
                        static_cast<unsigned long long>(sink.stats().requests - s0.requests));
                } catch (const to::Error& e) {
                    std::printf("          conversion failed: %s\n", e.what());
                    failed = true;
                    continue;
                }
            }
            std::vector<double> seconds;
            std::uint64_t appended = 0;
            const auto before = sink.stats();
            std::string failure;
            for (int i = 0; i < appends && failure.empty(); ++i) {
                // Apart by more than the pause a releasing writer leaves to
                // others waiting for the lease (a writer appends to a key once
                // per flush interval, not back to back).
                std::this_thread::sleep_for(std::chrono::milliseconds(300));
                std::string batch;
                for (int l = 0; l < 20; ++l) batch += lines(1, gen);
                const auto t0 = Clock::now();
                try {
                    if (batches) {
                        batch_objects.land(key,
                                           to::batch_objects::key(key, "0123456789abcdef0123456789abcdef",
                                                                  1 + static_cast<std::uint64_t>(i) * 20),
                                           batch);
                    } else {
                        appender.append(key, batch);
                    }
                    seconds.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
                    appended += batch.size();
                } catch (const to::Error& e) {
                    failure = std::to_string(std::chrono::duration<double>(Clock::now() - t0).count()) +
                              " s, then: " + e.what();
                }
            }
            const auto after = sink.stats();
            char size[32];
            std::snprintf(size, sizeof size, mib >= 1024 ? "%.0f GiB" : "%.0f MiB",
                          mib >= 1024 ? mib / 1024.0 : double(mib));
            if (seconds.empty()) {
                std::printf("%-7s %10s   did not complete: %s\n", mode.c_str(), size, failure.c_str());
                if (native) failed = true;
            } else {
                double sum = 0, max = 0;
                for (double s : seconds) sum += s, max = std::max(max, s);
                std::printf("%-7s %10s %14.4f %14.4f %20.3f %10.1f%s\n", mode.c_str(), size, sum / seconds.size(), max,
                            double(after.bytes_sent - before.bytes_sent) / double(appended),
                            double(after.requests - before.requests) / seconds.size(),
                            failure.empty() ? "" : "  (then failed)");
                if (!failure.empty()) std::printf("          then: %s\n", failure.c_str());
            }
            if (batches && !seconds.empty()) {
                // The compaction that folds them into the object: one append
                // of them all (here a server-side copy: the object is plain).
                const auto c0 = Clock::now();
                const auto s0 = sink.stats();
                try {
                    const auto r = batch_objects.compact(key);
                    std::printf(
                        "          compaction of those %llu batch objects into the %s object: %.2f s, %llu requests\n",
                        static_cast<unsigned long long>(r.batches), size,
                        std::chrono::duration<double>(Clock::now() - c0).count(),
                        static_cast<unsigned long long>(sink.stats().requests - s0.requests));
                } catch (const to::Error& e) {
                    std::printf("          compaction failed: %s\n", e.what());
                    failed = true;
                }
            }
            std::fflush(stdout);
            sink.remove(key);
        }
    }
    return failed ? 1 : 0;
}
