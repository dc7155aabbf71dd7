// The ring a queue runs on: split or packed (VIRTIO_F_RING_PACKED), chosen by the negotiated
// features when the queue starts. Devices and QueueWorker see one interface; each call forwards
// to the ring in use (one predictable branch).
//
// Positions: base() is what GET_VRING_BASE answers and activate() takes from SET_VRING_BASE —
// the next avail index for a split ring (16 bits), both positions with their wrap counters for a
// packed ring (packed_base()). taken() counts chains taken (mod 2^16) for arrival statistics.
#pragma once

#include "virtio/packed_queue.hpp"
#include "virtio/virtqueue.hpp"

namespace vhostd::virtio {

class Virtqueue {
public:
    Status activate(std::shared_ptr<const shm::MemoryMap> mem, const QueueLayout& layout, uint32_t base,
                    bool event_idx, bool indirect, InflightQueue* inflight, uint64_t features) {
        deactivate();
        packed_ = (features & kFRingPacked) != 0;
        if (packed_) {
            // The same region, read with the packed layout (InflightBuffers sized it for that).
            return packed_q_.activate(std::move(mem), layout, base, event_idx, indirect,
                                      reinterpret_cast<InflightQueuePacked*>(inflight), features);
        }
        if (base > 0xffff) return make_error(Errc::kInvalid, "split ring base {:#x} is more than 16 bits", base);
        return split_.activate(std::move(mem), layout, static_cast<uint16_t>(base), event_idx, indirect, inflight,
                               features);
    }
    void deactivate() {
        split_.deactivate();
        packed_q_.deactivate();
    }
    bool packed() const { return packed_; }
    bool active() const { return packed_ ? packed_q_.active() : split_.active(); }
    uint16_t size() const { return packed_ ? packed_q_.size() : split_.size(); }
    const shm::MemoryMap& mem() const { return packed_ ? packed_q_.mem() : split_.mem(); }
    std::shared_ptr<const shm::MemoryMap> mem_ref() const { return packed_ ? packed_q_.mem_ref() : split_.mem_ref(); }
    uint16_t resubmits_left() const { return packed_ ? packed_q_.resubmits_left() : split_.resubmits_left(); }
    uint32_t base() const { return packed_ ? packed_q_.base() : split_.last_avail(); }
    uint16_t taken() const { return packed_ ? packed_q_.taken() : split_.last_avail(); }
    // Split: the used index as the guest sees it in ring memory (diagnostics; packed: base()).
    uint32_t ring_used() const { return packed_ ? packed_q_.base() : split_.ring_used_idx(); }

    Result<uint16_t> pending() { return packed_ ? packed_q_.pending() : split_.pending(); }
    Result<uint16_t> pop_head() { return packed_ ? packed_q_.pop_head() : split_.pop_head(); }
    void rewind(uint16_t n) { packed_ ? packed_q_.rewind(n) : split_.rewind(n); }
    bool walk(uint16_t head, std::span<iovec> iov, Chain* out, ChainError* err) const {
        return packed_ ? packed_q_.walk(head, iov, out, err) : split_.walk(head, iov, out, err);
    }
    void push_used(uint16_t head, uint32_t len) { packed_ ? packed_q_.push_used(head, len) : split_.push_used(head, len); }
    bool publish_used() { return packed_ ? packed_q_.publish_used() : split_.publish_used(); }
    bool needs_notify() { return packed_ ? packed_q_.needs_notify() : split_.needs_notify(); }
    bool enable_notify() { return packed_ ? packed_q_.enable_notify() : split_.enable_notify(); }
    void disable_notify() { packed_ ? packed_q_.disable_notify() : split_.disable_notify(); }
    // A token that changes when the driver makes more buffers available, and a kick request for
    // buffers past it (see SplitQueue::enable_notify_beyond).
    uint16_t avail_idx() { return packed_ ? packed_q_.avail_token() : split_.avail_idx(); }
    bool enable_notify_beyond(uint16_t seen) {
        return packed_ ? packed_q_.enable_notify_beyond(seen) : split_.enable_notify_beyond(seen);
    }
    // Live migration: the used ring's writes (split: at used_log_gpa; packed: wherever they land).
    void set_used_log(const shm::DirtyLog* log, uint64_t used_log_gpa) {
        split_.set_used_log(log, used_log_gpa);
        packed_q_.set_used_log(log);
    }

private:
    bool packed_ = false;
    SplitQueue split_;
    PackedQueue packed_q_;
};

}  // namespace vhostd::virtio
