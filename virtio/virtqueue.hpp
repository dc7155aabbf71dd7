// Device side of a split virtqueue over guest memory.
//
// Everything the guest writes is treated as hostile: descriptors are copied out once and
// validated on the copy, chain walks are bounded, indices are checked against the queue size,
// and ring memory was validated once at activation (all three rings wholly inside one mapped
// region each). Ring indices are shared with the guest's CPU: avail->idx is read with acquire,
// used->idx is published with release once per batch.
#pragma once

#include <sys/uio.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "core/result.hpp"
#include "shm/dirty_log.hpp"
#include "shm/memory_map.hpp"
#include "virtio/inflight.hpp"
#include "virtio/virtio_types.hpp"

namespace vhostd::virtio {

struct QueueLayout {
    uint16_t size = 0;  // power of two, <= kMaxQueueSize
    uint64_t desc_uva = 0;
    uint64_t avail_uva = 0;
    uint64_t used_uva = 0;
};

// A walked descriptor chain: device-readable iovecs first, then device-writable ones.
struct Chain {
    uint16_t head = 0;
    size_t n_readable = 0;  // iov[0, n_readable)
    size_t n_writable = 0;  // iov[n_readable, n_readable + n_writable)
    uint64_t readable_bytes = 0;
    uint64_t writable_bytes = 0;
};

// Why a chain could not be walked (all are guest errors).
enum class ChainError : uint8_t {
    kNone,
    kLoop,              // more descriptors than the budget allows
    kBadIndex,          // next / head out of range
    kBadAddress,        // buffer not in guest memory
    kTooManySegments,   // more iovecs than the request slot holds
    kBadIndirect,       // indirect rules broken (nested, len % 16, NEXT|INDIRECT, not negotiated)
    kOrder,             // readable descriptor after a writable one
    kTooLong,           // chain bigger than 4 GiB
};
const char* chain_error_name(ChainError e);

// Largest total chain length accepted (split and packed rings).
inline constexpr uint64_t kMaxChainBytes = 1ull << 32;
// One guest buffer of a chain being walked (either ring): readable ones must come before
// writable ones, the chain stays within kMaxChainBytes, and the buffer is translated into iov
// after the ones already there. On failure *err says why.
bool add_chain_buffer(const shm::MemoryMap& mem, uint64_t addr, uint32_t len, bool writable, std::span<iovec> iov,
                      Chain* out, ChainError* err);

class SplitQueue {
public:
    // Largest indirect table we walk (entries); matches the queue size cap.
    static constexpr uint32_t kMaxIndirect = kMaxQueueSize;
    // Largest total chain length we accept.
    static constexpr uint64_t kMaxChainBytes = ::vhostd::virtio::kMaxChainBytes;

    // Validates and caches ring pointers. `last_avail` is the SET_VRING_BASE value.
    // With `inflight` (this queue's part of the shared inflight buffer), requests are tracked
    // there; if it holds requests a previous instance had in flight, those are validated and
    // come back first from pop_head (in their original order), and last_avail follows from
    // the region instead.
    Status activate(std::shared_ptr<const shm::MemoryMap> mem, const QueueLayout& layout, uint16_t last_avail,
                    bool event_idx, bool indirect, InflightQueue* inflight = nullptr,
                    uint64_t features = 0);
    bool active() const { return desc_ != nullptr; }
    // Forgets the rings and drops the memory reference (the mapping may go away now).
    void deactivate();
    uint16_t size() const { return size_; }
    const shm::MemoryMap& mem() const { return *mem_; }
    std::shared_ptr<const shm::MemoryMap> mem_ref() const { return mem_; }

    // Requests recovered from the inflight region and not yet taken again.
    uint16_t resubmits_left() const { return static_cast<uint16_t>(resubmit_.size() - resubmit_pos_); }
    // Number of new avail entries (plus recovered requests), or an error if the guest moved avail->idx by more than the
    // queue size (a broken guest, not "lots of work").
    Result<uint16_t> pending();
    // Takes the next avail head (call only when pending() > 0). Fails if the head is out of range.
    Result<uint16_t> pop_head();
    // Gives back the last n heads taken with pop_head (not yet used): the guest still owns
    // them as available buffers, and the next pop_head returns them again.
    void rewind(uint16_t n);
    // Walks the chain starting at head into iov. On failure *err says why.
    bool walk(uint16_t head, std::span<iovec> iov, Chain* out, ChainError* err) const;

    // Writes a used element (not yet visible to the guest).
    void push_used(uint16_t head, uint32_t len);
    // Publishes all pushed used elements with one release store. True if anything was published.
    bool publish_used();
    // After publish: does the guest want an interrupt? (EVENT_IDX or NO_INTERRUPT rules.)
    bool needs_notify();

    // Guest->device notifications (kicks): enable before sleeping, disable while polling.
    // enable_notify returns true if new work arrived meanwhile (then don't sleep).
    bool enable_notify();
    void disable_notify();
    // Like enable_notify, but asks for a kick only once the guest publishes beyond `seen`
    // (an avail idx already looked at): for a device that waits for *more* buffers than the
    // ring holds now. True if avail idx moved past `seen` meanwhile.
    bool enable_notify_beyond(uint16_t seen);
    // The guest's avail idx (acquire).
    uint16_t avail_idx() const;

    // Live migration: with a log, every write this queue makes to the used ring (entries, idx,
    // flags, avail_event) is marked in it, the ring's first byte at `used_log_gpa` (the ring's
    // log_guest_addr); nullptr stops that. Survives activate/deactivate.
    void set_used_log(const shm::DirtyLog* log, uint64_t used_log_gpa) {
        used_log_ = log;
        used_log_gpa_ = used_log_gpa;
        log_used();
    }

    uint16_t last_avail() const { return last_avail_; }
    uint16_t used_idx() const { return used_idx_; }
    // Used idx as the guest sees it (read from ring memory).
    uint16_t ring_used_idx() const;

private:
    bool walk_table(const Desc* table, uint32_t table_size, uint16_t start,
                    std::span<iovec> iov, Chain* out, ChainError* err, bool is_indirect) const;

    Status recover_inflight(uint16_t* last_avail, uint64_t features);
    // After a store into the used ring: mark the ring's pages in the migration log, if any.
    void log_used() const {
        if (used_log_ != nullptr && size_ != 0) [[unlikely]]
            used_log_->mark(used_log_gpa_, used_ring_bytes(size_));
    }
    void track_popped(uint16_t head);

    std::shared_ptr<const shm::MemoryMap> mem_;
    uint16_t size_ = 0;
    InflightQueue* inflight_ = nullptr;
    uint64_t counter_ = 0;
    std::vector<uint16_t> batch_;      // heads pushed since the last publish (inflight tracking)
    std::vector<uint16_t> resubmit_;   // recovered heads, oldest first
    size_t resubmit_pos_ = 0;
    bool event_idx_ = false;
    bool indirect_ = false;
    Desc* desc_ = nullptr;
    uint16_t* avail_flags_ = nullptr;
    uint16_t* avail_idx_ = nullptr;
    uint16_t* avail_ring_ = nullptr;
    uint16_t* used_event_ = nullptr;  // in avail ring trailer
    uint16_t* used_flags_ = nullptr;
    uint16_t* used_idx_ptr_ = nullptr;
    UsedElem* used_ring_ = nullptr;
    uint16_t* avail_event_ = nullptr;  // in used ring trailer

    uint16_t last_avail_ = 0;
    uint16_t used_idx_ = 0;       // next used slot (shadow of used->idx incl. unpublished)
    uint16_t published_idx_ = 0;  // last value stored to used->idx
    uint16_t signalled_idx_ = 0;  // used idx at the last notification
    bool signalled_valid_ = false;
    bool notify_enabled_ = true;
    const shm::DirtyLog* used_log_ = nullptr;
    uint64_t used_log_gpa_ = 0;
};

}  // namespace vhostd::virtio
