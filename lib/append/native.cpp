// Native appends (object_appender.hpp): one append at the object's end,
// where the store takes them (Ceph RGW, S3 Express One Zone).
#include "append/appender_internal.hpp"
#include "append/object_appender.hpp"
#include "common/crash_point.hpp"
#include "common/crc32c.hpp"
#include "common/random.hpp"

namespace training_output {

using namespace append_detail;

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

}  // namespace training_output
