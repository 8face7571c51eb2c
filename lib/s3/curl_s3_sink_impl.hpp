// CurlS3Sink's insides, shared by the files that implement it:
//   client.cpp      signing, sending, retries with backoff, clock skew, the
//                   ETag form a server matches (If-Match quoted or bare);
//   express.cpp     S3 Express One Zone: sessions, appends at an offset;
//   probe.cpp       what a server enforces (conditional writes, appends);
//   curl_s3_sink.cpp the S3 operations, each a request and what its answer holds.
// What an answer means is decided in classify.cpp; where requests go, in
// endpoint.cpp.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "s3/classify.hpp"
#include "s3/curl_s3_sink.hpp"
#include "s3/endpoint.hpp"
#include "s3/http_client.hpp"

namespace training_output {

constexpr int kStatuses = static_cast<int>(SinkStatus::Fatal) + 1;

// What some calls add to a request.
struct Extra {
    std::optional<ByteRange> range;  // a ranged GET: the answer must be exactly these bytes
    bool single_attempt = false;     // no retry here (the caller retries, if it must)
    std::chrono::milliseconds timeout{0};
    // UploadPartCopy, Complete: the server copies or assembles before it
    // answers, sending nothing meanwhile; only the timeout bounds them.
    bool server_works = false;
};

struct CurlS3Sink::Impl {
    using Op = s3::Op;

    S3SinkOptions options;
    const Logger* logger;
    s3::Endpoint endpoint;
    bool virtual_host = false;
    // An S3 Express One Zone directory bucket ("<name>--<zone id>--x-s3"):
    // requests are signed for "s3express" with a session's credentials
    // (CreateSession, renewed before they expire), and native appends are
    // PUTs with x-amz-write-offset-bytes.
    bool directory_bucket = false;
    sigv4::Signer signer;  // the configured credentials (for a directory bucket: CreateSession only)
    http::Client client;
    struct Session {
        std::unique_ptr<sigv4::Signer> signer;
        std::string token;
        std::chrono::steady_clock::time_point renew_at;
    };
    std::mutex session_mutex;
    std::shared_ptr<const Session> session;  // under session_mutex

    std::atomic<std::int64_t> clock_offset_s{0};  // server time - our time, from RequestTimeTooSkewed
    // If-Match: RFC 7232 wants a quoted ETag; Ceph RGW only matches the bare one.
    std::atomic<bool> quote_etags{true};
    std::atomic<bool> etag_style_confirmed{false};
    std::atomic<bool> multi_delete{true};  // DeleteObjects works (until a server says it has none)

    std::mutex probe_mutex;  // one probe at a time
    std::atomic<bool> probed{false};
    mutable std::mutex caps_mutex;  // never held across a request
    SinkCapabilities caps;          // under caps_mutex

    // The first probe runs on its own thread: open waits for it at most
    // options.probe_wait, then returns (safe capabilities until then). Later
    // ones run from capabilities(), on the appending thread, when one is due
    // and none is running (never waiting for one).
    std::thread prober;
    std::mutex prober_mutex;
    std::condition_variable prober_cv;
    std::atomic<bool> first_probe_done{false};  // set under prober_mutex; later probes wait for it
    bool open_returned = false;                 // under prober_mutex: an error found later is logged
    std::exception_ptr probe_error;             // under prober_mutex

    std::atomic<std::uint64_t> requests{0}, retries{0}, bytes_sent{0}, body_bytes_sent{0}, bytes_received{0};
    std::atomic<std::uint64_t> by_operation[s3::kOps][kStatuses] = {};  // each answer, retries included

    // cancel(): transfers abort, retry waits end, new requests fail at once.
    std::atomic<bool> cancelled{false};
    std::mutex cancel_mutex;
    std::condition_variable cancel_cv;

    // A probe that could not finish (the server did not answer, or answered
    // with an error) leaves the safe capabilities and runs again at this time.
    std::chrono::steady_clock::time_point next_probe{};
    int probe_failures = 0;

    // One attempt per request on this thread (set while probing).
    static thread_local bool t_single_attempt;

    // client.cpp
    static S3SinkOptions validated(S3SinkOptions o);
    Impl(S3SinkOptions o, const Logger* l);
    std::string describe() const;
    // This host's Unix time, corrected by the offset RequestTimeTooSkewed taught.
    std::int64_t local_seconds() const;

    struct Call {
        Op op;
        std::string method;
        std::string key;  // empty: the bucket itself
        std::vector<std::pair<std::string, std::string>> query;
        std::vector<std::pair<std::string, std::string>> headers;
        std::string_view body;
        bool expect_xml_body = false;  // 200 answers may carry an <Error>
    };

    std::string quoted(const std::string& etag) const {
        return quote_etags.load(std::memory_order_relaxed) ? "\"" + etag + "\"" : etag;
    }
    // One HTTP exchange, signed now (with `s`'s credentials when given).
    http::Response send(const Call& c, const Extra& x, const Session* session_creds = nullptr);
    // Sends with retries. For conditional writes, a 412/409/404 after an
    // attempt whose outcome we could not see means "unknown", not "lost".
    SinkResponse call(const Call& c, http::Response* raw = nullptr, const Extra& x = {});
    void correct_clock(const http::Response& resp, const SinkResponse& r);
    static void add_attributes(Call& c, const ObjectAttributes& a);
    static void add_conditions(Call& c, const WriteConditions& w, bool quoted_form);
    // Ceph RGW answers 412 to a quoted If-Match that matches: when the object
    // still has the ETag we sent, the other form is the one this server reads.
    // `used`: the form the refused request carried. Requests in flight at
    // once (the probe, appends, a compaction) may all be refused so: the form
    // flips once, from the one they used, never back.
    bool try_other_etag_form(const std::string& key, const std::string& etag, bool used);
    // A conditional write; once, a 412 to an If-Match may mean "the other ETag form".
    template <class Build>
    SinkResponse conditional_call(const std::string& key, const WriteConditions& w, Build build, http::Response* raw) {
        for (int round = 0;; ++round) {
            Call c = build();
            const bool quoted_form = quote_etags.load();
            add_conditions(c, w, quoted_form);
            Extra x;
            x.single_attempt = w.single_attempt;
            x.timeout = w.timeout;
            x.server_works = c.op == Op::Complete;
            SinkResponse r = call(c, raw, x);
            if (round == 0 && r.status == SinkStatus::PreconditionFailed && !w.if_match.empty() &&
                try_other_etag_form(key, w.if_match, quoted_form)) {
                continue;
            }
            // Only a PUT confirms the form: servers that ignore If-Match on
            // Complete (RGW) accept any form there.
            if (r.ok() && !w.if_match.empty() && c.op == Op::Put) etag_style_confirmed = true;
            return r;
        }
    }

    // express.cpp: a directory bucket's session: the current one, or a new
    // one from CreateSession (its failure as the answer).
    std::shared_ptr<const Session> session_for(SinkResponse& failure);
    void drop_session(const std::shared_ptr<const Session>& s);
    // S3 Express One Zone: PUT with x-amz-write-offset-bytes, which lands
    // only at the object's size (0: a new object). Its refusals are this
    // sink's: InvalidWriteOffset (another append won) is Conflict, and so is
    // TooManyParts (10,000 appends: the appender appends once by copy, which
    // makes an object of few parts again).
    SinkResponse append_with_offset(const std::string& key, std::string_view body, std::uint64_t position,
                                    const ObjectAttributes& attributes, const WriteConditions& conditions);

    // probe.cpp
    void probe(CurlS3Sink& sink, std::unique_lock<std::mutex>& held);
    void first_probe(CurlS3Sink& sink);
    // Ends the probe's thread (its request in progress aborts).
    void stop_prober(CurlS3Sink& sink);
};

}  // namespace training_output
