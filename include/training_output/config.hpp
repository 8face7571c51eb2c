// Configuration of a writer: a JSON document, or the environment (ETL_ + the
// key in upper case) when none is given. Every key, its type and its default
// is in the table in lib/config/config.cpp and in the README.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "training_output/log.hpp"

namespace training_output {

struct Config {
    // What is written.
    bool enable_training_output = true;
    bool include_training_metadata = true;
    std::string training_data_prefix = "training";
    std::string templates_file;  // JSON file overriding instruction/input templates
    std::int64_t max_line_bytes = 1 << 20;  // longer examples are rejected (bounded memory)

    // Where: a local directory unless an S3 endpoint is configured.
    std::string output_dir = "./training-data";

    // Dedup.
    std::string dedup_store = "sqlite";  // sqlite | memory
    std::string dedup_db_path;           // default <output_dir>/.dedup.sqlite3
    std::string dedup_namespace = "training";
    std::int64_t dedup_claim_ttl_seconds = 86400;  // a claim whose line never lands expires
    std::int64_t dedup_ttl_seconds = 0;            // committed entries: 0 = forever
    std::int64_t dedup_busy_timeout_ms = 5000;     // SQLite: wait for other processes' locks

    // Object store (S3 / MinIO). Reserved until the S3 sink is built.
    std::string s3_endpoint_url;
    std::string s3_access_key;
    std::string s3_secret_key;
    std::string s3_bucket_name;
    std::string s3_region = "us-east-1";

    // Logs.
    LogLevel log_level = LogLevel::Warning;

    // Local directory sink: fsync objects after each append.
    bool directory_fsync = true;

    // Resolved defaults (dedup_db_path from output_dir, ...). Called by the
    // parsers; call it yourself after filling a Config by hand.
    void finalize();

    // Throws Error(Config) naming the key for an unknown key or a wrong type.
    static Config from_json(std::string_view json);
    // Reads ETL_<KEY> for every key; unset variables keep their defaults.
    static Config from_environment();

    // The keys this version understands (for docs and tests).
    static std::vector<std::string> keys();
};

}  // namespace training_output
