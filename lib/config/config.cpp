// Configuration: the table of keys (keys.cpp), read from a JSON document or
// from the environment (ETL_ + the key in upper case).
#include "training_output/config.hpp"

#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <variant>

#include "common/ascii.hpp"
#include "common/json.hpp"
#include "common/utf8.hpp"
#include "config/choices.hpp"
#include "config/keys.hpp"
#include "config/redis_url.hpp"
#include "training_output/error.hpp"

namespace training_output {
namespace {

using config::DomainScoresField;
using config::Key;
using config::LogLevelField;

Error config_error(const std::string& key, const std::string& why) {
    return Error(ErrorCode::Config, "configuration key " + json::quote(key) + ": " + why);
}

void set_int(Config& c, const Key& k, std::int64_t Config::*m, std::int64_t v) {
    if (v < k.min)
        throw config_error(k.name, "must be at least " + std::to_string(k.min) + ", got " + std::to_string(v));
    if (v > k.max)
        throw config_error(k.name, "must be at most " + std::to_string(k.max) + ", got " + std::to_string(v));
    c.*m = v;
}

void set_double(Config& c, const Key& k, double Config::*m, double v) {
    if (!std::isfinite(v)) throw config_error(k.name, "must be a finite number");
    c.*m = v;
}

// {"<health domain>": <number>, ...}
void set_domain_scores(Config& c, const rapidjson::Value& v, const std::string& where) {
    if (!v.IsObject())
        throw config_error("min_quality_score_by_domain", where + "expected an object, got " + json::type_name(v));
    std::map<std::string, double> scores;
    for (auto& m : v.GetObject()) {
        if (!m.value.IsNumber() || !std::isfinite(m.value.GetDouble())) {
            throw config_error("min_quality_score_by_domain",
                               where + json::quote(json::view(m.name)) + " must be a number");
        }
        scores[std::string(json::view(m.name))] = m.value.GetDouble();
    }
    c.min_quality_score_by_domain = std::move(scores);
}

void apply_json(Config& c, const Key& k, const rapidjson::Value& v) {
    auto wrong = [&](const char* expected) {
        return config_error(k.name, std::string("expected ") + expected + ", got " + json::type_name(v));
    };
    if (auto* b = std::get_if<bool Config::*>(&k.target)) {
        if (!v.IsBool()) throw wrong("a boolean");
        c.*(*b) = v.GetBool();
    } else if (auto* i = std::get_if<std::int64_t Config::*>(&k.target)) {
        if (!v.IsInt64()) throw wrong("an integer");
        set_int(c, k, *i, v.GetInt64());
    } else if (auto* s = std::get_if<std::string Config::*>(&k.target)) {
        if (!v.IsString()) throw wrong("a string");
        c.*(*s) = std::string(json::view(v));
    } else if (auto* d = std::get_if<double Config::*>(&k.target)) {
        if (!v.IsNumber()) throw wrong("a number");
        set_double(c, k, *d, v.GetDouble());
    } else if (auto* o = std::get_if<std::optional<double> Config::*>(&k.target)) {
        if (v.IsNull()) {
            c.*(*o) = std::nullopt;
        } else {
            if (!v.IsNumber()) throw wrong("a number or null");
            if (!std::isfinite(v.GetDouble())) throw config_error(k.name, "must be a finite number");
            c.*(*o) = v.GetDouble();
        }
    } else if (std::holds_alternative<DomainScoresField>(k.target)) {
        set_domain_scores(c, v, "");
    } else {
        if (!v.IsString()) throw wrong("a string");
        try {
            c.log_level = parse_log_level(json::view(v));
        } catch (const Error& e) {
            throw config_error(k.name, e.what());
        }
    }
}

void apply_text(Config& c, const Key& k, const std::string& text, const std::string& var) {
    auto wrong = [&](const char* expected) {
        return Error(ErrorCode::Config,
                     "environment variable " + var + ": expected " + expected + ", got " + json::quote(text));
    };
    if (auto* b = std::get_if<bool Config::*>(&k.target)) {
        const std::string t = ascii_lower(text);
        if (t == "true" || t == "1" || t == "yes" || t == "on")
            c.*(*b) = true;
        else if (t == "false" || t == "0" || t == "no" || t == "off")
            c.*(*b) = false;
        else
            throw wrong("true or false");
    } else if (auto* i = std::get_if<std::int64_t Config::*>(&k.target)) {
        char* end = nullptr;
        errno = 0;
        long long v = std::strtoll(text.c_str(), &end, 10);
        if (text.empty() || *end != '\0' || errno == ERANGE) throw wrong("an integer");
        set_int(c, k, *i, v);
    } else if (auto* s = std::get_if<std::string Config::*>(&k.target)) {
        c.*(*s) = text;
    } else if (std::holds_alternative<double Config::*>(k.target) ||
               std::holds_alternative<std::optional<double> Config::*>(k.target)) {
        char* end = nullptr;
        errno = 0;
        const double v = std::strtod(text.c_str(), &end);
        if (text.empty() || *end != '\0' || errno == ERANGE || !std::isfinite(v)) throw wrong("a number");
        if (auto* d = std::get_if<double Config::*>(&k.target)) {
            c.*(*d) = v;
        } else {
            c.*std::get<std::optional<double> Config::*>(k.target) = v;
        }
    } else if (std::holds_alternative<DomainScoresField>(k.target)) {
        rapidjson::Document doc;
        try {
            json::parse(doc, text, var.c_str(), ErrorCode::Config);
        } catch (const Error& e) {
            throw Error(ErrorCode::Config, std::string("environment variable ") + e.what());
        }
        set_domain_scores(c, doc, "environment variable " + var + ": ");
    } else {
        try {
            c.log_level = parse_log_level(text);
        } catch (const Error& e) {
            throw Error(ErrorCode::Config, "environment variable " + var + ": " + e.what());
        }
    }
}

// "a/b/c": no empty, "." or ".." segments, no backslashes or control characters.
void check_key_prefix(const std::string& prefix) {
    std::size_t start = 0;
    while (start <= prefix.size()) {
        std::size_t end = prefix.find('/', start);
        if (end == std::string::npos) end = prefix.size();
        std::string seg = prefix.substr(start, end - start);
        if (seg.empty() || seg == "." || seg == "..") {
            throw config_error("training_data_prefix",
                               "must be path segments separated by '/', without empty, "
                               "'.' or '..' segments, got " +
                                   json::quote(prefix));
        }
        start = end + 1;
    }
    for (unsigned char ch : prefix) {
        if (ch < 0x20 || ch == '\\' || ch == 0x7F) {
            throw config_error("training_data_prefix", "must not contain control characters or backslashes");
        }
    }
}

// AWS_* names fill the S3 credentials and region that were not given.
void apply_aws_fallbacks(Config& c, bool region_given) {
    auto env = [](const char* name) -> std::string {
        const char* v = std::getenv(name);
        return v ? v : "";
    };
    if (c.s3_access_key.empty()) c.s3_access_key = env("AWS_ACCESS_KEY_ID");
    if (c.s3_secret_key.empty()) c.s3_secret_key = env("AWS_SECRET_ACCESS_KEY");
    if (c.s3_session_token.empty()) c.s3_session_token = env("AWS_SESSION_TOKEN");
    if (!region_given && !env("AWS_REGION").empty()) c.s3_region = env("AWS_REGION");
}

// The redis_tls_* keys: only with a rediss:// URL, a client certificate with
// its key. Paths are checked when the store opens (never quoting the key's).
void check_redis_tls(const Config& c, bool tls) {
    const std::pair<const char*, const std::string*> keys[] = {
        {"redis_tls_ca_file", &c.redis_tls_ca_file},
        {"redis_tls_cert_file", &c.redis_tls_cert_file},
        {"redis_tls_key_file", &c.redis_tls_key_file},
        {"redis_tls_server_name", &c.redis_tls_server_name},
    };
    for (const auto& [key, value] : keys) {
        if (!tls && !value->empty()) throw config_error(key, "needs a rediss:// (TLS) redis_url");
    }
    if (!tls && !c.redis_tls_verify) throw config_error("redis_tls_verify", "needs a rediss:// (TLS) redis_url");
    if (c.redis_tls_key_file.empty() && !c.redis_tls_cert_file.empty()) {
        throw config_error("redis_tls_key_file", "required with redis_tls_cert_file (the client certificate's key)");
    }
    if (c.redis_tls_cert_file.empty() && !c.redis_tls_key_file.empty()) {
        throw config_error("redis_tls_cert_file", "required with redis_tls_key_file (the certificate of that key)");
    }
    for (unsigned char ch : c.redis_tls_server_name) {
        if (ch <= 0x20 || ch == 0x7F || ch == '/' || ch == '@') {
            throw config_error("redis_tls_server_name", "must be a host name or an IP address");
        }
    }
}

}  // namespace

void Config::finalize() {
    while (!training_data_prefix.empty() && training_data_prefix.back() == '/') training_data_prefix.pop_back();
    while (!training_data_prefix.empty() && training_data_prefix.front() == '/') training_data_prefix.erase(0, 1);
    if (!training_data_prefix.empty()) check_key_prefix(training_data_prefix);
    // Object keys are at most 1,024 bytes; the library adds up to about 200 to the prefix.
    if (training_data_prefix.size() > 512) {
        throw config_error("training_data_prefix",
                           "must be at most 512 bytes, got " + std::to_string(training_data_prefix.size()));
    }
    if (dedup_store.empty()) dedup_store = redis_url.empty() ? "sqlite" : "redis";
    // Strings with a list of allowed values: one of them.
    for (const Key& k : config::all_keys()) {
        auto* member = std::get_if<std::string Config::*>(&k.target);
        if (!member || config::allowed(k, this->*(*member))) continue;
        std::string list;
        for (const auto& v : config::allowed_values(k)) list += (list.empty() ? "" : ", ") + v;
        throw config_error(k.name, "expected one of " + list + ", got " + json::quote(this->*(*member)));
    }
    const Choices choices = choices_of(*this);
    if (choices.dedup_store == DedupStoreKind::Redis) {
        if (redis_url.empty()) throw config_error("redis_url", "required when dedup_store is \"redis\"");
        const bool tls = parse_redis_url(redis_url).tls;  // throws naming the key, never quoting the URL
        check_redis_tls(*this, tls);
    }
    if (choices.dedup_store == DedupStoreKind::Redis && !s3_endpoint_url.empty() &&
        dedup_owner_ttl_seconds < (2 * s3_request_timeout_ms + 999) / 1000) {
        // A request that starts while the liveness is fresh (half its TTL
        // left) must end before another writer can take its claims over.
        throw config_error("dedup_owner_ttl_seconds", "must be at least twice s3_request_timeout_ms (" +
                                                          std::to_string(s3_request_timeout_ms) + " ms), got " +
                                                          std::to_string(dedup_owner_ttl_seconds));
    }
    if (dedup_namespace.empty()) throw config_error("dedup_namespace", "must not be empty");
    for (unsigned char ch : dedup_namespace) {
        if (ch <= 0x20 || ch == 0x7F)
            throw config_error("dedup_namespace", "must not contain spaces or control characters");
    }
    if (output_dir.empty()) throw config_error("output_dir", "must not be empty");

    if (s3_retry_max_ms < s3_retry_base_ms) throw config_error("s3_retry_max_ms", "must be at least s3_retry_base_ms");
    if (spool_max_bytes < 2 * max_line_bytes) {
        throw config_error("spool_max_bytes", "must be at least twice max_line_bytes (" +
                                                  std::to_string(max_line_bytes) + "), got " +
                                                  std::to_string(spool_max_bytes));
    }
    // Quality scores are between 0 and 1 (the processors' contract).
    if (min_quality_score && !(*min_quality_score >= 0.0 && *min_quality_score <= 1.0)) {
        throw config_error("min_quality_score", "must be between 0 and 1, got " + std::to_string(*min_quality_score));
    }
    for (const auto& [domain, score] : min_quality_score_by_domain) {
        if (!(score >= 0.0 && score <= 1.0)) {
            throw config_error("min_quality_score_by_domain",
                               json::quote(domain) + " must be between 0 and 1, got " + std::to_string(score));
        }
    }
    if (!(validation_fraction >= 0.0 && validation_fraction <= 1.0)) {
        throw config_error("validation_fraction",
                           "must be between 0 and 1, got " + std::to_string(validation_fraction));
    }
    if (pseudonymize_ids && pseudonymization_key.size() < 16) {
        // The key itself is never quoted.
        throw config_error("pseudonymization_key", "required with pseudonymize_ids, at least 16 bytes (got " +
                                                       std::to_string(pseudonymization_key.size()) + ")");
    }
    for (unsigned char ch : pseudonymization_key_id) {
        if (ch < 0x20 || ch == 0x7F)
            throw config_error("pseudonymization_key_id", "must not contain control characters");
    }
    if (!is_valid_utf8(pseudonymization_key_id)) throw config_error("pseudonymization_key_id", "must be UTF-8");
    if (dedup_db_path.empty()) dedup_db_path = default_dedup_db_path();
    if (spool_dir.empty()) spool_dir = default_spool_dir();
}

std::string Config::default_dedup_db_path() const {
    return output_dir + (dedup_store == "log" ? "/.dedup.log" : "/.dedup.sqlite3");
}
std::string Config::default_spool_dir() const { return output_dir + "/.spool"; }

std::string Config::destination() const {
    std::string where;
    if (s3_endpoint_url.empty()) {
        char* real = ::realpath(output_dir.c_str(), nullptr);
        where = "directory " + std::string(real ? real : output_dir.c_str());
        std::free(real);
    } else {
        std::string endpoint = s3_endpoint_url;
        while (!endpoint.empty() && endpoint.back() == '/') endpoint.pop_back();
        where = "s3 " + ascii_lower(endpoint) + " bucket " + s3_bucket_name;
    }
    return where + " prefix " + training_data_prefix;
}

Config Config::from_json(std::string_view text) {
    rapidjson::Document doc;
    json::parse(doc, text, "configuration", ErrorCode::Config);
    if (!doc.IsObject()) {
        throw Error(ErrorCode::Config, std::string("configuration must be a JSON object, got ") + json::type_name(doc));
    }
    Config c;
    for (auto& m : doc.GetObject()) {
        std::string_view name = json::view(m.name);
        const Key* key = nullptr;
        for (const Key& k : config::all_keys()) {
            if (name == k.name) {
                key = &k;
                break;
            }
        }
        if (!key) throw config_error(std::string(name), "unknown key");
        apply_json(c, *key, m.value);
    }
    apply_aws_fallbacks(c, doc.HasMember("s3_region"));
    c.finalize();
    return c;
}

Config Config::from_environment() {
    Config c;
    for (const Key& k : config::all_keys()) {
        std::string var = config::env_name(k);
        const char* value = std::getenv(var.c_str());
        if (value && *value) apply_text(c, k, value, var);  // empty = unset
    }
    const char* region = std::getenv("ETL_S3_REGION");
    apply_aws_fallbacks(c, region && *region);
    c.finalize();
    return c;
}

std::vector<std::string> Config::keys() {
    std::vector<std::string> out;
    for (const Key& k : config::all_keys()) out.emplace_back(k.name);
    return out;
}

}  // namespace training_output
