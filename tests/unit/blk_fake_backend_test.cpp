// The blk request path against a deliberately awkward backend: completions arrive in reverse
// order, large transfers complete short (the slot must resubmit the rest with advanced iovecs),
// and every third submission is refused as "busy" (the request must wait and be resubmitted,
// also while the queue is being stopped). Data lands in a RAM disk that the test checks.
#include <cstring>
#include <random>

#include "backends/block_backend.hpp"
#include "tests/unit/blk_fixture.hpp"
#include "vhost/server.hpp"
#include "virtio/blk_device.hpp"

namespace vhostd::testing {
namespace {

using backends::BlockOp;
using backends::BlockRequest;

class FakeChannel final : public backends::BlockChannel {
public:
    FakeChannel(std::vector<uint8_t>& disk, std::atomic<uint64_t>& shorts, std::atomic<uint64_t>& busies)
        : disk_(disk), shorts_(shorts), busies_(busies) {
        pending_.reserve(1024);
    }
    bool ready() override { return true; }
    Status submit(const BlockRequest& req, Completion* c) override {
        if (++submits_ % 3 == 0) {
            busies_++;
            return make_error(Errc::kBusy, "fake: busy");
        }
        pending_.push_back({req, c});
        return ok_status();
    }
    bool poll() override {
        if (pending_.empty()) return false;
        auto batch = std::move(pending_);
        pending_.clear();
        pending_.reserve(1024);
        for (auto it = batch.rbegin(); it != batch.rend(); ++it) it->c->complete(execute(it->req));
        return true;
    }
    bool idle() const override { return pending_.empty(); }

private:
    int32_t execute(const BlockRequest& q) {
        if (q.op != BlockOp::kRead && q.op != BlockOp::kWrite) {
            if (q.op != BlockOp::kFlush) std::memset(disk_.data() + q.offset, 0, q.len);
            return 0;
        }
        uint64_t total = 0;
        for (unsigned i = 0; i < q.iovcnt; ++i) total += q.iov[i].iov_len;
        // Big transfers complete short, at a 512-byte boundary inside an iovec if possible.
        uint64_t n = total > 4096 ? (total / 2 + 100) / 512 * 512 : total;
        if (n < total) shorts_++;
        uint64_t done = 0;
        for (unsigned i = 0; i < q.iovcnt && done < n; ++i) {
            uint64_t c = std::min<uint64_t>(q.iov[i].iov_len, n - done);
            uint8_t* d = disk_.data() + q.offset + done;
            if (q.op == BlockOp::kRead) std::memcpy(q.iov[i].iov_base, d, c);
            else std::memcpy(d, q.iov[i].iov_base, c);
            done += c;
        }
        return static_cast<int32_t>(done);
    }

    struct P {
        BlockRequest req;
        Completion* c;
    };
    std::vector<uint8_t>& disk_;
    std::atomic<uint64_t>& shorts_;
    std::atomic<uint64_t>& busies_;
    std::vector<P> pending_;
    uint64_t submits_ = 0;
};

class FakeBackend final : public backends::BlockBackend {
public:
    explicit FakeBackend(uint64_t size) : disk(size) {
        info_.size_bytes = size;
        info_.discard = info_.write_zeroes = true;
        info_.description = "fake";
    }
    const backends::BlockInfo& info() const override { return info_; }
    Result<std::unique_ptr<backends::BlockChannel>> open_channel(Reactor&, uint32_t) override {
        return std::unique_ptr<backends::BlockChannel>(std::make_unique<FakeChannel>(disk, shorts, busies));
    }
    std::vector<uint8_t> disk;  // touched only by the one reactor in these tests
    std::atomic<uint64_t> shorts{0}, busies{0};

private:
    backends::BlockInfo info_;
};

class BlkFakeBackend : public BlkFixture {
protected:
    void SetUp() override {
        BlkFixture::SetUp();
        ASSERT_OK(reactor_.start());
        backend_ = std::make_shared<FakeBackend>(kDiskBytes);
        auto dev = std::make_unique<virtio::BlkDevice>("fake", backend_, virtio::BlkOptions{2, "fake"},
                                                       std::vector<Reactor*>{&reactor_, &reactor_});
        server_ = std::make_unique<vhost::SocketServer>(path("f.sock"), false,
                                                        std::make_unique<vhost::Session>(std::move(dev)));
        ASSERT_OK(server_->start());
    }
    void TearDown() override {
        server_.reset();
        reactor_.stop();
        BlkFixture::TearDown();
    }
    Reactor reactor_{0, ReactorConfig{}};
    std::shared_ptr<FakeBackend> backend_;
    std::unique_ptr<vhost::SocketServer> server_;
};

TEST_F(BlkFakeBackend, OutOfOrderShortAndBusyCompletionsKeepDataExact) {
    Guest g;
    connect_guest(g, path("f.sock"), 2);
    std::mt19937 rng(42);
    std::vector<uint8_t> model(kDiskBytes, 0);
    for (int round = 0; round < 3; ++round) {  // guest memory is a bump allocator: 3 rounds fit
        // 24 writes in flight per queue, random sizes and segmentations, non-overlapping.
        std::vector<BlkRequest> reqs[2];
        for (uint32_t qi = 0; qi < 2; ++qi) {
            for (int i = 0; i < 24; ++i) {
                uint32_t sectors = 1 + rng() % 128;
                uint64_t sector = (qi * 24 + static_cast<uint64_t>(i)) * 128;
                std::vector<uint8_t> data(sectors * 512);
                for (auto& b : data) b = static_cast<uint8_t>(rng());
                std::memcpy(model.data() + sector * 512, data.data(), data.size());
                driver::BlkReqOptions o{.data_segments = 1 + static_cast<uint32_t>(rng() % 8),
                                        .indirect = (rng() & 1) != 0};
                auto w = driver::make_blk_write(*g.mem, sector, data, o);
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
        auto r = driver::make_blk_read(*g.mem, 0, 48 * 128 * 512, {.data_segments = 16, .indirect = true});
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
        std::vector<BlkRequest> reqs;
        for (int i = 0; i < 60; ++i) {
            auto r = driver::make_blk_read(*g.mem, static_cast<uint64_t>(i) * 64, 32768, {.indirect = true});
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
