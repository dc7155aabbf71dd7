// virtio-net wire format (OASIS virtio 1.2, section 5.1). Little-endian, packed.
#pragma once

#include <cstdint>

#include "virtio/virtio_types.hpp"

namespace vhostd::virtio::net {

inline constexpr uint32_t kDeviceId = 1;

// Feature bits.
inline constexpr uint64_t kFCsum = 1ull << 0;        // device handles partial checksums (guest TX)
inline constexpr uint64_t kFGuestCsum = 1ull << 1;   // driver handles partial checksums (guest RX)
inline constexpr uint64_t kFMtu = 1ull << 3;
inline constexpr uint64_t kFMac = 1ull << 5;
inline constexpr uint64_t kFGuestTso4 = 1ull << 7;
inline constexpr uint64_t kFGuestTso6 = 1ull << 8;
inline constexpr uint64_t kFGuestEcn = 1ull << 9;
inline constexpr uint64_t kFGuestUfo = 1ull << 10;
inline constexpr uint64_t kFHostTso4 = 1ull << 11;
inline constexpr uint64_t kFHostTso6 = 1ull << 12;
inline constexpr uint64_t kFHostEcn = 1ull << 13;
inline constexpr uint64_t kFHostUfo = 1ull << 14;
inline constexpr uint64_t kFMrgRxbuf = 1ull << 15;
inline constexpr uint64_t kFStatus = 1ull << 16;
inline constexpr uint64_t kFCtrlVq = 1ull << 17;
inline constexpr uint64_t kFMq = 1ull << 22;
inline constexpr uint64_t kFAnyLayout = 1ull << 27;  // legacy name; implied by VERSION_1

// virtio_net_hdr.flags
inline constexpr uint8_t kHdrFNeedsCsum = 1;
inline constexpr uint8_t kHdrFDataValid = 2;
// virtio_net_hdr.gso_type
inline constexpr uint8_t kGsoNone = 0;
inline constexpr uint8_t kGsoTcpv4 = 1;
inline constexpr uint8_t kGsoUdp = 3;
inline constexpr uint8_t kGsoTcpv6 = 4;
inline constexpr uint8_t kGsoEcn = 0x80;

// The header in front of every packet. With VERSION_1 or MRG_RXBUF it has num_buffers
// (12 bytes), otherwise it is the legacy 10-byte header.
struct [[gnu::packed]] Hdr {
    uint8_t flags;
    uint8_t gso_type;
    uint16_t hdr_len;
    uint16_t gso_size;
    uint16_t csum_start;
    uint16_t csum_offset;
    uint16_t num_buffers;
};
static_assert(sizeof(Hdr) == 12);
inline constexpr uint32_t kHdrLegacyBytes = 10;
inline constexpr uint32_t kNumBuffersOffset = 10;

inline constexpr uint16_t kStatusLinkUp = 1;

struct [[gnu::packed]] Config {
    uint8_t mac[6];
    uint16_t status;
    uint16_t max_virtqueue_pairs;
    uint16_t mtu;
};
static_assert(sizeof(Config) == 12);

// Largest frame (without the virtio header) the backend hands us with GSO: a 64 KiB GSO packet
// plus an Ethernet header and a VLAN tag.
inline constexpr uint32_t kMaxGsoFrame = 65535 + 14 + 4;
inline constexpr uint32_t kEthOverhead = 14 + 4;  // Ethernet header + one VLAN tag
inline constexpr uint16_t kMinMtu = 68;
inline constexpr uint16_t kMaxMtu = 65535 - 14 - 4;

// Header size for a negotiated feature set.
constexpr uint32_t hdr_size(uint64_t features) {
    return (features & (kFVersion1 | kFMrgRxbuf)) ? sizeof(Hdr) : kHdrLegacyBytes;
}

}  // namespace vhostd::virtio::net
