// Did a batch land? (object_appender.hpp) By its bytes at the offset its
// INTENT recorded, once no earlier write of it can land any more.
#include "append/appender_internal.hpp"
#include "append/object_appender.hpp"
#include "common/crash_point.hpp"
#include "common/crc32c.hpp"
#include "common/random.hpp"

namespace training_output {

using namespace append_detail;

// Did an earlier write of this batch land? By its bytes when the batch is
// the one written (its size and checksum say so), else by size and checksum.
Landed ObjectAppender::check_undecided(const BatchIntent& u, std::string_view batch, std::uint32_t crc) {
    if (u.bytes == batch.size() && u.crc == crc) return check_landed(u, batch);
    return check_landed(u);
}

// Could a write sent with `intent` still land on the object as `head` shows
// it? A conditional PUT or Complete: while the object has the ETag it was
// sent against (or is absent). A native append (no ETag, an offset): while
// the object is appendable and exactly that long (or absent, at 0).
namespace {
bool still_as_sent(const BatchIntent& intent, const SinkResponse& head) {
    if (!intent.etag.empty()) return head.ok() && head.etag == intent.etag;
    if (intent.offset == 0) return head.status == SinkStatus::NotFound;
    return head.ok() && head.appendable && head.size == intent.offset;
}
}  // namespace

// With `head` the object now: while an undecided write could still land, the
// next write is conditional on the same (one of the two lands: nothing to
// settle). Once it cannot, the bytes at the recorded offset tell:
// FoundLanded, Retry (no answer yet), or nothing more to wait for.
std::optional<ObjectAppender::Step> ObjectAppender::settle_undecided(const SinkResponse& head, std::string_view batch,
                                                                     std::uint32_t crc,
                                                                     std::optional<BatchIntent>& undecided,
                                                                     BatchIntent& intent, SinkResponse& failure) {
    if (!undecided || still_as_sent(*undecided, head)) return std::nullopt;
    const Landed l = check_undecided(*undecided, batch, crc);
    if (l == Landed::Yes) {
        intent = *undecided;
        return Step::FoundLanded;
    }
    if (l != Landed::No) {
        failure = transient("cannot tell yet whether an earlier write of the batch landed");
        return Step::Retry;
    }
    undecided.reset();  // it can no longer land
    return std::nullopt;
}

Landed ObjectAppender::check_landed(const BatchIntent& intent, std::string_view batch) {
    return check_landed_by(intent, batch.size(), [&](std::string_view found) { return found == batch; });
}

Landed ObjectAppender::check_landed(const BatchIntent& intent) {
    return check_landed_by(intent, intent.bytes,
                           [&](std::string_view found) { return crc32c::compute(found) == intent.crc; });
}

Landed ObjectAppender::check_landed_by(const BatchIntent& intent, std::uint64_t batch_bytes,
                                       const std::function<bool(std::string_view)>& matches) {
    if (batch_bytes == 0) return Landed::No;
    SinkResponse h = sink_.head(intent.key);
    if (!h.ok() && h.status != SinkStatus::NotFound) return Landed::Unknown;
    // Still what the write was sent against: it has not landed, and may yet.
    if (still_as_sent(intent, h)) return Landed::NotYet;
    if (h.status == SinkStatus::NotFound) return Landed::No;
    if (h.size < intent.offset + batch_bytes) return Landed::No;
    SinkResponse g = sink_.get(intent.key, ByteRange{intent.offset, intent.offset + batch_bytes - 1});
    if (g.status == SinkStatus::NotFound) return Landed::No;
    if (!g.ok()) return Landed::Unknown;
    return g.body.size() == batch_bytes && matches(g.body) ? Landed::Yes : Landed::No;
}

}  // namespace training_output
