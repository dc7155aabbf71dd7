// vhost-user wire format (QEMU docs/interop/vhost-user.rst). Packed, trivially copyable,
// little-endian (we only build for little-endian hosts; see static_assert below).
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace vhostd::vhost {

static_assert(std::endian::native == std::endian::little, "vhost-user wire format is little-endian");

enum class Request : uint32_t {
    kNone = 0,
    kGetFeatures = 1,
    kSetFeatures = 2,
    kSetOwner = 3,
    kResetOwner = 4,
    kSetMemTable = 5,
    kSetLogBase = 6,
    kSetLogFd = 7,
    kSetVringNum = 8,
    kSetVringAddr = 9,
    kSetVringBase = 10,
    kGetVringBase = 11,
    kSetVringKick = 12,
    kSetVringCall = 13,
    kSetVringErr = 14,
    kGetProtocolFeatures = 15,
    kSetProtocolFeatures = 16,
    kGetQueueNum = 17,
    kSetVringEnable = 18,
    kSendRarp = 19,
    kNetSetMtu = 20,
    kSetBackendReqFd = 21,
    kIotlbMsg = 22,
    kSetVringEndian = 23,
    kGetConfig = 24,
    kSetConfig = 25,
    kCreateCryptoSession = 26,
    kCloseCryptoSession = 27,
    kPostcopyAdvise = 28,
    kPostcopyListen = 29,
    kPostcopyEnd = 30,
    kGetInflightFd = 31,
    kSetInflightFd = 32,
    kGpuSetSocket = 33,
    kResetDevice = 34,
    kVringKick = 35,
    kGetMaxMemSlots = 36,
    kAddMemReg = 37,
    kRemMemReg = 38,
    kSetStatus = 39,
    kGetStatus = 40,
    kMaxKnown = 40,
};

const char* request_name(Request r);

// Header flags.
inline constexpr uint32_t kVersion = 0x1;
inline constexpr uint32_t kVersionMask = 0x3;
inline constexpr uint32_t kFlagReply = 1u << 2;
inline constexpr uint32_t kFlagNeedReply = 1u << 3;

// Virtio feature bit that says the vhost-user protocol-feature messages are available.
inline constexpr uint64_t kFProtocolFeatures = 1ull << 30;
inline constexpr uint64_t kFLogAll = 1ull << 26;

// Protocol feature bits.
namespace pf {
inline constexpr uint64_t kMq = 1ull << 0;
inline constexpr uint64_t kLogShmfd = 1ull << 1;
inline constexpr uint64_t kRarp = 1ull << 2;
inline constexpr uint64_t kReplyAck = 1ull << 3;
inline constexpr uint64_t kNetMtu = 1ull << 4;
inline constexpr uint64_t kBackendReq = 1ull << 5;
inline constexpr uint64_t kCrossEndian = 1ull << 6;
inline constexpr uint64_t kCryptoSession = 1ull << 7;
inline constexpr uint64_t kPagefault = 1ull << 8;
inline constexpr uint64_t kConfig = 1ull << 9;
inline constexpr uint64_t kBackendSendFd = 1ull << 10;
inline constexpr uint64_t kHostNotifier = 1ull << 11;
inline constexpr uint64_t kInflightShmfd = 1ull << 12;
inline constexpr uint64_t kResetDevice = 1ull << 13;
inline constexpr uint64_t kInbandNotifications = 1ull << 14;
inline constexpr uint64_t kConfigureMemSlots = 1ull << 15;
inline constexpr uint64_t kStatus = 1ull << 16;
}  // namespace pf

struct [[gnu::packed]] MsgHeader {
    uint32_t request;
    uint32_t flags;
    uint32_t size;  // payload bytes that follow
};
static_assert(sizeof(MsgHeader) == 12);

// Largest payload we accept. The largest legitimate messages are SET_MEM_TABLE (8 + 8*32)
// and GET/SET_CONFIG (12 + 256); anything much bigger is a broken or hostile frontend.
inline constexpr uint32_t kMaxPayload = 4096;
// SCM_RIGHTS fds accepted in one message (the spec's maximum is 8); extras are closed.
inline constexpr size_t kMaxFds = 8;
// SET_MEM_TABLE carries at most this many regions.
inline constexpr uint32_t kMaxMemTableRegions = 8;
// Memory slots we report in GET_MAX_MEM_SLOTS (ADD/REM_MEM_REG).
inline constexpr uint64_t kMaxMemSlots = 509;

struct [[gnu::packed]] MemRegion {
    uint64_t guest_phys_addr;
    uint64_t memory_size;
    uint64_t userspace_addr;
    uint64_t mmap_offset;
};
static_assert(sizeof(MemRegion) == 32);

struct [[gnu::packed]] MemTableHeader {
    uint32_t nregions;
    uint32_t padding;
};
static_assert(sizeof(MemTableHeader) == 8);

struct [[gnu::packed]] SingleMemRegion {
    uint64_t padding;
    MemRegion region;
};
static_assert(sizeof(SingleMemRegion) == 40);

struct [[gnu::packed]] VringState {
    uint32_t index;
    uint32_t num;
};
static_assert(sizeof(VringState) == 8);

inline constexpr uint32_t kVringAddrFlagLog = 1u << 0;

struct [[gnu::packed]] VringAddr {
    uint32_t index;
    uint32_t flags;
    uint64_t desc_user_addr;
    uint64_t used_user_addr;
    uint64_t avail_user_addr;
    uint64_t log_guest_addr;
};
static_assert(sizeof(VringAddr) == 40);

// SET_VRING_KICK/CALL/ERR payload: u64 with the vring index in bits 0-7 and
// "no fd attached" in bit 8.
inline constexpr uint64_t kVringIndexMask = 0xff;
inline constexpr uint64_t kVringNoFdFlag = 1ull << 8;

inline constexpr uint32_t kMaxConfigSize = 256;

struct [[gnu::packed]] ConfigHeader {
    uint32_t offset;
    uint32_t size;
    uint32_t flags;
};
static_assert(sizeof(ConfigHeader) == 12);

// The spec lists 20 bytes of fields, but QEMU (and DPDK) send and expect the C struct's size
// with its tail padding: 24 bytes. A 20-byte reply makes QEMU drop the connection.
struct [[gnu::packed]] InflightDesc {
    uint64_t mmap_size;
    uint64_t mmap_offset;
    uint16_t num_queues;
    uint16_t queue_size;
    uint32_t padding;
};
static_assert(sizeof(InflightDesc) == 24);

}  // namespace vhostd::vhost
