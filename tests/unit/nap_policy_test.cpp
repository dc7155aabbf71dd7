// The adaptive nap policy against simulated clients: a small discrete-event model of one reactor
// (poll passes, naps that overshoot like a VM's timers do) and of clients that are open-loop
// (requests on their own schedule) or closed-loop (a new request only after a completion).
// The properties: open-loop sparse streams are batched (few wakeups per request); closed-loop
// clients lose next to no throughput; dense and very sparse streams are never napped.
#include "reactor/nap_policy.hpp"

#include <gtest/gtest.h>

#include <deque>

namespace vhostd {
namespace {

using namespace std::chrono_literals;
using Clock = NapPolicy::Clock;

struct SimResult {
    double completed_per_s = 0;
    double last_half_s_completed_per_s = 0;  // over the last 0.5 s of the run
    double naps_per_request = 0;
    double avg_latency_us = 0;
    NapPolicy policy;
};

// Client: open loop at `rate_per_s`, or closed loop with `qd` outstanding and `think_us` between a
// completion and the next submission. Server: a pass costs `pass_us`; an idle pass naps when the
// policy says so (the nap lasts its length + `overshoot_us`); otherwise it polls (no sleeping:
// the 50 us poll budget of adaptive mode is not modelled, it does not matter for rates here).
// closed_from_s >= 0: an open-loop client that turns closed-loop (qd, think_us) at that time.
SimResult simulate(bool open_loop, double rate_per_s, unsigned qd, double think_us, double seconds,
                   NapConfig cfg = {}, double overshoot_us = 35, double pass_us = 0.2, double closed_from_s = -1) {
    SimResult r{.policy = NapPolicy(cfg)};
    if (closed_from_s >= 0) open_loop = true;
    auto t0 = Clock::time_point{} + 1s;
    double now = 0;  // us
    std::deque<double> pending;  // submission times of requests not yet seen by the server
    std::deque<double> next_submit;  // closed loop: when each slot submits again
    for (unsigned i = 0; i < qd; ++i) next_submit.push_back(think_us * i / qd);
    double next_open = 0, gap = 1e6 / rate_per_s;
    uint64_t done = 0, naps = 0, tail_done = 0;
    double lat_sum = 0;
    const double end = seconds * 1e6;
    if (closed_from_s >= 0) next_submit.clear();
    auto arrive_until = [&](double t) {
        if (open_loop) {
            while (next_open <= t) {
                pending.push_back(next_open);
                next_open += gap;
            }
        } else {
            while (!next_submit.empty() && next_submit.front() <= t) {
                pending.push_back(next_submit.front());
                next_submit.pop_front();
            }
        }
    };
    while (now < end) {
        if (open_loop && closed_from_s >= 0 && now >= closed_from_s * 1e6) {
            open_loop = false;
            for (unsigned i = 0; i < qd; ++i) next_submit.push_back(now + think_us * i / qd);
        }
        arrive_until(now);
        uint32_t n = static_cast<uint32_t>(pending.size());
        r.policy.arrivals(n);
        now += pass_us;
        for (double s : pending) {
            lat_sum += now - s;
            ++done;
            if (now >= end - 0.5e6) ++tail_done;
            if (!open_loop) next_submit.push_back(now + think_us);
        }
        pending.clear();
        r.policy.tick(t0 + std::chrono::nanoseconds(static_cast<int64_t>(now * 1000)));
        if (n == 0 && r.policy.napping()) {
            ++naps;
            double len = std::chrono::duration<double, std::micro>(r.policy.nap_length()).count();
            r.policy.napped();
            now += len + overshoot_us;
        } else if (n == 0) {
            // Idle polling passes until the next arrival change nothing but the clock: skip them
            // (keeps the simulation fast under sanitizers).
            double next = open_loop ? next_open : (next_submit.empty() ? now : next_submit.front());
            if (next > now) now = next;
        }
    }
    r.completed_per_s = static_cast<double>(done) / seconds;
    r.last_half_s_completed_per_s = static_cast<double>(tail_done) / 0.5;
    r.naps_per_request = done ? static_cast<double>(naps) / static_cast<double>(done) : 0;
    r.avg_latency_us = done ? lat_sum / static_cast<double>(done) : 0;
    return r;
}

TEST(NapPolicy, SteadySparseOpenLoopStreamIsBatched) {
    auto r = simulate(true, 100'000, 0, 0, 2.0);
    EXPECT_EQ(r.policy.entered, 1u);
    EXPECT_TRUE(r.policy.napping());
    EXPECT_NEAR(r.completed_per_s, 100'000, 2'000);
    // Naps of 200 us, one block in four of 100 us (+35 us overshoot), one request per 10 us:
    // >= 19 per wakeup.
    EXPECT_LT(r.naps_per_request, 1.0 / 19);
    // Added latency is bounded by one nap.
    EXPECT_LT(r.avg_latency_us, 200 + 35);
    EXPECT_EQ(r.policy.closed_loops, 0u);
    EXPECT_GE(r.policy.verdicts, 10u);  // it kept re-checking that napping costs nothing
}

TEST(NapPolicy, ConfirmedOpenLoopIsProbedLessOften) {
    // Every window that confirms the open loop halves how often short naps come: after a while
    // one block in 16, so a steady stream pays fewer wakeups than with one block in 4.
    auto r = simulate(true, 100'000, 0, 0, 2.0);
    EXPECT_EQ(r.policy.probe_cycle(), NapPolicy::kCycleMax);
    EXPECT_EQ(r.policy.closed_loops, 0u);
    // One block in 4 of 100 us naps: 21 requests per wakeup (175 us + 35 us overshoot on
    // average); one in 16: about 22.6.
    EXPECT_LT(r.naps_per_request, 1.0 / 22);
}

TEST(NapPolicy, ClientTurningClosedLoopAfterALongOpenStretchIsStillCaught) {
    // 1.5 s of a confirmed open loop (probing at its rarest), then the client becomes a QD4
    // closed loop: napping must be given up soon enough that the last half second runs at the
    // polled rate.
    auto polled = simulate(false, 0, 4, 10, 1.0, NapConfig{.nap_max = 0us});
    auto r = simulate(true, 100'000, 4, 10, 2.5, {}, 35, 0.2, 1.5);
    EXPECT_GE(r.policy.closed_loops, 1u);
    EXPECT_GT(r.last_half_s_completed_per_s, 0.95 * polled.completed_per_s);
}

TEST(NapPolicy, BurstyOpenLoopStreamIsStillBatched) {
    // Requests come in bursts of 8 every 80 us (100 k/s on average), like a generator whose own
    // timer wakeups are late: batches still grow with the nap.
    auto r = simulate(true, 12'500, 0, 0, 2.0, NapConfig{.enter_batch = 2});
    (void)r;
    NapPolicy p;
    auto t = Clock::time_point{} + 1s;
    double now = 0, next_burst = 0;
    uint64_t pending = 0, naps = 0, done = 0;
    while (now < 2e6) {
        while (next_burst <= now) {
            pending += 8;
            next_burst += 80;
        }
        p.arrivals(static_cast<uint32_t>(pending));
        done += pending;
        bool idle = pending == 0;
        pending = 0;
        now += 0.2;
        p.tick(t + std::chrono::nanoseconds(static_cast<int64_t>(now * 1000)));
        if (idle && p.napping()) {
            double len = std::chrono::duration<double, std::micro>(p.nap_length()).count();
            p.napped();
            ++naps;
            now += len + 35;
        }
    }
    EXPECT_TRUE(p.napping());
    EXPECT_EQ(p.closed_loops, 0u);
    EXPECT_LT(static_cast<double>(naps) / static_cast<double>(done), 1.0 / 10);
}

TEST(NapPolicy, FasterOpenLoopStreamGetsShorterNaps) {
    auto r = simulate(true, 400'000, 0, 0, 1.0);
    ASSERT_TRUE(r.policy.napping());
    // 32 requests' worth at 400 k/s = 80 us (the short naps are half of that).
    EXPECT_NEAR(std::chrono::duration_cast<std::chrono::microseconds>(r.policy.nap_length()).count(), 80, 40);
    EXPECT_NEAR(r.completed_per_s, 400'000, 8'000);
}

TEST(NapPolicy, ClosedLoopClientKeepsItsThroughput) {
    // QD4, 10 us think time: ~350 k/s when polled, far less if every round trip waited for a nap.
    auto polled = simulate(false, 0, 4, 10, 2.0, NapConfig{.nap_max = 0us});
    auto adaptive = simulate(false, 0, 4, 10, 2.0);
    EXPECT_GT(polled.completed_per_s, 300'000);
    EXPECT_GE(adaptive.policy.closed_loops, 1u);
    // Hold-offs double: over 2 s, napping costs the client a few percent at most.
    EXPECT_GT(adaptive.completed_per_s, 0.95 * polled.completed_per_s);
}

TEST(NapPolicy, DeepClosedLoopWithSlowClient) {
    // QD32, client sleeps on interrupts (think 30 us): a nap collects all 32 whatever its length.
    auto polled = simulate(false, 0, 32, 30, 2.0, NapConfig{.nap_max = 0us});
    auto adaptive = simulate(false, 0, 32, 30, 2.0);
    EXPECT_GT(adaptive.completed_per_s, 0.95 * polled.completed_per_s);
}

TEST(NapPolicy, ClosedLoopQd1WithSlowClient) {
    // A client that sleeps on interrupts (think 25 us): polling gives ~40 k/s.
    auto polled = simulate(false, 0, 1, 25, 2.0, NapConfig{.nap_max = 0us});
    auto adaptive = simulate(false, 0, 1, 25, 2.0);
    EXPECT_GT(adaptive.completed_per_s, 0.95 * polled.completed_per_s);
}

TEST(NapPolicy, DenseClosedLoopIsNeverNapped) {
    auto r = simulate(false, 0, 32, 1, 0.5);
    EXPECT_EQ(r.policy.entered, 0u);
    EXPECT_EQ(r.naps_per_request, 0);
}

TEST(NapPolicy, VerySparseStreamIsNotNapped) {
    // 10 k/s: a 200 us nap would collect 2 requests; the normal poll-then-sleep path is better.
    auto r = simulate(true, 10'000, 0, 0, 1.0);
    EXPECT_EQ(r.policy.entered, 0u);
}

TEST(NapPolicy, DisabledNeverNaps) {
    auto r = simulate(true, 100'000, 0, 0, 1.0, NapConfig{.nap_max = 0us});
    EXPECT_EQ(r.policy.entered, 0u);
    EXPECT_EQ(r.naps_per_request, 0);
}

// Feeding epochs and naps directly: the state machine's edges.
struct Feeder {
    NapPolicy p;
    Clock::time_point t = Clock::time_point{} + 1s;
    explicit Feeder(NapConfig c = {}) : p(c) { p.tick(t); }
    void epoch(double rate_per_s) {
        p.arrivals(static_cast<uint32_t>(rate_per_s * 0.004));
        t += 4ms;
        p.tick(t);
    }
    // Naps until the next verdict: long naps find `lng` requests, short ones `shrt`.
    void window(uint32_t lng, uint32_t shrt) {
        uint64_t v = p.verdicts;
        for (unsigned i = 0; i < 200 && p.napping() && p.verdicts == v; ++i) {
            bool is_short = p.nap_length() < nap_long;
            p.napped();
            p.arrivals(is_short ? shrt : lng);
        }
        EXPECT_EQ(p.verdicts, v + 1) << "no verdict within 200 naps";
    }
    std::chrono::nanoseconds nap_long{};
};

TEST(NapPolicy, EntersOnlyAfterTwoQualifyingEpochs) {
    Feeder f;
    f.epoch(100'000);
    EXPECT_FALSE(f.p.napping());
    f.epoch(1'000'000);  // too dense (gap 1 us)
    f.epoch(100'000);
    EXPECT_FALSE(f.p.napping());
    f.epoch(100'000);
    EXPECT_TRUE(f.p.napping());
    EXPECT_EQ(f.p.nap_length(), std::chrono::microseconds(200));
}

TEST(NapPolicy, NoGrowthMeansClosedLoopAndHoldOffDoubles) {
    NapConfig c;
    Feeder f(c);
    f.epoch(100'000);
    f.epoch(100'000);
    ASSERT_TRUE(f.p.napping());
    f.nap_long = f.p.nap_length();
    f.window(8, 8);  // batch does not grow with the nap: the client waits for us?
    EXPECT_TRUE(f.p.napping()) << "one window is not enough evidence";
    EXPECT_EQ(f.p.closed_loops, 0u);
    f.window(8, 8);  // twice: it does
    EXPECT_FALSE(f.p.napping());
    EXPECT_EQ(f.p.closed_loops, 1u);
    for (unsigned i = 0; i < c.holdoff_epochs + 1; ++i) {
        f.epoch(100'000);
        EXPECT_FALSE(f.p.napping()) << "epoch " << i << " of the hold-off";
    }
    f.epoch(100'000);
    ASSERT_TRUE(f.p.napping());
    f.window(8, 8);
    f.window(8, 8);
    EXPECT_EQ(f.p.closed_loops, 2u);
    for (unsigned i = 0; i < 2 * c.holdoff_epochs + 1; ++i) {
        f.epoch(100'000);
        EXPECT_FALSE(f.p.napping()) << "epoch " << i << " of the doubled hold-off";
    }
    f.epoch(100'000);
    ASSERT_TRUE(f.p.napping());
    // Growth in between resets the count (and the hold-off doubling).
    f.window(8, 8);
    f.window(20, 10);
    f.window(8, 8);
    EXPECT_TRUE(f.p.napping());
    f.window(8, 8);
    EXPECT_EQ(f.p.closed_loops, 3u);
    for (unsigned i = 0; i < c.holdoff_epochs + 1; ++i) f.epoch(100'000);
    f.epoch(100'000);
    EXPECT_TRUE(f.p.napping()) << "hold-off back to its first length after an open-loop verdict";
}

TEST(NapPolicy, GrowthKeepsNappingAndThinStreamLeaves) {
    Feeder f;
    f.epoch(100'000);
    f.epoch(100'000);
    ASSERT_TRUE(f.p.napping());
    f.nap_long = f.p.nap_length();
    for (int i = 0; i < 5; ++i) f.window(24, 14);
    EXPECT_TRUE(f.p.napping());
    EXPECT_EQ(f.p.verdicts, 5u);
    EXPECT_EQ(f.p.closed_loops, 0u);
    f.window(2, 1);  // far fewer than predicted (QD1 closed loop, or the stream thinned): leave
    EXPECT_FALSE(f.p.napping());
    EXPECT_EQ(f.p.closed_loops, 1u);
    for (unsigned i = 0; i < NapConfig{}.holdoff_epochs + 1; ++i) {
        f.epoch(100'000);
        EXPECT_FALSE(f.p.napping()) << "epoch " << i << ": not straight back in";
    }
    f.epoch(100'000);
    EXPECT_TRUE(f.p.napping());
}

}  // namespace
}  // namespace vhostd
