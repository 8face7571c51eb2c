// The library's version ("major.minor.patch"), as the C header states it
// (CMake reads it from there and hands it to the build).
#pragma once

namespace training_output {

const char* library_version() noexcept;

}  // namespace training_output
