// The few pieces of S3's XML this library reads: error documents (also when
// they arrive inside a 200), upload ids and ETags. S3's responses are flat and
// machine-written, so a tag scanner with entity decoding is enough.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "training_output/sys/s3_sink.hpp"

namespace training_output::s3xml {

// Text of the first <tag>...</tag> (entities decoded); nullopt when absent.
std::optional<std::string> element(std::string_view xml, std::string_view tag);

// The document is an <Error> (at top level, after an optional XML declaration).
bool is_error(std::string_view xml);

// Code, Message, RequestId of an <Error> document.
S3ErrorInfo parse_error(std::string_view xml);

// &quot; &amp; &lt; &gt; &apos; &#NN; &#xNN; decoded; anything else kept as is.
std::string decode_entities(std::string_view text);

// A ListObjects result: its <Contents> (Key, Size, ETag) and, when
// <IsTruncated> is true, where the next page starts: the page's last key
// (version 1: the marker; <NextMarker> where given). False when the document
// is not one (a truncated page would pass for the last one otherwise).
bool parse_list(std::string_view xml, ListPage& page);

// The keys of the <Error> entries of a DeleteObjects result (<DeleteResult>).
// False when the document is not one.
bool parse_delete_result(std::string_view xml, std::vector<std::string>& failed);

// XML-escapes text for a request body.
std::string escape(std::string_view text);

}  // namespace training_output::s3xml
