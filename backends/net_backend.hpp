// Where virtio-net frames go: the host side of a net device (a tap today; a built-in switch,
// AF_XDP or another VM's queue could be others). A NetBackend is the whole host side (MTU, queue
// attachment, frame format) and opens channels: one direction of one queue, used only on the
// reactor thread that owns that queue.
//
// Frames cross the boundary with a vnet header in front (the header Linux taps and packet sockets
// call virtio_net_hdr: flags, gso_type, hdr_len, gso_size, csum_start, csum_offset[, num_buffers]),
// `vnet_hdr_bytes` long, so that checksum and segmentation offloads pass through unchanged. The
// backend does not interpret it beyond what its host side needs; the device validated it on TX.
//
// The data path is one virtual call per frame (receive / send, in place of the readv / writev it
// replaces); readiness is a plain flag the device reads inline.
#pragma once

#include <sys/types.h>
#include <sys/uio.h>

#include <cstdint>
#include <memory>
#include <string>

#include "reactor/reactor.hpp"
#include "core/result.hpp"

namespace vhostd::backends {

// Offloads a host side may use in frames it hands to the guest (what the guest said it can
// receive). Backend-neutral: the device maps its feature bits to these, a backend maps these to
// its own switches (a tap: TUN_F_*).
struct NetOffloads {
    bool csum = false;     // partial checksums (NEEDS_CSUM); everything below requires it
    bool tso4 = false;     // TCP segmentation offload, IPv4
    bool tso6 = false;     // TCP segmentation offload, IPv6
    bool tso_ecn = false;  // TSO frames with the ECN/CWR bit
    bool ufo = false;      // UDP fragmentation offload
    bool operator==(const NetOffloads&) const = default;
};

// The readiness half of a channel. ready() stays true until an operation returned -EAGAIN and
// the device called wait_ready(); the backend makes it true again when it has frames / room (or
// when the wait was cancelled: the device then simply tries again).
class NetChannel {
public:
    virtual ~NetChannel() = default;
    NetChannel(const NetChannel&) = delete;
    NetChannel& operator=(const NetChannel&) = delete;

    // Not virtual: the device asks once per frame.
    bool ready() const { return ready_; }
    // Nothing to do now: arm a wake-up whose completion ends a sleeping reactor's wait (an
    // io_uring operation) and marks the channel ready. Calling it again while not ready retries
    // the arming (it may fail for now when the reactor's SQ is full) and is otherwise a no-op.
    void wait_ready() {
        ready_ = false;
        arm();
    }
    // Stopping: withdraw an armed wake-up. Its completion still arrives; until then armed() is
    // true. May need to be called again on a later pass (SQ full).
    virtual void cancel() = 0;
    // An armed wake-up is outstanding and references this channel: the queue must not stop (and
    // the channel must not be destroyed) until this is false.
    virtual bool armed() const = 0;
    // The poller to put back into its reactor's hot set when the channel becomes ready (the
    // queue may have parked while waiting for it). Reactor thread.
    void set_waker(Reactor* r, Poller* p) {
        waker_reactor_ = r;
        waker_ = p;
    }

protected:
    NetChannel() = default;
    virtual void arm() = 0;
    void set_ready() {
        ready_ = true;
        if (waker_ != nullptr) waker_reactor_->wake(waker_);
    }

private:
    bool ready_ = true;
    Reactor* waker_reactor_ = nullptr;
    Poller* waker_ = nullptr;
};

// Host -> guest direction of one queue.
class NetRxChannel : public NetChannel {
public:
    // Reads one frame (vnet header + data) into iov. Returns its length or -errno: -EAGAIN
    // nothing now, -EINTR try again, -EINVAL / -EFAULT this frame was dropped (the next one may
    // be fine), anything else: the host side is in trouble (wait for readiness before retrying).
    virtual ssize_t receive(const iovec* iov, unsigned iovcnt) = 0;
};

// Guest -> host direction of one queue.
class NetTxChannel : public NetChannel {
public:
    // Writes one frame (vnet header + data, header validated by the device). Returns the bytes
    // taken or -errno: -EAGAIN no room now (the frame was not taken), anything else: the frame
    // is gone.
    virtual ssize_t send(const iovec* iov, unsigned iovcnt) = 0;
};

class NetBackend {
public:
    virtual ~NetBackend() = default;
    // For logs (e.g. "tap vtx0").
    virtual const std::string& name() const = 0;
    // Queues of the host side; the device uses one per queue pair.
    virtual uint32_t queues() const = 0;

    virtual Result<uint32_t> mtu() const = 0;
    virtual Status set_mtu(uint32_t mtu) = 0;

    // ---- control thread ----
    // A queue takes traffic only while attached (a queue with no running guest ring must not
    // collect stale frames). Queues start detached.
    virtual Status set_queue_attached(uint32_t queue, bool attached) = 0;
    // Frame format for every queue from now on: header size and the offloads the host side may
    // use towards the guest. Called when a queue starts, through that (attached) queue.
    virtual Status configure(uint32_t queue, uint32_t vnet_hdr_bytes, const NetOffloads& offloads) = 0;
    // Sends one frame (vnet header + data) out of attached queue `queue` from the control
    // thread: announcements such as a RARP after a migration.
    virtual Status send_frame(uint32_t queue, const iovec* iov, unsigned iovcnt) = 0;

    // ---- reactor thread ----
    // Called on the reactor that owns the queue; the channel is used (and destroyed) only there.
    virtual Result<std::unique_ptr<NetRxChannel>> open_rx(uint32_t queue, Reactor& reactor) = 0;
    virtual Result<std::unique_ptr<NetTxChannel>> open_tx(uint32_t queue, Reactor& reactor) = 0;
};

}  // namespace vhostd::backends
