// Crash points (see crash_point.hpp).
#include "common/crash_point.hpp"

#ifdef TDO_CRASH_POINTS
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>

namespace training_output {
namespace {

struct Target {
    std::string name;  // empty: no crash point armed
    long nth = 1;
    std::atomic<long> passes{0};

    Target() {
        const char* spec = std::getenv("TDO_CRASH_AT");
        if (!spec || !*spec) return;
        name = spec;
        const auto colon = name.find(':');
        if (colon != std::string::npos) {
            nth = std::max(1L, std::strtol(name.c_str() + colon + 1, nullptr, 10));
            name.resize(colon);
        }
    }
};

Target& target() {
    static Target t;
    return t;
}

struct Faults {
    std::mutex mutex;
    std::map<std::string, int> armed;
    std::atomic<bool> any{false};
};

Faults& faults() {
    static Faults f;
    return f;
}

}  // namespace

void arm_fault(const std::string& name, int count) {
    Faults& f = faults();
    std::lock_guard<std::mutex> lock(f.mutex);
    if (count > 0) {
        f.armed[name] = count;
    } else {
        f.armed.erase(name);
    }
    f.any = !f.armed.empty();
}

bool fault_point(const char* name) noexcept {
    Faults& f = faults();
    if (!f.any.load(std::memory_order_relaxed)) return false;
    std::lock_guard<std::mutex> lock(f.mutex);
    auto it = f.armed.find(name);
    if (it == f.armed.end()) return false;
    if (--it->second == 0) f.armed.erase(it);
    f.any = !f.armed.empty();
    return true;
}

void crash_point(const char* name) noexcept {
    Target& t = target();
    if (t.name.empty() || std::strcmp(t.name.c_str(), name) != 0) return;
    if (t.passes.fetch_add(1) + 1 == t.nth) ::kill(::getpid(), SIGKILL);
}

}  // namespace training_output
#endif
