#include "training_output/sys/s3_sink.hpp"

namespace training_output {

const char* sink_status_name(SinkStatus status) noexcept {
    switch (status) {
        case SinkStatus::Ok: return "ok";
        case SinkStatus::NotFound: return "not_found";
        case SinkStatus::PreconditionFailed: return "precondition_failed";
        case SinkStatus::Conflict: return "conflict";
        case SinkStatus::NotImplemented: return "not_implemented";
        case SinkStatus::Transient: return "transient";
        case SinkStatus::Auth: return "auth";
        case SinkStatus::Fatal: return "fatal";
    }
    return "unknown";
}

std::string SinkResponse::describe() const {
    std::string out = sink_status_name(status);
    if (http_status != 0) out += " (HTTP " + std::to_string(http_status) + ")";
    if (!error.code.empty()) out += " " + error.code;
    if (!error.message.empty()) out += ": " + error.message;
    if (!detail.empty()) out += (error.message.empty() ? ": " : "; ") + detail;
    if (!error.request_id.empty()) out += " [request id " + error.request_id + "]";
    return out;
}

SinkResponse S3Sink::append_at(const std::string&, std::string_view, std::uint64_t, const ObjectAttributes&,
                               const WriteConditions&) {
    SinkResponse r;
    r.status = SinkStatus::NotImplemented;
    r.detail = "this store has no native append";
    return r;
}

SinkResponse S3Sink::remove_if_unmodified_since(const std::string&, std::int64_t) {
    SinkResponse r;
    r.status = SinkStatus::NotImplemented;
    r.detail = "this store has no conditional delete";
    return r;
}

SinkResponse S3Sink::remove_many(const std::vector<std::string>& keys, std::vector<std::string>& failed) {
    SinkResponse last;
    for (const auto& k : keys) {
        SinkResponse r = remove(k);
        if (!r.ok() && r.status != SinkStatus::NotFound) {
            failed.push_back(k);
            last = std::move(r);
        }
    }
    return last;  // Ok: each key was answered (failures are in `failed`)
}

SinkResponse S3Sink::list(const std::string&, const std::string&, ListPage&) {
    SinkResponse r;
    r.status = SinkStatus::NotImplemented;
    r.detail = "this store cannot list its objects";
    return r;
}

}  // namespace training_output
