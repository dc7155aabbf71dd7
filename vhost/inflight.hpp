// The inflight tracking buffer of a session (GET_INFLIGHT_FD / SET_INFLIGHT_FD, protocol
// feature INFLIGHT_SHMFD; the layout is in virtio/inflight.hpp). GET creates a buffer and hands
// its fd to the frontend, which keeps it across backend restarts; SET gives us the buffer to
// use, also one that an earlier vhostd process filled. Each started queue gets its region.
#pragma once

#include <cstdint>
#include <memory>

#include "core/result.hpp"
#include "shm/shared_buffer.hpp"
#include "vhost/protocol.hpp"
#include "virtio/inflight.hpp"

namespace vhostd::vhost {

class InflightBuffers {
public:
    // GET_INFLIGHT_FD: a new zeroed buffer for `req.num_queues` queues of `req.queue_size`
    // (at most `device_queues`), to be sent with the reply (created_fd()). Returns the reply.
    Result<InflightDesc> create(const InflightDesc& req, size_t device_queues);
    int created_fd() const { return created_ ? created_->fd() : -1; }

    // SET_INFLIGHT_FD: maps the frontend's buffer (its fd must be sealed against shrinking) as
    // the one in use. The caller makes sure no queue runs on the previous one.
    Status set(const InflightDesc& desc, int fd, size_t device_queues);

    // The region of queue `i` for a ring of `ring_size` entries: nullptr when no buffer is in
    // use or it does not cover queue i; an error if the ring size differs from the buffer's, or
    // a packed ring's region would not fit (a split-sized buffer). A packed ring reads it as
    // virtio::InflightQueuePacked.
    Result<virtio::InflightQueue*> queue(uint32_t i, uint32_t ring_size, bool packed) const;
    // Keeps the buffer in use mapped for as long as a queue runs on it.
    std::shared_ptr<const void> owner() const { return in_use_; }

    void reset();

private:
    static Status check(const InflightDesc& d, size_t device_queues);

    std::shared_ptr<shm::SharedBuffer> in_use_;   // SET_INFLIGHT_FD
    std::shared_ptr<shm::SharedBuffer> created_;  // the last one GET_INFLIGHT_FD handed out
    uint16_t num_queues_ = 0;                     // of in_use_
    uint16_t queue_size_ = 0;
    uint64_t stride_ = 0;                         // bytes per queue region
};

}  // namespace vhostd::vhost
