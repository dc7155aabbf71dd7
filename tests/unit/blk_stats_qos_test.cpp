// device_stats / reactor_stats counters and QoS limits, through a real daemon and an in-process
// frontend: counts are exact, they survive a reconnect, limits hold (a lower bound on time,
// which no scheduling noise can break), a held request neither spins the reactor nor outlives a
// change of limits or a stop.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "testing/blk_fixture.hpp"
#include "virtio/blk_device.hpp"
#include "virtio/qos.hpp"

using namespace vhostd;
using namespace vhostd::testing;
using Clock = std::chrono::steady_clock;

namespace {

constexpr uint64_t kMs = 1'000'000;

TEST(QosBuckets, IopsLimitAdmitsABurstThenOnePerInterval) {
    virtio::Qos q;
    EXPECT_FALSE(q.enabled());
    q.set(virtio::QosLimits{.iops = 1000, .burst_ms = 10});  // 1 ms apart, 10 ms ahead
    EXPECT_TRUE(q.enabled());
    const uint64_t t0 = 1'000'000 * kMs;
    // The burst: the first 11 requests (0 .. 10 ms of reservations) may start at once.
    for (int i = 0; i <= 10; ++i) EXPECT_LE(q.admit(false, 4096, t0), t0) << i;
    EXPECT_EQ(q.admit(false, 4096, t0), t0 + 1 * kMs);
    EXPECT_EQ(q.admit(true, 4096, t0), t0 + 2 * kMs);
    // Idle time earns no more than the burst.
    const uint64_t t1 = t0 + 1000 * kMs;
    for (int i = 0; i <= 10; ++i) EXPECT_LE(q.admit(false, 4096, t1), t1) << i;
    EXPECT_GT(q.admit(false, 4096, t1), t1);
}

TEST(QosBuckets, BytesAndDirectionsCountSeparately) {
    virtio::Qos q;
    q.set(virtio::QosLimits{.write_bps = 1 << 20, .burst_ms = 1});  // 1 MiB/s of writes
    const uint64_t t0 = 5'000 * kMs;
    EXPECT_LE(q.admit(true, 1 << 20, t0), t0);
    // The next write waits for the first one's second, less the 1 ms burst.
    EXPECT_EQ(q.admit(true, 4096, t0), t0 + 1000 * kMs - 1 * kMs);
    // Reads are not limited.
    for (int i = 0; i < 100; ++i) EXPECT_LE(q.admit(false, 1 << 20, t0), t0);
    // New limits start over; 0 everywhere turns QoS off.
    q.set(virtio::QosLimits{});
    EXPECT_FALSE(q.enabled());
    EXPECT_EQ(q.limits(), virtio::QosLimits{});
}

TEST(QosBuckets, AbsurdLimitsSaturateInsteadOfOverflowing) {
    virtio::Qos q;
    q.set(virtio::QosLimits{.bps = 1});
    uint64_t prev = 0;
    for (int i = 0; i < 10; ++i) {
        uint64_t at = q.admit(true, 1ull << 32, 1000);
        EXPECT_GE(at, prev);
        prev = at;
    }
    EXPECT_LT(prev, UINT64_MAX / 2);
}

class BlkStats : public BlkFixture {
protected:
    void SetUp() override {
        BlkFixture::SetUp();
        start_daemon(1);
    }
    virtio::BlkDeviceStats stats(const std::string& id) {
        virtio::BlkDeviceStats st;
        EXPECT_TRUE(daemon_->with_blk(id, [&](virtio::BlkDevice& d) { st = d.stats(); }).ok());
        return st;
    }
    // Submits n reads of 4 KiB at once on queue 0 (not waiting); returns them.
    std::vector<GuestBlkRequest> submit_reads(Guest& g, int n) {
        std::vector<GuestBlkRequest> reqs;
        for (int i = 0; i < n; ++i) {
            auto r = make_blk_read(*g.mem, static_cast<uint64_t>(i) * 8, 4096);
            EXPECT_TRUE(r.ok());
            EXPECT_TRUE(r.value().submit(*g.queues[0]).ok());
            reqs.push_back(std::move(r).value());
        }
        EXPECT_TRUE(g.queues[0]->publish_and_kick(g.kicks[0].get()).ok());
        return reqs;
    }
    static int completed(const std::vector<GuestBlkRequest>& reqs) {
        int n = 0;
        for (const auto& r : reqs) n += r.status() != kBlkStatusUnset;
        return n;
    }
};

TEST_F(BlkStats, EveryRequestIsCountedByTypeStatusAndBytesAndCountsSurviveAReconnect) {
    auto sock = add_blk("id=d,socket=" + path("s.sock") + ",backend=null,size=8M,queues=2");
    {
        Guest g;
        connect_guest(g, sock, 2);
        for (int i = 0; i < 5; ++i) EXPECT_EQ(status_of(g, 0, make_blk_read(*g.mem, 8 * i, 4096)), blk::kSOk);
        std::vector<uint8_t> data(8192, 1);
        for (int i = 0; i < 3; ++i) EXPECT_EQ(status_of(g, 1, make_blk_write(*g.mem, 16 * i, data)), blk::kSOk);
        EXPECT_EQ(status_of(g, 0, make_blk_flush(*g.mem)), blk::kSOk);
        EXPECT_EQ(status_of(g, 0, make_blk_flush(*g.mem)), blk::kSOk);
        EXPECT_EQ(status_of(g, 1, make_blk_get_id(*g.mem)), blk::kSOk);
        auto seg = blk_segment(0, 8);
        EXPECT_EQ(status_of(g, 1, make_blk_discard(*g.mem, std::span(&seg, 1))), blk::kSOk);
        EXPECT_EQ(status_of(g, 0, GuestBlkRequest::create(*g.mem, 99, 0, 0)), blk::kSUnsupp);
        // Past the end: a read that fails.
        EXPECT_EQ(status_of(g, 0, make_blk_read(*g.mem, (8 << 20) / 512, 4096)), blk::kSIoErr);

        auto st = stats("d");
        ASSERT_EQ(st.queues.size(), 2u);
        const auto& t = st.total;
        EXPECT_EQ(t.reads, 6u);
        EXPECT_EQ(t.writes, 3u);
        EXPECT_EQ(t.flushes, 2u);
        EXPECT_EQ(t.get_ids, 1u);
        EXPECT_EQ(t.discards, 1u);
        EXPECT_EQ(t.others, 1u);
        EXPECT_EQ(t.bytes_read, 5u * 4096);
        EXPECT_EQ(t.bytes_written, 3u * 8192);
        EXPECT_EQ(t.err_ioerr, 1u);
        EXPECT_EQ(t.err_unsupp, 1u);
        EXPECT_EQ(t.inflight, 0u);
        EXPECT_EQ(t.latency.count, 14u);
        EXPECT_LE(t.latency.p50_ns, t.latency.p99_ns);
        EXPECT_LE(t.latency.p99_ns, t.latency.max_ns);
        EXPECT_GE(t.calls, 1u);
        EXPECT_EQ(st.queues[0].reads, 6u);
        EXPECT_EQ(st.queues[0].writes, 0u);
        EXPECT_EQ(st.queues[1].writes, 3u);
        EXPECT_EQ(st.queues[1].bytes_written, 3u * 8192);
        EXPECT_EQ(st.queues[0].latency.count + st.queues[1].latency.count, 14u);
        EXPECT_EQ(t.qos_delays, 0u);
    }
    // A new frontend: the counters go on.
    Guest g;
    connect_guest(g, sock, 2);
    EXPECT_EQ(status_of(g, 0, make_blk_read(*g.mem, 0, 4096)), blk::kSOk);
    auto st = stats("d");
    EXPECT_EQ(st.total.reads, 7u);
    EXPECT_EQ(st.total.bytes_read, 6u * 4096);
}

TEST_F(BlkStats, ReactorStatsCountPassesBusyTimeAndQueues) {
    auto sock = add_blk("id=d,socket=" + path("s.sock") + ",backend=null,size=8M,queues=2");
    Guest g;
    connect_guest(g, sock, 2);
    for (int i = 0; i < 50; ++i) EXPECT_EQ(status_of(g, 0, make_blk_read(*g.mem, 0, 4096)), blk::kSOk);
    auto rs = daemon_->reactor_stats();
    ASSERT_EQ(rs.size(), 1u);
    EXPECT_EQ(rs[0].pollers, 2u);
    EXPECT_GT(rs[0].passes, 50u);
    EXPECT_GT(rs[0].busy_ns, 0u);
    EXPECT_LE(rs[0].busy_ns, rs[0].total_ns);
}

TEST_F(BlkStats, AnIopsLimitHoldsAndIsCountedAsQosDelays) {
    // 200/s with a 10 ms burst: request k (from 0) may start at (k - 2) * 5 ms at the earliest.
    auto sock = add_blk("id=d,socket=" + path("s.sock") + ",backend=null,size=8M,queues=1,iops=200,burst-ms=10");
    Guest g;
    connect_guest(g, sock, 1);
    auto t0 = Clock::now();
    auto reqs = submit_reads(g, 40);
    wait_completions(g, 0, 40);
    double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    EXPECT_GE(secs, (40 - 3) * 0.005 - 0.001) << "40 requests at 200/s finished too early";
    EXPECT_EQ(completed(reqs), 40);
    auto st = stats("d");
    EXPECT_EQ(st.total.reads, 40u);
    EXPECT_GE(st.total.qos_delays, 30u);
    EXPECT_GT(st.total.qos_delay_ns, 0u);
    auto l = daemon_->info("d");
    ASSERT_OK(l);
    EXPECT_EQ(l.value().qos.iops, 200u);
}

TEST_F(BlkStats, ABandwidthLimitHolds) {
    // 1 MiB/s of reads, 1 ms burst: 16 reads of 64 KiB need ~15/16 s.
    auto sock = add_blk("id=d,socket=" + path("s.sock") + ",backend=null,size=8M,queues=1,read-bps=1M,burst-ms=1");
    Guest g;
    connect_guest(g, sock, 1);
    auto t0 = Clock::now();
    for (int i = 0; i < 16; ++i) EXPECT_EQ(status_of(g, 0, make_blk_read(*g.mem, 128 * i, 65536)), blk::kSOk);
    double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    EXPECT_GE(secs, 15 * 65536.0 / (1 << 20) - 0.002);
    // Writes are not limited by a read limit.
    t0 = Clock::now();
    std::vector<uint8_t> data(65536, 3);
    for (int i = 0; i < 16; ++i) EXPECT_EQ(status_of(g, 0, make_blk_write(*g.mem, 128 * i, data)), blk::kSOk);
    EXPECT_EQ(stats("d").total.qos_delays, 15u);
}

TEST_F(BlkStats, LiftingALimitReleasesTheHeldRequestAtOnce) {
    // One request a second: without the re-admission the 20 would take 19 s.
    auto sock = add_blk("id=d,socket=" + path("s.sock") + ",backend=null,size=8M,queues=1,iops=1,burst-ms=1");
    Guest g;
    connect_guest(g, sock, 1);
    auto reqs = submit_reads(g, 20);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    EXPECT_EQ(completed(reqs), 1);
    ASSERT_OK(daemon_->set_qos("d", app::QosSpec{}));
    wait_completions(g, 0, 20);
    EXPECT_EQ(completed(reqs), 20);
}

TEST_F(BlkStats, AHeldRequestLetsTheReactorSleep) {
    // Adaptive reactor; the second request waits 2 s. Meanwhile the reactor sleeps until then
    // instead of polling.
    auto sock = add_blk("id=d,socket=" + path("s.sock") + ",backend=null,size=8M,queues=1,iops=1,burst-ms=1");
    Guest g;
    connect_guest(g, sock, 1);
    auto reqs = submit_reads(g, 2);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    ASSERT_EQ(completed(reqs), 1);
    uint64_t p0 = daemon_->reactor(0).passes.get();
    std::this_thread::sleep_for(std::chrono::milliseconds(400));
    uint64_t p1 = daemon_->reactor(0).passes.get();
    EXPECT_LT(p1 - p0, 200u) << "the reactor spins while QoS holds a request";
    EXPECT_EQ(completed(reqs), 1);
    wait_completions(g, 0, 2);
    EXPECT_EQ(completed(reqs), 2);
}

TEST_F(BlkStats, RemovingADeviceAdmitsTheHeldRequestInsteadOfWaitingForIt) {
    auto sock = add_blk("id=d,socket=" + path("s.sock") + ",backend=null,size=8M,queues=1,iops=1,burst-ms=1");
    Guest g;
    connect_guest(g, sock, 1);
    auto reqs = submit_reads(g, 10);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    auto t0 = Clock::now();
    ASSERT_OK(daemon_->remove_device("d"));
    EXPECT_LT(Clock::now() - t0, std::chrono::seconds(5)) << "the drain waited for QoS";
    // The held one completed with the drain; the rest were never taken from the ring.
    EXPECT_EQ(reqs[1].status(), blk::kSOk);
    EXPECT_EQ(completed(reqs), 2);
}

}  // namespace
