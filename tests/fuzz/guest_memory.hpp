// Guest memory for the ring-walking fuzz targets: one memfd region at gpa 0, mapped once and
// overwritten by each input (a memfd, a mapping and a map build per input were most of an
// execution's time).
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <cstdlib>
#include <memory>

#include "core/unique_fd.hpp"
#include "shm/memory_map.hpp"

namespace vhostd::fuzz {

struct GuestMemory {
    UniqueFd fd;
    std::shared_ptr<const shm::Region> region;
    std::shared_ptr<const shm::MemoryMap> map;

    GuestMemory(size_t size, uint64_t uva) {
        fd.reset(memfd_create("fuzz-guest", MFD_CLOEXEC));
        if (!fd || ftruncate(fd.get(), static_cast<off_t>(size)) != 0) abort();
        auto r = shm::Region::map(shm::RegionDesc{0, size, uva, 0}, fd.get());
        if (!r.ok()) abort();
        region = r.value();
        auto m = shm::MemoryMap::build({region});
        if (!m.ok()) abort();
        map = m.value();
    }
};

}  // namespace vhostd::fuzz
