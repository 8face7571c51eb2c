// Configuration of a writer: a JSON document, or the environment (ETL_ + the
// key in upper case) when none is given. Every key, its type, range and
// default is in the table in lib/config/keys.cpp, which describe() returns
// and docs/configuration.md is generated from.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
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
    std::string templates_file;             // JSON file overriding instruction/input templates
    std::int64_t max_line_bytes = 1 << 20;  // longer examples are rejected (bounded memory)

    // The training data itself.
    std::string output_format = "alpaca";     // alpaca | chat
    bool redact_phi = true;                   // identifiers in narratives become [EMAIL], [DATE], ...
    bool pseudonymize_ids = false;            // user_id, correlation_id, source_key: keyed HMAC-SHA256
    std::string pseudonymization_key;         // required with pseudonymize_ids (16 bytes or more); never logged
    std::string pseudonymization_key_id;      // recorded in metadata; empty: derived from the key
    std::optional<double> min_quality_score;  // skip examples below it (unset: no filter)
    std::map<std::string, double> min_quality_score_by_domain;  // per health domain, over the global one
    double validation_fraction = 0.0;                           // share of users whose examples are "validation"
    bool split_objects = false;   // train and validation in separate objects ({prefix}/{split}/...)
    bool write_manifests = true;  // a .manifest.json beside each monthly file

    // Where: a local directory unless an S3 endpoint is configured.
    std::string output_dir = "./training-data";

    // Dedup.
    std::string dedup_store;    // sqlite | memory | redis | log; empty: redis if redis_url is set, else sqlite
    std::string dedup_db_path;  // default <output_dir>/.dedup.sqlite3 (log: .dedup-<destination hash>.log)
    std::string dedup_namespace = "training";
    std::int64_t dedup_claim_ttl_seconds = 86400;  // a claim whose line never lands expires
    std::int64_t dedup_ttl_seconds = 0;            // committed entries: 0 = forever
    std::int64_t dedup_busy_timeout_ms = 5000;     // SQLite: wait for other processes' locks
    // TDO_PENDING instead of TDO_DUPLICATE when another live writer holds
    // the content and has not delivered it yet (hosts that acknowledge
    // their queue only on WRITTEN or DUPLICATE).
    bool dedup_pending_outcome = false;
    std::int64_t dedup_owner_ttl_seconds = 120;  // Redis: a spool's liveness key lives this long unrefreshed
    std::string redis_url;                       // redis://[[user]:password@]host[:port][/db], unix:///path[?db=N]
    std::int64_t redis_timeout_ms = 500;         // bounds each dedup call: connect, wait for a connection, command
    std::int64_t redis_pool_size = 8;            // connections per writer
    // Redis over TLS (a rediss:// redis_url). The key file's path and contents are never logged.
    std::string redis_tls_ca_file;    // PEM CAs that sign the server's certificate; empty: the system's
    std::string redis_tls_cert_file;  // client certificate (PEM), together with redis_tls_key_file
    std::string redis_tls_key_file;   // its private key (PEM, not encrypted)
    std::string
        redis_tls_server_name;     // name checked in the server's certificate and sent as SNI; empty: the URL's host
    bool redis_tls_verify = true;  // false: any certificate is accepted (tests only)

    // Object store (S3 / MinIO): used when s3_endpoint_url is set. Credentials
    // and region fall back to AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
    // AWS_SESSION_TOKEN and AWS_REGION when not given.
    std::string s3_endpoint_url;
    std::string s3_access_key;
    std::string s3_secret_key;
    std::string s3_session_token;
    std::string s3_bucket_name;
    std::string s3_region = "us-east-1";
    std::string s3_addressing_style = "auto";  // auto | path | virtual
    std::string s3_ca_file;
    bool s3_verify_tls = true;
    std::int64_t s3_connect_timeout_ms = 3000;
    std::int64_t s3_request_timeout_ms = 60000;
    std::int64_t s3_max_attempts = 4;  // per request
    std::int64_t s3_retry_base_ms = 100;
    std::int64_t s3_retry_max_ms = 5000;
    std::string s3_conditional_writes = "auto";  // auto | true | false
    // auto (native where the store has it, else copy) | native (RGW's append
    // with position) | copy (read or copy + conditional write; a lease where
    // Complete ignores If-Match) | lease (copy, always under a lease) |
    // batches (one object per batch, folded into the monthly file by
    // compactions)
    std::string s3_append_mode = "auto";
    bool s3_convert_plain_objects = true;  // native appends: a plain monthly object is made appendable, once
    std::int64_t s3_compaction_interval_seconds = 300;  // batches: how often a writer compacts its keys (0: never)
    std::int64_t s3_compaction_max_bytes = 64 << 20;    // batches: read and appended per fold
    std::int64_t s3_multipart_threshold = 5 << 20;
    std::int64_t s3_lease_seconds = 30;

    // Batching: lines are grouped per object and appended in batches.
    std::int64_t flush_max_bytes = 8 << 20;  // a key's pending bytes that trigger an append
    std::int64_t flush_interval_ms = 5000;   // the oldest pending line's age that triggers one
    std::int64_t flush_timeout_ms = 30000;   // how long flush() and close() wait

    // Spool: the local write-ahead log every accepted line goes to first.
    std::string spool_dir;                 // default <output_dir>/.spool
    std::string spool_fsync = "interval";  // interval (about once a second) | always | never
    std::int64_t spool_max_bytes = std::int64_t(1) << 30;
    std::string spool_full_policy = "block";      // block | reject (TDO_E_BACKPRESSURE)
    std::int64_t spool_block_timeout_ms = 10000;  // block: how long a call waits for room

    // Logs.
    LogLevel log_level = LogLevel::Warning;

    // Local directory sink: fsync objects after each append.
    bool directory_fsync = true;

    // Where the lines go ("directory <absolute path>" or "s3 <endpoint> bucket
    // <name>", then " prefix <training_data_prefix>"): a writer's spool is
    // adopted only by writers with the same destination.
    std::string destination() const;
    // "<output_dir>/.dedup.sqlite3" (dedup_store "log": ".dedup.log", which the
    // writer names after the destination): dedup_db_path when none is given.
    std::string default_dedup_db_path() const;
    // output_dir + "/.spool".
    std::string default_spool_dir() const;

    // Resolved defaults (dedup_db_path from output_dir, ...). Called by the
    // parsers; call it yourself after filling a Config by hand.
    void finalize();

    // Throws Error(Config) naming the key for an unknown key or a wrong type.
    static Config from_json(std::string_view json);
    // Reads ETL_<KEY> for every key; unset variables keep their defaults.
    static Config from_environment();

    // The keys this version understands (for docs and tests).
    static std::vector<std::string> keys();

    // Every key as JSON: {"version": "...", "keys": [{"name", "section",
    // "type" (bool | int | number | string | object), "env" (its ETL_
    // variable), "default" (null: none), "default_text" (a default other keys
    // decide, in words), "min" and "max" (int), "allowed" (the only values),
    // "description" (Markdown)}, ...]}, in the docs' order.
    static std::string describe();
};

}  // namespace training_output
