#include "core/unix_group.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

#include "core/unique_fd.hpp"

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

namespace vhostd {

Status own_socket_file(const std::string& path, gid_t gid, mode_t mode) {
    UniqueFd f(::open(path.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
    if (!f) return sys_error("open '{}'", path);
    struct stat st {};
    if (::fstat(f.get(), &st) != 0) return sys_error("stat '{}'", path);
    if (!S_ISSOCK(st.st_mode) || st.st_uid != ::geteuid()) {
        return make_error(Errc::kInvalid, "'{}' is no longer the socket just made (replaced by another file or a link)", path);
    }
    if (gid != static_cast<gid_t>(-1) && ::fchownat(f.get(), "", static_cast<uid_t>(-1), gid, AT_EMPTY_PATH) != 0) {
        return sys_error("chgrp {} '{}'", gid, path);
    }
    // An O_PATH descriptor takes no fchmod(); its /proc link names the very file.
    const std::string self = fmt::format("/proc/self/fd/{}", f.get());
    if (::chmod(self.c_str(), mode) == 0) return ok_status();
    if (errno != ENOENT) return sys_error("chmod {:04o} '{}'", mode, path);
    // No /proc: the path itself, checked once more just before.
    struct stat again {};
    if (::lstat(path.c_str(), &again) != 0 || again.st_ino != st.st_ino || again.st_dev != st.st_dev) {
        return make_error(Errc::kInvalid, "'{}' changed while its mode was set", path);
    }
    if (::chmod(path.c_str(), mode) != 0) return sys_error("chmod {:04o} '{}'", mode, path);
    return ok_status();
}

}  // namespace vhostd
