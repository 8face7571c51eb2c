// Manifests: beside each monthly file M, "<stem>.manifest.json" describes a
// prefix of M: how many bytes and lines, and the lines' counts by record
// type, split, schema version and configuration fingerprint (all read from
// the lines themselves), with the library version that wrote it last and a
// version number that grows by one per update.
//
// A manifest may lag its file, never claim lines it does not have: it is
// only ever advanced by counting bytes that are in M (the batch a writer
// just landed, or a range read back from M), from where it ended to a line
// boundary, and written with If-Match on the ETag it was read with (or
// If-None-Match: * when there was none). A write that loses a race is
// read again; one that cannot be made leaves the manifest behind, for the
// next update to catch up. Without conditional writes at the store, a late
// write may set it back, never ahead. M only ever grows by appends: every
// prefix of it stays what it was.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>

#include "log/logger.hpp"
#include "training_output/sys/s3_sink.hpp"

namespace training_output {

struct ManifestCounts {
    std::uint64_t lines = 0;
    std::uint64_t bytes = 0;
    using Counts = std::map<std::string, std::uint64_t, std::less<>>;
    Counts record_types, splits, schema_versions, config_fingerprints;

    // Counts the complete lines of `text` (what follows the last '\n' is not
    // counted); returns the bytes counted.
    std::uint64_t add_lines(std::string_view text);
};

struct Manifest {
    std::int64_t version = 0;  // 0: none yet
    std::string library_version;
    std::string updated_at;
    ManifestCounts counts;

    std::string to_json(const std::string& object_key) const;
    // Throws Error(Storage) for a document that is not a manifest.
    static Manifest from_json(std::string_view text);
};

struct ManifestOptions {
    std::string library_version;
    std::uint64_t catch_up_max_bytes = 64u << 20;  // read back from M per update, at most
    std::uint64_t read_chunk_bytes = 8u << 20;
    int max_attempts = 8;         // writes lost to other writers before giving up (the manifest lags)
    ObjectAttributes attributes;  // content type is set to application/json
};

class Manifests {
public:
    Manifests(S3Sink& sink, ManifestOptions options, const Logger* logger = nullptr);

    // "<stem>.manifest.json" for "<stem>.jsonl".
    static std::string key_for(const std::string& object_key);

    // Brings the manifest of `object_key` up to `end` at least: `batch`
    // holds M's bytes [end - batch.size(), end) (counted without reading
    // them back; may be empty), anything before them it does not cover yet
    // is read from M. Returns the version of the manifest that covers `end`,
    // or -1 when it could not be brought there now (it lags). Never throws
    // for the store's failures (they are logged).
    std::int64_t advance(const std::string& object_key, std::uint64_t end, std::string_view batch);

    // The manifest as stored (version 0 when there is none).
    Manifest read(const std::string& object_key);

private:
    S3Sink& sink_;
    ManifestOptions options_;
    const Logger* logger_;
};

}  // namespace training_output
