// shm::Region / shm::MemoryMap against real memfd-backed guest memory (testing::GuestRam).
// The frontend's memory table and the guest's addresses are both treated as hostile: every test
// names the corner or the attack it covers and asserts exact pointers, lengths and error kinds.
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "core/result.hpp"
#include "shm/memory_map.hpp"
#include "testing/driver_queue.hpp"
#include "vhost/mem_table.hpp"

namespace vhostd::shm {
namespace {

using testing::GuestRam;
using testing::RegionSpec;
using RegionPtr = std::shared_ptr<const Region>;
using MapPtr = std::shared_ptr<const MemoryMap>;

constexpr uint64_t kPage = 4096;
constexpr uint64_t kTop = ~0ull;  // 2^64 - 1

std::unique_ptr<GuestRam> make_guest(std::vector<RegionSpec> specs) {
    auto m = GuestRam::create(std::move(specs));
    EXPECT_TRUE(m.ok()) << m.error().describe();
    return m.ok() ? std::move(m).value() : nullptr;
}

// The driver describes its regions in wire terms; shm takes its own description.
RegionDesc desc_of(const GuestRam::Region& r) { return vhost::to_region_desc(r.desc()); }

RegionPtr map_region(const GuestRam::Region& r) {
    auto m = Region::map(desc_of(r), r.fd());
    EXPECT_TRUE(m.ok()) << m.error().describe();
    return m.ok() ? m.value() : nullptr;
}

RegionPtr map_desc(const RegionDesc& d, int fd) {
    auto m = Region::map(d, fd);
    EXPECT_TRUE(m.ok()) << m.error().describe();
    return m.ok() ? m.value() : nullptr;
}

// Maps every region of the guest (same order as gm.regions()).
std::vector<RegionPtr> map_all(const GuestRam& gm) {
    std::vector<RegionPtr> out;
    for (const auto& r : gm.regions()) out.push_back(map_region(r));
    return out;
}

MapPtr build(std::vector<RegionPtr> regions) {
    auto m = MemoryMap::build(std::move(regions));
    EXPECT_TRUE(m.ok()) << m.error().describe();
    return m.ok() ? m.value() : nullptr;
}

#define EXPECT_ERRC(res, want)                                                                   \
    do {                                                                                         \
        const auto& _r = (res);                                                                  \
        ASSERT_FALSE(_r.ok()) << "expected " << errc_name(want) << ", got success";              \
        EXPECT_EQ(_r.error().code, (want)) << "got " << _r.error().describe();                   \
    } while (0)

// Two adjacent regions (separate memfds, so their host mappings are not contiguous) and a
// third one after a gap: [0, 64K) [64K, 128K) gap [1M, 1M+64K).
struct ThreeRegions {
    std::unique_ptr<GuestRam> gm = make_guest({{0, 0x10000, 0}, {0x10000, 0x10000, 0x3000}, {0x100000, 0x10000, 0}});
    std::vector<RegionPtr> regs = map_all(*gm);
    MapPtr map = build(regs);
};

// ---------------------------------------------------------------------------------------------
// Translation

TEST(MemoryMap, RangeWhollyInsideOneRegionIsOneExactIovec) {
    ThreeRegions t;
    ASSERT_NE(t.map, nullptr);
    std::array<iovec, 4> iov{};
    size_t used = 0;
    ASSERT_TRUE(t.map->gpa_to_iovecs(0x10100, 0x200, iov, &used).ok());
    ASSERT_EQ(used, 1u);
    EXPECT_EQ(iov[0].iov_base, static_cast<void*>(t.regs[1]->host() + 0x100));
    EXPECT_EQ(iov[0].iov_len, 0x200u);
    EXPECT_EQ(t.map->gpa_to_host(0x10100, 0x200), t.regs[1]->host() + 0x100);
    // The mapping aliases the driver's view of the memfd (incl. its mmap_offset of 0x3000).
    t.gm->regions()[1].host()[0x100] = 0xA5;
    EXPECT_EQ(static_cast<uint8_t*>(iov[0].iov_base)[0], 0xA5);
    // Last byte of the last region, and the whole last region.
    used = 0;
    ASSERT_TRUE(t.map->gpa_to_iovecs(0x10ffff, 1, iov, &used).ok());
    ASSERT_EQ(used, 1u);
    EXPECT_EQ(iov[0].iov_base, static_cast<void*>(t.regs[2]->host() + 0xffff));
    EXPECT_EQ(iov[0].iov_len, 1u);
    EXPECT_EQ(t.map->gpa_to_host(0x100000, 0x10000), t.regs[2]->host());
    EXPECT_EQ(t.map->gpa_to_host(0x100000, 0x10001), nullptr);
}

TEST(MemoryMap, RangeCrossingTwoAdjacentRegionsIsTwoExactIovecsButNoSingleHostPointer) {
    ThreeRegions t;
    ASSERT_NE(t.map, nullptr);
    std::array<iovec, 4> iov{};
    size_t used = 1;  // appends after what is already there
    iov[0] = iovec{nullptr, 7};
    ASSERT_TRUE(t.map->gpa_to_iovecs(0x10000 - 0x30, 0x100, iov, &used).ok());
    ASSERT_EQ(used, 3u);
    EXPECT_EQ(iov[0].iov_base, nullptr);
    EXPECT_EQ(iov[0].iov_len, 7u);
    EXPECT_EQ(iov[1].iov_base, static_cast<void*>(t.regs[0]->host() + 0x10000 - 0x30));
    EXPECT_EQ(iov[1].iov_len, 0x30u);
    EXPECT_EQ(iov[2].iov_base, static_cast<void*>(t.regs[1]->host()));
    EXPECT_EQ(iov[2].iov_len, 0xd0u);
    EXPECT_EQ(t.map->gpa_to_host(0x10000 - 0x30, 0x100), nullptr);
    // Whole of both regions.
    used = 0;
    ASSERT_TRUE(t.map->gpa_to_iovecs(0, 0x20000, iov, &used).ok());
    ASSERT_EQ(used, 2u);
    EXPECT_EQ(iov[0].iov_base, static_cast<void*>(t.regs[0]->host()));
    EXPECT_EQ(iov[0].iov_len, 0x10000u);
    EXPECT_EQ(iov[1].iov_base, static_cast<void*>(t.regs[1]->host()));
    EXPECT_EQ(iov[1].iov_len, 0x10000u);
}

TEST(MemoryMap, RangeTouchingUnmappedGapIsOutOfRange) {
    ThreeRegions t;
    ASSERT_NE(t.map, nullptr);
    std::array<iovec, 8> iov{};
    size_t used = 0;
    // Starts mapped, runs off the end of region 1 into the gap.
    EXPECT_ERRC(t.map->gpa_to_iovecs(0x1ff00, 0x200, iov, &used), Errc::kOutOfRange);
    EXPECT_EQ(used, 0u);
    // Starts in the gap.
    EXPECT_ERRC(t.map->gpa_to_iovecs(0x20000, 1, iov, &used), Errc::kOutOfRange);
    // Starts in the gap, ends inside region 2.
    EXPECT_ERRC(t.map->gpa_to_iovecs(0xfff00, 0x200, iov, &used), Errc::kOutOfRange);
    // Beyond the last region.
    EXPECT_ERRC(t.map->gpa_to_iovecs(0x110000, 1, iov, &used), Errc::kOutOfRange);
    // One past the end of the last region.
    EXPECT_ERRC(t.map->gpa_to_iovecs(0x100000, 0x10001, iov, &used), Errc::kOutOfRange);
    EXPECT_EQ(used, 0u);
    EXPECT_EQ(t.map->gpa_to_host(0x20000, 1), nullptr);
    EXPECT_EQ(t.map->gpa_to_host(0x1ff00, 0x200), nullptr);
}

TEST(MemoryMap, IovecCapacityExhaustedIsBusy) {
    ThreeRegions t;
    ASSERT_NE(t.map, nullptr);
    std::array<iovec, 2> iov{};
    size_t used = 1;
    // Needs two more iovecs, only one slot left.
    EXPECT_ERRC(t.map->gpa_to_iovecs(0xff00, 0x200, iov, &used), Errc::kBusy);
    EXPECT_EQ(used, 1u);
    // Full already: even a one-region range has no room.
    used = 2;
    EXPECT_ERRC(t.map->gpa_to_iovecs(0x100, 1, iov, &used), Errc::kBusy);
    EXPECT_EQ(used, 2u);
    // Empty span.
    used = 0;
    EXPECT_ERRC(t.map->gpa_to_iovecs(0x100, 1, std::span<iovec>{}, &used), Errc::kBusy);
    // Exactly enough room succeeds.
    used = 0;
    ASSERT_TRUE(t.map->gpa_to_iovecs(0xff00, 0x200, iov, &used).ok());
    EXPECT_EQ(used, 2u);
}

TEST(MemoryMap, ZeroLengthRangeAppendsNothing) {
    ThreeRegions t;
    ASSERT_NE(t.map, nullptr);
    std::array<iovec, 2> iov{};
    iov[0] = iovec{nullptr, 0x1234};
    size_t used = 1;
    ASSERT_TRUE(t.map->gpa_to_iovecs(0x100, 0, iov, &used).ok());
    EXPECT_EQ(used, 1u);
    EXPECT_EQ(iov[0].iov_len, 0x1234u);
    EXPECT_EQ(iov[1].iov_base, nullptr);
    // Even with a full span: nothing to append, so no kBusy.
    used = 2;
    ASSERT_TRUE(t.map->gpa_to_iovecs(0x100, 0, iov, &used).ok());
    EXPECT_EQ(used, 2u);
    // gpa_to_host with len 0 inside a region is that address.
    EXPECT_EQ(t.map->gpa_to_host(0x10, 0), t.regs[0]->host() + 0x10);
    EXPECT_EQ(t.map->gpa_to_host(0x20000, 0), nullptr);  // unmapped
}

TEST(MemoryMap, RangeOverflowingPast2To64WithoutTopRegionIsRejected) {
    ThreeRegions t;
    ASSERT_NE(t.map, nullptr);
    std::array<iovec, 8> iov{};
    size_t used = 0;
    EXPECT_ERRC(t.map->gpa_to_iovecs(kTop - 0xf, 0x20, iov, &used), Errc::kOutOfRange);
    EXPECT_ERRC(t.map->gpa_to_iovecs(0x100, kTop, iov, &used), Errc::kOutOfRange);
    EXPECT_EQ(used, 0u);
    EXPECT_EQ(t.map->gpa_to_host(0x100, kTop), nullptr);
    EXPECT_EQ(t.map->gpa_to_host(kTop, 2), nullptr);
    std::array<uint8_t, 32> buf{};
    EXPECT_ERRC(t.map->read(kTop - 0xf, buf), Errc::kOutOfRange);
}

// A region ending exactly at 2^64 plus guest RAM at gpa 0 (always present in a real guest):
// [2^64-16, 2^64+16) must not wrap around into the region at 0.
TEST(MemoryMap, RangeWrappingPast2To64DoesNotWrapIntoRegionAtZero) {
    const uint64_t top_gpa = 0ull - 0x10000;  // [2^64 - 64K, 2^64)
    auto gm = make_guest({{0, 0x10000, 0}, {top_gpa, 0x10000, 0}});
    ASSERT_NE(gm, nullptr);
    auto regs = map_all(*gm);
    auto map = build(regs);
    ASSERT_NE(map, nullptr);
    std::array<iovec, 8> iov{};
    size_t used = 0;
    // Up to the very last byte is fine: one iovec.
    ASSERT_TRUE(map->gpa_to_iovecs(kTop - 0xf, 0x10, iov, &used).ok());
    ASSERT_EQ(used, 1u);
    EXPECT_EQ(iov[0].iov_base, static_cast<void*>(regs[1]->host() + 0xfff0));
    EXPECT_EQ(iov[0].iov_len, 0x10u);
    EXPECT_EQ(map->gpa_to_host(kTop - 0xf, 0x10), regs[1]->host() + 0xfff0);
    // One byte further wraps the 64-bit address space.
    EXPECT_EQ(map->gpa_to_host(kTop - 0xf, 0x20), nullptr);
    std::array<uint8_t, 32> buf{};
    EXPECT_ERRC(map->read(kTop - 0xf, buf), Errc::kOutOfRange);
    used = 0;
    auto st = map->gpa_to_iovecs(kTop - 0xf, 0x20, iov, &used);
    EXPECT_FALSE(st.ok()) << "range wrapped past 2^64 was translated into " << used << " iovecs; iov[1] = "
                          << iov[1].iov_base << " (region at gpa 0 is at " << static_cast<void*>(regs[0]->host())
                          << ")";
    if (!st.ok()) {
        EXPECT_EQ(st.error().code, Errc::kOutOfRange);
    }
    EXPECT_EQ(used, 0u);
}

// ---------------------------------------------------------------------------------------------
// Region::map validation

TEST(MemoryMap, RegionMapRejectsSizeZero) {
    auto gm = make_guest({{0, 0x10000, 0}});
    ASSERT_NE(gm, nullptr);
    auto d = desc_of(gm->regions()[0]);
    d.memory_size = 0;
    EXPECT_ERRC(Region::map(d, gm->regions()[0].fd()), Errc::kInvalid);
}

TEST(MemoryMap, RegionMapRejectsGpaPlusSizeOverflowButAcceptsRegionEndingAt2To64) {
    auto gm = make_guest({{0, 0x10000, 0}});
    ASSERT_NE(gm, nullptr);
    int fd = gm->regions()[0].fd();
    auto d = desc_of(gm->regions()[0]);
    d.guest_phys_addr = 0ull - 0x8000;  // + 64K wraps
    EXPECT_ERRC(Region::map(d, fd), Errc::kOutOfRange);
    d.guest_phys_addr = kTop;
    EXPECT_ERRC(Region::map(d, fd), Errc::kOutOfRange);
    d.guest_phys_addr = 0ull - 0x10000;  // ends exactly at 2^64: last byte is addressable
    auto ok = Region::map(d, fd);
    ASSERT_TRUE(ok.ok()) << ok.error().describe();
    EXPECT_EQ(ok.value()->gpa(), 0ull - 0x10000);
}

TEST(MemoryMap, RegionMapRejectsUvaPlusSizeOverflow) {
    auto gm = make_guest({{0, 0x10000, 0}});
    ASSERT_NE(gm, nullptr);
    auto d = desc_of(gm->regions()[0]);
    d.userspace_addr = 0ull - 0x8000;
    EXPECT_ERRC(Region::map(d, gm->regions()[0].fd()), Errc::kOutOfRange);
    d.userspace_addr = kTop;
    EXPECT_ERRC(Region::map(d, gm->regions()[0].fd()), Errc::kOutOfRange);
}

TEST(MemoryMap, RegionMapRejectsMmapOffsetPlusSizeOverflow) {
    auto gm = make_guest({{0, 0x10000, 0}});
    ASSERT_NE(gm, nullptr);
    auto d = desc_of(gm->regions()[0]);
    d.mmap_offset = 0ull - 0x1000;  // + 64K wraps
    EXPECT_ERRC(Region::map(d, gm->regions()[0].fd()), Errc::kOutOfRange);
    // No wrap, but not representable as off_t.
    d.mmap_offset = 0x8000000000000000ull;
    EXPECT_ERRC(Region::map(d, gm->regions()[0].fd()), Errc::kOutOfRange);
}

// Mapping past the end of the memfd would "succeed" and SIGBUS on first touch: must be refused.
TEST(MemoryMap, RegionMapRefusesOffsetPlusSizeBeyondMemfdSize) {
    auto gm = make_guest({{0, 0x10000, 0x2000}});  // memfd is 0x12000 bytes
    ASSERT_NE(gm, nullptr);
    int fd = gm->regions()[0].fd();
    auto d = desc_of(gm->regions()[0]);
    d.mmap_offset = 0x2001;  // one byte too far
    EXPECT_ERRC(Region::map(d, fd), Errc::kOutOfRange);
    d.mmap_offset = 0x3000;  // a page too far
    EXPECT_ERRC(Region::map(d, fd), Errc::kOutOfRange);
    d.mmap_offset = 0;
    d.memory_size = 0x12001;
    EXPECT_ERRC(Region::map(d, fd), Errc::kOutOfRange);
    d.mmap_offset = 0x12000;  // starts at EOF
    d.memory_size = 1;
    EXPECT_ERRC(Region::map(d, fd), Errc::kOutOfRange);
    // Exactly up to EOF is fine and aliases the driver's bytes.
    d.mmap_offset = 0x2000;
    d.memory_size = 0x10000;
    auto ok = Region::map(d, fd);
    ASSERT_TRUE(ok.ok()) << ok.error().describe();
    gm->regions()[0].host()[0xffff] = 0x5c;
    EXPECT_EQ(ok.value()->host()[0xffff], 0x5c);
}

TEST(MemoryMap, RegionMapWithUnalignedMmapOffsetPointsAtTheRightBytes) {
    auto gm = make_guest({{0, 0x10000, 0x1000}});
    ASSERT_NE(gm, nullptr);
    const auto& gr = gm->regions()[0];
    // Driver region starts 0x1000 into the memfd; describe a region starting 0x1010 in.
    for (int i = 0; i < 64; ++i) gr.host()[i] = static_cast<uint8_t>(i + 1);
    RegionDesc d{0x40000, 0x1000, 0x7000000, 0x1010};
    auto r = map_desc(d, gr.fd());
    ASSERT_NE(r, nullptr);
    EXPECT_EQ(r->host()[0], 0x11);
    EXPECT_EQ(r->host()[1], 0x12);
    auto map = build({r});
    ASSERT_NE(map, nullptr);
    EXPECT_EQ(*map->gpa_to_host(0x40000, 1), 0x11);
    EXPECT_EQ(*map->uva_to_host(0x7000000 + 0x2f, 1), 0x40);
}

TEST(MemoryMap, RegionMapRejectsInvalidFds) {
    auto gm = make_guest({{0, 0x10000, 0}});
    ASSERT_NE(gm, nullptr);
    auto d = desc_of(gm->regions()[0]);
    EXPECT_ERRC(Region::map(d, -1), Errc::kInvalid);
    // A number that is not an open fd.
    int fds[2];
    ASSERT_EQ(pipe(fds), 0);
    int dead = fds[0];
    close(fds[0]);
    EXPECT_ERRC(Region::map(d, dead), Errc::kSystem);
    // An open fd that cannot be mapped (a pipe): an error, not a crash.
    auto p = Region::map(d, fds[1]);
    EXPECT_FALSE(p.ok());
    close(fds[1]);
}

// ---------------------------------------------------------------------------------------------
// MemoryMap::build

TEST(MemoryMap, BuildRejectsOverlappingGpaRanges) {
    auto gm = make_guest({{0, 0x10000, 0}, {0x10000, 0x10000, 0}});
    ASSERT_NE(gm, nullptr);
    const auto& a = gm->regions()[0];
    const auto& b = gm->regions()[1];
    auto ra = map_region(a);
    // b claims a gpa range overlapping a's last byte.
    auto db = desc_of(b);
    db.guest_phys_addr = 0xffff;
    auto rb = map_desc(db, b.fd());
    EXPECT_ERRC(MemoryMap::build({ra, rb}), Errc::kInvalid);
    EXPECT_ERRC(MemoryMap::build({rb, ra}), Errc::kInvalid);  // order of the table doesn't matter
    // Same start.
    db.guest_phys_addr = 0;
    EXPECT_ERRC(MemoryMap::build({ra, map_desc(db, b.fd())}), Errc::kInvalid);
    // Wholly contained.
    db.guest_phys_addr = 0x100;
    db.memory_size = 0x100;
    EXPECT_ERRC(MemoryMap::build({ra, map_desc(db, b.fd())}), Errc::kInvalid);
    // Containing (a inside b's range), b listed first.
    db.guest_phys_addr = 0;
    db.memory_size = 0x10000;
    auto da = desc_of(a);
    da.guest_phys_addr = 0x1000;
    da.memory_size = 0x1000;
    EXPECT_ERRC(MemoryMap::build({map_desc(db, b.fd()), map_desc(da, a.fd())}), Errc::kInvalid);
    // The same region twice.
    EXPECT_ERRC(MemoryMap::build({ra, ra}), Errc::kInvalid);
}

TEST(MemoryMap, BuildRejectsOverlappingUvaRanges) {
    auto gm = make_guest({{0, 0x10000, 0}, {0x100000, 0x10000, 0}});
    ASSERT_NE(gm, nullptr);
    const auto& a = gm->regions()[0];
    const auto& b = gm->regions()[1];
    auto da = desc_of(a);
    auto db = desc_of(b);
    da.userspace_addr = 0x7f0000000000;
    db.userspace_addr = 0x7f0000000000 + 0xffff;  // overlaps a's last byte in VA space only
    EXPECT_ERRC(MemoryMap::build({map_desc(da, a.fd()), map_desc(db, b.fd())}), Errc::kInvalid);
    // b below a in VA but above in GPA: VA check must sort independently.
    db.userspace_addr = 0x7f0000000000 - 0x8000;
    EXPECT_ERRC(MemoryMap::build({map_desc(da, a.fd()), map_desc(db, b.fd())}), Errc::kInvalid);
    db.userspace_addr = 0x7f0000000000;
    EXPECT_ERRC(MemoryMap::build({map_desc(da, a.fd()), map_desc(db, b.fd())}), Errc::kInvalid);
}

TEST(MemoryMap, BuildAcceptsAdjacentGpaAndUvaRangesAndSortsUnorderedTables) {
    auto gm = make_guest({{0, 0x10000, 0}, {0x10000, 0x10000, 0}, {0x20000, 0x10000, 0}});
    ASSERT_NE(gm, nullptr);
    std::vector<RegionPtr> regs;
    for (size_t i = 0; i < 3; ++i) {
        auto d = desc_of(gm->regions()[i]);
        d.userspace_addr = 0x7f0000000000 + (2 - i) * 0x10000;  // adjacent, in reverse order
        regs.push_back(map_desc(d, gm->regions()[i].fd()));
    }
    auto map = MemoryMap::build({regs[2], regs[0], regs[1]});
    ASSERT_TRUE(map.ok()) << map.error().describe();
    ASSERT_EQ(map.value()->region_count(), 3u);
    EXPECT_EQ(map.value()->regions()[0]->gpa(), 0u);
    EXPECT_EQ(map.value()->regions()[1]->gpa(), 0x10000u);
    EXPECT_EQ(map.value()->regions()[2]->gpa(), 0x20000u);
    for (size_t i = 0; i < 3; ++i) {
        EXPECT_EQ(map.value()->gpa_to_host(i * 0x10000 + 5, 1), regs[i]->host() + 5) << i;
        EXPECT_EQ(map.value()->uva_to_host(0x7f0000000000 + (2 - i) * 0x10000 + 5, 1), regs[i]->host() + 5) << i;
    }
}

TEST(MemoryMap, UvaToHostRequiresTheWholeRangeInsideOneRegion) {
    auto gm = make_guest({{0, 0x10000, 0}, {0x10000, 0x10000, 0}});
    ASSERT_NE(gm, nullptr);
    const uint64_t base = 0x7e0000000000;
    std::vector<RegionPtr> regs;
    for (size_t i = 0; i < 2; ++i) {
        auto d = desc_of(gm->regions()[i]);
        d.userspace_addr = base + i * 0x10000;  // adjacent in VA as in GPA
        regs.push_back(map_desc(d, gm->regions()[i].fd()));
    }
    auto map = build(regs);
    ASSERT_NE(map, nullptr);
    EXPECT_EQ(map->uva_to_host(base, 0x10000), regs[0]->host());
    EXPECT_EQ(map->uva_to_host(base + 0x10010, 0x20), regs[1]->host() + 0x10);
    EXPECT_EQ(map->uva_to_host(base + 0xfff0, 0x10), regs[0]->host() + 0xfff0);
    // Crosses from region 0 to region 1: adjacent in VA, but not one mapping.
    EXPECT_EQ(map->uva_to_host(base + 0xfff0, 0x20), nullptr);
    // Below, past the end, zero length at the end, overflowing.
    EXPECT_EQ(map->uva_to_host(base - 1, 1), nullptr);
    EXPECT_EQ(map->uva_to_host(base + 0x20000, 1), nullptr);
    EXPECT_EQ(map->uva_to_host(base + 0x1ffff, 2), nullptr);
    EXPECT_EQ(map->uva_to_host(base + 0x20000, 0), nullptr);
    EXPECT_EQ(map->uva_to_host(base + 0x10, kTop), nullptr);
    EXPECT_EQ(map->uva_to_host(kTop, 2), nullptr);
    // Zero length inside is that address.
    EXPECT_EQ(map->uva_to_host(base + 0x10, 0), regs[0]->host() + 0x10);
    // The empty map translates nothing.
    EXPECT_EQ(MemoryMap::empty()->uva_to_host(base, 1), nullptr);
    EXPECT_EQ(MemoryMap::empty()->gpa_to_host(0, 1), nullptr);
}

TEST(MemoryMap, ReadAcrossRegionBoundaryCopiesTheRightBytes) {
    auto gm = make_guest({{0, 0x10000, 0}, {0x10000, 0x10000, 0x5000}, {0x40000, 0x1000, 0}});
    ASSERT_NE(gm, nullptr);
    for (size_t r = 0; r < 2; ++r) {
        for (uint64_t i = 0; i < 0x10000; ++i)
            gm->regions()[r].host()[i] = static_cast<uint8_t>((i * 7 + r * 131) & 0xff);
    }
    auto map = build(map_all(*gm));
    ASSERT_NE(map, nullptr);
    std::vector<uint8_t> got(300, 0xee);
    ASSERT_TRUE(map->read(0x10000 - 100, got).ok());
    for (size_t i = 0; i < got.size(); ++i) {
        uint64_t gpa = 0x10000 - 100 + i;
        size_t r = gpa < 0x10000 ? 0 : 1;
        uint64_t off = gpa - r * 0x10000;
        ASSERT_EQ(got[i], static_cast<uint8_t>((off * 7 + r * 131) & 0xff)) << "byte " << i;
    }
    // Running into the gap after region 1 fails.
    std::vector<uint8_t> big(0x100);
    EXPECT_ERRC(map->read(0x1ff80, big), Errc::kOutOfRange);
    EXPECT_ERRC(map->read(0x30000, big), Errc::kOutOfRange);
    // Empty read succeeds.
    EXPECT_TRUE(map->read(0x30000, std::span<uint8_t>{}).ok());
}

// A snapshot replaced by a newer one stays mapped while anyone holds it, and is unmapped when
// the last holder lets go.
TEST(MemoryMap, OldSnapshotStaysMappedWhileHeldAfterReplacement) {
    auto gm = make_guest({{0, 0x10000, 0x1000}, {0x100000, 0x10000, 0}});
    ASSERT_NE(gm, nullptr);
    const int fd = gm->regions()[0].fd();
    MapPtr current = build({map_region(gm->regions()[0])});
    ASSERT_NE(current, nullptr);
    MapPtr held = current;  // e.g. a worker thread's reference
    uint8_t* p = held->gpa_to_host(0x800, 16);
    ASSERT_NE(p, nullptr);
    // The frontend replaces the table: the new snapshot has only region 1.
    current = build({map_region(gm->regions()[1])});
    ASSERT_NE(current, nullptr);
    EXPECT_EQ(current->gpa_to_host(0x800, 16), nullptr);
    // Old snapshot still translates and its mapping still works.
    EXPECT_EQ(held->gpa_to_host(0x800, 16), p);
    std::memcpy(p, "old-snapshot-ok", 16);
    char back[16] = {};
    ASSERT_EQ(pread(fd, back, sizeof(back), 0x1000 + 0x800), 16);
    EXPECT_STREQ(back, "old-snapshot-ok");
    // Last reference gone: the mapping is released.
    auto* page = reinterpret_cast<void*>(reinterpret_cast<uintptr_t>(p) & ~(kPage - 1));
    unsigned char vec[1];
    ASSERT_EQ(mincore(page, kPage, vec), 0);
    held.reset();
    errno = 0;
    EXPECT_EQ(mincore(page, kPage, vec), -1);
    EXPECT_EQ(errno, ENOMEM);
}

}  // namespace
}  // namespace vhostd::shm
