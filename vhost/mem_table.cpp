#include "vhost/mem_table.hpp"

#include <vector>

#include "core/log.hpp"

namespace vhostd::vhost {

MemTable::MemTable(std::string log_name) : name_(std::move(log_name)), map_(shm::MemoryMap::empty()) {}

void MemTable::reset() {
    map_ = shm::MemoryMap::empty();
    refs_.clear();
}

Result<MemTable::MapPtr> MemTable::set(std::span<const shm::RegionDesc> regions, std::span<const UniqueFd> fds) {
    if (fds.size() != regions.size())
        return make_error(Errc::kInvalid, "memory table of {} regions with {} fds", regions.size(), fds.size());
    std::vector<std::shared_ptr<const shm::Region>> mapped;
    for (size_t i = 0; i < regions.size(); ++i) {
        VHOSTD_ASSIGN_OR_RETURN(auto region, shm::Region::map(regions[i], fds[i].get()));
        mapped.push_back(std::move(region));
    }
    VHOSTD_ASSIGN_OR_RETURN(auto map, shm::MemoryMap::build(std::move(mapped)));
    VLOG_INFO("{}: memory table with {} regions", name_, regions.size());
    refs_.clear();
    for (const auto& reg : map->regions()) refs_[reg->desc().guest_phys_addr] = 1;
    map_ = map;
    return map;
}

Result<MemTable::MapPtr> MemTable::add(const shm::RegionDesc& r, int fd) {
    // An identical region is counted, not mapped again; remove() unmaps it when the last
    // reference goes.
    for (const auto& reg : map_->regions()) {
        if (reg->desc() == r) {
            uint32_t& n = refs_[r.guest_phys_addr];
            ++n;
            VLOG_DEBUG("{}: memory region gpa={:#x} added again ({} references)", name_, r.guest_phys_addr, n);
            return MapPtr();
        }
    }
    if (map_->region_count() >= kMaxMemSlots) return make_error(Errc::kOutOfRange, "all memory slots in use");
    VHOSTD_ASSIGN_OR_RETURN(auto region, shm::Region::map(r, fd));
    std::vector<std::shared_ptr<const shm::Region>> regions(map_->regions().begin(), map_->regions().end());
    regions.push_back(std::move(region));
    VHOSTD_ASSIGN_OR_RETURN(auto map, shm::MemoryMap::build(std::move(regions)));
    VLOG_INFO("{}: added memory region gpa={:#x} size={:#x}", name_, r.guest_phys_addr, r.memory_size);
    refs_[r.guest_phys_addr] = 1;
    map_ = map;
    return map;
}

Result<MemTable::MapPtr> MemTable::remove(const shm::RegionDesc& r) {
    // Matched on gpa, size and frontend address: the offset into the fd is not the frontend's
    // to repeat (and it may send no fd at all).
    std::vector<std::shared_ptr<const shm::Region>> regions;
    bool found = false;
    for (const auto& reg : map_->regions()) {
        const auto& d = reg->desc();
        if (!found && d.guest_phys_addr == r.guest_phys_addr && d.memory_size == r.memory_size &&
            d.userspace_addr == r.userspace_addr) {
            found = true;
            continue;
        }
        regions.push_back(reg);
    }
    if (!found)
        return make_error(Errc::kInvalid, "REM_MEM_REG: no region at gpa {:#x} size {:#x}", r.guest_phys_addr,
                          r.memory_size);
    if (auto it = refs_.find(r.guest_phys_addr); it != refs_.end() && it->second > 1) {
        --it->second;  // another vhost device of this frontend still uses it
        return MapPtr();
    }
    refs_.erase(r.guest_phys_addr);
    VHOSTD_ASSIGN_OR_RETURN(auto map, shm::MemoryMap::build(std::move(regions)));
    VLOG_INFO("{}: removed memory region gpa={:#x} size={:#x}", name_, r.guest_phys_addr, r.memory_size);
    map_ = map;
    return map;
}

}  // namespace vhostd::vhost
