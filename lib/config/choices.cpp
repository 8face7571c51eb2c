#include "config/choices.hpp"

#include <string>
#include <vector>

#include "common/json.hpp"
#include "config/keys.hpp"
#include "training_output/error.hpp"

namespace training_output {
namespace {

// The value of the string key `name`, as its position among the key's
// allowed values: the enum E lists its values in that order.
template <class E>
E choice(const Config& c, const char* name) {
    for (const config::Key& k : config::all_keys()) {
        if (std::string(k.name) != name) continue;
        const std::string& value = c.*std::get<std::string Config::*>(k.target);
        const std::vector<std::string> values = config::allowed_values(k);
        std::string list;
        for (std::size_t i = 0; i < values.size(); ++i) {
            if (values[i] == value) return static_cast<E>(i);
            list += (i ? ", " : "") + values[i];
        }
        throw Error(ErrorCode::Config, "configuration key " + json::quote(name) + ": expected one of " + list +
                                           ", got " + json::quote(value));
    }
    throw Error(ErrorCode::Internal, std::string("no configuration key ") + name);
}

}  // namespace

Choices choices_of(const Config& config) {
    Choices ch;
    ch.output_format = choice<OutputFormat>(config, "output_format");
    if (config.dedup_store.empty()) {
        ch.dedup_store = config.redis_url.empty() ? DedupStoreKind::Sqlite : DedupStoreKind::Redis;
    } else {
        ch.dedup_store = choice<DedupStoreKind>(config, "dedup_store");
    }
    ch.spool_fsync = choice<SpoolFsync>(config, "spool_fsync");
    ch.spool_full_policy = choice<SpoolFullPolicy>(config, "spool_full_policy");
    ch.s3_addressing_style = choice<AddressingStyle>(config, "s3_addressing_style");
    ch.s3_conditional_writes = choice<ConditionalWrites>(config, "s3_conditional_writes");
    ch.s3_append_mode = choice<AppendMode>(config, "s3_append_mode");
    return ch;
}

}  // namespace training_output
