// A log-linear histogram of nanosecond values for the benchmark tools (blkbench, netrr): the
// daemon's buckets (core/stats.hpp, <= 6 % error), fixed size, no allocation while recording.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "core/stats.hpp"

namespace vhostd::bench {

class Histogram {
public:
    void add(uint64_t ns) {
        ++b_[bucket(ns)];
        ++n_;
        sum_ += ns;
        min_ = std::min(min_, ns);
        max_ = std::max(max_, ns);
    }
    void merge(const Histogram& o) {
        for (size_t i = 0; i < b_.size(); ++i) b_[i] += o.b_[i];
        n_ += o.n_;
        sum_ += o.sum_;
        min_ = std::min(min_, o.min_);
        max_ = std::max(max_, o.max_);
    }
    uint64_t count() const { return n_; }
    double avg() const { return n_ ? static_cast<double>(sum_) / static_cast<double>(n_) : 0; }
    uint64_t min() const { return n_ ? min_ : 0; }
    uint64_t max() const { return max_; }
    // The upper bound of the bucket holding the p-th percentile, capped at the largest value seen.
    uint64_t percentile(double p) const {
        if (n_ == 0) return 0;
        auto want = static_cast<uint64_t>(std::ceil(p / 100.0 * static_cast<double>(n_)));
        want = std::max<uint64_t>(want, 1);
        uint64_t seen = 0;
        for (size_t i = 0; i < b_.size(); ++i) {
            seen += b_[i];
            if (seen >= want) return std::min(upper(i), max_);
        }
        return max_;
    }

private:
    static size_t bucket(uint64_t ns) { return LogBuckets::index(ns); }
    static uint64_t upper(size_t i) { return LogBuckets::upper(i); }
    std::array<uint64_t, LogBuckets::kCount> b_{};
    uint64_t n_ = 0, sum_ = 0, min_ = UINT64_MAX, max_ = 0;
};

}  // namespace vhostd::bench
