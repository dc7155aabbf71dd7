// Regression (found by fuzz_vhost_messages): aligned frontend addresses in a region with an odd
// mmap_offset put the rings at misaligned host addresses, where std::atomic_ref is undefined.
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/unique_fd.hpp"
#include "shm/memory_map.hpp"
#include "virtio/virtqueue.hpp"

namespace vhostd {
namespace {

TEST(SplitQueueAlignment, RingsMisalignedInHostMemoryAreRejected) {
    UniqueFd fd(memfd_create("align", MFD_CLOEXEC));
    ASSERT_TRUE(fd.valid());
    ASSERT_EQ(ftruncate(fd.get(), (1 << 16) + 4096), 0);
    for (uint64_t offset : {1ull, 2ull, 3ull}) {
        auto region = shm::Region::map(shm::RegionDesc{0, 1 << 16, 0x100000, offset}, fd.get());
        ASSERT_TRUE(region.ok()) << region.error().describe();
        auto map = shm::MemoryMap::build({region.value()});
        ASSERT_TRUE(map.ok());
        virtio::SplitQueue q;
        virtio::QueueLayout l{64, 0x100000, 0x101000, 0x102000};  // aligned frontend addresses
        auto st = q.activate(map.value(), l, 0, true, true);
        EXPECT_FALSE(st.ok()) << "offset " << offset << ": misaligned host rings accepted";
        EXPECT_FALSE(q.active());
    }
    // The same layout at an aligned offset is fine.
    auto region = shm::Region::map(shm::RegionDesc{0, 1 << 16, 0x100000, 4096}, fd.get());
    ASSERT_TRUE(region.ok());
    auto map = shm::MemoryMap::build({region.value()});
    ASSERT_TRUE(map.ok());
    virtio::SplitQueue q;
    EXPECT_TRUE(q.activate(map.value(), virtio::QueueLayout{64, 0x100000, 0x101000, 0x102000}, 0, true, true).ok());
}

}  // namespace
}  // namespace vhostd
