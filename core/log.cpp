#include "core/log.hpp"

#include <time.h>

namespace vhostd {

bool set_log_level(const std::string& level) {
    auto lvl = spdlog::level::from_str(level);
    if (lvl == spdlog::level::off && level != "off") return false;
    spdlog::set_level(lvl);
    return true;
}

LogRateLimit::Verdict LogRateLimit::allow() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return allow(static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(ts.tv_nsec));
}

}  // namespace vhostd
