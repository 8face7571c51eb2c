// The configuration keys: one table, the only place a key is declared. It
// carries each key's type (the Config member it fills), its range or its
// allowed values, its default where another key decides it, and its
// description; the parsers (config.cpp), Config::describe() (describe.cpp)
// and docs/configuration.md (generated from describe()) all read it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "training_output/config.hpp"

namespace training_output::config {

struct LogLevelField {};      // log_level: a LogLevel, given by name
struct DomainScoresField {};  // min_quality_score_by_domain: {"<domain>": <number>, ...}
using Target = std::variant<bool Config::*, std::int64_t Config::*, std::string Config::*, double Config::*,
                            std::optional<double> Config::*, LogLevelField, DomainScoresField>;

struct Key {
    const char* name;
    Target target;
    const char* section;          // where the docs list it
    std::int64_t min;             // integers: the smallest value accepted
    std::int64_t max;             // and the largest: every value fits the arithmetic done with it
    const char* allowed;          // strings: "a|b|c", the only values accepted; nullptr: any
    const char* derived_default;  // a default that depends on other keys, in words; nullptr: Config's
    const char* description;      // Markdown
};

extern const Key kKeys[];
extern const std::size_t kKeyCount;

// Every key, in order: for (const Key& k : all_keys()).
struct KeyRange {
    const Key* begin() const { return kKeys; }
    const Key* end() const { return kKeys + kKeyCount; }
};
inline KeyRange all_keys() { return {}; }

// The key's type, as messages and docs name it: "bool", "int", "number", "string" or "object".
const char* type_name(const Key& key);

// The values key.allowed lists, in order (none: any value).
std::vector<std::string> allowed_values(const Key& key);

// True when `value` is one of key.allowed (or the key allows any).
bool allowed(const Key& key, const std::string& value);

// The environment variable of the key: "ETL_" + its name in upper case.
std::string env_name(const Key& key);

}  // namespace training_output::config
