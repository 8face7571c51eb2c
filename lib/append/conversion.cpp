// ObjectAppender: converting a plain monthly object to an appendable one
// (Ceph RGW), once, exactly once. RGW makes an object appendable only when
// an append creates it, so the object is copied aside, deleted, and written
// again by appends of the copy's bytes; a marker object records the
// conversion so that whoever finds it after a crash finishes it:
//   1. marker <key>.conversion.json (If-None-Match: *): the source's ETag, size and Last-Modified;
//   2. copy <key>.conversion-copy: UploadPartCopy of the object (if its ETag is still that);
//   3. delete the object, only if it was not modified after its
//      Last-Modified (RGW's x-amz-delete-if-unmodified-since): a delete
//      that lands late (its sender gave up on it, retried, and finished)
//      is refused by the object written again;
//   4. append the copy's bytes to the object, 32 MiB at a time, from where
//      it ends; written again only once the store's clock has passed that
//      Last-Modified, so that its time is a later one;
//   5. mark the marker done (a new ETag: readers that began before see it
//      changed), then delete the copy, then the marker.
// All of it under the key's append lease (on RGW every append takes it), so
// no append of a batch runs meanwhile. Readers that follow the month rule
// (BatchObjects::read_month) read the copy while the marker exists; readers
// of the object alone see part of the month for the conversion's duration.
#include <algorithm>
#include <chrono>
#include <thread>

#include "append/object_appender.hpp"
#include "common/crash_point.hpp"
#include "common/crc32c.hpp"
#include "common/json.hpp"
#include "training_output/error.hpp"

namespace training_output {
namespace {

constexpr std::uint64_t kStreamChunk = 32ull << 20;  // bytes read from the copy and appended at once
// Copied aside in parts of 1 GiB (about 15 s each on RGW here), the lease
// renewed between them: one UploadPartCopy of 5 GiB would outlast it.
constexpr std::uint64_t kCopyPart = 1ull << 30;
constexpr const char* kFormat = "training_output.conversion/1";

struct Marker {
    std::string source_etag;
    std::uint64_t size = 0;
    std::int64_t last_modified = 0;  // the source's, by the store's clock (0: not known)
    bool done = false;               // the object holds the month again; the copy is being removed
};

std::string encode(const Marker& m) {
    std::string out = "{\"format\":\"";
    out += kFormat;
    out += "\",\"source_etag\":";
    json::append_quoted(out, m.source_etag);
    out += ",\"size\":" + std::to_string(m.size) + ",\"last_modified\":" + std::to_string(m.last_modified) +
           ",\"done\":" + (m.done ? "true" : "false") + "}\n";
    return out;
}

Marker decode(std::string_view text, const std::string& key) {
    rapidjson::Document doc;
    json::parse(doc, text, "conversion marker", ErrorCode::Storage);
    auto bad = [&] { return Error(ErrorCode::Storage, "conversion marker of " + json::quote(key) + " is not one"); };
    if (!doc.IsObject()) throw bad();
    auto f = doc.FindMember("format");
    auto e = doc.FindMember("source_etag");
    auto s = doc.FindMember("size");
    if (f == doc.MemberEnd() || !f->value.IsString() || json::view(f->value) != kFormat || e == doc.MemberEnd() ||
        !e->value.IsString() || s == doc.MemberEnd() || !s->value.IsUint64()) {
        throw bad();
    }
    auto d = doc.FindMember("done");
    auto t = doc.FindMember("last_modified");  // absent in markers of earlier versions
    return Marker{std::string(json::view(e->value)), s->value.GetUint64(),
                  t != doc.MemberEnd() && t->value.IsInt64() ? t->value.GetInt64() : 0,
                  d != doc.MemberEnd() && d->value.IsTrue()};
}

[[noreturn]] void fail(const std::string& key, const std::string& what, const SinkResponse& r) {
    throw Error(r.status == SinkStatus::Auth ? ErrorCode::Auth : ErrorCode::Storage,
                "converting " + json::quote(key) + " to an appendable object: " + what + ": " + r.describe());
}

}  // namespace

std::string conversion_marker_key(const std::string& key) { return key + ".conversion.json"; }
std::string conversion_copy_key(const std::string& key) { return key + ".conversion-copy"; }

bool ObjectAppender::convert_to_appendable(const std::string& key, const SinkResponse& head, Lease* lease) {
    if (!lease || head.size == 0) return false;
    const auto started = std::chrono::steady_clock::now();
    const std::string marker_key = conversion_marker_key(key);
    const std::string copy_key = conversion_copy_key(key);
    ObjectAttributes attrs;
    attrs.content_type = "application/json";
    const std::string marker = encode(Marker{head.etag, head.size, head.last_modified, false});
    // The lease says so before anything changes: whoever takes it after us,
    // should we die, finishes the conversion before appending.
    lease->converting = true;
    if (!renew_lease(*lease)) {
        lease->converting = false;
        return false;
    }
    WriteConditions create;
    create.if_none_match_any = true;
    SinkResponse m = sink_.put(marker_key, marker, attrs, create);
    if (!m.ok() && m.may_have_applied) {
        SinkResponse g = sink_.get(marker_key);
        if (g.ok() && g.body == marker) m = g;
    }
    if (m.status == SinkStatus::PreconditionFailed) return finish_conversion(key, lease);  // someone's, unfinished
    if (!m.ok() && !m.may_have_applied) lease->converting = false;
    if (!m.ok()) fail(key, "writing its marker", m);
    crash_point("convert.after_marker");
    // The copy, server-side, of the object as the marker names it.
    SinkResponse up = sink_.create_multipart(copy_key, options_.attributes);
    if (!up.ok()) fail(key, "starting its copy", up);
    std::vector<CompletedPart> parts;
    for (std::uint64_t at = 0; at < head.size; at += kCopyPart) {
        SinkResponse lost;
        if (!lease_still_ours(lease, lost)) {
            sink_.abort_multipart(copy_key, up.upload_id);
            fail(key, "the lease was lost", lost);
        }
        const ByteRange range{at, std::min(head.size, at + kCopyPart) - 1};
        SinkResponse p =
            sink_.upload_part_copy(copy_key, up.upload_id, static_cast<int>(parts.size() + 1), key, head.etag, range);
        if (!p.ok()) {
            sink_.abort_multipart(copy_key, up.upload_id);
            if (p.status == SinkStatus::PreconditionFailed) {
                // The object changed since its HEAD: not converted now.
                if (sink_.remove(marker_key).ok()) lease->converting = false;
                return false;
            }
            fail(key, "copying it aside", p);
        }
        parts.push_back(CompletedPart{static_cast<int>(parts.size() + 1), p.etag});
    }
    SinkResponse done = sink_.complete_multipart(copy_key, up.upload_id, parts, WriteConditions{});
    if (!done.ok()) {
        sink_.abort_multipart(copy_key, up.upload_id);
        fail(key, "completing its copy", done);
    }
    crash_point("convert.after_copy");
    finish_conversion(key, lease);
    if (logger_) {
        logger_->log(LogLevel::Info, "training_output_object_converted",
                     {{"key", key},
                      {"bytes", head.size},
                      {"duration_ms", static_cast<std::int64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                                                    std::chrono::steady_clock::now() - started)
                                                                    .count())}});
    }
    return true;
}

bool ObjectAppender::finish_conversion(const std::string& key, Lease* lease) {
    const std::string marker_key = conversion_marker_key(key);
    const std::string copy_key = conversion_copy_key(key);
    SinkResponse g = sink_.get(marker_key);
    if (g.status == SinkStatus::NotFound) return false;
    if (!g.ok()) fail(key, "reading its marker", g);
    if (!lease) {
        throw Error(ErrorCode::Storage, "converting " + json::quote(key) +
                                            ": a conversion was left unfinished, and this append holds no lease");
    }
    const Marker marker = decode(g.body, key);
    if (!lease->converting) {
        lease->converting = true;
        if (!renew_lease(*lease))
            throw Error(ErrorCode::Storage, "converting " + json::quote(key) + ": the lease was lost");
    }
    SinkResponse c = sink_.head(copy_key);
    if (!c.ok() && c.status != SinkStatus::NotFound) fail(key, "looking at its copy", c);
    SinkResponse h = sink_.head(key);
    if (!h.ok() && h.status != SinkStatus::NotFound) fail(key, "looking at the object", h);
    auto finished = [&] {
        if (!marker.done) {
            WriteConditions mine;
            mine.if_match = g.etag;
            ObjectAttributes json_attrs;
            json_attrs.content_type = "application/json";
            Marker done = marker;
            done.done = true;
            const std::string done_body = encode(done);
            SinkResponse d = sink_.put(marker_key, done_body, json_attrs, mine);
            if (!d.ok() && d.may_have_applied) {
                SinkResponse again = sink_.get(marker_key);
                if (again.ok() && again.body == done_body) d = again;
            }
            if (!d.ok()) fail(key, "marking its marker done", d);
        }
        crash_point("convert.after_done");
        if (c.ok()) {
            SinkResponse r = sink_.remove(copy_key);
            if (!r.ok() && r.status != SinkStatus::NotFound) fail(key, "removing its copy", r);
        }
        crash_point("convert.after_copy_removed");
        SinkResponse r = sink_.remove(marker_key);
        if (!r.ok() && r.status != SinkStatus::NotFound) fail(key, "removing its marker", r);
        lease->converting = false;  // its next renewal or release says so
        std::lock_guard<std::mutex> lock(ends_mutex_);
        plain_.erase(key);
        ends_.erase(key);
        return true;
    };
    if (marker.done) return finished();  // the object is whole: what is left is cleaning up
    if (c.status == SinkStatus::NotFound) {
        // No copy: it was never completed (the object is as it was: the
        // conversion did not start), or it was removed once done.
        if (h.ok() && !h.appendable && h.etag == marker.source_etag) {
            SinkResponse r = sink_.remove(marker_key);
            if (!r.ok() && r.status != SinkStatus::NotFound) fail(key, "removing its marker", r);
            lease->converting = false;
            return true;
        }
        if (h.ok() && h.appendable && h.size >= marker.size) return finished();
        throw Error(ErrorCode::Storage, "converting " + json::quote(key) +
                                            ": its copy is gone and the object is not complete; the marker " +
                                            json::quote(marker_key) + " is left for an operator");
    }
    if (c.size != marker.size) {
        throw Error(ErrorCode::Storage, "converting " + json::quote(key) + ": its copy has " + std::to_string(c.size) +
                                            " bytes, the marker says " + std::to_string(marker.size));
    }
    std::uint64_t at = 0;
    auto rewritten = [&] {
        return Error(ErrorCode::Storage, "converting " + json::quote(key) +
                                             ": the object was rewritten during its conversion (a writer in another "
                                             "s3_append_mode?); the marker " +
                                             json::quote(marker_key) + " and the copy are left for an operator");
    };
    std::int64_t source_time = marker.last_modified;
    if (h.ok() && !h.appendable) {
        if (h.etag != marker.source_etag) throw rewritten();
        source_time = std::max(source_time, h.last_modified);
        SinkResponse d = sink_.remove_if_unmodified_since(key, h.last_modified);
        if (d.status == SinkStatus::NotImplemented) d = sink_.remove(key);  // a late one may yet land
        if (d.status == SinkStatus::PreconditionFailed) throw rewritten();
        if (!d.ok() && d.status != SinkStatus::NotFound) fail(key, "removing the plain object", d);
        crash_point("convert.after_delete");
    } else if (h.ok()) {
        // Partly written again by an earlier converter: its bytes must be the copy's.
        at = std::min(h.size, marker.size);
        for (std::uint64_t off = 0; off < at; off += kStreamChunk) {
            const ByteRange range{off, std::min(at, off + kStreamChunk) - 1};
            SinkResponse a = sink_.get(key, range);
            SinkResponse b = sink_.get(copy_key, range);
            if (!a.ok()) fail(key, "reading the object back", a);
            if (!b.ok()) fail(key, "reading its copy", b);
            if (crc32c::compute(a.body) != crc32c::compute(b.body)) {
                throw Error(ErrorCode::Storage, "converting " + json::quote(key) +
                                                    ": the object's bytes differ from its copy's; the marker and the "
                                                    "copy are left for an operator");
            }
        }
    }
    if (at == 0) wait_for_store_clock_past(key, source_time);
    // The copy's bytes, appended from where the object ends.
    int failures = 0;
    while (at < marker.size) {
        SinkResponse lost;
        if (!lease_still_ours(lease, lost)) fail(key, "the lease was lost", lost);
        const ByteRange range{at, std::min(marker.size, at + kStreamChunk) - 1};
        SinkResponse b = sink_.get(copy_key, range);
        if (!b.ok()) fail(key, "reading its copy", b);
        ObjectAttributes attrs = options_.attributes;
        SinkResponse a = sink_.append_at(key, b.body, at, attrs, under_lease(lease));
        if (a.ok()) {
            at += b.body.size();
            crash_point("convert.mid_append");
            failures = 0;
            continue;
        }
        // Unknown or refused: where the object ends says what landed.
        if (++failures >= options_.max_attempts) fail(key, "appending its bytes again", a);
        backoff(failures);
        SinkResponse now = sink_.head(key);
        if (!now.ok() && now.status != SinkStatus::NotFound) continue;
        const std::uint64_t end = now.ok() ? now.size : 0;
        if (now.ok() && !now.appendable) fail(key, "the object became plain while it was written again", a);
        if (end != at && end != at + b.body.size()) fail(key, "the object ends where no append of it did", a);
        at = end;
    }
    return finished();
}

void ObjectAppender::wait_for_store_clock_past(const std::string& key, std::int64_t unix_seconds) {
    if (unix_seconds <= 0) return;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    int failures = 0;
    for (;;) {
        const SinkResponse h = sink_.head(key);  // its answer carries the store's time
        if (h.server_time > unix_seconds) return;
        if (!h.ok() && h.status != SinkStatus::NotFound) {
            if (++failures >= options_.max_attempts) fail(key, "reading the store's clock", h);
            backoff(failures);
            continue;
        }
        if (h.server_time == 0) {  // a store without Date: a second of ours passes instead
            std::this_thread::sleep_for(std::chrono::seconds(1));
            return;
        }
        if (std::chrono::steady_clock::now() > deadline) {
            throw Error(ErrorCode::Storage, "converting " + json::quote(key) +
                                                ": the store's clock did not pass the plain object's Last-Modified (" +
                                                std::to_string(unix_seconds) + ") in 10 s");
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
}

}  // namespace training_output
