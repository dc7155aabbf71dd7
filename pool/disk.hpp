// A pool member as the metadata code sees it: positioned reads and writes and a flush. Files and
// block devices (FileDisk) and NVMe namespaces (pool/nvme_disk.hpp) in production, each
// exclusive (flock'ed, so two processes never own one pool); tests put a crash-simulating image
// behind the same interface.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "core/result.hpp"
#include "core/unique_fd.hpp"

namespace vhostd::nvme {
struct NvmeNamespace;
}

namespace vhostd::pool {

class Disk {
public:
    virtual ~Disk() = default;
    virtual Status read(uint64_t off, void* buf, size_t len) = 0;
    virtual Status write(uint64_t off, const void* buf, size_t len) = 0;
    virtual Status sync() = 0;  // everything written so far is durable
    // [off, off + len) reads back as zeroes (written like data: sync() makes it durable).
    virtual Status zero(uint64_t off, uint64_t len);
    virtual uint64_t size() const = 0;
    virtual const std::string& path() const = 0;
    virtual int fd() const { return -1; }  // for the data path (-1: none)
    // An NVMe namespace's generic device (pool/nvme_disk): the data path sends NVMe commands to
    // fd() instead of reads and writes.
    virtual const nvme::NvmeNamespace* nvme() const { return nullptr; }
};

class FileDisk : public Disk {
public:
    // A regular file or a block device, read-write, flock(LOCK_EX | LOCK_NB)'ed.
    static Result<std::unique_ptr<FileDisk>> open(const std::string& path);
    Status read(uint64_t off, void* buf, size_t len) override;
    Status write(uint64_t off, const void* buf, size_t len) override;
    Status sync() override;
    Status zero(uint64_t off, uint64_t len) override;
    uint64_t size() const override { return size_; }
    const std::string& path() const override { return path_; }
    int fd() const override { return fd_.get(); }
    bool is_block_device() const { return blkdev_; }

private:
    UniqueFd fd_;
    std::string path_;
    uint64_t size_ = 0;
    bool blkdev_ = false;
};

}  // namespace vhostd::pool
