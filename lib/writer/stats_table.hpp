// WriterStats' counters, declared once: each field's name in stats() JSON
// and, where it is exported, its Prometheus family, type, help text and
// label. stats_json() and WriterMetrics::prometheus() render this table;
// a field added to WriterStats without a row fails to compile.
#pragma once

#include <cstddef>
#include <cstdint>

#include "training_output/training_output.hpp"

namespace training_output {

struct StatField {
    const char* name;  // stats() JSON
    std::uint64_t WriterStats::*field;
    const char* metric = nullptr;  // Prometheus family; nullptr: JSON only
    const char* type = nullptr;    // "counter" | "gauge"
    const char* help = nullptr;    // the family's, on its first row
    const char* label = nullptr;   // rows of one labelled family: the label's name ...
    const char* value = nullptr;   // ... and this row's value of it
};

inline constexpr StatField kStatFields[] = {
    {"written", &WriterStats::written},
    {"duplicates", &WriterStats::duplicates},
    {"held_elsewhere", &WriterStats::held_elsewhere},
    {"skipped", &WriterStats::skipped},
    {"skipped_empty_narrative", &WriterStats::skipped_empty_narrative, "etl_training_examples_skipped_total", "counter",
     "Examples not written, by reason (outcomes, not errors).", "reason", "empty_narrative"},
    {"skipped_low_quality", &WriterStats::skipped_low_quality, "etl_training_examples_skipped_total", "counter",
     nullptr, "reason", "low_quality"},
    {"skipped_no_quality_score", &WriterStats::skipped_no_quality_score, "etl_training_examples_skipped_total",
     "counter", nullptr, "reason", "no_quality_score"},
    {"skipped_redaction_failed", &WriterStats::skipped_redaction_failed, "etl_training_examples_skipped_total",
     "counter", nullptr, "reason", "redaction_failed"},
    {"redactions", &WriterStats::redactions, "etl_training_redactions_total", "counter",
     "Identifiers replaced by placeholders in the examples accepted."},
    {"disabled", &WriterStats::disabled, "etl_training_disabled_total", "counter",
     "Calls while enable_training_output is false."},
    {"errors", &WriterStats::errors},  // exported by code, from the metrics' own counts
    {"dedup_store_errors", &WriterStats::dedup_store_errors, "etl_training_dedup_store_errors_total", "counter",
     "Dedup store failures (each one failed open)."},
    {"lines_appended", &WriterStats::lines_appended, "etl_training_lines_appended_total", "counter",
     "Lines that landed in their objects."},
    {"bytes_appended", &WriterStats::bytes_appended, "etl_training_bytes_appended_total", "counter",
     "Bytes that landed in their objects."},
    {"batches_appended", &WriterStats::batches_appended, "etl_training_batches_appended_total", "counter",
     "Batches that landed in their objects."},
    {"append_conflicts", &WriterStats::append_conflicts, "etl_training_append_conflicts_total", "counter",
     "Appends another writer won a race with."},
    {"append_failures", &WriterStats::append_failures, "etl_training_append_failures_total", "counter",
     "Batch appends that failed (and were retried)."},
    {"pending_lines", &WriterStats::pending_lines, "etl_training_backlog_lines", "gauge",
     "Lines accepted and not in their objects yet."},
    {"pending_bytes", &WriterStats::pending_bytes, "etl_training_backlog_bytes", "gauge",
     "Bytes accepted and not in their objects yet."},
    {"batches_found_landed", &WriterStats::batches_found_landed, "etl_training_batches_found_landed_total", "counter",
     "Batches found in their objects already (after a crash or a lost answer)."},
    {"lines_found_landed", &WriterStats::lines_found_landed, "etl_training_lines_found_landed_total", "counter",
     "Lines of those batches (counted in lines appended too)."},
    {"spools_adopted", &WriterStats::spools_adopted, "etl_training_spools_adopted_total", "counter",
     "Spools of writers that died, taken over."},
    {"lines_recovered", &WriterStats::lines_recovered, "etl_training_lines_recovered_total", "counter",
     "Lines found in adopted spools."},
    {"torn_records", &WriterStats::torn_records},
    {"lines_voided", &WriterStats::lines_voided},
    {"pending_commits", &WriterStats::pending_commits},
    {"spool_bytes", &WriterStats::spool_bytes, "etl_training_spool_bytes", "gauge",
     "Size of this writer's spool on disk."},
    {"spool_fsync_errors", &WriterStats::spool_fsync_errors, "etl_training_spool_fsync_errors_total", "counter",
     "Failed fsyncs of the spool."},
    {"calls_waiting_for_room", &WriterStats::calls_waiting_for_room, "etl_training_calls_waiting_for_room", "gauge",
     "Calls waiting now for room in a full spool (spool_full_policy block)."},
};

// Every field has its row (WriterStats holds counters only).
static_assert(sizeof(WriterStats) == sizeof(kStatFields) / sizeof(kStatFields[0]) * sizeof(std::uint64_t),
              "a WriterStats field without a row in kStatFields");

}  // namespace training_output
