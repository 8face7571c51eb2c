// ObjectAppender: the append algorithm, written once against S3Sink: the
// attempt loop and the copy path (PUT of old+batch, or UploadPartCopy).
// Native appends are in native.cpp, the lease in lease.cpp, the landed
// checks in landed.cpp, the conversion of plain objects in conversion.cpp.
#include "append/object_appender.hpp"

#include <cstdlib>
#include <exception>
#include <mutex>

#include "append/appender_internal.hpp"
#include "common/crash_point.hpp"
#include "common/crc32c.hpp"
#include "common/json.hpp"
#include "common/random.hpp"
#include "training_output/error.hpp"

namespace training_output {

using namespace append_detail;

ObjectAppender::ObjectAppender(S3Sink& sink, AppendOptions options, const Logger* logger)
    : sink_(sink), options_(std::move(options)), logger_(logger) {}

std::uint64_t ObjectAppender::threshold() const {
    auto caps = sink_.capabilities();
    std::uint64_t t = options_.multipart_threshold ? options_.multipart_threshold : caps.min_part_size;
    return std::max<std::uint64_t>(t, caps.min_part_size);
}

void ObjectAppender::backoff(int attempt) {
    auto delay = random::full_jitter(attempt, options_.backoff_base, options_.backoff_max);
    std::unique_lock<std::mutex> lock(cancel_mutex_);
    if (cancel_cv_.wait_for(lock, delay, [&] { return cancelled_; })) {
        throw Error(ErrorCode::Closed, "the append was stopped: the writer is closing");
    }
}

void ObjectAppender::check_cancelled() {
    std::lock_guard<std::mutex> lock(cancel_mutex_);
    if (cancelled_) throw Error(ErrorCode::Closed, "the append was stopped: the writer is closing");
}

void ObjectAppender::cancel() {
    {
        std::lock_guard<std::mutex> lock(cancel_mutex_);
        cancelled_ = true;
        cancel_cv_.notify_all();
    }
    sink_.cancel();  // requests in progress end now
}

AppendResult ObjectAppender::append(const std::string& key, std::string_view batch,
                                    const std::optional<BatchIntent>& undecided) {
    AppendJob job(*this, key, batch, crc32c::compute(batch), undecided);
    while (job.prepare()) job.write_once();
    return job.result();
}

void ObjectAppender::count_conflict(const std::string& key, int attempt, const SinkResponse& answer) {
    conflicts_.fetch_add(1, std::memory_order_relaxed);
    if (logger_) {
        logger_->log(LogLevel::Debug, "training_output_append_conflict",
                     {{"key", key}, {"attempt", attempt + 1}, {"answer", answer.describe()}});
    }
}

// The copy path (module comment, steps 1-4): one attempt is a HEAD, then a
// PUT of the batch where the object is missing, of old+batch (after a GET)
// where it is small, or a multipart copy where it is large. True when a
// write is ready; false when the attempt ended before one (after_copy() took
// its step), or the batch goes natively after all.
bool AppendJob::prepare_copy() {
    if (copy_attempt_ >= a_.options_.max_attempts) give_up_after(key_, a_.options_.max_attempts, last_failure_);
    if (copy_attempt_ > 0) a_.backoff(copy_attempt_);
    SinkResponse failure;
    const Step step = prepare_copy_attempt(failure);
    if (write_ != Write::None) return true;
    after_copy(step, std::move(failure));
    return false;
}

// The first half of a copy attempt: up to the write, which it leaves ready
// (write_), or the step the attempt ended with.
ObjectAppender::Step AppendJob::prepare_copy_attempt(SinkResponse& failure) {
    a_.check_cancelled();
    const bool conditional = a_.sink_.capabilities().conditional_writes;
    intent_ = BatchIntent{key_, "", 0, "", batch_.size(), crc_};
    SinkResponse h = a_.sink_.head(key_);
    if (!h.ok() && h.status != SinkStatus::NotFound) {
        failure = std::move(h);
        return Step::Retry;  // nothing was written
    }
    if (auto settled = a_.settle_undecided(h, batch_, crc_, undecided_, intent_, failure)) return *settled;
    if (!native_declined_ && h.ok() && h.appendable && a_.options_.native_when_appendable) return Step::Native;
    if (h.status == SinkStatus::NotFound) {
        body_.clear();
        conditions_ = WriteConditions{};
        conditions_.if_none_match_any = conditional;
        write_ = Write::Put;
        return Step::Retry;
    }
    if (h.size > 0 && h.size >= a_.threshold() && a_.multipart_copy_works_.load(std::memory_order_relaxed)) {
        intent_.etag = h.etag;
        intent_.offset = h.size;
        return prepare_multipart(failure);
    }
    SinkResponse g = a_.sink_.get(key_);
    if (!g.ok()) {
        failure = std::move(g);
        return Step::Retry;
    }
    if (undecided_ && g.etag != undecided_->etag) {
        failure = transient("the object changed while it was read");
        return Step::Retry;  // the next attempt checks the earlier write
    }
    body_ = std::move(g.body);
    if (!body_.empty() && body_.back() != '\n') body_.push_back('\n');  // never glue two lines together
    intent_.etag = g.etag;
    intent_.offset = body_.size();
    body_.append(batch_.data(), batch_.size());
    conditions_ = WriteConditions{};
    if (conditional) conditions_.if_match = g.etag;
    write_ = Write::Put;
    return Step::Retry;
}

// The second half: the lease checked, then the PUT or the Complete.
void AppendJob::write_copy() {
    SinkResponse failure;
    Step step = Step::Retry;
    if (write_ == Write::Complete) {
        step = complete_multipart(failure);
    } else if (a_.lease_still_ours(lease(), failure)) {
        // (No body of its own: the object was missing, the batch is all of it.)
        step = a_.put_whole(key_, body_.empty() ? batch_ : std::string_view(body_), conditions_, failure);
    }
    write_ = Write::None;
    body_.clear();
    after_copy(step, std::move(failure));
}

// What a copy attempt's step means for the batch.
void AppendJob::after_copy(Step step, SinkResponse failure) {
    if (step == Step::Native) {
        // An appendable object, seen before the probe said the store has
        // native appends: appended to as such (copying would make it plain).
        enter_native();
        return;
    }
    if (step == Step::Done || step == Step::FoundLanded) undecided_.reset();
    if (keep_lease_) {
        throw Error(ErrorCode::Storage, "appending to " + json::quote(key_) +
                                            ": a CompleteMultipartUpload may still land; the lease is left to run "
                                            "out before anyone appends again: " +
                                            failure.describe());
    }
    if (step == Step::Done || step == Step::FoundLanded) {
        finish(intent_.offset, copy_attempt_ + 1, step == Step::FoundLanded);
        return;
    }
    if (step == Step::Ambiguous) {
        // This attempt may land later: the next ones stay conditional on
        // the object as it wrote against, until it moves on.
        undecided_ = intent_;
    }
    if (failure.status == SinkStatus::Auth || failure.status == SinkStatus::Fatal) give_up(key_, failure);
    if (failure.status == SinkStatus::PreconditionFailed || failure.status == SinkStatus::Conflict ||
        failure.status == SinkStatus::NotFound) {
        a_.count_conflict(key_, copy_attempt_, failure);
    }
    last_failure_ = std::move(failure);
    ++copy_attempt_;
}

ObjectAppender::Step ObjectAppender::put_whole(const std::string& key, std::string_view body,
                                               const WriteConditions& conditions, SinkResponse& failure) {
    SinkResponse r = sink_.put(key, body, options_.attributes, conditions);
    if (r.ok()) {
        crash_point("append.after_write");  // landed; the writer has not seen it yet
        return Step::Done;
    }
    Step step = r.may_have_applied ? Step::Ambiguous : Step::Retry;
    failure = std::move(r);
    return step;
}

void AppendJob::abort_upload() {
    a_.sink_.abort_multipart(key_, upload_id_);  // best effort; servers expire uploads too
}

// Called with intent_ = the object's ETag and size; on return its offset is
// where the batch goes (after a "\n" the object lacked), and the upload's
// parts are in place for the Complete.
ObjectAppender::Step AppendJob::prepare_multipart(SinkResponse& failure) {
    S3Sink& sink = a_.sink_;
    const bool conditional = sink.capabilities().conditional_writes;
    const std::uint64_t size = intent_.offset;
    // Never glue two lines together: the object's last byte.
    SinkResponse tail = sink.get(key_, ByteRange{size - 1, size - 1});
    if (!tail.ok()) {
        failure = std::move(tail);
        if (failure.status == SinkStatus::NotFound) failure.status = SinkStatus::Conflict;
        return Step::Retry;
    }
    if (tail.etag != intent_.etag) {
        failure = SinkResponse{};
        failure.status = SinkStatus::Conflict;
        failure.detail = "the object changed while it was read";
        return Step::Retry;
    }
    std::string with_newline;
    std::string_view part = batch_;
    if (tail.body != "\n") {
        with_newline = "\n" + std::string(batch_);
        part = with_newline;
        intent_.offset = size + 1;
    }

    SinkResponse c = sink.create_multipart(key_, a_.options_.attributes);
    if (!c.ok()) {
        if (c.status == SinkStatus::NotImplemented) a_.multipart_copy_works_ = false;
        failure = std::move(c);
        if (failure.status == SinkStatus::NotImplemented) failure.status = SinkStatus::Transient;
        return Step::Retry;
    }
    upload_id_ = c.upload_id;
    auto abandon = [&](SinkResponse r) {
        abort_upload();
        failure = std::move(r);
        return Step::Retry;
    };

    parts_.clear();
    // The existing object, copied server-side (several parts above 5 GiB).
    std::uint64_t pieces = (size + kMaxCopyPart - 1) / kMaxCopyPart;
    std::uint64_t piece = (size + pieces - 1) / pieces;
    for (std::uint64_t first = 0; first < size; first += piece) {
        std::optional<ByteRange> range;
        if (pieces > 1) range = ByteRange{first, std::min(first + piece, size) - 1};
        int number = static_cast<int>(parts_.size()) + 1;
        SinkResponse r = sink.upload_part_copy(key_, upload_id_, number, key_, conditional ? intent_.etag : "", range);
        if (!r.ok()) {
            if (r.status == SinkStatus::NotImplemented) {
                a_.multipart_copy_works_ = false;
                if (a_.logger_) {
                    a_.logger_->log(LogLevel::Warning, "training_output_multipart_copy_unsupported",
                                    {{"sink", sink.describe()}, {"answer", r.describe()}});
                }
                r.status = SinkStatus::Transient;
            }
            return abandon(std::move(r));
        }
        parts_.push_back({number, r.etag});
    }
    int number = static_cast<int>(parts_.size()) + 1;
    SinkResponse u = sink.upload_part(key_, upload_id_, number, part);
    if (!u.ok()) return abandon(std::move(u));
    parts_.push_back({number, u.etag});
    write_ = Write::Complete;
    return Step::Retry;
}

// The Complete of the upload prepare_multipart() made, its intent recorded.
ObjectAppender::Step AppendJob::complete_multipart(SinkResponse& failure) {
    S3Sink& sink = a_.sink_;
    const bool conditional = sink.capabilities().conditional_writes;
    auto abandon = [&](SinkResponse r, Step step) {
        abort_upload();
        failure = std::move(r);
        return step;
    };
    if (!a_.lease_still_ours(lease(), failure)) return abandon(std::move(failure), Step::Retry);
    if (lease_) {
        // The server ignores If-Match on Complete: just before it, the object
        // must still be the one copied (a write of a writer that died, sent
        // before it did, may have landed since).
        SinkResponse now = sink.head(key_);
        if (!now.ok() || now.etag != intent_.etag) {
            SinkResponse r = now.ok() ? SinkResponse{} : std::move(now);
            if (r.ok()) {
                r.status = SinkStatus::Conflict;
                r.detail = "the object changed under the lease";
            }
            return abandon(std::move(r), Step::Retry);
        }
    }
    WriteConditions cond = a_.under_lease(lease());
    if (conditional) cond.if_match = intent_.etag;
    SinkResponse done = sink.complete_multipart(key_, upload_id_, parts_, cond);
    if (done.ok()) {
        crash_point("append.after_write");
        return Step::Done;
    }
    if (!done.may_have_applied) return abandon(std::move(done), Step::Retry);
    // Its outcome is unknown, and the request may still be on its way. An
    // aborted upload can never be completed: once the abort is answered, the
    // Complete either landed already (the upload is gone: NoSuchUpload) or
    // never will.
    SinkResponse a = sink.abort_multipart(key_, upload_id_);
    failure = std::move(done);
    if (a.ok()) return Step::Retry;                                // decided: it did not land
    if (a.status == SinkStatus::NotFound) return Step::Ambiguous;  // it did, or it expired: look
    if (lease_) {
        // Neither: a late Complete could still land, and the server would
        // not check its If-Match. The lease is kept (it runs out instead of
        // being released), so that no other writer appends before it could.
        keep_lease_ = true;
        failure.detail += "; its upload could not be aborted (" + a.describe() + ")";
    }
    return Step::Ambiguous;
}

}  // namespace training_output
