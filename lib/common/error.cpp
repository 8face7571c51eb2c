#include "training_output/error.hpp"

namespace training_output {

const char* outcome_name(Outcome outcome) noexcept {
    switch (outcome) {
        case Outcome::Written: return "written";
        case Outcome::Duplicate: return "duplicate";
        case Outcome::Skipped: return "skipped";
        case Outcome::Disabled: return "disabled";
        case Outcome::Pending: return "pending";
    }
    return "unknown";
}

const char* error_code_name(ErrorCode code) noexcept {
    switch (code) {
        case ErrorCode::InvalidArgument: return "TDO_E_INVALID_ARGUMENT";
        case ErrorCode::InvalidJson: return "TDO_E_INVALID_JSON";
        case ErrorCode::InvalidInput: return "TDO_E_INVALID_INPUT";
        case ErrorCode::Config: return "TDO_E_CONFIG";
        case ErrorCode::Storage: return "TDO_E_STORAGE";
        case ErrorCode::DedupStore: return "TDO_E_DEDUP_STORE";
        case ErrorCode::Backpressure: return "TDO_E_BACKPRESSURE";
        case ErrorCode::Timeout: return "TDO_E_TIMEOUT";
        case ErrorCode::Auth: return "TDO_E_AUTH";
        case ErrorCode::Closed: return "TDO_E_CLOSED";
        case ErrorCode::NoMemory: return "TDO_E_NOMEM";
        case ErrorCode::Forked: return "TDO_E_FORKED";
        case ErrorCode::Internal: return "TDO_E_INTERNAL";
    }
    return "TDO_E_UNKNOWN";
}

}  // namespace training_output
