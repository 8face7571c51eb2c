// Where one batch is on its way to its object. A batch's state changes only
// through Flusher::set_state(), which logs each transition (debug, event
// training_output_batch_state) and reports one the table below does not allow
// (error, training_output_batch_state_unexpected: a bug, never a crash).
//
//   Queued ──► Confirming ──► IntentRecorded ──► Writing ──► Landed ──► Committed ──► Done
//     │            │   ▲            │               │          ▲
//     │            ▼   │            ▼               ▼          │
//     └──────────► Voided  └──── MayHaveLanded ◄────┘──────────┘
//
// Queued: taken from its key's queue, or back there after an attempt that
// cannot have written it. Confirming: its claims are confirmed in the dedup
// store (adopted lines, a store that failed, a liveness that lapsed).
// IntentRecorded: its INTENT (where it is about to be written, its bytes and
// CRC) is in the spool. Writing: the write may be sent from now on.
// MayHaveLanded: an attempt that may have written it failed, or an adopted
// spool holds its INTENT without DONE; it is checked before anything else
// of its key is written. Landed: in its object. Committed: its keys are
// recorded as written (or the commit failed and is retried, recorded in the
// DONE). Done: DONE is in the spool. Voided: every line of it was found
// delivered elsewhere; nothing is written.
#pragma once

#include <cstdint>

namespace training_output {

enum class BatchState : std::uint8_t {
    Queued,
    Confirming,
    IntentRecorded,
    Writing,
    MayHaveLanded,
    Landed,
    Committed,
    Done,
    Voided,
};

const char* batch_state_name(BatchState state);

// Whether a batch may go from `from` to `to`.
bool batch_transition_allowed(BatchState from, BatchState to);

}  // namespace training_output
