// AppendJob (object_appender.hpp): one batch's append, an attempt at a time.
// Which path takes the batch (native appends or the copy path), the lease,
// and the result; the halves of each path's attempt are in native.cpp and
// object_appender.cpp.
#include <exception>

#include "append/appender_internal.hpp"
#include "append/object_appender.hpp"
#include "common/random.hpp"

namespace training_output {

using namespace append_detail;

AppendJob::AppendJob(ObjectAppender& appender, const std::string& key, std::string_view batch, std::uint32_t crc,
                     std::optional<BatchIntent> undecided)
    : a_(appender),
      key_(key),
      batch_(batch),
      crc_(crc),
      undecided_(std::move(undecided)),
      owner_(random::token_hex(16)) {}

AppendJob::~AppendJob() {
    if (lease_ && !keep_lease_) a_.release_lease(*lease_);
}

const BatchIntent* AppendJob::prepare() {
    try {
        if (mode_ == Mode::Start) start();
        while (mode_ != Mode::Finished) {
            if (mode_ == Mode::Native ? prepare_native() : prepare_copy()) return &intent_;
        }
        return nullptr;
    } catch (...) {
        keep_lease_if_undecided();
        throw;
    }
}

void AppendJob::write_once() {
    if (write_ == Write::None) {
        throw Error(ErrorCode::InvalidArgument, "AppendJob::write_once() without a write that prepare() made ready");
    }
    try {
        if (write_ == Write::Native) {
            write_native();
        } else {
            write_copy();
        }
    } catch (...) {
        keep_lease_if_undecided();
        throw;
    }
}

// An append that may still land when a native run gives up: under a lease,
// the lease is left to run out rather than handed to a writer whose append
// at the same offset could race with it.
void AppendJob::keep_lease_if_undecided() {
    if (mode_ == Mode::Native && lease_ && undecided_) keep_lease_ = true;
}

// Natively where the store appends so and the key is not known to hold a
// plain object; else by copy.
void AppendJob::start() {
    if (batch_.empty()) {
        mode_ = Mode::Finished;
        return;
    }
    a_.check_cancelled();
    bool native = false;
    if (a_.sink_.capabilities().native_append) {
        std::lock_guard<std::mutex> lock(a_.ends_mutex_);
        native = a_.plain_.count(key_) == 0;
    }
    if (native) {
        enter_native();
    } else {
        enter_copy();
    }
}

// A lease where the store's own guard does not keep writers apart: native
// appends whose position check is not atomic (RGW: two appends at one
// position that it processes at once can both succeed, the second
// overwriting the first), or a Complete that ignores If-Match.
void AppendJob::enter_native() {
    const SinkCapabilities caps = a_.sink_.capabilities();
    if (caps.conditional_writes && (a_.options_.always_lease || !caps.native_append_atomic)) take_lease();
    // A lease that another writer held since our last append here: the end
    // we remember is most likely stale (asking costs less than a 409 after
    // sending the whole batch).
    if (lease_ && !lease_->after_ours) a_.remember_end(key_, std::nullopt);
    native_attempt_ = 0;
    converted_ = false;
    mode_ = Mode::Native;
}

// Once a native append declined the batch (a plain object; an object at its
// part limit), this batch goes by copy.
void AppendJob::leave_native() {
    native_declined_ = true;
    enter_copy();
}

// From its first copy attempt, or after the copy attempt that found the
// object appendable (it counts as one).
void AppendJob::enter_copy() {
    mode_ = Mode::Copy;
    if (copy_started_) {
        ++copy_attempt_;
        return;
    }
    copy_started_ = true;
    const SinkCapabilities caps = a_.sink_.capabilities();
    if (caps.conditional_writes && (a_.options_.always_lease || !caps.conditional_complete)) take_lease();
}

void AppendJob::take_lease() {
    if (lease_) return;
    const auto asked = std::chrono::steady_clock::now();
    lease_ = a_.acquire_lease(key_, owner_, a_.options_.lease_wait);
    if (lease_->found_converting) {
        // Its last holder died converting the object: finished first.
        a_.finish_conversion(key_, &*lease_);
        lease_->found_converting = false;
    }
    if (a_.logger_) {
        a_.logger_->log(LogLevel::Debug, "training_output_lease_taken",
                        {{"key", key_},
                         {"waited_ms", static_cast<std::int64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                                                     std::chrono::steady_clock::now() - asked)
                                                                     .count())}});
    }
}

void AppendJob::finish(std::uint64_t offset, int attempts, bool found_landed) {
    result_ = AppendResult{offset, attempts, found_landed};
    // Other writers were in the way: a lease not free at once, a lost attempt.
    result_.contended = (lease_ && lease_->contended) || attempts > 1;
    mode_ = Mode::Finished;
}

}  // namespace training_output
