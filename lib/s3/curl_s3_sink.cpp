// CurlS3Sink: S3 over SigV4 and libcurl. The S3 operations, each a request
// and what its answer holds; the client, the probe and S3 Express are in
// the files curl_s3_sink_impl.hpp names.
#include "s3/curl_s3_sink.hpp"

#include <openssl/evp.h>

#include "common/thread.hpp"
#include "common/time.hpp"
#include "s3/curl_s3_sink_impl.hpp"
#include "s3/s3_response.hpp"
#include "s3/s3_xml.hpp"
#include "training_output/error.hpp"

namespace training_output {

using s3::Op;

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
        s3resp::read_object_headers(resp.headers, r);
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
        s3resp::read_object_headers(resp.headers, r);
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

SinkResponse CurlS3Sink::remove_if_unmodified_since(const std::string& key, std::int64_t unix_seconds) {
    // RGW's header; other stores may ignore it and delete anyway (AWS S3,
    // S3 Express), so it is sent only where the probe found RGW's appends.
    if (impl_->directory_bucket || !capabilities().native_append)
        return S3Sink::remove_if_unmodified_since(key, unix_seconds);
    Impl::Call c{Op::Remove, "DELETE", key, {}, {}, {}, false};
    c.headers.emplace_back(
        "x-amz-delete-if-unmodified-since",
        format_iso8601(std::chrono::system_clock::from_time_t(static_cast<std::time_t>(unix_seconds))));
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
    for (int op = 0; op < s3::kOps; ++op) {
        for (int st = 0; st < kStatuses; ++st) {
            const std::uint64_t n = impl_->by_operation[op][st].load(std::memory_order_relaxed);
            if (n)
                s.by_operation.push_back(
                    {s3::op_name(static_cast<Op>(op)), sink_status_name(static_cast<SinkStatus>(st)), n});
        }
    }
    return s;
}

}  // namespace training_output
