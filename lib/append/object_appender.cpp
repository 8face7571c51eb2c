// ObjectAppender: the append algorithm, written once against S3Sink.
#include "training_output/object_appender.hpp"

#include <mutex>

#include "common/crash_point.hpp"
#include "common/crc32c.hpp"
#include "common/json.hpp"
#include "common/random.hpp"
#include "training_output/error.hpp"

namespace training_output {
namespace {

constexpr std::uint64_t kMaxCopyPart = 5ull << 30;  // UploadPartCopy copies at most 5 GiB

[[noreturn]] void give_up(const std::string& key, const SinkResponse& r) {
    ErrorCode code = r.status == SinkStatus::Auth ? ErrorCode::Auth : ErrorCode::Storage;
    throw Error(code, "appending to " + json::quote(key) + " failed: " + r.describe());
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

void ObjectAppender::cancel() {
    std::lock_guard<std::mutex> lock(cancel_mutex_);
    cancelled_ = true;
    cancel_cv_.notify_all();
}

AppendResult ObjectAppender::append(const std::string& key, std::string_view batch,
                                    const std::function<void(const AppendIntent&)>& before_write) {
    if (batch.empty()) return {};
    const SinkCapabilities caps = sink_.capabilities();
    std::optional<Lease> lease;
    if (caps.conditional_writes && !caps.conditional_complete) lease = acquire_lease(key);
    struct Release {
        ObjectAppender* self;
        std::optional<Lease>* lease;
        ~Release() {
            if (*lease) self->release_lease(**lease);
        }
    } release{this, &lease};
    Lease* held = lease ? &*lease : nullptr;

    std::vector<AppendIntent> unknown;  // attempts whose outcome we could not see
    SinkResponse last_failure;
    for (int attempt = 0; attempt < options_.max_attempts; ++attempt) {
        if (attempt > 0) backoff(attempt);
        // An earlier attempt may have landed although its answer was lost.
        bool undecided = false;
        for (const auto& intent : unknown) {
            Landed l = check_landed(intent, batch);
            if (l == Landed::Yes) return AppendResult{intent.size, attempt + 1, true};
            if (l == Landed::Unknown) undecided = true;
        }
        if (undecided) continue;  // writing again now could write it twice
        unknown.clear();

        AppendIntent intent;
        SinkResponse failure;
        Step step = this->attempt(key, batch, before_write, intent, failure, held);
        if (step == Step::Done) return AppendResult{intent.size, attempt + 1, false};
        if (failure.status == SinkStatus::Auth || failure.status == SinkStatus::Fatal) give_up(key, failure);
        if (step == Step::Ambiguous) unknown.push_back(intent);
        if (failure.status == SinkStatus::PreconditionFailed || failure.status == SinkStatus::Conflict ||
            failure.status == SinkStatus::NotFound) {
            conflicts_.fetch_add(1, std::memory_order_relaxed);
            if (logger_) {
                logger_->log(LogLevel::Debug, "training_output_append_conflict",
                             {{"key", key}, {"attempt", attempt + 1}, {"answer", failure.describe()}});
            }
        }
        last_failure = std::move(failure);
    }
    throw Error(ErrorCode::Storage, "appending to " + json::quote(key) + " gave up after " +
                                        std::to_string(options_.max_attempts) +
                                        " attempts; last answer: " + last_failure.describe());
}

ObjectAppender::Step ObjectAppender::attempt(const std::string& key, std::string_view batch,
                                             const std::function<void(const AppendIntent&)>& before_write,
                                             AppendIntent& intent, SinkResponse& failure, Lease* lease) {
    const bool conditional = sink_.capabilities().conditional_writes;
    intent = AppendIntent{key, "", 0};
    SinkResponse h = sink_.head(key);
    if (h.status == SinkStatus::NotFound) {
        if (before_write) before_write(intent);
        WriteConditions c;
        c.if_none_match_any = conditional;
        return put_whole(key, batch, c, failure);
    }
    if (!h.ok()) {
        failure = std::move(h);
        return Step::Retry;  // nothing was written
    }
    if (h.size > 0 && h.size >= threshold() && multipart_copy_works_.load(std::memory_order_relaxed)) {
        intent.etag = h.etag;
        intent.size = h.size;
        return append_multipart(key, batch, intent, failure, lease, before_write);
    }
    SinkResponse g = sink_.get(key);
    if (!g.ok()) {
        failure = std::move(g);
        return Step::Retry;
    }
    std::string body = std::move(g.body);
    if (!body.empty() && body.back() != '\n') body.push_back('\n');  // never glue two lines together
    intent.etag = g.etag;
    intent.size = body.size();
    if (!lease_still_ours(lease, failure)) return Step::Retry;
    if (before_write) before_write(intent);
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
    Step step = r.status == SinkStatus::Transient ? Step::Ambiguous : Step::Retry;
    failure = std::move(r);
    return step;
}

ObjectAppender::Step ObjectAppender::append_multipart(const std::string& key, std::string_view batch,
                                                      const AppendIntent& intent, SinkResponse& failure, Lease* lease,
                                                      const std::function<void(const AppendIntent&)>& before_write) {
    const bool conditional = sink_.capabilities().conditional_writes;
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
    std::uint64_t size = intent.size;
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
    SinkResponse u = sink_.upload_part(key, upload_id, number, batch);
    if (!u.ok()) return abandon(std::move(u), Step::Retry);
    parts.push_back({number, u.etag});

    if (!lease_still_ours(lease, failure)) return abandon(std::move(failure), Step::Retry);
    if (before_write) before_write(intent);
    WriteConditions cond;
    if (conditional) cond.if_match = intent.etag;
    SinkResponse done = sink_.complete_multipart(key, upload_id, parts, cond);
    if (done.ok()) {
        crash_point("append.after_write");
        return Step::Done;
    }
    Step step = done.status == SinkStatus::Transient ? Step::Ambiguous : Step::Retry;
    return abandon(std::move(done), step);
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
    *lease = acquire_lease(lease->key.substr(options_.lease_prefix.size()));
    return false;
}

ObjectAppender::Lease ObjectAppender::acquire_lease(const std::string& key) {
    Lease lease;
    lease.key = options_.lease_prefix + key;
    lease.owner = random::token_hex(16);
    const std::string body = "{\"owner\":\"" + lease.owner + "\",\"ttl_seconds\":" +
                             std::to_string(options_.lease_ttl.count()) + "}\n";
    ObjectAttributes attrs;
    attrs.content_type = "application/json";
    const auto deadline = std::chrono::steady_clock::now() + options_.lease_wait;
    SinkResponse last;
    int unanswered = 0;  // the store failing, as opposed to the lease being busy
    for (int attempt = 0; std::chrono::steady_clock::now() < deadline && unanswered < options_.max_attempts; ++attempt) {
        if (attempt > 0) backoff(std::min(attempt, 6));
        WriteConditions create;
        create.if_none_match_any = true;
        SinkResponse r = sink_.put(lease.key, body, attrs, create);
        if (r.ok()) {
            lease.etag = r.etag;
            lease.taken = std::chrono::steady_clock::now();
            return lease;
        }
        if (r.status == SinkStatus::Auth || r.status == SinkStatus::Fatal) give_up(lease.key, r);
        if (r.status == SinkStatus::Transient) ++unanswered;
        // Held by someone: ours after a lost answer, expired, or alive.
        SinkResponse held = sink_.get(lease.key);
        if (held.status == SinkStatus::NotFound) continue;
        if (!held.ok()) {
            ++unanswered;
            last = std::move(held);
            continue;
        }
        if (held.body == body) {  // our create landed, its answer did not
            lease.etag = held.etag;
            lease.taken = std::chrono::steady_clock::now();
            return lease;
        }
        if (held.server_time > 0 && held.last_modified > 0 &&
            held.server_time - held.last_modified > options_.lease_ttl.count()) {
            WriteConditions takeover;
            takeover.if_match = held.etag;
            SinkResponse t = sink_.put(lease.key, body, attrs, takeover);
            if (t.ok()) {
                if (logger_) {
                    logger_->log(LogLevel::Warning, "training_output_lease_taken_over",
                                 {{"key", key}, {"age_seconds", held.server_time - held.last_modified}});
                }
                lease.etag = t.etag;
                lease.taken = std::chrono::steady_clock::now();
                return lease;
            }
        }
        last = std::move(r);
    }
    throw Error(ErrorCode::Storage, "could not take the append lease " + json::quote(lease.key) +
                                        (unanswered >= options_.max_attempts
                                             ? std::string(": the store does not answer")
                                             : " within " + std::to_string(options_.lease_wait.count()) + " ms") +
                                        "; last answer: " + last.describe());
}

bool ObjectAppender::renew_lease(Lease& lease) {
    const std::string body = "{\"owner\":\"" + lease.owner + "\",\"ttl_seconds\":" +
                             std::to_string(options_.lease_ttl.count()) + "}\n";
    ObjectAttributes attrs;
    attrs.content_type = "application/json";
    WriteConditions mine;
    mine.if_match = lease.etag;
    SinkResponse r = sink_.put(lease.key, body, attrs, mine);
    if (!r.ok()) return false;
    lease.etag = r.etag;
    lease.taken = std::chrono::steady_clock::now();
    return true;
}

void ObjectAppender::release_lease(const Lease& lease) {
    // Only our own: a lease taken over after we stalled belongs to someone else.
    SinkResponse h = sink_.head(lease.key);
    if (h.ok() && h.etag == lease.etag) sink_.remove(lease.key);
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
    if (h.status == SinkStatus::NotFound) return Landed::No;
    if (!h.ok()) return Landed::Unknown;
    if (!intent.etag.empty() && h.etag == intent.etag) return Landed::No;  // unchanged since
    if (h.size < intent.size + batch_bytes) return Landed::No;
    SinkResponse g = sink_.get(intent.key, ByteRange{intent.size, intent.size + batch_bytes - 1});
    if (!g.ok()) return g.status == SinkStatus::NotFound ? Landed::No : Landed::Unknown;
    return g.body.size() == batch_bytes && matches(g.body) ? Landed::Yes : Landed::No;
}

}  // namespace training_output
