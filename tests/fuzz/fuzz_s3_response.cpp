// Fuzzes what the S3 client reads of an answer: header lines (ETag, dates,
// Content-Range, Content-Length, user metadata) and XML bodies (error
// documents, also inside a 200; ETags; upload ids). Input: header lines, an
// empty line, then the body.
#include <cstdint>
#include <cstdlib>
#include <map>
#include <string>
#include <string_view>

#include "s3/s3_response.hpp"
#include "s3/s3_xml.hpp"

using namespace training_output;

namespace {
void require(bool ok) {
    if (!ok) std::abort();
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view input(reinterpret_cast<const char*>(data), size);
    const auto split = input.find("\n\n");
    const std::string_view head = input.substr(0, split),
                           body = split == std::string_view::npos ? "" : input.substr(split + 2);

    std::map<std::string, std::string> headers;
    std::size_t start = 0;
    while (start < head.size()) {
        auto end = head.find('\n', start);
        if (end == std::string_view::npos) end = head.size();
        const std::string_view line = head.substr(start, end - start);
        const auto colon = line.find(':');
        if (colon != std::string_view::npos) {
            std::string name(line.substr(0, colon));
            for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
            std::string_view value = line.substr(colon + 1);
            while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
            headers[name] = std::string(value);
        }
        start = end + 1;
    }
    SinkResponse r;
    s3resp::read_object_headers(headers, r);
    require(r.etag.size() <= (headers.count("etag") ? headers["etag"].size() : 0));
    s3resp::parse_iso_time(std::string(body.substr(0, 64)));

    if (s3xml::is_error(body)) {
        S3ErrorInfo e = s3xml::parse_error(body);
        require(e.code.size() <= body.size() && e.message.size() <= body.size());
    }
    for (const char* tag : {"ETag", "UploadId", "Code", "ServerTime"}) {
        if (auto v = s3xml::element(body, tag)) require(v->size() <= body.size());
    }
    const std::string decoded = s3xml::decode_entities(body);
    require(decoded.size() <= body.size() + 2);  // U+FFFD for "&#0;" is the only growth, 3 bytes for 4
    require(s3xml::decode_entities(s3xml::escape(body)) == body);
    return 0;
}
