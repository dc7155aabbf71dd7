// A Linux tap interface as the host side of a virtio-net device: one multi-queue tap queue per
// virtio queue pair, with the virtio-net header in front of every frame (IFF_VNET_HDR) so that
// checksum and segmentation offloads pass through unchanged.
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

#include "core/result.hpp"
#include "core/unique_fd.hpp"

namespace vhostd::backends {

struct TapOptions {
    std::string name;
    uint32_t queues = 1;
    uint32_t mtu = 0;  // 0: leave the interface's MTU as it is
};

// TUN_F_* offload flags for the frames the tap may hand to a guest that negotiated
// `guest_features` (virtio-net GUEST_* bits): what the guest can receive, the tap may send.
unsigned tap_offload_flags(uint64_t guest_features);

class Tap {
public:
    static Result<std::unique_ptr<Tap>> open(const TapOptions& opts);
    ~Tap();
    Tap(const Tap&) = delete;
    Tap& operator=(const Tap&) = delete;

    const std::string& name() const { return name_; }
    bool created() const { return created_; }
    uint32_t queues() const { return static_cast<uint32_t>(fds_.size()); }
    // Non-blocking queue fd (read: frames to the guest, write: frames from the guest).
    int queue_fd(uint32_t i) const { return fds_.at(i).get(); }

    // Attach/detach one queue (TUNSETQUEUE). Attached queues receive their share of traffic.
    Status set_queue_attached(uint32_t i, bool attached);
    // Header size and offloads (per interface; applied through an attached queue `via`).
    Status configure(uint32_t via, int vnet_hdr_size, unsigned offload_flags);

    Result<uint32_t> mtu() const;
    Status set_mtu(uint32_t mtu);
    Status set_up();

private:
    Tap() = default;
    std::string name_;
    bool created_ = false;
    std::vector<UniqueFd> fds_;
    std::vector<bool> attached_;
};

}  // namespace vhostd::backends
