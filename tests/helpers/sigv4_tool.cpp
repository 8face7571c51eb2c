// Signs requests read as JSON lines on stdin and prints, per line, what the
// signer made of them; tests/python/test_sigv4_botocore.py compares that
// with botocore. One request per line:
//
//   {"method": "PUT", "host": "127.0.0.1:7480", "path": "/bucket/a b",        (decoded)
//    "query": [["partNumber", "1"], ...], "headers": [["Content-Type", "..."], ...],
//    "payload": "body text" | "payload_sha256": "UNSIGNED-PAYLOAD",
//    "access_key_id": "...", "secret_access_key": "...", "session_token": "",
//    "region": "us-east-1", "service": "s3", "content_sha256_header": true,
//    "time": 1369353600}                                                        (seconds)
//
// Out: {"canonical_uri", "canonical_query", "canonical_request", "string_to_sign",
// "signature", "amz_date", "headers": [[name, value], ...]} or {"error": "..."}.
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <cstdint>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <tuple>

#include "s3/sigv4.hpp"
#include "training_output/error.hpp"

namespace sigv4 = training_output::sigv4;

namespace {

std::string get(const rapidjson::Value& v, const char* key, const char* fallback = "") {
    auto it = v.FindMember(key);
    if (it == v.MemberEnd() || it->value.IsNull()) return fallback;
    if (!it->value.IsString()) throw std::runtime_error(std::string(key) + " is not a string");
    return {it->value.GetString(), it->value.GetStringLength()};
}

std::vector<std::pair<std::string, std::string>> get_pairs(const rapidjson::Value& v, const char* key) {
    std::vector<std::pair<std::string, std::string>> out;
    auto it = v.FindMember(key);
    if (it == v.MemberEnd()) return out;
    if (!it->value.IsArray()) throw std::runtime_error(std::string(key) + " is not an array");
    for (const auto& p : it->value.GetArray()) {
        if (!p.IsArray() || p.Size() != 2 || !p[0].IsString() || !p[1].IsString()) {
            throw std::runtime_error(std::string(key) + " must hold [name, value] string pairs");
        }
        out.emplace_back(std::string(p[0].GetString(), p[0].GetStringLength()),
                         std::string(p[1].GetString(), p[1].GetStringLength()));
    }
    return out;
}

using Key = std::tuple<std::string, std::string, std::string, std::string, std::string, bool>;

// One signer per credentials and settings, kept across lines, so that the
// per-day key cache serves requests of several days as it would in a process.
const sigv4::Signer& signer_for(const rapidjson::Value& in) {
    static std::map<Key, std::unique_ptr<sigv4::Signer>> signers;
    auto it = in.FindMember("content_sha256_header");
    if (it != in.MemberEnd() && !it->value.IsBool()) throw std::runtime_error("content_sha256_header is not a boolean");
    const bool content_header = it == in.MemberEnd() || it->value.GetBool();
    Key key{get(in, "access_key_id"),       get(in, "secret_access_key"), get(in, "session_token"),
            get(in, "region", "us-east-1"), get(in, "service", "s3"),     content_header};
    auto& slot = signers[key];
    if (!slot) {
        sigv4::Options options;
        options.region = std::get<3>(key);
        options.service = std::get<4>(key);
        options.content_sha256_header = content_header;
        slot = std::make_unique<sigv4::Signer>(sigv4::Credentials{std::get<0>(key), std::get<1>(key), std::get<2>(key)},
                                               options);
    }
    return *slot;
}

void write_string(rapidjson::Writer<rapidjson::StringBuffer>& w, const std::string& s) {
    w.String(s.data(), static_cast<rapidjson::SizeType>(s.size()));
}

std::string sign_line(const std::string& text) {
    rapidjson::StringBuffer buffer;
    rapidjson::Writer<rapidjson::StringBuffer> w(buffer);
    w.StartObject();
    try {
        rapidjson::Document in;
        in.Parse<rapidjson::kParseValidateEncodingFlag>(text.data(), text.size());
        if (in.HasParseError() || !in.IsObject()) throw std::runtime_error("not a JSON object");
        sigv4::Request r;
        r.method = get(in, "method", "GET");
        r.host = get(in, "host");
        r.path = get(in, "path", "/");
        r.query = get_pairs(in, "query");
        r.headers = get_pairs(in, "headers");
        if (in.HasMember("payload_sha256")) {
            r.payload_sha256 = get(in, "payload_sha256");
        } else {
            r.payload_sha256 = sigv4::hex_sha256(get(in, "payload"));
        }
        if (!in.HasMember("time") || !in["time"].IsInt64()) throw std::runtime_error("time: seconds since the epoch");
        const std::int64_t time = in["time"].GetInt64();
        const sigv4::Signed s =
            signer_for(in).sign(r, std::chrono::system_clock::time_point(std::chrono::seconds(time)));
        w.Key("canonical_uri");
        write_string(w, s.canonical_uri);
        w.Key("canonical_query");
        write_string(w, s.canonical_query);
        w.Key("canonical_request");
        write_string(w, s.canonical_request);
        w.Key("string_to_sign");
        write_string(w, s.string_to_sign);
        w.Key("signature");
        write_string(w, s.signature);
        w.Key("amz_date");
        write_string(w, s.amz_date);
        w.Key("headers");
        w.StartArray();
        for (const auto& [name, value] : s.headers) {
            w.StartArray();
            write_string(w, name);
            write_string(w, value);
            w.EndArray();
        }
        w.EndArray();
    } catch (const std::exception& e) {
        // A fresh object: the writer may be mid-way through the other one.
        rapidjson::StringBuffer error_buffer;
        rapidjson::Writer<rapidjson::StringBuffer> ew(error_buffer);
        ew.StartObject();
        ew.Key("error");
        ew.String(e.what());
        ew.EndObject();
        return error_buffer.GetString();
    }
    w.EndObject();
    return buffer.GetString();
}

}  // namespace

int main() {
    std::ios::sync_with_stdio(false);
    std::string text;
    while (std::getline(std::cin, text)) {
        if (text.empty()) continue;
        std::cout << sign_line(text) << '\n';
    }
    std::cout.flush();
    return std::cout ? 0 : 1;
}
