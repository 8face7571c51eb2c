// The parts of S3's answers that the library reads outside their XML
// (s3_xml.hpp): ETags, dates and the object headers of HEAD and GET.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "training_output/sys/s3_sink.hpp"

namespace training_output::s3resp {

// "\"abc\"" and W/"abc" -> abc; anything else as it is.
std::string unquote_etag(std::string etag);

// "Wed, 25 Nov 2026 12:11:58 GMT" -> unix seconds; 0 when it does not parse.
std::int64_t parse_http_date(const std::string& text);

// "2013-05-24T00:00:00.000Z" (S3's ServerTime) -> unix seconds; 0 when it does not parse.
std::int64_t parse_iso_time(const std::string& text);

// ETag, Last-Modified, the object's size (from Content-Range "bytes a-b/size",
// else Content-Length) and x-amz-meta-* of a HEAD or GET answer; `headers`
// names lower-cased. A size that does not parse is 0.
// Also appendable (x-rgw-object-type: Appendable).
void read_object_headers(const std::map<std::string, std::string>& headers, SinkResponse& r);

// x-rgw-next-append-position of an append's answer; none when absent or not a number.
std::optional<std::uint64_t> next_append_position(const std::map<std::string, std::string>& headers);

}  // namespace training_output::s3resp
