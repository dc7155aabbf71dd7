// Volumes of a pool (pool/) as block devices. A PoolService owns one imported pool, its
// allocation thread (the committer) and the volumes attached to devices; a VolumeBackend is
// one attached volume.
//
// The data path (a reactor, per channel): a request is cut at chunk boundaries; each piece
// resolves its chunk through the volume's Chain (lock-free: published by the control plane,
// retired only after every reactor that may read it has passed a barrier), then reads or writes
// the member at the chunk's place through the reactor's io_uring: a file or block device with
// reads and writes, an NVMe namespace with NVMe commands on the reactor's command ring (cut to
// what one command carries; whole LBAs, so the volume's block size is its largest member LBA). A read of a chunk nobody
// owns is zeroes (no I/O). A write to a chunk the volume does not own yet (thin: never written;
// after a snapshot: owned by an ancestor) goes to the committer, which fills a fresh chunk
// (the ancestor's data, or zeroes), flushes it, journals the mapping and answers; the channel
// then writes the guest's data into the volume's own chunk. So a first write completes only
// once its chunk is durably the volume's; the data itself follows virtio-blk's write-back
// rules (durable at FLUSH, or at once with FUA).
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "backends/block_backend.hpp"
#include "core/log.hpp"
#include "core/mpsc_list.hpp"
#include "nvme/nvme.hpp"
#include "pool/pool.hpp"

namespace vhostd::backends {

class PoolService;
class VolumeBackend;
struct AllocNode;

// One attached volume's shared state (its channels and the control plane).
struct VolumeState {
    uint32_t vol = 0;
    std::string name;                       // POOL/VOLUME
    std::atomic<const pool::Chain*> chain{nullptr};
    std::atomic<uint32_t> gate{0};          // held (by how many): channels start no request
    std::atomic<uint64_t> size{0};
    std::unique_ptr<pool::Chain> owned;     // what `chain` points at (control plane)
};

class PoolService : public std::enable_shared_from_this<PoolService> {
public:
    static Result<std::shared_ptr<PoolService>> start(std::unique_ptr<pool::Pool> p);
    ~PoolService();
    PoolService(const PoolService&) = delete;
    PoolService& operator=(const PoolService&) = delete;

    pool::Pool& pool() { return *pool_; }
    const std::string& name() const { return pool_->name(); }

    // The volume (not a snapshot) as a block device; one device at a time.
    Result<std::shared_ptr<VolumeBackend>> attach(const std::string& volume, bool readonly);
    bool attached(const std::string& volume) const;

    // Control operations that must coordinate with attached volumes. A snapshot of an attached
    // volume holds its new requests and waits for those in flight (at most `wait`).
    Result<pool::VolumeInfo> snapshot(const std::string& volume, const std::string& snap);
    Status delete_volume(const std::string& name);  // refused while attached
    // Stops the committer (attached volumes must be gone) and writes a checkpoint.
    void close();

    // Data path (any reactor): queue a first write's allocation.
    void request_alloc(AllocNode* n);

    // Channels register their count of active requests (those that may hold a chain or have
    // I/O in flight; not those waiting for an allocation or held by a gate).
    void add_channel(VolumeState* vs, std::atomic<uint32_t>* active);
    void remove_channel(std::atomic<uint32_t>* active);
    // VolumeBackend::resize: the pool lets an attached volume be resized by its device only.
    Result<uint64_t> resize_attached(VolumeState* vs, uint64_t new_size);

    // Placement of a physical chunk (immutable after start).
    struct Member {
        int fd;
        const nvme::NvmeNamespace* ns;  // an NVMe namespace (commands on the command ring), or null: a file
        uint64_t data_offset;
        uint64_t chunks;
        uint64_t base;
    };
    const std::vector<Member>& members() const { return members_; }
    uint64_t chunk_size() const { return chunk_; }
    void detach(VolumeState* vs);

private:
    PoolService() = default;
    void committer();
    bool after_change();  // pool lock held
    Status guard(const pool::Record& r);  // pool lock held
    // Holds new requests on `vs` (every attached volume when null) and waits until none is
    // active; release() lets them go.
    Status hold(VolumeState* vs, std::chrono::milliseconds wait);
    void release(VolumeState* vs);

    std::unique_ptr<pool::Pool> pool_;
    std::vector<Member> members_;
    uint64_t chunk_ = 0;

    mutable std::mutex mu_;  // attachments, channels, reactors
    std::vector<std::unique_ptr<VolumeState>> volumes_;
    std::vector<std::pair<VolumeState*, std::atomic<uint32_t>*>> channels_;
    std::vector<std::unique_ptr<pool::Chain>> leaked_;  // old chains a timed-out hold could not retire
    uint32_t resizing_ = 0;  // the volume its device is resizing (pool lock)
    uint32_t snapshotting_ = 0;
    LogRateLimit pool_log_;

    MpscList<AllocNode> inbox_;  // reactors push first writes' allocations
    std::atomic<uint32_t> inbox_seq_{0};
    std::atomic<bool> stop_{false};
    std::thread thread_;
    bool closed_ = false;
};

class VolumeBackend : public BlockBackend {
public:
    VolumeBackend(std::shared_ptr<PoolService> svc, VolumeState* vs, bool readonly);
    ~VolumeBackend() override;
    const BlockInfo& info() const override { return info_; }
    Result<std::unique_ptr<BlockChannel>> open_channel(Reactor& reactor, uint32_t depth) override;
    // Grows or shrinks the volume (the device drained requests past a shrink's end).
    Result<uint64_t> resize(uint64_t new_size) override;
    VolumeState& state() { return *vs_; }

private:
    std::shared_ptr<PoolService> svc_;
    VolumeState* vs_;
    BlockInfo info_;
};

}  // namespace vhostd::backends
