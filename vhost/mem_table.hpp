// The frontend's memory table on the backend side (SET_MEM_TABLE, ADD_MEM_REG, REM_MEM_REG):
// wire descriptions of regions turned into shm::RegionDesc, mapped, and assembled into
// MemoryMap snapshots. MemTable owns the snapshot in force and the reference counts of
// regions QEMU adds more than once; the session hands each new snapshot to the device.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>

#include "core/result.hpp"
#include "core/unique_fd.hpp"
#include "shm/memory_map.hpp"
#include "vhost/protocol.hpp"

namespace vhostd::vhost {

// The wire struct in host terms (shm knows nothing of the protocol that describes its regions).
inline shm::RegionDesc to_region_desc(const MemRegion& r) {
    return shm::RegionDesc{r.guest_phys_addr.get(), r.memory_size.get(), r.userspace_addr.get(), r.mmap_offset.get()};
}

class MemTable {
public:
    using MapPtr = std::shared_ptr<const shm::MemoryMap>;

    explicit MemTable(std::string log_name);

    // The snapshot in force (empty before the first table and after reset()).
    const MapPtr& map() const { return map_; }

    // Each change below returns the new snapshot, already in force here, for the caller to
    // give to the device; or nullptr when the change only moved a reference count and there is
    // nothing to apply. On error nothing changed.

    // SET_MEM_TABLE: replaces every region (one fd per region, same order).
    Result<MapPtr> set(std::span<const shm::RegionDesc> regions, std::span<const UniqueFd> fds);
    // ADD_MEM_REG: maps one more region, or counts a region that is already mapped.
    Result<MapPtr> add(const shm::RegionDesc& region, int fd);
    // REM_MEM_REG: drops one reference; unmaps the region (new snapshot) with the last one.
    Result<MapPtr> remove(const shm::RegionDesc& region);

    // Forgets every region (the mappings go when the last snapshot user lets go).
    void reset();

private:
    std::string name_;  // for logs: the device's name
    MapPtr map_;
    // gpa -> how many times the frontend added that region. QEMU (before 8.1) sends ADD/REM_MEM_REG
    // once per vhost device, and a multi-queue net device is one vhost device per queue pair on
    // the same socket: the same region arrives several times.
    std::map<uint64_t, uint32_t> refs_;
};

}  // namespace vhostd::vhost
