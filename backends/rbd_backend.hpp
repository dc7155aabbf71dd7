// A Ceph RBD image through librbd's asynchronous API.
//
// librbd completes on its own threads. The completion callback only records the result and pushes
// the request onto its channel's lock-free list (a Treiber stack: one atomic exchange to push, one
// to take all); the push that finds the list empty writes the channel's eventfd, which the owning
// reactor reads through io_uring while requests are outstanding. So completions reach the reactor
// that owns the queue without a lock on the data path, and a polling reactor takes them on its
// next pass without waiting for the eventfd.
//
// Guest iovecs go to rbd_aio_readv/writev as they are. FUA is a write followed by a flush (librbd's
// cache may hold a write). timeout= becomes librados' osd and mon op timeouts: a request to a
// cluster that does not answer fails with an I/O error after that long (0: waits for the cluster);
// the other devices are not affected either way.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "backends/block_backend.hpp"

namespace vhostd::backends {

struct RbdOptions {
    std::string pool;
    std::string image;
    std::string snap;       // a snapshot: read-only
    std::string conf;       // ceph.conf; empty: librados' default search
    std::string user = "admin";  // the cephx client (client.<user>); QEMU's rbd driver calls it user= too
    bool readonly = false;
    uint32_t block_size = 0;  // 0: 512
    uint32_t timeout_s = kDefaultTimeout;
    uint32_t connect_timeout_s = 10;
    static constexpr uint32_t kDefaultTimeout = 30;
};

class RbdBackend final : public BlockBackend {
public:
    // Connects to the cluster and opens the image (blocking, control thread).
    static Result<std::unique_ptr<RbdBackend>> open(const RbdOptions& opts);
    ~RbdBackend() override;
    const BlockInfo& info() const override { return info_; }
    Result<std::unique_ptr<BlockChannel>> open_channel(Reactor& reactor, uint32_t depth) override;
    // Grows (or shrinks) the image: rbd_resize; 0 re-reads the size (someone else resized it).
    Result<uint64_t> resize(uint64_t new_size) override;
    // rbd_update_watch: librbd calls back on a header update (a resize by another client, also a
    // snapshot or a lock change: the device compares the size).
    Status watch_size(std::function<void()> changed) override;

private:
    RbdBackend() = default;

    RbdOptions opts_;
    BlockInfo info_;
    void* cluster_ = nullptr;  // rados_t
    void* ioctx_ = nullptr;    // rados_ioctx_t
    void* image_ = nullptr;    // rbd_image_t
    std::function<void()> size_changed_;
    uint64_t watch_handle_ = 0;
    bool watching_ = false;
};

}  // namespace vhostd::backends
