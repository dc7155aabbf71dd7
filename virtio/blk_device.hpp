// virtio-blk: turns descriptor chains into backend operations and status bytes.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "backends/block_backend.hpp"
#include "core/log.hpp"
#include "core/stats.hpp"
#include "reactor/reactor.hpp"
#include "virtio/blk_request.hpp"
#include "virtio/blk_types.hpp"
#include "virtio/qos.hpp"
#include "virtio/queued_device.hpp"

namespace vhostd::virtio {

struct BlkOptions {
    uint32_t num_queues = 1;
    std::string serial;  // GET_ID; at most 20 bytes are visible
    QosLimits qos;
};

// One queue's statistics since the device was created (they outlive frontend reconnects), or
// the device's total. Requests are counted when they complete, by type; latency runs from the
// pass that took a request off the ring to the pass that completed it (a QoS wait included).
struct BlkQueueStats {
    uint32_t index = 0;
    uint64_t reads = 0, writes = 0, flushes = 0, discards = 0, write_zeroes = 0, get_ids = 0, others = 0;
    uint64_t bytes_read = 0, bytes_written = 0;  // of requests completed OK
    uint64_t err_ioerr = 0, err_unsupp = 0;      // requests completed with that status
    uint64_t bad_chains = 0;                     // descriptor chains returned unread (malformed)
    uint64_t inflight = 0;                       // taken, not completed yet (now)
    uint64_t kicks = 0, calls = 0;
    uint64_t qos_delays = 0, qos_delay_ns = 0;  // requests QoS held back, and for how long in all
    LatencySummary latency;
    uint64_t latency_sum_ns = 0;
    std::array<uint64_t, LogBuckets::kCount> latency_buckets{};  // core/stats.hpp's log-linear buckets
};

struct BlkDeviceStats {
    std::vector<BlkQueueStats> queues;
    BlkQueueStats total;  // index = number of queues
};

class BlkQueue;

class BlkDevice final : public QueuedDevice {
public:
    // Request slots hold this many iovecs; seg_max tells the guest how many data segments fit.
    static constexpr size_t kSlotIovecs = 136;
    static constexpr uint32_t kSegMax = 126;
    static constexpr uint32_t kSizeMax = 1u << 20;
    static constexpr uint32_t kMaxDiscardSectors = 1u << 22;  // 2 GiB per request

    // queue_reactors[i] owns queue i.
    BlkDevice(std::string name, std::shared_ptr<backends::BlockBackend> backend, BlkOptions opts,
              std::vector<Reactor*> queue_reactors);
    ~BlkDevice() override;

    const std::string& name() const override { return name_; }
    // Guest-triggered warnings, and backend I/O errors, of all its queues: each rate-limited
    // together (core/log.hpp).
    LogRateLimit& guest_log() { return guest_log_; }
    LogRateLimit& io_log() { return io_log_; }
    uint32_t device_id() const override { return blk::kDeviceId; }
    uint64_t features() const override;
    bool supports_inflight() const override { return true; }
    uint32_t config_size() const override { return sizeof(blk::Config); }
    void read_config(uint32_t offset, std::span<uint8_t> out) const override;
    Status write_config(uint32_t offset, std::span<const uint8_t> in) override;
    void set_features(uint64_t features) override;

    // Data path (any reactor): true if writes must be durable on completion (write cache off).
    bool writethrough() const { return writethrough_.load(std::memory_order_relaxed); }
    // Data path: what a request is checked against (the backend's fixed description, and the
    // cache mode of the moment).
    blk::DeviceLimits limits() const {
        blk::DeviceLimits l = limits_;
        l.size_bytes = size_bytes_.load(std::memory_order_relaxed);
        l.writethrough = writethrough();
        return l;
    }
    // The capacity the guest sees (bytes); changes with resize().
    uint64_t size_bytes() const { return size_bytes_.load(std::memory_order_relaxed); }
    // Control plane, serialized with the device's other control calls (Session::exclusive): makes
    // the device new_size bytes long (0: a block device re-reads its size) and returns the new
    // size. A shrink first refuses requests past the new end, drains the ones in flight, then
    // shrinks the storage; a grow enlarges the storage before the device admits the new range.
    // The caller tells the guest (a config change).
    Result<uint64_t> resize(uint64_t new_size);
    // Any thread: limits for the requests taken from now on (0 fields: no limit).
    void set_qos(const QosLimits& l);
    QosLimits qos() const { return qos_.limits(); }
    // Data path: the buckets every queue draws from.
    Qos& qos_buckets() { return qos_; }
    // Any thread.
    BlkDeviceStats stats() const;
    const backends::BlockInfo& info() const { return backend_->info(); }
    // The backend is zoned: the guest is offered VIRTIO_BLK_F_ZONED.
    bool zoned() const { return backend_->info().zoned.zone_bytes != 0; }
    backends::BlockBackend& backend() { return *backend_; }
    const std::string& serial() const { return opts_.serial; }

private:
    void update_writethrough();

    std::string name_;
    LogRateLimit guest_log_;
    LogRateLimit io_log_;
    std::shared_ptr<backends::BlockBackend> backend_;
    BlkOptions opts_;
    blk::DeviceLimits limits_;
    std::atomic<uint64_t> size_bytes_{0};
    Qos qos_;
    std::vector<std::unique_ptr<BlkQueue>> queues_;
    uint64_t acked_ = 0;
    std::atomic<uint8_t> wce_{1};  // guest-written config byte (CONFIG_WCE)
    std::atomic<bool> writethrough_{false};
};

}  // namespace vhostd::virtio
