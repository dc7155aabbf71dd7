// A pool member on an NVMe namespace, through its generic device (/dev/ngXnY): the metadata
// code's reads, writes, zeroes and flushes become synchronous NVMe commands (NVME_IOCTL_IO_CMD),
// and the data path (backends/pool_backend) sends its own commands on the reactors' command
// rings. No block device is needed (a namespace the block layer does not even expose as one
// still has its generic device).
#pragma once

#include <memory>
#include <string>

#include "nvme/nvme.hpp"
#include "pool/disk.hpp"

namespace vhostd::pool {

class NvmeDisk : public Disk {
public:
    // Read-write and flock(LOCK_EX | LOCK_NB)'ed, like a FileDisk. A zoned namespace is refused
    // (a pool rewrites its chunks in place).
    static Result<std::unique_ptr<NvmeDisk>> open(const std::string& path);
    Status read(uint64_t off, void* buf, size_t len) override;
    Status write(uint64_t off, const void* buf, size_t len) override;
    Status sync() override;
    Status zero(uint64_t off, uint64_t len) override;
    uint64_t size() const override { return size_; }
    const std::string& path() const override { return g_.path; }
    int fd() const override { return g_.fd.get(); }
    const nvme::NvmeNamespace* nvme() const override { return &g_.ns; }

private:
    NvmeDisk() = default;
    // [off, off + len) through the bounce buffer, whole LBAs at a time (a partial LBA of a write
    // is read first).
    Status io(bool write, uint64_t off, uint8_t* buf, size_t len);

    nvme::Generic g_;
    uint64_t size_ = 0;
    uint64_t max_io_ = 0;  // bytes one command carries from the bounce buffer
    struct Free {
        void operator()(uint8_t* p) const { std::free(p); }
    };
    std::unique_ptr<uint8_t, Free> bounce_;
};

}  // namespace vhostd::pool
