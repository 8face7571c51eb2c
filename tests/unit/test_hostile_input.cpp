// Hostile input never takes the host down: nesting beyond the documented
// limit in every JSON the library parses (on a thread with a small stack),
// numbers beyond every setting's range, arguments larger than a line, and
// error messages that stay valid UTF-8.
#include <pthread.h>

#include <catch2/catch.hpp>
#include <climits>
#include <filesystem>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "common/json.hpp"
#include "format/formatter.hpp"
#include "test_util.hpp"
#include "training_output.h"
#include "training_output/error.hpp"
#include "training_output/training_output.hpp"

using namespace training_output;

namespace {

std::string nested(std::size_t depth, const std::string& inner = "1") {
    return std::string(depth, '[') + inner + std::string(depth, ']');
}

// Runs `fn` on a thread whose stack is 256 KiB (a host's worker thread).
void on_small_stack(const std::function<void()>& fn) {
    pthread_attr_t attr;
    REQUIRE(pthread_attr_init(&attr) == 0);
    REQUIRE(pthread_attr_setstacksize(&attr, 256 << 10) == 0);
    pthread_t thread;
    auto run = [](void* arg) -> void* {
        (*static_cast<const std::function<void()>*>(arg))();
        return nullptr;
    };
    REQUIRE(pthread_create(&thread, &attr, run, const_cast<std::function<void()>*>(&fn)) == 0);
    pthread_join(thread, nullptr);
    pthread_attr_destroy(&attr);
}

std::string config_for(const tdo_test::TempDir& dir, const std::string& extra = "") {
    return "{\"output_dir\":\"" + dir.path() + "\",\"directory_fsync\":false,\"log_level\":\"off\"" + extra + "}";
}

const char* kMessage = "{\"record_type\":\"StepsRecord\",\"user_id\":\"u\"}";

}  // namespace

TEST_CASE("JSON nested beyond the limit is refused before it is parsed, on a 256 KiB stack", "[unit][hostile]") {
    tdo_test::TempDir dir;
    tdo_writer* w = nullptr;
    REQUIRE(tdo_writer_open(&w, config_for(dir).c_str()) == TDO_OK);
    int deep = 0, deeper = 0, at_limit = 0, in_message = 0;
    std::string message_error;
    on_small_stack([&] {
        // ~9,000 levels overflowed a 1 MiB stack, ~75,000 the 8 MiB main one.
        deep = generate_training_output(w, "x", kMessage, ("{\"clinical_insights\":" + nested(9000) + "}").c_str());
        deeper = generate_training_output(w, "y", kMessage, ("{\"clinical_insights\":" + nested(200000) + "}").c_str());
        message_error = tdo_last_error();
        at_limit = generate_training_output(w, "z", kMessage,
                                            ("{\"clinical_insights\":" + nested(json::kMaxDepth - 1) + "}").c_str());
        in_message =
            generate_training_output(w, "m", ("{\"record_type\":\"S\",\"x\":" + nested(50000) + "}").c_str(), "{}");
    });
    CHECK(deep == TDO_E_INVALID_INPUT);
    CHECK(deeper == TDO_E_INVALID_INPUT);
    CHECK_THAT(message_error, Catch::Contains("deeper than 100 levels"));
    CHECK(at_limit == TDO_WRITTEN);  // the limit itself is fine: the result object is level 1
    CHECK(in_message == TDO_E_INVALID_INPUT);
    tdo_writer_close(w);

    // Brackets inside strings are text, not nesting.
    CHECK_NOTHROW(json::check_depth("{\"a\":\"" + std::string(500, '[') + "\\\"" + std::string(500, '{') + "\"}", "x",
                                    ErrorCode::InvalidJson));
    CHECK_THROWS_AS(json::check_depth(nested(101), "x", ErrorCode::InvalidJson), Error);
    CHECK_NOTHROW(json::check_depth(nested(100), "x", ErrorCode::InvalidJson));
}

TEST_CASE("configuration and templates nested beyond the limit are configuration errors", "[unit][hostile]") {
    tdo_test::TempDir dir;
    int open_status = 0;
    std::string error;
    on_small_stack([&] {
        tdo_writer* w = nullptr;
        open_status = tdo_writer_open(&w, ("{\"output_dir\":" + nested(100000, "\"x\"") + "}").c_str());
        error = tdo_last_error();
    });
    CHECK(open_status == TDO_E_CONFIG);
    CHECK_THAT(error, Catch::Contains("configuration nests"));
    tdo_test::write_file(dir / "t.json", "{\"StepsRecord\":{\"instruction\":" + nested(100000, "\"x\"") + "}}");
    on_small_stack([&] {
        try {
            TemplateTable::from_file_over_builtin(dir / "t.json");
            error = "accepted";
        } catch (const Error& e) {
            error = e.what();
            CHECK(e.code() == ErrorCode::Config);
        }
    });
    CHECK_THAT(error, Catch::Contains("templates_file") && Catch::Contains("deeper than"));
}

TEST_CASE("every numeric setting is range-checked, from JSON and from the environment", "[unit][hostile]") {
    for (const char* key : {"dedup_claim_ttl_seconds", "flush_timeout_ms", "s3_request_timeout_ms", "s3_lease_seconds",
                            "spool_max_bytes", "redis_pool_size", "max_line_bytes", "s3_max_attempts"}) {
        INFO(key);
        try {
            Config::from_json(std::string("{\"") + key + "\":9223372036854775807}");
            FAIL("accepted INT64_MAX");
        } catch (const Error& e) {
            CHECK(e.code() == ErrorCode::Config);
            CHECK_THAT(e.what(), Catch::Contains(key) && Catch::Contains("at most"));
        }
    }
    // Every integer key refuses INT64_MAX (the table has no key without a bound).
    for (const auto& key : Config::keys()) {
        Config probe;
        try {
            probe = Config::from_json("{\"" + key + "\":9223372036854775807}");
        } catch (const Error& e) {
            continue;  // refused (a bound, or not an integer key)
        }
        FAIL("accepted INT64_MAX for " << key);
    }
    ::setenv("ETL_DEDUP_CLAIM_TTL_SECONDS", "9223372036854775807", 1);
    CHECK_THROWS_WITH(Config::from_environment(), Catch::Contains("dedup_claim_ttl_seconds"));
    ::unsetenv("ETL_DEDUP_CLAIM_TTL_SECONDS");
    // A prefix longer than object keys can hold.
    CHECK_THROWS_WITH(Config::from_json("{\"training_data_prefix\":\"" + std::string(600, 'p') + "\"}"),
                      Catch::Contains("training_data_prefix") && Catch::Contains("512"));
    CHECK_NOTHROW(Config::from_json("{\"training_data_prefix\":\"" + std::string(400, 'p') + "\"}"));
}

TEST_CASE("an argument larger than a line is refused before any work on it", "[unit][hostile]") {
    tdo_test::TempDir dir;
    TrainingOutput w(Config::from_json(config_for(dir, ",\"max_line_bytes\":65536")));
    // Control characters escape to 6 bytes each: the line would be 6 times the narrative.
    const std::string controls(8 << 20, '\x01');
    try {
        w.generate(controls, kMessage, "{}");
        FAIL("accepted");
    } catch (const Error& e) {
        CHECK(e.code() == ErrorCode::InvalidInput);
        CHECK_THAT(e.what(), Catch::Contains("narrative is 8388608 bytes"));
    }
    CHECK_THROWS_WITH(w.generate("x", kMessage, "{\"pad\":\"" + std::string(70000, 'a') + "\"}"),
                      Catch::Contains("result is"));
    // Within the argument limit, the line limit still applies to the escaped line.
    CHECK_THROWS_WITH(w.generate(std::string(60000, '\x01'), kMessage, "{}"), Catch::Contains("max_line_bytes"));
    CHECK(w.stats().errors == 3);
}

TEST_CASE("error messages are valid UTF-8 whatever was cut or sent", "[unit][hostile]") {
    tdo_test::TempDir dir;
    tdo_writer* w = nullptr;
    REQUIRE(tdo_writer_open(&w, config_for(dir).c_str()) == TDO_OK);
    // A bad timestamp is quoted in the message, cut at 64 bytes: here inside a 3-byte character.
    const std::string ts = std::string(62, 'x') + "\xE2\x82\xAC" + "tail";
    CHECK(generate_training_output(w, "x", kMessage, ("{\"processing_timestamp\":\"" + ts + "\"}").c_str()) ==
          TDO_E_INVALID_INPUT);
    const std::string message = tdo_last_error();
    CHECK_THAT(message, Catch::Contains("processing_timestamp"));
    CHECK(is_valid_utf8(message));
    tdo_writer_close(w);
    CHECK(to_valid_utf8("ok \xFF \xE2\x82 end") == "ok \xEF\xBF\xBD \xEF\xBF\xBD\xEF\xBF\xBD end");
    CHECK(utf8_prefix("ab\xE2\x82\xAC", 3) == "ab");
    CHECK(utf8_prefix("ab\xE2\x82\xAC", 5) == "ab\xE2\x82\xAC");
}

namespace {

struct CapturedLogs {
    std::mutex mutex;
    std::string text;
};

}  // namespace

TEST_CASE("no configured secret reaches a log line, an error message, the stats, the metrics or a file",
          "[unit][hostile][secrets]") {
    const std::vector<std::string> secrets = {"S3-SECRET-7f3a9c", "SESSION-TOKEN-b81e", "REDIS-PASS-5c2d",
                                              "PSEUDO-KEY-0123456789abcdef"};
    tdo_test::TempDir dir;
    CapturedLogs logs;
    set_log_callback(
        [&logs](LogLevel, std::string_view, std::string_view line) {
            std::lock_guard<std::mutex> lock(logs.mutex);
            logs.text.append(line).push_back('\n');
        },
        LogLevel::Debug);
    std::string seen;  // every message, stats and metrics text
    // The object store and Redis are on closed ports: every path that reports
    // a failure runs (connects refused, retries, fail open, undelivered close).
    const std::string config =
        "{\"output_dir\":\"" + dir.path() +
        "\",\"log_level\":\"debug\",\"directory_fsync\":false,"
        "\"s3_endpoint_url\":\"http://127.0.0.1:9\",\"s3_bucket_name\":\"b\",\"s3_access_key\":\"AKIDEXAMPLE\","
        "\"s3_secret_key\":\"" +
        secrets[0] + "\",\"s3_session_token\":\"" + secrets[1] +
        "\","
        "\"s3_conditional_writes\":\"true\",\"s3_max_attempts\":1,\"flush_timeout_ms\":300,"
        "\"redis_url\":\"redis://:" +
        secrets[2] +
        "@127.0.0.1:9/0\",\"redis_timeout_ms\":50,"
        "\"pseudonymize_ids\":true,\"pseudonymization_key\":\"" +
        secrets[3] + "\"}";
    try {
        TrainingOutput w(Config::from_json(config));
        for (int i = 0; i < 5; ++i) {
            try {
                w.generate("Example " + std::to_string(i) + ".", "{\"record_type\":\"StepsRecord\",\"user_id\":\"u\"}",
                           "{\"processing_timestamp\":\"2025-11-18T10:30:00Z\"}");
            } catch (const Error& e) {
                seen += e.what();
            }
        }
        try {
            w.generate("x", "{", "{}");
        } catch (const Error& e) {
            seen += e.what();
        }
        try {
            w.flush();
        } catch (const Error& e) {
            seen += e.what();
        }
        seen += w.stats_json();
        seen += w.metrics_text();
        try {
            w.close();
        } catch (const Error& e) {
            seen += e.what();
        }
    } catch (const Error& e) {
        seen += e.what();  // the store could not be opened: its message counts too
    }
    // A wrong key type and a short key are refused without quoting them.
    for (const std::string& bad :
         {std::string("{\"pseudonymize_ids\":true,\"pseudonymization_key\":\"PSEUDO-KEY-0123\"}"),
          "{\"redis_url\":\"redis://:" + secrets[2] + "@[::1\"}"}) {
        try {
            Config::from_json(bad);
        } catch (const Error& e) {
            seen += e.what();
        }
    }
    set_log_callback({}, LogLevel::Off);
    std::string files;
    for (const auto& entry : std::filesystem::recursive_directory_iterator(dir.path())) {
        if (entry.is_regular_file()) files += tdo_test::read_file(entry.path().string());
    }
    CHECK(logs.text.size() > 100);  // the paths ran: there is something to look through
    CHECK(seen.size() > 100);
    for (const auto& secret : secrets) {
        INFO(secret);
        CHECK(logs.text.find(secret) == std::string::npos);
        CHECK(seen.find(secret) == std::string::npos);
        CHECK(files.find(secret) == std::string::npos);
    }
    CHECK(seen.find("PSEUDO-KEY-0123") == std::string::npos);
}
