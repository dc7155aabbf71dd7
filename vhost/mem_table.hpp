// The frontend's memory table on the backend side: wire descriptions of regions turned into
// shm::RegionDesc, mapped, and assembled into MemoryMap snapshots.
#pragma once

#include "shm/memory_map.hpp"
#include "vhost/protocol.hpp"

namespace vhostd::vhost {

// The wire struct in host terms (shm knows nothing of the protocol that describes its regions).
inline shm::RegionDesc to_region_desc(const MemRegion& r) {
    return shm::RegionDesc{r.guest_phys_addr, r.memory_size, r.userspace_addr, r.mmap_offset};
}

}  // namespace vhostd::vhost
