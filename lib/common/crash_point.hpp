// Named crash and fault points for the tests. In a build with
// TDO_CRASH_POINTS (the test builds):
//   - a process started with TDO_CRASH_AT=<name>[:<n>] kills itself with
//     SIGKILL the n-th time (default: the first) it passes crash_point(<name>),
//     so that a test can stop a writer at an exact step of the write and
//     delivery path;
//   - fault_point(<name>) reports true for the next passes a test armed with
//     arm_fault(), so that the code takes its failure path (a failed fsync).
// Without TDO_CRASH_POINTS every point compiles to nothing.
#pragma once

#include <string>

namespace training_output {

#ifdef TDO_CRASH_POINTS
void crash_point(const char* name) noexcept;
bool fault_point(const char* name) noexcept;
// The next `count` passes of fault point `name` fail (0 disarms it).
void arm_fault(const std::string& name, int count);
#else
inline void crash_point(const char*) noexcept {}
inline bool fault_point(const char*) noexcept { return false; }
#endif

}  // namespace training_output
