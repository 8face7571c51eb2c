// A batch's states and the transitions between them (batch_state.hpp).
#include "delivery/batch_state.hpp"

namespace training_output {

const char* batch_state_name(BatchState state) {
    switch (state) {
        case BatchState::Queued: return "queued";
        case BatchState::Confirming: return "confirming";
        case BatchState::IntentRecorded: return "intent_recorded";
        case BatchState::Writing: return "writing";
        case BatchState::MayHaveLanded: return "may_have_landed";
        case BatchState::Landed: return "landed";
        case BatchState::Committed: return "committed";
        case BatchState::Done: return "done";
        case BatchState::Voided: return "voided";
    }
    return "?";
}

bool batch_transition_allowed(BatchState from, BatchState to) {
    using S = BatchState;
    switch (from) {
        case S::Queued: return to == S::Confirming || to == S::IntentRecorded || to == S::Voided;
        // Writing straight after confirming: a write of nothing (a batch
        // object's name fenced, every line of it voided) records no INTENT.
        case S::Confirming:
            return to == S::IntentRecorded || to == S::Writing || to == S::Queued || to == S::Voided ||
                   to == S::MayHaveLanded;
        // A retry inside one attempt records its INTENT again (where the object is now).
        case S::IntentRecorded: return to == S::Writing || to == S::Queued || to == S::MayHaveLanded;
        case S::Writing: return to == S::Landed || to == S::MayHaveLanded || to == S::Queued || to == S::IntentRecorded;
        case S::MayHaveLanded:
            return to == S::Landed || to == S::Queued || to == S::Confirming || to == S::IntentRecorded ||
                   to == S::Writing;
        case S::Landed: return to == S::Committed || to == S::MayHaveLanded;
        case S::Committed: return to == S::Done || to == S::MayHaveLanded;
        case S::Done:
        case S::Voided: return false;
    }
    return false;
}

}  // namespace training_output
