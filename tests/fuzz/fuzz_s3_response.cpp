// Fuzzes what the S3 client reads of an answer: header lines (ETag, dates,
// Content-Range, Content-Length, user metadata) and XML bodies (error
// documents, also inside a 200; ETags; upload ids), and what it makes of the
// answer (s3::classify), for an operation and an HTTP status picked by the
// input's first bytes. Input: header lines, an empty line, then the body.
#include <cstdint>
#include <cstdlib>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "s3/classify.hpp"
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
    // What the answer means, whatever it holds: Ok only for a 2xx without an
    // error document, with an ETag for HEAD and GET, and exactly the bytes a
    // ranged GET asked for.
    static const int kStatuses[] = {0, 200, 204, 206, 301, 400, 403, 404, 405, 409, 412, 429, 500, 501, 503};
    const std::uint8_t pick0 = size > 0 ? data[0] : 0, pick1 = size > 1 ? data[1] : 0;
    http::Response resp;
    resp.status = kStatuses[pick0 % (sizeof kStatuses / sizeof kStatuses[0])];
    resp.curl_code = resp.status == 0 ? (pick1 & 1 ? 60 : 7) : 0;
    resp.headers = headers;
    resp.body = std::string(body);
    const auto op = static_cast<s3::Op>(pick1 % s3::kOps);
    std::optional<ByteRange> range;
    if (pick0 & 0x80) range = ByteRange{pick1, static_cast<std::uint64_t>(pick1) + body.size() % 7};
    const SinkResponse c = s3::classify(op, resp, range, 1'800'000'000);
    require(c.http_status == resp.status);
    if (c.ok()) {
        require(resp.status >= 200 && resp.status < 300 && !s3xml::is_error(body));
        if (op == s3::Op::Head || op == s3::Op::Get) require(!resp.header("etag").empty());
        if (op == s3::Op::Get && range) require(resp.status == 206 && body.size() == range->last - range->first + 1);
    }
    if (resp.status == 0) require(c.status == SinkStatus::Transient || c.status == SinkStatus::Fatal);
    if (resp.status >= 500) require(c.status == SinkStatus::Transient || c.status == SinkStatus::NotImplemented);
    (void)c.describe();

    const std::string decoded = s3xml::decode_entities(body);
    require(decoded.size() <= body.size() + 2);  // U+FFFD for "&#0;" is the only growth, 3 bytes for 4
    require(s3xml::decode_entities(s3xml::escape(body)) == body);
    return 0;
}
