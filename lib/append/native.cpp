// Native appends (object_appender.hpp): one append at the object's end,
// where the store takes them (Ceph RGW, S3 Express One Zone).
#include "append/appender_internal.hpp"
#include "append/object_appender.hpp"
#include "common/crash_point.hpp"
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

void ObjectAppender::found_plain(const std::string& key) {
    std::lock_guard<std::mutex> lock(ends_mutex_);
    ends_.erase(key);
    if (plain_.size() >= kMaxRememberedKeys) plain_.clear();
    plain_.insert(key);
    if (logger_) {
        logger_->log(
            LogLevel::Info, "training_output_append_plain_object",
            {{"key", key}, {"detail", "written by PUT or a multipart upload: appended by copy, not natively"}});
    }
}

// Native appends. The intent of one is the offset it is sent to, with no
// ETag (RGW's append answers carry the part's ETag, not the object's). The
// first half of an attempt: where the object ends, and the newline guard.
// True when the append is ready; false when the attempt ended before it, the
// batch was found landed, or it goes by copy (a plain object: leave_native()).
bool AppendJob::prepare_native() {
    const AppendOptions& options = a_.options_;
    S3Sink& sink = a_.sink_;
    if (native_attempt_ >= options.max_attempts) give_up_after(key_, options.max_attempts, last_failure_);
    if (native_attempt_ > 0) a_.backoff(native_attempt_);
    a_.check_cancelled();
    intent_ = BatchIntent{key_, "", 0, "", batch_.size(), crc_};
    auto failed = [&](SinkResponse r) {
        last_failure_ = std::move(r);
        ++native_attempt_;
        return false;
    };
    // Where the object ends: known from this appender's own last append
    // there (its last byte is a newline), else asked.
    auto known = undecided_ ? std::nullopt : a_.known_end(key_);
    if (known) {
        intent_.offset = *known;
        write_ = Write::Native;
        return true;
    }
    SinkResponse h = sink.head(key_);
    if (!h.ok() && h.status != SinkStatus::NotFound) return failed(std::move(h));
    SinkResponse failure;
    if (auto settled = a_.settle_undecided(h, batch_, crc_, undecided_, intent_, failure)) {
        if (*settled != Step::FoundLanded) return failed(std::move(failure));
        finish(intent_.offset, native_attempt_ + 1, true);
        return false;
    }
    if (h.ok() && !h.appendable) {
        // Made appendable once (nothing of this batch may be in flight
        // against the plain object), else appended to by copy. (Once per
        // append, and not counted as one of its attempts.)
        if (options.convert_plain && lease_ && !undecided_ && !converted_ &&
            a_.convert_to_appendable(key_, h, lease())) {
            converted_ = true;
            return false;
        }
        a_.found_plain(key_);
        leave_native();
        return false;
    }
    intent_.offset = h.ok() ? h.size : 0;
    if (intent_.offset > 0) {
        // The newline guard: a "\n" of its own first where the object lacks
        // one (at worst, should its answer be lost and it land later, an
        // empty line; never two lines glued together).
        SinkResponse t = sink.get(key_, ByteRange{intent_.offset - 1, intent_.offset - 1});
        if (!t.ok()) return failed(std::move(t));
        if (t.body != "\n") {
            // Under the lease's rules like any append (on RGW an append at a
            // taken offset may overwrite what is there).
            SinkResponse nl;
            if (a_.lease_still_ours(lease(), nl)) {
                nl = sink.append_at(key_, "\n", intent_.offset, options.attributes, a_.under_lease(lease()));
            }
            if (!nl.ok()) return failed(std::move(nl));
            intent_.offset += 1;
        }
    }
    write_ = Write::Native;
    return true;
}

// The second half: the lease checked, then the append at the offset.
void AppendJob::write_native() {
    write_ = Write::None;
    SinkResponse lost_lease;
    if (!a_.lease_still_ours(lease(), lost_lease)) {
        last_failure_ = std::move(lost_lease);
        ++native_attempt_;
        return;
    }
    SinkResponse r = a_.sink_.append_at(key_, batch_, intent_.offset, a_.options_.attributes, a_.under_lease(lease()));
    if (r.ok()) {
        crash_point("append.after_write");  // landed; the writer has not seen it yet
        undecided_.reset();
        const bool end_known = r.appendable && r.size == intent_.offset + batch_.size();
        a_.remember_end(key_, end_known ? std::optional<std::uint64_t>(r.size) : std::nullopt);
        finish(intent_.offset, native_attempt_ + 1, false);
        return;
    }
    a_.remember_end(key_, std::nullopt);
    if (r.status == SinkStatus::Conflict && r.error.code == "ObjectNotAppendable") {
        a_.found_plain(key_);
        leave_native();
        return;
    }
    if (r.status == SinkStatus::Conflict && r.error.code == "TooManyParts") {
        // S3 Express: the object has its 10,000 parts. This batch goes by
        // copy (UploadPartCopy + part + Complete), which leaves an object of
        // a few parts; the next ones are native again.
        if (a_.logger_) {
            a_.logger_->log(LogLevel::Info, "training_output_append_too_many_parts",
                            {{"key", key_}, {"detail", "appended once by copy, which makes an object of few parts"}});
        }
        leave_native();
        return;
    }
    // This append may land later: the next ones go to the same offset until
    // the object is longer.
    if (r.may_have_applied) undecided_ = intent_;
    if (r.status == SinkStatus::Auth || r.status == SinkStatus::Fatal || r.status == SinkStatus::NotImplemented) {
        give_up(key_, r);
    }
    if (r.status == SinkStatus::Conflict) a_.count_conflict(key_, native_attempt_, r);
    last_failure_ = std::move(r);
    ++native_attempt_;
}

}  // namespace training_output
