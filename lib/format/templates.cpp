// The template table: instruction and input description per record type.
#include <fstream>
#include <sstream>

#include "common/json.hpp"
#include "training_output/error.hpp"
#include "training_output/formatter.hpp"

namespace training_output {
namespace {

struct BuiltinEntry {
    const char* record_type;
    const char* domain;
    const char* instruction;
    const char* input;
};

// One table for everything that depends on the record type.
const BuiltinEntry kBuiltin[] = {
    {"BloodGlucoseRecord", "metabolic_diabetes",
     "Analyze this blood glucose data and provide clinical insights.",
     "Blood glucose data including fasting, post-meal, and overnight readings. "
     "Total measurements: {record_count}."},
    {"HeartRateRecord", "cardiovascular_fitness",
     "Analyze this heart rate data and provide insights on cardiovascular health and fitness.",
     "Heart rate data including resting, active, and peak measurements. "
     "Total measurements: {record_count}."},
    {"HeartRateVariabilityRmssdRecord", "cardiovascular_fitness",
     "Analyze this heart rate variability (RMSSD) data and provide insights on autonomic "
     "function, recovery, and stress.",
     "Heart rate variability (RMSSD) measurements reflecting parasympathetic activity and "
     "recovery status. Total measurements: {record_count}."},
    {"SleepSessionRecord", "sleep_wellness",
     "Analyze this sleep data and provide insights on sleep quality, duration, and patterns.",
     "Sleep session data including duration, sleep stages, and timing. "
     "Total sessions: {record_count}."},
    {"StepsRecord", "physical_activity",
     "Analyze this step count data and provide insights on physical activity levels and trends.",
     "Step count data showing daily activity patterns over time. "
     "Total records: {record_count}."},
    {"ActiveCaloriesBurnedRecord", "physical_activity",
     "Analyze this active calories burned data and provide insights on energy expenditure "
     "and exercise patterns.",
     "Active calories burned data including exercise sessions and daily energy expenditure. "
     "Total records: {record_count}."},
};

const Template kDefault{
    "Analyze this health data and provide clinical insights.",
    "Health data of type {record_type}. Total records: {record_count}.",
};

constexpr std::string_view kDefaultKey = "default";

}  // namespace

std::string_view health_domain_for(std::string_view record_type) noexcept {
    for (const auto& e : kBuiltin) {
        if (record_type == e.record_type) return e.domain;
    }
    return "general_health";
}

TemplateTable TemplateTable::builtin() {
    TemplateTable t;
    for (const auto& e : kBuiltin) t.table_[e.record_type] = Template{e.instruction, e.input};
    t.table_[std::string(kDefaultKey)] = kDefault;
    return t;
}

const Template& TemplateTable::lookup(std::string_view record_type) const {
    auto it = table_.find(record_type);
    if (it == table_.end()) it = table_.find(kDefaultKey);
    return it->second;
}

TemplateTable TemplateTable::from_json_over_builtin(std::string_view text, const std::string& origin) {
    TemplateTable t = builtin();
    rapidjson::Document doc;
    json::parse(doc, text, ("templates_file " + origin).c_str(), ErrorCode::Config);
    auto fail = [&](const std::string& why) { return Error(ErrorCode::Config, "templates_file " + origin + ": " + why); };
    if (!doc.IsObject()) throw fail(std::string("expected a JSON object, got ") + json::type_name(doc));
    for (auto& m : doc.GetObject()) {
        std::string type(json::view(m.name));
        if (type.empty()) throw fail("a record type must not be empty");
        if (!m.value.IsObject()) throw fail(json::quote(type) + " must be an object, got " + json::type_name(m.value));
        Template entry = t.lookup(type);
        if (type != kDefaultKey && t.table_.find(type) == t.table_.end()) entry = t.lookup(kDefaultKey);
        for (auto& f : m.value.GetObject()) {
            std::string_view field = json::view(f.name);
            if (field != "instruction" && field != "input") {
                throw fail(json::quote(type) + ": unknown field " + json::quote(field) +
                           " (expected instruction, input)");
            }
            if (!f.value.IsString() || f.value.GetStringLength() == 0) {
                throw fail(json::quote(type) + "." + std::string(field) + " must be a non-empty string");
            }
            (field == "instruction" ? entry.instruction : entry.input) = std::string(json::view(f.value));
        }
        t.table_[type] = std::move(entry);
    }
    return t;
}

TemplateTable TemplateTable::from_file_over_builtin(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw Error(ErrorCode::Config, "templates_file " + json::quote(path) + ": cannot be read");
    std::ostringstream ss;
    ss << in.rdbuf();
    return from_json_over_builtin(ss.str(), json::quote(path));
}

}  // namespace training_output
