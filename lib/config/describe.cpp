// Config::describe(): the table of keys (keys.cpp) as JSON, for hosts that
// show or check a configuration and for docs/configuration.md.
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include "common/version.hpp"
#include "config/keys.hpp"
#include "training_output/config.hpp"

namespace training_output {
namespace {

using Writer = rapidjson::Writer<rapidjson::StringBuffer>;

void string(Writer& w, const std::string& s) { w.String(s.data(), static_cast<rapidjson::SizeType>(s.size())); }

// The key's default as a JSON value (null: none).
void default_value(Writer& w, const config::Key& k, const Config& d) {
    if (auto* b = std::get_if<bool Config::*>(&k.target)) {
        w.Bool(d.*(*b));
    } else if (auto* i = std::get_if<std::int64_t Config::*>(&k.target)) {
        w.Int64(d.*(*i));
    } else if (auto* s = std::get_if<std::string Config::*>(&k.target)) {
        if ((d.*(*s)).empty()) {
            w.Null();
        } else {
            string(w, d.*(*s));
        }
    } else if (auto* x = std::get_if<double Config::*>(&k.target)) {
        w.Double(d.*(*x));
    } else if (auto* o = std::get_if<std::optional<double> Config::*>(&k.target)) {
        if (d.*(*o)) {
            w.Double(*(d.*(*o)));
        } else {
            w.Null();
        }
    } else if (std::holds_alternative<config::DomainScoresField>(k.target)) {
        w.StartObject();
        w.EndObject();
    } else {
        w.String(log_level_name(d.log_level));
    }
}

}  // namespace

std::string Config::describe() {
    const Config defaults;
    rapidjson::StringBuffer buffer;
    Writer w(buffer);
    w.StartObject();
    w.Key("version");
    w.String(library_version());
    w.Key("keys");
    w.StartArray();
    for (const config::Key& k : config::all_keys()) {
        w.StartObject();
        w.Key("name");
        w.String(k.name);
        w.Key("section");
        w.String(k.section);
        w.Key("type");
        w.String(config::type_name(k));
        w.Key("env");
        string(w, config::env_name(k));
        w.Key("default");
        default_value(w, k, defaults);
        if (k.derived_default) {
            w.Key("default_text");
            w.String(k.derived_default);
        }
        if (std::holds_alternative<std::int64_t Config::*>(k.target)) {
            w.Key("min");
            w.Int64(k.min);
            w.Key("max");
            w.Int64(k.max);
        }
        if (k.allowed) {
            w.Key("allowed");
            w.StartArray();
            for (const auto& v : config::allowed_values(k)) string(w, v);
            w.EndArray();
        }
        w.Key("description");
        w.String(k.description);
        w.EndObject();
    }
    w.EndArray();
    w.EndObject();
    return std::string(buffer.GetString(), buffer.GetSize());
}

}  // namespace training_output
