// Where virtio-blk bytes go. A BlockBackend describes the storage (size, block size,
// capabilities) and opens channels; a channel lives on one reactor thread and submits
// operations whose completion (Completion::complete(res): bytes or -errno) arrives later on
// that same thread — never from inside submit().
#pragma once

#include <sys/uio.h>

#include <cerrno>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "core/result.hpp"
#include "reactor/reactor.hpp"
#include "shm/memory_map.hpp"

namespace vhostd::backends {

enum class BlockOp : uint8_t {
    kRead,
    kWrite,
    kFlush,
    kDiscard,           // advisory: data afterwards is unspecified
    kWriteZeroes,       // must read back as zeroes, keep allocation
    kWriteZeroesUnmap,  // must read back as zeroes, may deallocate
    // Zoned storage (BlockInfo::zoned). `offset` is a zone's first byte unless said otherwise.
    kZoneAppend,    // write iov at the zone's write pointer; *append_at = the byte offset it went to
    kZoneReport,    // fill iov (a device-writable buffer of >= 128 bytes) with a zone report in
                    // virtio-blk's format (virtio/blk_types.hpp: ZoneReportHeader, then
                    // ZoneDescriptor entries in 512-byte sectors) from the zone holding `offset`;
                    // the result is the bytes written (64 + 64 x zones reported)
    kZoneOpen,
    kZoneClose,
    kZoneFinish,
    kZoneReset,
    kZoneResetAll,  // offset ignored
};

// A zone report as kZoneReport writes it (virtio-blk's layout, so the device passes the guest's
// buffer straight through): this header, then one descriptor per zone; positions in 512-byte
// sectors, little-endian.
struct [[gnu::packed]] ZoneReportHeader {
    uint64_t nr_zones;
    uint8_t reserved[56];
};
struct [[gnu::packed]] ZoneDescriptor {
    uint64_t capacity;  // writable sectors of the zone
    uint64_t start;
    uint64_t wp;        // write pointer
    uint8_t type;       // 1 conventional, 2 sequential write required, 3 sequential write preferred
    uint8_t state;      // 0 no write pointer, 1 empty, 2 implicitly open, 3 explicitly open,
                        // 4 closed, 13 read-only, 14 full, 15 offline
    uint8_t reserved[38];
};
static_assert(sizeof(ZoneReportHeader) == 64 && sizeof(ZoneDescriptor) == 64);

inline constexpr bool is_zone_op(BlockOp op) { return op >= BlockOp::kZoneAppend; }

// Every zone operation's case label, for a switch over BlockOp in a backend that refuses them
// before it (so -Wswitch keeps watching the other operations).
#define VHOSTD_CASE_ZONE_OPS                                                        \
    case ::vhostd::backends::BlockOp::kZoneAppend:                                 \
    case ::vhostd::backends::BlockOp::kZoneReport:                                 \
    case ::vhostd::backends::BlockOp::kZoneOpen:                                   \
    case ::vhostd::backends::BlockOp::kZoneClose:                                  \
    case ::vhostd::backends::BlockOp::kZoneFinish:                                 \
    case ::vhostd::backends::BlockOp::kZoneReset:                                  \
    case ::vhostd::backends::BlockOp::kZoneResetAll

// Zoned storage failures, as the errno a channel completes with (Linux's block layer gives the
// two resource ones the same errno); the device turns them into virtio-blk's zone statuses.
inline constexpr int32_t kErrZoneInvalid = -EBADE;           // the zone's state/type refuses it
inline constexpr int32_t kErrZoneUnalignedWrite = -EILSEQ;   // a write not at the write pointer
inline constexpr int32_t kErrZoneOpenResource = -ETOOMANYREFS;
inline constexpr int32_t kErrZoneActiveResource = -EOVERFLOW;

struct BlockRequest {
    BlockOp op = BlockOp::kRead;
    const iovec* iov = nullptr;  // read/write only
    unsigned iovcnt = 0;
    uint64_t offset = 0;         // bytes
    uint64_t len = 0;            // bytes (discard / write-zeroes)
    bool fua = false;            // write: durable on completion (RWF_DSYNC)
    uint64_t* append_at = nullptr;  // kZoneAppend: where the channel stores the byte offset
};

class BlockChannel {
public:
    virtual ~BlockChannel() = default;
    // False when the channel cannot take another request right now (back-pressure).
    virtual bool ready() = 0;
    // Queues the request; completion->complete() runs later on this reactor. An error here
    // means it was not submitted (kBusy: try later).
    virtual Status submit(const BlockRequest& req, Completion* completion) = 0;
    // Channels that complete without the kernel (null) do it here, from the owner's poll().
    virtual bool poll() { return false; }
    // True when nothing is pending inside the channel itself (a queue stops only then).
    virtual bool idle() const { return true; }
    // The guest memory its requests' buffers lie in, on the reactor thread with no request in
    // flight: before the first request and after every change of the memory table. A channel
    // that registers memory with the kernel (fixed buffers) does it here; the map stays valid
    // until the next call or the channel's end.
    virtual void set_memory(const shm::MemoryMap& /*mem*/) {}
    // True when the channel needs another poll() to make progress; false when its outstanding
    // requests complete through io_uring CQEs it has armed (the reactor may sleep then). A
    // remote backend waits milliseconds for its server: spinning through that would burn a CPU.
    virtual bool must_poll() const { return !idle(); }
};

struct BlockInfo {
    uint64_t size_bytes = 0;
    uint32_t block_size = 512;     // logical block size
    uint32_t physical_block = 0;   // 0: same as block_size
    bool readonly = false;
    bool discard = false;
    bool write_zeroes = false;
    // A zoned device (the guest sees VIRTIO_BLK_F_ZONED); zone_bytes == 0: not zoned.
    struct Zoned {
        uint8_t model = 0;           // virtio-blk's: 1 host-managed, 2 host-aware
        uint64_t zone_bytes = 0;     // every zone's size (the last may be smaller)
        uint32_t max_open = 0;       // 0: no limit
        uint32_t max_active = 0;     // 0: no limit
        uint32_t max_append_bytes = 0;  // the largest kZoneAppend, a multiple of block_size
    } zoned;
    std::string description;
};

class BlockBackend {
public:
    virtual ~BlockBackend() = default;
    virtual const BlockInfo& info() const = 0;
    // Called on the reactor thread that will own the channel. `depth` bounds concurrent requests.
    virtual Result<std::unique_ptr<BlockChannel>> open_channel(Reactor& reactor, uint32_t depth) = 0;
    // True when all of a device's queues must be on one reactor (a remote server that gives no
    // consistency between connections: the backend can have only one).
    virtual bool single_reactor() const { return false; }
    // Control thread, with no request in flight past min(old, new) size (the device drains its
    // queues before a shrink): makes the storage `new_size` bytes long and returns the size now
    // exposed. A block device cannot be resized by us: it re-reads its size (new_size 0 asks
    // for exactly that; another value must match what the device reports).
    virtual Result<uint64_t> resize(uint64_t /*new_size*/) {
        return make_error(Errc::kUnsupported, "this backend cannot be resized");
    }
    // Storage whose size someone else can change (a shared image) calls `changed` (from any
    // thread; it must not block) when it may have; the device then re-reads the size with
    // resize(0) and tells the guest. Called once, on the control plane, before I/O starts; the
    // backend stops calling it before it is destroyed. Other backends ignore it.
    virtual Status watch_size(std::function<void()> /*changed*/) { return ok_status(); }
};

}  // namespace vhostd::backends
