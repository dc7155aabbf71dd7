// Statistics the data path keeps for the control plane to read: counters and a latency
// histogram, each written by one thread only (the reactor that owns the queue) and read by any.
// Single writer, so an update is a relaxed load and store (no locked instruction on the data
// path); a reader sees every value some moment had, and a count is exact once the writer is
// quiet. The histogram's buckets are log-linear (16 per power of two: a percentile is off by at
// most 1/16), the same scheme as bench/histogram.hpp, so the daemon's and the benchmark's
// percentiles compare directly.
#pragma once

#include <time.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>

namespace vhostd {

// CLOCK_MONOTONIC in nanoseconds (vDSO: no syscall).
inline uint64_t mono_ns() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(ts.tv_nsec);
}

class Counter {
public:
    void add(uint64_t n = 1) { v_.store(v_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed); }
    void set(uint64_t n) { v_.store(n, std::memory_order_relaxed); }
    uint64_t get() const { return v_.load(std::memory_order_relaxed); }

private:
    std::atomic<uint64_t> v_{0};
};

// Log-linear bucketing of nanosecond values: exact below 16, then 16 buckets per power of two.
struct LogBuckets {
    static constexpr size_t kCount = 16 * 62;
    static size_t index(uint64_t ns) {
        if (ns < 16) return ns;
        int e = 63 - __builtin_clzll(ns);  // >= 4
        return static_cast<size_t>((e - 3) * 16 + static_cast<int>((ns >> (e - 4)) & 15));
    }
    // The largest value bucket i holds.
    static uint64_t upper(size_t i) {
        if (i < 16) return i;
        uint64_t e = i / 16 + 3, sub = i % 16;
        if (e >= 63) return UINT64_MAX;
        return ((16 + sub + 1) << (e - 4)) - 1;
    }
};

struct LatencySummary {
    uint64_t count = 0;
    uint64_t p50_ns = 0, p99_ns = 0, p999_ns = 0, max_ns = 0;
};

class LatencyHistogram {
public:
    // Writer thread only.
    void record(uint64_t ns) {
        auto& b = b_[LogBuckets::index(ns)];
        b.store(b.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
        sum_.add(ns);
        if (ns > max_.load(std::memory_order_relaxed)) max_.store(ns, std::memory_order_relaxed);
    }
    // Any thread: the sum of every value recorded (a Prometheus histogram's _sum).
    uint64_t sum_ns() const { return sum_.get(); }

    // Any thread: adds this histogram's buckets into `into` (to merge queues into a total).
    void snapshot(std::array<uint64_t, LogBuckets::kCount>& into, uint64_t& max) const {
        for (size_t i = 0; i < LogBuckets::kCount; ++i) into[i] += b_[i].load(std::memory_order_relaxed);
        max = std::max(max, max_.load(std::memory_order_relaxed));
    }

    LatencySummary summary() const {
        std::array<uint64_t, LogBuckets::kCount> b{};
        uint64_t max = 0;
        snapshot(b, max);
        return summarize(b, max);
    }

    // Percentiles of a snapshot: the upper bound of the bucket holding each, capped at the max.
    static LatencySummary summarize(const std::array<uint64_t, LogBuckets::kCount>& b, uint64_t max) {
        LatencySummary s;
        for (uint64_t n : b) s.count += n;
        s.max_ns = max;
        if (s.count == 0) return s;
        auto at = [&](uint64_t per_mille_tenths) {  // p in units of 0.01 %
            uint64_t want = (s.count * per_mille_tenths + 9999) / 10000;
            want = std::max<uint64_t>(want, 1);
            uint64_t seen = 0;
            for (size_t i = 0; i < b.size(); ++i) {
                seen += b[i];
                if (seen >= want) return std::min(LogBuckets::upper(i), max);
            }
            return max;
        };
        s.p50_ns = at(5000);
        s.p99_ns = at(9900);
        s.p999_ns = at(9990);
        return s;
    }

private:
    std::array<std::atomic<uint64_t>, LogBuckets::kCount> b_{};
    std::atomic<uint64_t> max_{0};
    Counter sum_;
};

// How many values of a snapshot are <= bound_ns, counting whole buckets only (a bucket whose
// upper end lies above the bound counts towards the next bound): a Prometheus histogram's
// cumulative `le` count, low by at most the 1/16-wide bucket straddling the bound.
inline uint64_t count_at_most(const std::array<uint64_t, LogBuckets::kCount>& b, uint64_t bound_ns) {
    uint64_t n = 0;
    for (size_t i = 0; i < b.size() && LogBuckets::upper(i) <= bound_ns; ++i) n += b[i];
    return n;
}

}  // namespace vhostd
