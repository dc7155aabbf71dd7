// Per-device I/O limits (device_set_qos, iops=/bps=/... on --blk), enforced where requests are
// taken off the rings: every queue of a device, on whatever reactor, draws from the same
// buckets. Each limit is a GCRA bucket (the generic cell rate algorithm, i.e. a token bucket
// kept as one "theoretical arrival time"): a request reserves its cost with one CAS and learns
// when it may start. No locks, no rollback: a request that must wait has its place already,
// so limits hold exactly over time and queues share fairly in arrival order.
//
// What counts: a read or write costs one operation and its bytes (iops/bps and the read_/write_
// variants); flush, discard and write-zeroes cost one operation (iops and write_iops), no bytes.
// Requests completed without the backend (GET_ID, rejected ones) are free.
#pragma once

#include <atomic>
#include <cstdint>

namespace vhostd::virtio {

struct QosLimits {
    uint64_t iops = 0, bps = 0, read_iops = 0, write_iops = 0, read_bps = 0, write_bps = 0;  // 0: no limit
    // How far a device may run ahead of its rate after being idle (0: kDefaultBurstMs).
    uint32_t burst_ms = 0;
    bool any() const { return iops || bps || read_iops || write_iops || read_bps || write_bps; }
    bool operator==(const QosLimits&) const = default;
};

class Qos {
public:
    static constexpr uint32_t kDefaultBurstMs = 100;

    // Control thread: new limits take effect for the next request taken. The buckets start
    // over, and requests waiting under the old limits are admitted again under the new ones.
    void set(const QosLimits& l);
    QosLimits limits() const;
    // Changes with every set(): a waiting request compares it to see if it must be re-admitted.
    uint32_t generation() const { return gen_.load(std::memory_order_acquire); }

    // Data path: one relaxed load when no limit is set.
    bool enabled() const { return enabled_.load(std::memory_order_relaxed); }
    // Data path (any reactor): reserves the request's cost in every bucket that applies and
    // returns the time (mono ns) it may start; <= now means at once. `bytes` <= 2^32 (a chain's bound).
    uint64_t admit(bool is_write, uint64_t bytes, uint64_t now);

private:
    struct alignas(64) Bucket {
        std::atomic<uint64_t> rate{0};  // per second; 0: off
        std::atomic<uint64_t> tat{0};   // theoretical arrival time of the next request (mono ns)
    };
    static uint64_t reserve(Bucket& b, uint64_t cost, uint64_t now, uint64_t tau);

    Bucket iops_, bps_, read_iops_, write_iops_, read_bps_, write_bps_;
    std::atomic<uint64_t> tau_ns_{uint64_t{kDefaultBurstMs} * 1'000'000};
    std::atomic<uint32_t> burst_ms_{0};
    std::atomic<bool> enabled_{false};
    std::atomic<uint32_t> gen_{0};
};

}  // namespace vhostd::virtio
