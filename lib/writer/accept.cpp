// The accept path (writer_impl.hpp): generate() -> format -> the process's
// memory of keys -> one spool record -> the claim (now, or by the claimer).
#include "common/crash_point.hpp"
#include "writer/spans.hpp"
#include "writer/writer_impl.hpp"

namespace training_output {

thread_local const char* t_last_skip_reason = "";

void TrainingOutput::Impl::check_size(std::string_view text, const char* what) const {
    if (text.size() > static_cast<std::uint64_t>(config.max_line_bytes)) {
        throw Error(ErrorCode::InvalidInput, std::string(what) + " is " + std::to_string(text.size()) +
                                                 " bytes; max_line_bytes is " + std::to_string(config.max_line_bytes));
    }
}

template <class FormatFn>
Outcome TrainingOutput::Impl::generate(FormatFn&& format) {
    t_last_skip_reason = "";
    check_process();
    Call call(*this);
    if (!config.enable_training_output) {
        disabled.fetch_add(1, std::memory_order_relaxed);
        return Outcome::Disabled;
    }
    TrainingExample ex;
    try {
        ex = format();
        if (tracing()) {
            t_span.record_type = ex.record_type;
            t_span.health_domain = ex.health_domain;
            t_span.traceparent = ex.traceparent;
            t_span.skip_reason = ex.skip_reason;
            t_span.bytes = ex.line.size();
        }
        if (ex.line.size() > static_cast<std::uint64_t>(config.max_line_bytes)) {
            throw Error(ErrorCode::InvalidInput, "the example is " + std::to_string(ex.line.size()) +
                                                     " bytes; max_line_bytes is " +
                                                     std::to_string(config.max_line_bytes));
        }
    } catch (const Error& e) {
        errors.fetch_add(1, std::memory_order_relaxed);
        // Rejected input is the host's to fix: a warning, at most 10 a second per writer.
        if (const auto suppressed = rejected_log.admit()) {
            logger.log(LogLevel::Warning, "training_output_error",
                       {{"error", e.what()},
                        {"code", error_code_name(e.code())},
                        {"suppressed", static_cast<std::int64_t>(*suppressed)}});
        }
        throw;
    }
    if (ex.skipped()) {
        skipped.fetch_add(1, std::memory_order_relaxed);
        const struct {
            const char* reason;
            std::atomic<std::uint64_t>* counter;
        } reasons[] = {{"empty_narrative", &skipped_empty},
                       {"low_quality", &skipped_low_quality},
                       {"no_quality_score", &skipped_no_quality},
                       {"redaction_failed", &skipped_redaction_failed}};
        for (const auto& r : reasons) {
            if (ex.skip_reason == r.reason) {
                r.counter->fetch_add(1, std::memory_order_relaxed);
                t_last_skip_reason = r.reason;
            }
        }
        // An example that could not be redacted is a failure to look at.
        logger.log(
            ex.skip_reason == "redaction_failed" ? LogLevel::Error : LogLevel::Info, "training_output_skipped",
            {{"record_type", ex.record_type}, {"correlation_id", ex.correlation_id}, {"reason", ex.skip_reason}});
        return Outcome::Skipped;
    }

    // What this process and the store know of the content, without a
    // write: a duplicate is answered before anything is spooled.
    const std::string& owner = spool->id();
    const std::string key = dedup->key_for(ex.content_hash);
    const Precheck known = dedup->precheck(ex.content_hash, key, owner);
    if (known == Precheck::Duplicate || known == Precheck::Pending) {
        crash_point("generate.after_void");  // decided, not answered
        return duplicate(ex, key, known == Precheck::Pending ? ClaimOutcome::Pending : ClaimOutcome::Duplicate);
    }

    // The line is spooled first, then its content claimed for this
    // spool: no claim ever exists without its line (a crash in between
    // leaves a line whose claim the adopter settles).
    Flusher::Handle handle;
    SpoolLineRef ref;
    try {
        // Queued while the spool's lock is held: in sequence order.
        const Spool::LoggedLine logged = spool->log_line(ex.object_key, key, ex.line);
        ref = logged.ref();
        handle = flusher->add(ex.object_key, ref);
    } catch (const Error& e) {
        // Not accepted, nothing claimed: the same content may come again.
        if (known == Precheck::New) dedup->forget(key, owner);
        errors.fetch_add(1, std::memory_order_relaxed);
        logger.log(LogLevel::Warning, "training_output_failed",
                   {{"record_type", ex.record_type}, {"error", e.what()}, {"code", error_code_name(e.code())}});
        throw;
    }
    if (known == Precheck::New && claimer && !config.dedup_pending_outcome) {
        // New content: claimed from the claimer's thread with others.
        // (A host that asked for TDO_PENDING acknowledges only WRITTEN
        // and DUPLICATE: its calls wait for their claims, so that content
        // another live writer holds is never answered WRITTEN.)
        claimer->add(Claimer::Item{key, ex.object_key, ref, handle});
        return accepted(ex, key);
    }
    // Claimed now: a store whose claims cost a lookup (memory), or
    // content another owner's claim holds (taken over if it is gone).
    const std::uint64_t epoch = dedup->liveness_epoch();
    const ClaimOutcome claim = dedup->claim(key, owner);
    crash_point("generate.after_claim");
    if (claim == ClaimOutcome::Duplicate || claim == ClaimOutcome::Pending) {
        flusher->void_line(*spool, handle, ex.object_key, ref, epoch);
        dedup->settled_elsewhere(key, owner, claim);
        crash_point("generate.after_void");
        return duplicate(ex, key, claim);
    }
    flusher->settle(
        handle, claim == ClaimOutcome::Claimed ? Flusher::LineState::Ready : Flusher::LineState::Unconfirmed, epoch);
    return accepted(ex, key);
}

Outcome TrainingOutput::Impl::accepted(const TrainingExample& ex, const std::string& key) {
    written.fetch_add(1, std::memory_order_relaxed);
    redactions.fetch_add(ex.redactions, std::memory_order_relaxed);
    metrics.generated(ex.record_type, ex.health_domain);
    if (logger.enabled(LogLevel::Info)) {
        logger.log(LogLevel::Info, "training_output_generated",
                   {{"record_type", ex.record_type},
                    {"correlation_id", ex.correlation_id},
                    {"health_domain", ex.health_domain},
                    {"object_key", ex.object_key},
                    {"content_hash", key}});
    }
    return Outcome::Written;
}

Outcome TrainingOutput::Impl::duplicate(const TrainingExample& ex, const std::string& key, ClaimOutcome claim) {
    duplicates.fetch_add(1, std::memory_order_relaxed);
    metrics.duplicate(ex.record_type);
    if (claim == ClaimOutcome::Pending) held_elsewhere.fetch_add(1, std::memory_order_relaxed);
    if (logger.enabled(LogLevel::Info)) {
        logger.log(LogLevel::Info, "skipping_duplicate_training_example",
                   {{"record_type", ex.record_type},
                    {"correlation_id", ex.correlation_id},
                    {"content_hash", key},
                    {"health_domain", ex.health_domain},
                    {"delivered", claim == ClaimOutcome::Duplicate}});
    }
    return claim == ClaimOutcome::Pending && config.dedup_pending_outcome ? Outcome::Pending : Outcome::Duplicate;
}

Outcome TrainingOutput::generate(std::string_view narrative, std::string_view message_data_json,
                                 std::string_view result_json) {
    if (!impl_) throw Error(ErrorCode::Forked, "this writer was opened in another process (before a fork())");
    return timed(*impl_, [&] {
        return impl_->generate([&] {
            impl_->check_size(narrative, "narrative");
            impl_->check_size(message_data_json, "message_data");
            impl_->check_size(result_json, "result");
            return impl_->formatter.format_json(narrative, message_data_json, result_json);
        });
    });
}

Outcome TrainingOutput::generate(std::string_view narrative, const MessageData& message,
                                 const ProcessingResult& result) {
    if (!impl_) throw Error(ErrorCode::Forked, "this writer was opened in another process (before a fork())");
    return timed(*impl_, [&] {
        return impl_->generate([&] {
            impl_->check_size(narrative, "narrative");
            impl_->check_size(result.clinical_insights_json, "result.clinical_insights");
            return impl_->formatter.format(narrative, message, result);
        });
    });
}

const char* TrainingOutput::last_skip_reason() noexcept { return t_last_skip_reason; }

}  // namespace training_output
