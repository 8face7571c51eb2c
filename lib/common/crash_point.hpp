// Named crash points for the tests: in a build with TDO_CRASH_POINTS (the
// test builds), a process started with TDO_CRASH_AT=<name>[:<n>] kills itself
// with SIGKILL the n-th time (default: the first) it passes the point named
// <name>, so that a test can stop a writer at an exact step of the write and
// delivery path. Without TDO_CRASH_POINTS every point compiles to nothing.
#pragma once

namespace training_output {

#ifdef TDO_CRASH_POINTS
void crash_point(const char* name) noexcept;
#else
inline void crash_point(const char*) noexcept {}
#endif

}  // namespace training_output
