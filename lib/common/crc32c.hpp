// CRC-32C (Castagnoli), the checksum of spool records: the SSE4.2 instruction
// where the CPU has it, a table otherwise.
#pragma once

#include <cstdint>
#include <string_view>

namespace training_output::crc32c {

std::uint32_t compute(std::string_view data, std::uint32_t crc = 0);
// The same a byte at a time, from the table alone (tests compare the two).
std::uint32_t compute_bytewise(std::string_view data, std::uint32_t crc = 0);

}  // namespace training_output::crc32c
