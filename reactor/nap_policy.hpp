// When a polling reactor should nap instead of spinning: the time-based half of adaptive polling.
//
// Problem: a steady but sparse stream (say 100 k requests/s, one every 10 us) keeps a plain
// "poll for 50 us after the last work" reactor spinning forever: one full core for 10 % of the
// work. Sleeping per request instead costs a wakeup each (tens of us of CPU on a VM). The cheap
// way is to nap a bounded time with guest notifications left off and take the requests that
// arrived meanwhile as one batch: one wakeup, one publication and one interrupt per batch.
//
// Napping adds up to one nap of latency. An open-loop client (requests arrive on their own
// schedule) does not mind; a closed-loop client (it submits only after our completions, or its
// queue is full) loses throughput. Arrival rates alone cannot tell them apart, and epoch rates
// are far too noisy on a real guest (bursts, stalls of milliseconds) to detect "napping slowed
// the client down". So the policy asks the question directly: among blocks of long naps, one
// block in four is of half-length naps, and the batches found after each are compared (medians).
// An open-loop client's batch grows with the nap; a closed-loop client's batch is capped by its
// depth (or it waits for our completion), so it does not. No growth in two windows running: back
// to polling, and hold off (doubling each time, so a closed-loop client pays a few milliseconds of
// napping every few seconds at most). Each window that confirms an open loop halves how often the
// short blocks come (one in 4, 8, then 16): short naps are extra wakeups, and a stream that has
// proven open-loop for a while needs fewer checks. A window without growth brings back one in 4.
// (The same spirit as dynamic interrupt moderation in NIC drivers: keep a coarser setting only
// while it costs the client nothing.)
//
// Entry: the arrival rate in polling mode, measured over epochs of a few ms, must predict
// batches worth napping for, twice in a row, with gaps between arrivals (dense streams are
// polled). Pure logic: the reactor feeds arrivals, the clock and its naps, and asks for the nap
// length; tests/unit/nap_policy_test.cpp runs it against simulated clients.
#pragma once

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>

namespace vhostd {

struct NapConfig {
    std::chrono::microseconds nap_max{200};  // 0: never nap
    std::chrono::microseconds epoch{4000};
    double enter_batch = 8;        // nap only if a nap_max nap would collect this many requests
    double exit_batch = 3;         // leave nap mode when long naps collect fewer than this
    double target_batch = 32;      // naps shorter than nap_max when this many arrive sooner
    double min_gap_us = 2;         // denser streams are polled (closed loops at full speed)
    double growth = 1.25;          // long-nap batch / short-nap batch below this: closed loop
    double min_growth = 2;         // ...or fewer extra requests than this (small batches are noisy)
    unsigned holdoff_epochs = 8;   // after the first closed loop; doubles up to holdoff_max
    unsigned holdoff_max = 512;
};

class NapPolicy {
public:
    using Clock = std::chrono::steady_clock;
    static constexpr unsigned kBlock = 6;    // naps of one length in a row
    static constexpr unsigned kCycle = 4;    // blocks per cycle at first; one of them short (the probe)
    static constexpr unsigned kCycleMax = 16;  // ...growing to this while open loop is confirmed
    static constexpr unsigned kWindow = 10;  // counted naps of each length per verdict

    explicit NapPolicy(NapConfig cfg = {}) : cfg_(cfg) {}

    void arrivals(uint32_t n) {
        count_ += n;
        batch_ += n;
    }

    // Once per reactor pass (cheap unless an epoch ended).
    void tick(Clock::time_point now) {
        if (cfg_.nap_max.count() == 0) return;
        if (epoch_start_ == Clock::time_point{}) {
            epoch_start_ = now;
            return;
        }
        auto elapsed = now - epoch_start_;
        if (elapsed < cfg_.epoch) return;
        double us = std::chrono::duration<double, std::micro>(elapsed).count();
        end_epoch(static_cast<double>(count_) / us);
        count_ = 0;
        epoch_start_ = now;
    }

    bool napping() const { return napping_; }
    // How long the next nap is (blocks of long and of half-length naps); zero when not napping.
    std::chrono::nanoseconds nap_length() const {
        if (!napping_) return std::chrono::nanoseconds{0};
        return block_short_ ? nap_ / 2 : nap_;
    }
    // The reactor is about to nap for nap_length(): closes the previous nap's batch. The first
    // nap of a block is not counted: a client's reaction to our completions lags (its wakeup),
    // so part of what arrives in it belongs to the previous nap's length.
    void napped() {
        if (in_nap_ && last_pos_ != 0) record(batch_);
        in_nap_ = true;
        last_short_ = block_short_;
        last_pos_ = pos_;
        if (++pos_ == kBlock) {
            // Short naps exist to measure, and cost wakeups: one block in cycle_.
            pos_ = 0;
            block_ = (block_ + 1) % cycle_;
            block_short_ = block_ == 1;
        }
        batch_ = 0;
    }

    // Blocks per probing cycle now (one of them short): kCycle .. kCycleMax.
    unsigned probe_cycle() const { return cycle_; }

    // Counters for logs and tests.
    uint64_t entered = 0;       // times nap mode was entered
    uint64_t closed_loops = 0;  // verdicts "napping costs the client" (or the stream thinned)
    uint64_t verdicts = 0;      // windows evaluated

private:
    void record(uint64_t batch) {
        auto& v = last_short_ ? short_ : long_;
        auto& n = last_short_ ? n_short_ : n_long_;
        if (n < kWindow) v[n++] = static_cast<uint32_t>(std::min<uint64_t>(batch, UINT32_MAX));
        if (n_short_ < kWindow || n_long_ < kWindow) return;
        ++verdicts;
        double l = median(long_), s = median(short_);
        n_short_ = n_long_ = 0;
        if (l < cfg_.exit_batch) {
            // Far fewer than the polling rate predicted: a closed loop at low depth (QD1 waits
            // for every completion) or a stream that thinned out. Either way polling (then
            // sleeping) is better, and re-entering at once would just repeat this.
            back_off();
            return;
        }
        if (l < cfg_.growth * std::max(s, 0.5) || l - s < cfg_.min_growth) {
            // Twice in a row: one window can be fooled by a client's hiccup, and a false
            // verdict costs a whole hold-off of spinning. Probe often until it is settled.
            cycle_ = kCycle;
            if (++no_growth_ < 2) return;
            back_off();
            return;
        }
        no_growth_ = 0;
        next_holdoff_ = cfg_.holdoff_epochs;  // open loop confirmed
        cycle_ = std::min(cycle_ * 2, kCycleMax);
    }

    static double median(std::array<uint32_t, kWindow> v) {
        std::sort(v.begin(), v.end());
        return (static_cast<double>(v[kWindow / 2 - 1]) + static_cast<double>(v[kWindow / 2])) / 2;
    }

    void end_epoch(double rate_per_us) {
        if (napping_) {
            // Load grew a lot: shorter naps keep batches (and added latency) near the target.
            if (rate_per_us * us(nap_) > 2 * cfg_.target_batch) set_nap(rate_per_us);
            return;
        }
        if (holdoff_ > 0) {
            --holdoff_;
            qualified_ = 0;
            return;
        }
        double gap_us = rate_per_us > 0 ? 1.0 / rate_per_us : 1e18;
        bool worth = gap_us >= cfg_.min_gap_us && rate_per_us * us(cfg_.nap_max) >= cfg_.enter_batch;
        qualified_ = worth ? qualified_ + 1 : 0;
        if (qualified_ >= 2) {
            ++entered;
            napping_ = true;
            in_nap_ = block_short_ = false;
            pos_ = block_ = 0;
            cycle_ = kCycle;
            n_short_ = n_long_ = 0;
            set_nap(rate_per_us);
        }
    }

    void back_off() {
        ++closed_loops;
        holdoff_ = next_holdoff_;
        next_holdoff_ = std::min(next_holdoff_ * 2, cfg_.holdoff_max);
        leave();
    }

    void leave() {
        napping_ = false;
        no_growth_ = 0;
        in_nap_ = false;
        qualified_ = 0;
    }

    void set_nap(double rate_per_us) {
        double want_us = std::min(us(cfg_.nap_max), cfg_.target_batch / rate_per_us);
        nap_ = std::chrono::nanoseconds(static_cast<int64_t>(std::max(want_us, 10.0) * 1000.0));
    }

    static double us(std::chrono::microseconds d) { return static_cast<double>(d.count()); }
    static double us(std::chrono::nanoseconds d) { return static_cast<double>(d.count()) / 1000.0; }

    const NapConfig cfg_;
    Clock::time_point epoch_start_{};
    uint64_t count_ = 0;  // arrivals this epoch
    uint64_t batch_ = 0;  // arrivals since the last nap began
    bool napping_ = false;
    bool in_nap_ = false;  // a nap was taken in this nap-mode stint (batch_ belongs to it)
    bool block_short_ = false, last_short_ = false;
    unsigned pos_ = 0, last_pos_ = 0, block_ = 0;
    unsigned cycle_ = kCycle;  // blocks per cycle now (one short)
    unsigned qualified_ = 0;
    unsigned no_growth_ = 0;  // consecutive verdicts without batch growth
    unsigned holdoff_ = 0;
    unsigned next_holdoff_ = cfg_.holdoff_epochs;
    std::array<uint32_t, kWindow> long_{}, short_{};
    unsigned n_long_ = 0, n_short_ = 0;
    std::chrono::nanoseconds nap_{0};
};

}  // namespace vhostd
