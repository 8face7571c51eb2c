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
                                    const std::function<void(const AppendIntent&)>& before_write,
                                    const std::optional<UndecidedWrite>& undecided_write,
                                    std::optional<UndecidedWrite>* left_undecided) {
    std::optional<UndecidedWrite> undecided = undecided_write;
    // On every way out: what of this batch may still land (nothing once it is written).
    struct Report {
        std::optional<UndecidedWrite>* out;
        std::optional<UndecidedWrite>* undecided;
        ~Report() {
            if (out) *out = *undecided;
        }
    } report{left_undecided, &undecided};
    if (batch.empty()) return {};
    check_cancelled();
    const SinkCapabilities caps = sink_.capabilities();
    bool native = false;
    if (caps.native_append) {
        std::lock_guard<std::mutex> lock(ends_mutex_);
        native = plain_.count(key) == 0;
    }
    std::optional<Lease> lease;
    // One owner token for the whole append: a lease object that names it is
    // ours, whatever answers were lost on the way.
    const std::string owner = random::token_hex(16);
    auto take_lease = [&] {
        if (lease) return;
        const auto asked = std::chrono::steady_clock::now();
        lease = acquire_lease(key, owner, options_.lease_wait);
        if (lease->found_converting) {
            // Its last holder died converting the object: finished first.
            finish_conversion(key, &*lease);
            lease->found_converting = false;
        }
        if (logger_) {
            logger_->log(LogLevel::Debug, "training_output_lease_taken",
                         {{"key", key},
                          {"waited_ms", static_cast<std::int64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                                                      std::chrono::steady_clock::now() - asked)
                                                                      .count())}});
        }
    };
    auto finish = [&](AppendResult r) {
        r.contended = (lease && lease->contended) || r.attempts > 1;
        return r;
    };
    bool keep_lease = false;  // a write that could still land: the lease runs out instead
    struct Release {
        ObjectAppender* self;
        std::optional<Lease>* lease;
        bool* keep;
        ~Release() {
            if (*lease && !*keep) self->release_lease(**lease);
        }
    } release{this, &lease, &keep_lease};

    // A lease where the store's own guard does not keep writers apart: native
    // appends whose position check is not atomic (RGW: two appends at one
    // position that it processes at once can both succeed, the second
    // overwriting the first), or a Complete that ignores If-Match.
    SinkResponse last_failure;
    // Nothing when the object is plain: it is appended to as one.
    auto append_natively = [&]() -> std::optional<AppendResult> {
        if (caps.conditional_writes && (options_.always_lease || !caps.native_append_atomic)) take_lease();
        return append_native(key, batch, before_write, undecided, last_failure, lease ? &*lease : nullptr, keep_lease);
    };
    // Once a native append declined the batch (a plain object; an object
    // at its part limit), this batch goes by copy.
    bool native_declined = false;
    if (native) {
        if (auto done = append_natively()) return finish(*done);
        native_declined = true;
    }
    if (caps.conditional_writes && (options_.always_lease || !caps.conditional_complete)) take_lease();
    Lease* held = lease ? &*lease : nullptr;
    for (int attempt = 0; attempt < options_.max_attempts; ++attempt) {
        if (attempt > 0) backoff(attempt);
        AppendIntent intent;
        SinkResponse failure;
        Step step =
            this->attempt(key, batch, before_write, intent, undecided, failure, held, keep_lease, !native_declined);
        if (step == Step::Native) {
            // An appendable object, seen before the probe said the store has
            // native appends: appended to as such (copying would make it plain).
            if (auto done = append_natively()) return finish(*done);
            native_declined = true;
            held = lease ? &*lease : nullptr;
            continue;
        }
        if (step == Step::Done || step == Step::FoundLanded) undecided.reset();
        if (keep_lease) {
            throw Error(ErrorCode::Storage, "appending to " + json::quote(key) +
                                                ": a CompleteMultipartUpload may still land; the lease is left to run "
                                                "out before anyone appends again: " +
                                                failure.describe());
        }
        if (step == Step::Done) return finish(AppendResult{intent.size, attempt + 1, false});
        if (step == Step::FoundLanded) return finish(AppendResult{intent.size, attempt + 1, true});
        if (step == Step::Ambiguous) {
            // This attempt may land later: the next ones stay conditional on
            // the object as it wrote against, until it moves on.
            undecided = UndecidedWrite{intent, batch.size(), crc32c::compute(batch)};
        }
        if (failure.status == SinkStatus::Auth || failure.status == SinkStatus::Fatal) give_up(key, failure);
        if (failure.status == SinkStatus::PreconditionFailed || failure.status == SinkStatus::Conflict ||
            failure.status == SinkStatus::NotFound) {
            count_conflict(key, attempt, failure);
        }
        last_failure = std::move(failure);
    }
    give_up_after(key, options_.max_attempts, last_failure);
}

void ObjectAppender::count_conflict(const std::string& key, int attempt, const SinkResponse& answer) {
    conflicts_.fetch_add(1, std::memory_order_relaxed);
    if (logger_) {
        logger_->log(LogLevel::Debug, "training_output_append_conflict",
                     {{"key", key}, {"attempt", attempt + 1}, {"answer", answer.describe()}});
    }
}

ObjectAppender::Step ObjectAppender::attempt(const std::string& key, std::string_view batch,
                                             const std::function<void(const AppendIntent&)>& before_write,
                                             AppendIntent& intent, std::optional<UndecidedWrite>& undecided,
                                             SinkResponse& failure, Lease* lease, bool& keep_lease, bool allow_native) {
    check_cancelled();
    const bool conditional = sink_.capabilities().conditional_writes;
    intent = AppendIntent{key, "", 0};
    SinkResponse h = sink_.head(key);
    if (!h.ok() && h.status != SinkStatus::NotFound) {
        failure = std::move(h);
        return Step::Retry;  // nothing was written
    }
    if (auto settled = settle_undecided(h, batch, undecided, intent, failure)) return *settled;
    if (allow_native && h.ok() && h.appendable && options_.native_when_appendable) return Step::Native;
    if (h.status == SinkStatus::NotFound) {
        if (before_write) before_write(intent);  // durable before the lease is checked
        if (!lease_still_ours(lease, failure)) return Step::Retry;
        WriteConditions c;
        c.if_none_match_any = conditional;
        return put_whole(key, batch, c, failure);
    }
    if (h.size > 0 && h.size >= threshold() && multipart_copy_works_.load(std::memory_order_relaxed)) {
        intent.etag = h.etag;
        intent.size = h.size;
        return append_multipart(key, batch, intent, failure, lease, before_write, keep_lease);
    }
    SinkResponse g = sink_.get(key);
    if (!g.ok()) {
        failure = std::move(g);
        return Step::Retry;
    }
    if (undecided && g.etag != undecided->intent.etag) {
        failure = transient("the object changed while it was read");
        return Step::Retry;  // the next attempt checks the earlier write
    }
    std::string body = std::move(g.body);
    if (!body.empty() && body.back() != '\n') body.push_back('\n');  // never glue two lines together
    intent.etag = g.etag;
    intent.size = body.size();
    if (before_write) before_write(intent);
    if (!lease_still_ours(lease, failure)) return Step::Retry;
    body.append(batch.data(), batch.size());
    WriteConditions c;
    if (conditional) c.if_match = g.etag;
    return put_whole(key, body, c, failure);
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

// Called with intent = the object's ETag and size; on return its size is
// where the batch goes (after a "\n" the object lacked).
ObjectAppender::Step ObjectAppender::append_multipart(const std::string& key, std::string_view batch,
                                                      AppendIntent& intent, SinkResponse& failure, Lease* lease,
                                                      const std::function<void(const AppendIntent&)>& before_write,
                                                      bool& keep_lease) {
    const bool conditional = sink_.capabilities().conditional_writes;
    const std::uint64_t size = intent.size;
    // Never glue two lines together: the object's last byte.
    SinkResponse tail = sink_.get(key, ByteRange{size - 1, size - 1});
    if (!tail.ok()) {
        failure = std::move(tail);
        if (failure.status == SinkStatus::NotFound) failure.status = SinkStatus::Conflict;
        return Step::Retry;
    }
    if (tail.etag != intent.etag) {
        failure = SinkResponse{};
        failure.status = SinkStatus::Conflict;
        failure.detail = "the object changed while it was read";
        return Step::Retry;
    }
    std::string with_newline;
    std::string_view part = batch;
    if (tail.body != "\n") {
        with_newline = "\n" + std::string(batch);
        part = with_newline;
        intent.size = size + 1;
    }

    SinkResponse c = sink_.create_multipart(key, options_.attributes);
    if (!c.ok()) {
        if (c.status == SinkStatus::NotImplemented) multipart_copy_works_ = false;
        failure = std::move(c);
        if (failure.status == SinkStatus::NotImplemented) failure.status = SinkStatus::Transient;
        return Step::Retry;
    }
    const std::string upload_id = c.upload_id;
    auto abandon = [&](SinkResponse r, Step step) {
        sink_.abort_multipart(key, upload_id);  // best effort; servers expire uploads too
        failure = std::move(r);
        return step;
    };

    std::vector<CompletedPart> parts;
    // The existing object, copied server-side (several parts above 5 GiB).
    std::uint64_t pieces = (size + kMaxCopyPart - 1) / kMaxCopyPart;
    std::uint64_t piece = (size + pieces - 1) / pieces;
    for (std::uint64_t first = 0; first < size; first += piece) {
        std::optional<ByteRange> range;
        if (pieces > 1) range = ByteRange{first, std::min(first + piece, size) - 1};
        int number = static_cast<int>(parts.size()) + 1;
        SinkResponse r = sink_.upload_part_copy(key, upload_id, number, key, conditional ? intent.etag : "", range);
        if (!r.ok()) {
            if (r.status == SinkStatus::NotImplemented) {
                multipart_copy_works_ = false;
                if (logger_) {
                    logger_->log(LogLevel::Warning, "training_output_multipart_copy_unsupported",
                                 {{"sink", sink_.describe()}, {"answer", r.describe()}});
                }
                r.status = SinkStatus::Transient;
            }
            return abandon(std::move(r), Step::Retry);
        }
        parts.push_back({number, r.etag});
    }
    int number = static_cast<int>(parts.size()) + 1;
    SinkResponse u = sink_.upload_part(key, upload_id, number, part);
    if (!u.ok()) return abandon(std::move(u), Step::Retry);
    parts.push_back({number, u.etag});

    if (before_write) before_write(intent);  // durable before the lease is checked
    if (!lease_still_ours(lease, failure)) return abandon(std::move(failure), Step::Retry);
    if (lease) {
        // The server ignores If-Match on Complete: just before it, the object
        // must still be the one copied (a write of a writer that died, sent
        // before it did, may have landed since).
        SinkResponse now = sink_.head(key);
        if (!now.ok() || now.etag != intent.etag) {
            SinkResponse r = now.ok() ? SinkResponse{} : std::move(now);
            if (r.ok()) {
                r.status = SinkStatus::Conflict;
                r.detail = "the object changed under the lease";
            }
            return abandon(std::move(r), Step::Retry);
        }
    }
    WriteConditions cond = under_lease(lease);
    if (conditional) cond.if_match = intent.etag;
    SinkResponse done = sink_.complete_multipart(key, upload_id, parts, cond);
    if (done.ok()) {
        crash_point("append.after_write");
        return Step::Done;
    }
    if (!done.may_have_applied) return abandon(std::move(done), Step::Retry);
    // Its outcome is unknown, and the request may still be on its way. An
    // aborted upload can never be completed: once the abort is answered, the
    // Complete either landed already (the upload is gone: NoSuchUpload) or
    // never will.
    SinkResponse a = sink_.abort_multipart(key, upload_id);
    failure = std::move(done);
    if (a.ok()) return Step::Retry;                                // decided: it did not land
    if (a.status == SinkStatus::NotFound) return Step::Ambiguous;  // it did, or it expired: look
    if (lease) {
        // Neither: a late Complete could still land, and the server would
        // not check its If-Match. The lease is kept (it runs out instead of
        // being released), so that no other writer appends before it could.
        keep_lease = true;
        failure.detail += "; its upload could not be aborted (" + a.describe() + ")";
    }
    return Step::Ambiguous;
}

}  // namespace training_output
