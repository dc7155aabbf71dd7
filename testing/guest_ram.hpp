// Guest RAM as a test or benchmark frontend shares it with vhostd: memfd-backed regions, each
// mapped in this process, with a bump allocator for rings and buffers. The model of memory that
// QEMU's memory-backend-memfd gives a real guest.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "core/result.hpp"
#include "core/unique_fd.hpp"
#include "vhost/protocol.hpp"

namespace vhostd::testing {

struct RegionSpec {
    uint64_t gpa = 0;
    uint64_t size = 0;
    // Offset of the region inside its memfd (QEMU's mmap_offset). The memfd is sized
    // mmap_offset + size and mapped whole; the region starts mmap_offset bytes in.
    uint64_t mmap_offset = 0;
};

// Guest RAM: memfd-backed regions (MFD_ALLOW_SEALING, sealed F_SEAL_SHRINK|F_SEAL_GROW like
// QEMU's memory-backend-memfd), each mapped MAP_SHARED in this process. The host virtual
// address of a region doubles as the "userspace_addr" a frontend reports (as QEMU does).
class GuestRam {
public:
    class Region {
    public:
        Region(Region&& o) noexcept;
        Region& operator=(Region&& o) noexcept;
        Region(const Region&) = delete;
        Region& operator=(const Region&) = delete;
        ~Region();

        uint64_t gpa() const { return gpa_; }
        uint64_t size() const { return size_; }
        uint64_t mmap_offset() const { return mmap_offset_; }
        int fd() const { return fd_.get(); }
        uint8_t* host() const { return host_; }
        uint64_t uva() const { return reinterpret_cast<uint64_t>(host_); }
        // The region as SET_MEM_TABLE / ADD_MEM_REG describe it.
        vhost::MemRegion desc() const { return {gpa_, size_, uva(), mmap_offset_}; }

    private:
        friend class GuestRam;
        Region() = default;
        uint64_t gpa_ = 0;
        uint64_t size_ = 0;
        uint64_t mmap_offset_ = 0;
        UniqueFd fd_;
        void* map_base_ = nullptr;
        size_t map_len_ = 0;
        uint8_t* host_ = nullptr;
        uint64_t next_free_ = 0;  // bump-allocator offset inside the region
    };

    // Regions must not overlap in gpa and must have size > 0 (page-multiple sizes recommended).
    static Result<std::unique_ptr<GuestRam>> create(std::vector<RegionSpec> specs);

    GuestRam(const GuestRam&) = delete;
    GuestRam& operator=(const GuestRam&) = delete;
    ~GuestRam() = default;

    // Adds a region later (for ADD_MEM_REG tests). Returns its index in regions().
    // Note: invalidates previously obtained regions() spans (host pointers stay valid).
    Result<size_t> add_region(RegionSpec spec);
    // Unmaps and closes region `index` (for REM_MEM_REG tests). Host pointers into it dangle.
    Status remove_region(size_t index);

    std::span<const Region> regions() const { return regions_; }
    const Region* find_region(uint64_t gpa) const;

    // Host pointer for [gpa, gpa+len) if wholly inside one region, else nullptr.
    uint8_t* host(uint64_t gpa, uint64_t len) const;
    // Frontend virtual address ("userspace_addr" space) of gpa; 0 if gpa is unmapped.
    uint64_t uva_of(uint64_t gpa) const;

    // Bump allocator: returns a gpa of `size` bytes aligned to `align` (power of two), inside
    // one region (never crossing a region boundary), first fit in region order. Memory is
    // zeroed. Never freed.
    Result<uint64_t> alloc(uint64_t size, uint64_t align);
    // Same, but only from region `index`.
    Result<uint64_t> alloc_in(size_t index, uint64_t size, uint64_t align);
    // Bytes not yet handed out by the allocator in region `index` (0 if no such region).
    uint64_t available(size_t index) const;

private:
    GuestRam() = default;
    static Result<Region> make_region(const RegionSpec& spec);
    static std::optional<uint64_t> bump(Region& r, uint64_t size, uint64_t align);
    std::vector<Region> regions_;
};

}  // namespace vhostd::testing
