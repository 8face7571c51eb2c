// CurlS3Sink's client: each request signed (SigV4) and sent over libcurl,
// retried with capped full-jitter backoff while its answer is Transient;
// RequestTimeTooSkewed corrects the clock; a 412 to an If-Match may mean the
// server reads the other ETag form (curl_s3_sink_impl.hpp).
#include <cstdlib>

#include "common/ascii.hpp"
#include "common/json.hpp"
#include "common/random.hpp"
#include "s3/curl_s3_sink_impl.hpp"
#include "s3/s3_response.hpp"
#include "s3/s3_xml.hpp"
#include "training_output/error.hpp"

namespace training_output {

using Clock = std::chrono::system_clock;

thread_local bool CurlS3Sink::Impl::t_single_attempt = false;

// Checked before anything is built from them, so that errors name the keys.
S3SinkOptions CurlS3Sink::Impl::validated(S3SinkOptions o) {
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

CurlS3Sink::Impl::Impl(S3SinkOptions o, const Logger* l)
    : options(validated(std::move(o))),
      logger(l),
      endpoint(s3::parse_endpoint(options.endpoint_url)),
      directory_bucket(s3::is_directory_bucket(options.bucket)),
      signer(options.credentials, sigv4::Options{options.region, directory_bucket ? "s3express" : "s3", true}),
      client(http::ClientOptions{options.connect_timeout, options.request_timeout, 1024, options.low_speed_time,
                                 options.verify_tls, options.ca_file, 16, &cancelled}) {
    virtual_host = s3::virtual_host(options.addressing, endpoint, options.bucket);
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

std::string CurlS3Sink::Impl::describe() const {
    return "s3 " + endpoint.scheme + "://" + endpoint.host + endpoint.base + " bucket " + options.bucket;
}

std::int64_t CurlS3Sink::Impl::local_seconds() const {
    return std::chrono::duration_cast<std::chrono::seconds>(Clock::now().time_since_epoch()).count() +
           clock_offset_s.load(std::memory_order_relaxed);
}

// One HTTP exchange, signed now (with `s`'s credentials when given).
http::Response CurlS3Sink::Impl::send(const Call& c, const Extra& x, const Session* session_creds) {
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
    h.url =
        endpoint.scheme + "://" + r.host + s.canonical_uri + (s.canonical_query.empty() ? "" : "?" + s.canonical_query);
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

// Sends with retries. For conditional writes, a 412/409/404 after an
// attempt whose outcome we could not see means "unknown", not "lost".
SinkResponse CurlS3Sink::Impl::call(const Call& c, http::Response* raw, const Extra& x) {
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
            last.detail = std::string(s3::op_name(c.op)) + ": cancelled: the writer is closing" +
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
        SinkResponse r = s3::classify(c.op, resp, x.range, local_seconds());
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
        if (earlier_unknown && s3::conditional_write(c.op) &&
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

void CurlS3Sink::Impl::correct_clock(const http::Response& resp, const SinkResponse& r) {
    std::int64_t server =
        s3xml::element(resp.body, "ServerTime") ? s3resp::parse_iso_time(*s3xml::element(resp.body, "ServerTime")) : 0;
    if (server == 0) server = r.server_time;
    if (server == 0) return;
    auto local = std::chrono::duration_cast<std::chrono::seconds>(Clock::now().time_since_epoch()).count();
    clock_offset_s.store(server - local);
    if (logger) {
        logger->log(LogLevel::Warning, "training_output_s3_clock_skew",
                    {{"offset_seconds", server - local}, {"endpoint", describe()}});
    }
}

void CurlS3Sink::Impl::add_attributes(Call& c, const ObjectAttributes& a) {
    if (!a.content_type.empty()) c.headers.emplace_back("content-type", a.content_type);
    for (const auto& [name, value] : a.metadata) c.headers.emplace_back("x-amz-meta-" + ascii_lower(name), value);
}

void CurlS3Sink::Impl::add_conditions(Call& c, const WriteConditions& w, bool quoted_form) {
    if (w.if_none_match_any) c.headers.emplace_back("if-none-match", "*");
    if (!w.if_match.empty()) c.headers.emplace_back("if-match", quoted_form ? "\"" + w.if_match + "\"" : w.if_match);
}

// Ceph RGW answers 412 to a quoted If-Match that matches: when the object
// still has the ETag we sent, the other form is the one this server reads.
// `used`: the form the refused request carried. Requests in flight at
// once (the probe, appends, a compaction) may all be refused so: the form
// flips once, from the one they used, never back.
bool CurlS3Sink::Impl::try_other_etag_form(const std::string& key, const std::string& etag, bool used) {
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

}  // namespace training_output
