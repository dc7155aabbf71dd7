// A regular file or a block device, driven through the owning reactor's io_uring.
#pragma once

#include <memory>
#include <string>

#include "backends/block_backend.hpp"
#include "core/unique_fd.hpp"

namespace vhostd::backends {

struct FileOptions {
    std::string path;
    bool readonly = false;
    bool direct = false;       // O_DIRECT
    uint32_t block_size = 0;   // 0: 512 for files, the device's logical block size for block devices
    // Requests handed to the kernel per io_uring_enter. 1: each as soon as it is parsed, so the
    // device starts on it while the rest of the pass is parsed. N > 1: once N are queued (or
    // at the end of the reactor pass): fewer syscalls, but the device gets bursts (io_uring
    // plugs a submission of more than 2, dispatches them together with one doorbell/kick).
    // Measured on this project's VM (virtio disk, file randread QD32, rounds interleaved with
    // native fio): 1 reached 1.02x native, batching per pass 0.90x (bench/results/2026-11-22-vm-2.md).
    uint32_t submit_batch = kDefaultSubmitBatch;
    static constexpr uint32_t kDefaultSubmitBatch = 1;
    static constexpr uint32_t kMaxSubmitBatch = 256;
};

class FileBackend : public BlockBackend {
public:
    static Result<std::unique_ptr<FileBackend>> open(const FileOptions& opts);
    const BlockInfo& info() const override { return info_; }
    Result<std::unique_ptr<BlockChannel>> open_channel(Reactor& reactor, uint32_t depth) override;
    // Regular file: ftruncate to new_size (a multiple of the block size). Block device: re-read
    // its size (BLKGETSIZE64).
    Result<uint64_t> resize(uint64_t new_size) override;
    bool is_block_device() const { return is_blkdev_; }

private:
    FileBackend() = default;
    UniqueFd fd_;
    std::string path_;
    BlockInfo info_;
    bool is_blkdev_ = false;
    uint32_t submit_batch_ = FileOptions::kDefaultSubmitBatch;
};

}  // namespace vhostd::backends
