#include "backends/file_backend.hpp"

#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <limits>

#include "core/log.hpp"

namespace vhostd::backends {

namespace {

class FileChannel final : public BlockChannel {
public:
    FileChannel(Reactor& r, int fd, bool blkdev, uint32_t submit_batch)
        : r_(r), fd_(fd), blkdev_(blkdev), submit_batch_(submit_batch) {}

    bool ready() override {
        if (r_.sq_space_left() > 0) return true;
        io_uring_submit(r_.ring());  // make room by handing the batch to the kernel
        return r_.sq_space_left() > 0;
    }

    Status submit(const BlockRequest& q, Completion* c) override {
        if (is_zone_op(q.op)) return make_error(Errc::kUnsupported, "zone commands need a zoned backend");
        io_uring_sqe* sqe = io_uring_get_sqe(r_.ring());
        if (sqe == nullptr) return make_error(Errc::kBusy, "submission queue full");
        switch (q.op) {
            case BlockOp::kRead:
                io_uring_prep_readv(sqe, fd_, q.iov, q.iovcnt, q.offset);
                break;
            case BlockOp::kWrite:
                io_uring_prep_writev(sqe, fd_, q.iov, q.iovcnt, q.offset);
                if (q.fua) sqe->rw_flags = RWF_DSYNC;
                break;
            case BlockOp::kFlush:
                io_uring_prep_fsync(sqe, fd_, IORING_FSYNC_DATASYNC);
                break;
            case BlockOp::kDiscard:
                // Block devices: PUNCH_HOLE|NO_HIDE_STALE is a real discard (blkdev_fallocate).
                io_uring_prep_fallocate(sqe, fd_,
                                        FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE |
                                            (blkdev_ ? FALLOC_FL_NO_HIDE_STALE : 0),
                                        q.offset, q.len);
                break;
            case BlockOp::kWriteZeroes:
                io_uring_prep_fallocate(sqe, fd_, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, q.offset, q.len);
                break;
            case BlockOp::kWriteZeroesUnmap:
                // Files: a punched hole reads as zeroes. Block devices: zero-out, unmapping allowed.
                io_uring_prep_fallocate(sqe, fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, q.offset, q.len);
                break;
            VHOSTD_CASE_ZONE_OPS:
                break;  // refused above
        }
        io_uring_sqe_set_data(sqe, c);
        // A failed enter leaves the SQEs queued: the reactor's end-of-pass submit retries them.
        if (io_uring_sq_ready(r_.ring()) >= submit_batch_) io_uring_submit(r_.ring());
        return ok_status();
    }

private:
    Reactor& r_;
    int fd_;
    bool blkdev_;
    uint32_t submit_batch_;
};

}  // namespace

Result<std::unique_ptr<FileBackend>> FileBackend::open(const FileOptions& o) {
    if (o.submit_batch == 0 || o.submit_batch > FileOptions::kMaxSubmitBatch)
        return make_error(Errc::kInvalid, "submit-batch={} must be 1..{}", o.submit_batch, FileOptions::kMaxSubmitBatch);
    int flags = (o.readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC | (o.direct ? O_DIRECT : 0);
    int fd = ::open(o.path.c_str(), flags);
    if (fd < 0) return sys_error("cannot open '{}'", o.path);
    auto b = std::unique_ptr<FileBackend>(new FileBackend());
    b->fd_.reset(fd);
    b->path_ = o.path;
    struct stat st {};
    if (fstat(fd, &st) != 0) return sys_error("fstat '{}'", o.path);
    BlockInfo& in = b->info_;
    in.readonly = o.readonly;
    if (S_ISBLK(st.st_mode)) {
        b->is_blkdev_ = true;
        uint64_t sz = 0;
        if (ioctl(fd, BLKGETSIZE64, &sz) != 0) return sys_error("BLKGETSIZE64 on '{}'", o.path);
        int lbs = 512;
        unsigned pbs = 0;
        if (ioctl(fd, BLKSSZGET, &lbs) != 0) lbs = 512;
        if (ioctl(fd, BLKPBSZGET, &pbs) != 0) pbs = 0;
        in.size_bytes = sz;
        in.block_size = o.block_size ? o.block_size : static_cast<uint32_t>(lbs);
        in.physical_block = pbs;
        if (in.block_size < static_cast<uint32_t>(lbs))
            return make_error(Errc::kInvalid, "block-size {} is smaller than the device's logical block size {}",
                              in.block_size, lbs);
    } else if (S_ISREG(st.st_mode)) {
        in.size_bytes = static_cast<uint64_t>(st.st_size);
        in.block_size = o.block_size ? o.block_size : 512;
    } else {
        return make_error(Errc::kInvalid, "'{}' is neither a regular file nor a block device", o.path);
    }
    if (in.block_size != 512 && in.block_size != 4096)
        return make_error(Errc::kInvalid, "block-size must be 512 or 4096, not {}", in.block_size);
    uint64_t usable = in.size_bytes / in.block_size * in.block_size;
    if (usable != in.size_bytes)
        VLOG_WARN("'{}': size {} is not a multiple of {}; the last {} bytes are not exposed", o.path, in.size_bytes,
                  in.block_size, in.size_bytes - usable);
    in.size_bytes = usable;
    if (in.size_bytes == 0) return make_error(Errc::kInvalid, "'{}' is empty", o.path);
    in.discard = !o.readonly;
    in.write_zeroes = !o.readonly;
    in.description = fmt::format("{} '{}'{}{}{}", b->is_blkdev_ ? "block device" : "file", o.path,
                                 o.direct ? " O_DIRECT" : "", o.readonly ? " read-only" : "",
                                 o.submit_batch > 1 ? fmt::format(" submit-batch={}", o.submit_batch) : "");
    b->submit_batch_ = o.submit_batch;
    return b;
}

Result<uint64_t> FileBackend::resize(uint64_t new_size) {
    const uint32_t bs = info_.block_size;
    if (is_blkdev_) {
        uint64_t sz = 0;
        if (ioctl(fd_.get(), BLKGETSIZE64, &sz) != 0) return sys_error("BLKGETSIZE64 on '{}'", path_);
        sz = sz / bs * bs;
        if (new_size != 0 && new_size != sz)
            return make_error(Errc::kInvalid,
                              "'{}' is a block device of {} bytes: its size is the device's own (resize it, then "
                              "resize without a size to re-read it)",
                              path_, sz);
        if (sz == 0) return make_error(Errc::kInvalid, "'{}' now has no usable blocks", path_);
        info_.size_bytes = sz;
        return sz;
    }
    if (info_.readonly) return make_error(Errc::kInvalid, "'{}' is read-only", path_);
    if (new_size == 0 || new_size % bs != 0)
        return make_error(Errc::kInvalid, "size {} must be a non-zero multiple of the block size {}", new_size, bs);
    if (new_size > static_cast<uint64_t>(std::numeric_limits<off_t>::max()))
        return make_error(Errc::kInvalid, "size {} is too large", new_size);
    if (::ftruncate(fd_.get(), static_cast<off_t>(new_size)) != 0)
        return sys_error("ftruncate '{}' to {} bytes", path_, new_size);
    info_.size_bytes = new_size;
    return new_size;
}

Result<std::unique_ptr<BlockChannel>> FileBackend::open_channel(Reactor& reactor, uint32_t) {
    return std::unique_ptr<BlockChannel>(std::make_unique<FileChannel>(reactor, fd_.get(), is_blkdev_, submit_batch_));
}

}  // namespace vhostd::backends
