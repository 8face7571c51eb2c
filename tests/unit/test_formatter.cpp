#include <catch2/catch.hpp>

#include <random>

#include "common/json.hpp"
#include "format/formatter.hpp"
#include "test_util.hpp"
#include "training_output/error.hpp"

using namespace training_output;
using tdo_test::message_json;
using tdo_test::result_json;

namespace {

std::chrono::system_clock::time_point at(const char* iso) { return parse_iso8601(iso); }

// The instruction phrasing an example gets: its content hash's first 8 bytes
// (big-endian) modulo the number of phrasings (3 built in).
std::uint64_t content_variant(const TrainingExample& ex, std::uint64_t phrasings = 3) {
    std::uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v = (v << 8) | ex.content_hash[static_cast<std::size_t>(i)];
    return v % phrasings;
}

const char* const kTypes[] = {"BloodGlucoseRecord", "HeartRateRecord", "HeartRateVariabilityRmssdRecord",
                              "SleepSessionRecord", "StepsRecord",     "ActiveCaloriesBurnedRecord"};

}  // namespace

TEST_CASE("health domains of the six record types and of an unknown one", "[unit][format]") {
    CHECK(health_domain_for("BloodGlucoseRecord") == "metabolic_diabetes");
    CHECK(health_domain_for("HeartRateRecord") == "cardiovascular_fitness");
    CHECK(health_domain_for("HeartRateVariabilityRmssdRecord") == "cardiovascular_fitness");
    CHECK(health_domain_for("SleepSessionRecord") == "sleep_wellness");
    CHECK(health_domain_for("StepsRecord") == "physical_activity");
    CHECK(health_domain_for("ActiveCaloriesBurnedRecord") == "physical_activity");
    CHECK(health_domain_for("OxygenSaturationRecord") == "general_health");
    CHECK(health_domain_for("") == "general_health");
    CHECK(health_domain_for("bloodglucoserecord") == "general_health");  // exact names only
}

TEST_CASE("instruction and input description per record type", "[unit][format]") {
    TrainingDataFormatter f;
    CHECK(f.instruction_for("BloodGlucoseRecord") == "Analyze this blood glucose data and provide clinical insights.");
    CHECK(f.input_for("BloodGlucoseRecord", 450) ==
          "Blood glucose data including fasting, post-meal, and overnight readings. Total measurements: 450.");
    CHECK_THAT(f.instruction_for("HeartRateRecord"),
               Catch::Contains("heart rate") && Catch::Contains("cardiovascular"));
    CHECK_THAT(f.input_for("HeartRateRecord", 7), Catch::EndsWith("Total measurements: 7."));
    CHECK_THAT(f.instruction_for("HeartRateVariabilityRmssdRecord"), Catch::Contains("RMSSD"));
    CHECK_THAT(f.input_for("HeartRateVariabilityRmssdRecord", 30), Catch::Contains("30"));
    CHECK_THAT(f.instruction_for("SleepSessionRecord"), Catch::Contains("sleep quality"));
    CHECK_THAT(f.input_for("SleepSessionRecord", 14), Catch::EndsWith("Total sessions: 14."));
    CHECK_THAT(f.instruction_for("StepsRecord"), Catch::Contains("step count"));
    CHECK_THAT(f.input_for("StepsRecord", 30), Catch::EndsWith("Total records: 30."));
    CHECK_THAT(f.instruction_for("ActiveCaloriesBurnedRecord"), Catch::Contains("calories"));
    CHECK_THAT(f.input_for("ActiveCaloriesBurnedRecord", 112), Catch::EndsWith("Total records: 112."));
    CHECK(f.instruction_for("OxygenSaturationRecord") == "Analyze this health data and provide clinical insights.");
    CHECK(f.input_for("OxygenSaturationRecord", 5) == "Health data of type OxygenSaturationRecord. Total records: 5.");
    CHECK_THAT(f.input_for("StepsRecord", std::nullopt), Catch::EndsWith("Total records: unknown."));
    // Every known type has its own wording.
    std::set<std::string> instructions;
    for (const char* t : kTypes) instructions.insert(f.instruction_for(t));
    CHECK(instructions.size() == 6);
}

TEST_CASE("object keys: month padding, year boundary, time zones", "[unit][format]") {
    CHECK(object_key_for("training", "metabolic_diabetes", at("2025-03-05T00:00:00Z")) ==
          "training/metabolic_diabetes/2025/03/health_journal_2025_03.jsonl");
    CHECK(object_key_for("training", "sleep_wellness", at("2025-12-31T23:59:59.999999Z")) ==
          "training/sleep_wellness/2025/12/health_journal_2025_12.jsonl");
    CHECK(object_key_for("training", "sleep_wellness", at("2026-01-01T00:00:00Z")) ==
          "training/sleep_wellness/2026/01/health_journal_2026_01.jsonl");
    // 23:30 on Dec 31 at -05:00 is already January in UTC; 00:30 at +02:00 is still the previous month.
    CHECK(object_key_for("training", "d", at("2025-12-31T23:30:00-05:00")) ==
          "training/d/2026/01/health_journal_2026_01.jsonl");
    CHECK(object_key_for("training", "d", at("2025-11-01T00:30:00+02:00")) ==
          "training/d/2025/10/health_journal_2025_10.jsonl");
    CHECK(object_key_for("training", "d", at("2025-11-01T00:30:00+0200")) ==
          "training/d/2025/10/health_journal_2025_10.jsonl");
    CHECK(object_key_for("a/b", "d", at("2024-02-29T12:00:00")) == "a/b/d/2024/02/health_journal_2024_02.jsonl");
    CHECK(object_key_for("", "d", at("2024-02-29")) == "d/2024/02/health_journal_2024_02.jsonl");
}

TEST_CASE("ISO-8601 timestamps parse to UTC and bad ones are rejected", "[unit][format]") {
    CHECK(format_iso8601(at("2025-11-18T10:30:00Z")) == "2025-11-18T10:30:00Z");
    CHECK(format_iso8601(at("2025-11-18T10:30:00.250+01:00")) == "2025-11-18T09:30:00.250000Z");
    CHECK(format_iso8601(at("2025-11-18 10:30:00")) == "2025-11-18T10:30:00Z");
    CHECK(format_iso8601(at("2025-11-18T10:30")) == "2025-11-18T10:30:00Z");
    CHECK(format_iso8601(at("1999-12-31T23:59:59.123456789Z")) == "1999-12-31T23:59:59.123456Z");
    CHECK(format_iso8601(at("1970-01-01T00:00:00+01:00")) == "1969-12-31T23:00:00Z");
    CHECK(format_iso8601(at("2199-12-31T23:59:59Z")) == "2199-12-31T23:59:59Z");
    for (const char* bad : {"", "2025", "2025-13-01T00:00:00Z", "2025-02-29T00:00:00Z", "2025-11-18T25:00:00Z",
                            "2025-11-18T10:30:00Q", "2025-11-18T10:30:00+25:00", "18/11/2025", "2025-11-18T10:30:00.Z",
                            "2025-11-18T10:30:00Z trailing", "1012-12-31T23:30:00-05:00", "9999-01-01T00:00:00Z"}) {
        INFO(bad);
        CHECK_THROWS_AS(parse_iso8601(bad), Error);
    }
}

TEST_CASE("a line has the contract's keys, order and types", "[unit][format]") {
    TrainingDataFormatter f;
    auto ex = f.format_json("  Glucose was stable.\n", message_json("BloodGlucoseRecord", "user123", "abc-def-123"),
                            result_json(450));
    REQUIRE(ex.line.back() == '\n');
    REQUIRE(ex.line.find('\n') == ex.line.size() - 1);  // exactly one line
    CHECK(ex.object_key == "training/metabolic_diabetes/2025/11/health_journal_2025_11.jsonl");
    CHECK(ex.health_domain == "metabolic_diabetes");
    auto doc = tdo_test::parse(ex.line);
    REQUIRE_FALSE(doc.HasParseError());
    std::vector<std::string> keys;
    for (auto& m : doc.GetObject()) keys.emplace_back(m.name.GetString());
    CHECK(keys == std::vector<std::string>{"instruction", "input", "output", "metadata"});
    CHECK(std::string(doc["output"].GetString()) == "Glucose was stable.");  // trimmed
    const auto& md = doc["metadata"];
    std::vector<std::string> mkeys;
    for (auto& m : md.GetObject()) mkeys.emplace_back(m.name.GetString());
    CHECK(mkeys == std::vector<std::string>{"schema_version", "record_type", "health_domain", "split", "user_id",
                                            "correlation_id", "pseudonymization_key_id", "processing_timestamp",
                                            "source_bucket", "source_key", "quality_score", "record_count",
                                            "processing_duration_seconds", "clinical_insights", "instruction_variant",
                                            "phi_redacted", "redactions", "content_hash", "config_fingerprint"});
    CHECK(md["schema_version"].GetInt() == kSchemaVersion);
    CHECK(std::string(md["split"].GetString()) == "train");
    CHECK(std::string(md["user_id"].GetString()) == "user123");
    CHECK(std::string(md["correlation_id"].GetString()) == "abc-def-123");
    CHECK(std::string(md["pseudonymization_key_id"].GetString()).empty());
    CHECK(std::string(md["processing_timestamp"].GetString()) == "2025-11-18T10:30:00.000000Z");
    CHECK(std::string(md["content_hash"].GetString()) == to_hex(ex.content_hash));
    CHECK(std::string(md["config_fingerprint"].GetString()) == f.fingerprint());
    CHECK(md["phi_redacted"].GetBool());
    CHECK(md["redactions"].MemberCount() == 17);
    CHECK(std::string(md["source_bucket"].GetString()) == "health-data");
    CHECK(md["quality_score"].IsDouble());
    CHECK(md["record_count"].IsInt64());
    CHECK(md["record_count"].GetInt64() == 450);
    CHECK(md["processing_duration_seconds"].GetDouble() == 2.5);
    CHECK(std::string(md["health_domain"].GetString()) == "metabolic_diabetes");

    SECTION("absent values are null and numbers keep their type") {
        auto ex2 = f.format_json("x", "{\"record_type\":\"StepsRecord\"}", "{\"quality_score\":1}");
        auto d2 = tdo_test::parse(ex2.line);
        CHECK(d2["metadata"]["user_id"].IsNull());
        CHECK(d2["metadata"]["record_count"].IsNull());
        CHECK(d2["metadata"]["quality_score"].IsDouble());  // written as 1.0, not 1
        CHECK(std::string(d2["metadata"]["clinical_insights"].GetString()) == "{}");
        CHECK(ex2.line.find("\"quality_score\":1.0") != std::string::npos);
    }
}

TEST_CASE("clinical insights pass through unchanged, as a JSON-encoded string", "[unit][format]") {
    FormatterOptions o;
    o.redact_phi = false;
    TrainingDataFormatter f(o);
    const std::string insights =
        R"({"nested":{"a":[1,2.5,{"b":null}],"s":"t\u00e9xt \"q\""},"n":-3,"big":12345678901234,"e":1e-7,"t":true,"z":null})";
    auto ex = f.format_json("x", message_json("StepsRecord"), "{\"clinical_insights\":" + insights + "}");
    auto doc = tdo_test::parse(ex.line);
    auto expected = tdo_test::parse(insights);
    REQUIRE(doc["metadata"]["clinical_insights"].IsString());
    CHECK(tdo_test::parse(doc["metadata"]["clinical_insights"].GetString()) == expected);
    for (const char* value : {"[1,2,3]", "42", "null", "\"text\""}) {
        auto e = f.format_json("x", message_json("StepsRecord"), std::string("{\"clinical_insights\":") + value + "}");
        auto d = tdo_test::parse(e.line);
        REQUIRE(d["metadata"]["clinical_insights"].IsString());
        CHECK(tdo_test::parse(d["metadata"]["clinical_insights"].GetString()) == tdo_test::parse(value));
    }
}

TEST_CASE("metadata can be left out", "[unit][format]") {
    FormatterOptions o;
    o.include_metadata = false;
    TrainingDataFormatter f(o);
    auto ex = f.format_json("Out", message_json("SleepSessionRecord"), result_json(3));
    auto doc = tdo_test::parse(ex.line);
    CHECK_FALSE(doc.HasMember("metadata"));
    CHECK(doc.MemberCount() == 3);
    // The hash does not depend on metadata.
    TrainingDataFormatter with;
    CHECK(with.format_json("Out", message_json("SleepSessionRecord"), result_json(3)).content_hash == ex.content_hash);
}

TEST_CASE("the content hash covers record type, input and output only", "[unit][format][dedup]") {
    TrainingDataFormatter f;
    auto base = f.format_json("Same narrative", message_json("StepsRecord", "u1", "c1"), result_json(30));
    CHECK(to_hex(base.content_hash).size() == 64);
    // Ignored: user, correlation id, timestamps, quality, duration, insights, bucket/key.
    auto other =
        f.format_json("Same narrative", message_json("StepsRecord", "u2", "c2"),
                      "{\"record_count\":30,\"quality_score\":0.1,\"processing_timestamp\":\"2024-01-01T00:00:00Z\","
                      "\"clinical_insights\":{\"x\":1}}");
    CHECK(other.content_hash == base.content_hash);
    CHECK(other.object_key != base.object_key);
    // Surrounding whitespace of the narrative does not make a new example.
    CHECK(f.format_json("\n Same narrative \t", message_json("StepsRecord"), result_json(30)).content_hash ==
          base.content_hash);
    // Counted: output, record type, input (record count).
    CHECK(f.format_json("Other narrative", message_json("StepsRecord"), result_json(30)).content_hash !=
          base.content_hash);
    CHECK(f.format_json("Same narrative", message_json("HeartRateRecord"), result_json(30)).content_hash !=
          base.content_hash);
    CHECK(f.format_json("Same narrative", message_json("StepsRecord"), result_json(31)).content_hash !=
          base.content_hash);
    // Field boundaries are unambiguous.
    CHECK(content_hash("ab", "c", "d") != content_hash("a", "bc", "d"));
    // The documented definition: SHA-256 over length-prefixed fields (24 zero bytes here).
    CHECK(to_hex(content_hash("", "", "")) == "9d908ecfb6b256def8b49a7c504e6c889c4b0e41fe6ce3e01863dd7b61a20aa0");
    CHECK(to_hex(content_hash("StepsRecord", "in", "out")) ==
          "a9008d3875aad3e1379d25ce4594693ee912b6e667286848495e09134707fb32");
}

TEST_CASE("empty and whitespace-only narratives are skipped", "[unit][format]") {
    TrainingDataFormatter f;
    for (const char* n : {"", "   ", "\n\t\r ", "\xC2\xA0\xE3\x80\x80"}) {  // NBSP, ideographic space
        auto ex = f.format_json(n, message_json("StepsRecord"), result_json());
        CHECK(ex.skipped());
        CHECK(ex.skip_reason == "empty_narrative");
        CHECK(ex.line.empty());
    }
    // Input errors still win over skipping.
    CHECK_THROWS_AS(f.format_json("", "{", result_json()), Error);
}

TEST_CASE("invalid input gets a clear error, never an invalid line", "[unit][format]") {
    TrainingDataFormatter f;
    auto code_of = [&](const std::string& narrative, const std::string& message, const std::string& result) {
        try {
            f.format_json(narrative, message, result);
        } catch (const Error& e) {
            return std::make_pair(e.code(), std::string(e.what()));
        }
        return std::make_pair(ErrorCode::Internal, std::string("no error"));
    };
    auto [c1, m1] = code_of("ok \xC3\x28 bad", message_json("StepsRecord"), "{}");
    CHECK(c1 == ErrorCode::InvalidInput);
    CHECK_THAT(m1, Catch::Contains("narrative") && Catch::Contains("UTF-8"));
    CHECK(code_of("\xED\xA0\x80", message_json("StepsRecord"), "{}").first == ErrorCode::InvalidInput);  // surrogate
    CHECK(code_of("\xC0\xAF", message_json("StepsRecord"), "{}").first == ErrorCode::InvalidInput);      // overlong
    CHECK(code_of("x", "{\"record_type\":\"St\xFFps\"}", "{}").first == ErrorCode::InvalidJson);
    CHECK(code_of("x", "{\"record_type\":\"\\ud800\"}", "{}").first == ErrorCode::InvalidJson);
    CHECK(code_of("x", "not json", "{}").first == ErrorCode::InvalidJson);
    // A lone low surrogate escape parses, but is not text: rejected, not written.
    CHECK_THAT(code_of("x", "{\"record_type\":\"a\\udee0b\"}", "{}").second,
               Catch::Contains("record_type is not valid UTF-8"));
    CHECK_THAT(code_of("x", "{\"record_type\":\"S\",\"user_id\":\"\\udc00\"}", "{}").second,
               Catch::Contains("user_id"));
    CHECK_THAT(code_of("x", message_json("S"), "{\"clinical_insights\":{\"k\":\"\\udfff\"}}").second,
               Catch::Contains("not valid UTF-8"));
    CHECK_THAT(code_of("x", message_json("S"), "{\"clinical_insights\":{\"\\udfff\":1}}").second,
               Catch::Contains("not valid UTF-8"));
    CHECK(code_of("x", "[]", "{}").first == ErrorCode::InvalidInput);
    auto [c2, m2] = code_of("x", "{\"user_id\":\"u\"}", "{}");
    CHECK(c2 == ErrorCode::InvalidInput);
    CHECK_THAT(m2, Catch::Contains("record_type is required"));
    CHECK_THAT(code_of("x", "{\"record_type\":5}", "{}").second, Catch::Contains("record_type must be a string"));
    CHECK_THAT(code_of("x", "{\"record_type\":\"\"}", "{}").second, Catch::Contains("must not be empty"));
    CHECK_THAT(code_of("x", "{\"record_type\":\"S\",\"user_id\":7}", "{}").second,
               Catch::Contains("user_id must be a string"));
    CHECK_THAT(code_of("x", message_json("S"), "{\"record_count\":4.5}").second,
               Catch::Contains("record_count must be an integer"));
    CHECK_THAT(code_of("x", message_json("S"), "{\"record_count\":-1}").second, Catch::Contains("negative"));
    CHECK_THAT(code_of("x", message_json("S"), "{\"quality_score\":\"high\"}").second,
               Catch::Contains("quality_score must be a number"));
    CHECK_THAT(code_of("x", message_json("S"), "{\"processing_timestamp\":\"yesterday\"}").second,
               Catch::Contains("processing_timestamp"));
    CHECK_THAT(code_of("x", message_json("S"), "{\"processing_timestamp\":17000}").second,
               Catch::Contains("must be a string"));
    CHECK(code_of("x", message_json("S"), "[1]").first == ErrorCode::InvalidInput);
    CHECK(code_of("x", message_json("S"), "{\"a\":1,}").first == ErrorCode::InvalidJson);
    CHECK(code_of("x", message_json("S"), "{\"q\":NaN}").first == ErrorCode::InvalidJson);
    // 450.0 is an integer written as a float: accepted.
    CHECK(code_of("x", message_json("S"), "{\"record_count\":450.0}").first == ErrorCode::Internal);

    SECTION("typed front end") {
        MessageData m;
        ProcessingResult r;
        CHECK_THROWS_AS(f.format("x", m, r), Error);  // empty record type
        m.record_type = "StepsRecord";
        m.user_id = std::string("bad \xFF");
        CHECK_THROWS_WITH(f.format("x", m, r), Catch::Contains("user_id is not valid UTF-8"));
        m.user_id.reset();
        r.quality_score = std::numeric_limits<double>::infinity();
        CHECK_THROWS_WITH(f.format("x", m, r), Catch::Contains("finite"));
        r.quality_score = 0.5;
        r.clinical_insights_json = "{broken";
        CHECK_THROWS_WITH(f.format("x", m, r), Catch::Contains("clinical_insights"));
        r.clinical_insights_json = R"({"ok":[1]})";
        auto ex = f.format("x", m, r);
        CHECK(std::string(tdo_test::parse(ex.line)["metadata"]["clinical_insights"].GetString()) == R"({"ok":[1]})");
    }
}

TEST_CASE("unicode text is kept and escaped correctly", "[unit][format]") {
    TrainingDataFormatter f;
    std::string narrative = "Glucose 142 mg/dL \xE2\x80\x94 caf\xC3\xA9, \xF0\x9F\x98\x80, tab\tquote\" back\\ nul";
    narrative.push_back('\0');
    narrative += " end \xE2\x80\xA8";  // U+2028 line separator
    auto ex = f.format_json(narrative, message_json("StepsRecord"), "{}");
    REQUIRE(is_valid_utf8(ex.line));
    REQUIRE(ex.line.find('\n') == ex.line.size() - 1);
    auto doc = tdo_test::parse(ex.line);
    REQUIRE_FALSE(doc.HasParseError());
    CHECK(std::string(doc["output"].GetString(), doc["output"].GetStringLength()) ==
          std::string(trim_whitespace(narrative)));
}

TEST_CASE("templates can be overridden from a JSON file", "[unit][format]") {
    tdo_test::TempDir dir;
    tdo_test::write_file(dir / "t.json", R"({"StepsRecord":{"instruction":"Coach on {record_type}."},
        "CustomRecord":{"input":"Custom with {record_count} rows."},
        "default":{"instruction":"Generic."}})");
    auto t = TemplateTable::from_file_over_builtin(dir / "t.json");
    TrainingDataFormatter f(FormatterOptions{}, t);
    CHECK(f.instruction_for("StepsRecord") == "Coach on StepsRecord.");
    CHECK_THAT(f.input_for("StepsRecord", 3), Catch::EndsWith("Total records: 3."));  // kept
    CHECK(f.input_for("CustomRecord", 2) == "Custom with 2 rows.");
    CHECK(f.instruction_for("CustomRecord") == "Analyze this health data and provide clinical insights.");
    CHECK(f.instruction_for("Unknown") == "Generic.");
    CHECK(f.instruction_for("BloodGlucoseRecord") == "Analyze this blood glucose data and provide clinical insights.");

    tdo_test::write_file(dir / "bad1.json", R"({"StepsRecord":{"instructions":"typo"}})");
    CHECK_THROWS_WITH(TemplateTable::from_file_over_builtin(dir / "bad1.json"), Catch::Contains("instructions"));
    tdo_test::write_file(dir / "bad2.json", R"({"StepsRecord":"x"})");
    CHECK_THROWS_WITH(TemplateTable::from_file_over_builtin(dir / "bad2.json"), Catch::Contains("must be an object"));
    tdo_test::write_file(dir / "bad3.json", "{");
    CHECK_THROWS_AS(TemplateTable::from_file_over_builtin(dir / "bad3.json"), Error);
    CHECK_THROWS_WITH(TemplateTable::from_file_over_builtin(dir / "missing.json"), Catch::Contains("cannot be read"));
}

TEST_CASE("UTF-8 validation and trimming", "[unit][format]") {
    CHECK(is_valid_utf8(""));
    CHECK(is_valid_utf8("plain ascii text that is longer than eight bytes"));
    CHECK(is_valid_utf8("\xF4\x8F\xBF\xBF"));        // U+10FFFF
    CHECK_FALSE(is_valid_utf8("\xF4\x90\x80\x80"));  // > U+10FFFF
    CHECK_FALSE(is_valid_utf8("\xE0\x80\x80"));      // overlong
    CHECK_FALSE(is_valid_utf8("abc\xE2\x82"));       // truncated
    CHECK_FALSE(is_valid_utf8("\x80"));
    CHECK(trim_whitespace("  a b \n") == "a b");
    CHECK(trim_whitespace("\xE3\x80\x80x\xC2\xA0") == "x");
    CHECK(trim_whitespace("\xC3\xA9") == "\xC3\xA9");
}

TEST_CASE("append_quoted writes what RapidJSON's Writer writes, byte for byte", "[unit][format]") {
    auto rapid = [](std::string_view s) {
        rapidjson::StringBuffer b;
        rapidjson::Writer<rapidjson::StringBuffer> w(b);
        w.String(s.data(), static_cast<rapidjson::SizeType>(s.size()));
        return std::string(b.GetString(), b.GetSize());
    };
    auto mine = [](std::string_view s) {
        std::string out = "prefix";
        training_output::json::append_quoted(out, s);
        return out.substr(6);
    };
    // Every byte, alone and at every position of an 8-byte word.
    for (int c = 0; c < 256; ++c) {
        for (std::size_t at = 0; at < 17; ++at) {
            std::string s(17, 'a');
            s[at] = static_cast<char>(c);
            REQUIRE(mine(s) == rapid(s));
        }
    }
    std::mt19937 gen(42);
    const char alphabet[] = "ab \"\\\n\t\x01\x1f\x7f/\xc3\xa9";
    for (int i = 0; i < 2000; ++i) {
        std::string s(gen() % 80, ' ');
        for (auto& ch : s) ch = alphabet[gen() % (sizeof alphabet - 1)];
        REQUIRE(mine(s) == rapid(s));
    }
}

TEST_CASE("metadata is written byte for byte as RapidJSON's Writer writes it", "[unit][format]") {
    // The metadata the line must end with, written through RapidJSON's Writer
    // from the parsed arguments.
    FormatterOptions o;
    o.redact_phi = false;
    TrainingDataFormatter f(o);
    auto expected = [&f](const std::string& message, const std::string& result, const TrainingExample& ex) {
        auto m = tdo_test::parse(message);
        auto r = tdo_test::parse(result);
        rapidjson::StringBuffer b;
        rapidjson::Writer<rapidjson::StringBuffer> w(b);
        auto field = [&](const rapidjson::Value& obj, const char* from, const char* to) {
            w.Key(to);
            if (obj.HasMember(from))
                obj[from].Accept(w);
            else
                w.Null();
        };
        w.StartObject();
        w.Key("schema_version");
        w.Int(kSchemaVersion);
        field(m, "record_type", "record_type");
        w.Key("health_domain");
        w.String(health_domain_for(m["record_type"].GetString()).data());
        w.Key("split");
        w.String("train");
        field(m, "user_id", "user_id");
        field(m, "correlation_id", "correlation_id");
        w.Key("pseudonymization_key_id");
        w.String("");
        w.Key("processing_timestamp");
        w.String("2025-11-18T10:30:00.250000Z");
        field(m, "bucket", "source_bucket");
        field(m, "key", "source_key");
        w.Key("quality_score");
        if (r.HasMember("quality_score"))
            w.Double(r["quality_score"].GetDouble());
        else
            w.Null();
        field(r, "record_count", "record_count");
        w.Key("processing_duration_seconds");
        if (r.HasMember("processing_time_seconds"))
            w.Double(r["processing_time_seconds"].GetDouble());
        else
            w.Null();
        w.Key("clinical_insights");
        rapidjson::StringBuffer insights;
        rapidjson::Writer<rapidjson::StringBuffer> iw(insights);
        if (r.HasMember("clinical_insights"))
            r["clinical_insights"].Accept(iw);
        else {
            iw.StartObject();
            iw.EndObject();
        }
        w.String(insights.GetString(), static_cast<rapidjson::SizeType>(insights.GetSize()));
        w.Key("instruction_variant");
        w.Uint64(content_variant(ex));
        w.Key("phi_redacted");
        w.Bool(false);
        w.Key("redactions");
        w.StartObject();
        for (const char* t : {"email", "phone", "ssn", "url", "ip", "mrn", "serial", "name", "address", "zip", "date",
                              "health_plan", "account", "license", "vehicle", "id", "age"}) {
            w.Key(t);
            w.Int(0);
        }
        w.EndObject();
        w.Key("content_hash");
        w.String(to_hex(ex.content_hash).c_str());
        w.Key("config_fingerprint");
        w.String(f.fingerprint().c_str());
        w.EndObject();
        return ",\"metadata\":" + std::string(b.GetString(), b.GetSize()) + "}\n";
    };
    const std::string ts = "\"processing_timestamp\":\"2025-11-18T10:30:00.25Z\"";
    const char* numbers[] = {"0",
                             "1",
                             "-0.0",
                             "0.1",
                             "2.5",
                             "1e21",
                             "1.5e-7",
                             "5e-324",
                             "1.7976931348623157e308",
                             "123456789.123456789",
                             "-42.125",
                             "3",
                             "0.95"};
    const char* texts[] = {
        "plain",  "qu\\\"ote", "back\\\\slash", "tab\\tnew\\nline", "\\u0001ctl", "caf\\u00e9 \xe2\x82\xac",
        "/slash", ""};
    int n = 0;
    for (const char* num : numbers) {
        for (const char* text : texts) {
            const std::string message = std::string("{\"record_type\":\"HeartRateRecord\",\"user_id\":\"") + text +
                                        "\",\"key\":\"k/" + text + "\"}";
            const std::string result = std::string("{\"quality_score\":") + num +
                                       ",\"processing_time_seconds\":" + num +
                                       ",\"record_count\":" + std::to_string(n * 1000003 + 7) + "," + ts +
                                       ",\"clinical_insights\":{\"v\":" + num + ",\"s\":\"" + text + "\"}}";
            auto ex = f.format_json("narrative " + std::to_string(n++), message, result);
            const std::string want = expected(message, result, ex);
            REQUIRE(ex.line.size() > want.size());
            CHECK(ex.line.substr(ex.line.size() - want.size()) == want);
        }
    }
    // Nulls and absent values.
    auto ex = f.format_json("x", "{\"record_type\":\"StepsRecord\",\"user_id\":null}", "{" + ts + "}");
    const std::string want = expected("{\"record_type\":\"StepsRecord\"}", "{}", ex);
    CHECK(ex.line.substr(ex.line.size() - want.size()) == want);
}

TEST_CASE("JSON errors name the same problem and offset as RapidJSON's validating parser", "[unit][format]") {
    const std::string texts[] = {"",
                                 "{",
                                 "{\"record_type\":",
                                 "{\"record_type\":\"x\",}",
                                 "{\"record_type\":\"x\"} trailing",
                                 "[1,2",
                                 "{\"a\":tru}",
                                 "{\"a\":\"\\q\"}",
                                 "{\"a\":\"\\ud800\"}",
                                 "{\"a\":1e999999}",
                                 "{\"a\":\"unterminated",
                                 "{\"a\":\"\x01\"}",
                                 "{\"a\":\"\xff\"}",                        // not UTF-8
                                 std::string("{\"a\":\"nul\0here\"}", 16),  // a NUL inside
                                 "  {\"a\" 1}"};
    TrainingDataFormatter f;
    // An empty view without a buffer behind it (found by fuzzing: no memchr on a null pointer).
    CHECK_THROWS_AS(f.format_json("x", std::string_view(), "{}"), Error);
    for (const auto& text : texts) {
        INFO(text);
        rapidjson::Document doc;
        doc.Parse<rapidjson::kParseValidateEncodingFlag>(text.data(), text.size());
        REQUIRE(doc.HasParseError());
        const std::string expected = std::string("message_data is not valid JSON: ") +
                                     rapidjson::GetParseError_En(doc.GetParseError()) + " at offset " +
                                     std::to_string(doc.GetErrorOffset());
        try {
            f.format_json("x", text, "{}");
            FAIL("accepted");
        } catch (const Error& e) {
            CHECK(e.code() == ErrorCode::InvalidJson);
            CHECK(std::string(e.what()) == expected);
        }
    }
}
