// MemorySink: S3 semantics in memory (AWS flavour: If-Match on a missing key
// is 404), plus a fault hook for tests.
#include "memory_sink.hpp"

#include <chrono>

#include "common/random.hpp"

namespace training_output {
namespace {

std::int64_t unix_now() {
    return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

}  // namespace

MemorySink::MemorySink(SinkCapabilities capabilities) : capabilities_(capabilities) {}

void MemorySink::set_fault_hook(FaultHook hook) {
    std::lock_guard<std::mutex> lock(mutex_);
    hook_ = std::move(hook);
}

std::optional<MemorySink::Fault> MemorySink::fault(Op op, const std::string& key) {
    FaultHook hook;
    {
        std::lock_guard<std::mutex> lock(mutex_);
        ++requests_[op];
        hook = hook_;
    }
    if (!hook) return std::nullopt;
    return hook(op, key);
}

SinkResponse MemorySink::answer(SinkStatus status, int http, const char* code) {
    SinkResponse r;
    r.status = status;
    r.http_status = http;
    r.error.code = code;
    return r;
}

std::string MemorySink::next_etag() { return "m" + std::to_string(++etag_counter_) + "-" + random::token_hex(4); }

// Runs `body` unless a fault answers first; an "applied" fault runs it and
// replaces its answer.
template <class F>
SinkResponse MemorySink::run(Op op, const std::string& key, F&& body) {
    auto f = fault(op, key);
    if (f && !f->applied) return f->response;
    SinkResponse real = body();
    if (real.server_time == 0) real.server_time = unix_now();
    if (!f) return real;
    SinkResponse answer = f->response;
    answer.may_have_applied = true;  // it did: the fault only took its answer away
    return answer;
}

SinkResponse MemorySink::head(const std::string& key) {
    return run(Op::Head, key, [&]() -> SinkResponse {
        std::lock_guard<std::mutex> lock(mutex_);
        auto it = objects_.find(key);
        if (it == objects_.end()) return answer(SinkStatus::NotFound, 404, "NoSuchKey");
        SinkResponse r;
        r.http_status = 200;
        r.etag = it->second.etag;
        r.size = it->second.data.size();
        r.metadata = it->second.attributes.metadata;
        r.last_modified = it->second.last_modified;
        r.appendable = it->second.appendable;
        return r;
    });
}

SinkResponse MemorySink::get(const std::string& key, std::optional<ByteRange> range) {
    return run(Op::Get, key, [&]() -> SinkResponse {
        std::lock_guard<std::mutex> lock(mutex_);
        auto it = objects_.find(key);
        if (it == objects_.end()) return answer(SinkStatus::NotFound, 404, "NoSuchKey");
        const std::string& data = it->second.data;
        SinkResponse r;
        r.http_status = 200;
        r.etag = it->second.etag;
        r.size = data.size();
        r.last_modified = it->second.last_modified;
        if (range) {
            if (range->first >= data.size() || range->last < range->first) {
                return answer(SinkStatus::Fatal, 416, "InvalidRange");
            }
            std::uint64_t last = std::min<std::uint64_t>(range->last, data.size() - 1);
            r.http_status = 206;
            r.body = data.substr(range->first, last - range->first + 1);
        } else {
            r.body = data;
        }
        return r;
    });
}

SinkResponse MemorySink::put(const std::string& key, std::string_view body, const ObjectAttributes& attributes,
                             const WriteConditions& conditions) {
    return run(Op::Put, key, [&]() -> SinkResponse {
        std::lock_guard<std::mutex> lock(mutex_);
        bytes_received_ += body.size();
        auto it = objects_.find(key);
        if (capabilities_.conditional_writes) {
            if (conditions.if_none_match_any && it != objects_.end()) {
                return answer(SinkStatus::PreconditionFailed, 412, "PreconditionFailed");
            }
            if (!conditions.if_match.empty()) {
                if (it == objects_.end()) return answer(SinkStatus::NotFound, 404, "NoSuchKey");
                if (it->second.etag != conditions.if_match) {
                    return answer(SinkStatus::PreconditionFailed, 412, "PreconditionFailed");
                }
            }
        }
        Object& o = objects_[key];
        o.data.assign(body.data(), body.size());
        o.etag = next_etag();
        o.attributes = attributes;
        o.last_modified = unix_now();
        o.appendable = false;
        SinkResponse r;
        r.http_status = 200;
        r.etag = o.etag;
        return r;
    });
}

SinkResponse MemorySink::remove(const std::string& key) {
    return run(Op::Remove, key, [&]() -> SinkResponse {
        std::lock_guard<std::mutex> lock(mutex_);
        objects_.erase(key);
        SinkResponse r;
        r.http_status = 204;
        return r;
    });
}

SinkResponse MemorySink::list(const std::string& prefix, const std::string& continuation, ListPage& page) {
    return run(Op::List, prefix, [&]() -> SinkResponse {
        std::lock_guard<std::mutex> lock(mutex_);
        page = ListPage{};
        auto it = continuation.empty() ? objects_.lower_bound(prefix) : objects_.upper_bound(continuation);
        for (; it != objects_.end() && it->first.compare(0, prefix.size(), prefix) == 0; ++it) {
            if (page.objects.size() == list_page_size) {
                page.next = page.objects.back().key;
                break;
            }
            page.objects.push_back(ListedObject{it->first, it->second.data.size(), it->second.etag});
        }
        SinkResponse r;
        r.http_status = 200;
        return r;
    });
}

SinkResponse MemorySink::remove_if_unmodified_since(const std::string& key, std::int64_t unix_seconds) {
    return run(Op::Remove, key, [&]() -> SinkResponse {
        std::lock_guard<std::mutex> lock(mutex_);
        auto it = objects_.find(key);
        if (it != objects_.end() && it->second.last_modified > unix_seconds) {
            return answer(SinkStatus::PreconditionFailed, 412, "PreconditionFailed");
        }
        if (it != objects_.end()) objects_.erase(it);
        SinkResponse r;
        r.http_status = 204;
        return r;
    });
}

SinkResponse MemorySink::create_multipart(const std::string& key, const ObjectAttributes& attributes) {
    return run(Op::CreateMultipart, key, [&]() -> SinkResponse {
        std::lock_guard<std::mutex> lock(mutex_);
        SinkResponse r;
        r.http_status = 200;
        r.upload_id = "u" + random::token_hex(8);
        uploads_[r.upload_id] = Upload{key, attributes, {}};
        return r;
    });
}

SinkResponse MemorySink::upload_part(const std::string& key, const std::string& upload_id, int part_number,
                                     std::string_view body) {
    return run(Op::UploadPart, key, [&]() -> SinkResponse {
        std::lock_guard<std::mutex> lock(mutex_);
        bytes_received_ += body.size();
        auto it = uploads_.find(upload_id);
        if (it == uploads_.end() || it->second.key != key) return answer(SinkStatus::NotFound, 404, "NoSuchUpload");
        SinkResponse r;
        r.http_status = 200;
        r.etag = next_etag();
        it->second.parts[part_number] = {r.etag, std::string(body)};
        return r;
    });
}

SinkResponse MemorySink::upload_part_copy(const std::string& key, const std::string& upload_id, int part_number,
                                          const std::string& source_key, const std::string& source_if_match,
                                          std::optional<ByteRange> range) {
    return run(Op::UploadPartCopy, key, [&]() -> SinkResponse {
        if (!capabilities_.multipart_copy) return answer(SinkStatus::NotImplemented, 501, "NotImplemented");
        std::lock_guard<std::mutex> lock(mutex_);
        auto up = uploads_.find(upload_id);
        if (up == uploads_.end() || up->second.key != key) return answer(SinkStatus::NotFound, 404, "NoSuchUpload");
        auto src = objects_.find(source_key);
        if (src == objects_.end()) return answer(SinkStatus::NotFound, 404, "NoSuchKey");
        if (capabilities_.conditional_complete && !source_if_match.empty() && src->second.etag != source_if_match) {
            return answer(SinkStatus::PreconditionFailed, 412, "PreconditionFailed");
        }
        std::string bytes = src->second.data;
        if (range) {
            if (range->first >= bytes.size() || range->last < range->first) {
                return answer(SinkStatus::Fatal, 416, "InvalidRange");
            }
            bytes =
                bytes.substr(range->first, std::min<std::uint64_t>(range->last, bytes.size() - 1) - range->first + 1);
        }
        SinkResponse r;
        r.http_status = 200;
        r.etag = next_etag();
        up->second.parts[part_number] = {r.etag, std::move(bytes)};
        return r;
    });
}

SinkResponse MemorySink::complete_multipart(const std::string& key, const std::string& upload_id,
                                            const std::vector<CompletedPart>& parts,
                                            const WriteConditions& conditions) {
    return run(Op::Complete, key, [&]() -> SinkResponse {
        std::lock_guard<std::mutex> lock(mutex_);
        auto up = uploads_.find(upload_id);
        if (up == uploads_.end() || up->second.key != key) return answer(SinkStatus::NotFound, 404, "NoSuchUpload");
        auto it = objects_.find(key);
        if (capabilities_.conditional_complete) {
            if (conditions.if_none_match_any && it != objects_.end()) {
                return answer(SinkStatus::PreconditionFailed, 412, "PreconditionFailed");
            }
            if (!conditions.if_match.empty()) {
                if (it == objects_.end()) return answer(SinkStatus::NotFound, 404, "NoSuchKey");
                if (it->second.etag != conditions.if_match) {
                    return answer(SinkStatus::PreconditionFailed, 412, "PreconditionFailed");
                }
            }
        }
        std::string data;
        for (std::size_t i = 0; i < parts.size(); ++i) {
            auto p = up->second.parts.find(parts[i].number);
            if (p == up->second.parts.end() || p->second.first != parts[i].etag) {
                return answer(SinkStatus::Fatal, 400, "InvalidPart");
            }
            if (i + 1 < parts.size() && p->second.second.size() < capabilities_.min_part_size) {
                return answer(SinkStatus::Fatal, 400, "EntityTooSmall");
            }
            data += p->second.second;
        }
        Object& o = objects_[key];
        o.data = std::move(data);
        o.etag = next_etag();
        o.attributes = up->second.attributes;
        o.last_modified = unix_now();
        o.appendable = false;
        uploads_.erase(up);
        SinkResponse r;
        r.http_status = 200;
        r.etag = o.etag;
        return r;
    });
}

SinkResponse MemorySink::abort_multipart(const std::string& key, const std::string& upload_id) {
    return run(Op::Abort, key, [&]() -> SinkResponse {
        std::lock_guard<std::mutex> lock(mutex_);
        if (uploads_.erase(upload_id) == 0) return answer(SinkStatus::NotFound, 404, "NoSuchUpload");
        SinkResponse r;
        r.http_status = 204;
        return r;
    });
}

SinkResponse MemorySink::append_at(const std::string& key, std::string_view body, std::uint64_t position,
                                   const ObjectAttributes& attributes, const WriteConditions&) {
    return run(Op::Append, key, [&]() -> SinkResponse {
        if (!capabilities_.native_append) return answer(SinkStatus::NotImplemented, 501, "NotImplemented");
        std::lock_guard<std::mutex> lock(mutex_);
        bytes_received_ += body.size();
        auto it = objects_.find(key);
        if (it != objects_.end() && !it->second.appendable) {
            return answer(SinkStatus::Conflict, 409, "ObjectNotAppendable");
        }
        const std::uint64_t length = it == objects_.end() ? 0 : it->second.data.size();
        if (position != length) return answer(SinkStatus::Conflict, 409, "PositionNotEqualToLength");
        Object& o = objects_[key];
        if (it == objects_.end()) {
            o.attributes = attributes;
            o.appendable = true;
        }
        o.data.append(body.data(), body.size());
        o.etag = next_etag();
        o.last_modified = unix_now();
        SinkResponse r;
        r.http_status = 200;
        r.etag = o.etag;
        r.size = o.data.size();
        r.appendable = true;
        return r;
    });
}

std::optional<std::string> MemorySink::object(const std::string& key) const {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = objects_.find(key);
    if (it == objects_.end()) return std::nullopt;
    return it->second.data;
}

void MemorySink::set_last_modified(const std::string& key, std::int64_t unix_seconds) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = objects_.find(key);
    if (it != objects_.end()) it->second.last_modified = unix_seconds;
}

std::map<std::string, std::string> MemorySink::objects() const {
    std::lock_guard<std::mutex> lock(mutex_);
    std::map<std::string, std::string> out;
    for (const auto& [k, o] : objects_) out[k] = o.data;
    return out;
}

std::uint64_t MemorySink::request_count(Op op) const {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = requests_.find(op);
    return it == requests_.end() ? 0 : it->second;
}

std::uint64_t MemorySink::bytes_received() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return bytes_received_;
}

std::size_t MemorySink::open_uploads() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return uploads_.size();
}

}  // namespace training_output
