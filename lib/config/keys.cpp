// The table of configuration keys (see keys.hpp). Order is the docs'.
#include "config/keys.hpp"

#include <algorithm>
#include <cctype>
#include <cstring>

namespace training_output::config {
namespace {

constexpr std::int64_t kSecond = 1000, kMinute = 60 * kSecond, kHour = 60 * kMinute, kDay = 24 * kHour;
constexpr std::int64_t kDaySeconds = 86400, kYearSeconds = 365 * kDaySeconds;
constexpr std::int64_t kMiB = 1 << 20, kGiB = kMiB << 10;

constexpr const char* kWritten = "What is written";
constexpr const char* kData = "The training data";
constexpr const char* kWhere = "Where";
constexpr const char* kDedup = "Dedup";
constexpr const char* kRedis = "Redis";
constexpr const char* kLogs = "Logs";
constexpr const char* kBatching = "Batching";
constexpr const char* kSpool = "Spool";
constexpr const char* kS3 = "S3 and MinIO";

}  // namespace

const Key kKeys[] = {
    {"enable_training_output", &Config::enable_training_output, kWritten, 0, INT32_MAX, nullptr, nullptr,
     "`false`: every call returns `TDO_DISABLED` and nothing is opened, read or written"},
    {"include_training_metadata", &Config::include_training_metadata, kWritten, 0, INT32_MAX, nullptr, nullptr,
     "write the `metadata` object"},
    {"training_data_prefix", &Config::training_data_prefix, kWritten, 0, INT32_MAX, nullptr, nullptr,
     "first segments of every object key"},
    {"templates_file", &Config::templates_file, kWritten, 0, INT32_MAX, nullptr, nullptr,
     "JSON file overriding instructions and input descriptions ([Templates](guide.md#templates))"},
    {"max_line_bytes", &Config::max_line_bytes, kWritten, 256, 64 * kMiB, nullptr, nullptr,
     "longer examples are rejected with `TDO_E_INVALID_INPUT`"},
    {"output_format", &Config::output_format, kWritten, 0, INT32_MAX, "alpaca|chat", nullptr,
     "`alpaca` (`instruction`, `input`, `output`, `metadata`) or `chat` (`messages`: system, user, assistant; "
     "`metadata`) ([Output format](guide.md#output-format))"},
    {"redact_phi", &Config::redact_phi, kData, 0, INT32_MAX, nullptr, nullptr,
     "identifiers in narratives and in the strings of `clinical_insights` become typed placeholders (`[EMAIL]`, "
     "`[DATE]`, ...) before the content hash; an example the redaction cannot run on is skipped (`redaction_failed`), "
     "never written unredacted ([docs/training-data.md](training-data.md#phi-redaction))"},
    {"pseudonymize_ids", &Config::pseudonymize_ids, kData, 0, INT32_MAX, nullptr, nullptr,
     "`user_id`, `correlation_id` and `source_key` become keyed HMAC-SHA256 values (32 hex digits)"},
    {"pseudonymization_key", &Config::pseudonymization_key, kData, 0, INT32_MAX, nullptr, nullptr,
     "the HMAC key, at least 16 bytes; required with `pseudonymize_ids`; never logged"},
    {"pseudonymization_key_id", &Config::pseudonymization_key_id, kData, 0, INT32_MAX, nullptr,
     "derived (`hmac-` + 8 hex digits of an HMAC of a fixed label)",
     "written as `metadata.pseudonymization_key_id`, to tell keys apart when they rotate"},
    {"min_quality_score", &Config::min_quality_score, kData, 0, INT32_MAX, nullptr, nullptr,
     "between 0 and 1: examples with a lower `quality_score`, or none, are skipped (`low_quality`, "
     "`no_quality_score`)"},
    {"min_quality_score_by_domain", DomainScoresField{}, kData, 0, INT32_MAX, nullptr, nullptr,
     "per health domain (each between 0 and 1), over `min_quality_score`: `{\"sleep_wellness\": 0.8}` (in the "
     "environment: that JSON text)"},
    {"validation_fraction", &Config::validation_fraction, kData, 0, INT32_MAX, nullptr, nullptr,
     "between 0 and 1: the share of users whose examples are `metadata.split` = `validation` (by a hash of the user "
     "id: one user is never in both splits)"},
    {"split_objects", &Config::split_objects, kData, 0, INT32_MAX, nullptr, nullptr,
     "`train` and `validation` in objects of their own: `{prefix}/{split}/{domain}/...`"},
    {"write_manifests", &Config::write_manifests, kData, 0, INT32_MAX, nullptr, nullptr,
     "keep `health_journal_{yyyy}_{mm}.manifest.json` beside each monthly file: its lines, bytes and counts by record "
     "type, split, schema version and configuration ([docs/training-data.md](training-data.md#manifests))"},
    {"output_dir", &Config::output_dir, kWhere, 0, INT32_MAX, nullptr, nullptr,
     "where the files go (the embedded default). A relative path is resolved against the working directory once, at "
     "open; this, the spool and the dedup file are then used by their absolute, canonical path, so writers started in "
     "different directories that name one directory differently share its claims"},
    {"directory_fsync", &Config::directory_fsync, kWhere, 0, INT32_MAX, nullptr, nullptr,
     "fsync each append to a local file"},
    {"dedup_store", &Config::dedup_store, kDedup, 0, INT32_MAX, "sqlite|memory|redis|log",
     "`\"sqlite\"`, or `\"redis\"` when `redis_url` is set",
     "`sqlite` (persistent, shared by the processes of a machine), `redis` (shared by a fleet, "
     "[Redis](guide.md#redis-one-dedup-store-for-a-fleet)), `memory`, or `log` (persistent, shared by the "
     "processes of a machine: an append-only file with every key indexed in memory, about 100 bytes a key; a claim "
     "costs the same whatever the store holds; new in 0.4, not the default yet)"},
    {"dedup_db_path", &Config::dedup_db_path, kDedup, 0, INT32_MAX, nullptr,
     "`<output_dir>/.dedup.sqlite3` (`log`: `<output_dir>/.dedup-<hash of the destination>.log`)",
     "the SQLite file (or the `log` store's). The default file remembers the destination (bucket, or directory, and "
     "prefix) of its first "
     "writer; a writer for another destination in the same `output_dir` uses `.dedup-<hash>.sqlite3` beside it, so "
     "that content written to one is not a duplicate for the other. A path given here is shared as given"},
    {"dedup_namespace", &Config::dedup_namespace, kDedup, 0, INT32_MAX, nullptr, nullptr,
     "dedup keys are `{dedup_namespace}:{sha256 hex}`"},
    {"dedup_claim_ttl_seconds", &Config::dedup_claim_ttl_seconds, kDedup, 1, 10 * kYearSeconds, nullptr, nullptr,
     "Redis: a claim whose line never landed expires after this (SQLite: a claim lives while its owner's spool does)"},
    {"dedup_ttl_seconds", &Config::dedup_ttl_seconds, kDedup, 0, 100 * kYearSeconds, nullptr, nullptr,
     "how long written content is remembered; 0 = forever"},
    {"dedup_busy_timeout_ms", &Config::dedup_busy_timeout_ms, kDedup, 0, kHour, nullptr, nullptr,
     "SQLite: how long to wait for another process's lock"},
    {"dedup_pending_outcome", &Config::dedup_pending_outcome, kDedup, 0, INT32_MAX, nullptr, nullptr,
     "answer `TDO_PENDING` (4) instead of `TDO_DUPLICATE` when the content is held by a live writer that has not "
     "delivered it yet (see [Delivery](guide.md#delivery)); calls then wait for their own claim"},
    {"dedup_owner_ttl_seconds", &Config::dedup_owner_ttl_seconds, kDedup, 10, kDaySeconds, nullptr, nullptr,
     "Redis: how long a writer's spool stays alive without a refresh (refreshed every sixth of it); then another "
     "writer may take over its claims (at least 10)"},
    {"redis_url", &Config::redis_url, kRedis, 0, INT32_MAX, nullptr, nullptr,
     "`redis://[[user]:password@]host[:port][/db]`, the same with `rediss://` for TLS, or "
     "`unix://[[user]:password@]/path/redis.sock[?db=N]`; the password is never logged"},
    {"redis_timeout_ms", &Config::redis_timeout_ms, kRedis, 1, 10 * kMinute, nullptr, nullptr,
     "Redis: the longest a call waits (for a connection, connecting, the command); then it fails open"},
    {"redis_pool_size", &Config::redis_pool_size, kRedis, 1, 1024, nullptr, nullptr,
     "Redis: connections per writer; more threads than this take turns"},
    {"redis_tls_ca_file", &Config::redis_tls_ca_file, kRedis, 0, INT32_MAX, nullptr, nullptr,
     "`rediss://`: PEM file of the CAs that sign the server's certificate; none: the system's default CAs ([Redis over "
     "TLS](guide.md#redis-over-tls))"},
    {"redis_tls_cert_file", &Config::redis_tls_cert_file, kRedis, 0, INT32_MAX, nullptr, nullptr,
     "`rediss://`: client certificate (PEM), with `redis_tls_key_file`"},
    {"redis_tls_key_file", &Config::redis_tls_key_file, kRedis, 0, INT32_MAX, nullptr, nullptr,
     "`rediss://`: the client certificate's private key (PEM, not encrypted); its path and contents are never logged"},
    {"redis_tls_server_name", &Config::redis_tls_server_name, kRedis, 0, INT32_MAX, nullptr, "the URL's host",
     "`rediss://`: the name (or IP address) the server's certificate must show, also sent as SNI"},
    {"redis_tls_verify", &Config::redis_tls_verify, kRedis, 0, INT32_MAX, nullptr, nullptr,
     "`rediss://`: `false` accepts any server certificate (tests only)"},
    {"log_level", LogLevelField{}, kLogs, 0, INT32_MAX, "debug|info|warning|error|off", nullptr,
     "stderr threshold: `debug`, `info`, `warning`, `error`, `off` (`warn` and `none` are read as `warning` and "
     "`off`)"},
    {"flush_max_bytes", &Config::flush_max_bytes, kBatching, 1, kGiB, nullptr, nullptr,
     "a key's pending bytes that trigger an append"},
    {"flush_interval_ms", &Config::flush_interval_ms, kBatching, 1, kHour, nullptr, nullptr,
     "the age of a key's oldest pending line that triggers an append"},
    {"flush_timeout_ms", &Config::flush_timeout_ms, kBatching, 1, kDay, nullptr, nullptr,
     "how long `tdo_writer_flush` and close wait"},
    {"spool_dir", &Config::spool_dir, kSpool, 0, INT32_MAX, nullptr, "`<output_dir>/.spool`",
     "the write-ahead spool, shared by the writers of one configuration on a machine"},
    {"spool_fsync", &Config::spool_fsync, kSpool, 0, INT32_MAX, "interval|always|never", nullptr,
     "`interval` (fsync about once a second), `always` (before the call returns; concurrent calls share one fsync), "
     "`never`"},
    {"spool_max_bytes", &Config::spool_max_bytes, kSpool, 1 << 16, 1024 * kGiB, nullptr, nullptr,
     "the most a writer's spool holds on disk (at least twice `max_line_bytes`)"},
    {"spool_full_policy", &Config::spool_full_policy, kSpool, 0, INT32_MAX, "block|reject", nullptr,
     "full spool: `block` (wait up to `spool_block_timeout_ms`, then `TDO_E_TIMEOUT`; `TDO_E_CLOSED` at once when the "
     "writer is closed meanwhile) or `reject` (`TDO_E_BACKPRESSURE` at once)"},
    {"spool_block_timeout_ms", &Config::spool_block_timeout_ms, kSpool, 0, kDay, nullptr, nullptr,
     "how long a call waits for room in a full spool"},
    {"s3_endpoint_url", &Config::s3_endpoint_url, kS3, 0, INT32_MAX, nullptr, nullptr,
     "S3 / MinIO endpoint (`https://s3.eu-west-1.amazonaws.com`, `http://minio:9000`); set = lines go to S3, no local "
     "training file"},
    {"s3_bucket_name", &Config::s3_bucket_name, kS3, 0, INT32_MAX, nullptr, nullptr,
     "the bucket (required with an endpoint)"},
    {"s3_region", &Config::s3_region, kS3, 0, INT32_MAX, nullptr, nullptr,
     "signing region; falls back to `AWS_REGION`"},
    {"s3_access_key", &Config::s3_access_key, kS3, 0, INT32_MAX, nullptr, nullptr, "falls back to `AWS_ACCESS_KEY_ID`"},
    {"s3_secret_key", &Config::s3_secret_key, kS3, 0, INT32_MAX, nullptr, nullptr,
     "falls back to `AWS_SECRET_ACCESS_KEY`; never logged"},
    {"s3_session_token", &Config::s3_session_token, kS3, 0, INT32_MAX, nullptr, nullptr,
     "temporary credentials; falls back to `AWS_SESSION_TOKEN`"},
    {"s3_addressing_style", &Config::s3_addressing_style, kS3, 0, INT32_MAX, "auto|path|virtual", nullptr,
     "`path`, `virtual`, or `auto` (virtual-hosted for `*.amazonaws.com`, path-style otherwise)"},
    {"s3_verify_tls", &Config::s3_verify_tls, kS3, 0, INT32_MAX, nullptr, nullptr,
     "verify the server's certificate (https)"},
    {"s3_ca_file", &Config::s3_ca_file, kS3, 0, INT32_MAX, nullptr, nullptr, "PEM CA bundle instead of the system's"},
    {"s3_connect_timeout_ms", &Config::s3_connect_timeout_ms, kS3, 1, 10 * kMinute, nullptr, nullptr,
     "TCP + TLS connect timeout"},
    {"s3_request_timeout_ms", &Config::s3_request_timeout_ms, kS3, 1, kDay, nullptr, nullptr,
     "whole-request timeout (a transfer below 1 KiB/s for 15 s also times out, except UploadPartCopy and "
     "CompleteMultipartUpload, during which the server works without sending)"},
    {"s3_max_attempts", &Config::s3_max_attempts, kS3, 1, 100, nullptr, nullptr,
     "attempts per request for what is worth retrying"},
    {"s3_retry_base_ms", &Config::s3_retry_base_ms, kS3, 1, 10 * kMinute, nullptr, nullptr,
     "backoff: full jitter, doubling from this ..."},
    {"s3_retry_max_ms", &Config::s3_retry_max_ms, kS3, 1, kHour, nullptr, nullptr, "... up to this"},
    {"s3_conditional_writes", &Config::s3_conditional_writes, kS3, 0, INT32_MAX, "auto|true|false", nullptr,
     "`auto` (probe the server once at open and log what it enforces), `true` (it enforces conditional PUT and "
     "CompleteMultipartUpload), `false` (no conditions: one writer per object only)"},
    {"s3_append_mode", &Config::s3_append_mode, kS3, 0, INT32_MAX, "auto|native|copy|lease|batches", nullptr,
     "`auto` (native appends where the probe finds them, else copy), `native` (RGW's append with position), `copy` "
     "(read or copy, then a conditional write; a lease where Complete ignores If-Match), `lease` (copy, always under a "
     "lease), `batches` (one object per batch, folded into the monthly file by compactions; S3 only)"},
    {"s3_convert_plain_objects", &Config::s3_convert_plain_objects, kS3, 0, INT32_MAX, nullptr, nullptr,
     "where appends are native (RGW): a plain monthly object (written by an older version, another tool, or `copy` "
     "mode) is converted once to an appendable one under the key's lease \u2014 copied aside, deleted, written again "
     "by appends \u2014 instead of being copied on every append; `false`: appended to by copy"},
    {"s3_compaction_interval_seconds", &Config::s3_compaction_interval_seconds, kS3, 0, 7 * kDaySeconds, nullptr,
     nullptr,
     "`batches`: how often a writer compacts the monthly files it wrote batch objects for (one compactor per file at a "
     "time); `0`: this writer never compacts"},
    {"s3_compaction_max_bytes", &Config::s3_compaction_max_bytes, kS3, 1 << 20, 4 * kGiB, nullptr, nullptr,
     "`batches`: batch objects read and appended per fold (a compaction folds in rounds of this size); at least 1 MiB"},
    {"s3_multipart_threshold", &Config::s3_multipart_threshold, kS3, 5 << 20, 5 * kGiB, nullptr, nullptr,
     "objects at least this large are appended with UploadPartCopy"},
    {"s3_lease_seconds", &Config::s3_lease_seconds, kS3, 5, kHour / kSecond, nullptr, nullptr,
     "on servers that ignore If-Match on CompleteMultipartUpload (or before the probe has decided): a lease whose ETag "
     "stays unchanged this long, by the taker's clock, is a dead holder's and is taken over"},
};
const std::size_t kKeyCount = sizeof(kKeys) / sizeof(kKeys[0]);

const char* type_name(const Key& key) {
    switch (key.target.index()) {
        case 0: return "bool";
        case 1: return "int";
        case 3:
        case 4: return "number";
        case 6: return "object";
        default: return "string";  // strings, and log_level
    }
}

std::vector<std::string> allowed_values(const Key& key) {
    std::vector<std::string> out;
    if (!key.allowed) return out;
    for (const char* p = key.allowed;;) {
        const char* end = std::strchr(p, '|');
        out.emplace_back(p, end ? static_cast<std::size_t>(end - p) : std::strlen(p));
        if (!end) return out;
        p = end + 1;
    }
}

bool allowed(const Key& key, const std::string& value) {
    if (!key.allowed) return true;
    const auto values = allowed_values(key);
    return std::find(values.begin(), values.end(), value) != values.end();
}

std::string env_name(const Key& key) {
    std::string name = "ETL_";
    for (const char* p = key.name; *p; ++p) {
        name.push_back(static_cast<char>(std::toupper(static_cast<unsigned char>(*p))));
    }
    return name;
}

}  // namespace training_output::config
