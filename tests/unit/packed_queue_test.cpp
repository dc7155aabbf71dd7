// Device side of a packed virtqueue (virtio::PackedQueue) against a driver's view of the same
// ring (testing::PackedDriverQueue) over memfd guest memory mapped the way the daemon maps it.
// The driver is an adversary too: the hostile tests write raw descriptors.
//
// Every test runs for queue sizes 8/16/256 x EVENT_IDX on/off x INDIRECT_DESC on/off.
#include <fcntl.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <memory>
#include <random>
#include <vector>

#include "shm/dirty_log.hpp"
#include "shm/memory_map.hpp"
#include "testing/packed_driver_queue.hpp"
#include "vhost/mem_table.hpp"
#include "virtio/packed_queue.hpp"

namespace vhostd::virtio {
namespace {

using testing::DriverBuf;
using testing::GuestRam;
using testing::PackedDriverQueue;

constexpr uint64_t kMiB = 1ull << 20;
constexpr uint64_t kR0 = 0;         // rings and buffers
constexpr uint64_t kR1 = 16 * kMiB;  // a second region
constexpr uint64_t kGap = 64 * kMiB; // unmapped

struct Cfg {
    uint16_t size;
    bool evt;
    bool ind;
};
std::string cfg_name(const ::testing::TestParamInfo<Cfg>& i) {
    return fmt::format("q{}_{}_{}", i.param.size, i.param.evt ? "evt" : "noevt", i.param.ind ? "ind" : "noind");
}

class Packed : public ::testing::TestWithParam<Cfg> {
protected:
    void SetUp() override {
        cfg_ = GetParam();
        auto g = GuestRam::create({{kR0, 16 * kMiB, 0}, {kR1, kMiB, 0}});
        ASSERT_TRUE(g.ok()) << g.error().describe();
        gm_ = std::move(g).value();
        for (const auto& r : gm_->regions()) {
            auto m = shm::Region::map(vhost::to_region_desc(r.desc()), r.fd());
            ASSERT_TRUE(m.ok()) << m.error().describe();
            regs_.push_back(m.value());
        }
        auto mm = shm::MemoryMap::build(regs_);
        ASSERT_TRUE(mm.ok());
        map_ = mm.value();
        auto q = PackedDriverQueue::create(*gm_, cfg_.size, cfg_.evt);
        ASSERT_TRUE(q.ok()) << q.error().describe();
        dq_ = std::move(q).value();
        ASSERT_TRUE(vq_.activate(map_, dq_->layout(), kPackedFreshBase, cfg_.evt, cfg_.ind).ok());
    }

    uint64_t alloc(uint64_t size, uint64_t align = 16) {
        auto g = gm_->alloc_in(0, size, align);
        EXPECT_TRUE(g.ok());
        return g.ok() ? g.value() : 0;
    }
    uint8_t* dev(uint64_t gpa) const {
        const auto rs = gm_->regions();
        for (size_t i = 0; i < rs.size(); ++i)
            if (gpa >= rs[i].gpa() && gpa - rs[i].gpa() < rs[i].size()) return regs_[i]->host() + (gpa - rs[i].gpa());
        return nullptr;
    }
    // Adds and publishes a chain; returns its id.
    uint16_t post(std::span<const DriverBuf> bufs, bool indirect = false) {
        auto id = dq_->add_chain(bufs, indirect);
        EXPECT_TRUE(id.ok()) << id.error().describe();
        dq_->publish();
        return id.ok() ? id.value() : 0xffff;
    }
    // Device: takes the next chain and walks it. Returns the id (0xffff on failure).
    uint16_t take(ChainError* err = nullptr) {
        auto p = vq_.pending();
        EXPECT_TRUE(p.ok());
        if (!p.ok() || p.value() == 0) return 0xffff;
        auto id = vq_.pop_head();
        EXPECT_TRUE(id.ok()) << id.error().describe();
        if (!id.ok()) return 0xffff;
        ChainError e = ChainError::kNone;
        bool ok = vq_.walk(id.value(), iov_, &chain_, &e);
        if (err != nullptr) *err = e;
        else EXPECT_TRUE(ok) << chain_error_name(e);
        return id.value();
    }

    Cfg cfg_{};
    std::unique_ptr<GuestRam> gm_;
    std::vector<std::shared_ptr<const shm::Region>> regs_;
    std::shared_ptr<const shm::MemoryMap> map_;
    std::unique_ptr<PackedDriverQueue> dq_;
    PackedQueue vq_;
    std::array<iovec, 64> iov_{};
    Chain chain_{};
};

INSTANTIATE_TEST_SUITE_P(, Packed,
                         ::testing::Values(Cfg{8, false, false}, Cfg{8, false, true}, Cfg{8, true, false},
                                           Cfg{8, true, true}, Cfg{16, false, true}, Cfg{16, true, true},
                                           Cfg{256, false, false}, Cfg{256, true, true}),
                         cfg_name);

// ---- well-formed rings ------------------------------------------------------------------------

TEST_P(Packed, ABlkStyleChainWalksIntoTheDriversBuffers) {
    uint64_t hdr = alloc(16), data = alloc(512), status = alloc(1);
    std::array<DriverBuf, 3> bufs{{{hdr, 16, false}, {data, 512, true}, {status, 1, true}}};
    for (bool indirect : {false, true}) {
        if (indirect && !cfg_.ind) continue;
        SCOPED_TRACE(indirect ? "indirect" : "direct");
        uint16_t id = post(bufs, indirect);
        EXPECT_EQ(take(), id);
        EXPECT_EQ(chain_.n_readable, 1u);
        EXPECT_EQ(chain_.n_writable, 2u);
        EXPECT_EQ(chain_.readable_bytes, 16u);
        EXPECT_EQ(chain_.writable_bytes, 513u);
        EXPECT_EQ(iov_[0].iov_base, dev(hdr));
        EXPECT_EQ(iov_[1].iov_base, dev(data));
        EXPECT_EQ(iov_[1].iov_len, 512u);
        EXPECT_EQ(iov_[2].iov_base, dev(status));
        vq_.push_used(id, 513);
        EXPECT_TRUE(vq_.publish_used());
        auto u = dq_->pop_used();
        ASSERT_TRUE(u.has_value());
        EXPECT_EQ(u->id, id);
        EXPECT_EQ(u->len, 513u);
        EXPECT_FALSE(dq_->broken()) << dq_->broken_reason();
    }
}

TEST_P(Packed, OutOfOrderCompletionsReachTheDriverInCompletionOrder) {
    uint64_t b = alloc(4096);
    std::vector<uint16_t> ids;
    for (uint16_t n = 1; n <= 3 && n <= cfg_.size / 2; ++n) {
        std::vector<DriverBuf> bufs(n, DriverBuf{b, 64, true});
        ids.push_back(post(bufs));
    }
    auto p = vq_.pending();
    ASSERT_TRUE(p.ok());
    ASSERT_EQ(p.value(), ids.size());
    std::vector<uint16_t> got;
    for (size_t i = 0; i < ids.size(); ++i) got.push_back(take());
    EXPECT_EQ(got, ids) << "taken in ring order";
    std::vector<uint16_t> order(ids.rbegin(), ids.rend());
    for (uint16_t id : order) vq_.push_used(id, 7);
    vq_.publish_used();
    for (uint16_t id : order) {
        auto u = dq_->pop_used();
        ASSERT_TRUE(u.has_value());
        EXPECT_EQ(u->id, id);
    }
    EXPECT_FALSE(dq_->pop_used().has_value());
    EXPECT_EQ(vq_.next_used(), dq_->next_used()) << "both sides skipped the same slots";
    EXPECT_EQ(vq_.next_avail(), dq_->next_avail());
}

TEST_P(Packed, ManyRoundsOfMixedChainsKeepBothSidesInStep) {
    std::mt19937 rng(cfg_.size * 7 + cfg_.evt);
    uint64_t b = alloc(4096);
    const uint32_t rounds = 6u * cfg_.size;
    std::vector<uint16_t> flight;
    uint32_t completed = 0;
    for (uint32_t i = 0; i < rounds; ++i) {
        // The driver adds what fits; the device takes everything and completes a random subset
        // in a random order, in batches; the driver reaps.
        for (int k = 0; k < 3; ++k) {
            size_t n = 1 + rng() % 3;
            std::vector<DriverBuf> bufs(n, DriverBuf{b, 32, true});
            bool ind = cfg_.ind && rng() % 3 == 0;
            auto id = dq_->add_chain(bufs, ind);
            if (!id.ok()) break;
        }
        dq_->publish();
        auto p = vq_.pending();
        ASSERT_TRUE(p.ok()) << p.error().describe();
        for (uint16_t k = 0, n = p.value(); k < n; ++k) flight.push_back(take());
        std::shuffle(flight.begin(), flight.end(), rng);
        size_t done = rng() % (flight.size() + 1);
        for (size_t k = 0; k < done; ++k) vq_.push_used(flight[k], 32);
        vq_.publish_used();
        flight.erase(flight.begin(), flight.begin() + static_cast<long>(done));
        while (auto u = dq_->pop_used()) {
            EXPECT_EQ(u->len, 32u);
            ++completed;
        }
        ASSERT_FALSE(dq_->broken()) << dq_->broken_reason();
    }
    for (uint16_t id : flight) vq_.push_used(id, 32);
    vq_.publish_used();
    while (dq_->pop_used()) ++completed;
    EXPECT_EQ(dq_->ids_in_use(), 0u);
    EXPECT_EQ(vq_.in_flight(), 0u);
    EXPECT_EQ(vq_.next_used(), dq_->next_used());
    EXPECT_GT(completed, 2u * cfg_.size) << "the rings wrapped several times";
}

TEST_P(Packed, ABatchBecomesVisibleOnlyAtPublish) {
    uint64_t b = alloc(64);
    DriverBuf buf{b, 64, true};
    uint16_t a = post({&buf, 1});
    uint16_t c = post({&buf, 1});
    ASSERT_EQ(take(), a);
    ASSERT_EQ(take(), c);
    vq_.push_used(a, 1);
    vq_.push_used(c, 1);
    EXPECT_FALSE(dq_->pop_used().has_value()) << "the batch's first descriptor is stored last";
    EXPECT_TRUE(vq_.publish_used());
    EXPECT_TRUE(dq_->pop_used().has_value());
    EXPECT_TRUE(dq_->pop_used().has_value());
    EXPECT_FALSE(vq_.publish_used()) << "nothing left to publish";
}

TEST_P(Packed, RewindGivesChainsBackInOrder) {
    if (cfg_.size < 4) return;
    uint64_t b = alloc(64);
    DriverBuf buf{b, 64, true};
    std::vector<uint16_t> ids;
    for (int i = 0; i < 3; ++i) ids.push_back(post({&buf, 1}));
    for (int i = 0; i < 3; ++i) take();
    vq_.rewind(2);
    auto p = vq_.pending();
    ASSERT_TRUE(p.ok());
    EXPECT_EQ(p.value(), 2u);
    EXPECT_EQ(take(), ids[1]);
    EXPECT_EQ(take(), ids[2]);
    EXPECT_EQ(vq_.in_flight(), 3u);
}

TEST_P(Packed, TheBaseCarriesBothPositionsAndWrapCounters) {
    const PackedPos avail{static_cast<uint16_t>(cfg_.size - 1), false}, used{static_cast<uint16_t>(3 % cfg_.size), false};
    ASSERT_TRUE(vq_.activate(map_, dq_->layout(), packed_base(avail, used), cfg_.evt, cfg_.ind).ok());
    EXPECT_EQ(vq_.next_avail(), avail);
    EXPECT_EQ(vq_.next_used(), used);
    EXPECT_EQ(vq_.base(), packed_base(avail, used));
    EXPECT_FALSE(vq_.activate(map_, dq_->layout(), packed_base({cfg_.size, true}, {0, true}), cfg_.evt, cfg_.ind).ok())
        << "an index past the ring";
    // A driver continuing from there: the device takes its next chain at the same slot.
    ASSERT_TRUE(vq_.activate(map_, dq_->layout(), packed_base(avail, avail), cfg_.evt, cfg_.ind).ok());
    dq_->set_positions(avail, avail);
    uint64_t b = alloc(64);
    DriverBuf buf{b, 64, true};
    uint16_t id = post({&buf, 1});
    EXPECT_EQ(take(), id);
    vq_.push_used(id, 1);
    vq_.publish_used();
    EXPECT_TRUE(dq_->pop_used().has_value());
}

TEST_P(Packed, NotificationsFollowBothSuppressionAreas) {
    uint64_t b = alloc(64);
    DriverBuf buf{b, 64, true};
    // Used buffer notifications, as the driver asks.
    dq_->enable_call(false);
    uint16_t id = post({&buf, 1});
    take();
    vq_.push_used(id, 1);
    vq_.publish_used();
    EXPECT_FALSE(vq_.needs_notify()) << "driver disabled them";
    ASSERT_TRUE(dq_->pop_used().has_value());
    dq_->enable_call(true);
    id = post({&buf, 1});
    take();
    vq_.push_used(id, 1);
    vq_.publish_used();
    EXPECT_TRUE(vq_.needs_notify());
    if (cfg_.evt && cfg_.size >= 4) {
        // The driver asked for the slot it has reaped up to (before this one): a second
        // completion without the driver reaping is past its event and is not notified.
        id = post({&buf, 1});
        take();
        vq_.push_used(id, 1);
        vq_.publish_used();
        EXPECT_FALSE(vq_.needs_notify()) << "the driver's event descriptor was already passed";
    }
    // Available buffer notifications (kicks), as the device asks.
    vq_.disable_notify();
    ASSERT_TRUE(dq_->add_chain({&buf, 1}).ok());
    dq_->publish();
    EXPECT_FALSE(dq_->kick_prepare()) << "device disabled kicks";
    EXPECT_TRUE(vq_.enable_notify()) << "a chain arrived before kicks were enabled";
    while (vq_.pending().value() > 0) take();
    EXPECT_FALSE(vq_.enable_notify()) << "nothing pending";
    ASSERT_TRUE(dq_->add_chain({&buf, 1}).ok());
    dq_->publish();
    EXPECT_TRUE(dq_->kick_prepare()) << "device enabled kicks";
}

TEST_P(Packed, UsedWritesAreMarkedInTheDirtyLog) {
    UniqueFd fd(memfd_create("log", MFD_CLOEXEC | MFD_ALLOW_SEALING));
    constexpr uint64_t kLog = (32 * kMiB) / 4096 / 8;
    ASSERT_EQ(ftruncate(fd.get(), kLog), 0);
    ASSERT_EQ(fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK), 0);
    auto log = shm::DirtyLog::map(fd.get(), kLog, 0);
    ASSERT_TRUE(log.ok());
    auto* bits = const_cast<uint8_t*>(log.value()->bits());
    auto marked = [&](uint64_t gpa) { return (bits[gpa / 4096 / 8] >> (gpa / 4096 % 8)) & 1; };
    vq_.set_used_log(log.value().get());
    uint64_t b = alloc(64);
    DriverBuf buf{b, 64, true};
    uint16_t id = post({&buf, 1});
    take();
    std::memset(bits, 0, kLog);
    vq_.push_used(id, 1);
    vq_.publish_used();
    EXPECT_TRUE(marked(dq_->desc_gpa())) << "the used descriptor";
    std::memset(bits, 0, kLog);
    vq_.disable_notify();
    EXPECT_TRUE(marked(dq_->device_gpa())) << "the device event area";
    vq_.set_used_log(nullptr);
    std::memset(bits, 0, kLog);
    vq_.enable_notify();
    EXPECT_FALSE(marked(dq_->device_gpa()));
}

// ---- hostile drivers --------------------------------------------------------------------------

PackedDesc avail_desc(uint64_t addr, uint32_t len, uint16_t id, uint16_t flags, bool wrap = true) {
    return PackedDesc{addr, len, id,
                      static_cast<uint16_t>(flags | (wrap ? kPackedDescFAvail : kPackedDescFUsed))};
}

TEST_P(Packed, AChainThatNeverEndsIsABrokenRingNotALoop) {
    uint64_t b = alloc(64);
    for (uint16_t i = 0; i < cfg_.size; ++i) dq_->write_desc(i, avail_desc(b, 8, i, kDescFNext));
    auto p = vq_.pending();
    EXPECT_FALSE(p.ok()) << "every descriptor says NEXT";
    EXPECT_FALSE(vq_.pop_head().ok());
}

TEST_P(Packed, BadBufferIdsAreRefused) {
    uint64_t b = alloc(64);
    dq_->write_desc(0, avail_desc(b, 8, cfg_.size, 0));  // id == size
    ASSERT_EQ(vq_.pending().value(), 1u);
    EXPECT_FALSE(vq_.pop_head().ok()) << "id past the queue";
    if (cfg_.size < 4) return;
    ASSERT_TRUE(vq_.activate(map_, dq_->layout(), kPackedFreshBase, cfg_.evt, cfg_.ind).ok());
    dq_->write_desc(0, avail_desc(b, 8, 2, 0));
    dq_->write_desc(1, avail_desc(b, 8, 2, 0));  // the same id again while in flight
    ASSERT_EQ(vq_.pending().value(), 2u);
    EXPECT_TRUE(vq_.pop_head().ok());
    EXPECT_FALSE(vq_.pop_head().ok()) << "duplicate id";
}

TEST_P(Packed, SlotsOfferedAgainWhileInFlightAreRefused) {
    // One chain fills the whole ring (id 0); before any of it is used, the driver offers slot 0
    // again in the next round under a free id: that would be more descriptors in flight than
    // the ring has (and the used descriptor would overwrite a chain still in flight).
    uint64_t b = alloc(64);
    for (uint16_t i = 0; i < cfg_.size; ++i)
        dq_->write_desc(i, avail_desc(b, 8, 0, i + 1 < cfg_.size ? kDescFNext : 0));
    ASSERT_EQ(vq_.pending().value(), 1u);
    ASSERT_TRUE(vq_.pop_head().ok());
    dq_->write_desc(0, avail_desc(b, 8, cfg_.size > 1 ? 1 : 0, 0, false));
    ASSERT_EQ(vq_.pending().value(), 1u) << "it looks available";
    EXPECT_FALSE(vq_.pop_head().ok()) << "a ring and one more in flight";
}

TEST_P(Packed, ADescriptorNotMarkedAvailableIsNotTaken) {
    uint64_t b = alloc(64);
    // AVAIL == USED: a used descriptor (or a zeroed ring), not an available one.
    dq_->write_desc(0, PackedDesc{b, 8, 0, static_cast<uint16_t>(kPackedDescFAvail | kPackedDescFUsed)});
    EXPECT_EQ(vq_.pending().value(), 0u);
    // The right bits for the next round only.
    dq_->write_desc(0, avail_desc(b, 8, 0, 0, false));
    EXPECT_EQ(vq_.pending().value(), 0u);
    if (cfg_.size < 2) return;
    // A chain whose second descriptor is not available.
    dq_->write_desc(1, PackedDesc{b, 8, 1, 0});
    dq_->write_desc(0, avail_desc(b, 8, 0, kDescFNext));
    EXPECT_FALSE(vq_.pending().ok()) << "half a chain";
}

TEST_P(Packed, WalkRefusesWhatTheSpecForbids) {
    if (cfg_.size < 4) return;
    uint64_t b = alloc(4096);
    uint64_t table = alloc(64);
    struct Case {
        const char* what;
        std::vector<PackedDesc> ring;
        ChainError want;
    };
    std::vector<Case> cases = {
        {"readable after writable", {avail_desc(b, 8, 0, kDescFWrite | kDescFNext), avail_desc(b, 8, 0, 0)}, ChainError::kOrder},
        {"unmapped buffer", {avail_desc(kGap, 8, 0, 0)}, ChainError::kBadAddress},
        {"longer than 4 GiB", {avail_desc(b, 8, 0, kDescFNext), avail_desc(b, 0xffffffffu, 0, 0)}, ChainError::kTooLong},
        {"indirect in a list", {avail_desc(b, 8, 0, kDescFNext), avail_desc(table, 32, 0, kDescFIndirect)}, ChainError::kBadIndirect},
        {"indirect with NEXT", {avail_desc(table, 32, 0, kDescFIndirect | kDescFNext), avail_desc(b, 8, 0, 0)}, ChainError::kBadIndirect},
        {"indirect table length", {avail_desc(table, 20, 0, kDescFIndirect)}, ChainError::kBadIndirect},
        {"indirect table unmapped", {avail_desc(kGap, 32, 0, kDescFIndirect)}, ChainError::kBadIndirect},
    };
    if (!cfg_.ind) cases.push_back({"indirect not negotiated", {avail_desc(table, 32, 0, kDescFIndirect)}, ChainError::kBadIndirect});
    for (const Case& c : cases) {
        SCOPED_TRACE(c.what);
        ASSERT_TRUE(vq_.activate(map_, dq_->layout(), kPackedFreshBase, cfg_.evt, cfg_.ind).ok());
        for (uint16_t i = 0; i < cfg_.size; ++i) dq_->write_desc(i, PackedDesc{});
        // The table (where a case points at it): two readable entries.
        PackedDesc t[2] = {{b, 8, 0, 0}, {b, 8, 0, 0}};
        std::memcpy(gm_->host(table, sizeof(t)), t, sizeof(t));
        for (size_t i = c.ring.size(); i-- > 0;) dq_->write_desc(static_cast<uint16_t>(i), c.ring[i]);
        ChainError err = ChainError::kNone;
        EXPECT_EQ(take(&err), 0u);
        EXPECT_EQ(err, c.want) << chain_error_name(err);
    }
}

TEST_P(Packed, MisplacedRingsAreRefused) {
    QueueLayout l = dq_->layout();
    QueueLayout bad = l;
    bad.desc_uva += 8;
    EXPECT_FALSE(vq_.activate(map_, bad, kPackedFreshBase, cfg_.evt, cfg_.ind).ok()) << "misaligned";
    bad = l;
    bad.used_uva = gm_->uva_of(kR0) + 16 * kMiB - 2;
    EXPECT_FALSE(vq_.activate(map_, bad, kPackedFreshBase, cfg_.evt, cfg_.ind).ok()) << "area past its region";
    bad = l;
    bad.size = 2048;
    EXPECT_FALSE(vq_.activate(map_, bad, kPackedFreshBase, cfg_.evt, cfg_.ind).ok()) << "too large";
}

}  // namespace
}  // namespace vhostd::virtio
