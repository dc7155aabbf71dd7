// Inflight I/O tracking on packed rings (the spec's QueueRegionPacked).
//
// A device queue is abandoned mid-flight ("crash": no completion, no cleanup) and a fresh one
// recovers from the shared region, starting from the stale base a frontend sends after a
// backend crash: exactly the unfinished chains come back, in the order they were first taken,
// none twice, walked from the region's copies (their ring slots were overwritten by used
// descriptors); a crash inside a completion batch is rolled back when the driver cannot see the
// batch yet and forward when it can; a taken chain given back (rewind) is not replayed; hostile
// regions are refused without a wild access (ASan runs these).
//
// Every test runs for queue sizes 8 and 256, with and without INDIRECT_DESC.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <map>
#include <memory>
#include <vector>

#include "shm/memory_map.hpp"
#include "shm/shared_buffer.hpp"
#include "testing/packed_driver_queue.hpp"
#include "vhost/mem_table.hpp"
#include "virtio/inflight.hpp"
#include "virtio/packed_queue.hpp"

namespace vhostd::virtio {
namespace {

using testing::DriverBuf;
using testing::GuestRam;
using testing::PackedDriverQueue;

constexpr uint64_t kFeatures = kFVersion1 | kFRingPacked;

struct Cfg {
    uint16_t size;
    bool ind;
};
std::string cfg_name(const ::testing::TestParamInfo<Cfg>& i) {
    return fmt::format("q{}_{}", i.param.size, i.param.ind ? "ind" : "noind");
}

using Walked = std::vector<std::pair<const void*, size_t>>;

class PackedInflight : public ::testing::TestWithParam<Cfg> {
protected:
    void SetUp() override {
        cfg_ = GetParam();
        auto g = GuestRam::create({{0, 16ull << 20, 0}});
        ASSERT_TRUE(g.ok()) << g.error().describe();
        gm_ = std::move(g).value();
        std::vector<std::shared_ptr<const shm::Region>> regs;
        for (const auto& r : gm_->regions()) {
            auto m = shm::Region::map(vhost::to_region_desc(r.desc()), r.fd());
            ASSERT_TRUE(m.ok()) << m.error().describe();
            regs.push_back(m.value());
        }
        auto mm = shm::MemoryMap::build(regs);
        ASSERT_TRUE(mm.ok());
        map_ = mm.value();
        auto q = PackedDriverQueue::create(*gm_, cfg_.size, true);
        ASSERT_TRUE(q.ok()) << q.error().describe();
        dq_ = std::move(q).value();
        auto b = shm::SharedBuffer::create("test-inflight", inflight_queue_bytes_packed(cfg_.size));
        ASSERT_TRUE(b.ok());
        buf_ = b.value();
        region()->desc_num = cfg_.size;
    }
    InflightQueuePacked* region() { return reinterpret_cast<InflightQueuePacked*>(buf_->data()); }

    // A device queue as a (re)started backend brings it up. After a crash QEMU 7.2 sends the
    // base it last set (it cannot read a packed ring's position back): the fresh one here.
    std::unique_ptr<PackedQueue> start(Status* st = nullptr, uint32_t base = kPackedFreshBase) {
        auto vq = std::make_unique<PackedQueue>();
        Status s = vq->activate(map_, dq_->layout(), base, true, cfg_.ind, region(), kFeatures);
        if (st != nullptr) *st = s;
        else EXPECT_TRUE(s.ok()) << s.error().describe();
        return vq;
    }
    // Posts chains of 1, 2, 3, 1, 2, 3 ... descriptors (or indirect ones), each with its own
    // buffers; returns their ids.
    std::vector<uint16_t> post(int n) {
        std::vector<uint16_t> ids;
        for (int i = 0; i < n; ++i) {
            const int len = 1 + (next_++ % 3);
            std::vector<DriverBuf> bufs;
            for (int k = 0; k < len; ++k) bufs.push_back({gm_->alloc(64, 16).value(), 64, k > 0});
            const bool indirect = cfg_.ind && (next_ % 2) == 0;
            auto id = dq_->add_chain(bufs, indirect);
            EXPECT_TRUE(id.ok()) << id.error().describe();
            ids.push_back(id.value());
        }
        dq_->publish();
        return ids;
    }
    // Takes everything pending and walks it; remembers each chain's buffers by id.
    std::vector<uint16_t> take_all(PackedQueue& vq, std::map<uint16_t, Walked>* walked) {
        std::vector<uint16_t> out;
        auto n = vq.pending();
        EXPECT_TRUE(n.ok()) << (n.ok() ? "" : n.error().describe());
        for (uint16_t i = 0; n.ok() && i < n.value(); ++i) {
            auto id = vq.pop_head();
            EXPECT_TRUE(id.ok()) << id.error().describe();
            if (!id.ok()) break;
            std::array<iovec, 16> iov{};
            Chain c{};
            ChainError e = ChainError::kNone;
            EXPECT_TRUE(vq.walk(id.value(), iov, &c, &e)) << chain_error_name(e);
            Walked w;
            for (size_t k = 0; k < c.n_readable + c.n_writable; ++k) w.emplace_back(iov[k].iov_base, iov[k].iov_len);
            (*walked)[id.value()] = w;
            out.push_back(id.value());
        }
        return out;
    }
    std::vector<uint16_t> driver_completions() {
        std::vector<uint16_t> out;
        while (auto u = dq_->pop_used()) out.push_back(static_cast<uint16_t>(u->id));
        EXPECT_FALSE(dq_->broken()) << dq_->broken_reason();
        return out;
    }
    int marked() {
        int n = 0;
        for (uint16_t i = 0; i < cfg_.size; ++i) n += region()->desc[i].inflight != 0;
        return n;
    }

    Cfg cfg_{};
    int next_ = 0;
    std::unique_ptr<GuestRam> gm_;
    std::shared_ptr<const shm::MemoryMap> map_;
    std::unique_ptr<PackedDriverQueue> dq_;
    std::shared_ptr<shm::SharedBuffer> buf_;
};

INSTANTIATE_TEST_SUITE_P(, PackedInflight,
                         ::testing::Values(Cfg{8, false}, Cfg{8, true}, Cfg{256, false}, Cfg{256, true}), cfg_name);

TEST_P(PackedInflight, FreshRegionIsInitialisedAndTracksEachChain) {
    auto vq = start();
    EXPECT_EQ(region()->version, kInflightVersion);
    EXPECT_EQ(region()->features & kFRingPacked, kFRingPacked);
    EXPECT_EQ(region()->free_head, 0);
    auto ids = post(3);
    std::map<uint16_t, Walked> w;
    ASSERT_EQ(take_all(*vq, &w), ids);
    EXPECT_EQ(marked(), 3) << "one head entry per chain, marked before submission";
    vq->push_used(ids[1], 0);
    EXPECT_EQ(marked(), 3) << "cleared only once the driver can see the completion";
    EXPECT_NE(region()->used_idx, region()->old_used_idx) << "the batch is not committed yet";
    vq->publish_used();
    EXPECT_EQ(marked(), 2);
    EXPECT_EQ(region()->used_idx, region()->old_used_idx);
    EXPECT_EQ(region()->used_idx, vq->next_used().idx);
    EXPECT_EQ(region()->free_head, region()->old_free_head);
    EXPECT_EQ(driver_completions(), std::vector<uint16_t>{ids[1]});
}

TEST_P(PackedInflight, CrashWithOutOfOrderCompletionsResubmitsExactlyTheRest) {
    const int n = std::min<int>(6, cfg_.size / 2);
    auto ids = post(n);
    std::map<uint16_t, Walked> before;
    {
        auto a = start();
        ASSERT_EQ(take_all(*a, &before), ids);
        a->push_used(ids[1], 0);
        a->push_used(ids[3 % n], 0);
        a->publish_used();
        if (n > 4) a->push_used(ids[4], 0);  // completed, never published: the driver did not see it
        // crash: `a` goes away without completing or cleaning anything
    }
    std::vector<uint16_t> done = driver_completions();
    std::vector<uint16_t> want_rest;
    for (uint16_t id : ids)
        if (std::find(done.begin(), done.end(), id) == done.end()) want_rest.push_back(id);
    auto b = start();  // the stale base: positions come from the region
    EXPECT_EQ(b->next_avail(), dq_->next_avail()) << "everything the driver made available was taken";
    EXPECT_EQ(b->resubmits_left(), want_rest.size());
    std::map<uint16_t, Walked> after;
    EXPECT_EQ(take_all(*b, &after), want_rest) << "in the order first taken";
    for (uint16_t id : want_rest) EXPECT_EQ(after[id], before[id]) << "chain " << id << " walks as it did";
    // New chains follow the recovered ones.
    auto more = post(1);
    EXPECT_EQ(take_all(*b, &after), more);
    for (uint16_t id : want_rest) b->push_used(id, 0);
    b->push_used(more[0], 0);
    b->publish_used();
    auto rest = driver_completions();
    std::vector<uint16_t> want = want_rest;
    want.push_back(more[0]);
    EXPECT_EQ(rest, want) << "each exactly once";
    EXPECT_EQ(marked(), 0);
    // And it goes on: the free list is whole (every entry can be taken again).
    for (int round = 0; round < 3; ++round) {
        auto again = post(std::min<int>(cfg_.size / 3, 40));
        auto got = take_all(*b, &after);
        EXPECT_EQ(got, again);
        for (uint16_t id : got) b->push_used(id, 0);
        b->publish_used();
        EXPECT_EQ(driver_completions(), again);
    }
}

TEST_P(PackedInflight, CrashBeforeTheBatchIsVisibleRollsItBack) {
    auto ids = post(3);
    std::map<uint16_t, Walked> w;
    {
        auto a = start();
        take_all(*a, &w);
        a->push_used(ids[2], 0);
        a->push_used(ids[0], 0);
        // crash before publish: the batch's first used descriptor was never made visible
    }
    EXPECT_TRUE(driver_completions().empty());
    auto b = start();
    EXPECT_EQ(b->next_used(), dq_->next_used()) << "used position rolled back";
    EXPECT_EQ(take_all(*b, &w), ids) << "all three run again";
    for (uint16_t id : ids) b->push_used(id, 0);
    b->publish_used();
    EXPECT_EQ(driver_completions(), ids);
}

TEST_P(PackedInflight, CrashAfterTheBatchIsVisibleKeepsIt) {
    auto ids = post(4);
    std::map<uint16_t, Walked> w;
    {
        auto a = start();
        take_all(*a, &w);
        InflightQueuePacked* r = region();
        std::vector<uint16_t> heads_before;
        for (uint16_t i = 0; i < cfg_.size; ++i)
            if (r->desc[i].inflight) heads_before.push_back(i);
        const uint16_t old_free = r->old_free_head, old_used = r->old_used_idx;
        const uint8_t old_wrap = r->old_used_wrap_counter;
        a->push_used(ids[1], 0);
        a->push_used(ids[3], 0);
        a->publish_used();
        // Undo what follows the flags store (the heads' clears and the commit): the state a
        // crash right after the driver could see the batch leaves behind.
        for (uint16_t h : heads_before) r->desc[h].inflight = 1;
        r->old_free_head = old_free;
        r->old_used_idx = old_used;
        r->old_used_wrap_counter = old_wrap;
    }
    EXPECT_EQ(driver_completions(), (std::vector<uint16_t>{ids[1], ids[3]}));
    auto b = start();
    EXPECT_EQ(b->next_used(), dq_->next_used()) << "the visible batch is kept";
    EXPECT_EQ(take_all(*b, &w), (std::vector<uint16_t>{ids[0], ids[2]})) << "and not replayed";
    EXPECT_EQ(marked(), 2);
    b->push_used(ids[2], 0);
    b->push_used(ids[0], 0);
    b->publish_used();
    EXPECT_EQ(driver_completions(), (std::vector<uint16_t>{ids[2], ids[0]}));
    EXPECT_EQ(marked(), 0);
}

TEST_P(PackedInflight, CleanStopLeavesNothingToResubmit) {
    auto ids = post(4);
    PackedPos used;
    {
        auto a = start();
        std::map<uint16_t, Walked> w;
        take_all(*a, &w);
        for (uint16_t id : ids) a->push_used(id, 0);
        a->publish_used();
        used = a->next_used();
    }
    driver_completions();
    auto b = start(nullptr, packed_base(used, used));
    EXPECT_EQ(b->resubmits_left(), 0);
    EXPECT_EQ(b->next_avail(), used);
    EXPECT_EQ(b->next_used(), used);
}

TEST_P(PackedInflight, ARewoundChainIsNotReplayed) {
    auto ids = post(3);
    std::map<uint16_t, Walked> w;
    {
        auto a = start();
        take_all(*a, &w);
        a->rewind(1);  // the last one goes back to the ring, untaken
        EXPECT_EQ(marked(), 2);
    }
    auto b = start();
    EXPECT_EQ(take_all(*b, &w), ids) << "two recovered, then the rewound one taken from the ring, once";
    for (uint16_t id : ids) b->push_used(id, 0);
    b->publish_used();
    EXPECT_EQ(driver_completions(), ids);
}

TEST_P(PackedInflight, HostileRegionsAreRefused) {
    auto ids = post(2);
    {
        auto a = start();  // initialise, two chains in flight
        std::map<uint16_t, Walked> w;
        take_all(*a, &w);
    }
    std::vector<uint8_t> good(buf_->data(), buf_->data() + buf_->size());
    auto restore = [&] { std::copy(good.begin(), good.end(), buf_->data()); };
    auto refused = [&](const char* what) {
        Status st;
        start(&st);
        EXPECT_FALSE(st.ok()) << what;
        restore();
    };
    InflightQueuePacked* r = region();
    r->desc_num = static_cast<uint16_t>(cfg_.size * 2);
    refused("region for another queue size");
    r->version = 9;
    refused("unknown version");
    r->features = kFVersion1;
    refused("written for a split ring");
    r->used_idx = cfg_.size;
    refused("used index past the ring");
    r->old_used_wrap_counter = 7;
    refused("wrap counter not 0/1");
    // A free list that loops back on itself.
    r->desc[r->free_head].next = r->free_head;
    refused("free list cycle");
    // The in-flight heads: a chain length of 0, one longer than the ring, links out of range, a
    // buffer id out of range, the same buffer twice.
    uint16_t h0 = 0xffff, h1 = 0xffff;
    for (uint16_t i = 0; i < cfg_.size; ++i)
        if (r->desc[i].inflight) (h0 == 0xffff ? h0 : h1) = i;
    ASSERT_NE(h1, 0xffff);
    r->desc[h0].num = 0;
    refused("empty chain");
    r->desc[h0].num = static_cast<uint16_t>(cfg_.size + 1);
    refused("chain longer than the ring");
    r->desc[h0].num = 2;
    r->desc[h0].next = 0x7fff;
    refused("chain link out of range");
    // Find each chain's last entry to corrupt its id.
    auto last_of = [&](uint16_t h) {
        uint16_t e = h;
        for (uint16_t k = 1; k < r->desc[h].num; ++k) e = r->desc[e].next;
        return e;
    };
    r->desc[last_of(h0)].id = cfg_.size;
    refused("buffer id out of range");
    r->desc[last_of(h0)].id = r->desc[last_of(h1)].id;
    refused("the same buffer in flight twice");
    // Every entry marked, with whatever is in them: bounded, and no chain longer than the ring
    // gets through. Either refused or recovered; never a wild access (ASan).
    for (uint16_t i = 0; i < cfg_.size; ++i) r->desc[i].inflight = 0xff;
    Status st;
    auto c = start(&st);
    if (st.ok()) {
        EXPECT_LE(c->resubmits_left(), cfg_.size);
    }
    restore();
    // The unchanged region still recovers both.
    auto d = start();
    EXPECT_EQ(d->resubmits_left(), ids.size());
}

TEST_P(PackedInflight, ARegionWrittenForASplitRingIsRefused) {
    // A region written for a split ring (same header offsets) handed to a packed queue.
    region()->version = kInflightVersion;
    region()->features = kFVersion1;
    Status st;
    start(&st);
    EXPECT_FALSE(st.ok());
}

}  // namespace
}  // namespace vhostd::virtio
