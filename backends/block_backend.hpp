// Where virtio-blk bytes go. A BlockBackend describes the storage (size, block size,
// capabilities) and opens channels; a channel lives on one reactor thread and submits
// operations whose completion (Completion::complete(res): bytes or -errno) arrives later on
// that same thread — never from inside submit().
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "reactor/reactor.hpp"
#include "core/result.hpp"

namespace vhostd::backends {

enum class BlockOp : uint8_t {
    kRead,
    kWrite,
    kFlush,
    kDiscard,           // advisory: data afterwards is unspecified
    kWriteZeroes,       // must read back as zeroes, keep allocation
    kWriteZeroesUnmap,  // must read back as zeroes, may deallocate
};

struct BlockRequest {
    BlockOp op = BlockOp::kRead;
    const iovec* iov = nullptr;  // read/write only
    unsigned iovcnt = 0;
    uint64_t offset = 0;         // bytes
    uint64_t len = 0;            // bytes (discard / write-zeroes)
    bool fua = false;            // write: durable on completion (RWF_DSYNC)
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
