#include "core/log.hpp"

namespace vhostd {

bool set_log_level(const std::string& level) {
    auto lvl = spdlog::level::from_str(level);
    if (lvl == spdlog::level::off && level != "off") return false;
    spdlog::set_level(lvl);
    return true;
}

}  // namespace vhostd
