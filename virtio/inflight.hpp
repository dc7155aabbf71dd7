// Inflight I/O tracking (vhost-user VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD), split rings.
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
#pragma once

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

inline constexpr uint16_t kInflightVersion = 1;

constexpr uint64_t inflight_queue_bytes(uint32_t queue_size) {
    return (sizeof(InflightQueue) + uint64_t{sizeof(InflightDescState)} * queue_size + 63) & ~uint64_t{63};
}

}  // namespace vhostd::virtio
