#include "common/version.hpp"

#ifndef TDO_LIBRARY_VERSION
#error "TDO_LIBRARY_VERSION is set by the build (CMakeLists.txt) from include/training_output.h"
#endif

namespace training_output {

const char* library_version() noexcept { return TDO_LIBRARY_VERSION; }

}  // namespace training_output
