#include "core/unix_group.hpp"

#include <grp.h>

#include <charconv>
#include <vector>

namespace vhostd {

Result<gid_t> lookup_group(const std::string& name) {
    if (name.empty()) return make_error(Errc::kInvalid, "empty group name");
    unsigned long num = 0;
    auto [p, ec] = std::from_chars(name.data(), name.data() + name.size(), num);
    if (ec == std::errc() && p == name.data() + name.size()) {
        if (num >= static_cast<unsigned long>(static_cast<gid_t>(-1)))
            return make_error(Errc::kInvalid, "group id {} out of range", name);
        return static_cast<gid_t>(num);
    }
    std::vector<char> buf(16384);
    group g{};
    group* found = nullptr;
    int rc = getgrnam_r(name.c_str(), &g, buf.data(), buf.size(), &found);
    if (rc != 0) return sys_error_code(rc, "looking up group '{}'", name);
    if (found == nullptr) return make_error(Errc::kInvalid, "no group '{}'", name);
    return g.gr_gid;
}

}  // namespace vhostd
