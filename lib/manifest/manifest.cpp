// Manifests beside the monthly files (see manifest.hpp).
#include "manifest/manifest.hpp"

#include <algorithm>

#include "common/json.hpp"
#include "common/object_key.hpp"
#include "common/time.hpp"
#include "training_output/error.hpp"

namespace training_output {
namespace {

constexpr const char* kFormat = "training_output.manifest/1";
constexpr std::size_t kMaxDistinct = 1000;  // values per count; more are counted as "(other)"

void bump(std::map<std::string, std::uint64_t>& counts, std::string_view value, std::uint64_t n = 1) {
    auto it = counts.find(std::string(value));
    if (it != counts.end()) {
        it->second += n;
    } else if (counts.size() < kMaxDistinct) {
        counts.emplace(std::string(value), n);
    } else {
        counts["(other)"] += n;
    }
}

std::string_view string_member(const rapidjson::Value& obj, const char* name, std::string_view otherwise) {
    auto it = obj.FindMember(name);
    if (it == obj.MemberEnd() || !it->value.IsString()) return otherwise;
    return json::view(it->value);
}

// One line's metadata: the object after the first "metadata": key. No
// string of a line holds an unescaped quote, so the first match is the line's
// own key, whatever the text says.
void count_line(ManifestCounts& c, std::string_view line) {
    constexpr std::string_view kKey = "\"metadata\":{";
    const std::size_t at = line.find(kKey);
    rapidjson::Document doc;
    if (at != std::string_view::npos) {
        const std::string_view rest = line.substr(at + kKey.size() - 1);
        // Iterative: a line of an older schema may nest its insights deeply.
        doc.Parse<rapidjson::kParseStopWhenDoneFlag | rapidjson::kParseIterativeFlag>(rest.data(), rest.size());
    }
    if (at == std::string_view::npos || doc.HasParseError() || !doc.IsObject()) {
        bump(c.record_types, "unknown");
        bump(c.splits, "unknown");
        bump(c.schema_versions, "unknown");
        bump(c.config_fingerprints, "unknown");
        return;
    }
    bump(c.record_types, string_member(doc, "record_type", "unknown"));
    bump(c.splits, string_member(doc, "split", "unknown"));
    auto v = doc.FindMember("schema_version");
    bump(c.schema_versions, v != doc.MemberEnd() && v->value.IsInt() ? std::to_string(v->value.GetInt()) : "1");
    bump(c.config_fingerprints, string_member(doc, "config_fingerprint", "unknown"));
}

void write_counts(rapidjson::Writer<rapidjson::StringBuffer>& w, const char* name,
                  const std::map<std::string, std::uint64_t>& counts) {
    w.Key(name);
    w.StartObject();
    for (const auto& [k, n] : counts) {
        w.Key(k.data(), static_cast<rapidjson::SizeType>(k.size()));
        w.Uint64(n);
    }
    w.EndObject();
}

Error bad_manifest(const std::string& why) { return Error(ErrorCode::Storage, "manifest: " + why); }

std::uint64_t uint_of(const rapidjson::Value& doc, const char* name) {
    auto it = doc.FindMember(name);
    if (it == doc.MemberEnd() || !it->value.IsUint64()) throw bad_manifest(std::string("\"") + name + "\" is missing");
    return it->value.GetUint64();
}

void read_counts(const rapidjson::Value& doc, const char* name, std::map<std::string, std::uint64_t>& out) {
    auto it = doc.FindMember(name);
    if (it == doc.MemberEnd() || !it->value.IsObject()) throw bad_manifest(std::string("\"") + name + "\" is missing");
    for (auto& m : it->value.GetObject()) {
        if (!m.value.IsUint64()) throw bad_manifest(std::string("\"") + name + "\" holds a count that is not one");
        out[std::string(json::view(m.name))] = m.value.GetUint64();
    }
}

}  // namespace

std::uint64_t ManifestCounts::add_lines(std::string_view text) {
    std::uint64_t counted = 0;
    while (counted < text.size()) {
        const std::size_t nl = text.find('\n', counted);
        if (nl == std::string_view::npos) break;
        count_line(*this, text.substr(counted, nl - counted));
        lines += 1;
        counted = nl + 1;
    }
    bytes += counted;
    return counted;
}

std::string Manifest::to_json(const std::string& object_key) const {
    rapidjson::StringBuffer buffer;
    rapidjson::Writer<rapidjson::StringBuffer> w(buffer);
    w.StartObject();
    w.Key("format");
    w.String(kFormat);
    w.Key("object");
    w.String(object_key.data(), static_cast<rapidjson::SizeType>(object_key.size()));
    w.Key("version");
    w.Int64(version);
    w.Key("lines");
    w.Uint64(counts.lines);
    w.Key("bytes");
    w.Uint64(counts.bytes);
    write_counts(w, "record_types", counts.record_types);
    write_counts(w, "splits", counts.splits);
    write_counts(w, "schema_versions", counts.schema_versions);
    write_counts(w, "config_fingerprints", counts.config_fingerprints);
    w.Key("library_version");
    w.String(library_version.c_str());
    w.Key("updated_at");
    w.String(updated_at.c_str());
    w.EndObject();
    return std::string(buffer.GetString(), buffer.GetSize());
}

Manifest Manifest::from_json(std::string_view text) {
    rapidjson::Document doc;
    json::parse(doc, text, "manifest", ErrorCode::Storage);
    if (!doc.IsObject() || string_member(doc, "format", "") != kFormat) throw bad_manifest("not a manifest");
    Manifest m;
    auto v = doc.FindMember("version");
    if (v == doc.MemberEnd() || !v->value.IsInt64() || v->value.GetInt64() < 1) throw bad_manifest("bad \"version\"");
    m.version = v->value.GetInt64();
    m.counts.lines = uint_of(doc, "lines");
    m.counts.bytes = uint_of(doc, "bytes");
    read_counts(doc, "record_types", m.counts.record_types);
    read_counts(doc, "splits", m.counts.splits);
    read_counts(doc, "schema_versions", m.counts.schema_versions);
    read_counts(doc, "config_fingerprints", m.counts.config_fingerprints);
    m.library_version = std::string(string_member(doc, "library_version", ""));
    m.updated_at = std::string(string_member(doc, "updated_at", ""));
    return m;
}

Manifests::Manifests(S3Sink& sink, ManifestOptions options, const Logger* logger)
    : sink_(sink), options_(std::move(options)), logger_(logger) {
    options_.attributes.content_type = "application/json";
}

std::string Manifests::key_for(const std::string& object_key) { return object_stem(object_key) + ".manifest.json"; }

Manifest Manifests::read(const std::string& object_key) {
    SinkResponse r = sink_.get(key_for(object_key));
    if (r.status == SinkStatus::NotFound) return Manifest{};
    if (!r.ok()) throw Error(ErrorCode::Storage, "manifest of " + object_key + ": " + r.describe());
    return Manifest::from_json(r.body);
}

std::int64_t Manifests::advance(const std::string& object_key, std::uint64_t end, std::string_view batch) {
    const std::string key = key_for(object_key);
    const std::uint64_t batch_start = end - std::min<std::uint64_t>(batch.size(), end);
    auto lag = [&](const std::string& why) -> std::int64_t {
        if (logger_) {
            logger_->log(LogLevel::Warning, "training_output_manifest_lags",
                         {{"object_key", object_key}, {"error", why}});
        }
        return -1;
    };
    for (int attempt = 0; attempt < options_.max_attempts; ++attempt) {
        SinkResponse r = sink_.get(key);
        Manifest m;
        std::string etag;
        if (r.ok()) {
            etag = r.etag;
            try {
                m = Manifest::from_json(r.body);
            } catch (const Error& e) {
                // Counted again from the start of M (replacing exactly what was read).
                if (logger_) {
                    logger_->log(LogLevel::Warning, "training_output_manifest_replaced",
                                 {{"object_key", object_key}, {"error", e.what()}});
                }
                m = Manifest{};
            }
        } else if (r.status != SinkStatus::NotFound) {
            return lag(r.describe());
        }
        if (m.counts.bytes >= end) return m.version;
        const std::uint64_t before = m.counts.bytes;
        // What lies before the batch: read back from M, a bounded amount.
        std::uint64_t budget = options_.catch_up_max_bytes;
        while (m.counts.bytes < batch_start && budget > 0) {
            const std::uint64_t first = m.counts.bytes;
            const std::uint64_t want = std::min({batch_start - first, options_.read_chunk_bytes, budget});
            SinkResponse g = sink_.get(object_key, ByteRange{first, first + want - 1});
            if (!g.ok() || g.body.size() != want) {
                return lag("reading " + std::to_string(want) + " bytes at " + std::to_string(first) + ": " +
                           (g.ok() ? "a short answer" : g.describe()));
            }
            budget -= want;
            if (m.counts.add_lines(g.body) == 0) break;  // a line longer than a chunk: later
        }
        if (m.counts.bytes >= batch_start && m.counts.bytes < end) {
            // Lines of M end where the batch's do: the rest of it is counted as it is.
            m.counts.add_lines(batch.substr(static_cast<std::size_t>(m.counts.bytes - batch_start)));
        }
        if (m.counts.bytes == before) return lag("nothing could be counted");
        m.version += 1;
        m.library_version = options_.library_version;
        m.updated_at = format_iso8601(std::chrono::system_clock::now(), true);
        WriteConditions c;
        if (sink_.capabilities().conditional_writes) {
            if (etag.empty())
                c.if_none_match_any = true;
            else
                c.if_match = etag;
        }
        SinkResponse w = sink_.put(key, m.to_json(object_key), options_.attributes, c);
        if (w.ok()) {
            if (m.counts.bytes >= end) return m.version;
            continue;  // more to read back first
        }
        if (w.status == SinkStatus::PreconditionFailed || w.status == SinkStatus::Conflict) continue;
        return lag(w.describe());
    }
    return lag("other writers kept updating it");
}

}  // namespace training_output
