// What every vhost-user request may carry, as data: one row per request (payload size rule,
// fds, reply, required protocol feature, name), and the one validator that checks a received
// message against its row before any handler sees it. Handlers can then take the payload's
// shape and the fd count for granted and deal only with what the values mean.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

#include "core/result.hpp"
#include "vhost/connection.hpp"
#include "vhost/protocol.hpp"

namespace vhostd::vhost {

enum class PayloadRule : uint8_t {
    // Nothing defined; whatever arrives is not looked at. The GET_* requests without an
    // argument have always been served whatever their size, so a frontend that sends a stray
    // u64 keeps working.
    kIgnored,
    kExact,    // exactly MessageInfo::size bytes
    kAtLeast,  // at least MessageInfo::size bytes, and MessageInfo::check accepts the whole
};

enum class FdRule : uint8_t {
    kNone,       // no fds
    kOne,        // exactly one
    kNoFdFlag,   // one, or none if the u64 payload has kVringNoFdFlag (SET_VRING_KICK/CALL/ERR)
    kPerRegion,  // one per region in the table (SET_MEM_TABLE)
    kAtMostOne,  // zero or one, not used: QEMU attaches the region's fd to REM_MEM_REG
};

// Checks a variable-length payload whose size is at least its row's minimum.
using PayloadCheck = Status (*)(std::span<const uint8_t> body);

struct MessageInfo {
    Request request = Request::kNone;
    const char* name = "UNKNOWN";
    bool supported = false;  // vhostd implements it (a Session handler exists)
    PayloadRule payload = PayloadRule::kIgnored;
    uint32_t size = 0;
    PayloadCheck check = nullptr;
    FdRule fds = FdRule::kNone;
    bool reply = false;         // answers with its own reply, so REPLY_ACK does not apply to it
    uint64_t feature = 0;       // a protocol feature the frontend must have acked first, or 0
    const char* feature_name = nullptr;

    // Row builders, so that the table reads one request per line.
    constexpr MessageInfo exact(uint32_t n) const {
        MessageInfo r = *this;
        r.payload = PayloadRule::kExact;
        r.size = n;
        return r;
    }
    constexpr MessageInfo at_least(uint32_t n, PayloadCheck c) const {
        MessageInfo r = *this;
        r.payload = PayloadRule::kAtLeast;
        r.size = n;
        r.check = c;
        return r;
    }
    constexpr MessageInfo takes(FdRule f) const {
        MessageInfo r = *this;
        r.fds = f;
        return r;
    }
    constexpr MessageInfo replies() const {
        MessageInfo r = *this;
        r.reply = true;
        return r;
    }
    constexpr MessageInfo needs(uint64_t f, const char* fname) const {
        MessageInfo r = *this;
        r.feature = f;
        r.feature_name = fname;
        return r;
    }
};

constexpr MessageInfo supported(Request r, const char* name) { return MessageInfo{r, name, true}; }
constexpr MessageInfo unsupported(Request r, const char* name) { return MessageInfo{r, name, false}; }

// The checks of the variable-length payloads (message_table.cpp).
Status check_mem_table(std::span<const uint8_t> body);
Status check_config(std::span<const uint8_t> body);
Status check_backend_req_fd(std::span<const uint8_t> body);

inline constexpr size_t kRequestCount = static_cast<size_t>(Request::kMaxKnown) + 1;

// Indexed by request number. Only the feature requirements vhostd has always enforced are
// listed: messages that the spec ties to a feature but that are harmless without it (GET_CONFIG,
// ADD_MEM_REG, SET_STATUS, ...) are served whether or not the frontend acked it, as before.
inline constexpr std::array<MessageInfo, kRequestCount> kMessageTable = {
    unsupported(Request::kNone, "NONE"),
    supported(Request::kGetFeatures, "GET_FEATURES").replies(),
    supported(Request::kSetFeatures, "SET_FEATURES").exact(sizeof(uint64_t)),
    supported(Request::kSetOwner, "SET_OWNER"),
    supported(Request::kResetOwner, "RESET_OWNER"),
    supported(Request::kSetMemTable, "SET_MEM_TABLE")
        .at_least(sizeof(MemTableHeader), check_mem_table)
        .takes(FdRule::kPerRegion),
    // Answered with an empty reply whether or not REPLY_ACK was asked for (QEMU waits for it).
    supported(Request::kSetLogBase, "SET_LOG_BASE").exact(sizeof(LogDesc)).takes(FdRule::kOne).replies().needs(pf::kLogShmfd, "LOG_SHMFD"),
    unsupported(Request::kSetLogFd, "SET_LOG_FD"),
    supported(Request::kSetVringNum, "SET_VRING_NUM").exact(sizeof(VringState)),
    supported(Request::kSetVringAddr, "SET_VRING_ADDR").exact(sizeof(VringAddr)),
    supported(Request::kSetVringBase, "SET_VRING_BASE").exact(sizeof(VringState)),
    supported(Request::kGetVringBase, "GET_VRING_BASE").exact(sizeof(VringState)).replies(),
    supported(Request::kSetVringKick, "SET_VRING_KICK").exact(sizeof(uint64_t)).takes(FdRule::kNoFdFlag),
    supported(Request::kSetVringCall, "SET_VRING_CALL").exact(sizeof(uint64_t)).takes(FdRule::kNoFdFlag),
    supported(Request::kSetVringErr, "SET_VRING_ERR").exact(sizeof(uint64_t)).takes(FdRule::kNoFdFlag),
    supported(Request::kGetProtocolFeatures, "GET_PROTOCOL_FEATURES").replies(),
    supported(Request::kSetProtocolFeatures, "SET_PROTOCOL_FEATURES").exact(sizeof(uint64_t)),
    supported(Request::kGetQueueNum, "GET_QUEUE_NUM").replies(),
    supported(Request::kSetVringEnable, "SET_VRING_ENABLE").exact(sizeof(VringState)),
    supported(Request::kSendRarp, "SEND_RARP").exact(sizeof(uint64_t)).needs(pf::kRarp, "RARP"),
    supported(Request::kNetSetMtu, "NET_SET_MTU").exact(sizeof(uint64_t)).needs(pf::kNetMtu, "NET_MTU"),
    // The spec defines no payload; QEMU sends none, some frontends a u64.
    supported(Request::kSetBackendReqFd, "SET_BACKEND_REQ_FD").at_least(0, check_backend_req_fd).takes(FdRule::kOne),
    unsupported(Request::kIotlbMsg, "IOTLB_MSG"),
    unsupported(Request::kSetVringEndian, "SET_VRING_ENDIAN"),
    supported(Request::kGetConfig, "GET_CONFIG").at_least(sizeof(ConfigHeader), check_config).replies(),
    supported(Request::kSetConfig, "SET_CONFIG").at_least(sizeof(ConfigHeader), check_config),
    unsupported(Request::kCreateCryptoSession, "CREATE_CRYPTO_SESSION"),
    unsupported(Request::kCloseCryptoSession, "CLOSE_CRYPTO_SESSION"),
    unsupported(Request::kPostcopyAdvise, "POSTCOPY_ADVISE"),
    unsupported(Request::kPostcopyListen, "POSTCOPY_LISTEN"),
    unsupported(Request::kPostcopyEnd, "POSTCOPY_END"),
    supported(Request::kGetInflightFd, "GET_INFLIGHT_FD")
        .exact(sizeof(InflightDesc))
        .replies()
        .needs(pf::kInflightShmfd, "INFLIGHT_SHMFD"),
    supported(Request::kSetInflightFd, "SET_INFLIGHT_FD")
        .exact(sizeof(InflightDesc))
        .takes(FdRule::kOne)
        .needs(pf::kInflightShmfd, "INFLIGHT_SHMFD"),
    unsupported(Request::kGpuSetSocket, "GPU_SET_SOCKET"),
    supported(Request::kResetDevice, "RESET_DEVICE"),
    unsupported(Request::kVringKick, "VRING_KICK"),
    supported(Request::kGetMaxMemSlots, "GET_MAX_MEM_SLOTS").replies(),
    supported(Request::kAddMemReg, "ADD_MEM_REG").exact(sizeof(SingleMemRegion)).takes(FdRule::kOne),
    supported(Request::kRemMemReg, "REM_MEM_REG").exact(sizeof(SingleMemRegion)).takes(FdRule::kAtMostOne),
    supported(Request::kSetStatus, "SET_STATUS").exact(sizeof(uint64_t)),
    supported(Request::kGetStatus, "GET_STATUS").replies(),
};

constexpr bool table_is_indexed_by_request() {
    for (size_t i = 0; i < kMessageTable.size(); ++i) {
        if (static_cast<size_t>(kMessageTable[i].request) != i) return false;
    }
    return true;
}
static_assert(table_is_indexed_by_request(), "kMessageTable rows must be in request order");

// The row of a request number, or nullptr for a number past the table.
constexpr const MessageInfo* message_info(uint32_t request) {
    return request < kMessageTable.size() ? &kMessageTable[request] : nullptr;
}

// The one check of a received message against its row, in this order: the request is known and
// supported (kUnsupported); a message that takes no fds has none (kInvalid); the protocol
// feature it needs was acked (kState); the payload size (kInvalid); the fd count (kInvalid).
// Returns the row on success. Does not close fds: the caller drops whatever a handler did not
// take, whether the message was refused or not.
Result<const MessageInfo*> validate_message(const Message& m, uint64_t acked_protocol_features);

}  // namespace vhostd::vhost
