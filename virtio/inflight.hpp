// Inflight I/O tracking (vhost-user VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD), split and packed rings.
//
// The frontend keeps a shared buffer for us that outlives the backend process: one region per
// queue with a state entry per descriptor head. A head is marked in flight (with an ordering
// counter) when it is taken from the avail ring, before the request is submitted, and cleared
// after its used entry was published. A restarted vhostd resubmits exactly the heads still
// marked, in counter order.
//
// Batches: used entries are published many at a time (one used->idx store per reactor pass).
// Before that store, the batch's heads are linked through `next` (last -> first) and
// `last_batch_head` names the last; `used_idx` is updated only after all of them were cleared.
// A crash between the used->idx store and the clears is repaired on restart: used->idx minus
// the region's used_idx is the batch length, and that many heads along the list are cleared.
//
// Layout per queue (the spec's, so other tools can read it): a 16-byte header, then queue_size
// 16-byte entries; queue regions are 64-byte aligned.
//
// Packed rings (the spec's QueueRegionPacked; the algorithm is in packed_queue.cpp): a used
// descriptor is written over a ring slot whose chain may still be in flight, so each taken
// chain's descriptors are copied into entries taken from a free list (head entry: in flight
// flag, counter, descriptor count, last entry). Completing a batch puts its entries back on the
// free list and moves used_idx; the old_* fields are the last committed state: a restart rolls
// an interrupted update back, or forward if the batch was already visible to the driver.
//
// Buffers are created with room for either ring type (the frontend asks for one before the
// features say which); a buffer made by an older vhostd (split-sized) serves split rings only.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace vhostd::virtio {

struct InflightDescState {  // naturally aligned: no padding, 16 bytes
    uint8_t inflight;
    uint8_t padding[5];
    uint16_t next;
    uint64_t counter;
};
static_assert(sizeof(InflightDescState) == 16);

struct InflightQueue {
    uint64_t features;
    uint16_t version;
    uint16_t desc_num;
    uint16_t last_batch_head;
    uint16_t used_idx;
    InflightDescState desc[];
};
static_assert(sizeof(InflightQueue) == 16);

struct InflightDescPacked {  // naturally aligned: 32 bytes
    uint8_t inflight;
    uint8_t padding;
    uint16_t next;     // free list link (or the next entry of a chain)
    uint16_t last;     // head: the chain's last entry
    uint16_t num;      // head: descriptors in the chain
    uint64_t counter;  // head: order taken
    uint16_t id;       // the descriptor's copy ...
    uint16_t flags;
    uint32_t len;
    uint64_t addr;
};
static_assert(sizeof(InflightDescPacked) == 32);

struct InflightQueuePacked {
    uint64_t features;
    uint16_t version;
    uint16_t desc_num;
    uint16_t free_head;
    uint16_t old_free_head;
    uint16_t used_idx;
    uint16_t old_used_idx;
    uint8_t used_wrap_counter;
    uint8_t old_used_wrap_counter;
    uint8_t padding[7];
    InflightDescPacked desc[];
};
static_assert(sizeof(InflightQueuePacked) == 32);
static_assert(offsetof(InflightQueuePacked, version) == offsetof(InflightQueue, version) &&
              offsetof(InflightQueuePacked, desc_num) == offsetof(InflightQueue, desc_num));

inline constexpr uint16_t kInflightVersion = 1;

// Access to a region: it is shared with the frontend and read by a later vhostd after this one
// died, so single relaxed accesses; what matters is the order in which this thread's stores
// happen, so a compiler barrier between the steps is enough (inflight_step).
template <typename T>
T inflight_load(const T& v) {
    return std::atomic_ref<T>(const_cast<T&>(v)).load(std::memory_order_relaxed);
}
template <typename T>
void inflight_store(T& v, T x) {
    std::atomic_ref<T>(v).store(x, std::memory_order_relaxed);
}
inline void inflight_step() { std::atomic_signal_fence(std::memory_order_seq_cst); }

constexpr uint64_t inflight_queue_bytes(uint32_t queue_size) {
    return (sizeof(InflightQueue) + uint64_t{sizeof(InflightDescState)} * queue_size + 63) & ~uint64_t{63};
}
constexpr uint64_t inflight_queue_bytes_packed(uint32_t queue_size) {
    return (sizeof(InflightQueuePacked) + uint64_t{sizeof(InflightDescPacked)} * queue_size + 63) & ~uint64_t{63};
}

}  // namespace vhostd::virtio
