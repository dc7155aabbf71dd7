// Device-side split ring (virtio::SplitQueue) against a guest driver's view of the same ring
// (testing::DriverQueue) over real memfd guest memory mapped the way the daemon maps it
// (shm::Region::map + shm::MemoryMap::build). The guest is an adversary: each test names the
// attack or corner it covers and asserts exact iovecs, used-ring contents and ChainErrors.
//
// Every test runs for queue sizes 8/16/256 x EVENT_IDX on/off x INDIRECT_DESC on/off.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "core/result.hpp"
#include "shm/dirty_log.hpp"
#include "shm/memory_map.hpp"
#include "testing/driver_queue.hpp"
#include "vhost/mem_table.hpp"
#include "virtio/virtio_types.hpp"
#include "virtio/virtqueue.hpp"

namespace vhostd::virtio {
namespace {

using testing::DriverBuf;
using testing::DriverQueue;
using testing::GuestRam;
using testing::RegionSpec;

constexpr uint64_t kMiB = 1ull << 20;
constexpr uint64_t kR0 = 0;                // [0, 1M): rings and buffers
constexpr uint64_t kR0Size = kMiB;
constexpr uint64_t kR1 = kMiB;             // [1M, 1M+64K): adjacent to R0, own memfd
constexpr uint64_t kR1Size = 0x10000;
constexpr uint64_t kGap = kR1 + kR1Size;   // unmapped until kR2
constexpr uint64_t kR2 = 0x10000000;       // [256M, 256M+64K)
constexpr uint64_t kR2Size = 0x10000;
constexpr size_t kIovCap = 1100;

struct Cfg {
    uint16_t size;
    bool evt;
    bool ind;
};

std::string cfg_name(const ::testing::TestParamInfo<Cfg>& i) {
    // fmt, not "q" + std::to_string(...): GCC 12 at -O3 raises a false -Wrestrict on the
    // inlined string concatenation (GCC bug 105329), which -Werror turns into a failed build.
    return fmt::format("q{}_{}_{}", i.param.size, i.param.evt ? "evt" : "noevt", i.param.ind ? "ind" : "noind");
}

#define EXPECT_CHAIN_ERR(got, want) \
    EXPECT_EQ((got), (want)) << "got '" << chain_error_name(got) << "', want '" << chain_error_name(want) << "'"

class SplitQueue : public ::testing::TestWithParam<Cfg> {
protected:
    void SetUp() override {
        cfg_ = GetParam();
        rebuild({{kR0, kR0Size, 0}, {kR1, kR1Size, 0x3000}, {kR2, kR2Size, 0}});
    }

    // (Re)creates guest memory, the backend's mapping of it, the driver queue (rings in region 0)
    // and activates the device queue with last_avail 0.
    void rebuild(std::vector<RegionSpec> specs) {
        vq_ = std::make_unique<virtio::SplitQueue>();
        dq_.reset();
        map_.reset();
        regs_.clear();
        auto g = GuestRam::create(std::move(specs));
        ASSERT_TRUE(g.ok()) << g.error().describe();
        gm_ = std::move(g).value();
        for (const auto& r : gm_->regions()) {
            auto m = shm::Region::map(vhost::to_region_desc(r.desc()), r.fd());
            ASSERT_TRUE(m.ok()) << m.error().describe();
            regs_.push_back(m.value());
        }
        auto mm = shm::MemoryMap::build(regs_);
        ASSERT_TRUE(mm.ok()) << mm.error().describe();
        map_ = mm.value();
        auto q = DriverQueue::create(*gm_, cfg_.size, cfg_.evt);
        ASSERT_TRUE(q.ok()) << q.error().describe();
        dq_ = std::move(q).value();
        avail_ = 0;
        auto st = activate(0, cfg_.ind);
        ASSERT_TRUE(st.ok()) << st.error().describe();
    }

    QueueLayout layout() const { return {cfg_.size, dq_->desc_uva(), dq_->avail_uva(), dq_->used_uva()}; }
    Status activate(uint16_t last_avail, bool indirect) {
        return vq_->activate(map_, layout(), last_avail, cfg_.evt, indirect);
    }

    // Backend-side host pointer for gpa (what a correct iovec must point at).
    uint8_t* dev(uint64_t gpa) const {
        const auto rs = gm_->regions();
        for (size_t i = 0; i < rs.size(); ++i) {
            if (gpa >= rs[i].gpa() && gpa - rs[i].gpa() < rs[i].size()) return regs_[i]->host() + (gpa - rs[i].gpa());
        }
        ADD_FAILURE() << "gpa " << gpa << " not in guest memory";
        return nullptr;
    }
    uint8_t* drv(uint64_t gpa, uint64_t len = 1) const { return gm_->host(gpa, len); }

    uint64_t alloc(uint64_t size, uint64_t align = 16) {
        auto g = gm_->alloc_in(0, size, align);
        EXPECT_TRUE(g.ok()) << g.error().describe();
        return g.ok() ? g.value() : 0;
    }
    // Writes an indirect table into fresh guest memory; returns its gpa.
    uint64_t table(const std::vector<Desc>& t) {
        uint64_t g = alloc(std::max<uint64_t>(16, t.size() * sizeof(Desc)));
        if (!t.empty()) std::memcpy(drv(g, t.size() * sizeof(Desc)), t.data(), t.size() * sizeof(Desc));
        return g;
    }
    void desc(uint16_t i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next = 0) {
        ASSERT_TRUE(dq_->write_desc(i, Desc{addr, len, flags, next}));
    }
    // Raw avail-ring post (the hostile API; no driver bookkeeping).
    void post(uint16_t head) {
        dq_->write_avail_ring(avail_, head);
        dq_->write_avail_idx(++avail_);
    }

    // Posts head, takes it through pending/pop_head, walks it. Returns the ChainError.
    ChainError post_and_walk(uint16_t head, size_t iov_cap = kIovCap) {
        post(head);
        auto p = vq_->pending();
        EXPECT_TRUE(p.ok());
        EXPECT_EQ(p.ok() ? p.value() : 0, 1);
        auto h = vq_->pop_head();
        EXPECT_TRUE(h.ok()) << (h.ok() ? "" : h.error().describe());
        EXPECT_EQ(h.ok() ? h.value() : 0xffff, head);
        return walk(head, iov_cap);
    }
    ChainError walk(uint16_t head, size_t iov_cap = kIovCap) {
        ChainError err = ChainError::kNone;
        chain_ = Chain{};
        bool ok = vq_->walk(head, std::span<iovec>(iov_.data(), iov_cap), &chain_, &err);
        EXPECT_EQ(ok, err == ChainError::kNone) << chain_error_name(err);
        return err;
    }
    void expect_iov(size_t i, uint64_t gpa, size_t len) {
        ASSERT_LT(i, iov_.size());
        EXPECT_EQ(iov_[i].iov_base, static_cast<void*>(dev(gpa))) << "iov " << i;
        EXPECT_EQ(iov_[i].iov_len, len) << "iov " << i;
    }
    UsedElem raw_used(uint16_t idx) const {
        UsedElem e{};
        std::memcpy(&e, dq_->used_host() + 4 + 8u * (idx & (cfg_.size - 1)), sizeof(e));
        return e;
    }
    void set_ring_used_idx(uint16_t v) {
        std::atomic_ref<uint16_t>(*reinterpret_cast<uint16_t*>(dq_->used_host() + 2)).store(v);
    }
    // Device side: completes one raw-posted chain (no walk).
    void device_complete_one(uint32_t len) {
        auto h = vq_->pop_head();
        ASSERT_TRUE(h.ok());
        vq_->push_used(h.value(), len);
    }

    Cfg cfg_{};
    std::unique_ptr<GuestRam> gm_;
    std::vector<std::shared_ptr<const shm::Region>> regs_;
    std::shared_ptr<const shm::MemoryMap> map_;
    std::unique_ptr<DriverQueue> dq_;
    std::unique_ptr<virtio::SplitQueue> vq_;
    uint16_t avail_ = 0;
    std::vector<iovec> iov_ = std::vector<iovec>(kIovCap);
    Chain chain_{};
};

INSTANTIATE_TEST_SUITE_P(, SplitQueue,
                         ::testing::Values(Cfg{8, false, false}, Cfg{8, false, true}, Cfg{8, true, false},
                                         Cfg{8, true, true}, Cfg{16, false, false}, Cfg{16, false, true},
                                         Cfg{16, true, false}, Cfg{16, true, true}, Cfg{256, false, false},
                                         Cfg{256, false, true}, Cfg{256, true, false}, Cfg{256, true, true}),
                         cfg_name);

// ---------------------------------------------------------------------------------------------
// Well-formed chains

TEST_P(SplitQueue, BlkStyleChainWalksIntoExactlyTheDriversBuffers) {
    uint64_t hdr = alloc(16), data = alloc(512), status = alloc(1);
    std::array<DriverBuf, 3> bufs{{{hdr, 16, false}, {data, 512, true}, {status, 1, true}}};
    for (bool indirect : {false, true}) {
        SCOPED_TRACE(indirect ? "indirect" : "direct");
        auto head = dq_->add_chain(bufs, indirect);
        ASSERT_TRUE(head.ok()) << head.error().describe();
        dq_->publish();
        auto p = vq_->pending();
        ASSERT_TRUE(p.ok());
        ASSERT_EQ(p.value(), 1);
        auto h = vq_->pop_head();
        ASSERT_TRUE(h.ok());
        ASSERT_EQ(h.value(), head.value());
        ChainError err = walk(h.value());
        if (indirect && !cfg_.ind) {
            EXPECT_CHAIN_ERR(err, ChainError::kBadIndirect);
            vq_->push_used(h.value(), 0);
        } else {
            ASSERT_EQ(err, ChainError::kNone) << chain_error_name(err);
            EXPECT_EQ(chain_.head, head.value());
            EXPECT_EQ(chain_.n_readable, 1u);
            EXPECT_EQ(chain_.n_writable, 2u);
            EXPECT_EQ(chain_.readable_bytes, 16u);
            EXPECT_EQ(chain_.writable_bytes, 513u);
            expect_iov(0, hdr, 16);
            expect_iov(1, data, 512);
            expect_iov(2, status, 1);
            // Same bytes as the driver's: header in, status out.
            drv(hdr)[3] = 0x42;
            EXPECT_EQ(static_cast<uint8_t*>(iov_[0].iov_base)[3], 0x42);
            *static_cast<uint8_t*>(iov_[2].iov_base) = 0x7;
            EXPECT_EQ(*drv(status), 0x7);
            vq_->push_used(h.value(), 513);
        }
        EXPECT_TRUE(vq_->publish_used());
        auto u = dq_->pop_used();
        ASSERT_TRUE(u.has_value()) << dq_->broken_reason();
        EXPECT_EQ(u->id, uint32_t{head.value()});
        EXPECT_EQ(u->len, (indirect && !cfg_.ind) ? 0u : 513u);
    }
}

TEST_P(SplitQueue, BufferCrossingAdjacentRegionsBecomesTwoIovecs) {
    // 100 bytes at the end of region 0, 200 at the start of region 1 (a different memfd).
    desc(0, kR1 - 100, 300, kDescFWrite);
    ASSERT_EQ(post_and_walk(0), ChainError::kNone);
    EXPECT_EQ(chain_.n_readable, 0u);
    EXPECT_EQ(chain_.n_writable, 2u);
    EXPECT_EQ(chain_.writable_bytes, 300u);
    expect_iov(0, kR1 - 100, 100);
    expect_iov(1, kR1, 200);
    std::memset(iov_[0].iov_base, 0xab, 100);
    std::memset(iov_[1].iov_base, 0xcd, 200);
    EXPECT_EQ(*drv(kR1 - 1), 0xab);
    EXPECT_EQ(*drv(kR1), 0xcd);
    EXPECT_EQ(*drv(kR1 + 199), 0xcd);
    // Only one iovec of room: too many segments, not a silent truncation.
    EXPECT_CHAIN_ERR(post_and_walk(0, 1), ChainError::kTooManySegments);
}

// avail idx 65530 -> 4 and used idx 65533 -> 7 across the 16-bit wrap, in batches (a queue of 8
// cannot hold all 10 chains at once). Every chain is seen exactly once, in order, and each used
// element lands at slot (idx & (size-1)).
TEST_P(SplitQueue, IndexWraparoundProcessesEveryChainOnceAndUsedSlotsWrap) {
    const uint16_t kAvailStart = 65530, kUsedStart = 65533;
    dq_->write_avail_idx(kAvailStart);
    set_ring_used_idx(kUsedStart);
    dq_->set_positions(kAvailStart, kUsedStart);
    ASSERT_TRUE(activate(kAvailStart, cfg_.ind).ok());
    EXPECT_EQ(vq_->last_avail(), kAvailStart);
    EXPECT_EQ(vq_->used_idx(), kUsedStart);  // resumed from the ring, never rewound
    ASSERT_EQ(vq_->pending().value(), 0);

    const int kTotal = 10;
    const int kBatch = 3;
    std::vector<uint64_t> bufs;
    for (int i = 0; i < kTotal; ++i) bufs.push_back(alloc(64));
    int done = 0;
    uint16_t used = kUsedStart;
    while (done < kTotal) {
        int n = std::min(kBatch, kTotal - done);
        std::vector<uint16_t> heads;
        for (int i = 0; i < n; ++i) {
            const int k = done + i;
            std::array<DriverBuf, 2> b{{{bufs[k], 8, false}, {bufs[k] + 8, 56, true}}};
            bool indirect = cfg_.ind && (k % 2 == 1);
            auto h = dq_->add_chain(b, indirect);
            ASSERT_TRUE(h.ok()) << h.error().describe();
            heads.push_back(h.value());
        }
        dq_->publish();
        auto p = vq_->pending();
        ASSERT_TRUE(p.ok()) << p.error().describe();
        ASSERT_EQ(p.value(), n);
        for (int i = 0; i < n; ++i) {
            const int k = done + i;
            auto h = vq_->pop_head();
            ASSERT_TRUE(h.ok());
            ASSERT_EQ(h.value(), heads[i]) << "chain " << k;
            ASSERT_EQ(walk(h.value()), ChainError::kNone);
            ASSERT_EQ(chain_.n_readable, 1u);
            ASSERT_EQ(chain_.n_writable, 1u);
            expect_iov(0, bufs[k], 8);
            expect_iov(1, bufs[k] + 8, 56);
            vq_->push_used(h.value(), static_cast<uint32_t>(1000 + k));
        }
        EXPECT_EQ(vq_->pending().value(), 0);
        ASSERT_TRUE(vq_->publish_used());
        for (int i = 0; i < n; ++i) {
            const int k = done + i;
            // Raw slot check: the element for used index u is at ring[u & (size-1)].
            UsedElem e = raw_used(used);
            EXPECT_EQ(e.id, uint32_t{heads[i]}) << "used idx " << used;
            EXPECT_EQ(e.len, static_cast<uint32_t>(1000 + k)) << "used idx " << used;
            auto u = dq_->pop_used();
            ASSERT_TRUE(u.has_value()) << dq_->broken_reason();
            EXPECT_EQ(u->id, uint32_t{heads[i]});
            EXPECT_EQ(u->len, static_cast<uint32_t>(1000 + k));
            ++used;
        }
        done += n;
    }
    EXPECT_EQ(dq_->read_avail_idx(), 4);
    EXPECT_EQ(vq_->last_avail(), 4);
    EXPECT_EQ(vq_->used_idx(), 7);
    EXPECT_EQ(vq_->ring_used_idx(), 7);
    EXPECT_EQ(dq_->last_used(), 7);
    EXPECT_FALSE(dq_->pop_used().has_value());
    EXPECT_FALSE(dq_->broken());
    EXPECT_EQ(vq_->pending().value(), 0);
    EXPECT_FALSE(vq_->publish_used());
}

// ---------------------------------------------------------------------------------------------
// Hostile chains: loops and indices

template <typename F>
double seconds(F&& f) {
    auto t0 = std::chrono::steady_clock::now();
    f();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

TEST_P(SplitQueue, DescriptorLoopBackIsLoopInBoundedTime) {
    uint64_t b = alloc(64);
    desc(0, b, 8, kDescFNext, 1);
    desc(1, b + 8, 8, kDescFNext, 2 % cfg_.size);
    desc(2 % cfg_.size, b + 16, 8, kDescFNext, 0);  // back to the head
    ChainError err = ChainError::kNone;
    double s = seconds([&] { err = post_and_walk(0); });
    EXPECT_CHAIN_ERR(err, ChainError::kLoop);
    EXPECT_LT(s, 1.0);
}

TEST_P(SplitQueue, DescriptorSelfLoopIsLoop) {
    uint64_t b = alloc(8);
    desc(3, b, 8, kDescFWrite | kDescFNext, 3);
    ChainError err = ChainError::kNone;
    double s = seconds([&] { err = post_and_walk(3); });
    EXPECT_CHAIN_ERR(err, ChainError::kLoop);
    EXPECT_LT(s, 1.0);
}

// A chain using every descriptor once is legal; the same chain closed into a cycle is longer
// than the queue and must be cut off.
TEST_P(SplitQueue, ChainOfQueueSizeIsAcceptedButLongerIsLoop) {
    const uint16_t n = cfg_.size;
    uint64_t b = alloc(n);
    for (uint16_t i = 0; i < n; ++i)
        desc(i, b + i, 1, static_cast<uint16_t>(i + 1 < n ? kDescFNext : 0), static_cast<uint16_t>(i + 1));
    ASSERT_EQ(post_and_walk(0), ChainError::kNone);
    EXPECT_EQ(chain_.n_readable, size_t{n});
    EXPECT_EQ(chain_.readable_bytes, uint64_t{n});
    expect_iov(0, b, 1);
    expect_iov(n - 1, b + n - 1, 1);
    // Close the cycle: last -> first.
    desc(static_cast<uint16_t>(n - 1), b + n - 1, 1, kDescFNext, 0);
    ChainError err = ChainError::kNone;
    double s = seconds([&] { err = post_and_walk(0); });
    EXPECT_CHAIN_ERR(err, ChainError::kLoop);
    EXPECT_LT(s, 1.0);
    // Starting mid-cycle too.
    EXPECT_CHAIN_ERR(post_and_walk(static_cast<uint16_t>(n / 2)), ChainError::kLoop);
}

TEST_P(SplitQueue, NextOutOfRangeIsBadIndex) {
    uint64_t b = alloc(16);
    for (uint16_t bad : {cfg_.size, static_cast<uint16_t>(cfg_.size + 1), static_cast<uint16_t>(0xffff)}) {
        SCOPED_TRACE(bad);
        desc(0, b, 8, kDescFNext, bad);
        EXPECT_CHAIN_ERR(post_and_walk(0), ChainError::kBadIndex);
    }
    // NEXT clear: `next` is ignored even when out of range.
    desc(0, b, 8, 0, 0xffff);
    EXPECT_EQ(post_and_walk(0), ChainError::kNone);
}

TEST_P(SplitQueue, AvailHeadOutOfRangeFailsPopHeadWithoutConsumingIt) {
    for (uint16_t bad : {cfg_.size, static_cast<uint16_t>(0xffff)}) {
        SCOPED_TRACE(bad);
        uint16_t before = vq_->last_avail();
        post(bad);
        auto p = vq_->pending();
        ASSERT_TRUE(p.ok());
        ASSERT_GE(p.value(), 1);
        auto h = vq_->pop_head();
        ASSERT_FALSE(h.ok()) << "head " << h.value() << " accepted";
        EXPECT_EQ(h.error().code, Errc::kInvalid);
        EXPECT_EQ(vq_->last_avail(), before);
        // Repair the slot (as a test harness would) so the next round starts clean.
        dq_->write_avail_ring(static_cast<uint16_t>(avail_ - 1), 0);
        desc(0, alloc(8), 8, 0);
        ASSERT_TRUE(vq_->pop_head().ok());
    }
    // Also through walk(): an out-of-range head is an index error, not a memory access.
    EXPECT_CHAIN_ERR(walk(cfg_.size), ChainError::kBadIndex);
}

TEST_P(SplitQueue, AvailIdxJumpingBeyondQueueSizeIsAnError) {
    dq_->write_avail_idx(cfg_.size);  // exactly a full ring: fine
    auto p = vq_->pending();
    ASSERT_TRUE(p.ok());
    EXPECT_EQ(p.value(), cfg_.size);
    dq_->write_avail_idx(static_cast<uint16_t>(cfg_.size + 1));
    auto q = vq_->pending();
    ASSERT_FALSE(q.ok()) << "pending() = " << q.value();
    EXPECT_EQ(q.error().code, Errc::kInvalid);
    // Moving backwards is a huge forward jump mod 2^16.
    ASSERT_TRUE(activate(5, cfg_.ind).ok());
    dq_->write_avail_idx(4);
    EXPECT_FALSE(vq_->pending().ok());
    // Across the wrap: 65530 + size + 1.
    ASSERT_TRUE(activate(65530, cfg_.ind).ok());
    dq_->write_avail_idx(static_cast<uint16_t>(65530 + cfg_.size + 1));
    EXPECT_FALSE(vq_->pending().ok());
    dq_->write_avail_idx(static_cast<uint16_t>(65530 + cfg_.size));
    ASSERT_TRUE(vq_->pending().ok());
    EXPECT_EQ(vq_->pending().value(), cfg_.size);
}

// ---------------------------------------------------------------------------------------------
// Indirect descriptors

TEST_P(SplitQueue, ValidIndirectChainWalksTableNextLinks) {
    uint64_t hdr = alloc(16), d1 = alloc(100), d2 = alloc(200), st = alloc(1);
    // Table order 0 -> 3 -> 1 -> 2 (next links, not table order, define the chain).
    uint64_t t = table({{hdr, 16, kDescFNext, 3},
                        {d2, 200, kDescFWrite | kDescFNext, 2},
                        {st, 1, kDescFWrite, 0},
                        {d1, 100, kDescFWrite | kDescFNext, 1}});
    desc(5 % cfg_.size, t, 4 * 16, kDescFIndirect);
    ChainError err = post_and_walk(5 % cfg_.size);
    if (!cfg_.ind) {
        EXPECT_CHAIN_ERR(err, ChainError::kBadIndirect);
        return;
    }
    ASSERT_EQ(err, ChainError::kNone) << chain_error_name(err);
    EXPECT_EQ(chain_.n_readable, 1u);
    EXPECT_EQ(chain_.n_writable, 3u);
    EXPECT_EQ(chain_.readable_bytes, 16u);
    EXPECT_EQ(chain_.writable_bytes, 301u);
    expect_iov(0, hdr, 16);
    expect_iov(1, d1, 100);
    expect_iov(2, d2, 200);
    expect_iov(3, st, 1);
}

TEST_P(SplitQueue, IndirectTableSpanningRegionsBufferStillSplits) {
    // The table lies in one region; one of its buffers crosses R0 -> R1.
    uint64_t t = table({{kR1 - 8, 24, kDescFWrite, 0}});
    desc(0, t, 16, kDescFIndirect);
    ChainError err = post_and_walk(0);
    if (!cfg_.ind) {
        EXPECT_CHAIN_ERR(err, ChainError::kBadIndirect);
        return;
    }
    ASSERT_EQ(err, ChainError::kNone) << chain_error_name(err);
    EXPECT_EQ(chain_.n_writable, 2u);
    expect_iov(0, kR1 - 8, 8);
    expect_iov(1, kR1, 16);
}

TEST_P(SplitQueue, IndirectNestedInIndirectIsBadIndirect) {
    uint64_t b = alloc(16);
    uint64_t inner = table({{b, 16, 0, 0}});
    uint64_t outer = table({{b, 8, kDescFNext, 1}, {inner, 16, kDescFIndirect, 0}});
    desc(0, outer, 32, kDescFIndirect);
    EXPECT_CHAIN_ERR(post_and_walk(0), ChainError::kBadIndirect);
    // Nested as the first entry too.
    uint64_t outer2 = table({{inner, 16, kDescFIndirect, 0}});
    desc(0, outer2, 16, kDescFIndirect);
    EXPECT_CHAIN_ERR(post_and_walk(0), ChainError::kBadIndirect);
    // Self-referencing table.
    uint64_t self = alloc(16);
    Desc sd{self, 16, kDescFIndirect, 0};
    std::memcpy(drv(self, 16), &sd, 16);
    desc(0, self, 16, kDescFIndirect);
    EXPECT_CHAIN_ERR(post_and_walk(0), ChainError::kBadIndirect);
}

TEST_P(SplitQueue, IndirectLenNotMultipleOf16IsBadIndirect) {
    uint64_t b = alloc(16);
    uint64_t t = table({{b, 16, 0, 0}, {b, 16, 0, 0}});
    for (uint32_t len : {1u, 15u, 17u, 24u, 31u}) {
        SCOPED_TRACE(len);
        desc(0, t, len, kDescFIndirect);
        EXPECT_CHAIN_ERR(post_and_walk(0), ChainError::kBadIndirect);
    }
}

TEST_P(SplitQueue, IndirectLenZeroIsBadIndirect) {
    desc(0, alloc(16), 0, kDescFIndirect);
    EXPECT_CHAIN_ERR(post_and_walk(0), ChainError::kBadIndirect);
}

TEST_P(SplitQueue, IndirectWithNextFlagIsBadIndirect) {
    uint64_t b = alloc(16);
    uint64_t t = table({{b, 16, 0, 0}});
    desc(0, t, 16, kDescFIndirect | kDescFNext, 1);
    desc(1, b, 8, kDescFWrite);
    EXPECT_CHAIN_ERR(post_and_walk(0), ChainError::kBadIndirect);
}

TEST_P(SplitQueue, IndirectWhenNotNegotiatedIsBadIndirect) {
    ASSERT_TRUE(activate(0, /*indirect=*/false).ok());
    uint64_t b = alloc(16);
    uint64_t t = table({{b, 16, 0, 0}});
    desc(0, t, 16, kDescFIndirect);
    avail_ = 0;  // activate(0) restarted the device at avail 0; re-post from slot 0
    dq_->write_avail_idx(0);
    EXPECT_CHAIN_ERR(post_and_walk(0), ChainError::kBadIndirect);
}

TEST_P(SplitQueue, IndirectTableOutsideOrAcrossGuestMemoryIsBadIndirect) {
    // In the unmapped gap.
    desc(0, kGap + 0x1000, 32, kDescFIndirect);
    EXPECT_CHAIN_ERR(post_and_walk(0), ChainError::kBadIndirect);
    // Runs off the end of the last region.
    desc(0, kR2 + kR2Size - 16, 32, kDescFIndirect);
    EXPECT_CHAIN_ERR(post_and_walk(0), ChainError::kBadIndirect);
    // Crosses the R0/R1 boundary (mapped, but not one contiguous mapping).
    desc(0, kR1 - 16, 32, kDescFIndirect);
    EXPECT_CHAIN_ERR(post_and_walk(0), ChainError::kBadIndirect);
    // Address wrapping 2^64.
    desc(0, ~0ull - 15, 32, kDescFIndirect);
    EXPECT_CHAIN_ERR(post_and_walk(0), ChainError::kBadIndirect);
}

TEST_P(SplitQueue, IndirectTableLargerThanMaxIsBadIndirect) {
    const uint32_t n = virtio::SplitQueue::kMaxIndirect + 1;
    uint64_t b = alloc(16);
    std::vector<Desc> t(n, Desc{b, 1, 0, 0});
    desc(0, table(t), n * 16, kDescFIndirect);
    EXPECT_CHAIN_ERR(post_and_walk(0), ChainError::kBadIndirect);
}

TEST_P(SplitQueue, IndirectTableWithLoopIsLoop) {
    uint64_t b = alloc(32);
    const ChainError want = cfg_.ind ? ChainError::kLoop : ChainError::kBadIndirect;
    uint64_t t = table({{b, 8, kDescFNext, 1}, {b + 8, 8, kDescFNext, 2}, {b + 16, 8, kDescFNext, 0}});
    desc(0, t, 48, kDescFIndirect);
    ChainError err = ChainError::kNone;
    double s = seconds([&] { err = post_and_walk(0); });
    EXPECT_CHAIN_ERR(err, want);
    EXPECT_LT(s, 1.0);
    // Self loop inside a max-size table.
    std::vector<Desc> big(virtio::SplitQueue::kMaxIndirect, Desc{b, 1, kDescFNext, 7});
    desc(0, table(big), virtio::SplitQueue::kMaxIndirect * 16, kDescFIndirect);
    s = seconds([&] { err = post_and_walk(0); });
    EXPECT_CHAIN_ERR(err, want);
    EXPECT_LT(s, 1.0);
}

TEST_P(SplitQueue, IndirectNextBeyondTableIsBadIndex) {
    uint64_t b = alloc(16);
    // 3 entries: 0 -> 1 -> 3 (one past the table) while budget remains.
    uint64_t t = table({{b, 8, kDescFNext, 1}, {b + 8, 8, kDescFNext, 3}, {b, 8, 0, 0}});
    desc(0, t, 48, kDescFIndirect);
    EXPECT_CHAIN_ERR(post_and_walk(0), cfg_.ind ? ChainError::kBadIndex : ChainError::kBadIndirect);
    // 0 -> 0xffff.
    t = table({{b, 8, kDescFNext, 0xffff}, {b, 8, 0, 0}});
    desc(0, t, 32, kDescFIndirect);
    EXPECT_CHAIN_ERR(post_and_walk(0), cfg_.ind ? ChainError::kBadIndex : ChainError::kBadIndirect);
}

// ---------------------------------------------------------------------------------------------
// Hostile addresses and lengths

TEST_P(SplitQueue, BufferOutsideGuestMemoryIsBadAddress) {
    uint64_t ok = alloc(16);
    struct Case {
        uint64_t addr;
        uint32_t len;
        const char* what;
    };
    for (const Case& c : {Case{kGap, 1, "start of the gap"}, Case{kGap + 0x12345, 16, "inside the gap"},
                          Case{kR2 - 8, 16, "gap into region 2"}, Case{kR1 + kR1Size - 8, 16, "region 1 into gap"},
                          Case{kR2 + kR2Size, 1, "just past the last region"},
                          Case{0xfffffffffffff000ull, 16, "top of the address space"},
                          Case{kR0, 0x10000000u, "runs from region 0 through region 1 into the gap"}}) {
        SCOPED_TRACE(c.what);
        desc(0, c.addr, c.len, kDescFWrite);
        EXPECT_CHAIN_ERR(post_and_walk(0), ChainError::kBadAddress);
        // A bad buffer after a good one fails the whole chain.
        desc(0, ok, 16, kDescFNext, 1);
        desc(1, c.addr, c.len, kDescFWrite);
        EXPECT_CHAIN_ERR(post_and_walk(0), ChainError::kBadAddress);
    }
}

TEST_P(SplitQueue, AddrPlusLenWrapping2To64IsRejected) {
    desc(0, ~0ull - 0xf, 0x100, kDescFWrite);
    ChainError err = post_and_walk(0);
    EXPECT_TRUE(err == ChainError::kBadAddress || err == ChainError::kTooLong) << chain_error_name(err);
    desc(0, ~0ull, 0xffffffffu, 0);
    err = post_and_walk(0);
    EXPECT_TRUE(err == ChainError::kBadAddress || err == ChainError::kTooLong) << chain_error_name(err);
}

// Guest RAM at gpa 0 plus a region ending exactly at 2^64: a buffer [2^64-16, 2^64+16) must not
// wrap around into gpa 0 and hand the device 16 bytes of low guest memory.
TEST_P(SplitQueue, AddrPlusLenWrapping2To64DoesNotWrapIntoRegionAtZero) {
    const uint64_t top = 0ull - 0x10000;
    rebuild({{kR0, kR0Size, 0}, {top, 0x10000, 0}});
    desc(0, ~0ull - 0xf, 0x20, kDescFWrite);
    ChainError err = post_and_walk(0);
    EXPECT_TRUE(err == ChainError::kBadAddress || err == ChainError::kTooLong)
        << "got '" << chain_error_name(err) << "': n_writable=" << chain_.n_writable
        << " iov[1].base=" << iov_[1].iov_base << " == host(gpa 0)=" << static_cast<void*>(regs_[0]->host());
    // Up to the last byte is a valid buffer.
    desc(0, ~0ull - 0xf, 0x10, kDescFWrite);
    ASSERT_EQ(post_and_walk(0), ChainError::kNone);
    EXPECT_EQ(iov_[0].iov_base, static_cast<void*>(regs_[1]->host() + 0xfff0));
    EXPECT_EQ(iov_[0].iov_len, 0x10u);
}

TEST_P(SplitQueue, ChainOfSeveral4GiBDescriptorsFailsFastWithoutCrash) {
    const uint16_t n = std::min<uint16_t>(cfg_.size, 6);
    for (uint16_t i = 0; i < n; ++i)
        desc(i, kR0, 0xffffffffu, static_cast<uint16_t>(i + 1 < n ? kDescFNext : 0), static_cast<uint16_t>(i + 1));
    ChainError err = ChainError::kNone;
    double s = seconds([&] { err = post_and_walk(0); });
    EXPECT_TRUE(err == ChainError::kBadAddress || err == ChainError::kTooLong) << chain_error_name(err);
    EXPECT_LT(s, 1.0);
}

// With > 4 GiB of (sparse) guest RAM every byte is mapped, so only the total-length cap can stop
// the chain: exactly 4 GiB is accepted, one byte more is kTooLong, decided before translation.
TEST_P(SplitQueue, ChainOver4GiBIsTooLongEvenWhenFullyMapped) {
    rebuild({{0, (4ull << 30) + 2 * kMiB, 0}});
    const uint64_t big = kMiB;
    desc(0, big, 0xffffffffu, kDescFNext, 1);
    desc(1, big, 1, kDescFWrite);
    ASSERT_EQ(post_and_walk(0), ChainError::kNone);
    EXPECT_EQ(chain_.readable_bytes, 0xffffffffu);
    EXPECT_EQ(chain_.writable_bytes, 1u);
    expect_iov(0, big, 0xffffffffu);
    expect_iov(1, big, 1);
    desc(1, big, 2, kDescFWrite);
    EXPECT_CHAIN_ERR(post_and_walk(0), ChainError::kTooLong);
    desc(1, big, 0xffffffffu, kDescFNext, 2);  // readable + readable
    desc(2 % cfg_.size, big, 1, 0);
    EXPECT_CHAIN_ERR(post_and_walk(0), ChainError::kTooLong);
}

TEST_P(SplitQueue, ReadableAfterWritableIsOrderError) {
    uint64_t b = alloc(64);
    desc(0, b, 16, kDescFNext, 1);
    desc(1, b + 16, 16, kDescFWrite | kDescFNext, 2 % cfg_.size);
    desc(2 % cfg_.size, b + 32, 16, 0);
    EXPECT_CHAIN_ERR(post_and_walk(0), ChainError::kOrder);
    // Same inside an indirect table.
    uint64_t t = table({{b, 16, kDescFWrite | kDescFNext, 1}, {b + 16, 16, 0, 0}});
    desc(0, t, 32, kDescFIndirect);
    EXPECT_CHAIN_ERR(post_and_walk(0), cfg_.ind ? ChainError::kOrder : ChainError::kBadIndirect);
}

TEST_P(SplitQueue, MoreSegmentsThanIovSpanIsTooManySegments) {
    uint64_t b = alloc(64);
    const uint16_t n = std::min<uint16_t>(cfg_.size, 4);
    for (uint16_t i = 0; i < n; ++i)
        desc(i, b + 16 * i, 16, static_cast<uint16_t>(kDescFWrite | (i + 1 < n ? kDescFNext : 0)),
             static_cast<uint16_t>(i + 1));
    EXPECT_CHAIN_ERR(post_and_walk(0, n - 1), ChainError::kTooManySegments);
    ASSERT_EQ(post_and_walk(0, n), ChainError::kNone);
    EXPECT_EQ(chain_.n_writable, size_t{n});
    EXPECT_CHAIN_ERR(post_and_walk(0, 0), ChainError::kTooManySegments);
    if (cfg_.ind) {
        std::vector<Desc> t;
        for (uint16_t i = 0; i < 8; ++i) t.push_back(Desc{b + 8 * i, 8, static_cast<uint16_t>(i < 7 ? kDescFNext : 0), static_cast<uint16_t>(i + 1)});
        desc(0, table(t), 8 * 16, kDescFIndirect);
        EXPECT_CHAIN_ERR(post_and_walk(0, 7), ChainError::kTooManySegments);
        ASSERT_EQ(post_and_walk(0, 8), ChainError::kNone);
        EXPECT_EQ(chain_.n_readable, 8u);
    }
}

// Double fetch: the guest rewrites a descriptor while the device walks it. The device must use
// one copy: any accepted chain has exactly the (addr, len) of one consistent, valid version.
TEST_P(SplitQueue, DescriptorRewrittenDuringWalkIsUsedAsOneValidatedCopy) {
    uint64_t good = alloc(64);
    // Simple: the iovecs reflect the descriptor at walk time, later rewrites don't change them.
    desc(0, good, 64, kDescFWrite);
    ASSERT_EQ(walk(0), ChainError::kNone);
    desc(0, kGap, 0x7fffffff, kDescFWrite);
    expect_iov(0, good, 64);
    EXPECT_EQ(chain_.writable_bytes, 64u);
    // Concurrent: flip between a good and a hostile version.
    auto* slot = dq_->desc_host();
    const Desc a{good, 64, kDescFWrite, 0};
    const Desc b{kGap + 0x100, 0x7fffffff, kDescFWrite | kDescFNext, 0xffff};
    uint64_t aw[2], bw[2];
    std::memcpy(aw, &a, 16);
    std::memcpy(bw, &b, 16);
    std::atomic<bool> stop{false};
    std::thread flipper([&] {
        std::atomic_ref<uint64_t> lo(*reinterpret_cast<uint64_t*>(slot));
        std::atomic_ref<uint64_t> hi(*reinterpret_cast<uint64_t*>(slot + 8));
        for (unsigned i = 0; !stop.load(std::memory_order_relaxed); ++i) {
            const uint64_t* w = (i & 1) ? bw : aw;
            lo.store(w[0], std::memory_order_relaxed);
            hi.store(w[1], std::memory_order_relaxed);
        }
    });
    int accepted = 0;
    for (int i = 0; i < 20000; ++i) {
        ChainError err = ChainError::kNone;
        Chain c{};
        bool ok = vq_->walk(0, std::span<iovec>(iov_.data(), 4), &c, &err);
        if (ok) {
            ++accepted;
            ASSERT_EQ(c.n_writable, 1u);
            ASSERT_EQ(iov_[0].iov_base, static_cast<void*>(dev(good)));
            ASSERT_EQ(iov_[0].iov_len, 64u);
        } else {
            ASSERT_TRUE(err == ChainError::kBadAddress || err == ChainError::kBadIndex)
                << chain_error_name(err);
        }
    }
    stop = true;
    flipper.join();
    RecordProperty("accepted", accepted);
}

// ---------------------------------------------------------------------------------------------
// Used ring publication and notifications

TEST_P(SplitQueue, PublishUsedMakesAWholeBatchVisibleWithOneIndexStore) {
    uint64_t b = alloc(64);
    const uint16_t start = vq_->ring_used_idx();
    std::vector<uint16_t> heads;
    for (int i = 0; i < 3; ++i) {
        std::array<DriverBuf, 1> one{{{b + 16u * i, 16, true}}};
        auto h = dq_->add_chain(one);
        ASSERT_TRUE(h.ok());
        heads.push_back(h.value());
    }
    dq_->publish();
    ASSERT_EQ(vq_->pending().value(), 3);
    for (int i = 0; i < 3; ++i) ASSERT_EQ(vq_->pop_head().value(), heads[i]);
    // Complete out of order: 2, 0, 1. Nothing is visible until publish.
    const int order[3] = {2, 0, 1};
    for (int k = 0; k < 3; ++k) {
        vq_->push_used(heads[order[k]], static_cast<uint32_t>(100 + order[k]));
        EXPECT_EQ(vq_->ring_used_idx(), start);
        EXPECT_EQ(dq_->read_used_idx(), start);
        EXPECT_FALSE(dq_->has_used());
    }
    EXPECT_EQ(vq_->used_idx(), static_cast<uint16_t>(start + 3));
    EXPECT_TRUE(vq_->publish_used());
    EXPECT_EQ(dq_->read_used_idx(), static_cast<uint16_t>(start + 3));
    for (int k = 0; k < 3; ++k) {
        UsedElem e = raw_used(static_cast<uint16_t>(start + k));
        EXPECT_EQ(e.id, uint32_t{heads[order[k]]});
        EXPECT_EQ(e.len, static_cast<uint32_t>(100 + order[k]));
        auto u = dq_->pop_used();
        ASSERT_TRUE(u.has_value()) << dq_->broken_reason();
        EXPECT_EQ(u->id, uint32_t{heads[order[k]]});
        EXPECT_EQ(u->len, static_cast<uint32_t>(100 + order[k]));
    }
    EXPECT_FALSE(dq_->pop_used().has_value());
    EXPECT_FALSE(vq_->publish_used());  // nothing new
    EXPECT_EQ(dq_->read_used_idx(), static_cast<uint16_t>(start + 3));
}

TEST_P(SplitQueue, NeedsNotifyFollowsNoInterruptOrUsedEventExactly) {
    // Start the used index just before the 16-bit wrap so the event arithmetic wraps too.
    const uint16_t base = 65533;
    set_ring_used_idx(base);
    ASSERT_TRUE(activate(0, cfg_.ind).ok());
    ASSERT_EQ(vq_->used_idx(), base);
    desc(0, alloc(8), 8, kDescFWrite);
    // Completes `n` chains and publishes them; returns needs_notify().
    auto complete = [&](int n) {
        for (int i = 0; i < n; ++i) post(0);
        EXPECT_EQ(vq_->pending().value(), n);
        for (int i = 0; i < n; ++i) device_complete_one(1);
        EXPECT_TRUE(vq_->publish_used());
        return vq_->needs_notify();
    };
    if (!cfg_.evt) {
        dq_->write_used_event(0x1234);  // meaningless without EVENT_IDX
        dq_->write_avail_flags(kAvailFNoInterrupt);
        EXPECT_FALSE(complete(1)) << "NO_INTERRUPT set, yet notified (first time)";
        EXPECT_FALSE(complete(2));
        dq_->write_avail_flags(0);
        EXPECT_TRUE(complete(1));
        EXPECT_TRUE(complete(1));
        dq_->write_avail_flags(kAvailFNoInterrupt);
        EXPECT_FALSE(complete(3));
        return;
    }
    // EVENT_IDX: NO_INTERRUPT must be ignored; decisions follow vring_need_event.
    dq_->write_avail_flags(kAvailFNoInterrupt);
    uint16_t used = base;
    struct Case {
        int n;           // completions in this batch
        int event_off;   // used_event = old + event_off
        bool want;
        const char* what;
    };
    const Case cases[] = {
        {1, 1000, true, "first notification is always sent"},
        {1, 1, false, "used_event not reached (== new idx)"},
        {1, 0, true, "used_event just passed (== old idx)"},
        {1, -1, false, "used_event already passed before this batch"},
        {3, 1, true, "used_event inside a batch"},
        {3, 2, true, "used_event at the batch's last entry"},
        {3, 3, false, "used_event one past the batch"},
        {2, 100, false, "used_event far ahead"},
        {0, 0, false, "no new used entries since the last decision"},
    };
    for (const Case& c : cases) {
        SCOPED_TRACE(c.what);
        const uint16_t old = used;
        const uint16_t ev = static_cast<uint16_t>(old + c.event_off);
        dq_->write_used_event(ev);
        bool got;
        if (c.n == 0) {
            got = vq_->needs_notify();
        } else {
            got = complete(c.n);
        }
        used = static_cast<uint16_t>(used + c.n);
        EXPECT_EQ(vq_->ring_used_idx(), used);
        EXPECT_EQ(got, c.want) << "old=" << old << " new=" << used << " used_event=" << ev;
        if (&c != &cases[0]) {
            EXPECT_EQ(c.want, testing::vring_need_event(ev, used, old)) << "test table wrong";
        }
    }
    // Re-activation (e.g. after reconnect) makes the next decision a "first" one again.
    ASSERT_TRUE(activate(vq_->last_avail(), cfg_.ind).ok());
    dq_->write_used_event(static_cast<uint16_t>(used + 100));
    EXPECT_TRUE(complete(1));
}

TEST_P(SplitQueue, EnableDisableNotifyDriveKickSuppressionAndRecheckRace) {
    desc(0, alloc(8), 8, kDescFWrite);
    if (!cfg_.evt) {
        EXPECT_EQ(dq_->read_used_flags() & kUsedFNoNotify, 0);
        vq_->disable_notify();
        EXPECT_EQ(dq_->read_used_flags() & kUsedFNoNotify, kUsedFNoNotify);
        // Driver sees kicks are not wanted.
        std::array<DriverBuf, 1> one{{{alloc(8), 8, true}}};
        ASSERT_TRUE(dq_->add_chain(one).ok());
        auto k = dq_->publish_and_kick(-1);
        ASSERT_TRUE(k.ok());
        EXPECT_FALSE(k.value());
        // The driver published before we re-enabled: enable_notify must say "work arrived".
        EXPECT_TRUE(vq_->enable_notify());
        EXPECT_EQ(dq_->read_used_flags() & kUsedFNoNotify, 0);
        ASSERT_TRUE(vq_->pop_head().ok());
        EXPECT_FALSE(vq_->enable_notify());
        ASSERT_TRUE(dq_->add_chain(one).ok());
        k = dq_->publish_and_kick(-1);
        EXPECT_TRUE(k.value());
        return;
    }
    // EVENT_IDX: pop_head keeps avail_event = last_avail while enabled.
    post(0);
    post(0);
    ASSERT_TRUE(vq_->pop_head().ok());
    EXPECT_EQ(dq_->read_avail_event(), 1);
    ASSERT_TRUE(vq_->pop_head().ok());
    EXPECT_EQ(dq_->read_avail_event(), 2);
    // Disabled: avail_event is parked one behind what was consumed (last_avail - 1 = 1), so the
    // driver's next publish does not cross it, and it stays there as we consume.
    vq_->disable_notify();
    EXPECT_EQ(dq_->read_avail_event(), 1);
    uint16_t old_idx = dq_->read_avail_idx();
    post(0);
    EXPECT_FALSE(dq_->device_wants_kick(old_idx)) << "disabled queue asked for a kick";
    post(0);
    ASSERT_TRUE(vq_->pop_head().ok());
    ASSERT_TRUE(vq_->pop_head().ok());
    EXPECT_EQ(dq_->read_avail_event(), 1);
    // Nothing new: enable writes avail_event = last_avail (4) and reports no work.
    EXPECT_FALSE(vq_->enable_notify());
    EXPECT_EQ(dq_->read_avail_event(), 4);
    // Race: the driver publishes while we are disabled, before the enable.
    vq_->disable_notify();
    post(0);
    EXPECT_TRUE(vq_->enable_notify());
    EXPECT_EQ(dq_->read_avail_event(), 4);
    EXPECT_EQ(vq_->last_avail(), 4);
    ASSERT_TRUE(vq_->pop_head().ok());
    EXPECT_EQ(dq_->read_avail_event(), 5);
    EXPECT_FALSE(vq_->enable_notify());
}

// ---------------------------------------------------------------------------------------------
// Activation

TEST_P(SplitQueue, ActivateRejectsBadSizesAlignmentAndRingsOutsideOneRegion) {
    const QueueLayout good = layout();
    auto expect_reject = [&](const QueueLayout& l, Errc want, const char* what) {
        SCOPED_TRACE(what);
        ASSERT_TRUE(vq_->activate(map_, good, 0, cfg_.evt, cfg_.ind).ok());
        ASSERT_TRUE(vq_->active());
        auto st = vq_->activate(map_, l, 0, cfg_.evt, cfg_.ind);
        ASSERT_FALSE(st.ok());
        EXPECT_EQ(st.error().code, want) << st.error().describe();
        EXPECT_FALSE(vq_->active());
    };
    for (uint16_t s : {0, 3, 6, 1000, 2048, 4096, 32768}) {
        QueueLayout l = good;
        l.size = s;
        expect_reject(l, Errc::kInvalid, ("size " + std::to_string(s)).c_str());
    }
    QueueLayout l = good;
    l.desc_uva += 8;
    expect_reject(l, Errc::kInvalid, "desc not 16-aligned");
    l = good;
    l.avail_uva += 1;
    expect_reject(l, Errc::kInvalid, "avail not 2-aligned");
    l = good;
    l.used_uva += 2;
    expect_reject(l, Errc::kInvalid, "used not 4-aligned");
    l = good;
    l.desc_uva = 0x1000;
    expect_reject(l, Errc::kOutOfRange, "desc not in any region");
    l = good;
    l.avail_uva = 0;
    expect_reject(l, Errc::kOutOfRange, "avail at uva 0");
    l = good;
    l.used_uva = ~0ull - 3;
    expect_reject(l, Errc::kOutOfRange, "used at top of VA, wrapping");

    // Rings at the very end of region 1: exactly fitting is accepted, a little more is not.
    const uint64_t end = gm_->regions()[1].uva() + kR1Size;
    const uint16_t n = cfg_.size;
    l = good;
    l.desc_uva = end - desc_table_bytes(n);
    l.avail_uva = end - desc_table_bytes(n) - 0x1000;
    l.used_uva = end - desc_table_bytes(n) - 0x2000 - 0x1000 * (n / 256);
    {
        auto st = vq_->activate(map_, l, 0, cfg_.evt, cfg_.ind);
        ASSERT_TRUE(st.ok()) << st.error().describe();
    }
    QueueLayout x = l;
    x.desc_uva = end - desc_table_bytes(n) + 16;
    expect_reject(x, Errc::kOutOfRange, "desc table crosses region end");
    x = l;
    x.avail_uva = end - avail_ring_bytes(n);
    x.desc_uva = good.desc_uva;
    {
        auto st = vq_->activate(map_, x, 0, cfg_.evt, cfg_.ind);
        EXPECT_TRUE(st.ok()) << "avail ring (with used_event) exactly at the end: " << st.error().describe();
    }
    x.avail_uva = end - avail_ring_bytes(n) + 2;  // used_event trailer outside
    expect_reject(x, Errc::kOutOfRange, "avail used_event trailer beyond region end");
    x = l;
    x.desc_uva = good.desc_uva;
    x.used_uva = end - used_ring_bytes(n) - 2;  // 4-aligned, fits
    {
        auto st = vq_->activate(map_, x, 0, cfg_.evt, cfg_.ind);
        EXPECT_TRUE(st.ok()) << "used ring fitting at the end: " << st.error().describe();
    }
    x.used_uva = end - used_ring_bytes(n) + 2;  // avail_event trailer outside
    expect_reject(x, Errc::kOutOfRange, "used avail_event trailer beyond region end");
}

TEST_P(SplitQueue, ActivateAcceptsMaxQueueSize1024) {
    const uint16_t n = 1024;
    uint64_t d = alloc(desc_table_bytes(n), 16), a = alloc(avail_ring_bytes(n), 2), u = alloc(used_ring_bytes(n), 4);
    QueueLayout l{n, gm_->uva_of(d), gm_->uva_of(a), gm_->uva_of(u)};
    auto st = vq_->activate(map_, l, 0, cfg_.evt, cfg_.ind);
    ASSERT_TRUE(st.ok()) << st.error().describe();
    EXPECT_TRUE(vq_->active());
    EXPECT_EQ(vq_->size(), 1024);
}

// ---------------------------------------------------------------------------------------------
// Live migration: every kind of write into the used ring marks the ring in the dirty log, at the
// ring's log address, and nothing is marked without a log.

TEST_P(SplitQueue, EachUsedRingWriteMarksTheLogAtTheLogAddress) {
    constexpr uint64_t kLogBytes = 64;  // 512 pages: guest memory below 2 MiB
    UniqueFd fd(memfd_create("log", MFD_CLOEXEC | MFD_ALLOW_SEALING));
    ASSERT_EQ(ftruncate(fd.get(), kLogBytes), 0);
    ASSERT_EQ(fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK), 0);
    auto log = shm::DirtyLog::map(fd.get(), kLogBytes, 0);
    ASSERT_TRUE(log.ok()) << log.error().describe();
    const uint8_t* bits = log.value()->bits();
    auto marked = [&](uint64_t gpa) { return (bits[gpa / 4096 / 8] >> (gpa / 4096 % 8)) & 1; };
    auto clear = [&] { std::memset(const_cast<uint8_t*>(bits), 0, kLogBytes); };
    auto none = [&] { return std::all_of(bits, bits + kLogBytes, [](uint8_t b) { return b == 0; }); };
    // A log address apart from the ring (region 1), so a mark can only come from this queue's
    // used-ring writes.
    const uint64_t at = kR1 + 0x8000;
    vq_->set_used_log(log.value().get(), at);
    auto ring_marked = [&] { return marked(at) && marked(at + used_ring_bytes(cfg_.size) - 1) && !marked(dq_->used_gpa()); };

    uint64_t buf = alloc(64);
    std::array<DriverBuf, 1> b{{{buf, 64, true}}};
    auto head = dq_->add_chain(b);
    ASSERT_TRUE(head.ok());
    dq_->publish();
    ASSERT_TRUE(vq_->pending().ok());
    vq_->enable_notify();
    clear();
    ASSERT_TRUE(vq_->pop_head().ok());
    if (cfg_.evt) {
        EXPECT_TRUE(ring_marked()) << "avail_event written by pop_head";
    }
    clear();
    vq_->push_used(head.value(), 64);
    vq_->publish_used();
    EXPECT_TRUE(ring_marked()) << "used entry and used->idx";
    clear();
    vq_->disable_notify();
    EXPECT_TRUE(ring_marked()) << "disable_notify: used->flags or avail_event";
    clear();
    vq_->enable_notify();
    EXPECT_TRUE(ring_marked()) << "enable_notify: used->flags or avail_event";
    vq_->set_used_log(nullptr, 0);
    clear();
    vq_->enable_notify();
    vq_->disable_notify();
    EXPECT_TRUE(none()) << "marked without a log";
}

}  // namespace
}  // namespace vhostd::virtio
