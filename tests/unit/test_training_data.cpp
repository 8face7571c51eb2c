// The training data itself: one type per field on every line, pseudonymous
// ids, PHI redaction that fails closed, quality filters, instruction
// variety, splits, the chat format, manifests and delivery notifications.
#include <catch2/catch.hpp>

#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "common/crash_point.hpp"
#include "common/sha256.hpp"
#include "format/formatter.hpp"
#include "manifest/manifest.hpp"
#include "memory_sink.hpp"
#include "shared_sink.hpp"
#include "test_util.hpp"
#include "training_output/error.hpp"
#include "training_output/training_output.hpp"

using namespace training_output;
using tdo_test::message_json;
using tdo_test::result_json;

namespace {

const char* const kTypes[] = {"BloodGlucoseRecord",    "HeartRateRecord", "HeartRateVariabilityRmssdRecord",
                              "SleepSessionRecord",    "StepsRecord",     "ActiveCaloriesBurnedRecord",
                              "OxygenSaturationRecord"};

// Insights of every odd shape a processor sends.
const char* const kOddInsights[] = {
    R"({"status":"fair","events":[1,2]})",
    R"([1,"two",null])",
    "null",
    "42",
    R"("just text")",
    R"({"value":"7.5","nested":{"deep":[{"a":null}]}})",
    R"({})",
    R"({"status":null,"events":"none"})",
};

// The documented nullable fields of metadata (absent in the input).
const std::set<std::string> kNullable = {"user_id",
                                         "correlation_id",
                                         "source_bucket",
                                         "source_key",
                                         "quality_score",
                                         "record_count",
                                         "processing_duration_seconds"};

std::string type_of(const rapidjson::Value& v) {
    if (v.IsNull()) return "null";
    if (v.IsBool()) return "bool";
    if (v.IsString()) return "string";
    if (v.IsInt64() && !v.IsDouble()) return "integer";
    if (v.IsDouble()) return "double";
    if (v.IsObject()) return "object";
    return "array";
}

// Field path -> the one non-null JSON type it has on every line.
void collect_types(const rapidjson::Value& v, const std::string& path,
                   std::map<std::string, std::set<std::string>>& out) {
    out[path].insert(type_of(v));
    if (v.IsObject()) {
        for (auto& m : v.GetObject()) collect_types(m.value, path + "." + m.name.GetString(), out);
    }
}

Config dir_config(const tdo_test::TempDir& dir) {
    Config c;
    c.output_dir = dir.path();
    c.directory_fsync = false;
    c.dedup_store = "memory";
    c.log_level = LogLevel::Off;
    c.flush_interval_ms = 5;
    return c;
}

std::vector<rapidjson::Document> lines_in(const std::string& text) {
    std::vector<rapidjson::Document> out;
    for (const auto& l : tdo_test::lines_of(text)) out.push_back(tdo_test::parse(l));
    return out;
}

}  // namespace

TEST_CASE("every metadata field has one JSON type on every line, across record types and odd insights",
          "[unit][training-data][schema]") {
    TrainingDataFormatter f;
    std::map<std::string, std::set<std::string>> types;
    int n = 0;
    for (const char* type : kTypes) {
        for (const char* insights : kOddInsights) {
            for (bool with_ids : {true, false}) {
                const std::string message = with_ids ? message_json(type, "u" + std::to_string(n))
                                                     : std::string("{\"record_type\":\"") + type + "\"}";
                const std::string result =
                    with_ids
                        ? std::string(
                              "{\"quality_score\":1,\"record_count\":3,\"processing_time_seconds\":2,"
                              "\"processing_timestamp\":\"2025-11-18T10:30:00.5Z\",\"clinical_insights\":") +
                              insights + "}"
                        : std::string("{\"processing_timestamp\":\"2025-11-18T10:30:00Z\",\"clinical_insights\":") +
                              insights + "}";
                auto ex = f.format_json("Narrative " + std::to_string(n++) + ".", message, result);
                auto doc = tdo_test::parse(ex.line);
                REQUIRE_FALSE(doc.HasParseError());
                collect_types(doc, "", types);
                // One timestamp format: always microseconds, always Z.
                const std::string ts = doc["metadata"]["processing_timestamp"].GetString();
                CHECK(ts.size() == 27);
                CHECK(ts.back() == 'Z');
                CHECK(ts[19] == '.');
            }
        }
    }
    for (auto& [path, set] : types) {
        INFO(path);
        const std::string field = path.substr(path.rfind('.') + 1);
        if (kNullable.count(field) && path.rfind(".metadata.", 0) == 0) {
            set.erase("null");
            CHECK(set.size() == 1);
        } else {
            CHECK(set.size() == 1);
        }
        // Numbers keep their type: quality 1 is written 1.0, a count is an integer.
        if (field == "quality_score" || field == "processing_duration_seconds") CHECK(*set.begin() == "double");
        if (field == "record_count" || field == "schema_version" || field == "instruction_variant") {
            CHECK(*set.begin() == "integer");
        }
    }
    CHECK(types.at(".metadata.clinical_insights") == std::set<std::string>{"string"});
    CHECK(types.at(".metadata.redactions") == std::set<std::string>{"object"});
    CHECK(types.at(".metadata.redactions.date") == std::set<std::string>{"integer"});
}

TEST_CASE("pseudonymous ids: keyed HMAC-SHA256 values, stable per key, a key id in metadata",
          "[unit][training-data][pseudonymize]") {
    FormatterOptions o;
    o.pseudonymize_ids = true;
    o.pseudonymization_key = "0123456789abcdef-secret-key";
    TrainingDataFormatter f(o);
    const std::string message = R"({"record_type":"StepsRecord","user_id":"user-1042","correlation_id":"c-77",)"
                                R"("bucket":"health-data","key":"raw/StepsRecord/user-1042_c-77.avro"})";
    auto ex = f.format_json("Walked 10,432 steps.", message, result_json());
    CHECK(ex.line.find("user-1042") == std::string::npos);  // not in the line at all (nor in source_key)
    CHECK(ex.line.find("c-77") == std::string::npos);
    const auto doc = tdo_test::parse(ex.line);  // alive while md is used
    const auto& md = doc["metadata"];
    const std::string user = md["user_id"].GetString();
    CHECK(user.size() == 32);
    CHECK(user.find_first_not_of("0123456789abcdef") == std::string::npos);
    CHECK(user == f.pseudonym("user_id", "user-1042"));
    CHECK(std::string(md["correlation_id"].GetString()) == f.pseudonym("correlation_id", "c-77"));
    CHECK(std::string(md["source_key"].GetString()) ==
          f.pseudonym("source_key", "raw/StepsRecord/user-1042_c-77.avro"));
    CHECK(std::string(md["source_bucket"].GetString()) == "health-data");
    const std::string key_id = md["pseudonymization_key_id"].GetString();
    CHECK(key_id.rfind("hmac-", 0) == 0);
    CHECK(key_id.find("secret") == std::string::npos);
    // The same user always gets the same pseudonym; another key another one.
    CHECK(TrainingDataFormatter(o).pseudonym("user_id", "user-1042") == user);
    FormatterOptions rotated = o;
    rotated.pseudonymization_key = "another-key-of-sixteen-bytes";
    rotated.pseudonymization_key_id = "2026-12";
    TrainingDataFormatter g(rotated);
    CHECK(g.pseudonym("user_id", "user-1042") != user);
    CHECK(std::string(tdo_test::parse(g.format_json("x", message, "{}").line)["metadata"]["pseudonymization_key_id"]
                          .GetString()) == "2026-12");
    // The same id in two fields gives two values; the content hash does not change.
    CHECK(f.pseudonym("user_id", "x") != f.pseudonym("correlation_id", "x"));
    CHECK(ex.content_hash ==
          TrainingDataFormatter().format_json("Walked 10,432 steps.", message, result_json()).content_hash);
    // The configuration fingerprint names the key id, never the key.
    CHECK(f.fingerprint() != g.fingerprint());

    SECTION("a key is required, and never quoted") {
        const std::string secret = "short-secret";
        try {
            Config::from_json(R"({"pseudonymize_ids":true,"pseudonymization_key":")" + secret + "\"}");
            FAIL("accepted a short key");
        } catch (const Error& e) {
            CHECK(e.code() == ErrorCode::Config);
            CHECK_THAT(e.what(), Catch::Contains("pseudonymization_key") && Catch::Contains("16 bytes"));
            CHECK(std::string(e.what()).find(secret) == std::string::npos);
        }
        CHECK_THROWS_AS(Config::from_json(R"({"pseudonymize_ids":true})"), Error);
    }
}

TEST_CASE("PHI redaction replaces identifiers in the narrative and the insights' strings, before the hash",
          "[unit][training-data][redact]") {
    TrainingDataFormatter f;
    const std::string narrative = "Patient John Smith (john.smith@example.org) averaged 142 mg/dL.";
    auto ex = f.format_json(narrative, message_json("BloodGlucoseRecord"),
                            R"({"clinical_insights":{"note":"call 555-123-4567","mean_mg_dl":142}})");
    REQUIRE_FALSE(ex.skipped());
    CHECK(ex.line.find("john.smith@example.org") == std::string::npos);
    CHECK(ex.line.find("555-123-4567") == std::string::npos);
    auto doc = tdo_test::parse(ex.line);
    const std::string output = doc["output"].GetString();
    CHECK_THAT(output, Catch::Contains("[EMAIL]") && Catch::Contains("142 mg/dL"));
    CHECK_THAT(std::string(doc["metadata"]["clinical_insights"].GetString()), Catch::Contains("[PHONE]"));
    CHECK(doc["metadata"]["redactions"]["email"].GetInt() == 1);
    CHECK(doc["metadata"]["redactions"]["phone"].GetInt() == 1);
    CHECK(ex.redactions >= 2);
    // The hash is the redacted text's: another address, the same example.
    auto other = f.format_json("Patient John Smith (jsmith@mail.example.com) averaged 142 mg/dL.",
                               message_json("BloodGlucoseRecord"), "{}");
    CHECK(other.content_hash == ex.content_hash);
    // Off, the text is kept as it is.
    FormatterOptions off;
    off.redact_phi = false;
    auto kept = TrainingDataFormatter(off).format_json(narrative, message_json("BloodGlucoseRecord"), "{}");
    CHECK(kept.line.find("john.smith@example.org") != std::string::npos);
    CHECK_FALSE(tdo_test::parse(kept.line)["metadata"]["phi_redacted"].GetBool());
}

#ifdef TDO_CRASH_POINTS
TEST_CASE("redaction fails closed: an example it cannot run on is skipped, never written unredacted",
          "[unit][training-data][redact]") {
    tdo_test::TempDir dir;
    TrainingOutput w(dir_config(dir));
    arm_fault("redact_phi", 1);
    CHECK(w.generate("Reach me at jane@example.org.", message_json("StepsRecord"), result_json()) == Outcome::Skipped);
    CHECK(std::string(TrainingOutput::last_skip_reason()) == "redaction_failed");
    CHECK(w.generate("Reach me at jane@example.org.", message_json("StepsRecord"), result_json()) == Outcome::Written);
    CHECK(std::string(TrainingOutput::last_skip_reason()).empty());
    w.flush();
    CHECK(w.stats().skipped_redaction_failed == 1);
    const std::string text =
        tdo_test::read_file(dir / "training/physical_activity/2025/11/health_journal_2025_11.jsonl");
    CHECK(tdo_test::lines_of(text).size() == 1);
    CHECK(text.find("jane@example.org") == std::string::npos);
}
#endif

TEST_CASE("quality filter: global and per-domain thresholds, skips counted by reason",
          "[unit][training-data][quality]") {
    tdo_test::TempDir dir;
    Config c = dir_config(dir);
    c.min_quality_score = 0.5;
    c.min_quality_score_by_domain = {{"sleep_wellness", 0.9}};
    TrainingOutput w(c);
    auto gen = [&](const char* type, const std::string& quality, int i) {
        return w.generate("Example " + std::to_string(i) + ".", message_json(type),
                          "{\"record_count\":3" + (quality.empty() ? "" : ",\"quality_score\":" + quality) +
                              ",\"processing_timestamp\":\"2025-11-18T10:30:00Z\"}");
    };
    CHECK(gen("StepsRecord", "0.6", 1) == Outcome::Written);
    CHECK(gen("StepsRecord", "0.4", 2) == Outcome::Skipped);
    CHECK(std::string(TrainingOutput::last_skip_reason()) == "low_quality");
    CHECK(gen("StepsRecord", "", 3) == Outcome::Skipped);
    CHECK(std::string(TrainingOutput::last_skip_reason()) == "no_quality_score");
    CHECK(gen("SleepSessionRecord", "0.8", 4) == Outcome::Skipped);  // its domain asks for 0.9
    CHECK(gen("SleepSessionRecord", "0.95", 5) == Outcome::Written);
    CHECK(w.generate("  ", message_json("StepsRecord"), result_json()) == Outcome::Skipped);
    CHECK(std::string(TrainingOutput::last_skip_reason()) == "empty_narrative");
    auto s = w.stats();
    CHECK(s.written == 2);
    CHECK(s.skipped == 4);
    CHECK(s.skipped_low_quality == 2);
    CHECK(s.skipped_no_quality_score == 1);
    CHECK(s.skipped_empty_narrative == 1);
    CHECK(s.errors == 0);  // skips are outcomes, not errors
    const std::string stats = w.stats_json();
    CHECK_THAT(stats,
               Catch::Contains("\"skipped_low_quality\":2") && Catch::Contains("\"skipped_no_quality_score\":1"));

    SECTION("the thresholds come from the environment too") {
        ::setenv("ETL_MIN_QUALITY_SCORE", "0.7", 1);
        ::setenv("ETL_MIN_QUALITY_SCORE_BY_DOMAIN", R"({"physical_activity":0.2})", 1);
        ::setenv("ETL_VALIDATION_FRACTION", "0.25", 1);
        ::setenv("ETL_OUTPUT_FORMAT", "chat", 1);
        Config e = Config::from_environment();
        ::unsetenv("ETL_MIN_QUALITY_SCORE");
        ::unsetenv("ETL_MIN_QUALITY_SCORE_BY_DOMAIN");
        ::unsetenv("ETL_VALIDATION_FRACTION");
        ::unsetenv("ETL_OUTPUT_FORMAT");
        CHECK(e.min_quality_score == 0.7);
        CHECK(e.min_quality_score_by_domain.at("physical_activity") == 0.2);
        CHECK(e.validation_fraction == 0.25);
        CHECK(e.output_format == "chat");
    }
    SECTION("bad values are refused with the key's name") {
        CHECK_THROWS_WITH(Config::from_json(R"({"min_quality_score":"high"})"), Catch::Contains("min_quality_score"));
        CHECK_THROWS_WITH(Config::from_json(R"({"min_quality_score_by_domain":{"x":"y"}})"),
                          Catch::Contains("min_quality_score_by_domain"));
        CHECK_THROWS_WITH(Config::from_json(R"({"validation_fraction":1.5})"), Catch::Contains("validation_fraction"));
        CHECK_THROWS_WITH(Config::from_json(R"({"output_format":"sharegpt"})"), Catch::Contains("output_format"));
        CHECK(Config::from_json(R"({"min_quality_score":null})").min_quality_score == std::nullopt);
    }
}

TEST_CASE("instruction variety: several phrasings per record type, the same one for the same example",
          "[unit][training-data][variety]") {
    TrainingDataFormatter f;
    std::map<std::string, std::set<std::string>> seen;
    for (const char* type : kTypes) {
        for (int i = 0; i < 60; ++i) {
            const std::string narrative = "Narrative number " + std::to_string(i) + ".";
            auto a = f.format_json(narrative, message_json(type), result_json());
            auto b =
                f.format_json(narrative, message_json(type, "another user"), result_json(10, "2025-01-01T00:00:00Z"));
            auto da = tdo_test::parse(a.line);
            auto db = tdo_test::parse(b.line);
            CHECK(std::string(da["instruction"].GetString()) == db["instruction"].GetString());  // deterministic
            const int variant = da["metadata"]["instruction_variant"].GetInt();
            CHECK(std::string(da["instruction"].GetString()) ==
                  f.instruction_for(type, static_cast<std::size_t>(variant)));
            seen[type].insert(da["instruction"].GetString());
        }
        CHECK(seen[type].size() == 3);  // every built-in phrasing is used
    }

    SECTION("phrasings come from the templates file") {
        tdo_test::TempDir dir;
        tdo_test::write_file(dir / "t.json",
                             R"({"StepsRecord":{"instruction":["One {record_type}.","Two.","Three.","Four."]}})");
        TrainingDataFormatter g(FormatterOptions{}, TemplateTable::from_file_over_builtin(dir / "t.json"));
        std::set<std::string> used;
        for (int i = 0; i < 80; ++i) {
            used.insert(
                tdo_test::parse(
                    g.format_json("N" + std::to_string(i), message_json("StepsRecord"), "{}").line)["instruction"]
                    .GetString());
        }
        CHECK(used == std::set<std::string>{"One StepsRecord.", "Two.", "Three.", "Four."});
        CHECK(g.fingerprint() != f.fingerprint());  // the templates shape the lines
        tdo_test::write_file(dir / "bad.json", R"({"StepsRecord":{"instruction":[]}})");
        CHECK_THROWS_WITH(TemplateTable::from_file_over_builtin(dir / "bad.json"), Catch::Contains("empty array"));
        tdo_test::write_file(dir / "bad2.json", R"({"StepsRecord":{"instruction":["ok", 3]}})");
        CHECK_THROWS_WITH(TemplateTable::from_file_over_builtin(dir / "bad2.json"),
                          Catch::Contains("non-empty string"));
    }
}

TEST_CASE("splits: a share of users in validation, one user never in both, optionally in separate objects",
          "[unit][training-data][split]") {
    FormatterOptions o;
    o.validation_fraction = 0.2;
    TrainingDataFormatter f(o);
    std::map<std::string, std::set<std::string>> splits_of_user;
    int validation_users = 0;
    const int users = 2000;
    for (int u = 0; u < users; ++u) {
        const std::string user = "user-" + std::to_string(u);
        for (int i = 0; i < 3; ++i) {
            auto ex =
                f.format_json("Example " + std::to_string(i) + " of " + user, message_json("StepsRecord", user), "{}");
            splits_of_user[user].insert(ex.split);
            CHECK(std::string(tdo_test::parse(ex.line)["metadata"]["split"].GetString()) == ex.split);
        }
        if (splits_of_user[user].count("validation")) ++validation_users;
    }
    for (const auto& [user, splits] : splits_of_user) REQUIRE(splits.size() == 1);
    CHECK(validation_users > users * 0.2 * 0.8);
    CHECK(validation_users < users * 0.2 * 1.2);
    // The split follows the user, not the pseudonym: a new key does not move anyone.
    FormatterOptions p = o;
    p.pseudonymize_ids = true;
    p.pseudonymization_key = "a key of at least sixteen bytes";
    TrainingDataFormatter g(p);
    for (int u = 0; u < 100; ++u) {
        const std::string user = "user-" + std::to_string(u);
        CHECK(g.format_json("x", message_json("StepsRecord", user), "{}").split == *splits_of_user[user].begin());
    }
    // Routed to their own objects.
    FormatterOptions r = o;
    r.split_objects = true;
    TrainingDataFormatter h(r);
    for (int u = 0; u < 50; ++u) {
        auto ex = h.format_json("x", message_json("StepsRecord", "user-" + std::to_string(u)), result_json());
        CHECK(ex.object_key == "training/" + ex.split + "/physical_activity/2025/11/health_journal_2025_11.jsonl");
    }
    CHECK(split_for("anyone", 0.0) == std::string("train"));
    CHECK(split_for("anyone", 1.0) == std::string("validation"));
}

TEST_CASE("chat format: system, user and assistant messages, the same dedup as alpaca", "[unit][training-data][chat]") {
    tdo_test::TempDir dir;
    Config c = dir_config(dir);
    c.output_format = "chat";
    c.dedup_store = "sqlite";
    {
        TrainingOutput w(c);
        CHECK(w.generate("Slept 7h 32m, deep sleep 14%.", message_json("SleepSessionRecord"), result_json(14)) ==
              Outcome::Written);
        w.flush();
    }
    const std::string key = "training/sleep_wellness/2025/11/health_journal_2025_11.jsonl";
    auto lines = lines_in(tdo_test::read_file(dir / key));
    REQUIRE(lines.size() == 1);
    const auto& doc = lines[0];
    std::vector<std::string> keys;
    for (auto& m : doc.GetObject()) keys.emplace_back(m.name.GetString());
    CHECK(keys == std::vector<std::string>{"messages", "metadata"});
    const auto& msgs = doc["messages"];
    REQUIRE(msgs.Size() == 3);
    CHECK(std::string(msgs[0]["role"].GetString()) == "system");
    CHECK(std::string(msgs[1]["role"].GetString()) == "user");
    CHECK(std::string(msgs[2]["role"].GetString()) == "assistant");
    CHECK(std::string(msgs[2]["content"].GetString()) == "Slept 7h 32m, deep sleep 14%.");
    CHECK_THAT(std::string(msgs[1]["content"].GetString()), Catch::EndsWith("Total sessions: 14."));
    CHECK(std::string(msgs[0]["content"].GetString()) ==
          TrainingDataFormatter().instruction_for(
              "SleepSessionRecord", static_cast<std::size_t>(doc["metadata"]["instruction_variant"].GetInt())));
    // The same example in the alpaca format is a duplicate of it (same content hash).
    c.output_format = "alpaca";
    TrainingOutput w(c);
    CHECK(w.generate("Slept 7h 32m, deep sleep 14%.", message_json("SleepSessionRecord"), result_json(14)) ==
          Outcome::Duplicate);
}

TEST_CASE("manifests count what is in their file, and the delivery callback reports each batch once",
          "[unit][training-data][manifest][slow]") {
    tdo_test::TempDir dir;
    Config c = dir_config(dir);
    c.validation_fraction = 0.3;
    std::mutex m;
    std::vector<Delivery> deliveries;
    WriterComponents parts;
    parts.on_delivery = [&](const Delivery& d) {
        std::lock_guard<std::mutex> lock(m);
        deliveries.push_back(d);
    };
    TrainingOutput w(c, std::move(parts));
    int written = 0;
    for (int i = 0; i < 120; ++i) {
        const char* type = i % 3 == 0 ? "StepsRecord" : "ActiveCaloriesBurnedRecord";
        if (w.generate("Example " + std::to_string(i) + ".", message_json(type, "user-" + std::to_string(i % 17)),
                       result_json()) == Outcome::Written) {
            ++written;
        }
        if (i % 40 == 39) w.flush();
    }
    w.flush();
    const std::string key = "training/physical_activity/2025/11/health_journal_2025_11.jsonl";
    const std::string text = tdo_test::read_file(dir / key);
    const std::string manifest_text = tdo_test::read_file(dir / Manifests::key_for(key));
    Manifest manifest = Manifest::from_json(manifest_text);
    CHECK(manifest.counts.lines == 120);
    CHECK(manifest.counts.bytes == text.size());
    CHECK(manifest.counts.record_types.at("StepsRecord") == 40);
    CHECK(manifest.counts.record_types.at("ActiveCaloriesBurnedRecord") == 80);
    std::uint64_t train = 0, validation = 0;
    for (const auto& d : lines_in(text))
        (std::string(d["metadata"]["split"].GetString()) == "train" ? train : validation)++;
    CHECK(manifest.counts.splits["train"] == train);
    CHECK(manifest.counts.splits["validation"] == validation);
    CHECK(manifest.counts.schema_versions.at(std::to_string(kSchemaVersion)) == 120);
    CHECK(manifest.counts.config_fingerprints.size() == 1);
    CHECK(manifest.library_version.empty() == false);
    CHECK(manifest_text.find("\"object\":\"" + key + "\"") != std::string::npos);

    std::lock_guard<std::mutex> lock(m);
    std::uint64_t lines = 0, bytes = 0;
    std::set<std::uint64_t> ends;
    std::int64_t last_version = 0;
    for (const auto& d : deliveries) {
        CHECK(d.object_key == key);
        lines += d.lines;
        bytes += d.bytes;
        CHECK(ends.insert(d.object_size).second);  // never the same batch twice
        CHECK(d.manifest_version > last_version);
        last_version = d.manifest_version;
    }
    CHECK(lines == static_cast<std::uint64_t>(written));
    CHECK(bytes == text.size());
    CHECK(deliveries.back().object_size == text.size());
    CHECK(deliveries.back().manifest_version == manifest.version);
}

TEST_CASE("a manifest is never ahead of its file: 4 writers and 20 % failed requests, read all along",
          "[unit][training-data][manifest][concurrency]") {
    MemorySink memory;
    std::atomic<bool> faults{true};
    std::atomic<unsigned> counter{0};
    // One request in five fails; half of those after the store acted (a lost answer).
    memory.set_fault_hook([&](MemorySink::Op, const std::string&) -> std::optional<MemorySink::Fault> {
        if (!faults) return std::nullopt;
        const unsigned n = counter.fetch_add(1) * 2654435761u;
        if (n % 5 != 0) return std::nullopt;
        SinkResponse r;
        r.status = SinkStatus::Transient;
        r.http_status = 503;
        r.detail = "injected";
        return MemorySink::Fault{r, n % 2 == 0};
    });
    const std::string key = "training/physical_activity/2025/11/health_journal_2025_11.jsonl";
    std::atomic<bool> done{false};
    std::atomic<int> checks{0};
    std::string failure;
    std::thread reader([&] {
        while (!done) {
            SinkResponse mr = memory.get(Manifests::key_for(key), std::nullopt);
            if (mr.status == SinkStatus::NotFound) continue;
            if (!mr.ok()) continue;
            SinkResponse obj = memory.get(key, std::nullopt);  // after the manifest: only longer
            if (!obj.ok()) continue;
            Manifest got = Manifest::from_json(mr.body);
            ManifestCounts prefix;
            if (got.counts.bytes > obj.body.size()) {
                failure = "manifest claims " + std::to_string(got.counts.bytes) + " bytes of " +
                          std::to_string(obj.body.size());
                return;
            }
            prefix.add_lines(std::string_view(obj.body).substr(0, got.counts.bytes));
            if (prefix.lines != got.counts.lines || prefix.record_types != got.counts.record_types ||
                prefix.splits != got.counts.splits) {
                failure = "manifest counts differ from its file's first " + std::to_string(got.counts.bytes) + " bytes";
                return;
            }
            ++checks;
        }
    });
    tdo_test::TempDir dir;
    std::vector<std::thread> writers;
    std::atomic<int> written{0};
    for (int t = 0; t < 4; ++t) {
        writers.emplace_back([&, t] {
            Config c;
            c.output_dir = (dir / ("w" + std::to_string(t)));
            c.dedup_store = "memory";
            c.log_level = LogLevel::Off;
            c.flush_interval_ms = 2;
            c.flush_max_bytes = 4096;
            c.s3_retry_base_ms = 1;
            c.validation_fraction = 0.5;
            c.finalize();
            WriterComponents parts;
            parts.sink = std::make_unique<tdo_test::SharedSink>(memory);
            TrainingOutput w(c, std::move(parts));
            for (int i = 0; i < 150; ++i) {
                const char* type = i % 2 ? "StepsRecord" : "ActiveCaloriesBurnedRecord";
                if (w.generate("Writer " + std::to_string(t) + " example " + std::to_string(i) + ".",
                               message_json(type, "u" + std::to_string(i)), result_json()) == Outcome::Written) {
                    ++written;
                }
            }
            w.flush();
        });
    }
    for (auto& t : writers) t.join();
    faults = false;
    done = true;
    reader.join();
    CHECK(failure.empty());
    INFO(failure);
    CHECK(checks > 0);
    // Once the requests stop failing, one more batch brings the manifest up to the whole file.
    Config c;
    c.output_dir = (dir / "last");
    c.dedup_store = "memory";
    c.log_level = LogLevel::Off;
    c.finalize();
    WriterComponents parts;
    parts.sink = std::make_unique<tdo_test::SharedSink>(memory);
    TrainingOutput last(c, std::move(parts));
    REQUIRE(last.generate("The last one.", message_json("StepsRecord"), result_json()) == Outcome::Written);
    last.flush();
    const std::string text = memory.get(key, std::nullopt).body;
    Manifest final_manifest = Manifest::from_json(memory.get(Manifests::key_for(key), std::nullopt).body);
    CHECK(final_manifest.counts.bytes == text.size());
    CHECK(final_manifest.counts.lines == static_cast<std::uint64_t>(written + 1));
    CHECK(final_manifest.counts.lines == tdo_test::lines_of(text).size());
}

#ifdef TDO_CRASH_POINTS
TEST_CASE(
    "delivery notifications across a crash: the adopter reports a batch the dead writer landed, never one it "
    "recorded",
    "[unit][training-data][manifest][crash]") {
    for (const char* point : {"flusher.after_land", "flusher.after_done"}) {
        INFO(point);
        tdo_test::TempDir dir;
        const std::string config = "{\"output_dir\":\"" + dir.path() +
                                   "\",\"log_level\":\"off\",\"directory_fsync\":false,\"flush_interval_ms\":5}";
        ::setenv("TDO_CRASH_AT", point, 1);
        const pid_t pid = tdo_test::spawn({TDO_TEST_WRITER, config, "7", "40", "0", "StepsRecord"});
        ::unsetenv("TDO_CRASH_AT");
        REQUIRE(tdo_test::wait_for(pid) == 128 + SIGKILL);

        std::mutex m;
        std::vector<Delivery> reported;
        WriterComponents parts;
        parts.on_delivery = [&](const Delivery& d) {
            std::lock_guard<std::mutex> lock(m);
            reported.push_back(d);
        };
        {
            TrainingOutput adopter(Config::from_json(config), std::move(parts));
            adopter.flush();
        }
        const std::string key = "training/physical_activity/2025/11/health_journal_2025_11.jsonl";
        // The writer died at its first batch: what it had accepted by then is in the file.
        const std::string text = tdo_test::read_file(dir / key);
        const std::size_t total = tdo_test::lines_of(text).size();
        REQUIRE(total > 0);
        std::uint64_t first = text.size(), lines = 0;
        std::set<std::uint64_t> ends;
        for (const auto& d : reported) {
            first = std::min(first, d.object_size - d.bytes);
            lines += d.lines;
            CHECK(ends.insert(d.object_size).second);
        }
        // What was reported and what the dead writer had recorded make up the file, once.
        const std::size_t unreported = tdo_test::lines_of(text.substr(0, first)).size();
        CHECK(lines + unreported == total);
        if (std::string(point) == "flusher.after_land") {
            CHECK(first == 0);  // its landed batch had no DONE: the adopter reported it
        } else {
            CHECK(unreported > 0);  // its batch was recorded: reported by nobody again
        }
        // The manifest catches up with the whole file with the adopter's first batch (without
        // one, it waits for the next batch that lands).
        if (!reported.empty()) {
            CHECK(Manifest::from_json(tdo_test::read_file(dir / Manifests::key_for(key))).counts.lines == total);
        }
    }
}
#endif

TEST_CASE("HMAC-SHA256 with its key set up once matches RFC 4231 and the one-shot function",
          "[unit][training-data][pseudonymize]") {
    // RFC 4231, test case 2.
    crypto::HmacSha256 jefe("Jefe");
    CHECK(crypto::hex(jefe.digest("what do ya want ", "for nothing?")) ==
          "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    // RFC 4231, test case 6: a key longer than the block.
    crypto::HmacSha256 long_key(std::string(131, '\xaa'));
    CHECK(crypto::hex(long_key.digest("Test Using Larger Than Block-Size Key - Hash Key First")) ==
          "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
    for (const std::string& key :
         {std::string("k"), std::string("0123456789abcdef-secret-key"), std::string(64, 'x'), std::string(65, 'y')}) {
        crypto::HmacSha256 h(key);
        CHECK(h.digest("user_id", std::string_view("\0", 1), "user-1042") ==
              crypto::hmac_sha256(key, std::string("user_id") + '\0' + "user-1042"));
    }
}
