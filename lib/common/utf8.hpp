// UTF-8: validation, repair, cutting and trimming.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace training_output {

// True when `text` is valid UTF-8.
bool is_valid_utf8(std::string_view text) noexcept;
// `text` with every byte that is not part of valid UTF-8 replaced by U+FFFD.
std::string to_valid_utf8(std::string_view text);
// At most `max_bytes` of `text`, never ending inside a UTF-8 sequence.
std::string_view utf8_prefix(std::string_view text, std::size_t max_bytes) noexcept;
// `text` without leading and trailing whitespace (ASCII and Unicode spaces).
std::string_view trim_whitespace(std::string_view text) noexcept;

}  // namespace training_output
