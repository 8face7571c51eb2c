// Manifests beside the monthly files (see manifest.hpp).
#include "manifest/manifest.hpp"

#include <algorithm>
#include <cstring>
#include <utility>

#include "common/json.hpp"
#include "common/object_key.hpp"
#include "common/time.hpp"
#include "training_output/error.hpp"

namespace training_output {
namespace {

constexpr const char* kFormat = "training_output.manifest/1";
constexpr std::size_t kMaxDistinct = 1000;  // values per count; more are counted as "(other)"

void bump(ManifestCounts::Counts& counts, std::string_view value, std::uint64_t n = 1) {
    auto it = counts.find(value);
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

// The members of a line's metadata object that a manifest counts, read
// without building a document: only keys at the top of the object count.
class MetadataFields : public rapidjson::BaseReaderHandler<rapidjson::UTF8<>, MetadataFields> {
public:
    enum class Field { None, RecordType, Split, Schema, Fingerprint };
    std::string_view record_type = "unknown", split = "unknown", fingerprint = "unknown";
    std::string schema = "1";

    static Field field_of(std::string_view key) {
        return key == "record_type"          ? Field::RecordType
               : key == "split"              ? Field::Split
               : key == "schema_version"     ? Field::Schema
               : key == "config_fingerprint" ? Field::Fingerprint
                                             : Field::None;
    }
    // The field the key names, once: None for a key of no field, or one seen
    // before (the first of a key that comes twice counts, as a document's
    // FindMember would).
    Field first(std::string_view key) {
        const Field f = field_of(key);
        if (f == Field::None || (seen_ & bit(f))) return Field::None;
        seen_ |= bit(f);
        return f;
    }
    // A string field's value (`v` must outlive the counting).
    void set(Field f, std::string_view v) {
        if (f == Field::RecordType) record_type = v;
        if (f == Field::Split) split = v;
        if (f == Field::Fingerprint) fingerprint = v;
    }

    bool StartObject() { return open(); }
    bool EndObject(rapidjson::SizeType) { return close(); }
    bool StartArray() { return open(); }
    bool EndArray(rapidjson::SizeType) { return close(); }
    bool Key(const char* s, rapidjson::SizeType n, bool) {
        pending_ = depth_ == 1 ? first(std::string_view(s, n)) : Field::None;
        return true;
    }
    bool String(const char* s, rapidjson::SizeType n, bool) {
        const Field f = take();
        if (f != Field::None && f != Field::Schema) set(f, keep(std::string_view(s, n), static_cast<int>(f)));
        return true;
    }
    bool Int(int i) {
        if (take() == Field::Schema) schema = std::to_string(i);
        return true;
    }
    bool Default() {
        take();
        return true;
    }

private:
    static unsigned bit(Field f) { return 1u << static_cast<unsigned>(f); }
    Field take() { return std::exchange(pending_, Field::None); }
    bool open() {
        take();
        ++depth_;
        return true;
    }
    bool close() {
        --depth_;
        return true;
    }
    // Strings the reader hands over live only during the call: copied.
    std::string_view keep(std::string_view v, int i) {
        copies_[i].assign(v.data(), v.size());
        return copies_[i];
    }
    int depth_ = 0;
    unsigned seen_ = 0;
    Field pending_ = Field::None;
    std::string copies_[5];  // by Field
};

// The end of the JSON string whose opening quote is at `at` (the index of
// its closing quote), or npos; `escaped`: it holds a backslash.
std::size_t string_end(std::string_view s, std::size_t at, bool& escaped) {
    escaped = false;
    for (std::size_t i = at + 1; i < s.size();) {
        const void* q = std::memchr(s.data() + i, '"', s.size() - i);
        if (!q) return std::string_view::npos;
        const std::size_t end = static_cast<std::size_t>(static_cast<const char*>(q) - s.data());
        std::size_t slashes = 0;
        while (end - slashes > at + 1 && s[end - slashes - 1] == '\\') ++slashes;
        if (slashes > 0) escaped = true;
        if (slashes % 2 == 0) return end;
        i = end + 1;
    }
    return std::string_view::npos;
}

// The four fields, read from the metadata object `obj` the way this library
// writes it (every string escaped, no space between tokens), walking only its
// top level: a string is skipped to its closing quote, an object or array to
// its matching bracket. False for anything else (a string with an escape in a
// counted field, a space, a line that ends early): the reader decides then.
// It is there for speed: 0.65 µs for a 1.3 KB line, where the reader (which
// decodes every string of the line) takes 2.5 µs, on the flusher's thread.
bool fast_metadata(std::string_view obj, MetadataFields& m) {
    using Field = MetadataFields::Field;
    if (obj.empty() || obj[0] != '{') return false;
    std::size_t i = 1;
    while (i < obj.size()) {
        if (obj[i] == '}') return true;
        if (obj[i] != '"') return false;
        bool escaped = false;
        const std::size_t key_end = string_end(obj, i, escaped);
        if (key_end == std::string_view::npos || escaped || key_end + 1 >= obj.size() || obj[key_end + 1] != ':') {
            return false;
        }
        const std::string_view key = obj.substr(i + 1, key_end - i - 1);
        i = key_end + 2;
        if (i >= obj.size()) return false;
        const Field field = m.first(key);
        const char c = obj[i];
        std::size_t value_end;  // one past the value
        if (c == '"') {
            const std::size_t e = string_end(obj, i, escaped);
            if (e == std::string_view::npos) return false;
            if (field != Field::None && field != Field::Schema) {
                if (escaped) return false;
                m.set(field, obj.substr(i + 1, e - i - 1));
            }
            value_end = e + 1;
        } else if (c == '{' || c == '[') {
            int depth = 0;
            std::size_t j = i;
            for (; j < obj.size(); ++j) {
                const char d = obj[j];
                if (d == '"') {
                    j = string_end(obj, j, escaped);
                    if (j == std::string_view::npos) return false;
                } else if (d == '{' || d == '[') {
                    ++depth;
                } else if (d == '}' || d == ']') {
                    if (--depth == 0) break;
                }
            }
            if (j >= obj.size()) return false;
            value_end = j + 1;
        } else {
            std::size_t j = i;
            while (j < obj.size() && obj[j] != ',' && obj[j] != '}') ++j;
            if (j >= obj.size()) return false;
            const std::string_view v = obj.substr(i, j - i);
            if (field == Field::Schema) {  // (a string field that is not a string stays "unknown")
                bool digits = !v.empty() && v.size() < 10;
                for (std::size_t k = v[0] == '-' ? 1 : 0; digits && k < v.size(); ++k)
                    digits = v[k] >= '0' && v[k] <= '9';
                if (digits && v != "-") m.schema = std::string(v);
            }
            value_end = j;
        }
        i = value_end;
        if (i < obj.size() && obj[i] == ',') ++i;
    }
    return false;
}

// One line's metadata: the object after the first "metadata": key. No
// string of a line holds an unescaped quote, so the first match is the line's
// own key, whatever the text says.
void count_line(ManifestCounts& c, std::string_view line) {
    constexpr std::string_view kKey = "\"metadata\":{";
    const std::size_t at = line.find(kKey);
    MetadataFields m;
    bool ok = false;
    if (at != std::string_view::npos && fast_metadata(line.substr(at + kKey.size() - 1), m)) {
        ok = true;
    } else if (at != std::string_view::npos) {
        m = MetadataFields();
        const std::string_view rest = line.substr(at + kKey.size() - 1);
        rapidjson::MemoryStream in(rest.data(), rest.size());
        rapidjson::Reader reader;
        // Iterative: a line of an older schema may nest its insights deeply.
        ok = !reader.Parse<rapidjson::kParseStopWhenDoneFlag | rapidjson::kParseIterativeFlag>(in, m).IsError() &&
             rest.front() == '{';
    }
    if (!ok) {
        bump(c.record_types, "unknown");
        bump(c.splits, "unknown");
        bump(c.schema_versions, "unknown");
        bump(c.config_fingerprints, "unknown");
        return;
    }
    bump(c.record_types, m.record_type);
    bump(c.splits, m.split);
    bump(c.schema_versions, m.schema);
    bump(c.config_fingerprints, m.fingerprint);
}

void write_counts(rapidjson::Writer<rapidjson::StringBuffer>& w, const char* name,
                  const ManifestCounts::Counts& counts) {
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

void read_counts(const rapidjson::Value& doc, const char* name, ManifestCounts::Counts& out) {
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
