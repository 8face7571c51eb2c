// RapidJSON in one place: the flags every parse uses and small helpers.
#pragma once

#include <rapidjson/document.h>
#include <rapidjson/error/en.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <string>
#include <string_view>

#include "training_output/error.hpp"

namespace training_output::json {

// UTF-8 validated, no comments or trailing commas. Not kParseFullPrecisionFlag:
// RapidJSON 1.1.0's full-precision path calls clz(0) on inputs like "0e40"
// (found by fuzzing); the normal path is exact for numbers of up to 15
// significant digits with small exponents, which covers clinical figures.
constexpr unsigned kParseFlags = rapidjson::kParseValidateEncodingFlag;

// Parses `text` into `doc`; throws Error(code) "<what>: <reason> at offset N".
template <class Document>
[[noreturn]] void throw_parse_error(const Document& doc, const char* what, ErrorCode code = ErrorCode::InvalidJson) {
    throw Error(code, std::string(what) + " is not valid JSON: " + rapidjson::GetParseError_En(doc.GetParseError()) +
                          " at offset " + std::to_string(doc.GetErrorOffset()));
}

// The deepest nesting of arrays and objects the library parses or writes:
// deeper documents are refused before they are parsed (recursion over them
// would overflow a small thread stack).
constexpr unsigned kMaxDepth = 100;

// Throws Error(code) when `text` nests arrays and objects deeper than
// kMaxDepth (a linear scan that skips strings; it does not validate).
void check_depth(std::string_view text, const char* what, ErrorCode code);

template <class Document>
void parse(Document& doc, std::string_view text, const char* what, ErrorCode code = ErrorCode::InvalidJson) {
    check_depth(text, what, code);
    doc.template Parse<kParseFlags>(text.data(), text.size());
    if (doc.HasParseError()) throw_parse_error(doc, what, code);
}

inline const char* type_name(const rapidjson::Value& v) {
    switch (v.GetType()) {
        case rapidjson::kNullType: return "null";
        case rapidjson::kFalseType:
        case rapidjson::kTrueType: return "a boolean";
        case rapidjson::kObjectType: return "an object";
        case rapidjson::kArrayType: return "an array";
        case rapidjson::kStringType: return "a string";
        case rapidjson::kNumberType: return "a number";
    }
    return "unknown";
}

inline std::string_view view(const rapidjson::Value& v) { return {v.GetString(), v.GetStringLength()}; }

// A JSON string literal (with quotes) for `text`.
std::string quote(std::string_view text);

// Appends the JSON string literal for `text`, byte for byte what RapidJSON's
// Writer produces (\" \\ \b \f \n \r \t, \u00XX for other control
// characters, everything else as is), but copying runs that need no escape
// eight bytes at a time: the narrative is most of every line.
void append_quoted(std::string& out, std::string_view text);

}  // namespace training_output::json
