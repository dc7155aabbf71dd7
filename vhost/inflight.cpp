#include "vhost/inflight.hpp"

#include <algorithm>

#include "core/checked.hpp"
#include "virtio/virtio_types.hpp"

namespace vhostd::vhost {

Status InflightBuffers::check(const InflightDesc& d, size_t device_queues) {
    if (d.num_queues == 0 || d.num_queues > device_queues)
        return make_error(Errc::kInvalid, "inflight buffer for {} queues (device has {})", d.num_queues, device_queues);
    if (!is_pow2(d.queue_size) || d.queue_size > virtio::kMaxQueueSize)
        return make_error(Errc::kInvalid, "inflight queue size {} is not a power of two <= {}", d.queue_size,
                          virtio::kMaxQueueSize);
    return ok_status();
}

Result<InflightDesc> InflightBuffers::create(const InflightDesc& req, size_t device_queues) {
    VHOSTD_TRY(check(req, device_queues));
    const uint16_t nq = req.num_queues, qs = req.queue_size;
    // Room for either ring type: the frontend asks before SET_FEATURES says which.
    const uint64_t per_queue = std::max(virtio::inflight_queue_bytes(qs), virtio::inflight_queue_bytes_packed(qs));
    auto total = checked_mul<uint64_t>(per_queue, nq);  // at most 64K queues of a few KiB: no overflow
    if (!total) return make_error(Errc::kOutOfRange, "inflight buffer size overflows");
    VHOSTD_ASSIGN_OR_RETURN(auto buf, shm::SharedBuffer::create("vhostd-inflight", *total));
    for (uint32_t q = 0; q < nq; ++q) {
        auto* r = reinterpret_cast<virtio::InflightQueue*>(buf->data() + q * per_queue);
        r->desc_num = qs;  // version 0: nothing in flight yet
    }
    // The frontend keeps the buffer and hands it back (SET_INFLIGHT_FD) on every start, also to
    // a restarted vhostd; the mapping we need then comes from that message.
    created_ = std::move(buf);
    return InflightDesc{created_->size(), 0, nq, qs, 0};
}

Status InflightBuffers::set(const InflightDesc& d, int fd, size_t device_queues) {
    VHOSTD_TRY(check(d, device_queues));
    // The regions' stride follows from the size we gave the buffer when we made it: room for
    // packed rings (this version), or split-sized (made by an older vhostd: split rings only).
    // Both products are small (at most 64K queues of 32 KiB): no overflow.
    const uint64_t packed = virtio::inflight_queue_bytes_packed(d.queue_size) * d.num_queues;
    const uint64_t split = virtio::inflight_queue_bytes(d.queue_size) * d.num_queues;
    if (d.mmap_size < split)
        return make_error(Errc::kInvalid, "inflight buffer of {} bytes, {} queues of {} need {}", d.mmap_size,
                          d.num_queues, d.queue_size, split);
    const bool room_for_packed = d.mmap_size >= packed;
    VHOSTD_ASSIGN_OR_RETURN(in_use_, shm::SharedBuffer::map(fd, d.mmap_offset, room_for_packed ? packed : split));
    num_queues_ = d.num_queues;
    queue_size_ = d.queue_size;
    stride_ = room_for_packed ? std::max(virtio::inflight_queue_bytes(d.queue_size),
                                         virtio::inflight_queue_bytes_packed(d.queue_size))
                              : virtio::inflight_queue_bytes(d.queue_size);
    return ok_status();
}

Result<virtio::InflightQueue*> InflightBuffers::queue(uint32_t i, uint32_t ring_size, bool packed) const {
    if (!in_use_ || i >= num_queues_) return static_cast<virtio::InflightQueue*>(nullptr);
    if (ring_size != queue_size_)
        return make_error(Errc::kInvalid, "vring {} has {} entries, its inflight region {}", i, ring_size, queue_size_);
    if (packed && stride_ < virtio::inflight_queue_bytes_packed(queue_size_))
        return make_error(Errc::kInvalid,
                          "vring {}: the inflight buffer has no room for a packed ring (made for split rings, by "
                          "an older vhostd?)",
                          i);
    // i < num_queues_ and the mapping holds num_queues_ regions of stride_ (checked in set()).
    return reinterpret_cast<virtio::InflightQueue*>(in_use_->data() + i * stride_);
}

void InflightBuffers::reset() {
    in_use_.reset();
    created_.reset();
    num_queues_ = 0;
    queue_size_ = 0;
    stride_ = 0;
}

}  // namespace vhostd::vhost
