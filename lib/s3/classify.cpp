// What an S3 answer means (classify.hpp).
#include "s3/classify.hpp"

#include <cstdlib>
#include <string>

#include "common/json.hpp"
#include "s3/s3_response.hpp"
#include "s3/s3_xml.hpp"

namespace training_output::s3 {

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

SinkResponse classify(Op op, const http::Response& resp, const std::optional<ByteRange>& range,
                      std::int64_t local_seconds) {
    SinkResponse r;
    r.http_status = resp.status;
    r.error.request_id = resp.header("x-amz-request-id");
    r.server_time = s3resp::parse_http_date(resp.header("date"));
    if (resp.status == 0) {
        r.status =
            resp.curl_code == 60 /* CURLE_PEER_FAILED_VERIFICATION */ ? SinkStatus::Fatal : SinkStatus::Transient;
        r.detail = std::string(op_name(op)) + ": " + resp.curl_error;
        return r;
    }
    auto malformed = [&](const std::string& why) {
        r.status = SinkStatus::Transient;  // as if no answer had come: it says nothing
        r.detail = std::string(op_name(op)) + ": " + why;
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
        if ((op == Op::Head || op == Op::Get) && resp.header("etag").empty()) {
            return malformed("a " + std::to_string(s) + " answer without an ETag");
        }
        if (op == Op::Get && range) {
            const std::uint64_t want = range->last - range->first + 1;
            const std::string expect =
                "bytes " + std::to_string(range->first) + "-" + std::to_string(range->last) + "/";
            if (s != 206 || resp.header("content-range").rfind(expect, 0) != 0 || resp.body.size() != want) {
                return malformed("a ranged read answered with other bytes than those asked for (" + std::to_string(s) +
                                 ", " + json::quote(resp.header("content-range")) + ", " +
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
        if (code.empty()) r.error.code = op == Op::Head ? "NotFound" : "";
    } else if (s == 412) {
        r.status = SinkStatus::PreconditionFailed;
        if (code.empty()) r.error.code = "PreconditionFailed";
    } else if (s == 409) {
        r.status = SinkStatus::Conflict;
    } else if (s == 403) {
        if (code.empty() && r.server_time != 0) {
            // A HEAD has no error body: a clock far from the server's is the likely cause.
            if (std::llabs(r.server_time - local_seconds) > 300) r.error.code = "RequestTimeTooSkewed";
        }
        r.status = code == "RequestTimeTooSkewed" ? SinkStatus::Transient : SinkStatus::Auth;
        if (code.empty()) r.error.code = "AccessDenied";
    } else if (s == 400 && (code == "RequestTimeout" || code == "XAmzContentSHA256Mismatch" || code == "BadDigest" ||
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

}  // namespace training_output::s3
