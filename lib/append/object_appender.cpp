// ObjectAppender: the append algorithm, written once against S3Sink.
#include "training_output/object_appender.hpp"

#include <thread>

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
    if (delay.count() > 0) std::this_thread::sleep_for(delay);
}

AppendResult ObjectAppender::append(const std::string& key, std::string_view batch,
                                    const std::function<void(const AppendIntent&)>& before_write) {
    if (batch.empty()) return {};
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
        Step step = this->attempt(key, batch, before_write, intent, failure);
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
                                             AppendIntent& intent, SinkResponse& failure) {
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
        if (before_write) before_write(intent);
        return append_multipart(key, batch, intent, failure);
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
    if (before_write) before_write(intent);
    body.append(batch.data(), batch.size());
    WriteConditions c;
    if (conditional) c.if_match = g.etag;
    return put_whole(key, body, c, failure);
}

ObjectAppender::Step ObjectAppender::put_whole(const std::string& key, std::string_view body,
                                               const WriteConditions& conditions, SinkResponse& failure) {
    SinkResponse r = sink_.put(key, body, options_.attributes, conditions);
    if (r.ok()) return Step::Done;
    Step step = r.status == SinkStatus::Transient ? Step::Ambiguous : Step::Retry;
    failure = std::move(r);
    return step;
}

ObjectAppender::Step ObjectAppender::append_multipart(const std::string& key, std::string_view batch,
                                                      const AppendIntent& intent, SinkResponse& failure) {
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

    WriteConditions cond;
    if (conditional) cond.if_match = intent.etag;
    SinkResponse done = sink_.complete_multipart(key, upload_id, parts, cond);
    if (done.ok()) return Step::Done;
    Step step = done.status == SinkStatus::Transient ? Step::Ambiguous : Step::Retry;
    return abandon(std::move(done), step);
}

Landed ObjectAppender::check_landed(const AppendIntent& intent, std::string_view batch) {
    SinkResponse h = sink_.head(intent.key);
    if (h.status == SinkStatus::NotFound) return Landed::No;
    if (!h.ok()) return Landed::Unknown;
    if (!intent.etag.empty() && h.etag == intent.etag) return Landed::No;  // unchanged since
    if (h.size < intent.size + batch.size()) return Landed::No;
    SinkResponse g = sink_.get(intent.key, ByteRange{intent.size, intent.size + batch.size() - 1});
    if (!g.ok()) return g.status == SinkStatus::NotFound ? Landed::No : Landed::Unknown;
    return g.body == batch ? Landed::Yes : Landed::No;
}

}  // namespace training_output
