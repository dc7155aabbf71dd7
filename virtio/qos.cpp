#include "virtio/qos.hpp"

#include <algorithm>

namespace vhostd::virtio {

namespace {
constexpr uint64_t kFar = UINT64_MAX / 4;  // "never" for a reservation, with room to compare
}

void Qos::set(const QosLimits& l) {
    auto put = [](Bucket& b, uint64_t rate) {
        b.rate.store(rate, std::memory_order_relaxed);
        b.tat.store(0, std::memory_order_relaxed);
    };
    put(iops_, l.iops);
    put(bps_, l.bps);
    put(read_iops_, l.read_iops);
    put(write_iops_, l.write_iops);
    put(read_bps_, l.read_bps);
    put(write_bps_, l.write_bps);
    burst_ms_.store(l.burst_ms, std::memory_order_relaxed);
    tau_ns_.store(uint64_t{l.burst_ms ? l.burst_ms : kDefaultBurstMs} * 1'000'000, std::memory_order_relaxed);
    enabled_.store(l.any(), std::memory_order_relaxed);
    gen_.fetch_add(1, std::memory_order_release);
}

QosLimits Qos::limits() const {
    QosLimits l;
    l.iops = iops_.rate.load(std::memory_order_relaxed);
    l.bps = bps_.rate.load(std::memory_order_relaxed);
    l.read_iops = read_iops_.rate.load(std::memory_order_relaxed);
    l.write_iops = write_iops_.rate.load(std::memory_order_relaxed);
    l.read_bps = read_bps_.rate.load(std::memory_order_relaxed);
    l.write_bps = write_bps_.rate.load(std::memory_order_relaxed);
    l.burst_ms = burst_ms_.load(std::memory_order_relaxed);
    return l;
}

// GCRA with reservation: the request's own arrival time is max(tat, now); it conforms once it
// lies within the burst tolerance tau of the clock, i.e. from tat - tau on. The bucket's next
// arrival time moves on by the request's emission interval cost / rate.
uint64_t Qos::reserve(Bucket& b, uint64_t cost, uint64_t now, uint64_t tau) {
    uint64_t rate = b.rate.load(std::memory_order_relaxed);
    if (rate == 0 || cost == 0) return 0;
    // cost <= 2^32 and 1e9 < 2^30: the product fits in 64 bits, and the interval is below
    // 2^62 ns even at a rate of 1.
    uint64_t interval = std::max<uint64_t>(cost * 1'000'000'000ull / rate, 1);
    uint64_t tat = b.tat.load(std::memory_order_relaxed);
    while (true) {
        uint64_t arrival = std::max(tat, now);
        // Reservations run ahead of the clock by at most one request per queue plus tau; the
        // saturation only matters for absurd limits (a byte per second against 4 GiB requests).
        uint64_t next = arrival > kFar - interval ? kFar : arrival + interval;
        if (b.tat.compare_exchange_weak(tat, next, std::memory_order_relaxed)) {
            return arrival > tau ? arrival - tau : 0;
        }
    }
}

uint64_t Qos::admit(bool is_write, uint64_t bytes, uint64_t now) {
    uint64_t tau = tau_ns_.load(std::memory_order_relaxed);
    uint64_t at = reserve(iops_, 1, now, tau);
    at = std::max(at, reserve(bps_, bytes, now, tau));
    if (is_write) {
        at = std::max(at, reserve(write_iops_, 1, now, tau));
        at = std::max(at, reserve(write_bps_, bytes, now, tau));
    } else {
        at = std::max(at, reserve(read_iops_, 1, now, tau));
        at = std::max(at, reserve(read_bps_, bytes, now, tau));
    }
    return at;
}

}  // namespace vhostd::virtio
