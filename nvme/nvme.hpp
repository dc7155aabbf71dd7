// NVMe namespaces as the kernel's driver exposes them to user space: a namespace's generic
// character device (/dev/ngXnY) and its description in sysfs, and the I/O commands vhostd sends
// through it - asynchronously on a reactor's command ring (IORING_OP_URING_CMD, 128-byte SQEs)
// from the data path, synchronously (NVME_IOCTL_IO_CMD) for pool metadata. Two users: the
// passthrough backend (backends/nvme_backend) and pool members on NVMe (pool/nvme_disk), so this
// room sits below both and knows nothing of either.
#pragma once

#include <liburing.h>
#include <linux/nvme_ioctl.h>
#include <sys/uio.h>

#include <cstdint>
#include <cstring>
#include <string>

#include "core/result.hpp"
#include "core/unique_fd.hpp"

namespace vhostd::nvme {

// NVM command set opcodes (NVMe base spec 2.0, NVM command set spec 1.0).
constexpr uint8_t kOpFlush = 0x00, kOpWrite = 0x01, kOpRead = 0x02, kOpWriteZeroes = 0x08, kOpDsm = 0x09;
// Zoned namespace command set (NVMe ZNS spec 1.1).
constexpr uint8_t kOpZoneMgmtSend = 0x79, kOpZoneMgmtRecv = 0x7a, kOpZoneAppend = 0x7d;
constexpr uint32_t kFua = 1u << 30;           // read/write CDW12
constexpr uint32_t kDeac = 1u << 25;          // write zeroes CDW12: deallocate
constexpr uint32_t kDsmDeallocate = 1u << 2;  // DSM CDW11 AD
// One command's NLB field is 16 bits (0's based) for write zeroes, 32 bits in a DSM range.
constexpr uint64_t kMaxZeroLbas = 65536;
constexpr uint64_t kMaxDsmLbas = UINT32_MAX;

struct DsmRange {
    uint32_t cattr;
    uint32_t nlb;
    uint64_t slba;
};
static_assert(sizeof(DsmRange) == 16);

// What the kernel's driver knows of a namespace (sysfs), checked.
struct NvmeNamespace {
    std::string block_name;    // nvmeXnY
    uint32_t nsid = 0;
    uint32_t lba_size = 0;     // bytes, a power of two, 512..4096
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

    unsigned lba_shift() const { return static_cast<unsigned>(__builtin_ctz(lba_size)); }
};

// `block_dir` is /sys/block/nvmeXnY.
Result<NvmeNamespace> read_nvme_namespace(const std::string& block_dir);

// A namespace's generic device, open, with its description (checked to be the same namespace).
struct Generic {
    UniqueFd fd;
    NvmeNamespace ns;
    std::string path;  // as given
};
Result<Generic> open_generic(const std::string& path, bool readonly);
// Whether `path` names a character device (what a pool member on NVMe is given as).
bool is_char_device(const std::string& path);

// A positive result of a passthrough command is the NVMe status (SCT << 8 | SC, plus the DNR and
// More bits): what the block layer would have made of it, as a negative errno.
int32_t status_errno(int32_t status);

// The bytes of `iov` one read or write command may carry, in whole `granule`s: at most
// `max_bytes` over at most `max_segments` memory pages. The block layer splits nothing for
// passthrough: it maps the buffer (or a bounce copy of it) page by page, and a command whose
// pages do not merge into max_segments segments is refused (EINVAL). Counting every page touched
// as a segment of its own is the worst case, so a command never fails on how guest memory lies.
// 0: not even one granule fits.
uint64_t fit_bytes(const iovec* iov, unsigned iovcnt, uint64_t max_bytes, uint32_t max_segments, uint64_t granule);

// A 128-byte SQE for an I/O command on `fd`, zeroed; the caller fills the command's dwords.
inline nvme_uring_cmd* prep(io_uring_sqe* sqe, int fd, uint32_t nsid, uint8_t opcode) {
    std::memset(sqe, 0, 2 * sizeof(io_uring_sqe));
    sqe->opcode = IORING_OP_URING_CMD;
    sqe->fd = fd;
    sqe->cmd_op = NVME_URING_CMD_IO;
    auto* cmd = reinterpret_cast<nvme_uring_cmd*>(sqe->cmd);
    cmd->opcode = opcode;
    cmd->nsid = nsid;
    return cmd;
}
inline void set_slba(nvme_uring_cmd* cmd, uint64_t slba) {
    cmd->cdw10 = static_cast<uint32_t>(slba);
    cmd->cdw11 = static_cast<uint32_t>(slba >> 32);
}
// The command's data: one buffer, or (IO_VEC) the iovec array itself, which must stay valid
// until the command completes (the kernel may read it again when it retries from a worker).
inline void set_data(io_uring_sqe* sqe, nvme_uring_cmd* cmd, const iovec* iov, unsigned iovcnt, uint32_t bytes) {
    if (iovcnt == 1) {
        cmd->addr = reinterpret_cast<uint64_t>(iov[0].iov_base);
        cmd->data_len = bytes;
    } else {
        sqe->cmd_op = NVME_URING_CMD_IO_VEC;
        cmd->addr = reinterpret_cast<uint64_t>(iov);
        cmd->data_len = iovcnt;
    }
}
// Read / write of `nlb` LBAs from `slba` (FUA for writes when asked).
inline void prep_rw(io_uring_sqe* sqe, int fd, uint32_t nsid, bool write, uint64_t slba, uint32_t nlb, bool fua,
                    const iovec* iov, unsigned iovcnt, uint32_t bytes) {
    nvme_uring_cmd* cmd = prep(sqe, fd, nsid, write ? kOpWrite : kOpRead);
    set_slba(cmd, slba);
    cmd->cdw12 = (nlb - 1) | (write && fua ? kFua : 0);
    set_data(sqe, cmd, iov, iovcnt, bytes);
}
inline void prep_write_zeroes(io_uring_sqe* sqe, int fd, uint32_t nsid, uint64_t slba, uint32_t nlb, bool deallocate) {
    nvme_uring_cmd* cmd = prep(sqe, fd, nsid, kOpWriteZeroes);
    set_slba(cmd, slba);
    cmd->cdw12 = (nlb - 1) | (deallocate ? kDeac : 0);
}
// Deallocate one range; `range` must stay valid until the command completes.
inline void prep_deallocate(io_uring_sqe* sqe, int fd, uint32_t nsid, DsmRange* range) {
    nvme_uring_cmd* cmd = prep(sqe, fd, nsid, kOpDsm);
    cmd->cdw10 = 0;  // one range (0's based)
    cmd->cdw11 = kDsmDeallocate;
    cmd->addr = reinterpret_cast<uint64_t>(range);
    cmd->data_len = sizeof(*range);
}

// Synchronous I/O commands (NVME_IOCTL_IO_CMD) for the control plane: whole LBAs, a buffer of
// `nlb` LBAs at most max_bytes long (the caller cuts). 0, a negative errno, or the NVMe status's
// errno.
int io_rw(int fd, const NvmeNamespace& ns, bool write, uint64_t slba, uint32_t nlb, void* buf);
int io_flush(int fd, const NvmeNamespace& ns);
int io_write_zeroes(int fd, const NvmeNamespace& ns, uint64_t slba, uint32_t nlb);

}  // namespace vhostd::nvme
