// Virtio split-ring and device wire structs (OASIS virtio 1.2). Little-endian, packed.
#pragma once

#include <cstdint>

namespace vhostd::virtio {

// Transport/ring feature bits.
inline constexpr uint64_t kFIndirectDesc = 1ull << 28;
inline constexpr uint64_t kFEventIdx = 1ull << 29;
inline constexpr uint64_t kFVersion1 = 1ull << 32;

inline constexpr uint16_t kDescFNext = 1;
inline constexpr uint16_t kDescFWrite = 2;
inline constexpr uint16_t kDescFIndirect = 4;

inline constexpr uint16_t kAvailFNoInterrupt = 1;
inline constexpr uint16_t kUsedFNoNotify = 1;

// Largest queue we accept (QEMU's VIRTQUEUE_MAX_SIZE). The spec allows 32768; per-queue
// request slots are preallocated, so the cap bounds memory per queue.
inline constexpr uint32_t kMaxQueueSize = 1024;

struct [[gnu::packed]] Desc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags;
    uint16_t next;
};
static_assert(sizeof(Desc) == 16);

struct [[gnu::packed]] UsedElem {
    uint32_t id;
    uint32_t len;
};
static_assert(sizeof(UsedElem) == 8);

// Ring sizes in bytes for a queue of n entries (with the event-idx trailer).
constexpr uint64_t desc_table_bytes(uint32_t n) { return 16ull * n; }
constexpr uint64_t avail_ring_bytes(uint32_t n) { return 4ull + 2ull * n + 2ull; }
constexpr uint64_t used_ring_bytes(uint32_t n) { return 4ull + 8ull * n + 2ull; }

// Device/driver status bits.
inline constexpr uint8_t kStatusAcknowledge = 1;
inline constexpr uint8_t kStatusDriver = 2;
inline constexpr uint8_t kStatusDriverOk = 4;
inline constexpr uint8_t kStatusFeaturesOk = 8;
inline constexpr uint8_t kStatusNeedsReset = 64;
inline constexpr uint8_t kStatusFailed = 128;

}  // namespace vhostd::virtio
