#include "pool/nvme_disk.hpp"

#include <sys/file.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace vhostd::pool {

Result<std::unique_ptr<NvmeDisk>> NvmeDisk::open(const std::string& path) {
    auto d = std::unique_ptr<NvmeDisk>(new NvmeDisk);
    VHOSTD_ASSIGN_OR_RETURN(d->g_, nvme::open_generic(path, false));
    const nvme::NvmeNamespace& ns = d->g_.ns;
    if (ns.zone_lbas != 0)
        return make_error(Errc::kUnsupported, "{} is a zoned namespace: a pool member must take writes anywhere", path);
    d->size_ = ns.lbas * ns.lba_size;
    // One command from a page-aligned buffer: max_bytes over at most max_segments pages.
    const uint64_t pages = uint64_t{ns.max_segments} * 4096;
    d->max_io_ = std::min<uint64_t>({ns.max_bytes, pages, 1024 * 1024}) & ~(uint64_t{ns.lba_size} - 1);
    if (d->max_io_ < ns.lba_size) d->max_io_ = ns.lba_size;
    void* p = nullptr;
    if (posix_memalign(&p, 4096, d->max_io_) != 0) return make_error(Errc::kSystem, "{}: no memory for a bounce buffer", path);
    d->bounce_.reset(static_cast<uint8_t*>(p));
    if (::flock(d->fd(), LOCK_EX | LOCK_NB) != 0) {
        if (errno == EWOULDBLOCK) return make_error(Errc::kBusy, "{} is in use by another pool (locked)", path);
        return sys_error("flock {}", path);
    }
    return d;
}

Status NvmeDisk::io(bool write, uint64_t off, uint8_t* buf, size_t len) {
    const nvme::NvmeNamespace& ns = g_.ns;
    const uint64_t lba = ns.lba_size;
    if (off > size_ || len > size_ - off)
        return make_error(Errc::kOutOfRange, "{} {} bytes at {}: past its end ({} bytes)", write ? "write" : "read", len, g_.path, size_);
    uint8_t* b = bounce_.get();
    while (len > 0) {
        const uint64_t slba = off / lba, in = off % lba;
        // The LBAs that cover the next piece, as many as one command carries.
        const uint64_t span = std::min<uint64_t>(max_io_, (in + len + lba - 1) / lba * lba);
        const size_t n = static_cast<size_t>(std::min<uint64_t>(len, span - in));
        const auto nlb = static_cast<uint32_t>(span / lba);
        int r = 0;
        if (!write || in != 0 || (in + n) % lba != 0) {
            // A read, or a write that keeps part of an LBA: the LBAs as they are first.
            r = nvme::io_rw(g_.fd.get(), ns, false, slba, nlb, b);
            if (r != 0) return sys_error_code(-r, "{}: read of {} LBAs at {}", g_.path, nlb, slba);
        }
        if (write) {
            std::memcpy(b + in, buf, n);
            r = nvme::io_rw(g_.fd.get(), ns, true, slba, nlb, b);
            if (r != 0) return sys_error_code(-r, "{}: write of {} LBAs at {}", g_.path, nlb, slba);
        } else {
            std::memcpy(buf, b + in, n);
        }
        off += n;
        buf += n;
        len -= n;
    }
    return ok_status();
}

Status NvmeDisk::read(uint64_t off, void* buf, size_t len) { return io(false, off, static_cast<uint8_t*>(buf), len); }

Status NvmeDisk::write(uint64_t off, const void* buf, size_t len) {
    // io() only reads from `buf` when writing.
    return io(true, off, static_cast<uint8_t*>(const_cast<void*>(buf)), len);
}

Status NvmeDisk::sync() {
    int r = nvme::io_flush(g_.fd.get(), g_.ns);
    if (r != 0) return sys_error_code(-r, "{}: flush", g_.path);
    return ok_status();
}

Status NvmeDisk::zero(uint64_t off, uint64_t len) {
    const nvme::NvmeNamespace& ns = g_.ns;
    const uint64_t lba = ns.lba_size;
    if (!ns.write_zeroes || off % lba != 0 || len % lba != 0) return Disk::zero(off, len);
    if (off > size_ || len > size_ - off) return make_error(Errc::kOutOfRange, "zero {} bytes at {} of {}: past its end", len, off, g_.path);
    // Write Zeroes commands, no data moved (the drive may deallocate and read back zeroes).
    uint64_t slba = off / lba, left = len / lba;
    while (left > 0) {
        const auto n = static_cast<uint32_t>(std::min<uint64_t>(left, ns.write_zeroes_max_lbas));
        int r = nvme::io_write_zeroes(g_.fd.get(), ns, slba, n);
        if (r == -EOPNOTSUPP) return Disk::zero(slba * lba, left * lba);
        if (r != 0) return sys_error_code(-r, "{}: write zeroes of {} LBAs at {}", g_.path, n, slba);
        slba += n;
        left -= n;
    }
    return ok_status();
}

}  // namespace vhostd::pool
