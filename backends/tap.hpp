// A Linux tap interface as the host side of a net device (the first NetBackend): one multi-queue
// tap queue per queue pair, with the vnet header in front of every frame (IFF_VNET_HDR) so that
// checksum and segmentation offloads pass through unchanged. Channels read and write the queue
// fds directly (one readv / writev per frame) and wait for them with an io_uring poll.
//
// vhostd creates the tap if no interface of that name exists and brings it up; a tap it created
// is not persistent, so it disappears when the last queue fd closes (at exit, even a crash). An
// existing tap is attached to as it is (it must be a multi_queue vnet_hdr tap).
//
// Queues start detached: a queue pair with no running guest ring takes no packets (the kernel
// drops them at the tap instead of queueing stale frames for a guest that is not there).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "backends/net_backend.hpp"
#include "core/result.hpp"
#include "core/unique_fd.hpp"

namespace vhostd::backends {

struct TapOptions {
    std::string name;
    uint32_t queues = 1;
    uint32_t mtu = 0;  // 0: leave the interface's MTU as it is
};

// TUN_F_* flags (TUNSETOFFLOAD) for the offloads the tap may use in frames to the guest.
unsigned tun_offload_flags(const NetOffloads& o);

class Tap final : public NetBackend {
public:
    static Result<std::unique_ptr<Tap>> open(const TapOptions& opts);
    ~Tap() override;
    Tap(const Tap&) = delete;
    Tap& operator=(const Tap&) = delete;

    const std::string& ifname() const { return name_; }
    bool created() const { return created_; }

    // NetBackend
    const std::string& name() const override { return label_; }
    uint32_t queues() const override { return static_cast<uint32_t>(fds_.size()); }
    Result<uint32_t> mtu() const override;
    Status set_mtu(uint32_t mtu) override;
    // Attach/detach one queue (TUNSETQUEUE). Attached queues receive their share of traffic.
    Status set_queue_attached(uint32_t i, bool attached) override;
    // Header size and offloads are per interface; applied through attached queue `via`.
    Status configure(uint32_t via, uint32_t vnet_hdr_bytes, const NetOffloads& offloads) override;
    Status send_frame(uint32_t queue, const iovec* iov, unsigned iovcnt) override;
    Result<std::unique_ptr<NetRxChannel>> open_rx(uint32_t queue, Reactor& reactor) override;
    Result<std::unique_ptr<NetTxChannel>> open_tx(uint32_t queue, Reactor& reactor) override;

    Status set_up();

private:
    Tap() = default;
    std::string name_;
    std::string label_;  // "tap NAME"
    bool created_ = false;
    std::vector<UniqueFd> fds_;
    std::vector<bool> attached_;
};

}  // namespace vhostd::backends
