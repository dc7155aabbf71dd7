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

namespace vhostd::backends {

struct NvmeOptions {
    std::string path;  // /dev/ngXnY
    bool readonly = false;
};

// What the kernel's driver knows of a namespace (sysfs), checked.
struct NvmeNamespace {
    std::string block_name;    // nvmeXnY
    uint32_t nsid = 0;
    uint32_t lba_size = 0;     // bytes, a power of two, 512..65536
    uint32_t physical_block = 0;
    uint64_t lbas = 0;         // capacity in LBAs
    uint32_t max_bytes = 0;    // one command's largest transfer (a multiple of lba_size)
    uint32_t max_segments = 0;
    bool volatile_cache = false;
    bool deallocate = false;
    bool write_zeroes = false;
    uint64_t write_zeroes_max_lbas = 0;  // per command
    // Zoned (host-managed) namespaces; zone_lbas == 0 for a conventional one.
    uint64_t zone_lbas = 0;
    uint64_t nr_zones = 0;
    uint32_t max_open = 0;    // 0: no limit
    uint32_t max_active = 0;  // 0: no limit
    uint32_t max_append_bytes = 0;  // one Zone Append, whole LBAs, within the segment bound
};

class NvmeBackend : public BlockBackend {
public:
    static Result<std::unique_ptr<NvmeBackend>> open(const NvmeOptions& opts);
    const BlockInfo& info() const override { return info_; }
    const NvmeNamespace& ns() const { return ns_; }
    Result<std::unique_ptr<BlockChannel>> open_channel(Reactor& reactor, uint32_t depth) override;

private:
    NvmeBackend() = default;
    UniqueFd fd_;
    BlockInfo info_;
    NvmeNamespace ns_;
};

// The sysfs part of open(), on its own for tests: `block_dir` is /sys/block/nvmeXnY.
Result<NvmeNamespace> read_nvme_namespace(const std::string& block_dir);

}  // namespace vhostd::backends
