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
};

class FileBackend : public BlockBackend {
public:
    static Result<std::unique_ptr<FileBackend>> open(const FileOptions& opts);
    const BlockInfo& info() const override { return info_; }
    Result<std::unique_ptr<BlockChannel>> open_channel(Reactor& reactor, uint32_t depth) override;
    bool is_block_device() const { return is_blkdev_; }

private:
    FileBackend() = default;
    UniqueFd fd_;
    BlockInfo info_;
    bool is_blkdev_ = false;
};

}  // namespace vhostd::backends
