// Looking up a group by name (or number) for socket ownership (--rpc-group, socket-group=).
#pragma once

#include <sys/types.h>

#include <string>

#include "core/result.hpp"

namespace vhostd {

// "kvm" or "107": the group's id. An unknown name is an error.
Result<gid_t> lookup_group(const std::string& name);

// Gives the socket file we just bound at `path` its group (gid -1: unchanged) and mode, through
// a descriptor of the file itself (O_PATH | O_NOFOLLOW): if the path was swapped for a symlink or
// another file between bind() and here (a folder others may write to), nothing is followed and
// the call fails instead of changing what the path points at.
Status own_socket_file(const std::string& path, gid_t gid, mode_t mode);

}  // namespace vhostd
