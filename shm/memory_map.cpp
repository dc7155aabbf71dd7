#include "shm/memory_map.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "core/checked.hpp"
#include "core/log.hpp"

namespace vhostd::shm {

Result<std::shared_ptr<const Region>> Region::map(const RegionDesc& d, int fd) {
    if (fd < 0) return make_error(Errc::kInvalid, "memory region without fd");
    if (d.memory_size == 0) return make_error(Errc::kInvalid, "memory region of size 0");
    if (!checked_add(d.guest_phys_addr, d.memory_size - 1))
        return make_error(Errc::kOutOfRange, "region gpa {:#x}+{:#x} overflows", d.guest_phys_addr, d.memory_size);
    if (!checked_add(d.userspace_addr, d.memory_size - 1))
        return make_error(Errc::kOutOfRange, "region uva {:#x}+{:#x} overflows", d.userspace_addr, d.memory_size);
    auto end_off = checked_add(d.mmap_offset, d.memory_size);
    if (!end_off) return make_error(Errc::kOutOfRange, "region mmap_offset {:#x}+size overflows", d.mmap_offset);
    if (*end_off > static_cast<uint64_t>(INT64_MAX))
        return make_error(Errc::kOutOfRange, "region offset {:#x} too large", *end_off);

    struct stat st {};
    if (fstat(fd, &st) != 0) return sys_error("fstat on memory region fd");
    // Mapping past the end of a file would SIGBUS on first touch: refuse it up front.
    if (S_ISREG(st.st_mode) && static_cast<uint64_t>(st.st_size) < *end_off)
        return make_error(Errc::kOutOfRange, "region offset+size {:#x} beyond fd size {:#x}", *end_off,
                          static_cast<uint64_t>(st.st_size));
    // A frontend that can shrink the file after we mapped it could SIGBUS us. QEMU seals its
    // memfds; warn when the fd is not sealed against shrinking.
    int seals = fcntl(fd, F_GET_SEALS);
    if (seals < 0 || !(seals & F_SEAL_SHRINK))
        VLOG_DEBUG("memory region fd is not sealed against shrinking (F_SEAL_SHRINK)");

    // Map from an offset aligned to the page (or hugepage: st_blksize) size.
    uint64_t align = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
    if (st.st_blksize > 0 && is_pow2(static_cast<uint64_t>(st.st_blksize)) &&
        static_cast<uint64_t>(st.st_blksize) > align)
        align = static_cast<uint64_t>(st.st_blksize);
    uint64_t aligned_off = d.mmap_offset & ~(align - 1);
    uint64_t lead = d.mmap_offset - aligned_off;
    auto map_len = checked_add(d.memory_size, lead);
    if (!map_len || *map_len > SIZE_MAX) return make_error(Errc::kOutOfRange, "region too large");

    void* p = mmap(nullptr, *map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd,
                   static_cast<off_t>(aligned_off));
    if (p == MAP_FAILED) return sys_error("mmap guest region gpa={:#x} size={:#x}", d.guest_phys_addr, d.memory_size);
    auto r = std::shared_ptr<Region>(new Region());
    r->desc_ = d;
    r->map_base_ = p;
    r->map_len_ = *map_len;
    r->host_ = static_cast<uint8_t*>(p) + lead;
    return std::shared_ptr<const Region>(std::move(r));
}

Region::~Region() {
    if (map_base_ != nullptr) munmap(map_base_, map_len_);
}

std::shared_ptr<const MemoryMap> MemoryMap::empty() {
    static const auto e = std::make_shared<const MemoryMap>();
    return e;
}

Result<std::shared_ptr<const MemoryMap>> MemoryMap::build(std::vector<std::shared_ptr<const Region>> regions) {
    std::sort(regions.begin(), regions.end(), [](const auto& a, const auto& b) { return a->gpa() < b->gpa(); });
    for (size_t i = 1; i < regions.size(); ++i) {
        // Sorted and each [gpa, gpa+size) checked for overflow at map time.
        if (regions[i]->gpa() - regions[i - 1]->gpa() < regions[i - 1]->size())
            return make_error(Errc::kInvalid, "memory regions overlap at gpa {:#x}", regions[i]->gpa());
    }
    // Frontend VA ranges must not overlap either, or VA translation would be ambiguous.
    std::vector<const Region*> by_uva;
    for (auto& r : regions) by_uva.push_back(r.get());
    std::sort(by_uva.begin(), by_uva.end(), [](auto* a, auto* b) { return a->uva() < b->uva(); });
    for (size_t i = 1; i < by_uva.size(); ++i) {
        if (by_uva[i]->uva() - by_uva[i - 1]->uva() < by_uva[i - 1]->size())
            return make_error(Errc::kInvalid, "memory regions overlap at uva {:#x}", by_uva[i]->uva());
    }
    auto m = std::make_shared<MemoryMap>();
    m->regions_ = std::move(regions);
    m->spans_.reserve(m->regions_.size());
    for (const auto& r : m->regions_) m->spans_.push_back(Span{r->gpa(), r->size(), r->host()});
    return std::shared_ptr<const MemoryMap>(std::move(m));
}

const MemoryMap::Span* MemoryMap::find(uint64_t gpa) const {
    // Last region with start <= gpa.
    auto it = std::upper_bound(spans_.begin(), spans_.end(), gpa, [](uint64_t a, const Span& r) { return a < r.gpa; });
    if (it == spans_.begin()) return nullptr;
    const Span* r = &*--it;
    return (gpa - r->gpa < r->size) ? r : nullptr;
}

uint8_t* MemoryMap::gpa_to_host(uint64_t gpa, uint64_t len) const {
    const Span* r = find(gpa);
    if (r == nullptr || !range_within(gpa, len, r->gpa, r->size)) return nullptr;
    return r->host + (gpa - r->gpa);
}

std::optional<uint64_t> MemoryMap::host_to_gpa(const void* host, uint64_t len) const {
    const auto p = reinterpret_cast<uintptr_t>(host);
    for (const Span& s : spans_) {
        const auto base = reinterpret_cast<uintptr_t>(s.host);
        if (p >= base && p - base < s.size && len <= s.size - (p - base)) return s.gpa + (p - base);
    }
    return std::nullopt;
}

uint8_t* MemoryMap::uva_to_host(uint64_t uva, uint64_t len) const {
    for (const auto& r : regions_) {
        if (range_within(uva, len, r->uva(), r->size()) && uva - r->uva() < r->size())
            return r->host() + (uva - r->uva());
    }
    return nullptr;
}

Status MemoryMap::gpa_to_iovecs(uint64_t gpa, uint64_t len, std::span<iovec> out, size_t* used) const {
    // The range itself must not run past 2^64: a region may end exactly there, and stepping
    // past its end would wrap to guest address 0.
    if (len > 0 && !checked_add(gpa, len - 1))
        return make_error(Errc::kOutOfRange, "range {:#x}+{:#x} wraps the address space", gpa, len);
    size_t n = *used;
    while (len > 0) {
        const Span* r = find(gpa);
        if (r == nullptr) return make_error(Errc::kOutOfRange, "gpa {:#x} not mapped", gpa);
        uint64_t off = gpa - r->gpa;
        uint64_t chunk = std::min(len, r->size - off);
        if (n >= out.size()) return make_error(Errc::kBusy, "more iovecs than the buffer holds");
        out[n++] = iovec{r->host + off, static_cast<size_t>(chunk)};
        len -= chunk;
        gpa += chunk;  // only wraps (to 0) on the last chunk of a range ending at 2^64: loop ends
    }
    *used = n;
    return ok_status();
}

Status MemoryMap::read(uint64_t gpa, std::span<uint8_t> dst) const {
    size_t done = 0;
    while (done < dst.size()) {
        auto a = checked_add<uint64_t>(gpa, done);
        if (!a) return make_error(Errc::kOutOfRange, "gpa overflow");
        const Span* r = find(*a);
        if (r == nullptr) return make_error(Errc::kOutOfRange, "gpa {:#x} not mapped", *a);
        uint64_t off = *a - r->gpa;
        uint64_t chunk = std::min<uint64_t>(dst.size() - done, r->size - off);
        std::memcpy(dst.data() + done, r->host + off, chunk);
        done += chunk;
    }
    return ok_status();
}

}  // namespace vhostd::shm
