// The blk request path against a deliberately awkward backend: completions arrive in reverse
// order, large transfers complete short (the slot must resubmit the rest with advanced iovecs),
// and every third submission is refused as "busy" (the request must wait and be resubmitted,
// also while the queue is being stopped). Data lands in a RAM disk that the test checks.
#include <cstring>
#include <random>

#include "testing/blk_fixture.hpp"
#include "testing/fake_block_backend.hpp"
#include "vhost/server.hpp"
#include "virtio/blk_device.hpp"

namespace vhostd::testing {
namespace {

class BlkFakeBackend : public BlkFixture {
protected:
    void SetUp() override {
        BlkFixture::SetUp();
        backend_ = std::make_shared<FakeBlockBackend>(FakeBlockOptions{.size_bytes = kDiskBytes,
                                                                       .discard = true,
                                                                       .write_zeroes = true,
                                                                       .reverse_completions = true,
                                                                       .short_over = 4096,
                                                                       .busy_every = 3});
        Reactor& r = own_reactor();
        serve(std::make_unique<virtio::BlkDevice>("fake", backend_, virtio::BlkOptions{2, "fake"},
                                                  std::vector<Reactor*>{&r, &r}),
              path("f.sock"));
    }
    std::shared_ptr<FakeBlockBackend> backend_;
};

TEST_F(BlkFakeBackend, OutOfOrderShortAndBusyCompletionsKeepDataExact) {
    Guest g;
    connect_guest(g, path("f.sock"), 2);
    std::mt19937 rng(42);
    std::vector<uint8_t> model(kDiskBytes, 0);
    for (int round = 0; round < 3; ++round) {  // guest memory is a bump allocator: 3 rounds fit
        // 24 writes in flight per queue, random sizes and segmentations, non-overlapping.
        std::vector<GuestBlkRequest> reqs[2];
        for (uint32_t qi = 0; qi < 2; ++qi) {
            for (int i = 0; i < 24; ++i) {
                uint32_t sectors = 1 + rng() % 128;
                uint64_t sector = (qi * 24 + static_cast<uint64_t>(i)) * 128;
                std::vector<uint8_t> data(sectors * 512);
                for (auto& b : data) b = static_cast<uint8_t>(rng());
                std::memcpy(model.data() + sector * 512, data.data(), data.size());
                testing::BlkReqOptions o{.data_segments = 1 + static_cast<uint32_t>(rng() % 8),
                                        .indirect = (rng() & 1) != 0};
                auto w = testing::make_blk_write(*g.mem, sector, data, o);
                ASSERT_OK(w);
                ASSERT_OK(w.value().submit(*g.queues[qi]));
                reqs[qi].push_back(std::move(w).value());
            }
            ASSERT_OK(g.queues[qi]->publish_and_kick(g.kicks[qi].get()));
        }
        for (uint32_t qi = 0; qi < 2; ++qi) {
            wait_completions(g, qi, reqs[qi].size());
            for (auto& r : reqs[qi]) ASSERT_EQ(r.status(), blk::kSOk);
        }
        // Read everything back through short, out-of-order reads.
        auto r = testing::make_blk_read(*g.mem, 0, 48 * 128 * 512, {.data_segments = 16, .indirect = true});
        ASSERT_OK(r);
        EXPECT_EQ(run(g, round % 2, r.value()), 48u * 128 * 512 + 1);
        ASSERT_EQ(r.value().status(), blk::kSOk);
        ASSERT_TRUE(std::equal(model.begin(), model.begin() + 48 * 128 * 512, r.value().data().begin()))
            << "round " << round;
    }
    EXPECT_GT(backend_->shorts.load(), 0u) << "short transfers were not exercised";
    EXPECT_GT(backend_->busies.load(), 0u) << "busy submissions were not exercised";
}

TEST_F(BlkFakeBackend, StopDrainsRequestsThatWaitForSubmissionSpace) {
    for (int round = 0; round < 20; ++round) {
        Guest g;
        connect_guest(g, path("f.sock"), 1);
        auto& q = *g.queues[0];
        std::vector<GuestBlkRequest> reqs;
        for (int i = 0; i < 60; ++i) {
            auto r = testing::make_blk_read(*g.mem, static_cast<uint64_t>(i) * 64, 32768, {.indirect = true});
            ASSERT_OK(r);
            ASSERT_OK(r.value().submit(q));
            reqs.push_back(std::move(r).value());
        }
        ASSERT_OK(q.publish_and_kick(g.kicks[0].get()));
        // Stop while requests are mid-flight, short, or waiting for a retry.
        auto base = g.fe->get_vring_base(0);
        ASSERT_OK(base);
        EXPECT_EQ(q.read_used_idx(), base.value()) << "a taken request was not completed before the stop";
    }
}

}  // namespace
}  // namespace vhostd::testing
