#include "testing/guest_ram.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <thread>
#include <utility>

#include "core/checked.hpp"


namespace vhostd::testing {

// GuestRam

GuestRam::Region::Region(Region&& o) noexcept
    : gpa_(o.gpa_),
      size_(o.size_),
      mmap_offset_(o.mmap_offset_),
      fd_(std::move(o.fd_)),
      map_base_(std::exchange(o.map_base_, nullptr)),
      map_len_(std::exchange(o.map_len_, 0)),
      host_(std::exchange(o.host_, nullptr)),
      next_free_(o.next_free_) {}

GuestRam::Region& GuestRam::Region::operator=(Region&& o) noexcept {
    if (this != &o) {
        if (map_base_ != nullptr) munmap(map_base_, map_len_);
        gpa_ = o.gpa_;
        size_ = o.size_;
        mmap_offset_ = o.mmap_offset_;
        fd_ = std::move(o.fd_);
        map_base_ = std::exchange(o.map_base_, nullptr);
        map_len_ = std::exchange(o.map_len_, 0);
        host_ = std::exchange(o.host_, nullptr);
        next_free_ = o.next_free_;
    }
    return *this;
}

GuestRam::Region::~Region() {
    if (map_base_ != nullptr) munmap(map_base_, map_len_);
}

Result<GuestRam::Region> GuestRam::make_region(const RegionSpec& spec) {
    if (spec.size == 0) return make_error(Errc::kInvalid, "guest region of size 0");
    if (!checked_add(spec.gpa, spec.size - 1)) return make_error(Errc::kOutOfRange, "guest region gpa overflows");
    auto file_size = checked_add(spec.mmap_offset, spec.size);
    if (!file_size || *file_size > static_cast<uint64_t>(INT64_MAX) || *file_size > SIZE_MAX)
        return make_error(Errc::kOutOfRange, "guest region too large");

    UniqueFd fd(memfd_create("vhostd-guest-ram", MFD_CLOEXEC | MFD_ALLOW_SEALING));
    if (!fd) return sys_error("memfd_create");
    if (ftruncate(fd.get(), static_cast<off_t>(*file_size)) != 0) return sys_error("ftruncate memfd");
    // As QEMU's memory-backend-memfd (seal=on): the size can never change under a backend.
    if (fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) != 0) return sys_error("F_ADD_SEALS");
    void* p = mmap(nullptr, static_cast<size_t>(*file_size), PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
    if (p == MAP_FAILED) return sys_error("mmap memfd of {:#x} bytes", *file_size);

    Region r;
    r.gpa_ = spec.gpa;
    r.size_ = spec.size;
    r.mmap_offset_ = spec.mmap_offset;
    r.fd_ = std::move(fd);
    r.map_base_ = p;
    r.map_len_ = static_cast<size_t>(*file_size);
    r.host_ = static_cast<uint8_t*>(p) + spec.mmap_offset;
    return r;
}

Result<std::unique_ptr<GuestRam>> GuestRam::create(std::vector<RegionSpec> specs) {
    std::unique_ptr<GuestRam> m(new GuestRam());
    for (const auto& s : specs) {
        auto r = m->add_region(s);
        if (!r) return std::move(r).take_error();
    }
    return m;
}

Result<size_t> GuestRam::add_region(RegionSpec spec) {
    for (const auto& r : regions_) {
        // Overlap test on [gpa, gpa+size) (both overflow-checked at creation).
        if (spec.gpa < r.gpa_ + r.size_ && r.gpa_ < spec.gpa + spec.size)
            return make_error(Errc::kInvalid, "guest region {:#x}+{:#x} overlaps {:#x}+{:#x}", spec.gpa, spec.size,
                              r.gpa_, r.size_);
    }
    auto r = make_region(spec);
    if (!r) return std::move(r).take_error();
    regions_.push_back(std::move(r).value());
    return regions_.size() - 1;
}

Status GuestRam::remove_region(size_t index) {
    if (index >= regions_.size()) return make_error(Errc::kOutOfRange, "no guest region {}", index);
    regions_.erase(regions_.begin() + static_cast<ptrdiff_t>(index));
    return ok_status();
}

const GuestRam::Region* GuestRam::find_region(uint64_t gpa) const {
    for (const auto& r : regions_) {
        if (gpa >= r.gpa_ && gpa - r.gpa_ < r.size_) return &r;
    }
    return nullptr;
}

uint8_t* GuestRam::host(uint64_t gpa, uint64_t len) const {
    for (const auto& r : regions_) {
        if (range_within(gpa, len, r.gpa_, r.size_) && gpa - r.gpa_ < r.size_) return r.host_ + (gpa - r.gpa_);
    }
    return nullptr;
}

uint64_t GuestRam::uva_of(uint64_t gpa) const {
    const Region* r = find_region(gpa);
    return r ? r->uva() + (gpa - r->gpa_) : 0;
}

std::optional<uint64_t> GuestRam::bump(Region& r, uint64_t size, uint64_t align) {
    // Align the gpa (not the offset): regions need not start aligned.
    auto bumped = checked_add(r.gpa_ + r.next_free_, align - 1);
    if (!bumped) return std::nullopt;
    uint64_t start = *bumped & ~(align - 1);
    if (!range_within(start, size, r.gpa_, r.size_)) return std::nullopt;
    r.next_free_ = start - r.gpa_ + size;
    std::memset(r.host_ + (start - r.gpa_), 0, size);
    return start;
}

Result<uint64_t> GuestRam::alloc(uint64_t size, uint64_t align) {
    if (!is_pow2(align)) return make_error(Errc::kInvalid, "alloc alignment {} not a power of two", align);
    if (size == 0) size = 1;
    for (auto& r : regions_) {
        if (auto g = bump(r, size, align)) return *g;
    }
    return make_error(Errc::kOutOfRange, "guest memory exhausted allocating {:#x} bytes (align {})", size, align);
}

Result<uint64_t> GuestRam::alloc_in(size_t index, uint64_t size, uint64_t align) {
    if (!is_pow2(align)) return make_error(Errc::kInvalid, "alloc alignment {} not a power of two", align);
    if (index >= regions_.size()) return make_error(Errc::kOutOfRange, "no guest region {}", index);
    if (size == 0) size = 1;
    if (auto g = bump(regions_[index], size, align)) return *g;
    return make_error(Errc::kOutOfRange, "guest region {} exhausted allocating {:#x} bytes", index, size);
}

uint64_t GuestRam::available(size_t index) const {
    return index < regions_.size() ? regions_[index].size_ - regions_[index].next_free_ : 0;
}

}  // namespace vhostd::testing
