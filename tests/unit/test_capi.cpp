#include <catch2/catch.hpp>
#include <cstdlib>
#include <map>
#include <mutex>
#include <regex>
#include <set>
#include <thread>
#include <tuple>
#include <vector>

#include "test_util.hpp"
#include "training_output.h"
#include "training_output/config.hpp"

namespace {

std::string config_for(const tdo_test::TempDir& dir, const std::string& extra = "") {
    return "{\"output_dir\":\"" + dir.path() + "\",\"directory_fsync\":false,\"log_level\":\"off\"" + extra + "}";
}

const char* kMessage = "{\"record_type\":\"StepsRecord\",\"user_id\":\"u\"}";
const char* kResult = "{\"record_count\":3,\"processing_timestamp\":\"2025-11-18T10:30:00Z\"}";

}  // namespace

TEST_CASE("C ABI: tdo_config_describe names every key, freed with tdo_free", "[unit][capi][config]") {
    char* out = nullptr;
    REQUIRE(tdo_config_describe(&out) == TDO_OK);
    REQUIRE(out != nullptr);
    const std::string text = out;
    tdo_free(out);
    for (const auto& key : training_output::Config::keys()) {
        INFO(key);
        CHECK(text.find("\"name\":\"" + key + "\"") != std::string::npos);
    }
    CHECK(tdo_config_describe(nullptr) == TDO_E_INVALID_ARGUMENT);
    CHECK(std::string(tdo_last_error()).find("out_json") != std::string::npos);
}

TEST_CASE("C ABI: versions", "[unit][capi]") {
    CHECK(tdo_version_number() == TDO_VERSION_NUMBER);
    CHECK(std::string(tdo_version_string()) == std::to_string(TDO_VERSION_MAJOR) + "." +
                                                   std::to_string(TDO_VERSION_MINOR) + "." +
                                                   std::to_string(TDO_VERSION_PATCH));
}

TEST_CASE("C ABI: open, generate every outcome, stats, close", "[unit][capi]") {
    tdo_test::TempDir dir;
    tdo_writer* w = nullptr;
    REQUIRE(tdo_writer_open(&w, config_for(dir).c_str()) == TDO_OK);
    REQUIRE(w != nullptr);
    CHECK(std::string(tdo_last_error()).empty());
    CHECK(generate_training_output(w, "Steps were steady.", kMessage, kResult) == TDO_WRITTEN);
    CHECK(generate_training_output(w, "Steps were steady.", kMessage, kResult) == TDO_DUPLICATE);
    CHECK(generate_training_output(w, "  ", kMessage, kResult) == TDO_SKIPPED);
    CHECK(generate_training_output(w, "No result given.", kMessage, nullptr) == TDO_WRITTEN);
    CHECK(tdo_writer_flush(w) == TDO_OK);
    char* stats = nullptr;
    REQUIRE(tdo_writer_stats(w, &stats) == TDO_OK);
    REQUIRE(stats != nullptr);
    auto doc = tdo_test::parse(stats);
    CHECK(doc["written"].GetUint64() == 2);
    CHECK(doc["duplicates"].GetUint64() == 1);
    CHECK(doc["skipped"].GetUint64() == 1);
    tdo_free(stats);
    tdo_writer_close(w);

    REQUIRE(tdo_writer_open(&w, config_for(dir, ",\"enable_training_output\":false").c_str()) == TDO_OK);
    CHECK(generate_training_output(w, "x", kMessage, kResult) == TDO_DISABLED);
    tdo_writer_close(w);
}

TEST_CASE("C ABI: every error path returns a code and a message", "[unit][capi]") {
    tdo_test::TempDir dir;
    CHECK(tdo_writer_open(nullptr, "{}") == TDO_E_INVALID_ARGUMENT);
    CHECK_THAT(tdo_last_error(), Catch::Contains("out is NULL"));

    tdo_writer* w = reinterpret_cast<tdo_writer*>(0x1);
    CHECK(tdo_writer_open(&w, "{\"output_dri\": \"x\"}") == TDO_E_CONFIG);
    CHECK(w == nullptr);
    CHECK_THAT(tdo_last_error(), Catch::Contains("output_dri"));
    CHECK(tdo_writer_open(&w, "{not json") == TDO_E_CONFIG);
    CHECK(tdo_writer_open(&w, "{\"enable_training_output\": 1}") == TDO_E_CONFIG);
    CHECK_THAT(tdo_last_error(), Catch::Contains("enable_training_output"));
    tdo_test::write_file(dir / "blocker", "x");
    CHECK(tdo_writer_open(&w, ("{\"output_dir\":\"" + dir.path() + "/out\",\"dedup_db_path\":\"" + dir.path() +
                               "/blocker/d.sqlite3\"}")
                                  .c_str()) == TDO_E_DEDUP_STORE);
    CHECK(tdo_writer_open(&w,
                          ("{\"output_dir\":\"" + dir.path() + "/blocker/out\",\"dedup_store\":\"memory\"}").c_str()) ==
          TDO_E_STORAGE);
    CHECK(std::string(tdo_last_error()).size() > 0);

    REQUIRE(tdo_writer_open(&w, config_for(dir).c_str()) == TDO_OK);
    struct Case {
        const char* narrative;
        const char* message;
        const char* result;
        int code;
        const char* message_part;
    } cases[] = {
        {nullptr, kMessage, kResult, TDO_E_INVALID_ARGUMENT, "narrative is NULL"},
        {"x", nullptr, kResult, TDO_E_INVALID_ARGUMENT, "message_data_json is NULL"},
        {"x", "{\"record_type\":", kResult, TDO_E_INVALID_JSON, "message_data is not valid JSON"},
        {"x", kMessage, "{\"record_count\":}", TDO_E_INVALID_JSON, "result is not valid JSON"},
        {"x", "\"StepsRecord\"", kResult, TDO_E_INVALID_INPUT, "must be a JSON object"},
        {"x", "{}", kResult, TDO_E_INVALID_INPUT, "record_type is required"},
        {"x", "{\"record_type\":[1]}", kResult, TDO_E_INVALID_INPUT, "record_type must be a string"},
        {"x", kMessage, "{\"record_count\":\"many\"}", TDO_E_INVALID_INPUT, "record_count"},
        {"x", kMessage, "{\"processing_timestamp\":\"soon\"}", TDO_E_INVALID_INPUT, "processing_timestamp"},
        {"bad \xFF utf8", kMessage, kResult, TDO_E_INVALID_INPUT, "UTF-8"},
        {"x", kMessage, "", TDO_E_INVALID_JSON, "result is not valid JSON"},
    };
    for (const auto& c : cases) {
        INFO(c.message_part);
        CHECK(generate_training_output(w, c.narrative, c.message, c.result) == c.code);
        CHECK_THAT(tdo_last_error(), Catch::Contains(c.message_part));
    }
    // A success clears the last error.
    CHECK(generate_training_output(w, "fine", kMessage, kResult) == TDO_WRITTEN);
    CHECK(std::string(tdo_last_error()).empty());

    CHECK(tdo_writer_flush(nullptr) == TDO_E_INVALID_ARGUMENT);
    char* out = reinterpret_cast<char*>(0x1);
    CHECK(tdo_writer_stats(nullptr, &out) == TDO_E_INVALID_ARGUMENT);
    CHECK(out == nullptr);
    CHECK(tdo_writer_stats(w, nullptr) == TDO_E_INVALID_ARGUMENT);
    tdo_writer_close(w);
    tdo_writer_close(nullptr);
    tdo_free(nullptr);
    // Nothing partial was written by the failed calls: one line.
    auto files = tdo_test::jsonl_files(dir.path());
    REQUIRE(files.size() == 1);
    CHECK(tdo_test::lines_of(tdo_test::read_file(dir / files[0])).size() == 1);
}

TEST_CASE("C ABI: status names", "[unit][capi]") {
    CHECK(std::string(tdo_status_name(TDO_WRITTEN)) == "TDO_WRITTEN");
    CHECK(std::string(tdo_status_name(TDO_DUPLICATE)) == "TDO_DUPLICATE");
    CHECK(std::string(tdo_status_name(TDO_SKIPPED)) == "TDO_SKIPPED");
    CHECK(std::string(tdo_status_name(TDO_DISABLED)) == "TDO_DISABLED");
    CHECK(std::string(tdo_status_name(TDO_E_CONFIG)) == "TDO_E_CONFIG");
    CHECK(std::string(tdo_status_name(TDO_E_BACKPRESSURE)) == "TDO_E_BACKPRESSURE");
    CHECK(std::string(tdo_status_name(-1234)) == "TDO_E_UNKNOWN");
    CHECK(std::string(tdo_status_name(77)) == "TDO_UNKNOWN");
}

TEST_CASE("C ABI: the last error is per thread", "[unit][capi]") {
    CHECK(tdo_writer_open(nullptr, "{}") == TDO_E_INVALID_ARGUMENT);
    std::string other;
    std::thread t([&] { other = tdo_last_error(); });
    t.join();
    CHECK(other.empty());
    CHECK_THAT(tdo_last_error(), Catch::Contains("out is NULL"));
}

namespace {
struct Captured {
    std::mutex m;
    std::vector<std::pair<int, std::string>> events;
};
void capture(int level, const char* event, const char* json, void* user) {
    auto* c = static_cast<Captured*>(user);
    std::lock_guard<std::mutex> lock(c->m);
    c->events.emplace_back(level, std::string(event) + "|" + json);
}
}  // namespace

TEST_CASE("C ABI: log callback receives structured events", "[unit][capi]") {
    tdo_test::TempDir dir;
    Captured captured;
    REQUIRE(tdo_set_log_callback(capture, TDO_LOG_INFO, &captured) == TDO_OK);
    tdo_writer* w = nullptr;
    REQUIRE(tdo_writer_open(&w, config_for(dir).c_str()) == TDO_OK);
    generate_training_output(w, "Logged.", kMessage, kResult);
    generate_training_output(w, "Logged.", kMessage, kResult);
    tdo_writer_close(w);
    REQUIRE(tdo_set_log_callback(nullptr, 0, nullptr) == TDO_OK);
    std::set<std::string> names;
    for (const auto& [level, text] : captured.events) {
        auto bar = text.find('|');
        names.insert(text.substr(0, bar));
        auto doc = tdo_test::parse(text.substr(bar + 1));
        REQUIRE_FALSE(doc.HasParseError());
        CHECK(doc.HasMember("ts"));
        CHECK(std::string(doc["event"].GetString()) == text.substr(0, bar));
        CHECK(level >= TDO_LOG_INFO);
    }
    CHECK(names.count("training_output_enabled"));
    CHECK(names.count("training_output_generated"));
    CHECK(names.count("skipping_duplicate_training_example"));
}

TEST_CASE("C ABI: TDO_DEFAULT_WRITER is the process-wide writer from the environment; NULL is an error",
          "[unit][capi][env]") {
    tdo_test::TempDir dir;
    ::setenv("ETL_OUTPUT_DIR", dir.path().c_str(), 1);
    ::setenv("ETL_DIRECTORY_FSYNC", "false", 1);
    ::setenv("ETL_LOG_LEVEL", "off", 1);
    // A failed open leaves NULL: using it is an error, never the process-wide writer.
    tdo_writer* w = reinterpret_cast<tdo_writer*>(0x1234);
    CHECK(tdo_writer_open(&w, "{\"output_dri\":\"typo\"}") == TDO_E_CONFIG);
    REQUIRE(w == nullptr);
    CHECK(generate_training_output(w, "Lost?", kMessage, kResult) == TDO_E_INVALID_ARGUMENT);
    CHECK_THAT(tdo_last_error(), Catch::Contains("writer is NULL") && Catch::Contains("TDO_DEFAULT_WRITER"));
    CHECK(tdo_writer_flush(nullptr) == TDO_E_INVALID_ARGUMENT);
    char* stats = nullptr;
    CHECK(tdo_writer_stats(nullptr, &stats) == TDO_E_INVALID_ARGUMENT);
    CHECK(tdo_test::jsonl_files(dir.path()).empty());

    CHECK(generate_training_output(TDO_DEFAULT_WRITER, "Process-wide.", kMessage, kResult) == TDO_WRITTEN);
    CHECK(generate_training_output(TDO_DEFAULT_WRITER, "Process-wide.", kMessage, kResult) == TDO_DUPLICATE);
    CHECK(tdo_writer_flush(TDO_DEFAULT_WRITER) == TDO_OK);
    REQUIRE(tdo_writer_stats(TDO_DEFAULT_WRITER, &stats) == TDO_OK);
    CHECK(tdo_test::parse(stats)["written"].GetUint64() == 1);
    tdo_free(stats);
    CHECK(tdo_shutdown() == TDO_OK);
    CHECK(tdo_shutdown() == TDO_OK);
    auto files = tdo_test::jsonl_files(dir.path());
    REQUIRE(files.size() == 1);
    CHECK(tdo_test::lines_of(tdo_test::read_file(dir / files[0])).size() == 1);

    SECTION("tdo_shutdown() while other threads write through it") {
        std::atomic<bool> stop{false};
        std::atomic<int> written{0}, closed{0}, other{0};
        std::vector<std::thread> threads;
        for (int t = 0; t < 4; ++t) {
            threads.emplace_back([&, t] {
                for (int i = 0; !stop; ++i) {
                    // Paced like a processor (a call after each record it
                    // processed): four threads that only call would give each
                    // writer more lines than its close can deliver in time.
                    if (i % 20 == 19) std::this_thread::sleep_for(std::chrono::milliseconds(1));
                    const std::string n = "Thread " + std::to_string(t) + " example " + std::to_string(i) + ".";
                    const int rc = generate_training_output(TDO_DEFAULT_WRITER, n.c_str(), kMessage, kResult);
                    (rc == TDO_WRITTEN ? written : rc == TDO_E_CLOSED ? closed : other)++;
                }
            });
        }
        for (int round = 0; round < 20; ++round) {
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
            CHECK(tdo_shutdown() == TDO_OK);  // each time: what was written is delivered
        }
        stop = true;
        for (auto& th : threads) th.join();
        CHECK(tdo_writer_close(TDO_DEFAULT_WRITER) == TDO_OK);
        CHECK(other == 0);
        CHECK(written > 0);
        // Every example answered WRITTEN is in the file, once.
        std::size_t lines = 0;
        for (const auto& f : tdo_test::jsonl_files(dir.path()))
            lines += tdo_test::lines_of(tdo_test::read_file(dir / f)).size();
        CHECK(lines == static_cast<std::size_t>(written) + 1);
    }
    ::unsetenv("ETL_OUTPUT_DIR");
    ::unsetenv("ETL_DIRECTORY_FSYNC");
    ::unsetenv("ETL_LOG_LEVEL");
}

TEST_CASE("C ABI: tdo_writer_close says when lines stayed in the spool", "[unit][capi]") {
    tdo_test::TempDir dir;
    tdo_writer* w = nullptr;
    // An object store on a closed port: nothing can be delivered within 200 ms.
    REQUIRE(tdo_writer_open(&w, ("{\"s3_endpoint_url\":\"http://127.0.0.1:9\",\"s3_bucket_name\":\"b\","
                                 "\"s3_access_key\":\"k\",\"s3_secret_key\":\"s\",\"s3_conditional_writes\":\"true\","
                                 "\"output_dir\":\"" +
                                 dir.path() + "\",\"flush_timeout_ms\":200,\"log_level\":\"off\"}")
                                    .c_str()) == TDO_OK);
    CHECK(generate_training_output(w, "Undelivered.", kMessage, kResult) == TDO_WRITTEN);
    const int rc = tdo_writer_close(w);
    CHECK(rc == TDO_E_TIMEOUT);
    CHECK_THAT(tdo_last_error(), Catch::Contains("1 lines are not in their objects yet") && Catch::Contains(".spool"));
    CHECK(tdo_writer_close(nullptr) == TDO_OK);
    CHECK(std::string(tdo_last_error()).empty());
}

namespace {

struct Deliveries {
    std::mutex mutex;
    std::vector<std::string> keys;
    unsigned long long lines = 0, bytes = 0;
    long long last_manifest_version = 0;
    std::size_t struct_size = 0;
};

void on_delivery(const tdo_delivery* d, void* user) {
    auto* all = static_cast<Deliveries*>(user);
    std::lock_guard<std::mutex> lock(all->mutex);
    all->keys.emplace_back(d->object_key);
    all->lines += d->lines;
    all->bytes += d->bytes;
    all->last_manifest_version = d->manifest_version;
    all->struct_size = d->struct_size;
}

}  // namespace

TEST_CASE("C ABI: the training-data settings, skip reasons and delivery notifications", "[unit][capi][training-data]") {
    tdo_test::TempDir dir;
    Deliveries deliveries;
    tdo_open_options options{};
    options.struct_size = sizeof options;
    options.on_delivery = on_delivery;
    options.delivery_user_data = &deliveries;
    tdo_writer* w = nullptr;
    REQUIRE(tdo_writer_open_ex(&w,
                               config_for(dir,
                                          ",\"output_format\":\"chat\",\"pseudonymize_ids\":true,"
                                          "\"pseudonymization_key\":\"capi-key-0123456789\","
                                          "\"min_quality_score\":0.5,\"validation_fraction\":0.5")
                                   .c_str(),
                               &options) == TDO_OK);
    const std::string good =
        "{\"record_count\":3,\"quality_score\":0.9,\"processing_timestamp\":\"2025-11-18T10:30:00Z\"}";
    CHECK(generate_training_output(w, "Walked 8,000 steps; email me at a@b.example.", kMessage, good.c_str()) ==
          TDO_WRITTEN);
    CHECK(std::string(tdo_last_skip_reason()).empty());
    CHECK(generate_training_output(w, "Low quality.", kMessage, "{\"quality_score\":0.1}") == TDO_SKIPPED);
    CHECK(std::string(tdo_last_skip_reason()) == "low_quality");
    CHECK(generate_training_output(w, "No score.", kMessage, "{}") == TDO_SKIPPED);
    CHECK(std::string(tdo_last_skip_reason()) == "no_quality_score");
    CHECK(tdo_writer_flush(w) == TDO_OK);
    {
        std::lock_guard<std::mutex> lock(deliveries.mutex);
        REQUIRE(deliveries.keys.size() == 1);
        CHECK(deliveries.lines == 1);
        CHECK(deliveries.last_manifest_version == 1);
        CHECK(deliveries.struct_size == sizeof(tdo_delivery));
    }
    // Replaced, then stopped.
    Deliveries later;
    CHECK(tdo_writer_set_delivery_callback(w, on_delivery, &later) == TDO_OK);
    CHECK(generate_training_output(w, "Another day.", kMessage, good.c_str()) == TDO_WRITTEN);
    CHECK(tdo_writer_flush(w) == TDO_OK);
    CHECK(tdo_writer_set_delivery_callback(w, nullptr, nullptr) == TDO_OK);
    CHECK(generate_training_output(w, "A third day.", kMessage, good.c_str()) == TDO_WRITTEN);
    CHECK(tdo_writer_flush(w) == TDO_OK);
    CHECK(tdo_writer_set_delivery_callback(nullptr, on_delivery, nullptr) == TDO_E_INVALID_ARGUMENT);
    char* stats = nullptr;
    REQUIRE(tdo_writer_stats(w, &stats) == TDO_OK);
    auto doc = tdo_test::parse(stats);
    tdo_free(stats);
    tdo_writer_close(w);
    CHECK(doc["skipped_low_quality"].GetUint64() == 1);
    CHECK(doc["skipped_no_quality_score"].GetUint64() == 1);
    CHECK(doc["redactions"].GetUint64() >= 1);
    CHECK(later.lines == 1);
    CHECK(deliveries.lines == 1);

    const std::string key = deliveries.keys.front();
    const std::string text = tdo_test::read_file(dir / key);
    CHECK(tdo_test::lines_of(text).size() == 3);
    CHECK(text.find("\"messages\":[{\"role\":\"system\"") != std::string::npos);
    CHECK(text.find("a@b.example") == std::string::npos);
    CHECK(text.find("\"user_id\":\"u\"") == std::string::npos);
    CHECK(text.find("capi-key") == std::string::npos);
    const std::string manifest = tdo_test::read_file(dir / (key.substr(0, key.size() - 6) + ".manifest.json"));
    CHECK(tdo_test::parse(manifest)["lines"].GetUint64() == 3);

    // Phrasings from a templates file, picked per example.
    tdo_test::write_file(dir / "t.json", R"({"StepsRecord":{"instruction":["Phrasing A.","Phrasing B."]}})");
    tdo_test::TempDir out;
    REQUIRE(tdo_writer_open(&w, config_for(out, ",\"templates_file\":\"" + (dir / "t.json") + "\"").c_str()) == TDO_OK);
    for (int i = 0; i < 40; ++i) {
        CHECK(generate_training_output(w, ("Day " + std::to_string(i) + ".").c_str(), kMessage, kResult) ==
              TDO_WRITTEN);
    }
    tdo_writer_close(w);
    std::set<std::string> phrasings;
    for (const auto& line : tdo_test::lines_of(tdo_test::read_file(out / key))) {
        phrasings.insert(tdo_test::parse(line)["instruction"].GetString());
    }
    CHECK(phrasings == std::set<std::string>{"Phrasing A.", "Phrasing B."});

    // Options without struct_size are refused.
    tdo_open_options unset{};
    CHECK(tdo_writer_open_ex(&w, config_for(dir).c_str(), &unset) == TDO_E_INVALID_ARGUMENT);
    CHECK(w == nullptr);
}

namespace {

// The samples of a Prometheus text: "name{labels}" -> value; every sample's
// family declared by # TYPE before it, every line well formed.
std::map<std::string, double> samples_of(const std::string& text) {
    std::map<std::string, double> out;
    std::set<std::string> families;
    for (const auto& line : tdo_test::lines_of(text)) {
        if (line.rfind("# TYPE ", 0) == 0) {
            families.insert(line.substr(7, line.find(' ', 7) - 7));
            continue;
        }
        if (line.rfind("# HELP ", 0) == 0) continue;
        const auto space = line.rfind(' ');
        REQUIRE(space != std::string::npos);
        const std::string name = line.substr(0, space);
        std::string family = name.substr(0, name.find('{'));
        for (const char* suffix : {"_bucket", "_sum", "_count"}) {
            const std::string s(suffix);
            if (!families.count(family) && family.size() > s.size() &&
                family.compare(family.size() - s.size(), s.size(), s) == 0) {
                family.resize(family.size() - s.size());
            }
        }
        INFO(line);
        CHECK(families.count(family) == 1);
        char* end = nullptr;
        const double v = std::strtod(line.c_str() + space + 1, &end);
        CHECK(*end == '\0');
        out[name] = v;
    }
    return out;
}

}  // namespace

TEST_CASE("C ABI: examples of record types in turn are each counted under their own labels", "[unit][capi][metrics]") {
    tdo_test::TempDir dir;
    tdo_writer* w = nullptr;
    REQUIRE(tdo_writer_open(&w, config_for(dir).c_str()) == TDO_OK);
    const char* sleep = "{\"record_type\":\"SleepSessionRecord\"}";
    for (int i = 0; i < 5; ++i) {
        const std::string text = "Example " + std::to_string(i) + ".";
        CHECK(generate_training_output(w, text.c_str(), i % 2 ? sleep : kMessage, "{}") == TDO_WRITTEN);
    }
    CHECK(generate_training_output(w, "Example 5.", sleep, "{}") == TDO_WRITTEN);
    char* text = nullptr;
    REQUIRE(tdo_writer_metrics(w, &text) == TDO_OK);
    const auto s = samples_of(text);
    tdo_free(text);
    tdo_writer_close(w);
    CHECK(
        s.at(
            "etl_training_examples_generated_total{record_type=\"StepsRecord\",health_domain=\"physical_activity\"}") ==
        3);
    CHECK(s.at("etl_training_examples_generated_total{record_type=\"SleepSessionRecord\",health_domain=\"sleep_"
               "wellness\"}") == 3);
}

TEST_CASE("C ABI: metrics in the Prometheus text format, counted as the calls went", "[unit][capi][metrics]") {
    tdo_test::TempDir dir;
    tdo_writer* w = nullptr;
    REQUIRE(tdo_writer_open(&w, config_for(dir, ",\"min_quality_score\":0.5").c_str()) == TDO_OK);
    const std::string good =
        "{\"record_count\":3,\"quality_score\":0.9,\"processing_timestamp\":\"2025-11-18T10:30:00Z\"}";
    CHECK(generate_training_output(w, "One.", kMessage, good.c_str()) == TDO_WRITTEN);
    CHECK(generate_training_output(w, "Two.", kMessage, good.c_str()) == TDO_WRITTEN);
    CHECK(generate_training_output(w, "Two.", kMessage, good.c_str()) == TDO_DUPLICATE);
    CHECK(generate_training_output(w, "Low.", kMessage, "{\"quality_score\":0.1}") == TDO_SKIPPED);
    CHECK(generate_training_output(w, "Bad.", "{", good.c_str()) == TDO_E_INVALID_JSON);
    CHECK(generate_training_output(w, "Odd type.", "{\"record_type\":\"Q\\\"uote\\\\d\\nType\"}", good.c_str()) ==
          TDO_WRITTEN);
    CHECK(tdo_writer_flush(w) == TDO_OK);
    char* text = nullptr;
    REQUIRE(tdo_writer_metrics(w, &text) == TDO_OK);
    const std::string metrics = text;
    tdo_free(text);
    CHECK(tdo_writer_metrics(w, nullptr) == TDO_E_INVALID_ARGUMENT);
    CHECK(tdo_writer_metrics(nullptr, &text) == TDO_E_INVALID_ARGUMENT);
    char* stats_text = nullptr;
    REQUIRE(tdo_writer_stats(w, &stats_text) == TDO_OK);
    const std::string stats = stats_text;
    tdo_free(stats_text);
    tdo_writer_close(w);

    // The counters are declared once (lib/writer/stats_table.hpp): the
    // stats and the metrics say the same.
    auto stat = [&](const std::string& name) {
        std::smatch m;
        REQUIRE(std::regex_search(stats, m, std::regex("\"" + name + "\":([0-9]+)")));
        return std::stod(m[1]);
    };
    {
        const auto s = samples_of(metrics);
        CHECK(stat("lines_appended") == 3);
        for (const auto& [field, sample] : std::map<std::string, std::string>{
                 {"lines_appended", "etl_training_lines_appended_total"},
                 {"bytes_appended", "etl_training_bytes_appended_total"},
                 {"batches_appended", "etl_training_batches_appended_total"},
                 {"redactions", "etl_training_redactions_total"},
                 {"skipped_low_quality", "etl_training_examples_skipped_total{reason=\"low_quality\"}"},
                 {"skipped_empty_narrative", "etl_training_examples_skipped_total{reason=\"empty_narrative\"}"},
                 {"disabled", "etl_training_disabled_total"},
                 {"pending_lines", "etl_training_backlog_lines"}}) {
            INFO(field);
            CHECK(stat(field) == s.at(sample));
        }
        CHECK(stat("bytes_appended") > 0);
    }

    for (const char* family :
         {"etl_training_examples_generated_total counter", "etl_training_output_duration_seconds histogram",
          "etl_training_deduplication_hits_total counter", "etl_training_file_size_bytes gauge"}) {
        CHECK_THAT(metrics, Catch::Contains(std::string("# TYPE ") + family));
    }
    const auto s = samples_of(metrics);
    CHECK(
        s.at(
            "etl_training_examples_generated_total{record_type=\"StepsRecord\",health_domain=\"physical_activity\"}") ==
        2);
    // Label values are escaped: \" \\ \n.
    CHECK(s.at("etl_training_examples_generated_total{record_type=\"Q\\\"uote\\\\d\\nType\",health_domain=\"general_"
               "health\"}") == 1);
    CHECK(s.at("etl_training_deduplication_hits_total{record_type=\"StepsRecord\"}") == 1);
    CHECK(s.at("etl_training_examples_skipped_total{reason=\"low_quality\"}") == 1);
    CHECK(s.at("etl_training_errors_total{code=\"TDO_E_INVALID_JSON\"}") == 1);
    CHECK(s.at("etl_training_output_duration_seconds_count") == 6);
    CHECK(s.at("etl_training_output_duration_seconds_bucket{le=\"+Inf\"}") == 6);
    CHECK(s.at("etl_training_output_duration_seconds_sum") > 0);
    CHECK(s.at("etl_training_lines_appended_total") == 3);
    CHECK(s.at("etl_training_backlog_lines") == 0);
    CHECK(s.at("etl_training_backlog_age_seconds") == 0);
    const std::string key = "training/physical_activity/2025/11/health_journal_2025_11.jsonl";
    CHECK(s.at("etl_training_file_size_bytes{health_domain=\"physical_activity\"}") ==
          static_cast<double>(tdo_test::read_file(dir / key).size()));
    // Buckets are cumulative.
    double last = 0;
    for (const auto& [name, value] : s) {
        if (name.rfind("etl_training_output_duration_seconds_bucket", 0) != 0) continue;
        (void)last;
        CHECK(value <= 6);
    }
}

namespace {

struct Spans {
    std::mutex mutex;
    std::vector<std::tuple<std::string, std::string, std::string, int, long long, long long>> spans;
};

void on_span(const tdo_span* s, void* user) {
    auto* all = static_cast<Spans*>(user);
    std::lock_guard<std::mutex> lock(all->mutex);
    all->spans.emplace_back(s->name, s->traceparent ? s->traceparent : "", s->attributes_json, s->status,
                            s->start_unix_nanos, s->end_unix_nanos);
}

}  // namespace

TEST_CASE("C ABI: spans for calls, landed batches and flushes, with the caller's traceparent",
          "[unit][capi][tracing]") {
    tdo_test::TempDir dir;
    Spans spans;
    REQUIRE(tdo_set_span_callback(on_span, &spans) == TDO_OK);
    tdo_writer* w = nullptr;
    REQUIRE(tdo_writer_open(&w, config_for(dir).c_str()) == TDO_OK);
    const std::string tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const std::string traced = "{\"record_type\":\"StepsRecord\",\"traceparent\":\"" + tp + "\"}";
    CHECK(generate_training_output(w, "Traced.", traced.c_str(), kResult) == TDO_WRITTEN);
    CHECK(generate_training_output(w, "Untraced.", kMessage, kResult) == TDO_WRITTEN);
    CHECK(generate_training_output(w, "Bad context.", "{\"record_type\":\"StepsRecord\",\"traceparent\":\"00-xyz\"}",
                                   kResult) == TDO_WRITTEN);  // ignored, as W3C asks
    CHECK(generate_training_output(w, "Bad.", "{", kResult) == TDO_E_INVALID_JSON);
    CHECK(tdo_writer_flush(w) == TDO_OK);
    tdo_writer_close(w);
    REQUIRE(tdo_set_span_callback(nullptr, nullptr) == TDO_OK);
    const std::size_t seen = spans.spans.size();
    REQUIRE(tdo_writer_open(&w, config_for(dir).c_str()) == TDO_OK);
    CHECK(generate_training_output(w, "After.", kMessage, kResult) == TDO_WRITTEN);
    tdo_writer_close(w);
    CHECK(spans.spans.size() == seen);  // stopped

    std::vector<std::string> generate_outcomes;
    int batches = 0, flushes = 0;
    for (const auto& [name, traceparent, attributes, status, start, end] : spans.spans) {
        INFO(name << " " << attributes);
        CHECK(end >= start);
        CHECK(start > 1600000000LL * 1000000000LL);  // the system clock, in nanoseconds
        auto a = tdo_test::parse(attributes);
        REQUIRE(a.IsObject());
        if (name == "generate") {
            const std::string outcome = a["outcome"].GetString();
            generate_outcomes.push_back(outcome);
            if (outcome == "error") {
                CHECK(status == TDO_E_INVALID_JSON);
            } else {
                CHECK(status == TDO_OK);
                CHECK(std::string(a["record_type"].GetString()) == "StepsRecord");
                CHECK(a["bytes"].GetInt64() > 100);
            }
            const bool first = generate_outcomes.size() == 1;
            CHECK(traceparent == (first ? tp : std::string()));
        } else if (name == "batch_append") {
            ++batches;
            CHECK(a["lines"].GetInt64() >= 1);
            CHECK_THAT(a["object_key"].GetString(), Catch::EndsWith("health_journal_2025_11.jsonl"));
        } else if (name == "flush") {
            ++flushes;
        } else {
            FAIL("unexpected span " << name);
        }
    }
    CHECK(generate_outcomes == std::vector<std::string>{"written", "written", "written", "error"});
    CHECK(batches >= 1);
    CHECK(flushes == 1);
}
