// What the vhost layer needs from a virtio device: self-description (features, queue count,
// config space) and queue lifecycle. A device never sees a socket.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "core/result.hpp"
#include "core/unique_fd.hpp"
#include "shm/dirty_log.hpp"
#include "shm/memory_map.hpp"
#include "virtio/virtqueue.hpp"

namespace vhostd::virtio {

// Dirty logging during a live migration (VHOST_F_LOG_ALL with a SET_LOG_BASE log): with `log`,
// every write the queue makes into guest memory (device-writable buffers) is marked in it; with
// `used` as well (the ring's VHOST_VRING_F_LOG), so are its used ring writes, at `used_gpa` (the
// ring's log_guest_addr) onward.
struct LogSettings {
    std::shared_ptr<const shm::DirtyLog> log;  // null: logging off
    bool used = false;
    uint64_t used_gpa = 0;
};

struct QueueStart {
    QueueLayout layout;
    uint32_t base = 0;      // SET_VRING_BASE: split: next avail index; packed: packed_base()
    uint64_t features = 0;  // negotiated virtio features
    std::shared_ptr<const shm::MemoryMap> mem;
    UniqueFd kick;  // invalid: no kick fd, the queue is polled
    int call = -1;  // borrowed; the vhost layer owns call/err fds and outlives the queue run
    int err = -1;
    // Inflight tracking (INFLIGHT_SHMFD): this queue's region, kept mapped by `inflight_owner`.
    InflightQueue* inflight = nullptr;
    std::shared_ptr<const void> inflight_owner;
    LogSettings log;
};

class VirtioDevice {
public:
    virtual ~VirtioDevice() = default;
    virtual const std::string& name() const = 0;
    virtual uint32_t device_id() const = 0;
    // Virtio feature bits offered (ring features included).
    virtual uint64_t features() const = 0;
    // vhost-user protocol features this device adds to the common set.
    virtual uint64_t extra_protocol_features() const { return 0; }
    virtual uint32_t num_queues() const = 0;
    virtual uint32_t config_size() const = 0;
    // offset+size were checked against config_size() by the caller.
    virtual void read_config(uint32_t offset, std::span<uint8_t> out) const = 0;
    virtual Status write_config(uint32_t offset, std::span<const uint8_t> in) = 0;
    // Negotiated features (before queues start).
    virtual void set_features(uint64_t features) = 0;

    virtual Status start_queue(uint32_t index, QueueStart&& start) = 0;
    // Stops a running queue after its in-flight requests completed; returns its position (for
    // GET_VRING_BASE: see Virtqueue::base()).
    virtual uint32_t stop_queue(uint32_t index) = 0;
    virtual bool queue_running(uint32_t index) const = 0;
    // Swaps the call fd of a running queue (borrowed fd).
    virtual void set_call_fd(uint32_t index, int fd) = 0;
    // Changes dirty logging of a running queue (a stopped one gets it with its next start).
    virtual void set_logging(uint32_t index, LogSettings log) = 0;
    // Swaps guest memory under all running queues, draining their in-flight requests first.
    virtual Status set_memory(std::shared_ptr<const shm::MemoryMap> mem) = 0;

    // Devices whose requests can be replayed after a backend restart (storage): the vhost layer
    // then offers INFLIGHT_SHMFD.
    virtual bool supports_inflight() const { return false; }

    // Network devices: the vhost layer then offers the NET_MTU and RARP protocol features and
    // forwards NET_SET_MTU / SEND_RARP here.
    virtual bool net_control() const { return false; }
    virtual Status net_set_mtu(uint64_t /*mtu*/) { return make_error(Errc::kUnsupported, "not a network device"); }
    virtual Status net_send_rarp(std::span<const uint8_t, 6> /*mac*/) {
        return make_error(Errc::kUnsupported, "not a network device");
    }
    // The frontend's session ended (queues are stopped, memory is about to go).
    virtual void session_ended() {}
};

}  // namespace vhostd::virtio
