// Guest memory as the frontend shares it: regions mapped from the fds of SET_MEM_TABLE /
// ADD_MEM_REG, and an immutable snapshot (MemoryMap) that translates guest-physical and
// frontend-virtual addresses. A new table makes a new snapshot; users hold a
// shared_ptr<const MemoryMap> so a mapping lives until the last user lets go.
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "core/result.hpp"
#include "core/unique_fd.hpp"

namespace vhostd::shm {

// Where a region lives: in guest-physical space, in the frontend's virtual address space, and
// in the fd it is mapped from. Plain values in host byte order; the vhost layer converts its
// wire struct into this, so guest memory does not depend on the protocol that describes it.
struct RegionDesc {
    uint64_t guest_phys_addr = 0;
    uint64_t memory_size = 0;
    uint64_t userspace_addr = 0;
    uint64_t mmap_offset = 0;

    friend bool operator==(const RegionDesc&, const RegionDesc&) = default;
};

// One mapped region (RAII: unmapped in the destructor).
class Region {
public:
    // Maps `fd` for the region described by `desc`; validates sizes, offsets and overflow.
    static Result<std::shared_ptr<const Region>> map(const RegionDesc& desc, int fd);
    ~Region();
    Region(const Region&) = delete;
    Region& operator=(const Region&) = delete;

    uint64_t gpa() const { return desc_.guest_phys_addr; }
    uint64_t size() const { return desc_.memory_size; }
    uint64_t uva() const { return desc_.userspace_addr; }
    uint8_t* host() const { return host_; }
    const RegionDesc& desc() const { return desc_; }

private:
    Region() = default;
    RegionDesc desc_{};
    void* map_base_ = nullptr;
    size_t map_len_ = 0;
    uint8_t* host_ = nullptr;
};

class MemoryMap {
public:
    // Builds a snapshot; fails if regions overlap (in GPA or frontend VA space).
    static Result<std::shared_ptr<const MemoryMap>> build(std::vector<std::shared_ptr<const Region>> regions);
    static std::shared_ptr<const MemoryMap> empty();

    // Host pointer for [gpa, gpa+len) if it lies wholly inside one region, else nullptr.
    uint8_t* gpa_to_host(uint64_t gpa, uint64_t len) const;
    // Host pointer for a frontend virtual address range inside one region, else nullptr.
    uint8_t* uva_to_host(uint64_t uva, uint64_t len) const;

    // Guest-physical address of [host, host+len) if it lies wholly inside one region's mapping
    // (a pointer this map handed out), else nullopt. Linear in the region count: for the
    // migration log, not for the per-request path.
    std::optional<uint64_t> host_to_gpa(const void* host, uint64_t len) const;
    // Appends iovecs covering [gpa, gpa+len) to out[*used...]; a range crossing region
    // boundaries yields several iovecs. Fails with kOutOfRange if any byte is unmapped, kBusy
    // if `out` has no room. len 0 appends nothing.
    Status gpa_to_iovecs(uint64_t gpa, uint64_t len, std::span<iovec> out, size_t* used) const;

    // Copies guest bytes, which may span regions, into dst. Fails unless all are mapped.
    Status read(uint64_t gpa, std::span<uint8_t> dst) const;

    std::span<const std::shared_ptr<const Region>> regions() const { return regions_; }
    size_t region_count() const { return regions_.size(); }

private:
    // The data path's view of a region: what a lookup needs, contiguous (no pointer chasing).
    struct Span {
        uint64_t gpa;
        uint64_t size;
        uint8_t* host;
    };
    const Span* find(uint64_t gpa) const;
    std::vector<std::shared_ptr<const Region>> regions_;  // sorted by gpa
    std::vector<Span> spans_;                             // same order
};

}  // namespace vhostd::shm
