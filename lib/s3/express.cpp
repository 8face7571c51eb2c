// S3 Express One Zone directory buckets ("<name>--<zone id>--x-s3"):
// requests are signed for "s3express" with a session's credentials
// (CreateSession, renewed before they expire), and native appends are PUTs
// with x-amz-write-offset-bytes (curl_s3_sink_impl.hpp).
#include <cstdlib>

#include "s3/curl_s3_sink_impl.hpp"
#include "s3/s3_response.hpp"
#include "s3/s3_xml.hpp"

namespace training_output {

// A directory bucket's session: the current one, or a new one from
// CreateSession (its failure as the answer).
std::shared_ptr<const CurlS3Sink::Impl::Session> CurlS3Sink::Impl::session_for(SinkResponse& failure) {
    std::lock_guard<std::mutex> lock(session_mutex);
    if (session && std::chrono::steady_clock::now() < session->renew_at) return session;
    Call c{Op::CreateSession, "GET", "", {{"session", ""}}, {}, {}, true};
    http::Response resp = send(c, Extra{}, nullptr);
    SinkResponse r = s3::classify(c.op, resp, std::nullopt, local_seconds());
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

void CurlS3Sink::Impl::drop_session(const std::shared_ptr<const Session>& s) {
    std::lock_guard<std::mutex> lock(session_mutex);
    if (session == s) session.reset();
}

// S3 Express One Zone: PUT with x-amz-write-offset-bytes, which lands
// only at the object's size (0: a new object). Its refusals are this
// sink's: InvalidWriteOffset (another append won) is Conflict, and so is
// TooManyParts (10,000 appends: the appender appends once by copy, which
// makes an object of few parts again).
SinkResponse CurlS3Sink::Impl::append_with_offset(const std::string& key, std::string_view body, std::uint64_t position,
                                                  const ObjectAttributes& attributes,
                                                  const WriteConditions& conditions) {
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

}  // namespace training_output
