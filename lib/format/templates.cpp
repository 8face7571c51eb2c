// The template table: instruction and input description per record type.
#include <fstream>
#include <iterator>
#include <sstream>

#include "common/json.hpp"
#include "format/formatter.hpp"
#include "training_output/error.hpp"

namespace training_output {
namespace {

constexpr std::size_t kBuiltinPhrasings = 3;

struct BuiltinEntry {
    const char* record_type;
    const char* domain;
    const char* instructions[kBuiltinPhrasings];  // the first is the original module's
    const char* input;
};

// One table for everything that depends on the record type.
const BuiltinEntry kBuiltin[] = {
    {"BloodGlucoseRecord",
     "metabolic_diabetes",
     {"Analyze this blood glucose data and provide clinical insights.",
      "Review these blood glucose readings and summarize what they show about glycemic control.",
      "Interpret the following glucose measurements and describe the clinically relevant patterns."},
     "Blood glucose data including fasting, post-meal, and overnight readings. "
     "Total measurements: {record_count}."},
    {"HeartRateRecord",
     "cardiovascular_fitness",
     {"Analyze this heart rate data and provide insights on cardiovascular health and fitness.",
      "Review these heart rate measurements and explain what they indicate about cardiovascular fitness.",
      "Summarize the resting, active and peak heart rate patterns in this data and their cardiovascular "
      "significance."},
     "Heart rate data including resting, active, and peak measurements. "
     "Total measurements: {record_count}."},
    {"HeartRateVariabilityRmssdRecord",
     "cardiovascular_fitness",
     {"Analyze this heart rate variability (RMSSD) data and provide insights on autonomic "
      "function, recovery, and stress.",
      "Interpret these RMSSD heart rate variability readings in terms of recovery and stress.",
      "Review this heart rate variability (RMSSD) data and describe what it suggests about autonomic "
      "balance."},
     "Heart rate variability (RMSSD) measurements reflecting parasympathetic activity and "
     "recovery status. Total measurements: {record_count}."},
    {"SleepSessionRecord",
     "sleep_wellness",
     {"Analyze this sleep data and provide insights on sleep quality, duration, and patterns.",
      "Review these sleep sessions and summarize sleep duration, stages and regularity.",
      "Interpret this sleep data and describe the patterns that matter for sleep quality."},
     "Sleep session data including duration, sleep stages, and timing. "
     "Total sessions: {record_count}."},
    {"StepsRecord",
     "physical_activity",
     {"Analyze this step count data and provide insights on physical activity levels and trends.",
      "Review these daily step counts and summarize activity levels and how they change over time.",
      "Interpret this step count data and describe the physical activity patterns it shows."},
     "Step count data showing daily activity patterns over time. "
     "Total records: {record_count}."},
    {"ActiveCaloriesBurnedRecord",
     "physical_activity",
     {"Analyze this active calories burned data and provide insights on energy expenditure "
      "and exercise patterns.",
      "Review this active energy expenditure data and summarize the exercise patterns it reflects.",
      "Interpret these active calories burned records and describe trends in energy expenditure."},
     "Active calories burned data including exercise sessions and daily energy expenditure. "
     "Total records: {record_count}."},
};

const char* const kDefaultInstructions[kBuiltinPhrasings] = {
    "Analyze this health data and provide clinical insights.",
    "Review this health data and summarize the clinically relevant findings.",
    "Interpret the following health data and describe the patterns it shows.",
};
const char* const kDefaultInput = "Health data of type {record_type}. Total records: {record_count}.";

constexpr std::string_view kDefaultKey = "default";
constexpr rapidjson::SizeType kMaxPhrasings = 64;

}  // namespace

std::string_view health_domain_for(std::string_view record_type) noexcept {
    for (const auto& e : kBuiltin) {
        if (record_type == e.record_type) return e.domain;
    }
    return "general_health";
}

TemplateTable TemplateTable::builtin() {
    TemplateTable t;
    for (const auto& e : kBuiltin) {
        t.table_[e.record_type] = Template{{std::begin(e.instructions), std::end(e.instructions)}, e.input};
    }
    t.table_[std::string(kDefaultKey)] =
        Template{{std::begin(kDefaultInstructions), std::end(kDefaultInstructions)}, kDefaultInput};
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
    auto fail = [&](const std::string& why) {
        return Error(ErrorCode::Config, "templates_file " + origin + ": " + why);
    };
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
            const std::string where = json::quote(type) + "." + std::string(field);
            if (field == "instruction" && f.value.IsArray()) {
                // Several phrasings: one per example, picked by its content hash.
                if (f.value.Empty()) throw fail(where + " must not be an empty array");
                if (f.value.Size() > kMaxPhrasings) {
                    throw fail(where + " has " + std::to_string(f.value.Size()) + " phrasings; at most " +
                               std::to_string(kMaxPhrasings));
                }
                entry.instructions.clear();
                for (auto& p : f.value.GetArray()) {
                    if (!p.IsString() || p.GetStringLength() == 0)
                        throw fail(where + ": every phrasing must be a non-empty string");
                    entry.instructions.emplace_back(json::view(p));
                }
                continue;
            }
            if (!f.value.IsString() || f.value.GetStringLength() == 0) {
                throw fail(where + (field == "instruction" ? " must be a non-empty string or an array of them"
                                                           : " must be a non-empty string"));
            }
            if (field == "instruction") {
                entry.instructions.assign(1, std::string(json::view(f.value)));
            } else {
                entry.input = std::string(json::view(f.value));
            }
        }
        t.table_[type] = std::move(entry);
    }
    return t;
}

std::string TemplateTable::canonical() const {
    rapidjson::StringBuffer buffer;
    rapidjson::Writer<rapidjson::StringBuffer> w(buffer);
    w.StartObject();
    for (const auto& [type, t] : table_) {  // sorted: the same table, the same text
        w.Key(type.data(), static_cast<rapidjson::SizeType>(type.size()));
        w.StartObject();
        w.Key("instruction");
        w.StartArray();
        for (const auto& i : t.instructions) w.String(i.data(), static_cast<rapidjson::SizeType>(i.size()));
        w.EndArray();
        w.Key("input");
        w.String(t.input.data(), static_cast<rapidjson::SizeType>(t.input.size()));
        w.EndObject();
    }
    w.EndObject();
    return std::string(buffer.GetString(), buffer.GetSize());
}

TemplateTable TemplateTable::from_file_over_builtin(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw Error(ErrorCode::Config, "templates_file " + json::quote(path) + ": cannot be read");
    std::ostringstream ss;
    ss << in.rdbuf();
    return from_json_over_builtin(ss.str(), json::quote(path));
}

}  // namespace training_output
