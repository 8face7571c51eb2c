// The configuration's enumerated values, parsed once. Config keeps them as
// the strings the user wrote (its public form); choices_of() turns them into
// these enums, which the components take. Each enum lists its values in the
// order of its key's allowed values in the keys table (keys.cpp), the one
// place they are spelled: choices_of() maps by that order.
#pragma once

#include "training_output/config.hpp"

namespace training_output {

enum class OutputFormat { Alpaca, Chat };                      // output_format: alpaca|chat
enum class DedupStoreKind { Sqlite, Memory, Redis, Log };      // dedup_store: sqlite|memory|redis|log
enum class SpoolFsync { Interval, Always, Never };             // spool_fsync: interval|always|never
enum class SpoolFullPolicy { Block, Reject };                  // spool_full_policy: block|reject
enum class AddressingStyle { Auto, Path, Virtual };            // s3_addressing_style: auto|path|virtual
enum class ConditionalWrites { Auto, On, Off };                // s3_conditional_writes: auto|true|false
enum class AppendMode { Auto, Native, Copy, Lease, Batches };  // s3_append_mode: auto|native|copy|lease|batches

struct Choices {
    OutputFormat output_format = OutputFormat::Alpaca;
    DedupStoreKind dedup_store = DedupStoreKind::Sqlite;
    SpoolFsync spool_fsync = SpoolFsync::Interval;
    SpoolFullPolicy spool_full_policy = SpoolFullPolicy::Block;
    AddressingStyle s3_addressing_style = AddressingStyle::Auto;
    ConditionalWrites s3_conditional_writes = ConditionalWrites::Auto;
    AppendMode s3_append_mode = AppendMode::Auto;
};

// The choices of a configuration that Config::validate() accepted (an empty
// dedup_store is decided as validate() decides it). Throws Error(Config),
// naming the key and its allowed values, for a value a key does not allow.
Choices choices_of(const Config& config);

}  // namespace training_output
