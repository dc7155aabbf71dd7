// virtio-blk wire format (OASIS virtio 1.2, section 5.2).
#pragma once

#include <cstdint>

namespace vhostd::virtio::blk {

inline constexpr uint32_t kDeviceId = 2;
inline constexpr uint64_t kSectorSize = 512;  // request sectors are always 512 bytes

// Feature bits.
inline constexpr uint64_t kFSizeMax = 1ull << 1;
inline constexpr uint64_t kFSegMax = 1ull << 2;
inline constexpr uint64_t kFGeometry = 1ull << 4;
inline constexpr uint64_t kFRo = 1ull << 5;
inline constexpr uint64_t kFBlkSize = 1ull << 6;
inline constexpr uint64_t kFFlush = 1ull << 9;
inline constexpr uint64_t kFTopology = 1ull << 10;
inline constexpr uint64_t kFConfigWce = 1ull << 11;
inline constexpr uint64_t kFMq = 1ull << 12;
inline constexpr uint64_t kFDiscard = 1ull << 13;
inline constexpr uint64_t kFWriteZeroes = 1ull << 14;
inline constexpr uint64_t kFZoned = 1ull << 17;

// Request types.
inline constexpr uint32_t kTIn = 0;
inline constexpr uint32_t kTOut = 1;
inline constexpr uint32_t kTFlush = 4;
inline constexpr uint32_t kTGetId = 8;
inline constexpr uint32_t kTGetLifetime = 10;
inline constexpr uint32_t kTDiscard = 11;
inline constexpr uint32_t kTWriteZeroes = 13;
inline constexpr uint32_t kTSecureErase = 14;
// Zoned devices (VIRTIO_BLK_F_ZONED, virtio 1.2 5.2.6.3).
inline constexpr uint32_t kTZoneAppend = 15;
inline constexpr uint32_t kTZoneReport = 16;
inline constexpr uint32_t kTZoneOpen = 18;
inline constexpr uint32_t kTZoneClose = 20;
inline constexpr uint32_t kTZoneFinish = 22;
inline constexpr uint32_t kTZoneReset = 24;
inline constexpr uint32_t kTZoneResetAll = 26;

// Status.
inline constexpr uint8_t kSOk = 0;
inline constexpr uint8_t kSIoErr = 1;
inline constexpr uint8_t kSUnsupp = 2;
inline constexpr uint8_t kSZoneInvalidCmd = 3;      // the zone's type or state refuses the command
inline constexpr uint8_t kSZoneUnalignedWp = 4;     // a write not at the zone's write pointer
inline constexpr uint8_t kSZoneOpenResource = 5;    // would exceed max_open_zones
inline constexpr uint8_t kSZoneActiveResource = 6;  // would exceed max_active_zones

// Zoned models (config zoned.model).
inline constexpr uint8_t kZNone = 0;
inline constexpr uint8_t kZHostManaged = 1;
inline constexpr uint8_t kZHostAware = 2;

inline constexpr uint32_t kIdBytes = 20;
inline constexpr uint32_t kDiscardFlagUnmap = 1;

struct [[gnu::packed]] ReqHeader {
    uint32_t type;
    uint32_t reserved;  // ioprio
    uint64_t sector;
};
static_assert(sizeof(ReqHeader) == 16);

struct [[gnu::packed]] DiscardSegment {
    uint64_t sector;
    uint32_t num_sectors;
    uint32_t flags;
};
static_assert(sizeof(DiscardSegment) == 16);

struct [[gnu::packed]] Config {
    uint64_t capacity;  // in 512-byte sectors
    uint32_t size_max;
    uint32_t seg_max;
    uint16_t cylinders;
    uint8_t heads;
    uint8_t sectors;
    uint32_t blk_size;
    uint8_t physical_block_exp;
    uint8_t alignment_offset;
    uint16_t min_io_size;
    uint32_t opt_io_size;
    uint8_t writeback;
    uint8_t unused0;
    uint16_t num_queues;
    uint32_t max_discard_sectors;
    uint32_t max_discard_seg;
    uint32_t discard_sector_alignment;
    uint32_t max_write_zeroes_sectors;
    uint32_t max_write_zeroes_seg;
    uint8_t write_zeroes_may_unmap;
    uint8_t unused1[3];
    uint32_t max_secure_erase_sectors;
    uint32_t max_secure_erase_seg;
    uint32_t secure_erase_sector_alignment;
    // Zoned characteristics (VIRTIO_BLK_F_ZONED), at offset 72.
    uint32_t zone_sectors;
    uint32_t max_open_zones;    // 0: no limit
    uint32_t max_active_zones;  // 0: no limit
    uint32_t max_append_sectors;
    uint32_t write_granularity;  // bytes
    uint8_t model;
    uint8_t unused2[3];
};
static_assert(sizeof(Config) == 96);
inline constexpr uint32_t kZonedOffset = 72;

// ZONE_REPORT's reply: this header, then as many descriptors as the buffer holds (sectors of
// 512 bytes). ZONE_APPEND's device-writable part ends with the sector the data went to (le64)
// right before the status byte.
struct [[gnu::packed]] ZoneReportHeader {
    uint64_t nr_zones;
    uint8_t reserved[56];
};
static_assert(sizeof(ZoneReportHeader) == 64);
struct [[gnu::packed]] ZoneDescriptor {
    uint64_t z_cap;
    uint64_t z_start;
    uint64_t z_wp;
    uint8_t z_type;   // 1 conventional, 2 sequential write required, 3 sequential write preferred
    uint8_t z_state;  // 0 not a WP zone, 1 empty, 2 implicitly open, 3 explicitly open, 4 closed,
                      // 13 read-only, 14 full, 15 offline
    uint8_t reserved[38];
};
static_assert(sizeof(ZoneDescriptor) == 64);
inline constexpr uint32_t kWritebackOffset = 32;

}  // namespace vhostd::virtio::blk
