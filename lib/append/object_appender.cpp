// ObjectAppender: the append algorithm, written once against S3Sink.
#include "append/object_appender.hpp"

#include <cstdlib>
#include <exception>
#include <mutex>

#include "common/crash_point.hpp"
#include "common/crc32c.hpp"
#include "common/json.hpp"
#include "common/random.hpp"
#include "training_output/error.hpp"

namespace training_output {
namespace {

constexpr std::uint64_t kMaxCopyPart = 5ull << 30;        // UploadPartCopy copies at most 5 GiB
constexpr int kLeasePollSteps = 4;                        // a lease waiter's backoff grows no further than 2^4 steps
constexpr char kReleasedPrefix[] = "{\"released\":true";  // then the releaser's token: never the same ETag twice
constexpr std::size_t kMaxRememberedKeys = 4096;          // ends_ and plain_ start over past this

[[noreturn]] void give_up(const std::string& key, const SinkResponse& r) {
    ErrorCode code = r.status == SinkStatus::Auth ? ErrorCode::Auth : ErrorCode::Storage;
    throw Error(code, "appending to " + json::quote(key) + " failed: " + r.describe());
}

[[noreturn]] void give_up_after(const std::string& key, int attempts, const SinkResponse& last) {
    throw Error(ErrorCode::Storage, "appending to " + json::quote(key) + " gave up after " + std::to_string(attempts) +
                                        " attempts; last answer: " + last.describe());
}

SinkResponse transient(std::string detail) {
    SinkResponse r;
    r.status = SinkStatus::Transient;
    r.detail = std::move(detail);
    return r;
}

ObjectAttributes lease_attributes() {
    ObjectAttributes attrs;
    attrs.content_type = "application/json";
    return attrs;
}

}  // namespace

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

// Did an earlier write of this batch land? By its bytes when the batch is
// the one written (its size and checksum say so), else by size and checksum.
Landed ObjectAppender::check_undecided(const UndecidedWrite& u, std::string_view batch) {
    if (u.bytes == batch.size() && u.crc == crc32c::compute(batch)) return check_landed(u.intent, batch);
    return check_landed(u.intent, u.bytes, u.crc);
}

// Could a write sent with `intent` still land on the object as `head` shows
// it? A conditional PUT or Complete: while the object has the ETag it was
// sent against (or is absent). A native append (no ETag, an offset): while
// the object is appendable and exactly that long (or absent, at 0).
namespace {
bool still_as_sent(const AppendIntent& intent, const SinkResponse& head) {
    if (!intent.etag.empty()) return head.ok() && head.etag == intent.etag;
    if (intent.size == 0) return head.status == SinkStatus::NotFound;
    return head.ok() && head.appendable && head.size == intent.size;
}
}  // namespace

// With `head` the object now: while an undecided write could still land, the
// next write is conditional on the same (one of the two lands: nothing to
// settle). Once it cannot, the bytes at the recorded offset tell:
// FoundLanded, Retry (no answer yet), or nothing more to wait for.
std::optional<ObjectAppender::Step> ObjectAppender::settle_undecided(const SinkResponse& head, std::string_view batch,
                                                                     std::optional<UndecidedWrite>& undecided,
                                                                     AppendIntent& intent, SinkResponse& failure) {
    if (!undecided || still_as_sent(undecided->intent, head)) return std::nullopt;
    const Landed l = check_undecided(*undecided, batch);
    if (l == Landed::Yes) {
        intent = undecided->intent;
        return Step::FoundLanded;
    }
    if (l != Landed::No) {
        failure = transient("cannot tell yet whether an earlier write of the batch landed");
        return Step::Retry;
    }
    undecided.reset();  // it can no longer land
    return std::nullopt;
}

void ObjectAppender::remember_end(const std::string& key, std::optional<std::uint64_t> size) {
    std::lock_guard<std::mutex> lock(ends_mutex_);
    if (!size) {
        ends_.erase(key);
        return;
    }
    if (ends_.size() >= kMaxRememberedKeys && !ends_.count(key)) ends_.clear();
    ends_[key] = *size;
}

std::optional<std::uint64_t> ObjectAppender::known_end(const std::string& key) {
    std::lock_guard<std::mutex> lock(ends_mutex_);
    auto it = ends_.find(key);
    if (it == ends_.end()) return std::nullopt;
    return it->second;
}

// Native appends. The intent of one is the offset it is sent to, with no
// ETag (RGW's append answers carry the part's ETag, not the object's).
// Returns nothing when the object is a plain one (the copy path takes the
// batch, with `undecided` as this left it).
std::optional<AppendResult> ObjectAppender::append_native(const std::string& key, std::string_view batch,
                                                          const std::function<void(const AppendIntent&)>& before_write,
                                                          std::optional<UndecidedWrite>& undecided,
                                                          SinkResponse& last_failure, Lease* lease, bool& keep_lease) {
    // An append that may still land when this gives up: under a lease, the
    // lease is left to run out rather than handed to a writer whose append
    // at the same offset could race with it.
    struct KeepIfUndecided {
        const std::optional<UndecidedWrite>& undecided;
        bool leased;
        bool& keep;
        int exceptions = std::uncaught_exceptions();
        ~KeepIfUndecided() {
            if (leased && undecided && std::uncaught_exceptions() > exceptions) keep = true;
        }
    } keep_if_undecided{undecided, lease != nullptr, keep_lease};
    // A lease that another writer held since our last append here: the end
    // we remember is most likely stale (asking costs less than a 409 after
    // sending the whole batch).
    if (lease && !lease->after_ours) remember_end(key, std::nullopt);
    auto found_plain = [&] {
        std::lock_guard<std::mutex> lock(ends_mutex_);
        ends_.erase(key);
        if (plain_.size() >= kMaxRememberedKeys) plain_.clear();
        plain_.insert(key);
        if (logger_) {
            logger_->log(
                LogLevel::Info, "training_output_append_plain_object",
                {{"key", key}, {"detail", "written by PUT or a multipart upload: appended by copy, not natively"}});
        }
    };
    bool converted = false;
    for (int attempt = 0; attempt < options_.max_attempts; ++attempt) {
        if (attempt > 0) backoff(attempt);
        check_cancelled();
        AppendIntent intent{key, "", 0};
        // Where the object ends: known from this appender's own last append
        // there (its last byte is a newline), else asked.
        auto known = undecided ? std::nullopt : known_end(key);
        if (known) {
            intent.size = *known;
        } else {
            SinkResponse h = sink_.head(key);
            if (!h.ok() && h.status != SinkStatus::NotFound) {
                last_failure = std::move(h);
                continue;
            }
            SinkResponse failure;
            if (auto settled = settle_undecided(h, batch, undecided, intent, failure)) {
                if (*settled == Step::FoundLanded) return AppendResult{intent.size, attempt + 1, true};
                last_failure = std::move(failure);
                continue;
            }
            if (h.ok() && !h.appendable) {
                // Made appendable once (nothing of this batch may be in flight
                // against the plain object), else appended to by copy.
                // (Once per append, and not counted as one of its attempts.)
                if (options_.convert_plain && lease && !undecided && !converted &&
                    convert_to_appendable(key, h, lease)) {
                    converted = true;
                    --attempt;
                    continue;
                }
                found_plain();
                return std::nullopt;
            }
            intent.size = h.ok() ? h.size : 0;
            if (intent.size > 0) {
                // The newline guard: a "\n" of its own first where the
                // object lacks one (at worst, should its answer be lost and it
                // land later, an empty line; never two lines glued together).
                SinkResponse t = sink_.get(key, ByteRange{intent.size - 1, intent.size - 1});
                if (!t.ok()) {
                    last_failure = std::move(t);
                    continue;
                }
                if (t.body != "\n") {
                    // Under the lease's rules like any append (on RGW an
                    // append at a taken offset may overwrite what is there).
                    SinkResponse nl;
                    if (lease_still_ours(lease, nl)) {
                        nl = sink_.append_at(key, "\n", intent.size, options_.attributes, under_lease(lease));
                    }
                    if (!nl.ok()) {
                        last_failure = std::move(nl);
                        continue;
                    }
                    intent.size += 1;
                }
            }
        }
        if (before_write) before_write(intent);  // durable before the lease is checked
        SinkResponse lost_lease;
        if (!lease_still_ours(lease, lost_lease)) {
            last_failure = std::move(lost_lease);
            continue;
        }
        SinkResponse r = sink_.append_at(key, batch, intent.size, options_.attributes, under_lease(lease));
        if (r.ok()) {
            crash_point("append.after_write");  // landed; the writer has not seen it yet
            undecided.reset();
            const bool end_known = r.appendable && r.size == intent.size + batch.size();
            remember_end(key, end_known ? std::optional<std::uint64_t>(r.size) : std::nullopt);
            return AppendResult{intent.size, attempt + 1, false};
        }
        remember_end(key, std::nullopt);
        if (r.status == SinkStatus::Conflict && r.error.code == "ObjectNotAppendable") {
            found_plain();
            return std::nullopt;
        }
        if (r.status == SinkStatus::Conflict && r.error.code == "TooManyParts") {
            // S3 Express: the object has its 10,000 parts. This batch goes by
            // copy (UploadPartCopy + part + Complete), which leaves an object
            // of a few parts; the next ones are native again.
            if (logger_) {
                logger_->log(LogLevel::Info, "training_output_append_too_many_parts",
                             {{"key", key}, {"detail", "appended once by copy, which makes an object of few parts"}});
            }
            return std::nullopt;
        }
        // This append may land later: the next ones go to the same offset
        // until the object is longer.
        if (r.may_have_applied) undecided = UndecidedWrite{intent, batch.size(), crc32c::compute(batch)};
        if (r.status == SinkStatus::Auth || r.status == SinkStatus::Fatal || r.status == SinkStatus::NotImplemented) {
            give_up(key, r);
        }
        if (r.status == SinkStatus::Conflict) count_conflict(key, attempt, r);
        last_failure = std::move(r);
    }
    give_up_after(key, options_.max_attempts, last_failure);
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

// A Complete under a lease: one attempt, over before half the lease is
// gone, so that it cannot land after the lease could pass to another writer.
WriteConditions ObjectAppender::under_lease(const Lease* lease) const {
    WriteConditions c;
    if (lease) {
        c.single_attempt = true;
        c.timeout = std::chrono::duration_cast<std::chrono::milliseconds>(options_.lease_ttl) * 2 / 5;
    }
    return c;
}

// The lease must have time left for the write about to be sent: renewed
// when half its life is gone, abandoned when renewing fails.
bool ObjectAppender::lease_still_ours(Lease* lease, SinkResponse& failure) {
    if (!lease) return true;
    if (std::chrono::steady_clock::now() - lease->taken < options_.lease_ttl / 2) return true;
    if (renew_lease(*lease)) return true;
    failure = SinkResponse{};
    failure.status = SinkStatus::Conflict;
    failure.detail = "the append lease on " + json::quote(lease->key) + " was lost";
    const std::string key = lease->key.substr(options_.lease_prefix.size());
    *lease = acquire_lease(key, lease->owner, options_.lease_wait);
    if (lease->found_converting) {
        finish_conversion(key, lease);
        lease->found_converting = false;
    }
    return false;
}

std::string ObjectAppender::lease_body(const Lease& lease) const {
    // The renewal count changes the ETag: others see a live holder by it.
    return "{\"owner\":\"" + lease.owner + "\",\"ttl_seconds\":" + std::to_string(options_.lease_ttl.count()) +
           ",\"renewal\":" + std::to_string(lease.renewals) + (lease.converting ? ",\"converting\":true" : "") + "}\n";
}

bool ObjectAppender::run_under_lease(const std::string& key, std::chrono::milliseconds wait,
                                     const std::function<void(const std::function<bool()>&)>& work) {
    check_cancelled();
    std::optional<Lease> lease;
    try {
        lease = acquire_lease(key, random::token_hex(16), wait);
    } catch (const Error& e) {
        if (e.code() != ErrorCode::Storage) throw;
        return false;  // held by another (or the store did not answer): the work waits for another time
    }
    bool lost = false;
    struct Release {
        ObjectAppender* self;
        std::optional<Lease>& lease;
        bool& lost;
        ~Release() {
            if (!lost) self->release_lease(*lease);
        }
    } release{this, lease, lost};
    work([&] {
        if (lost) return false;
        check_cancelled();
        if (std::chrono::steady_clock::now() - lease->taken < options_.lease_ttl / 2) return true;
        lost = !renew_lease(*lease);
        return !lost;
    });
    return true;
}

ObjectAppender::Lease ObjectAppender::acquire_lease(const std::string& key, const std::string& owner,
                                                    std::chrono::milliseconds patience) {
    Lease lease;
    lease.key = options_.lease_prefix + key;
    lease.owner = owner;
    // A lease that was not free at once counts as a wait, with its duration.
    struct WaitCount {
        ObjectAppender& self;
        const Lease& lease;
        std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
        ~WaitCount() {
            if (!lease.contended) return;
            self.lease_waits_.fetch_add(1, std::memory_order_relaxed);
            const auto ns =
                std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start);
            self.lease_wait_ns_.fetch_add(static_cast<std::uint64_t>(ns.count()), std::memory_order_relaxed);
        }
    } wait_count{*this, lease};
    const std::string ours = "{\"owner\":\"" + owner + "\"";
    const ObjectAttributes attrs = lease_attributes();
    const auto deadline = std::chrono::steady_clock::now() + patience;
    {
        // Writers waiting for this lease go first: one that just released it
        // would otherwise take it again before they wake (they poll at least
        // every kLeasePollSteps-th backoff step).
        std::unique_lock<std::mutex> lock(seen_mutex_);
        auto it = released_.find(lease.key);
        const auto until = it == released_.end() ? std::chrono::steady_clock::time_point{}
                                                 : it->second + options_.backoff_base * ((1 << kLeasePollSteps) + 4);
        lock.unlock();
        std::unique_lock<std::mutex> wait(cancel_mutex_);
        if (cancel_cv_.wait_until(wait, until, [&] { return cancelled_; })) {
            throw Error(ErrorCode::Closed, "the append was stopped: the writer is closing");
        }
    }
    SinkResponse last;
    int unanswered = 0;         // the store failing, as opposed to the lease being busy
    std::string released_etag;  // our own last release of it, if nobody has taken it since
    {
        std::lock_guard<std::mutex> lock(seen_mutex_);
        auto it = released_etags_.find(lease.key);
        if (it != released_etags_.end()) released_etag = it->second;
    }
    if (!released_etag.empty()) {
        // Most often nobody took it since we released it: one request.
        WriteConditions take;
        take.if_match = released_etag;
        const auto sent = std::chrono::steady_clock::now();
        SinkResponse t = sink_.put(lease.key, lease_body(lease), attrs, take);
        if (t.ok()) {
            lease.etag = t.etag;
            lease.taken = sent;
            lease.after_ours = true;
            return lease;
        }
        if (t.status == SinkStatus::Auth || t.status == SinkStatus::Fatal) give_up(lease.key, t);
    }
    for (int attempt = 0;
         (attempt == 0 || std::chrono::steady_clock::now() < deadline) && unanswered < options_.max_attempts;
         ++attempt) {
        if (attempt > 0) backoff(std::min(attempt, kLeasePollSteps));  // the lease changes hands fast: poll often
        check_cancelled();
        WriteConditions create;
        create.if_none_match_any = true;
        const auto sent = std::chrono::steady_clock::now();
        SinkResponse r = sink_.put(lease.key, lease_body(lease), attrs, create);
        if (r.ok()) {
            lease.etag = r.etag;
            lease.taken = sent;
            return lease;
        }
        if (r.status == SinkStatus::Auth || r.status == SinkStatus::Fatal) give_up(lease.key, r);
        lease.contended = true;  // not free at the first try
        // Held by someone: released, ours after a lost answer, dead, or alive.
        SinkResponse held = sink_.get(lease.key);
        if (held.status == SinkStatus::NotFound) continue;
        if (!held.ok()) {
            ++unanswered;
            last = std::move(held);
            continue;
        }
        const bool was_converting = held.body.find("\"converting\":true") != std::string::npos;
        if (held.body.rfind(ours, 0) == 0) {  // ours: a write of ours landed, its answer did not
            lease.found_converting = was_converting;
            lease.etag = held.etag;
            // Its renewal count, so that our next renewal's body (and ETag) is a new one.
            const auto at = held.body.find("\"renewal\":");
            lease.renewals = at == std::string::npos ? 0 : std::strtoull(held.body.c_str() + at + 10, nullptr, 10);
            lease.taken = std::chrono::steady_clock::now() - options_.lease_ttl;  // age unknown: renew before use
            return lease;
        }
        const bool released = held.body.rfind(kReleasedPrefix, 0) == 0;
        bool expired = false;
        std::chrono::steady_clock::duration age{};
        if (!released) {
            // Its age by our own clock: how long we have seen this very ETag.
            std::lock_guard<std::mutex> lock(seen_mutex_);
            auto& seen = seen_leases_[lease.key];
            const auto now = std::chrono::steady_clock::now();
            if (seen.first != held.etag) seen = {held.etag, now};
            age = now - seen.second;
            expired = age >= options_.lease_ttl;
        }
        if (released || expired) {
            WriteConditions take;
            take.if_match = held.etag;
            const auto taken_sent = std::chrono::steady_clock::now();
            SinkResponse t = sink_.put(lease.key, lease_body(lease), attrs, take);
            if (t.ok()) {
                lease.found_converting = was_converting;
                if (expired && logger_) {
                    logger_->log(LogLevel::Warning, "training_output_lease_taken_over",
                                 {{"key", key},
                                  {"unchanged_for_ms",
                                   static_cast<std::int64_t>(
                                       std::chrono::duration_cast<std::chrono::milliseconds>(age).count())}});
                }
                lease.etag = t.etag;
                lease.taken = taken_sent;
                return lease;
            }
        }
        last = std::move(r);
    }
    throw Error(ErrorCode::Storage,
                "could not take the append lease " + json::quote(lease.key) +
                    (unanswered >= options_.max_attempts ? std::string(": the store does not answer")
                                                         : " within " + std::to_string(patience.count()) + " ms") +
                    "; last answer: " + last.describe());
}

bool ObjectAppender::renew_lease(Lease& lease) {
    Lease next = lease;
    ++next.renewals;
    WriteConditions mine;
    mine.if_match = lease.etag;
    const auto sent = std::chrono::steady_clock::now();
    SinkResponse r = sink_.put(lease.key, lease_body(next), lease_attributes(), mine);
    if (!r.ok() && r.may_have_applied) {
        // The renewal may have landed with its answer lost: the lease says.
        SinkResponse now = sink_.get(lease.key);
        if (now.ok() && now.body == lease_body(next)) r = now;
    }
    if (!r.ok() || r.etag.empty()) return false;
    next.etag = r.etag;
    next.taken = sent;
    lease = next;
    return true;
}

// A conditional overwrite: only our own lease is released (one taken over
// after we stalled belongs to someone else, and keeps its holder). The body
// names us, so that its ETag is new: a request conditional on an earlier
// release's ETag (sent, then delayed) cannot land on this one.
void ObjectAppender::release_lease(const Lease& lease) {
    WriteConditions mine;
    mine.if_match = lease.etag;
    SinkResponse r = sink_.put(lease.key,
                               std::string(kReleasedPrefix) + ",\"by\":\"" + lease.owner + "\"" +
                                   (lease.converting ? ",\"converting\":true" : "") + "}\n",
                               lease_attributes(), mine);
    std::lock_guard<std::mutex> lock(seen_mutex_);
    released_[lease.key] = std::chrono::steady_clock::now();
    if (r.ok() && !r.etag.empty()) {
        // (Not after an unfinished conversion: whoever takes it next must
        // read that from its body.)
        if (lease.converting) {
            released_etags_.erase(lease.key);
        } else {
            released_etags_[lease.key] = r.etag;
        }
    } else {
        released_etags_.erase(lease.key);
    }
}

Landed ObjectAppender::check_landed(const AppendIntent& intent, std::string_view batch) {
    return check_landed_by(intent, batch.size(), [&](std::string_view found) { return found == batch; });
}

Landed ObjectAppender::check_landed(const AppendIntent& intent, std::uint64_t batch_bytes, std::uint32_t batch_crc) {
    return check_landed_by(intent, batch_bytes,
                           [&](std::string_view found) { return crc32c::compute(found) == batch_crc; });
}

Landed ObjectAppender::check_landed_by(const AppendIntent& intent, std::uint64_t batch_bytes,
                                       const std::function<bool(std::string_view)>& matches) {
    if (batch_bytes == 0) return Landed::No;
    SinkResponse h = sink_.head(intent.key);
    if (!h.ok() && h.status != SinkStatus::NotFound) return Landed::Unknown;
    // Still what the write was sent against: it has not landed, and may yet.
    if (still_as_sent(intent, h)) return Landed::NotYet;
    if (h.status == SinkStatus::NotFound) return Landed::No;
    if (h.size < intent.size + batch_bytes) return Landed::No;
    SinkResponse g = sink_.get(intent.key, ByteRange{intent.size, intent.size + batch_bytes - 1});
    if (g.status == SinkStatus::NotFound) return Landed::No;
    if (!g.ok()) return Landed::Unknown;
    return g.body.size() == batch_bytes && matches(g.body) ? Landed::Yes : Landed::No;
}

}  // namespace training_output
