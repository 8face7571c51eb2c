// TrainingDataFormatter: one JSONL line per example, keys in a fixed order.
#include <cmath>
#include <cstring>

#include "common/json.hpp"
#include "common/sha256.hpp"
#include "format/formatter.hpp"
#include "redact/redact.hpp"
#include "training_output/error.hpp"

namespace training_output {
namespace {

using Clock = std::chrono::system_clock;

// What a line is made of, borrowed from either front end (JSON or typed).
struct ExampleView {
    std::string_view narrative;  // trimmed
    std::string_view record_type;
    std::optional<std::string_view> user_id, correlation_id, bucket, key;
    std::string_view traceparent;  // valid, or empty
    std::optional<double> quality_score;
    std::optional<std::int64_t> record_count;
    std::optional<double> processing_time_seconds;
    const rapidjson::Value* clinical_insights = nullptr;  // nullptr = {}
    Clock::time_point timestamp;
};

std::uint64_t leading_u64(const std::uint8_t* p) {
    std::uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v = (v << 8) | p[i];
    return v;
}

Error input_error(const std::string& message) { return Error(ErrorCode::InvalidInput, message); }

void require_utf8(std::string_view text, const char* field) {
    if (!is_valid_utf8(text)) throw input_error(std::string(field) + " is not valid UTF-8");
}

// Parses the JSON `text` into `doc`. Text that is valid UTF-8 (checked here,
// in one pass) and holds no NUL is copied into `scratch` and parsed in place:
// RapidJSON then neither checks the encoding string by string nor copies each
// string. Anything else takes json::parse, so that errors read the same.
// The strings of `doc` point into `scratch`.
template <class Document>
void parse_json(Document& doc, std::string_view text, std::string& scratch, const char* what) {
    // Valid JSON, but nested deeper than the library parses or writes.
    json::check_depth(text, what, ErrorCode::InvalidInput);
    if (text.empty() || !is_valid_utf8(text) || std::memchr(text.data(), '\0', text.size()) != nullptr) {
        json::parse(doc, text, what);
        return;
    }
    // A thread keeps its copy's memory, unless an unusually large argument grew it.
    if (scratch.capacity() > (256u << 10) && text.size() < (256u << 10)) std::string().swap(scratch);
    scratch.assign(text.data(), text.size());
    scratch.push_back('\0');
    doc.template ParseInsitu<rapidjson::kParseInsituFlag>(&scratch[0]);
    if (doc.HasParseError()) json::throw_parse_error(doc, what);
}

std::string render(std::string_view tmpl, std::string_view record_type, std::optional<std::int64_t> count) {
    std::string out;
    out.reserve(tmpl.size() + 32);
    std::size_t i = 0;
    while (i < tmpl.size()) {
        if (tmpl[i] == '{') {
            auto rest = tmpl.substr(i);
            if (rest.rfind("{record_count}", 0) == 0) {
                out += count ? std::to_string(*count) : std::string("unknown");
                i += 14;
                continue;
            }
            if (rest.rfind("{record_type}", 0) == 0) {
                out += record_type;
                i += 13;
                continue;
            }
        }
        out.push_back(tmpl[i++]);
    }
    return out;
}

void put_optional(std::string& line, const std::optional<std::string_view>& s) {
    if (s)
        json::append_quoted(line, *s);
    else
        line += "null";
}

void put_optional(std::string& line, const std::optional<double>& d) {
    if (!d) {
        line += "null";
        return;
    }
    char buf[32];  // finite (checked by finish_view): what Writer::Double writes
    line.append(buf, static_cast<std::size_t>(rapidjson::internal::dtoa(*d, buf) - buf));
}

}  // namespace

Sha256 content_hash(std::string_view record_type, std::string_view input, std::string_view output) {
    thread_local crypto::Sha256Stream stream;
    thread_local std::string head;  // everything before the output's bytes: one update, not five
    auto put_size = [](std::string& out, std::uint64_t n) {
        for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>(n >> (8 * i)));
    };
    head.clear();
    put_size(head, record_type.size());
    head.append(record_type);
    put_size(head, input.size());
    head.append(input);
    put_size(head, output.size());
    stream.update(head);
    stream.update(output);
    return stream.finish();
}

std::string to_hex(const Sha256& hash) { return crypto::hex(hash.data(), hash.size()); }

struct PseudonymKey {
    explicit PseudonymKey(std::string_view key) : hmac(key) {}
    crypto::HmacSha256 hmac;
};

bool is_traceparent(std::string_view t) noexcept {
    if (t.size() != 55 || t[2] != '-' || t[35] != '-' || t[52] != '-') return false;
    auto hex = [&](std::size_t from, std::size_t to) {
        bool nonzero = false;
        for (std::size_t i = from; i < to; ++i) {
            const char c = t[i];
            if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return -1;
            nonzero = nonzero || c != '0';
        }
        return nonzero ? 1 : 0;
    };
    return hex(0, 2) >= 0 && t.substr(0, 2) != "ff" && hex(3, 35) == 1 && hex(36, 52) == 1 && hex(53, 55) >= 0;
}

const char* split_for(std::string_view id, double validation_fraction) {
    if (validation_fraction <= 0) return "train";
    if (validation_fraction >= 1) return "validation";
    thread_local crypto::Sha256Stream stream;
    stream.update("training_output split", 22);  // with its NUL
    stream.update(id);
    const crypto::Digest d = stream.finish();
    // The top 53 bits as a fraction in [0, 1).
    const double u = static_cast<double>(leading_u64(d.data()) >> 11) / 9007199254740992.0;
    return u < validation_fraction ? "validation" : "train";
}

TrainingDataFormatter::TrainingDataFormatter(FormatterOptions options, TemplateTable templates)
    : options_(std::move(options)), templates_(std::move(templates)) {
    if (options_.pseudonymize_ids) {
        if (options_.pseudonymization_key.size() < 16) {
            throw Error(ErrorCode::Config,
                        "configuration key \"pseudonymization_key\": required with "
                        "pseudonymize_ids, at least 16 bytes");
        }
        key_ = std::make_shared<const PseudonymKey>(options_.pseudonymization_key);
        key_id_ = options_.pseudonymization_key_id;
        if (key_id_.empty()) {
            // Names the key without revealing it: an HMAC of a fixed label.
            const crypto::Digest d = crypto::hmac_sha256(options_.pseudonymization_key, "training_output key id");
            key_id_ = "hmac-" + crypto::hex(d.data(), 4);
        }
    }
    if (!(options_.validation_fraction >= 0 && options_.validation_fraction <= 1)) {
        throw Error(ErrorCode::Config, "configuration key \"validation_fraction\": must be between 0 and 1");
    }
    // What shapes the lines, in one canonical text.
    rapidjson::StringBuffer buffer;
    rapidjson::Writer<rapidjson::StringBuffer> w(buffer);
    w.StartObject();
    w.Key("schema_version");
    w.Int(kSchemaVersion);
    w.Key("include_metadata");
    w.Bool(options_.include_metadata);
    w.Key("prefix");
    w.String(options_.prefix.c_str());
    w.Key("output_format");
    w.String(options_.format == OutputFormat::Chat ? "chat" : "alpaca");
    w.Key("redact_phi");
    w.Bool(options_.redact_phi);
    w.Key("pseudonymization_key_id");
    w.String(key_id_.c_str());
    w.Key("min_quality_score");
    if (options_.min_quality_score)
        w.Double(*options_.min_quality_score);
    else
        w.Null();
    w.Key("min_quality_score_by_domain");
    w.StartObject();
    for (const auto& [domain, score] : options_.min_quality_score_by_domain) {
        w.Key(domain.c_str());
        w.Double(score);
    }
    w.EndObject();
    w.Key("validation_fraction");
    w.Double(options_.validation_fraction);
    w.Key("split_objects");
    w.Bool(options_.split_objects);
    w.EndObject();
    const std::string canonical = std::string(buffer.GetString(), buffer.GetSize()) + templates_.canonical();
    const crypto::Digest d = crypto::sha256(canonical);
    fingerprint_ = crypto::hex(d.data(), 8);
}

std::string TrainingDataFormatter::pseudonym(std::string_view field, std::string_view value) const {
    if (!key_) throw Error(ErrorCode::Internal, "pseudonym() without pseudonymize_ids");
    const crypto::Digest d = key_->hmac.digest(field, std::string_view("\0", 1), value);
    return crypto::hex(d.data(), 16);
}

std::string TrainingDataFormatter::instruction_for(std::string_view record_type, std::size_t variant) const {
    const auto& phrasings = templates_.lookup(record_type).instructions;
    return render(phrasings[variant % phrasings.size()], record_type, std::nullopt);
}

std::string TrainingDataFormatter::input_for(std::string_view record_type,
                                             std::optional<std::int64_t> record_count) const {
    return render(templates_.lookup(record_type).input, record_type, record_count);
}

namespace {

// The input of one (record type, record count), JSON-quoted, and the quoted
// phrasings of its instruction. Processors write runs of one record type, so
// each thread keeps the last one it rendered, and uses it again only while
// the template it came from is the same.
struct RenderedHead {
    const Template* source = nullptr;
    std::vector<std::string> instructions_template;
    std::string input_template;
    std::string record_type;
    std::optional<std::int64_t> count;
    std::string input;                             // rendered
    std::vector<std::string> quoted_instructions;  // rendered, as JSON strings
    std::string quoted_input;
};

const RenderedHead& rendered_head(const TrainingDataFormatter& f, std::string_view record_type,
                                  std::optional<std::int64_t> count) {
    thread_local RenderedHead h;
    const Template& t = f.templates().lookup(record_type);
    if (h.record_type == record_type && h.count == count && h.instructions_template == t.instructions &&
        h.input_template == t.input && !h.quoted_input.empty()) {
        return h;
    }
    h.quoted_input.clear();  // not valid until complete
    h.instructions_template = t.instructions;
    h.input_template = t.input;
    h.record_type = std::string(record_type);
    h.count = count;
    h.input = render(t.input, record_type, count);
    h.quoted_instructions.clear();
    for (const auto& i : t.instructions) {
        std::string q;
        json::append_quoted(q, render(i, record_type, std::nullopt));
        h.quoted_instructions.push_back(std::move(q));
    }
    std::string q;
    json::append_quoted(q, h.input);
    h.quoted_input = std::move(q);
    return h;
}

// RapidJSON's Writer, with every string value redacted on its way out
// (member names are kept: they are the processor's schema, not the patient's).
class RedactingWriter : public rapidjson::Writer<rapidjson::StringBuffer> {
public:
    RedactingWriter(rapidjson::StringBuffer& out, RedactionCounts& counts) : Writer(out), counts_(counts) {}
    bool String(const char* s, rapidjson::SizeType n, bool copy = false) {
        (void)copy;
        scratch_.clear();
        const RedactionCounts c = redact_phi(std::string_view(s, n), scratch_);
        for (int i = 0; i < kPhiTypeCount; ++i) counts_.by_type[i] += c.by_type[i];
        return Writer::String(scratch_.data(), static_cast<rapidjson::SizeType>(scratch_.size()), true);
    }

private:
    RedactionCounts& counts_;
    std::string scratch_;
};

void put_int(std::string& line, std::int64_t v) {
    char buf[24];
    line.append(buf, static_cast<std::size_t>(rapidjson::internal::i64toa(v, buf) - buf));
}

// The threshold that applies to `domain`, if any.
std::optional<double> quality_threshold(const FormatterOptions& o, std::string_view domain) {
    auto it = o.min_quality_score_by_domain.find(domain);
    if (it != o.min_quality_score_by_domain.end()) return it->second;
    return o.min_quality_score;
}

TrainingExample build(const TrainingDataFormatter& f, const ExampleView& v) {
    const FormatterOptions& o = f.options();
    TrainingExample ex;
    ex.record_type = std::string(v.record_type);
    if (v.correlation_id) ex.correlation_id = std::string(*v.correlation_id);
    ex.traceparent = std::string(v.traceparent);
    if (v.narrative.empty()) {
        ex.skip_reason = "empty_narrative";
        return ex;
    }
    ex.health_domain = std::string(health_domain_for(v.record_type));
    if (auto threshold = quality_threshold(o, ex.health_domain)) {
        if (!v.quality_score) {
            ex.skip_reason = "no_quality_score";
            return ex;
        }
        if (*v.quality_score < *threshold) {
            ex.skip_reason = "low_quality";
            return ex;
        }
    }

    // Redaction fails closed: an example it could not run on is not written.
    RedactionCounts redacted;
    thread_local std::string redacted_narrative;
    thread_local rapidjson::StringBuffer insights;  // keeps its memory from line to line
    insights.Clear();
    std::string_view narrative = v.narrative;
    try {
        if (o.redact_phi) {
            redacted_narrative.clear();
            redacted = redact_phi(v.narrative, redacted_narrative);
            narrative = redacted_narrative;
        }
        if (o.include_metadata && v.clinical_insights) {
            bool ok;
            if (o.redact_phi) {
                RedactingWriter w(insights, redacted);
                ok = v.clinical_insights->Accept(w);
            } else {
                rapidjson::Writer<rapidjson::StringBuffer> w(insights);
                ok = v.clinical_insights->Accept(w);
            }
            if (!ok) throw input_error("result.clinical_insights cannot be written as JSON");
        }
    } catch (const Error&) {
        throw;
    } catch (const std::bad_alloc&) {
        throw;
    } catch (const std::exception&) {
        ex.skip_reason = "redaction_failed";
        return ex;
    }
    ex.redactions = redacted.total();

    const std::string user_pseudonym = o.pseudonymize_ids && v.user_id ? f.pseudonym("user_id", *v.user_id) : "";
    const RenderedHead& head = rendered_head(f, v.record_type, v.record_count);
    ex.content_hash = content_hash(v.record_type, head.input, narrative);
    const std::string hash_hex = to_hex(ex.content_hash);
    // The split follows the user (never the pseudonym: a new key must not
    // move a user to the other split); without a user, the content.
    ex.split = split_for(v.user_id ? *v.user_id : std::string_view(hash_hex), o.validation_fraction);
    const std::string prefix = o.split_objects ? (o.prefix.empty() ? ex.split : o.prefix + "/" + ex.split) : o.prefix;
    ex.object_key = object_key_for(prefix, ex.health_domain, v.timestamp);
    const std::size_t variant =
        static_cast<std::size_t>(leading_u64(ex.content_hash.data()) % head.quoted_instructions.size());
    const std::string& instruction = head.quoted_instructions[variant];

    // The text by hand (it is most of the line and needs only string
    // escaping), written as RapidJSON's Writer writes it (the same escaping,
    // dtoa and itoa); the clinical insights, any JSON value, through it.
    std::string& line = ex.line;
    line.reserve(instruction.size() + head.quoted_input.size() + narrative.size() + 1024);
    std::size_t head_end, output_end;
    if (o.format == OutputFormat::Chat) {
        line += "{\"messages\":[{\"role\":\"system\",\"content\":";
        line += instruction;
        line += "},{\"role\":\"user\",\"content\":";
        line += head.quoted_input;
        line += "},{\"role\":\"assistant\",\"content\":";
        head_end = line.size();
        json::append_quoted(line, narrative);
        output_end = line.size();
        line += "}]";
    } else {
        line += "{\"instruction\":";
        line += instruction;
        line += ",\"input\":";
        line += head.quoted_input;
        line += ",\"output\":";
        head_end = line.size();
        json::append_quoted(line, narrative);
        output_end = line.size();
    }
    if (o.include_metadata) {
        auto put_id = [&](const std::optional<std::string_view>& id, const char* field) {
            if (!id) {
                line += "null";
            } else if (o.pseudonymize_ids) {
                line.push_back('"');
                line += field == std::string_view("user_id") ? user_pseudonym : f.pseudonym(field, *id);
                line.push_back('"');
            } else {
                json::append_quoted(line, *id);
            }
        };
        line += ",\"metadata\":{\"schema_version\":";
        put_int(line, kSchemaVersion);
        line += ",\"record_type\":";
        json::append_quoted(line, v.record_type);
        line += ",\"health_domain\":";
        json::append_quoted(line, ex.health_domain);
        line += ",\"split\":\"";
        line += ex.split;
        line += "\",\"user_id\":";
        put_id(v.user_id, "user_id");
        line += ",\"correlation_id\":";
        put_id(v.correlation_id, "correlation_id");
        line += ",\"pseudonymization_key_id\":";
        json::append_quoted(line, f.key_id());
        line += ",\"processing_timestamp\":\"";
        line += format_iso8601(v.timestamp, true);
        line += "\",\"source_bucket\":";
        put_optional(line, v.bucket);
        line += ",\"source_key\":";
        put_id(v.key, "source_key");
        line += ",\"quality_score\":";
        put_optional(line, v.quality_score);
        line += ",\"record_count\":";
        if (v.record_count)
            put_int(line, *v.record_count);
        else
            line += "null";
        line += ",\"processing_duration_seconds\":";
        put_optional(line, v.processing_time_seconds);
        line += ",\"clinical_insights\":";
        json::append_quoted(line, v.clinical_insights ? std::string_view(insights.GetString(), insights.GetSize())
                                                      : std::string_view("{}"));
        line += ",\"instruction_variant\":";
        put_int(line, static_cast<std::int64_t>(variant));
        line += ",\"phi_redacted\":";
        line += o.redact_phi ? "true" : "false";
        line += ",\"redactions\":{";
        for (int i = 0; i < kPhiTypeCount; ++i) {
            if (i) line.push_back(',');
            line.push_back('"');
            line += phi_type_name(static_cast<PhiType>(i));
            line += "\":";
            put_int(line, redacted.by_type[static_cast<std::size_t>(i)]);
        }
        line += "},\"content_hash\":\"";
        line += hash_hex;
        line += "\",\"config_fingerprint\":\"";
        line += f.fingerprint();
        line += "\"}";
    }
    line += "}\n";
    // RapidJSON 1.1.0 accepts a lone low surrogate escape ("\\udc00") and
    // decodes it to bytes that are not UTF-8; no such line may leave here.
    // Everything but the narrative (already checked) is checked again.
    const std::string_view text(line);
    if (!is_valid_utf8(text.substr(0, head_end)) || !is_valid_utf8(text.substr(output_end))) {
        throw input_error(
            "message_data or result contains text that is not valid UTF-8 (a lone \\u surrogate escape?)");
    }
    return ex;
}

void check_finite(const std::optional<double>& d, const char* field) {
    if (d && !std::isfinite(*d)) throw input_error(std::string(field) + " must be a finite number");
}

void finish_view(ExampleView& v, std::string_view narrative) {
    require_utf8(narrative, "narrative");
    v.narrative = trim_whitespace(narrative);
    if (v.record_type.empty()) throw input_error("message_data.record_type must not be empty");
    check_finite(v.quality_score, "result.quality_score");
    check_finite(v.processing_time_seconds, "result.processing_time_seconds");
    if (v.record_count && *v.record_count < 0) throw input_error("result.record_count must not be negative");
}

// Field readers for the JSON front end.
std::optional<std::string_view> opt_string(const rapidjson::Value& obj, const char* name, const char* where) {
    auto it = obj.FindMember(name);
    if (it == obj.MemberEnd() || it->value.IsNull()) return std::nullopt;
    if (!it->value.IsString()) {
        throw input_error(std::string(where) + "." + name + " must be a string, got " + json::type_name(it->value));
    }
    if (!is_valid_utf8(json::view(it->value)))
        throw input_error(std::string(where) + "." + name + " is not valid UTF-8");
    return json::view(it->value);
}

std::optional<double> opt_number(const rapidjson::Value& obj, const char* name) {
    auto it = obj.FindMember(name);
    if (it == obj.MemberEnd() || it->value.IsNull()) return std::nullopt;
    if (!it->value.IsNumber()) {
        throw input_error(std::string("result.") + name + " must be a number, got " + json::type_name(it->value));
    }
    return it->value.GetDouble();
}

std::optional<std::int64_t> opt_count(const rapidjson::Value& obj, const char* name) {
    auto it = obj.FindMember(name);
    if (it == obj.MemberEnd() || it->value.IsNull()) return std::nullopt;
    const auto& v = it->value;
    if (v.IsInt64()) return v.GetInt64();
    if (v.IsUint64()) throw input_error(std::string("result.") + name + " is too large");
    if (v.IsDouble()) {
        double d = v.GetDouble();
        if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9.0e15) return static_cast<std::int64_t>(d);
    }
    throw input_error(std::string("result.") + name + " must be an integer, got " +
                      (v.IsNumber() ? std::string("a fraction") : std::string(json::type_name(v))));
}

}  // namespace

TrainingExample TrainingDataFormatter::format(std::string_view narrative, const MessageData& message,
                                              const ProcessingResult& result) const {
    ExampleView v;
    require_utf8(message.record_type, "message_data.record_type");
    v.record_type = message.record_type;
    auto opt = [](const std::optional<std::string>& s, const char* field) -> std::optional<std::string_view> {
        if (!s) return std::nullopt;
        require_utf8(*s, field);
        return std::string_view(*s);
    };
    v.user_id = opt(message.user_id, "message_data.user_id");
    v.correlation_id = opt(message.correlation_id, "message_data.correlation_id");
    v.bucket = opt(message.bucket, "message_data.bucket");
    v.key = opt(message.key, "message_data.key");
    if (message.traceparent && is_traceparent(*message.traceparent)) v.traceparent = *message.traceparent;
    v.quality_score = result.quality_score;
    v.record_count = result.record_count;
    v.processing_time_seconds = result.processing_time_seconds;
    rapidjson::Document insights;
    if (!result.clinical_insights_json.empty()) {
        json::parse(insights, result.clinical_insights_json, "result.clinical_insights", ErrorCode::InvalidInput);
        v.clinical_insights = &insights;
    }
    if (result.processing_timestamp) {
        require_utf8(*result.processing_timestamp, "result.processing_timestamp");
        v.timestamp = parse_iso8601(*result.processing_timestamp);
    } else {
        v.timestamp = Clock::now();
    }
    finish_view(v, narrative);
    return build(*this, v);
}

TrainingExample TrainingDataFormatter::format_json(std::string_view narrative, std::string_view message_data_json,
                                                   std::string_view result_json) const {
    // Small documents parse without touching the heap.
    char message_value_buf[4096], message_parse_buf[1024], result_value_buf[8192], result_parse_buf[2048];
    rapidjson::MemoryPoolAllocator<> mva(message_value_buf, sizeof message_value_buf);
    rapidjson::MemoryPoolAllocator<> mpa(message_parse_buf, sizeof message_parse_buf);
    rapidjson::MemoryPoolAllocator<> rva(result_value_buf, sizeof result_value_buf);
    rapidjson::MemoryPoolAllocator<> rpa(result_parse_buf, sizeof result_parse_buf);
    using PoolDocument = rapidjson::GenericDocument<rapidjson::UTF8<>, rapidjson::MemoryPoolAllocator<>,
                                                    rapidjson::MemoryPoolAllocator<>>;
    // The parse stack's first block must fit in its buffer beside the pool's
    // chunk header, or every call allocates a chunk of 64 KiB for it.
    constexpr std::size_t kHeader = 64;
    PoolDocument message(&mva, sizeof message_parse_buf - kHeader, &mpa);
    PoolDocument result(&rva, sizeof result_parse_buf - kHeader, &rpa);

    thread_local std::string message_text, result_text;
    parse_json(message, message_data_json, message_text, "message_data");
    if (!message.IsObject()) {
        throw input_error(std::string("message_data must be a JSON object, got ") + json::type_name(message));
    }
    parse_json(result, result_json, result_text, "result");
    if (!result.IsObject()) {
        throw input_error(std::string("result must be a JSON object, got ") + json::type_name(result));
    }

    ExampleView v;
    auto rt = message.FindMember("record_type");
    if (rt == message.MemberEnd() || rt->value.IsNull()) throw input_error("message_data.record_type is required");
    if (!rt->value.IsString()) {
        throw input_error(std::string("message_data.record_type must be a string, got ") + json::type_name(rt->value));
    }
    v.record_type = json::view(rt->value);
    require_utf8(v.record_type, "message_data.record_type");
    v.user_id = opt_string(message, "user_id", "message_data");
    v.correlation_id = opt_string(message, "correlation_id", "message_data");
    v.bucket = opt_string(message, "bucket", "message_data");
    v.key = opt_string(message, "key", "message_data");
    // A trace context that is not one is ignored, as W3C asks.
    auto tp = message.FindMember("traceparent");
    if (tp != message.MemberEnd() && tp->value.IsString() && is_traceparent(json::view(tp->value))) {
        v.traceparent = json::view(tp->value);
    }
    v.quality_score = opt_number(result, "quality_score");
    v.record_count = opt_count(result, "record_count");
    v.processing_time_seconds = opt_number(result, "processing_time_seconds");
    auto ci = result.FindMember("clinical_insights");
    if (ci != result.MemberEnd()) v.clinical_insights = &ci->value;
    auto ts = opt_string(result, "processing_timestamp", "result");
    v.timestamp = ts ? parse_iso8601(*ts) : Clock::now();
    finish_view(v, narrative);
    return build(*this, v);
}

std::string object_key_for(std::string_view prefix, std::string_view domain,
                           std::chrono::system_clock::time_point when) {
    const UtcParts p = utc_parts(when);
    std::string key;
    key.reserve(prefix.size() + domain.size() + 48);
    if (!prefix.empty()) {
        key.append(prefix);
        key.push_back('/');
    }
    key.append(domain);
    key.push_back('/');
    put_year_month(key, p, '/');
    key.append("/health_journal_");
    put_year_month(key, p, '_');
    key.append(".jsonl");
    return key;
}

}  // namespace training_output
