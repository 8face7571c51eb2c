// What does this server enforce? (curl_s3_sink_impl.hpp) Conditional
// writes, conditional CompleteMultipartUpload and native appends, found out
// by a probe object; until the probe has its answers, the safe capabilities.
#include "common/json.hpp"
#include "common/random.hpp"
#include "s3/curl_s3_sink_impl.hpp"
#include "training_output/error.hpp"

namespace training_output {

// What does this server enforce? A probe object under probe_prefix:
//   PUT it; PUT If-None-Match:* must be refused; PUT If-Match (quoted, else
//   bare) must pass; a one-part multipart upload completed with a wrong
//   If-Match must be refused. Then it is removed. Native appends: an append
//   at position 0 to a second probe object must answer its next position,
//   and a second one at 0 (stale) must be refused with 409.
// Only a definite answer lowers what the appender relies on: a 200 to
// If-None-Match:* on an existing object, seen twice, is a server without
// conditional writes; an error, a timeout or a reset says nothing. Until every
// step has its answer, the capabilities stay the safe ones (conditional
// writes, appends under a lease) and the probe runs again later.
// The first one runs on a thread of its own (first_probe), so that open
// never waits on the network longer than probe_wait.
void CurlS3Sink::Impl::first_probe(CurlS3Sink& sink) {
    std::exception_ptr error;
    {
        std::unique_lock<std::mutex> held(probe_mutex);
        try {
            probe(sink, held);
        } catch (...) {
            error = std::current_exception();  // rejected credentials, no such bucket
        }
    }
    bool log_error = false;
    {
        std::lock_guard<std::mutex> lock(prober_mutex);
        first_probe_done = true;
        probe_error = error;
        log_error = error && open_returned;
    }
    prober_cv.notify_all();
    if (log_error && logger) {
        try {
            std::rethrow_exception(error);
        } catch (const std::exception& e) {
            logger->log(LogLevel::Error, "training_output_s3_probe_failed",
                        {{"endpoint", describe()},
                         {"error", e.what()},
                         {"detail", "appends fail with the same error; the lines stay spooled"}});
        }
    }
}

// With probe_mutex held.
void CurlS3Sink::Impl::probe(CurlS3Sink& sink, std::unique_lock<std::mutex>& held) {
    Impl& m = *this;
    (void)held;
    if (m.probed.load() || m.cancelled.load() || std::chrono::steady_clock::now() < m.next_probe) return;
    // One attempt per request: an unanswered step defers the whole probe.
    t_single_attempt = true;
    struct Reset {
        ~Reset() { t_single_attempt = false; }
    } reset;
    const std::string key = m.options.probe_prefix + random::token_hex(8);
    ObjectAttributes attrs;
    attrs.content_type = "text/plain";
    // An answer that decides nothing: keep the safe capabilities, try again later.
    auto undecided = [&](const SinkResponse& r) {
        if (r.status == SinkStatus::Auth) {
            throw Error(ErrorCode::Auth, "S3 rejected the credentials of access key " +
                                             json::quote(m.options.credentials.access_key_id) + " at " + m.describe() +
                                             ": " + r.describe());
        }
        if (r.status == SinkStatus::Fatal && r.error.code == "NoSuchBucket") {
            throw Error(ErrorCode::Storage, "S3 bucket " + json::quote(m.options.bucket) + " does not exist at " +
                                                m.describe() + ": " + r.describe());
        }
        sink.remove(key);  // best effort
        if (m.options.native_append != NativeAppend::Off) sink.remove(key + "-append");
        const int failures = std::min(++m.probe_failures, 6);
        m.next_probe = std::chrono::steady_clock::now() + std::chrono::seconds(1 << failures);
        if (m.logger) {
            m.logger->log(LogLevel::Warning, "training_output_s3_probe_deferred",
                          {{"endpoint", m.describe()},
                           {"answer", r.describe()},
                           {"retry_in_seconds", static_cast<std::int64_t>(1) << failures},
                           {"detail", "until the probe is answered, appends use conditions and a lease"}});
        }
    };
    SinkCapabilities found = sink.capabilities();  // what the options fixed
    // Each step returns false when an answer decided nothing (undecided() ran).
    auto defer_probe = [&](const SinkResponse& r) {
        undecided(r);
        return false;
    };
    auto probe_native = [&]() -> bool {
        const std::string akey = key + "-append";
        SinkResponse a = sink.append_at(akey, "probe\n", 0, attrs);
        if (a.ok() && a.appendable && a.size == 6) {
            SinkResponse stale = sink.append_at(akey, "stale\n", 0, attrs);
            if (!stale.ok() && stale.status != SinkStatus::Conflict) return defer_probe(stale);
            found.native_append = stale.status == SinkStatus::Conflict;  // else the position is not enforced
            // S3 Express documents its offset check as the object's size at
            // the time of the write (untested against AWS); RGW's races.
            found.native_append_atomic = found.native_append && m.directory_bucket;
        } else if (a.ok() || a.status == SinkStatus::NotImplemented ||
                   (a.status == SinkStatus::Fatal && a.error.code != "NoSuchBucket")) {
            found.native_append = false;  // ignored (a plain object was written) or refused
        } else {
            return defer_probe(a);
        }
        sink.remove(akey);
        return true;
    };
    auto probe_conditions = [&]() -> bool {
        SinkResponse first = sink.put(key, "probe\n", attrs, WriteConditions{});
        if (!first.ok()) return defer_probe(first);
        WriteConditions none_match;
        none_match.if_none_match_any = true;
        SinkResponse nm = sink.put(key, "probe\n", attrs, none_match);
        if (nm.ok()) {
            // It took an If-None-Match:* write to an existing object. Once could
            // be a fluke of a proxy; twice is the server.
            nm = sink.put(key, "probe again\n", attrs, none_match);
            if (!nm.ok() && nm.status != SinkStatus::PreconditionFailed) return defer_probe(nm);
        } else if (nm.status != SinkStatus::PreconditionFailed) {
            return defer_probe(nm);
        }
        found.conditional_writes = nm.status == SinkStatus::PreconditionFailed;
        found.conditional_complete = false;
        if (found.conditional_writes) {
            WriteConditions match;
            SinkResponse h = sink.head(key);
            if (!h.ok()) return defer_probe(h);
            match.if_match = h.etag;
            SinkResponse im = sink.put(key, "probe 2\n", attrs, match);  // flips to the bare form if needed
            if (!im.ok()) return defer_probe(im);
            SinkResponse up = sink.create_multipart(key, attrs);
            if (!up.ok()) return defer_probe(up);
            SinkResponse part = sink.upload_part(key, up.upload_id, 1, "probe 3\n");
            if (!part.ok()) {
                sink.abort_multipart(key, up.upload_id);
                return defer_probe(part);
            }
            WriteConditions stale;
            stale.if_match = "0123456789abcdef0123456789abcdef";
            SinkResponse done = sink.complete_multipart(key, up.upload_id, {{1, part.etag}}, stale);
            if (!done.ok()) sink.abort_multipart(key, up.upload_id);
            if (!done.ok() && done.status != SinkStatus::PreconditionFailed) return defer_probe(done);
            found.conditional_complete = done.status == SinkStatus::PreconditionFailed;
        }
        sink.remove(key);
        return true;
    };
    if (m.options.native_append != NativeAppend::Off && !probe_native()) return;
    if (m.options.conditional_writes == ConditionalWrites::Auto && !probe_conditions()) return;
    found.multipart_copy = true;  // found out on first use: NotImplemented is remembered by the appender
    found.min_part_size = 5ull << 20;
    {
        std::lock_guard<std::mutex> caps_lock(m.caps_mutex);
        m.caps = found;
    }
    m.probed = true;
    if (m.logger && m.options.native_append == NativeAppend::On && !found.native_append) {
        m.logger->log(LogLevel::Error, "training_output_s3_no_native_append",
                      {{"endpoint", m.describe()},
                       {"detail", "s3_append_mode is native, but the store has no native appends: appending by copy"}});
    }
    if (m.logger) {
        LogLevel level = found.conditional_writes || found.native_append ? LogLevel::Info : LogLevel::Warning;
        m.logger->log(
            level, "training_output_s3_capabilities",
            {{"endpoint", m.describe()},
             {"conditional_writes", found.conditional_writes},
             {"conditional_complete", found.conditional_complete},
             {"native_append", found.native_append},
             {"etag_quoted", m.quote_etags.load()},
             {"note", found.native_append           ? "native appends (append at a position): no lease, no copy"
                      : !found.conditional_writes   ? "no conditional writes: safe with a single writer per key only"
                      : !found.conditional_complete ? "CompleteMultipartUpload ignores If-Match: appends take a lease"
                                                    : "conditional appends"}});
    }
}

// Ends the probe's thread (its request in progress aborts).
void CurlS3Sink::Impl::stop_prober(CurlS3Sink& sink) {
    if (!prober.joinable()) return;
    sink.cancel();
    prober.join();
}

}  // namespace training_output
