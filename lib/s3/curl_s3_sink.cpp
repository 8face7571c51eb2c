// CurlS3Sink: S3 over SigV4 and libcurl.
#include "s3/curl_s3_sink.hpp"

#include <openssl/evp.h>

#include <atomic>
#include <cctype>
#include <condition_variable>
#include <ctime>
#include <mutex>
#include <thread>

#include "common/json.hpp"
#include "common/random.hpp"
#include "common/thread.hpp"
#include "s3/http_client.hpp"
#include "s3/s3_response.hpp"
#include "s3/s3_xml.hpp"
#include "training_output/error.hpp"

namespace training_output {
namespace {

using Clock = std::chrono::system_clock;

std::string lower(std::string s) {
    for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
}

struct Endpoint {
    std::string scheme;  // http | https
    std::string host;    // host[:port], without a default port
    std::string base;    // a path prefix of the endpoint, without trailing '/'
};

Endpoint parse_endpoint(const std::string& url) {
    auto bad = [&](const char* why) {
        return Error(ErrorCode::Config, std::string("configuration key \"s3_endpoint_url\": ") + why);
    };
    auto sep = url.find("://");
    if (sep == std::string::npos) throw bad("expected http://host[:port] or https://host[:port]");
    Endpoint e;
    e.scheme = lower(url.substr(0, sep));
    if (e.scheme != "http" && e.scheme != "https") throw bad("the scheme must be http or https");
    std::string rest = url.substr(sep + 3);
    auto slash = rest.find('/');
    e.host = rest.substr(0, slash);
    if (slash != std::string::npos) e.base = rest.substr(slash);
    while (!e.base.empty() && e.base.back() == '/') e.base.pop_back();
    if (e.host.empty()) throw bad("no host");
    if (e.host.find('@') != std::string::npos)
        throw bad("credentials belong in s3_access_key / s3_secret_key, not in the URL");
    if (e.host.find_first_of("?# ") != std::string::npos) throw bad("unexpected characters in the host");
    e.host = lower(e.host);
    auto strip = [&](const char* port) {
        if (e.host.size() > std::string(port).size() &&
            e.host.compare(e.host.size() - std::string(port).size(), std::string::npos, port) == 0) {
            e.host.erase(e.host.size() - std::string(port).size());
        }
    };
    if (e.scheme == "http") strip(":80");
    if (e.scheme == "https") strip(":443");
    return e;
}

bool dns_compatible(const std::string& bucket) {
    if (bucket.size() < 3 || bucket.size() > 63) return false;
    for (char c : bucket) {
        if (!(std::islower(static_cast<unsigned char>(c)) || std::isdigit(static_cast<unsigned char>(c)) || c == '-')) {
            return false;  // dots break TLS names of virtual hosts
        }
    }
    return true;
}

thread_local bool t_single_attempt = false;  // set while probing

enum class Op {
    Head,
    Get,
    Put,
    Remove,
    CreateMultipart,
    UploadPart,
    UploadPartCopy,
    Complete,
    Abort,
    Append,
    CreateBucket,
    Probe,
    List,
    RemoveMany,
    CreateSession
};
constexpr int kOps = static_cast<int>(Op::CreateSession) + 1;
constexpr int kStatuses = static_cast<int>(SinkStatus::Fatal) + 1;

const char* op_name(Op op) {
    switch (op) {
        case Op::Head: return "HeadObject";
        case Op::Get: return "GetObject";
        case Op::Put: return "PutObject";
        case Op::Remove: return "DeleteObject";
        case Op::CreateMultipart: return "CreateMultipartUpload";
        case Op::UploadPart: return "UploadPart";
        case Op::UploadPartCopy: return "UploadPartCopy";
        case Op::Complete: return "CompleteMultipartUpload";
        case Op::Abort: return "AbortMultipartUpload";
        case Op::Append: return "AppendObject";
        case Op::CreateBucket: return "CreateBucket";
        case Op::Probe: return "Probe";
        case Op::List: return "ListObjects";
        case Op::RemoveMany: return "DeleteObjects";
        case Op::CreateSession: return "CreateSession";
    }
    return "?";
}

// What some calls add to a request.
struct Extra {
    std::optional<ByteRange> range;  // a ranged GET: the answer must be exactly these bytes
    bool single_attempt = false;     // no retry here (the caller retries, if it must)
    std::chrono::milliseconds timeout{0};
    // UploadPartCopy, Complete: the server copies or assembles before it
    // answers, sending nothing meanwhile; only the timeout bounds them.
    bool server_works = false;
};

// Writes whose repetition after an unseen success would answer 412 / 404.
bool conditional_write(Op op) { return op == Op::Put || op == Op::Complete || op == Op::Append; }

}  // namespace

AddressingStyle parse_addressing_style(const std::string& text) {
    if (text == "auto") return AddressingStyle::Auto;
    if (text == "path") return AddressingStyle::Path;
    if (text == "virtual") return AddressingStyle::Virtual;
    throw Error(ErrorCode::Config,
                "configuration key \"s3_addressing_style\": expected auto, path or virtual, got " + json::quote(text));
}

NativeAppend parse_native_append(const std::string& text) {
    if (text == "native") return NativeAppend::On;
    // batches: a compaction appends to the monthly file as auto would.
    if (text == "auto" || text == "batches") return NativeAppend::Auto;
    if (text == "copy" || text == "lease") return NativeAppend::Off;
    throw Error(ErrorCode::Config,
                "configuration key \"s3_append_mode\": expected auto, native, copy, lease or batches, got " +
                    json::quote(text));
}

ConditionalWrites parse_conditional_writes(const std::string& text) {
    if (text == "auto") return ConditionalWrites::Auto;
    if (text == "true") return ConditionalWrites::On;
    if (text == "false") return ConditionalWrites::Off;
    throw Error(ErrorCode::Config,
                "configuration key \"s3_conditional_writes\": expected auto, true or false, got " + json::quote(text));
}

struct CurlS3Sink::Impl {
    S3SinkOptions options;
    const Logger* logger;
    Endpoint endpoint;
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
    std::atomic<std::uint64_t> by_operation[kOps][kStatuses] = {};  // each answer, retries included

    // cancel(): transfers abort, retry waits end, new requests fail at once.
    std::atomic<bool> cancelled{false};
    std::mutex cancel_mutex;
    std::condition_variable cancel_cv;

    // A probe that could not finish (the server did not answer, or answered
    // with an error) leaves the safe capabilities and runs again at this time.
    std::chrono::steady_clock::time_point next_probe{};
    int probe_failures = 0;

    // Checked before anything is built from them, so that errors name the keys.
    static S3SinkOptions validated(S3SinkOptions o) {
        if (o.bucket.empty())
            throw Error(ErrorCode::Config, "configuration key \"s3_bucket_name\": is required with s3_endpoint_url");
        if (o.bucket.find('/') != std::string::npos) {
            throw Error(ErrorCode::Config, "configuration key \"s3_bucket_name\": must not contain '/'");
        }
        if (o.credentials.access_key_id.empty() || o.credentials.secret_access_key.empty()) {
            throw Error(ErrorCode::Config,
                        "configuration keys \"s3_access_key\" and \"s3_secret_key\" (or AWS_ACCESS_KEY_ID "
                        "and AWS_SECRET_ACCESS_KEY) are required with s3_endpoint_url");
        }
        if (o.region.empty()) throw Error(ErrorCode::Config, "configuration key \"s3_region\": must not be empty");
        if (o.max_attempts < 1) o.max_attempts = 1;
        return o;
    }

    Impl(S3SinkOptions o, const Logger* l)
        : options(validated(std::move(o))),
          logger(l),
          endpoint(parse_endpoint(options.endpoint_url)),
          directory_bucket(is_directory_bucket(options.bucket)),
          signer(options.credentials, sigv4::Options{options.region, directory_bucket ? "s3express" : "s3", true}),
          client(http::ClientOptions{options.connect_timeout, options.request_timeout, 1024, options.low_speed_time,
                                     options.verify_tls, options.ca_file, 16, &cancelled}) {
        switch (options.addressing) {
            case AddressingStyle::Path: virtual_host = false; break;
            case AddressingStyle::Virtual:
                if (!dns_compatible(options.bucket)) {
                    throw Error(ErrorCode::Config, "configuration key \"s3_addressing_style\": bucket " +
                                                       json::quote(options.bucket) +
                                                       " cannot be a host name (use path)");
                }
                virtual_host = true;
                break;
            case AddressingStyle::Auto: {
                const std::string suffix = "amazonaws.com";
                std::string host = endpoint.host.substr(0, endpoint.host.find(':'));
                bool aws = host.size() >= suffix.size() &&
                           host.compare(host.size() - suffix.size(), suffix.size(), suffix) == 0;
                virtual_host = aws && dns_compatible(options.bucket);
                break;
            }
        }
        caps.conditional_writes = options.conditional_writes != ConditionalWrites::Off;
        // Until a probe says otherwise, the conservative answer (appends take a lease).
        caps.conditional_complete = options.conditional_writes == ConditionalWrites::On;
        caps.multipart_copy = true;
        caps.min_part_size = 5ull << 20;
        caps.native_append = false;  // until the probe has seen it (also with On: a server that
                                     // ignored ?append would overwrite the object with the batch)
        if (options.conditional_writes != ConditionalWrites::Auto && options.native_append == NativeAppend::Off) {
            probed = true;
        }
    }

    std::string describe() const {
        return "s3 " + endpoint.scheme + "://" + endpoint.host + endpoint.base + " bucket " + options.bucket;
    }

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

    static bool is_directory_bucket(const std::string& bucket) {
        const std::string suffix = "--x-s3";
        return bucket.size() > suffix.size() &&
               bucket.compare(bucket.size() - suffix.size(), suffix.size(), suffix) == 0;
    }

    // A directory bucket's session: the current one, or a new one from
    // CreateSession (its failure as the answer).
    std::shared_ptr<const Session> session_for(SinkResponse& failure) {
        std::lock_guard<std::mutex> lock(session_mutex);
        if (session && std::chrono::steady_clock::now() < session->renew_at) return session;
        Call c{Op::CreateSession, "GET", "", {{"session", ""}}, {}, {}, true};
        http::Response resp = send(c, Extra{}, nullptr);
        SinkResponse r = classify(c, resp, Extra{});
        if (!r.ok()) {
            failure = std::move(r);
            failure.detail = "CreateSession: " + failure.detail;
            return nullptr;
        }
        auto token = s3xml::element(resp.body, "SessionToken");
        auto secret = s3xml::element(resp.body, "SecretAccessKey");
        auto id = s3xml::element(resp.body, "AccessKeyId");
        if (!token || !secret || !id || token->empty() || secret->empty() || id->empty()) {
            failure = SinkResponse{};
            failure.status = SinkStatus::Transient;
            failure.detail = "CreateSession: the answer holds no credentials";
            return nullptr;
        }
        auto s = std::make_shared<Session>();
        s->signer = std::make_unique<sigv4::Signer>(sigv4::Credentials{*id, *secret, ""},
                                                    sigv4::Options{options.region, "s3express", true});
        s->token = *token;
        // Renewed a minute before it expires (by the server's clock: the
        // time left, from its Date), or after 4 minutes when it does not say.
        std::int64_t left = 300;
        const std::int64_t expires = s3resp::parse_iso_time(s3xml::element(resp.body, "Expiration").value_or(""));
        const std::int64_t now = s3resp::parse_http_date(resp.header("date"));
        if (expires > 0 && now > 0) left = expires - now;
        s->renew_at = std::chrono::steady_clock::now() + std::chrono::seconds(std::max<std::int64_t>(left - 60, 1));
        session = s;
        return session;
    }

    void drop_session(const std::shared_ptr<const Session>& s) {
        std::lock_guard<std::mutex> lock(session_mutex);
        if (session == s) session.reset();
    }

    // One HTTP exchange, signed now (with `s`'s credentials when given).
    http::Response send(const Call& c, const Extra& x, const Session* session_creds = nullptr) {
        sigv4::Request r;
        r.method = c.method;
        r.host = virtual_host ? options.bucket + "." + endpoint.host : endpoint.host;
        r.path = endpoint.base + "/" + (virtual_host ? "" : options.bucket + (c.key.empty() ? "" : "/")) + c.key;
        r.query = c.query;
        r.headers = c.headers;
        if (session_creds) r.headers.emplace_back("x-amz-s3session-token", session_creds->token);
        r.payload_sha256 = sigv4::hex_sha256(c.body);
        auto now = Clock::now() + std::chrono::seconds(clock_offset_s.load(std::memory_order_relaxed));
        sigv4::Signed s = (session_creds ? *session_creds->signer : signer).sign(r, now);
        http::Request h;
        h.method = c.method;
        h.url = endpoint.scheme + "://" + r.host + s.canonical_uri +
                (s.canonical_query.empty() ? "" : "?" + s.canonical_query);
        h.headers = r.headers;
        h.headers.insert(h.headers.end(), s.headers.begin(), s.headers.end());
        h.body = c.body;
        h.timeout = x.timeout;
        h.server_works = x.server_works;
        requests.fetch_add(1, std::memory_order_relaxed);
        std::uint64_t header_bytes = h.method.size() + h.url.size() + 12;
        for (const auto& [n, v] : h.headers) header_bytes += n.size() + v.size() + 4;
        bytes_sent.fetch_add(header_bytes + c.body.size(), std::memory_order_relaxed);
        body_bytes_sent.fetch_add(c.body.size(), std::memory_order_relaxed);
        http::Response resp = client.perform(h);
        bytes_received.fetch_add(resp.body.size(), std::memory_order_relaxed);
        return resp;
    }

    // The answer as a SinkResponse, before any op-specific reading.
    SinkResponse classify(const Call& c, const http::Response& resp, const Extra& x) {
        SinkResponse r;
        r.http_status = resp.status;
        r.error.request_id = resp.header("x-amz-request-id");
        r.server_time = s3resp::parse_http_date(resp.header("date"));
        if (resp.status == 0) {
            r.status =
                resp.curl_code == 60 /* CURLE_PEER_FAILED_VERIFICATION */ ? SinkStatus::Fatal : SinkStatus::Transient;
            r.detail = std::string(op_name(c.op)) + ": " + resp.curl_error;
            return r;
        }
        auto malformed = [&](const std::string& why) {
            r.status = SinkStatus::Transient;  // as if no answer had come: it says nothing
            r.detail = std::string(op_name(c.op)) + ": " + why;
            return r;
        };
        bool has_error_doc = !resp.body.empty() && s3xml::is_error(resp.body);
        if (has_error_doc) {
            S3ErrorInfo e = s3xml::parse_error(resp.body);
            r.error.code = e.code;
            r.error.message = e.message;
            if (!e.request_id.empty()) r.error.request_id = e.request_id;
        }
        const std::string& code = r.error.code;
        int s = resp.status;
        if (s >= 200 && s < 300 && !has_error_doc) {
            // What the appender decides on must be there: the ETag of an
            // object, and exactly the bytes asked for.
            if ((c.op == Op::Head || c.op == Op::Get) && resp.header("etag").empty()) {
                return malformed("a " + std::to_string(s) + " answer without an ETag");
            }
            if (c.op == Op::Get && x.range) {
                const std::uint64_t want = x.range->last - x.range->first + 1;
                const std::string expect =
                    "bytes " + std::to_string(x.range->first) + "-" + std::to_string(x.range->last) + "/";
                if (s != 206 || resp.header("content-range").rfind(expect, 0) != 0 || resp.body.size() != want) {
                    return malformed("a ranged read answered with other bytes than those asked for (" +
                                     std::to_string(s) + ", " + json::quote(resp.header("content-range")) + ", " +
                                     std::to_string(resp.body.size()) + " bytes)");
                }
            }
            return r;  // Ok
        }
        if (s >= 200 && s < 300) {
            // An error inside a 200 (CompleteMultipartUpload, UploadPartCopy).
            r.status = (code == "InternalError" || code == "SlowDown" || code == "ServiceUnavailable" || code.empty())
                           ? SinkStatus::Transient
                           : SinkStatus::Fatal;
            if (code == "PreconditionFailed") r.status = SinkStatus::PreconditionFailed;
            r.detail = "error inside a " + std::to_string(s) + " answer";
            return r;
        }
        if (s == 404) {
            r.status = code == "NoSuchBucket" ? SinkStatus::Fatal : SinkStatus::NotFound;
            if (code.empty()) r.error.code = c.op == Op::Head ? "NotFound" : "";
        } else if (s == 412) {
            r.status = SinkStatus::PreconditionFailed;
            if (code.empty()) r.error.code = "PreconditionFailed";
        } else if (s == 409) {
            r.status = SinkStatus::Conflict;
        } else if (s == 403) {
            if (code.empty() && r.server_time != 0) {
                // A HEAD has no error body: a clock far from the server's is the likely cause.
                auto local = std::chrono::duration_cast<std::chrono::seconds>(Clock::now().time_since_epoch()).count() +
                             clock_offset_s.load(std::memory_order_relaxed);
                if (std::llabs(r.server_time - local) > 300) r.error.code = "RequestTimeTooSkewed";
            }
            r.status = code == "RequestTimeTooSkewed" ? SinkStatus::Transient : SinkStatus::Auth;
            if (code.empty()) r.error.code = "AccessDenied";
        } else if (s == 400 &&
                   (code == "RequestTimeout" || code == "XAmzContentSHA256Mismatch" || code == "BadDigest" ||
                    code == "IncompleteBody" || code == "ExpiredToken" || code == "RequestTimeTooSkewed")) {
            r.status = code == "ExpiredToken" ? SinkStatus::Auth : SinkStatus::Transient;
        } else if (s == 400 &&
                   (code == "InvalidAccessKeyId" || code == "InvalidToken" || code == "AuthorizationHeaderMalformed")) {
            r.status = SinkStatus::Auth;
        } else if (s == 429 || s >= 500) {
            r.status = s == 501 ? SinkStatus::NotImplemented : SinkStatus::Transient;
        } else {
            r.status = SinkStatus::Fatal;
        }
        return r;
    }

    // Sends with retries. For conditional writes, a 412/409/404 after an
    // attempt whose outcome we could not see means "unknown", not "lost".
    SinkResponse call(const Call& c, http::Response* raw = nullptr, const Extra& x = {}) {
        bool earlier_unknown = false;
        SinkResponse last;
        const int attempts = t_single_attempt || x.single_attempt ? 1 : options.max_attempts;
        for (int attempt = 0; attempt < attempts; ++attempt) {
            if (attempt > 0) {
                retries.fetch_add(1, std::memory_order_relaxed);
                std::unique_lock<std::mutex> lock(cancel_mutex);
                cancel_cv.wait_for(lock, random::full_jitter(attempt, options.retry_base, options.retry_max),
                                   [&] { return cancelled.load(); });
            }
            if (cancelled.load()) {
                if (last.ok() || last.status != SinkStatus::Transient) {
                    last = SinkResponse{};
                    last.status = SinkStatus::Transient;
                }
                last.detail = std::string(op_name(c.op)) + ": cancelled: the writer is closing" +
                              (earlier_unknown ? " (an earlier attempt's outcome is unknown)" : "");
                last.may_have_applied = earlier_unknown;
                return last;
            }
            std::shared_ptr<const Session> s;
            if (directory_bucket) {
                SinkResponse failure;
                s = session_for(failure);
                if (!s) {
                    failure.may_have_applied = earlier_unknown;
                    if (failure.status != SinkStatus::Transient) return failure;
                    last = std::move(failure);
                    continue;
                }
            }
            http::Response resp = send(c, x, s.get());
            SinkResponse r = classify(c, resp, x);
            by_operation[static_cast<int>(c.op)][static_cast<int>(r.status)].fetch_add(1, std::memory_order_relaxed);
            if (r.error.code == "RequestTimeTooSkewed") correct_clock(resp, r);
            if (s && r.error.code == "ExpiredToken") {
                // The session ran out before we renewed it: a new one, and again.
                drop_session(s);
                r.status = SinkStatus::Transient;
            }
            if (r.status == SinkStatus::Transient) {
                if (resp.sent || resp.status != 0) earlier_unknown = true;
                r.may_have_applied = earlier_unknown;
                last = std::move(r);
                continue;
            }
            if (earlier_unknown && conditional_write(c.op) &&
                (r.status == SinkStatus::PreconditionFailed || r.status == SinkStatus::Conflict ||
                 r.status == SinkStatus::NotFound)) {
                r.status = SinkStatus::Transient;
                r.detail = "an earlier attempt's outcome is unknown; then " + r.describe();
                r.may_have_applied = true;
            }
            if (raw) *raw = std::move(resp);
            return r;
        }
        return last;
    }

    void correct_clock(const http::Response& resp, const SinkResponse& r) {
        std::int64_t server = s3xml::element(resp.body, "ServerTime")
                                  ? s3resp::parse_iso_time(*s3xml::element(resp.body, "ServerTime"))
                                  : 0;
        if (server == 0) server = r.server_time;
        if (server == 0) return;
        auto local = std::chrono::duration_cast<std::chrono::seconds>(Clock::now().time_since_epoch()).count();
        clock_offset_s.store(server - local);
        if (logger) {
            logger->log(LogLevel::Warning, "training_output_s3_clock_skew",
                        {{"offset_seconds", server - local}, {"endpoint", describe()}});
        }
    }

    static void read_object_headers(const http::Response& resp, SinkResponse& r) {
        s3resp::read_object_headers(resp.headers, r);
    }

    static void add_attributes(Call& c, const ObjectAttributes& a) {
        if (!a.content_type.empty()) c.headers.emplace_back("content-type", a.content_type);
        for (const auto& [name, value] : a.metadata) c.headers.emplace_back("x-amz-meta-" + lower(name), value);
    }

    static void add_conditions(Call& c, const WriteConditions& w, bool quoted_form) {
        if (w.if_none_match_any) c.headers.emplace_back("if-none-match", "*");
        if (!w.if_match.empty())
            c.headers.emplace_back("if-match", quoted_form ? "\"" + w.if_match + "\"" : w.if_match);
    }

    // Ceph RGW answers 412 to a quoted If-Match that matches: when the object
    // still has the ETag we sent, the other form is the one this server reads.
    // `used`: the form the refused request carried. Requests in flight at
    // once (the probe, appends, a compaction) may all be refused so: the form
    // flips once, from the one they used, never back.
    bool try_other_etag_form(const std::string& key, const std::string& etag, bool used) {
        if (etag_style_confirmed.load()) return quote_etags.load() != used;  // settled since: retry in that form
        Call h{Op::Head, "HEAD", key, {}, {}, {}, false};
        http::Response resp;
        SinkResponse r = call(h, &resp);
        if (!r.ok() || s3resp::unquote_etag(resp.header("etag")) != etag) return false;
        bool expected = used;
        const bool flipped = quote_etags.compare_exchange_strong(expected, !used);
        etag_style_confirmed = true;
        if (flipped && logger) {
            logger->log(LogLevel::Info, "training_output_s3_etag_form", {{"quoted", !used}, {"endpoint", describe()}});
        }
        return true;
    }

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

    // S3 Express One Zone: PUT with x-amz-write-offset-bytes, which lands
    // only at the object's size (0: a new object). Its refusals are this
    // sink's: InvalidWriteOffset (another append won) is Conflict, and so is
    // TooManyParts (10,000 appends: the appender appends once by copy, which
    // makes an object of few parts again).
    SinkResponse append_with_offset(const std::string& key, std::string_view body, std::uint64_t position,
                                    const ObjectAttributes& attributes, const WriteConditions& conditions) {
        Call c{Op::Append, "PUT", key, {}, {{"x-amz-write-offset-bytes", std::to_string(position)}}, body, false};
        // Metadata only when the object is created: AWS refuses it on appends.
        if (position == 0) {
            add_attributes(c, attributes);
        } else if (!attributes.content_type.empty()) {
            c.headers.emplace_back("content-type", attributes.content_type);
        }
        http::Response resp;
        Extra x;
        x.single_attempt = conditions.single_attempt;
        x.timeout = conditions.timeout;
        SinkResponse r = call(c, &resp, x);
        if (r.ok()) {
            r.etag = s3resp::unquote_etag(resp.header("etag"));
            r.appendable = true;
            const std::string size = resp.header("x-amz-object-size");
            r.size = size.empty() ? position + body.size() : std::strtoull(size.c_str(), nullptr, 10);
        } else if (r.http_status == 400 && (r.error.code == "InvalidWriteOffset" || r.error.code == "TooManyParts")) {
            r.status = SinkStatus::Conflict;
        }
        return r;
    }

    void probe(CurlS3Sink& sink, std::unique_lock<std::mutex>& held);
    void first_probe(CurlS3Sink& sink);

    // Ends the probe's thread (its request in progress aborts).
    void stop_prober(CurlS3Sink& sink) {
        if (!prober.joinable()) return;
        sink.cancel();
        prober.join();
    }
};

CurlS3Sink::CurlS3Sink(S3SinkOptions options, const Logger* logger)
    : impl_(std::make_unique<Impl>(std::move(options), logger)) {
    Impl& m = *impl_;
    if (m.probed.load()) return;  // nothing to probe
    m.prober = start_thread([this] { impl_->first_probe(*this); });
    std::exception_ptr error;
    {
        std::unique_lock<std::mutex> lock(m.prober_mutex);
        m.prober_cv.wait_for(lock, m.options.probe_wait, [&] { return m.first_probe_done.load(); });
        m.open_returned = true;
        error = m.probe_error;
    }
    if (!error && m.options.native_append == NativeAppend::On && m.probed.load() && !capabilities().native_append) {
        error = std::make_exception_ptr(
            Error(ErrorCode::Config, "configuration key \"s3_append_mode\": native, but " + m.describe() +
                                         " has no native appends (its probe found none); use auto or copy"));
    }
    if (error) {
        m.stop_prober(*this);
        std::rethrow_exception(error);
    }
}

CurlS3Sink::~CurlS3Sink() { impl_->stop_prober(*this); }

SinkResponse CurlS3Sink::head(const std::string& key) {
    Impl::Call c{Op::Head, "HEAD", key, {}, {}, {}, false};
    http::Response resp;
    SinkResponse r = impl_->call(c, &resp);
    if (r.ok()) {
        Impl::read_object_headers(resp, r);
        r.appendable = r.appendable || impl_->directory_bucket;  // every object there takes appends
    }
    return r;
}

SinkResponse CurlS3Sink::get(const std::string& key, std::optional<ByteRange> range) {
    Impl::Call c{Op::Get, "GET", key, {}, {}, {}, false};
    if (range)
        c.headers.emplace_back("range", "bytes=" + std::to_string(range->first) + "-" + std::to_string(range->last));
    http::Response resp;
    Extra x;
    x.range = range;
    SinkResponse r = impl_->call(c, &resp, x);
    if (r.ok()) {
        Impl::read_object_headers(resp, r);
        r.appendable = r.appendable || impl_->directory_bucket;
        r.body = std::move(resp.body);
        if (!range) r.size = r.body.size();
    }
    return r;
}

SinkResponse CurlS3Sink::put(const std::string& key, std::string_view body, const ObjectAttributes& attributes,
                             const WriteConditions& conditions) {
    http::Response resp;
    SinkResponse r = impl_->conditional_call(
        key, conditions,
        [&] {
            Impl::Call c{Op::Put, "PUT", key, {}, {}, body, false};
            Impl::add_attributes(c, attributes);
            return c;
        },
        &resp);
    if (r.ok()) r.etag = s3resp::unquote_etag(resp.header("etag"));
    return r;
}

SinkResponse CurlS3Sink::remove(const std::string& key) {
    Impl::Call c{Op::Remove, "DELETE", key, {}, {}, {}, false};
    return impl_->call(c);
}

SinkResponse CurlS3Sink::create_multipart(const std::string& key, const ObjectAttributes& attributes) {
    Impl::Call c{Op::CreateMultipart, "POST", key, {{"uploads", ""}}, {}, {}, true};
    Impl::add_attributes(c, attributes);
    http::Response resp;
    SinkResponse r = impl_->call(c, &resp);
    if (r.ok()) {
        r.upload_id = s3xml::element(resp.body, "UploadId").value_or("");
        if (r.upload_id.empty()) {
            r.status = SinkStatus::Transient;
            r.detail = "CreateMultipartUpload answered without an UploadId";
        }
    }
    return r;
}

SinkResponse CurlS3Sink::upload_part(const std::string& key, const std::string& upload_id, int part_number,
                                     std::string_view body) {
    Impl::Call c{Op::UploadPart, "PUT", key, {{"partNumber", std::to_string(part_number)}, {"uploadId", upload_id}}, {},
                 body,           false};
    http::Response resp;
    SinkResponse r = impl_->call(c, &resp);
    if (r.ok()) r.etag = s3resp::unquote_etag(resp.header("etag"));
    return r;
}

SinkResponse CurlS3Sink::upload_part_copy(const std::string& key, const std::string& upload_id, int part_number,
                                          const std::string& source_key, const std::string& source_if_match,
                                          std::optional<ByteRange> range) {
    Impl::Call c{Op::UploadPartCopy,
                 "PUT",
                 key,
                 {{"partNumber", std::to_string(part_number)}, {"uploadId", upload_id}},
                 {},
                 {},
                 true};
    c.headers.emplace_back("x-amz-copy-source",
                           sigv4::uri_encode("/" + impl_->options.bucket + "/" + source_key, false));
    if (range) {
        c.headers.emplace_back("x-amz-copy-source-range",
                               "bytes=" + std::to_string(range->first) + "-" + std::to_string(range->last));
    }
    if (!source_if_match.empty()) c.headers.emplace_back("x-amz-copy-source-if-match", impl_->quoted(source_if_match));
    http::Response resp;
    Extra x;
    x.server_works = true;
    SinkResponse r = impl_->call(c, &resp, x);
    if (r.ok()) {
        // Only a CopyPartResult proves a server-side copy; a server that
        // ignored the copy source would have stored an empty part.
        auto etag = s3xml::element(resp.body, "ETag");
        if (resp.body.find("CopyPartResult") == std::string::npos || !etag) {
            r.status = SinkStatus::NotImplemented;
            r.detail = "UploadPartCopy answered without a CopyPartResult";
            return r;
        }
        r.etag = s3resp::unquote_etag(*etag);
    }
    return r;
}

SinkResponse CurlS3Sink::complete_multipart(const std::string& key, const std::string& upload_id,
                                            const std::vector<CompletedPart>& parts,
                                            const WriteConditions& conditions) {
    std::string xml = "<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">";
    for (const auto& p : parts) {
        xml += "<Part><PartNumber>" + std::to_string(p.number) + "</PartNumber><ETag>\"" + s3xml::escape(p.etag) +
               "\"</ETag></Part>";
    }
    xml += "</CompleteMultipartUpload>";
    http::Response resp;
    SinkResponse r = impl_->conditional_call(
        key, conditions,
        [&] {
            return Impl::Call{
                Op::Complete, "POST", key, {{"uploadId", upload_id}}, {{"content-type", "application/xml"}}, xml, true};
        },
        &resp);
    if (r.ok()) r.etag = s3resp::unquote_etag(s3xml::element(resp.body, "ETag").value_or(""));  // may be empty (RGW)
    return r;
}

SinkResponse CurlS3Sink::abort_multipart(const std::string& key, const std::string& upload_id) {
    Impl::Call c{Op::Abort, "DELETE", key, {{"uploadId", upload_id}}, {}, {}, false};
    return impl_->call(c);
}

SinkResponse CurlS3Sink::append_at(const std::string& key, std::string_view body, std::uint64_t position,
                                   const ObjectAttributes& attributes, const WriteConditions& conditions) {
    if (impl_->directory_bucket) return impl_->append_with_offset(key, body, position, attributes, conditions);
    Impl::Call c{Op::Append, "PUT", key, {{"append", ""}, {"position", std::to_string(position)}}, {}, body, false};
    Impl::add_attributes(c, attributes);
    http::Response resp;
    Extra x;
    x.single_attempt = conditions.single_attempt;
    x.timeout = conditions.timeout;
    SinkResponse r = impl_->call(c, &resp, x);
    if (r.ok()) {
        r.etag = s3resp::unquote_etag(resp.header("etag"));
        // Without the next position, the server did not append: it ignored
        // ?append and wrote a plain object (the probe's test).
        auto next = s3resp::next_append_position(resp.headers);
        r.appendable = next.has_value();
        r.size = next.value_or(0);
    }
    return r;
}

SinkResponse CurlS3Sink::list(const std::string& prefix, const std::string& continuation, ListPage& page) {
    // ListObjects (version 1), whose next page starts after a key: every
    // store has it, and s3rver answers every truncated ListObjectsV2 page
    // with a 500.
    Impl::Call c{Op::List, "GET", "", {{"prefix", prefix}}, {}, {}, true};
    if (!continuation.empty()) c.query.emplace_back("marker", continuation);
    http::Response resp;
    SinkResponse r = impl_->call(c, &resp);
    if (r.ok() && !s3xml::parse_list(resp.body, page)) {
        r.status = SinkStatus::Transient;  // as if no answer had come
        r.detail = "ListObjects: the answer is not a listing";
    }
    return r;
}

SinkResponse CurlS3Sink::remove_many(const std::vector<std::string>& keys, std::vector<std::string>& failed) {
    if (keys.empty()) return SinkResponse{};
    if (!impl_->multi_delete.load()) return S3Sink::remove_many(keys, failed);
    std::string body = "<Delete xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Quiet>true</Quiet>";
    for (const auto& k : keys) body += "<Object><Key>" + s3xml::escape(k) + "</Key></Object>";
    body += "</Delete>";
    // Content-MD5 is what every S3 store asks of this request.
    unsigned char md5[EVP_MAX_MD_SIZE];
    unsigned int md5_len = 0;
    EVP_Digest(body.data(), body.size(), md5, &md5_len, EVP_md5(), nullptr);
    unsigned char b64[4 * ((EVP_MAX_MD_SIZE + 2) / 3) + 1];
    const int b64_len = EVP_EncodeBlock(b64, md5, static_cast<int>(md5_len));
    Impl::Call c{Op::RemoveMany,
                 "POST",
                 "",
                 {{"delete", ""}},
                 {{"content-md5", std::string(reinterpret_cast<const char*>(b64), static_cast<std::size_t>(b64_len))},
                  {"content-type", "application/xml"}},
                 body,
                 true};
    http::Response resp;
    SinkResponse r = impl_->call(c, &resp);
    if (r.status == SinkStatus::NotImplemented || (r.status == SinkStatus::Fatal && r.http_status == 405)) {
        impl_->multi_delete = false;  // one DELETE each from now on
        return S3Sink::remove_many(keys, failed);
    }
    if (r.ok() && !s3xml::parse_delete_result(resp.body, failed)) {
        r.status = SinkStatus::Transient;
        r.detail = "DeleteObjects: the answer is not a delete result";
    }
    return r;
}

SinkResponse CurlS3Sink::create_bucket() {
    std::string body;
    if (impl_->options.region != "us-east-1") {
        body = "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><LocationConstraint>" +
               s3xml::escape(impl_->options.region) + "</LocationConstraint></CreateBucketConfiguration>";
    }
    Impl::Call c{Op::CreateBucket, "PUT", "", {}, {}, body, false};
    SinkResponse r = impl_->call(c);
    if (r.status == SinkStatus::Conflict && r.error.code == "BucketAlreadyOwnedByYou") r.status = SinkStatus::Ok;
    return r;
}

SinkCapabilities CurlS3Sink::capabilities() const {
    // Until the probe has its answers, the safe ones (conditional PUT, no
    // conditional Complete: appends take a lease). Not probed yet: it runs
    // again here when it is time, unless a probe is running (never waited for).
    if (!impl_->probed.load() && impl_->first_probe_done.load()) {
        std::unique_lock<std::mutex> lock(impl_->probe_mutex, std::try_to_lock);
        if (lock.owns_lock()) impl_->probe(const_cast<CurlS3Sink&>(*this), lock);
    }
    std::lock_guard<std::mutex> lock(impl_->caps_mutex);
    return impl_->caps;
}

std::string CurlS3Sink::describe() const { return impl_->describe(); }

void CurlS3Sink::cancel() {
    {
        std::lock_guard<std::mutex> lock(impl_->cancel_mutex);
        impl_->cancelled = true;
    }
    impl_->cancel_cv.notify_all();
}

S3SinkStats CurlS3Sink::stats() const {
    S3SinkStats s;
    s.requests = impl_->requests.load();
    s.retries = impl_->retries.load();
    s.bytes_sent = impl_->bytes_sent.load();
    s.body_bytes_sent = impl_->body_bytes_sent.load();
    s.bytes_received = impl_->bytes_received.load();
    for (int op = 0; op < kOps; ++op) {
        for (int st = 0; st < kStatuses; ++st) {
            const std::uint64_t n = impl_->by_operation[op][st].load(std::memory_order_relaxed);
            if (n)
                s.by_operation.push_back(
                    {op_name(static_cast<Op>(op)), sink_status_name(static_cast<SinkStatus>(st)), n});
        }
    }
    return s;
}

// What does this server enforce? A probe object under probe_prefix:
//   PUT it; PUT If-None-Match:* must be refused; PUT If-Match (quoted, else
//   bare) must pass; a one-part multipart upload completed with a wrong
//   If-Match must be refused. Then it is removed. Native appends: an append
//   at position 0 to a second probe object must answer its next position,
//   and a second one at 0 (stale) must be refused with 409.
// Only a definite answer lowers what the appender relies on: a 200 to
// If-None-Match:* on an existing object, seen twice, is a server without
// conditional writes; an error, a timeout or a reset says nothing. Until every
// step has its answer, the capabilities stay the safe ones (conditional
// writes, appends under a lease) and the probe runs again later.
// The first one runs on a thread of its own (first_probe), so that open
// never waits on the network longer than probe_wait.
void CurlS3Sink::Impl::first_probe(CurlS3Sink& sink) {
    std::exception_ptr error;
    {
        std::unique_lock<std::mutex> held(probe_mutex);
        try {
            probe(sink, held);
        } catch (...) {
            error = std::current_exception();  // rejected credentials, no such bucket
        }
    }
    bool log_error = false;
    {
        std::lock_guard<std::mutex> lock(prober_mutex);
        first_probe_done = true;
        probe_error = error;
        log_error = error && open_returned;
    }
    prober_cv.notify_all();
    if (log_error && logger) {
        try {
            std::rethrow_exception(error);
        } catch (const std::exception& e) {
            logger->log(LogLevel::Error, "training_output_s3_probe_failed",
                        {{"endpoint", describe()},
                         {"error", e.what()},
                         {"detail", "appends fail with the same error; the lines stay spooled"}});
        }
    }
}

// With probe_mutex held.
void CurlS3Sink::Impl::probe(CurlS3Sink& sink, std::unique_lock<std::mutex>& held) {
    Impl& m = *this;
    (void)held;
    if (m.probed.load() || m.cancelled.load() || std::chrono::steady_clock::now() < m.next_probe) return;
    // One attempt per request: an unanswered step defers the whole probe.
    t_single_attempt = true;
    struct Reset {
        ~Reset() { t_single_attempt = false; }
    } reset;
    const std::string key = m.options.probe_prefix + random::token_hex(8);
    ObjectAttributes attrs;
    attrs.content_type = "text/plain";
    // An answer that decides nothing: keep the safe capabilities, try again later.
    auto undecided = [&](const SinkResponse& r) {
        if (r.status == SinkStatus::Auth) {
            throw Error(ErrorCode::Auth, "S3 rejected the credentials of access key " +
                                             json::quote(m.options.credentials.access_key_id) + " at " + m.describe() +
                                             ": " + r.describe());
        }
        if (r.status == SinkStatus::Fatal && r.error.code == "NoSuchBucket") {
            throw Error(ErrorCode::Storage, "S3 bucket " + json::quote(m.options.bucket) + " does not exist at " +
                                                m.describe() + ": " + r.describe());
        }
        sink.remove(key);  // best effort
        if (m.options.native_append != NativeAppend::Off) sink.remove(key + "-append");
        const int failures = std::min(++m.probe_failures, 6);
        m.next_probe = std::chrono::steady_clock::now() + std::chrono::seconds(1 << failures);
        if (m.logger) {
            m.logger->log(LogLevel::Warning, "training_output_s3_probe_deferred",
                          {{"endpoint", m.describe()},
                           {"answer", r.describe()},
                           {"retry_in_seconds", static_cast<std::int64_t>(1) << failures},
                           {"detail", "until the probe is answered, appends use conditions and a lease"}});
        }
    };
    SinkCapabilities found = sink.capabilities();  // what the options fixed
    // Each step returns false when an answer decided nothing (undecided() ran).
    auto defer_probe = [&](const SinkResponse& r) {
        undecided(r);
        return false;
    };
    auto probe_native = [&]() -> bool {
        const std::string akey = key + "-append";
        SinkResponse a = sink.append_at(akey, "probe\n", 0, attrs);
        if (a.ok() && a.appendable && a.size == 6) {
            SinkResponse stale = sink.append_at(akey, "stale\n", 0, attrs);
            if (!stale.ok() && stale.status != SinkStatus::Conflict) return defer_probe(stale);
            found.native_append = stale.status == SinkStatus::Conflict;  // else the position is not enforced
            // S3 Express documents its offset check as the object's size at
            // the time of the write (untested against AWS); RGW's races.
            found.native_append_atomic = found.native_append && m.directory_bucket;
        } else if (a.ok() || a.status == SinkStatus::NotImplemented ||
                   (a.status == SinkStatus::Fatal && a.error.code != "NoSuchBucket")) {
            found.native_append = false;  // ignored (a plain object was written) or refused
        } else {
            return defer_probe(a);
        }
        sink.remove(akey);
        return true;
    };
    auto probe_conditions = [&]() -> bool {
        SinkResponse first = sink.put(key, "probe\n", attrs, WriteConditions{});
        if (!first.ok()) return defer_probe(first);
        WriteConditions none_match;
        none_match.if_none_match_any = true;
        SinkResponse nm = sink.put(key, "probe\n", attrs, none_match);
        if (nm.ok()) {
            // It took an If-None-Match:* write to an existing object. Once could
            // be a fluke of a proxy; twice is the server.
            nm = sink.put(key, "probe again\n", attrs, none_match);
            if (!nm.ok() && nm.status != SinkStatus::PreconditionFailed) return defer_probe(nm);
        } else if (nm.status != SinkStatus::PreconditionFailed) {
            return defer_probe(nm);
        }
        found.conditional_writes = nm.status == SinkStatus::PreconditionFailed;
        found.conditional_complete = false;
        if (found.conditional_writes) {
            WriteConditions match;
            SinkResponse h = sink.head(key);
            if (!h.ok()) return defer_probe(h);
            match.if_match = h.etag;
            SinkResponse im = sink.put(key, "probe 2\n", attrs, match);  // flips to the bare form if needed
            if (!im.ok()) return defer_probe(im);
            SinkResponse up = sink.create_multipart(key, attrs);
            if (!up.ok()) return defer_probe(up);
            SinkResponse part = sink.upload_part(key, up.upload_id, 1, "probe 3\n");
            if (!part.ok()) {
                sink.abort_multipart(key, up.upload_id);
                return defer_probe(part);
            }
            WriteConditions stale;
            stale.if_match = "0123456789abcdef0123456789abcdef";
            SinkResponse done = sink.complete_multipart(key, up.upload_id, {{1, part.etag}}, stale);
            if (!done.ok()) sink.abort_multipart(key, up.upload_id);
            if (!done.ok() && done.status != SinkStatus::PreconditionFailed) return defer_probe(done);
            found.conditional_complete = done.status == SinkStatus::PreconditionFailed;
        }
        sink.remove(key);
        return true;
    };
    if (m.options.native_append != NativeAppend::Off && !probe_native()) return;
    if (m.options.conditional_writes == ConditionalWrites::Auto && !probe_conditions()) return;
    found.multipart_copy = true;  // found out on first use: NotImplemented is remembered by the appender
    found.min_part_size = 5ull << 20;
    {
        std::lock_guard<std::mutex> caps_lock(m.caps_mutex);
        m.caps = found;
    }
    m.probed = true;
    if (m.logger && m.options.native_append == NativeAppend::On && !found.native_append) {
        m.logger->log(LogLevel::Error, "training_output_s3_no_native_append",
                      {{"endpoint", m.describe()},
                       {"detail", "s3_append_mode is native, but the store has no native appends: appending by copy"}});
    }
    if (m.logger) {
        LogLevel level = found.conditional_writes || found.native_append ? LogLevel::Info : LogLevel::Warning;
        m.logger->log(
            level, "training_output_s3_capabilities",
            {{"endpoint", m.describe()},
             {"conditional_writes", found.conditional_writes},
             {"conditional_complete", found.conditional_complete},
             {"native_append", found.native_append},
             {"etag_quoted", m.quote_etags.load()},
             {"note", found.native_append           ? "native appends (append at a position): no lease, no copy"
                      : !found.conditional_writes   ? "no conditional writes: safe with a single writer per key only"
                      : !found.conditional_complete ? "CompleteMultipartUpload ignores If-Match: appends take a lease"
                                                    : "conditional appends"}});
    }
}

}  // namespace training_output
