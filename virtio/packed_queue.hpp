// Device side of a packed virtqueue (VIRTIO 1.1+, VIRTIO_F_RING_PACKED) over guest memory.
//
// One descriptor ring read and written by both sides, plus two 4-byte event suppression areas
// (the driver's: read here; the device's: written here). The driver makes a chain available by
// writing its descriptors and then the first one's flags (AVAIL = its wrap counter, USED = the
// inverse); the device hands a buffer back by writing one used descriptor (buffer id, written
// length, AVAIL = USED = its own wrap counter) at its used position and skipping as many ring
// slots as the chain had descriptors.
//
// Same discipline as SplitQueue: every descriptor is copied out once and validated on the copy;
// walks are bounded by the ring size (no chain is longer than the ring, no table longer than
// kMaxIndirect); buffer ids are checked against the queue size; wrap arithmetic is modulo the
// ring size with explicit wrap bits. A chain's descriptors are read when it is taken
// (pop_head: its length and id) and again when it is walked; the driver must not touch them in
// between, and if it does, the walk's checks still hold on whatever it finds.
#pragma once

#include <sys/uio.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "core/result.hpp"
#include "shm/dirty_log.hpp"
#include "shm/memory_map.hpp"
#include "virtio/inflight.hpp"
#include "virtio/virtqueue.hpp"

namespace vhostd::virtio {

inline constexpr uint64_t kFRingPacked = 1ull << 34;

inline constexpr uint16_t kPackedDescFAvail = 1u << 7;
inline constexpr uint16_t kPackedDescFUsed = 1u << 15;

// Event suppression flags (pvirtq_event_suppress.flags, low 2 bits).
inline constexpr uint16_t kRingEventEnable = 0;
inline constexpr uint16_t kRingEventDisable = 1;
inline constexpr uint16_t kRingEventDesc = 2;

// Naturally aligned (no packing needed): rings are 16-byte and areas 4-byte aligned.
struct PackedDesc {
    uint64_t addr;
    uint32_t len;
    uint16_t id;
    uint16_t flags;
};
static_assert(sizeof(PackedDesc) == 16);

struct EventSuppress {
    uint16_t off_wrap;  // bits 0-14: ring offset, bit 15: wrap counter
    uint16_t flags;
};
static_assert(sizeof(EventSuppress) == 4);

// A ring position: index into the descriptor ring and the wrap counter that goes with it.
struct PackedPos {
    uint16_t idx = 0;
    bool wrap = true;
    friend bool operator==(const PackedPos&, const PackedPos&) = default;
};

// SET_VRING_BASE / GET_VRING_BASE for packed rings (QEMU's encoding): bits 0-14 the next avail
// index, bit 15 its wrap counter; bits 16-30 the next used index, bit 31 its wrap counter.
constexpr uint32_t packed_base(PackedPos avail, PackedPos used) {
    return uint32_t{avail.idx} | (uint32_t{avail.wrap} << 15) | (uint32_t{used.idx} << 16) | (uint32_t{used.wrap} << 31);
}
// The base of a fresh ring: both positions at 0, both wrap counters 1.
inline constexpr uint32_t kPackedFreshBase = packed_base({0, true}, {0, true});

class PackedQueue {
public:
    static constexpr uint32_t kMaxIndirect = kMaxQueueSize;

    // Validates and caches ring pointers: desc_uva is the descriptor ring, avail_uva the driver
    // event suppression area, used_uva the device's. `base` is the SET_VRING_BASE value.
    // With `inflight` (the queue's region, INFLIGHT_SHMFD) every chain is tracked there from
    // when it is taken until its used descriptor is visible; a region a killed backend left
    // behind is recovered: both ring positions come from it (after a crash the frontend's base
    // is stale), and the chains still in flight are taken first again (pop_head), in the order
    // they were first taken, walked from the region's copies of their descriptors.
    Status activate(std::shared_ptr<const shm::MemoryMap> mem, const QueueLayout& layout, uint32_t base,
                    bool event_idx, bool indirect, InflightQueuePacked* inflight = nullptr, uint64_t features = 0);
    bool active() const { return desc_ != nullptr; }
    void deactivate();
    uint16_t size() const { return size_; }
    const shm::MemoryMap& mem() const { return *mem_; }
    std::shared_ptr<const shm::MemoryMap> mem_ref() const { return mem_; }

    // Complete chains the driver has made available and pop_head has not taken (at most the ring
    // size). An error is a broken guest (a chain that never ends within the ring).
    Result<uint16_t> pending();
    // Takes the next available chain; returns its buffer id (call only when pending() > 0).
    // Fails on a buffer id >= the queue size or one that is already in flight, and on more
    // descriptors in flight than the ring has slots.
    Result<uint16_t> pop_head();
    // Gives back the last n chains taken from the ring (not yet used; not recovered ones):
    // pop_head returns them again.
    void rewind(uint16_t n);
    // Recovered chains (inflight tracking) pop_head has not handed out yet.
    uint16_t resubmits_left() const { return static_cast<uint16_t>(resubmit_.size() - resubmit_pos_); }
    // Walks the chain of buffer `id` (taken, not yet used) into iov. Walk a chain before any
    // push_used that follows its pop_head: used descriptors are written at the used position,
    // which can be a slot of a chain still in flight (completions out of order), so its
    // descriptors are only in the ring until then. The devices walk right after taking.
    bool walk(uint16_t id, std::span<iovec> iov, Chain* out, ChainError* err) const;

    // Hands buffer `id` back with `len` bytes written (not visible to the driver yet).
    void push_used(uint16_t id, uint32_t len);
    // Makes everything pushed visible (the batch's first used descriptor's flags last, with
    // release). True if anything was published.
    bool publish_used();
    // After publish: does the driver want a used buffer notification?
    bool needs_notify();

    // Available buffer notifications (kicks): enable returns true if a chain arrived meanwhile.
    bool enable_notify();
    void disable_notify();

    // Net RX's wait for more buffers: a token for the frontier of available chains (it changes
    // when the driver adds one), and a kick request for the first chain past it. True if one is
    // already there.
    uint16_t avail_token();
    bool enable_notify_beyond(uint16_t token);
    uint16_t taken() const { return static_cast<uint16_t>(pops_); }

    PackedPos next_avail() const { return avail_; }
    PackedPos next_used() const { return used_; }
    // GET_VRING_BASE: both positions (what a successor resumes from).
    uint32_t base() const { return packed_base(avail_, used_); }
    uint16_t in_flight() const { return in_flight_; }

    // Live migration: every store into the ring or the device area is marked in `log` at its
    // guest-physical address; nullptr stops that.
    void set_used_log(const shm::DirtyLog* log) { used_log_ = log; }

private:
    struct Taken {
        uint16_t start = 0;  // ring index of the chain's first descriptor (recovered: in recovered_)
        uint16_t count = 0;  // its descriptors in the ring (0: not in flight)
        bool recovered = false;
        uint16_t head_entry = 0;  // inflight tracking: the chain's entries in the region
        uint16_t last_entry = 0;
    };
    struct Popped {
        PackedPos start;
        uint16_t id = 0;
    };
    // Is the descriptor at `p` available to the device in round `p.wrap`? (acquire)
    bool is_avail(PackedPos p) const;
    // The chain starting at p: its descriptor count and buffer id. Bounded by the ring size.
    Result<Taken> chain_at(PackedPos p, uint16_t* id) const;
    PackedPos advance(PackedPos p, uint32_t n) const;
    bool walk_indirect(const PackedDesc& d, std::span<iovec> iov, Chain* out, ChainError* err) const;
    void log_host(const void* p, size_t len) const;
    Status recover_inflight(uint64_t features);
    Status track_taken(Taken* t);
    void untrack(const Taken& t);

    std::shared_ptr<const shm::MemoryMap> mem_;
    uint16_t size_ = 0;
    bool event_idx_ = false;
    bool indirect_ = false;
    PackedDesc* desc_ = nullptr;
    EventSuppress* driver_event_ = nullptr;  // read only
    EventSuppress* device_event_ = nullptr;  // written only
    const shm::DirtyLog* used_log_ = nullptr;

    PackedPos avail_;             // next chain to take
    PackedPos scan_;              // pending() has counted the chains from avail_ up to here
    uint16_t scanned_ = 0;        // ... this many
    uint16_t scanned_descs_ = 0;  // ... made of this many descriptors
    PackedPos used_;              // next used descriptor to write
    std::vector<Taken> taken_;        // by buffer id
    std::vector<Popped> pop_order_;   // each chain taken, in order, for rewind (ring of size_)
    uint32_t pops_ = 0;
    uint16_t in_flight_ = 0;
    // The batch being pushed: its first used descriptor's flags are stored at publish.
    bool batch_open_ = false;
    uint16_t batch_first_ = 0;
    uint16_t batch_flags_ = 0;
    uint32_t advanced_ = 0;  // used descriptors written since the last needs_notify
    bool signalled_valid_ = false;
    uint32_t descs_in_flight_ = 0;  // ring slots the chains in flight occupy (<= size_)

    // Inflight tracking (see inflight.hpp).
    InflightQueuePacked* inflight_ = nullptr;
    uint64_t counter_ = 0;
    uint16_t free_head_ = 0;                // mirror of the region's free_head
    std::vector<uint16_t> batch_heads_;     // head entries completed since the last publish
    std::vector<PackedDesc> recovered_;     // copies of the recovered chains' descriptors
    std::vector<uint16_t> resubmit_;        // recovered buffer ids, oldest first
    size_t resubmit_pos_ = 0;
};

}  // namespace vhostd::virtio
