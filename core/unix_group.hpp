// Looking up a group by name (or number) for socket ownership (--rpc-group, socket-group=).
#pragma once

#include <sys/types.h>

#include <string>

#include "core/result.hpp"

namespace vhostd {

// "kvm" or "107": the group's id. An unknown name is an error.
Result<gid_t> lookup_group(const std::string& name);

}  // namespace vhostd
