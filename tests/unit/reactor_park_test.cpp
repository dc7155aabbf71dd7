// Hot and parked pollers (reactor/reactor.hpp): a poller idle for the park window leaves the set a
// pass walks and costs nothing until its wake-up; a kick brings a parked virtqueue back. First
// with bare pollers on a reactor (what a pass walks), then with real blk devices: dozens of idle
// devices on one polling reactor all park, each one's next request wakes exactly it, and it
// parks again.
#include <gtest/gtest.h>
#include <sys/eventfd.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "reactor/reactor.hpp"
#include "testing/blk_fixture.hpp"

namespace vhostd::testing {
namespace {

using namespace std::chrono_literals;

// Waits (bounded) until pred() holds.
template <class P>
bool eventually(P pred, std::chrono::milliseconds timeout = 3000ms) {
    auto end = std::chrono::steady_clock::now() + timeout;
    while (!pred()) {
        if (std::chrono::steady_clock::now() > end) return false;
        std::this_thread::sleep_for(1ms);
    }
    return true;
}

class CountingPoller final : public Poller {
public:
    explicit CountingPoller(bool parkable = true) : parkable_(parkable) {}
    bool poll() override {
        polls.fetch_add(1, std::memory_order_relaxed);
        return work.exchange(false);
    }
    // Completions published at the end of a pass (a queue whose backend finished requests).
    bool end_pass() override { return completed.exchange(false); }
    bool park() override {
        parks.fetch_add(1, std::memory_order_relaxed);
        return parkable_;
    }
    std::atomic<uint64_t> polls{0}, parks{0};
    std::atomic<bool> work{false};
    std::atomic<bool> completed{false};

private:
    const bool parkable_;
};

class ReactorParkBare : public ::testing::Test {
protected:
    void start(ReactorConfig cfg) {
        reactor_ = std::make_unique<Reactor>(0, cfg);
        ASSERT_TRUE(reactor_->start().ok());
    }
    void TearDown() override {
        if (!reactor_) return;
        reactor_->run_sync([&] {
            for (auto* p : added_) reactor_->remove_poller(p);
        });
        reactor_->stop();
    }
    // A poller owned by the fixture (it outlives the reactor's use of it), added to the reactor.
    CountingPoller& add(bool parkable = true) {
        owned_.push_back(std::make_unique<CountingPoller>(parkable));
        Poller* p = owned_.back().get();
        added_.push_back(p);
        reactor_->run_sync([&] { reactor_->add_poller(p); });
        return *owned_.back();
    }
    std::vector<std::unique_ptr<CountingPoller>> owned_;
    std::unique_ptr<Reactor> reactor_;
    std::vector<Poller*> added_;
};

// On a spinning reactor (kAlways: passes never stop), parked pollers are not polled at all while
// the reactor keeps making passes; a poller that cannot park stays in the hot set.
TEST_F(ReactorParkBare, IdlePollersLeaveThePassUntilWoken) {
    start(ReactorConfig{.mode = PollMode::kAlways, .park_after = 200us});
    CountingPoller& a = add();
    CountingPoller& b = add();
    CountingPoller& stubborn = add(false);
    ASSERT_TRUE(eventually([&] { return reactor_->stats().hot == 1; })) << "idle pollers never parked";
    EXPECT_EQ(reactor_->stats().pollers, 3u);
    EXPECT_GE(reactor_->stats().parks, 2u);
    uint64_t pa = a.polls.load(), pb = b.polls.load(), ps = stubborn.polls.load(), passes = reactor_->passes.get();
    std::this_thread::sleep_for(30ms);
    EXPECT_GT(reactor_->passes.get(), passes + 100) << "a kAlways reactor stopped spinning";
    EXPECT_EQ(a.polls.load(), pa) << "a parked poller was polled";
    EXPECT_EQ(b.polls.load(), pb) << "a parked poller was polled";
    EXPECT_GT(stubborn.polls.load(), ps + 100) << "a poller that refused to park was left alone";

    // A wake-up (what a kick read's completion does) brings exactly that one back...
    a.work = true;
    uint64_t wakes = reactor_->stats().wakes;
    reactor_->run_sync([&] { reactor_->wake(&a); });
    ASSERT_TRUE(eventually([&] { return a.polls.load() > pa; }));
    EXPECT_FALSE(a.work.load()) << "the woken poller's work was not taken";
    EXPECT_EQ(b.polls.load(), pb);
    EXPECT_EQ(reactor_->stats().wakes, wakes + 1);
    // ...which parks again once idle for the window.
    ASSERT_TRUE(eventually([&] { return reactor_->stats().hot == 1; }));
    // Waking a hot poller is a no-op.
    reactor_->run_sync([&] { reactor_->wake(&stubborn); });
    EXPECT_EQ(reactor_->stats().wakes, wakes + 1);
}

// Work keeps a poller hot: it parks only after a whole window without any.
TEST_F(ReactorParkBare, APollerWithWorkStaysHot) {
    start(ReactorConfig{.mode = PollMode::kAlways, .park_after = 20ms});
    CountingPoller& a = add();
    auto until = std::chrono::steady_clock::now() + 60ms;
    while (std::chrono::steady_clock::now() < until) {
        a.work = true;
        std::this_thread::sleep_for(1ms);
    }
    EXPECT_EQ(reactor_->stats().parks, 0u) << "a poller with work every millisecond parked (window 20 ms)";
    EXPECT_EQ(reactor_->stats().hot, 1u);
    ASSERT_TRUE(eventually([&] { return reactor_->stats().hot == 0; }));
}

// Completions count as work: a queue whose requests each take longer than the window finds nothing
// new in poll() between them, but it published a completion, and the guest's next request follows
// at once. Parking it there would make the guest kick for every request.
TEST_F(ReactorParkBare, PublishedCompletionsKeepAPollerHot) {
    start(ReactorConfig{.mode = PollMode::kAlways, .park_after = 20ms});
    CountingPoller& a = add();
    auto until = std::chrono::steady_clock::now() + 60ms;
    while (std::chrono::steady_clock::now() < until) {
        a.completed = true;
        std::this_thread::sleep_for(1ms);
    }
    EXPECT_EQ(reactor_->stats().parks, 0u) << "a poller completing work every millisecond parked (window 20 ms)";
    EXPECT_EQ(reactor_->stats().hot, 1u);
    ASSERT_TRUE(eventually([&] { return reactor_->stats().hot == 0; }));
}

// park_after 0: the old behaviour, every pass walks every poller.
TEST_F(ReactorParkBare, ParkingCanBeTurnedOff) {
    start(ReactorConfig{.mode = PollMode::kAlways, .park_after = 0us});
    CountingPoller& a = add();
    std::this_thread::sleep_for(20ms);
    EXPECT_EQ(a.parks.load(), 0u);
    EXPECT_EQ(reactor_->stats().hot, 1u);
    uint64_t pa = a.polls.load();
    std::this_thread::sleep_for(10ms);
    EXPECT_GT(a.polls.load(), pa + 100);
}

// Removing a parked poller takes it off the reactor for good: a later wake is ignored.
TEST_F(ReactorParkBare, RemovedPollersAreNotWoken) {
    start(ReactorConfig{.mode = PollMode::kAlways, .park_after = 100us});
    CountingPoller& a = add();
    ASSERT_TRUE(eventually([&] { return reactor_->stats().hot == 0; }));
    reactor_->run_sync([&] { reactor_->remove_poller(&a); });
    added_.clear();
    reactor_->run_sync([&] { reactor_->wake(&a); });
    uint64_t pa = a.polls.load();
    std::this_thread::sleep_for(10ms);
    EXPECT_EQ(a.polls.load(), pa);
    EXPECT_EQ(reactor_->stats().pollers, 0u);
    EXPECT_EQ(reactor_->stats().hot, 0u);
}

// Real devices: many idle null-backed blk devices on one reactor in each polling mode. All their
// queues park (asking the guest for kicks), each device's next request wakes its queue and
// completes, and the queue parks again; the devices stop cleanly while parked (TearDown).
class ReactorParkBlk : public BlkFixture, public ::testing::WithParamInterface<PollMode> {};

TEST_P(ReactorParkBlk, IdleDevicesParkAndEachWakesOnItsKick) {
    constexpr int kDevices = 24;
    app::DaemonConfig cfg;
    cfg.threads = 1;
    cfg.reactor.mode = GetParam();
    cfg.reactor.park_after = 200us;
    start_daemon(cfg);
    std::vector<Guest> guests(kDevices);
    for (int i = 0; i < kDevices; ++i) {
        auto sock = add_blk(fmt::format("socket={},backend=null,size=8M,queues=1", path(fmt::format("s{}.sock", i))));
        connect_guest(guests[i], sock, 1);
    }
    Reactor& r = daemon_->reactor(0);
    ASSERT_TRUE(eventually([&] { return r.stats().pollers == kDevices && r.stats().hot == 0; }))
        << "hot " << r.stats().hot << " of " << r.stats().pollers << " queues after idling";
    for (int round = 0; round < 2; ++round) {
        for (int i = 0; i < kDevices; ++i) {
            Guest& g = guests[i];
            auto& q = *g.queues[0];
            auto req = testing::make_blk_read(*g.mem, static_cast<uint64_t>(i) * 8, 4096);
            ASSERT_OK(req);
            ASSERT_OK(req.value().submit(q));
            q.publish();
            // The parked queue asked for a kick (notifications on, or avail_event at its index).
            ASSERT_TRUE(q.kick_prepare()) << "device " << i << ": a parked queue did not ask for a kick";
            eventfd_write(g.kicks[0].get(), 1);
            auto used = q.wait_used(g.calls[0].get(), std::chrono::seconds(5));
            ASSERT_TRUE(used.has_value()) << "device " << i << ": request not completed: the kick did not wake it";
            EXPECT_EQ(req.value().status(), blk::kSOk);
        }
        ASSERT_TRUE(eventually([&] { return r.stats().hot == 0; })) << "queues did not park again";
    }
    EXPECT_GE(r.stats().wakes, static_cast<uint64_t>(2 * kDevices));
}

INSTANTIATE_TEST_SUITE_P(Modes, ReactorParkBlk,
                         ::testing::Values(PollMode::kAlways, PollMode::kAdaptive, PollMode::kNever));

// A queue with a request in flight never parks: a slow backend's completion must be published
// by a pass. (The file backend here: the request completes whatever the park window.)
TEST_F(BlkFixture, AQueueWithRequestsInFlightCompletesThemWhileOthersPark) {
    app::DaemonConfig cfg;
    cfg.threads = 1;
    cfg.reactor.mode = PollMode::kAlways;
    cfg.reactor.park_after = 1us;  // park at every chance
    start_daemon(cfg);
    auto disk = make_disk("d.img");
    auto sock = add_blk("socket=" + path("a.sock") + ",path=" + disk + ",queues=1");
    Guest g;
    connect_guest(g, sock, 1);
    for (int i = 0; i < 200; ++i) {
        auto req = testing::make_blk_read(*g.mem, static_cast<uint64_t>(i % 64) * 8, 4096);
        ASSERT_OK(req);
        ASSERT_EQ(run(g, 0, req.value()), 4097u) << "request " << i;
        ASSERT_EQ(req.value().status(), blk::kSOk);
    }
}

}  // namespace
}  // namespace vhostd::testing

namespace vhostd::testing {
namespace {

// One big device over several reactors (SPDK pins a controller to one core): with --threads 4 a
// 4-queue device gets one queue on each reactor, the next device continues the round-robin, and
// every queue serves I/O from its own reactor.
TEST_F(BlkFixture, QueuesOfOneDeviceSpreadOverTheReactors) {
    start_daemon(4, PollMode::kAdaptive);
    auto big = add_blk("socket=" + path("big.sock") + ",backend=null,size=64M,queues=4");
    auto small = add_blk("socket=" + path("small.sock") + ",backend=null,size=8M,queues=2");
    Guest g, h;
    connect_guest(g, big, 4);
    connect_guest(h, small, 2);
    auto rs = daemon_->reactor_stats();
    ASSERT_EQ(rs.size(), 4u);
    // 6 queues over 4 reactors: 2, 2, 1, 1 (the small device's two continue after the big one's).
    EXPECT_EQ(rs[0].pollers, 2u);
    EXPECT_EQ(rs[1].pollers, 2u);
    EXPECT_EQ(rs[2].pollers, 1u);
    EXPECT_EQ(rs[3].pollers, 1u);
    std::vector<uint64_t> passes;
    for (const auto& r : rs) passes.push_back(r.passes);
    for (uint32_t qi = 0; qi < 4; ++qi)
        EXPECT_EQ(status_of(g, qi, make_blk_read(*g.mem, qi * 8, 4096)), blk::kSOk) << "queue " << qi;
    for (uint32_t qi = 0; qi < 2; ++qi)
        EXPECT_EQ(status_of(h, qi, make_blk_read(*h.mem, qi * 8, 4096)), blk::kSOk) << "queue " << qi;
    rs = daemon_->reactor_stats();
    for (size_t i = 0; i < rs.size(); ++i) EXPECT_GT(rs[i].passes, passes[i]) << "reactor " << i << " served nothing";
}

}  // namespace
}  // namespace vhostd::testing
