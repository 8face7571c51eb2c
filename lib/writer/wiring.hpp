// The writer's wiring: its configuration turned into the options of its
// components (writer/wiring.cpp), and TrainingOutput::Impl's constructor
// that builds them.
#pragma once

#include <memory>
#include <string_view>

#include "append/object_appender.hpp"
#include "config/choices.hpp"
#include "format/formatter.hpp"
#include "log/logger.hpp"
#include "spool/spool.hpp"
#include "training_output/config.hpp"
#include "training_output/sys/dedup_store.hpp"
#include "training_output/sys/s3_sink.hpp"

namespace training_output::wiring {

// The configuration with every path the writer registers or compares (the
// output directory, the spool, the dedup file: claims name their owner's
// spool by its path) absolute and canonical, so that writers started in
// different directories, or naming one directory differently, agree on them.
Config with_absolute_paths(Config c);
// The components and their options, from `c` and its choices (choices_of(c)).
std::unique_ptr<DedupStore> open_store(const Config& c, const Choices& ch, const Logger& logger);
std::unique_ptr<S3Sink> open_sink(const Config& c, const Choices& ch, const Logger& logger);
AppendOptions append_options(const Config& c, const Choices& ch);
FormatterOptions formatter_options(const Config& c, const Choices& ch);
SpoolOptions spool_options(const Config& c, const Choices& ch);

// The health domain in a monthly file's key: ".../{domain}/{yyyy}/{mm}/health_journal_....jsonl".
std::string_view domain_of(std::string_view key);

}  // namespace training_output::wiring
