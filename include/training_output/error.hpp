// Errors of the C++ API: one exception type carrying a code that maps 1:1 to
// the C ABI's TDO_E_* values.
#pragma once

#include <stdexcept>
#include <string>

namespace training_output {

enum class ErrorCode : int {
    InvalidArgument = -1,
    InvalidJson = -2,
    InvalidInput = -3,
    Config = -4,
    Storage = -5,
    DedupStore = -6,
    Backpressure = -7,
    Timeout = -8,
    Auth = -9,
    Closed = -10,
    NoMemory = -11,
    Forked = -12,
    Internal = -99,
};

// What a call to generate() ended in when it did not throw.
enum class Outcome : int {
    Written = 0,
    Duplicate = 1,
    Skipped = 2,
    Disabled = 3,
    Pending = 4,  // only with dedup_pending_outcome: another live writer holds the content, undelivered
};

const char* outcome_name(Outcome outcome) noexcept;
const char* error_code_name(ErrorCode code) noexcept;

class Error : public std::runtime_error {
public:
    Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
    ErrorCode code() const noexcept { return code_; }

private:
    ErrorCode code_;
};

}  // namespace training_output
