#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <regex>
#include <set>
#include <sstream>

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include "common/fs.hpp"
#include "config/choices.hpp"
#include "config/keys.hpp"
#include "test_util.hpp"
#include "training_output/config.hpp"
#include "training_output/error.hpp"

using namespace training_output;

namespace {

// Sets environment variables for one scope.
class EnvGuard {
public:
    void set(const char* name, const char* value) {
        names_.push_back(name);
        ::setenv(name, value, 1);
    }
    ~EnvGuard() {
        for (const auto& n : names_) ::unsetenv(n.c_str());
    }

private:
    std::vector<std::string> names_;
};

std::string error_of(const std::function<void()>& fn) {
    try {
        fn();
    } catch (const Error& e) {
        CHECK(e.code() == ErrorCode::Config);
        return e.what();
    }
    return "no error";
}

}  // namespace

TEST_CASE("configuration defaults", "[unit][config]") {
    Config c = Config::from_json("{}");
    CHECK(c.enable_training_output);
    CHECK(c.include_training_metadata);
    CHECK(c.training_data_prefix == "training");
    CHECK(c.output_dir == "./training-data");
    CHECK(c.dedup_store == "sqlite");
    CHECK(c.dedup_db_path == "./training-data/.dedup.sqlite3");
    CHECK(c.dedup_namespace == "training");
    CHECK(c.templates_file.empty());
    CHECK(c.s3_region == "us-east-1");
    CHECK(c.log_level == LogLevel::Warning);
}

TEST_CASE("configuration from JSON", "[unit][config]") {
    Config c = Config::from_json(R"({"enable_training_output": false, "include_training_metadata": false,
        "training_data_prefix": "/sft/v2/", "output_dir": "/tmp/x", "dedup_store": "memory",
        "dedup_namespace": "ft", "log_level": "debug", "s3_bucket_name": "b", "dedup_claim_ttl_seconds": 60})");
    CHECK_FALSE(c.enable_training_output);
    CHECK_FALSE(c.include_training_metadata);
    CHECK(c.training_data_prefix == "sft/v2");
    CHECK(c.dedup_db_path == "/tmp/x/.dedup.sqlite3");
    CHECK(c.dedup_store == "memory");
    CHECK(c.log_level == LogLevel::Debug);
    CHECK(c.s3_bucket_name == "b");
    CHECK(c.dedup_claim_ttl_seconds == 60);
}

TEST_CASE("configuration errors name the key", "[unit][config]") {
    CHECK_THAT(error_of([] { Config::from_json(R"({"enable_trainig_output": true})"); }),
               Catch::Contains("\"enable_trainig_output\"") && Catch::Contains("unknown key"));
    CHECK_THAT(error_of([] { Config::from_json(R"({"enable_training_output": "yes"})"); }),
               Catch::Contains("\"enable_training_output\"") && Catch::Contains("expected a boolean"));
    CHECK_THAT(error_of([] { Config::from_json(R"({"output_dir": 5})"); }), Catch::Contains("\"output_dir\""));
    CHECK_THAT(error_of([] { Config::from_json(R"({"dedup_claim_ttl_seconds": 1.5})"); }),
               Catch::Contains("dedup_claim_ttl_seconds") && Catch::Contains("integer"));
    CHECK_THAT(error_of([] { Config::from_json(R"({"dedup_claim_ttl_seconds": 0})"); }), Catch::Contains("at least 1"));
    CHECK_THAT(error_of([] { Config::from_json(R"({"dedup_store": "postgres"})"); }), Catch::Contains("dedup_store"));
    CHECK_THAT(error_of([] { Config::from_json(R"({"log_level": "loud"})"); }), Catch::Contains("log_level"));
    // The two spellings the description names beside the allowed values.
    CHECK(Config::from_json(R"({"log_level": "warn"})").log_level == LogLevel::Warning);
    CHECK(Config::from_json(R"({"log_level": "none"})").log_level == LogLevel::Off);
    CHECK_THAT(error_of([] { Config::from_json(R"({"training_data_prefix": "a/../b"})"); }),
               Catch::Contains("training_data_prefix"));
    CHECK_THAT(error_of([] { Config::from_json(R"({"training_data_prefix": "a//b"})"); }),
               Catch::Contains("training_data_prefix"));
    CHECK_THAT(error_of([] { Config::from_json(R"({"dedup_namespace": ""})"); }), Catch::Contains("dedup_namespace"));
    CHECK_THAT(error_of([] { Config::from_json("[1]"); }), Catch::Contains("JSON object"));
    CHECK_THAT(error_of([] { Config::from_json("{"); }), Catch::Contains("not valid JSON"));
}

TEST_CASE("configuration from the environment", "[unit][config]") {
    EnvGuard env;
    env.set("ETL_ENABLE_TRAINING_OUTPUT", "False");
    env.set("ETL_INCLUDE_TRAINING_METADATA", "0");
    env.set("ETL_TRAINING_DATA_PREFIX", "sft");
    env.set("ETL_OUTPUT_DIR", "/data/out");
    env.set("ETL_DEDUP_STORE", "memory");
    env.set("ETL_DEDUP_CLAIM_TTL_SECONDS", "120");
    env.set("ETL_S3_ENDPOINT_URL", "");  // empty = unset
    Config c = Config::from_environment();
    CHECK_FALSE(c.enable_training_output);
    CHECK_FALSE(c.include_training_metadata);
    CHECK(c.training_data_prefix == "sft");
    CHECK(c.output_dir == "/data/out");
    CHECK(c.dedup_db_path == "/data/out/.dedup.sqlite3");
    CHECK(c.dedup_store == "memory");
    CHECK(c.dedup_claim_ttl_seconds == 120);
    CHECK(c.s3_endpoint_url.empty());

    env.set("ETL_ENABLE_TRAINING_OUTPUT", "maybe");
    CHECK_THAT(error_of([] { Config::from_environment(); }), Catch::Contains("ETL_ENABLE_TRAINING_OUTPUT"));
    env.set("ETL_ENABLE_TRAINING_OUTPUT", "yes");
    env.set("ETL_DEDUP_CLAIM_TTL_SECONDS", "12x");
    CHECK_THAT(error_of([] { Config::from_environment(); }), Catch::Contains("ETL_DEDUP_CLAIM_TTL_SECONDS"));
}

TEST_CASE("configuration of the Redis dedup store", "[unit][config][redis]") {
    Config c = Config::from_json(R"({"redis_url": "redis://:pw@10.0.0.5:6380/1"})");
    CHECK(c.dedup_store == "redis");  // a Redis URL selects Redis ...
    CHECK(c.redis_timeout_ms == 500);
    CHECK(c.redis_pool_size == 8);
    c = Config::from_json(R"({"redis_url": "redis://10.0.0.5", "dedup_store": "sqlite"})");
    CHECK(c.dedup_store == "sqlite");  // ... unless another store is named
    c = Config::from_json(R"({"dedup_store": "redis", "redis_url": "unix:///run/redis.sock?db=2",
        "redis_timeout_ms": 50, "redis_pool_size": 2, "dedup_ttl_seconds": 2592000})");
    CHECK(c.dedup_store == "redis");
    CHECK(c.redis_timeout_ms == 50);
    CHECK(c.redis_pool_size == 2);
    CHECK(c.dedup_ttl_seconds == 2592000);

    CHECK_THAT(error_of([] { Config::from_json(R"({"dedup_store": "redis"})"); }),
               Catch::Contains("\"redis_url\"") && Catch::Contains("required"));
    std::string e =
        error_of([] { Config::from_json(R"({"dedup_store": "redis", "redis_url": "rediss://:hunter2x@"})"); });
    CHECK_THAT(e, Catch::Contains("\"redis_url\"") && !Catch::Contains("hunter2x"));
    CHECK_THAT(error_of([] { Config::from_json(R"({"redis_timeout_ms": 0})"); }), Catch::Contains("redis_timeout_ms"));
    CHECK_THAT(error_of([] { Config::from_json(R"({"redis_pool_size": 0})"); }), Catch::Contains("redis_pool_size"));

    EnvGuard env;
    env.set("ETL_REDIS_URL", "redis://writer:pw@redis.internal:6379/0");
    env.set("ETL_REDIS_TIMEOUT_MS", "250");
    c = Config::from_environment();
    CHECK(c.dedup_store == "redis");
    CHECK(c.redis_url == "redis://writer:pw@redis.internal:6379/0");
    CHECK(c.redis_timeout_ms == 250);
    env.set("ETL_DEDUP_STORE", "redis");
    env.set("ETL_REDIS_URL", "redis://writer@redis.internal");
    e = error_of([] { Config::from_environment(); });
    CHECK_THAT(e, Catch::Contains("redis_url") && !Catch::Contains("writer@"));
}

TEST_CASE("configuration of Redis over TLS", "[unit][config][redis]") {
    Config c = Config::from_json(R"({"redis_url": "rediss://:pw@redis.internal:6380/1"})");
    CHECK(c.dedup_store == "redis");
    CHECK(c.redis_tls_ca_file.empty());
    CHECK(c.redis_tls_verify);
    c = Config::from_json(R"({"redis_url": "rediss://:pw@10.0.0.5", "redis_tls_ca_file": "/etc/ca.pem",
        "redis_tls_cert_file": "/etc/client.pem", "redis_tls_key_file": "/etc/client.key",
        "redis_tls_server_name": "redis.internal", "redis_tls_verify": false})");
    CHECK(c.redis_tls_ca_file == "/etc/ca.pem");
    CHECK(c.redis_tls_cert_file == "/etc/client.pem");
    CHECK(c.redis_tls_key_file == "/etc/client.key");
    CHECK(c.redis_tls_server_name == "redis.internal");
    CHECK_FALSE(c.redis_tls_verify);

    // A certificate needs its key and the other way round; the key's path is never shown.
    std::string e =
        error_of([] { Config::from_json(R"({"redis_url": "rediss://h", "redis_tls_cert_file": "/etc/client.pem"})"); });
    CHECK_THAT(e, Catch::Contains("\"redis_tls_key_file\": required with redis_tls_cert_file"));
    e = error_of([] { Config::from_json(R"({"redis_url": "rediss://h", "redis_tls_key_file": "/etc/hunter2.key"})"); });
    CHECK_THAT(
        e, Catch::Contains("\"redis_tls_cert_file\": required with redis_tls_key_file") && !Catch::Contains("hunter2"));
    // TLS keys without a rediss:// URL would be silently unused: an error.
    e = error_of([] { Config::from_json(R"({"redis_url": "redis://h", "redis_tls_ca_file": "/etc/ca.pem"})"); });
    CHECK_THAT(e, Catch::Contains("\"redis_tls_ca_file\"") && Catch::Contains("rediss://"));
    e = error_of([] { Config::from_json(R"({"redis_url": "redis://h", "redis_tls_verify": false})"); });
    CHECK_THAT(e, Catch::Contains("\"redis_tls_verify\""));
    e = error_of([] { Config::from_json(R"({"redis_url": "rediss://h", "redis_tls_server_name": "a b"})"); });
    CHECK_THAT(e, Catch::Contains("\"redis_tls_server_name\""));

    EnvGuard env;
    env.set("ETL_REDIS_URL", "rediss://redis.internal");
    env.set("ETL_REDIS_TLS_CA_FILE", "/etc/ca.pem");
    env.set("ETL_REDIS_TLS_VERIFY", "true");
    c = Config::from_environment();
    CHECK(c.redis_tls_ca_file == "/etc/ca.pem");
    CHECK(c.redis_tls_verify);
}

namespace {

std::string source_text(const std::string& path) {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

// The names a regex's first group matches in the files under `dir` (or in one file).
std::set<std::string> names_in_code(const std::string& path, const std::regex& literal) {
    std::set<std::string> out;
    auto scan = [&](const std::string& text) {
        for (std::sregex_iterator it(text.begin(), text.end(), literal), end; it != end; ++it) out.insert((*it)[1]);
    };
    if (std::filesystem::is_directory(path)) {
        for (const auto& entry : std::filesystem::recursive_directory_iterator(path)) {
            if (entry.is_regular_file()) scan(source_text(entry.path().string()));
        }
    } else {
        scan(source_text(path));
    }
    return out;
}

// The `names` in the first cell of each row of a section's tables, in a
// Markdown file of the tree.
std::set<std::string> names_in_doc_table(const char* file, const std::string& heading) {
    const std::string readme = source_text(std::string(TDO_SOURCE_DIR "/") + file);
    const auto start = readme.find("\n" + heading + "\n");
    REQUIRE(start != std::string::npos);
    const std::string section = readme.substr(start, readme.find("\n## ", start + 1) - start);
    std::set<std::string> documented;
    const std::regex row("\n\\| ((?:`[A-Za-z0-9_]+`(?:, )?)+) \\|");
    const std::regex name("`([A-Za-z0-9_]+)`");
    for (std::sregex_iterator it(section.begin(), section.end(), row), end; it != end; ++it) {
        const std::string cell = (*it)[1];
        for (std::sregex_iterator n(cell.begin(), cell.end(), name), e; n != e; ++n) documented.insert((*n)[1]);
    }
    return documented;
}

void check_same(const std::set<std::string>& in_code, const std::set<std::string>& documented) {
    for (const auto& e : in_code) {
        INFO(e << " is in the code, not in the docs' table");
        CHECK(documented.count(e) == 1);
    }
    for (const auto& e : documented) {
        INFO(e << " is in the docs' table, not in the code");
        CHECK(in_code.count(e) == 1);
    }
}

}  // namespace

TEST_CASE("every key has a row in docs/configuration.md", "[unit][config]") {
    // The file is generated from the table (tests/python/config_doc.py; the
    // config_doc_is_generated test checks it is current): a key the table
    // lacks has no row.
    const std::string doc = source_text(TDO_SOURCE_DIR "/docs/configuration.md");
    REQUIRE_FALSE(doc.empty());
    for (const auto& key : Config::keys()) {
        INFO(key);
        CHECK(doc.find("\n| `" + key + "` | ") != std::string::npos);
    }
}

TEST_CASE("config: describe() is the table the parsers read", "[unit][config]") {
    rapidjson::Document d;
    d.Parse(Config::describe().c_str());
    REQUIRE_FALSE(d.HasParseError());
    REQUIRE(d["keys"].IsArray());
    const auto keys = Config::keys();
    REQUIRE(d["keys"].Size() == keys.size());
    std::size_t ranges = 0, lists = 0;
    for (rapidjson::SizeType i = 0; i < d["keys"].Size(); ++i) {
        const auto& k = d["keys"][i];
        const std::string name = k["name"].GetString();
        INFO(name);
        CHECK(name == keys[i]);
        CHECK(std::string(k["description"].GetString()).size() > 10);
        const std::string type = k["type"].GetString();
        CHECK(std::set<std::string>{"bool", "int", "number", "string", "object"}.count(type) == 1);
        CHECK(std::string(k["env"].GetString()) == "ETL_" + [&] {
            std::string u = name;
            for (char& c : u) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
            return u;
        }());
        // The default the table states is the one a writer gets: an empty
        // configuration parses to it.
        if (!k.HasMember("default_text") && !k["default"].IsNull() && type != "object") {
            std::string doc = "{\"" + name + "\": ";
            rapidjson::StringBuffer b;
            rapidjson::Writer<rapidjson::StringBuffer> w(b);
            k["default"].Accept(w);
            doc += std::string(b.GetString()) + "}";
            CHECK_NOTHROW(Config::from_json(doc));
        }
        if (k.HasMember("min")) {
            ++ranges;
            REQUIRE(type == "int");
            const auto min = k["min"].GetInt64(), max = k["max"].GetInt64();
            CHECK(min <= max);
            // Both bounds are accepted, one past either is refused, naming the key.
            for (const auto v : {min, max}) {
                INFO(v);
                if (name == "spool_max_bytes" || name == "s3_retry_base_ms" || name == "s3_retry_max_ms")
                    continue;  // bounded by another key too (tested with it)
                CHECK_NOTHROW(Config::from_json("{\"" + name + "\": " + std::to_string(v) + "}"));
            }
            for (const auto v : {min - 1, max + 1}) {
                INFO(v);
                try {
                    Config::from_json("{\"" + name + "\": " + std::to_string(v) + "}");
                    FAIL("accepted");
                } catch (const Error& e) {
                    CHECK(std::string(e.what()).find("\"" + name + "\"") != std::string::npos);
                }
            }
        }
        if (k.HasMember("allowed")) {
            ++lists;
            for (const auto& v : k["allowed"].GetArray()) {
                const std::string value = v.GetString();
                INFO(value);
                std::string doc = "{\"" + name + "\": \"" + value + "\"";
                if (name == "dedup_store" && value == "redis") doc += ", \"redis_url\": \"redis://127.0.0.1:1\"";
                CHECK_NOTHROW(Config::from_json(doc + "}"));
            }
            try {
                Config::from_json("{\"" + name + "\": \"no-such-value\"}");
                FAIL("accepted");
            } catch (const Error& e) {
                CHECK(std::string(e.what()).find("\"" + name + "\"") != std::string::npos);
                CHECK(std::string(e.what()).find(k["allowed"][0].GetString()) != std::string::npos);
            }
        }
    }
    CHECK(ranges >= 20);
    CHECK(lists == 8);
}

TEST_CASE("every log event the library emits is in docs/observability.md's table, and only those",
          "[unit][config][logs]") {
    // The events in the code: every "training_output_*" literal under lib/
    // (and the one established name without the prefix).
    const auto in_code = names_in_code(
        TDO_SOURCE_DIR "/lib", std::regex("\"(training_output_[a-z0-9_]+|skipping_duplicate_training_example)\""));
    CHECK(in_code.size() > 30);
    check_same(in_code, names_in_doc_table("docs/observability.md", "## Logs"));
}

TEST_CASE("every metric the library exports is in docs/observability.md's table, and only those",
          "[unit][config][metrics]") {
    // The families in the code (metrics.cpp, and stats_table.hpp for WriterStats' counters); a histogram's _bucket,
    // _sum and _count samples belong to it.
    std::set<std::string> in_code;
    for (const auto& n : names_in_code(TDO_SOURCE_DIR "/lib/writer", std::regex("\"(etl_training_[a-z0-9_]+)\""))) {
        in_code.insert(std::regex_replace(n, std::regex("_(bucket|sum|count)$"), ""));
    }
    CHECK(in_code.size() > 20);
    check_same(in_code, names_in_doc_table("docs/observability.md", "## Metrics"));
}

TEST_CASE("the guide's table of status codes is the header's", "[unit][config][capi]") {
    std::set<std::string> in_header;
    const std::string header = source_text(TDO_SOURCE_DIR "/include/training_output.h");
    const std::regex define("\n#define (TDO_E_[A-Z_]+) (-[0-9]+)");
    for (std::sregex_iterator it(header.begin(), header.end(), define), end; it != end; ++it) {
        in_header.insert(std::string((*it)[1]) + "=" + std::string((*it)[2]));
    }
    CHECK(in_header.size() >= 13);
    const std::string readme = source_text(TDO_SOURCE_DIR "/docs/guide.md");
    std::set<std::string> documented;
    const std::regex row("\n\\| `(TDO_E_[A-Z_]+)` \\| (-[0-9]+) \\|");
    for (std::sregex_iterator it(readme.begin(), readme.end(), row), end; it != end; ++it) {
        documented.insert(std::string((*it)[1]) + "=" + std::string((*it)[2]));
    }
    check_same(in_header, documented);
}

TEST_CASE("config: paths are made absolute and canonical at open, whatever names them", "[unit][config][paths][slow]") {
    tdo_test::TempDir dir;
    std::filesystem::create_directories(dir / "real/out");
    std::filesystem::create_directory_symlink(dir / "real", dir / "link");
    const std::string canonical = std::filesystem::canonical(dir / "real/out").string();
    for (const std::string& name :
         {dir / "real/out", dir / "real/out/", dir / "link/out", dir / "real/./x/../out", dir / "link//out/."}) {
        INFO(name);
        CHECK(fs::absolute_path(name, "output_dir") == canonical);
    }
    // What does not exist yet is made absolute and normalized all the same.
    CHECK(fs::absolute_path(dir / "link/new/../later/", "output_dir") ==
          canonical.substr(0, canonical.size() - 4) + "/later");
    const auto cwd = std::filesystem::current_path();
    std::filesystem::current_path(dir / "link");
    CHECK(fs::absolute_path("out", "output_dir") == canonical);
    CHECK(fs::absolute_path("./out/../out", "spool_dir") == canonical);
    std::filesystem::current_path(cwd);
}

TEST_CASE("config: enumerated values are parsed once, each allowed value to its own enum value", "[unit][config]") {
    Config c;
    Choices ch = choices_of(c);
    CHECK(ch.output_format == OutputFormat::Alpaca);
    CHECK(ch.dedup_store == DedupStoreKind::Sqlite);
    CHECK(ch.spool_fsync == SpoolFsync::Interval);
    CHECK(ch.spool_full_policy == SpoolFullPolicy::Block);
    CHECK(ch.s3_addressing_style == AddressingStyle::Auto);
    CHECK(ch.s3_conditional_writes == ConditionalWrites::Auto);
    CHECK(ch.s3_append_mode == AppendMode::Auto);
    c.redis_url = "redis://127.0.0.1:6379";
    CHECK(choices_of(c).dedup_store == DedupStoreKind::Redis);  // the default, when Redis is configured

    c.output_format = "chat";
    c.dedup_store = "log";
    c.spool_fsync = "never";
    c.spool_full_policy = "reject";
    c.s3_addressing_style = "virtual";
    c.s3_conditional_writes = "false";
    c.s3_append_mode = "batches";
    ch = choices_of(c);
    CHECK(ch.output_format == OutputFormat::Chat);
    CHECK(ch.dedup_store == DedupStoreKind::Log);
    CHECK(ch.spool_fsync == SpoolFsync::Never);
    CHECK(ch.spool_full_policy == SpoolFullPolicy::Reject);
    CHECK(ch.s3_addressing_style == AddressingStyle::Virtual);
    CHECK(ch.s3_conditional_writes == ConditionalWrites::Off);
    CHECK(ch.s3_append_mode == AppendMode::Batches);
    c.s3_append_mode = "lease";
    CHECK(choices_of(c).s3_append_mode == AppendMode::Lease);
    c.s3_conditional_writes = "true";
    CHECK(choices_of(c).s3_conditional_writes == ConditionalWrites::On);

    // Every allowed value of every enumerated key maps to a value of its own.
    for (const config::Key& k : config::all_keys()) {
        auto* member = std::get_if<std::string Config::*>(&k.target);
        if (!member || !k.allowed) continue;
        std::set<int> seen;
        for (const auto& v : config::allowed_values(k)) {
            Config one;
            one.*(*member) = v;
            const Choices got = choices_of(one);
            const std::string name = k.name;
            const int value = name == "output_format"           ? static_cast<int>(got.output_format)
                              : name == "dedup_store"           ? static_cast<int>(got.dedup_store)
                              : name == "spool_fsync"           ? static_cast<int>(got.spool_fsync)
                              : name == "spool_full_policy"     ? static_cast<int>(got.spool_full_policy)
                              : name == "s3_addressing_style"   ? static_cast<int>(got.s3_addressing_style)
                              : name == "s3_conditional_writes" ? static_cast<int>(got.s3_conditional_writes)
                              : name == "s3_append_mode"        ? static_cast<int>(got.s3_append_mode)
                                                                : -1;
            INFO(k.name << " = " << v);
            CHECK(value >= 0);  // a key with allowed values that Choices does not carry
            CHECK(seen.insert(value).second);
        }
    }
    c.s3_addressing_style = "host";
    CHECK_THROWS_WITH(choices_of(c), Catch::Contains("s3_addressing_style") && Catch::Contains("auto, path, virtual"));
}
