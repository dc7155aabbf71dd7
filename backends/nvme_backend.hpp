// NVMe passthrough: a namespace's generic character device (/dev/ngXnY) driven with NVMe
// commands through io_uring (IORING_OP_URING_CMD on the reactor's command ring), past the
// block layer's queueing, merging and splitting. Read, Write (FUA), Flush, Dataset Management
// (deallocate) for DISCARD and Write Zeroes (with or without deallocate).
//
// The namespace's geometry and limits come from sysfs, as the kernel's driver set them from
// Identify (the matching block device nvmeXnY): LBA size, capacity, the largest transfer and
// segment count a command may have, whether a volatile write cache is present, Write Zeroes
// and deallocate support. A namespace the block layer does not expose (capacity 0: an LBA
// format with metadata) is refused with the reason.
//
// A zoned namespace (ZNS, host-managed) becomes a zoned virtio-blk device: reports (Zone
// Management Receive, converted in the guest's buffer to virtio's layout), open / close /
// finish / reset (Zone Management Send), zone append (Zone Append; the LBA it chose comes back
// in the completion), and the drive's zone errors as virtio-blk's zone statuses. Its zone size,
// open and active limits and append limit come from sysfs too; it takes no discard or write
// zeroes.
//
// A read or write larger than one command may carry is answered short (the bytes of the first
// command); the device continues with the rest, as with any short transfer. Discard and write
// zeroes are cut into commands issued one after the other.
//
// Privileges: before Linux 6.2 every passthrough command needs CAP_SYS_ADMIN in the thread that
// submits it; from 6.2 an I/O command needs only a descriptor opened for writing (for writes).
#pragma once

#include <memory>
#include <string>

#include "backends/block_backend.hpp"
#include "core/unique_fd.hpp"
#include "nvme/nvme.hpp"

namespace vhostd::backends {

struct NvmeOptions {
    std::string path;  // /dev/ngXnY
    bool readonly = false;
    // Guest memory registered with the reactor's command ring as fixed buffers: a command whose
    // data is one buffer names its slot, and the kernel maps no pages for it. Registering pins
    // the guest's memory (all of it becomes resident) and counts against RLIMIT_MEMLOCK; a
    // registration that fails leaves the channel on unregistered buffers (logged).
    bool fixed_buffers = false;
};

using nvme::NvmeNamespace;
using nvme::read_nvme_namespace;  // (sysfs: /sys/block/nvmeXnY)

class NvmeBackend : public BlockBackend {
public:
    static Result<std::unique_ptr<NvmeBackend>> open(const NvmeOptions& opts);
    const BlockInfo& info() const override { return info_; }
    const NvmeNamespace& ns() const { return ns_; }
    Result<std::unique_ptr<BlockChannel>> open_channel(Reactor& reactor, uint32_t depth) override;

private:
    NvmeBackend() = default;
    UniqueFd fd_;
    bool fixed_ = false;
    BlockInfo info_;
    NvmeNamespace ns_;
};

}  // namespace vhostd::backends
