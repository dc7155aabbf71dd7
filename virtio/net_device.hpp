// virtio-net over a host-side NetBackend (backends/net_backend.hpp; a tap in the daemon). Queue
// pair i is RX vring 2i + TX vring 2i+1 and backend queue i; both vrings of a pair run on one
// reactor. The control queue is the frontend's (QEMU and Cloud Hypervisor service it themselves
// and tell us the active pairs with SET_VRING_ENABLE).
//
// RX (host -> guest): the backend reads straight into the guest's buffers (no copy of ours);
// with MRG_RXBUF one frame may fill several chains and num_buffers says how many. When the guest
// has too few buffers we stop taking frames from the backend (they wait there) and ask for a
// kick. TX (guest -> host): one backend send per chain, with our validated copy of the virtio
// header in front of the guest's frame bytes. Both directions wait for the backend through its
// channel's readiness (a tap: an io_uring poll), so a sleeping reactor wakes on traffic and a
// polling one costs nothing while the host side is quiet.
#pragma once

#include <array>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "backends/net_backend.hpp"
#include "reactor/reactor.hpp"
#include "core/log.hpp"
#include "core/stats.hpp"
#include "virtio/queued_device.hpp"
#include "virtio/net_types.hpp"

namespace vhostd::virtio {

struct NetOptions {
    uint32_t queue_pairs = 1;
    std::array<uint8_t, 6> mac{};
    uint32_t mtu = 0;  // 0: the backend's MTU
};

// Traffic of one queue pair since the device was created (device_stats): a snapshot.
struct NetDirStats {
    uint64_t packets = 0;
    uint64_t bytes = 0;  // frame bytes, without virtio headers
    uint64_t gso = 0;    // frames carrying a GSO header (TSO/UFO: segmented later, not by us)
    uint64_t dropped = 0;
    uint64_t kicks = 0, calls = 0;
};
struct NetPairStats {
    NetDirStats rx, tx;
};
// The live counters: each direction is written only by its queue's reactor (core/stats.hpp).
struct NetDirCounters {
    Counter packets, bytes, gso, dropped;
};
struct NetPairCounters {
    NetDirCounters rx, tx;
};

// Checks a guest's TX header against the negotiated features and the frame length (bytes
// after the header). May clear bits the host side must not see. Returns nullptr if the header is
// acceptable, else why not.
const char* check_tx_header(net::Hdr& h, uint32_t hdr_bytes, uint64_t frame_len, uint64_t features);

// The offloads the host side may use towards a guest that negotiated `features` (GUEST_* bits):
// what the guest can receive, the backend may send.
backends::NetOffloads guest_offloads(uint64_t features);

class NetRxQueue;
class NetTxQueue;

class NetDevice final : public QueuedDevice {
public:
    // pair_reactors[i] owns both vrings of pair i. The backend has (at least) one queue per pair.
    NetDevice(std::string name, std::unique_ptr<backends::NetBackend> backend, NetOptions opts,
              std::vector<Reactor*> pair_reactors);
    ~NetDevice() override;

    const std::string& name() const override { return name_; }
    // Guest-triggered warnings of all its queues: rate-limited together (core/log.hpp).
    LogRateLimit& guest_log() { return guest_log_; }
    uint32_t device_id() const override { return net::kDeviceId; }
    uint64_t features() const override;
    bool net_control() const override { return true; }
    uint32_t config_size() const override { return sizeof(net::Config); }
    void read_config(uint32_t offset, std::span<uint8_t> out) const override;
    Status write_config(uint32_t offset, std::span<const uint8_t> in) override;
    void set_features(uint64_t features) override;
    Status start_queue(uint32_t index, QueueStart&& start) override;
    uint32_t stop_queue(uint32_t index) override;
    Status net_set_mtu(uint64_t mtu) override;
    Status net_send_rarp(std::span<const uint8_t, 6> mac) override;
    void session_ended() override;
    // Sends the RARP for `mac` through an attached backend queue; false if none is attached.
    Result<bool> announce(std::span<const uint8_t, 6> mac);

    uint32_t pairs() const { return static_cast<uint32_t>(pairs_); }
    uint32_t mtu() const { return mtu_; }
    backends::NetBackend& backend() { return *backend_; }
    // Any thread: the counters of pair i.
    NetPairStats stats(uint32_t pair) const;

private:
    bool backend_attached(uint32_t pair) const;

    std::string name_;
    LogRateLimit guest_log_;
    std::unique_ptr<backends::NetBackend> backend_;
    NetOptions opts_;
    uint32_t mtu_ = 1500;
    // A SEND_RARP that came before any queue ran (a migration destination's QEMU announces as
    // soon as the VM runs, which can be before the rings start): sent when the first one starts.
    std::optional<std::array<uint8_t, 6>> pending_rarp_;
    uint64_t acked_ = 0;
    size_t pairs_ = 0;
    std::unique_ptr<NetPairCounters[]> counters_;
    std::vector<NetPairStats> logged_;  // as of the last session's end (its log line shows the difference)
    std::vector<std::unique_ptr<NetRxQueue>> rx_;
    std::vector<std::unique_ptr<NetTxQueue>> tx_;
};

}  // namespace vhostd::virtio
