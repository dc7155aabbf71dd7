// vhost-user wire format (QEMU docs/interop/vhost-user.rst). Trivially copyable, no padding,
// little-endian: every multi-byte field is an le16/le32/le64, so the byte order is part of the
// type rather than an assumption of the code that reads it. Those have alignment 1, so the
// structs are packed without an attribute (the size asserts below check it). We only build for
// little-endian hosts (see static_assert below), where the conversions are plain loads/stores.
#pragma once

#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include <fmt/format.h>

namespace vhostd::vhost {

static_assert(std::endian::native == std::endian::little, "vhost-user wire format is little-endian");

// An unsigned integer stored little-endian: sizeof(T) bytes with alignment 1, so it sits at any
// offset of a packed struct and can be referenced and copied like the bytes it is. Conversions
// to and from T are implicit so that wire structs keep aggregate initialisation and read like
// plain integers; get()/set() say it out loud where that reads better.
template <typename T>
class Le {
    static_assert(std::is_unsigned_v<T>);

public:
    Le() = default;  // trivial: uninitialised like a plain integer, zero when value-initialised
    constexpr Le(T v) : bytes_(encode(v)) {}  // NOLINT(google-explicit-constructor)
    constexpr operator T() const { return get(); }  // NOLINT(google-explicit-constructor)

    constexpr T get() const { return to_host(std::bit_cast<T>(bytes_)); }
    constexpr void set(T v) { bytes_ = encode(v); }

private:
    static constexpr T to_host(T v) {
        if constexpr (std::endian::native == std::endian::little || sizeof(T) == 1) {
            return v;
        } else {
            T r = 0;
            for (size_t i = 0; i < sizeof(T); ++i) r = static_cast<T>((r << 8) | ((v >> (8 * i)) & 0xff));
            return r;
        }
    }
    static constexpr std::array<uint8_t, sizeof(T)> encode(T v) {
        return std::bit_cast<std::array<uint8_t, sizeof(T)>>(to_host(v));  // a byte swap is its own inverse
    }

    std::array<uint8_t, sizeof(T)> bytes_;
};

using le16 = Le<uint16_t>;
using le32 = Le<uint32_t>;
using le64 = Le<uint64_t>;
static_assert(sizeof(le16) == 2 && alignof(le16) == 1 && std::is_trivially_copyable_v<le16>);
static_assert(sizeof(le32) == 4 && alignof(le32) == 1 && std::is_trivially_copyable_v<le32>);
static_assert(sizeof(le64) == 8 && alignof(le64) == 1 && std::is_trivially_copyable_v<le64>);

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

// Requests the backend sends on the backend channel (SET_BACKEND_REQ_FD), the frontend answers.
enum class BackendRequest : uint32_t {
    kIotlbMsg = 1,
    kConfigChangeMsg = 2,  // "the config space changed": the frontend re-reads it (GET_CONFIG)
    kVringHostNotifierMsg = 3,
};

// The request's name for logs and errors ("UNKNOWN" past the table); defined with the message
// table (message_table.cpp).
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

struct MsgHeader {
    le32 request;
    le32 flags;
    le32 size;  // payload bytes that follow
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

struct MemRegion {
    le64 guest_phys_addr;
    le64 memory_size;
    le64 userspace_addr;
    le64 mmap_offset;
};
static_assert(sizeof(MemRegion) == 32);

struct MemTableHeader {
    le32 nregions;
    le32 padding;
};
static_assert(sizeof(MemTableHeader) == 8);

struct SingleMemRegion {
    le64 padding;
    MemRegion region;
};
static_assert(sizeof(SingleMemRegion) == 40);

struct VringState {
    le32 index;
    le32 num;
};
static_assert(sizeof(VringState) == 8);

inline constexpr uint32_t kVringAddrFlagLog = 1u << 0;

struct VringAddr {
    le32 index;
    le32 flags;
    le64 desc_user_addr;
    le64 used_user_addr;
    le64 avail_user_addr;
    le64 log_guest_addr;
};
static_assert(sizeof(VringAddr) == 40);

// SET_VRING_KICK/CALL/ERR payload: u64 with the vring index in bits 0-7 and
// "no fd attached" in bit 8.
inline constexpr uint64_t kVringIndexMask = 0xff;
inline constexpr uint64_t kVringNoFdFlag = 1ull << 8;

inline constexpr uint32_t kMaxConfigSize = 256;

struct ConfigHeader {
    le32 offset;
    le32 size;
    le32 flags;
};
static_assert(sizeof(ConfigHeader) == 12);

// The spec lists 20 bytes of fields, but QEMU (and DPDK) send and expect the C struct's size
// with its tail padding: 24 bytes. A 20-byte reply makes QEMU drop the connection.
// SET_LOG_BASE payload (with LOG_SHMFD; the log's memfd rides along).
struct LogDesc {
    le64 mmap_size;
    le64 mmap_offset;
};
static_assert(sizeof(LogDesc) == 16);

struct InflightDesc {
    le64 mmap_size;
    le64 mmap_offset;
    le16 num_queues;
    le16 queue_size;
    le32 padding;
};
static_assert(sizeof(InflightDesc) == 24);

}  // namespace vhostd::vhost

// Wire fields format as the number they hold (in error messages and logs).
template <typename T>
struct fmt::formatter<vhostd::vhost::Le<T>> : fmt::formatter<T> {
    template <typename FormatContext>
    auto format(vhostd::vhost::Le<T> v, FormatContext& ctx) const {
        return fmt::formatter<T>::format(v.get(), ctx);
    }
};
