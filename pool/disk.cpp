#include "pool/disk.hpp"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <linux/falloc.h>
#include <unistd.h>

#include <algorithm>
#include <vector>

namespace vhostd::pool {

Result<std::unique_ptr<FileDisk>> FileDisk::open(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) return sys_error("open {}", path);
    auto d = std::unique_ptr<FileDisk>(new FileDisk);
    d->fd_.reset(fd);
    d->path_ = path;
    struct stat st{};
    if (::fstat(fd, &st) != 0) return sys_error("stat {}", path);
    if (S_ISBLK(st.st_mode)) {
        d->blkdev_ = true;
        if (::ioctl(fd, BLKGETSIZE64, &d->size_) != 0) return sys_error("BLKGETSIZE64 {}", path);
    } else if (S_ISREG(st.st_mode)) {
        d->size_ = static_cast<uint64_t>(st.st_size);
    } else {
        return make_error(Errc::kInvalid, "{} is neither a regular file nor a block device", path);
    }
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
        if (errno == EWOULDBLOCK) return make_error(Errc::kBusy, "{} is in use by another pool (locked)", path);
        return sys_error("flock {}", path);
    }
    return d;
}

Status FileDisk::read(uint64_t off, void* buf, size_t len) {
    auto* p = static_cast<uint8_t*>(buf);
    while (len > 0) {
        ssize_t n = ::pread(fd_.get(), p, len, static_cast<off_t>(off));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return sys_error("read {} at {}", path_, off);
        if (n == 0) return make_error(Errc::kOutOfRange, "read {} at {}: past its end", path_, off);
        p += n;
        off += static_cast<uint64_t>(n);
        len -= static_cast<size_t>(n);
    }
    return ok_status();
}

Status FileDisk::write(uint64_t off, const void* buf, size_t len) {
    auto* p = static_cast<const uint8_t*>(buf);
    while (len > 0) {
        ssize_t n = ::pwrite(fd_.get(), p, len, static_cast<off_t>(off));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return sys_error("write {} at {}", path_, off);
        p += n;
        off += static_cast<uint64_t>(n);
        len -= static_cast<size_t>(n);
    }
    return ok_status();
}

Status Disk::zero(uint64_t off, uint64_t len) {
    static const std::vector<uint8_t> zeros(1024 * 1024, 0);
    while (len > 0) {
        size_t n = static_cast<size_t>(std::min<uint64_t>(len, zeros.size()));
        VHOSTD_TRY(write(off, zeros.data(), n));
        off += n;
        len -= n;
    }
    return ok_status();
}

Status FileDisk::zero(uint64_t off, uint64_t len) {
    // ZERO_RANGE (files, block devices: no data written), else a punched hole (tmpfs), else zeroes.
    if (::fallocate(fd_.get(), FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(off), static_cast<off_t>(len)) == 0) {
        return ok_status();
    }
    if (!blkdev_ && ::fallocate(fd_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(off), static_cast<off_t>(len)) == 0) {
        return ok_status();
    }
    return Disk::zero(off, len);
}

Status FileDisk::sync() {
    if (::fdatasync(fd_.get()) != 0) return sys_error("fdatasync {}", path_);
    return ok_status();
}

}  // namespace vhostd::pool
