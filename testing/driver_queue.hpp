// Driver side of a virtio split virtqueue, as a guest driver (Linux virtio_ring.c) sees it,
// over memfd-backed "guest RAM" that can be shared with a vhost-user backend exactly like
// QEMU shares it. Used by tests (including hostile ones, via the raw API) and by bench/.
//
// Threading: a DriverQueue is single-threaded on the driver side (like one Linux vq under its
// lock); the backend under test runs concurrently in another process/thread, which is why the
// ring indices are accessed with std::atomic_ref and acquire/release ordering.
//
// Data path (add_chain/publish/kick_prepare/pop_used/enable_call) does not allocate after
// construction (the indirect-table pool is carved from guest memory once, on first use).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "core/result.hpp"
#include "core/unique_fd.hpp"
#include "testing/guest_ram.hpp"
#include "virtio/virtio_types.hpp"

namespace vhostd::testing {

struct DriverBuf {
    uint64_t gpa = 0;
    uint32_t len = 0;
    bool device_writable = false;
};

// Classic vring_need_event() from the virtio spec / Linux: should a notification be sent
// for an index moving from old_idx to new_idx when the other side asked for `event`?
constexpr bool vring_need_event(uint16_t event, uint16_t new_idx, uint16_t old_idx) {
    return static_cast<uint16_t>(new_idx - event - 1) < static_cast<uint16_t>(new_idx - old_idx);
}

class DriverQueue {
public:
    // Allocates and zeroes desc table (align 16), avail ring (align 2) and used ring (align 4)
    // in `mem`. size must be a power of two in [1, 32768]. Indirect chains (add_chain with
    // indirect=true) may hold up to indirect_max descriptors.
    static Result<std::unique_ptr<DriverQueue>> create(GuestRam& mem, uint16_t size, bool event_idx,
                                                       uint16_t indirect_max = 64);
    // Same, but with rings at caller-chosen gpas (each must lie inside one region and be aligned).
    static Result<std::unique_ptr<DriverQueue>> create_at(GuestRam& mem, uint16_t size, bool event_idx,
                                                          uint64_t desc_gpa, uint64_t avail_gpa,
                                                          uint64_t used_gpa, uint16_t indirect_max = 64);

    DriverQueue(const DriverQueue&) = delete;
    DriverQueue& operator=(const DriverQueue&) = delete;

    uint16_t size() const { return size_; }
    bool event_idx() const { return event_idx_; }
    GuestRam& memory() const { return mem_; }
    uint64_t desc_gpa() const { return desc_gpa_; }
    uint64_t avail_gpa() const { return avail_gpa_; }
    uint64_t used_gpa() const { return used_gpa_; }
    uint64_t desc_uva() const { return mem_.uva_of(desc_gpa_); }
    uint64_t avail_uva() const { return mem_.uva_of(avail_gpa_); }
    uint64_t used_uva() const { return mem_.uva_of(used_gpa_); }

    // ---- High-level API (what a driver does) ----

    // Writes the chain (or an indirect table + one INDIRECT ring descriptor) using free
    // descriptors and puts the head into the avail ring (not yet visible: see publish()).
    // Errors: empty chain, not enough free descriptors (kBusy), indirect chain too long,
    // queue broken.
    Result<uint16_t> add_chain(std::span<const DriverBuf> bufs, bool indirect = false);
    // Makes every chain added since the last publish() visible with one release store of avail->idx.
    void publish();
    // Full barrier, then: does the device want a kick for avail moving old_avail_idx -> published idx?
    // EVENT_IDX: vring_need_event(avail_event, new, old); otherwise !(used->flags & NO_NOTIFY).
    bool device_wants_kick(uint16_t old_avail_idx) const;
    // Linux virtqueue_kick_prepare(): device_wants_kick() for everything published since the
    // previous kick_prepare() call.
    bool kick_prepare();
    // Next completion in used-ring order (acquire on used->idx), freeing its descriptors.
    // nullopt if none, or if the device returned a bad id (then broken() is set).
    std::optional<virtio::UsedElem> pop_used();
    // Completions available without consuming them (acquire).
    bool has_used() const;
    // Used entries the device has published and pop_used() has not taken yet (a corrupt index
    // shows here as a large count; pop_used() still checks every entry).
    uint16_t used_ready() const;
    // publish(), then kick_prepare(); if the device wants a kick, writes 1 to the kick eventfd
    // (kick_fd < 0: no write). Returns whether a kick was wanted.
    Result<bool> publish_and_kick(int kick_fd);
    // pop_used(), or wait for the call eventfd (poll; drained when readable) until one arrives,
    // the queue breaks or `timeout` passes. Strict: it only re-checks the ring when the call fd
    // fires, so a device that fails to signal a completion makes this time out (missed-interrupt
    // detection). call_fd < 0 polls the used ring every 100 us instead.
    std::optional<virtio::UsedElem> wait_used(int call_fd, std::chrono::milliseconds timeout);
    // Enable/disable used-buffer notifications: VRING_AVAIL_F_NO_INTERRUPT without EVENT_IDX,
    // used_event (= last_used, or last_used-1 to disable) with it. Full barrier after enabling.
    void enable_call(bool enable);

    uint16_t num_free() const { return num_free_; }
    uint16_t next_avail() const { return avail_shadow_; }  // avail idx after the next publish()
    uint16_t last_used() const { return last_used_; }
    uint16_t descs_in_use() const { return static_cast<uint16_t>(size_ - num_free_); }
    bool broken() const { return broken_; }
    const char* broken_reason() const { return broken_reason_; }

    // Zeroes the rings and resets all driver state (as after a device reset). Keeps gpas.
    void reset();
    // Sets the driver's ring positions (e.g. to continue after SET_VRING_BASE n): next avail idx
    // and last used idx. Does not touch the rings or the free list.
    void set_positions(uint16_t next_avail, uint16_t last_used);

    // ---- Low-level API (hostile tests): raw ring access, no bookkeeping ----

    // Out-of-range descriptor indices (>= size) are rejected (return false / zero Desc).
    bool write_desc(uint16_t index, const virtio::Desc& d);
    virtio::Desc read_desc(uint16_t index) const;
    void write_avail_ring(uint16_t slot, uint16_t head);  // slot taken modulo size
    uint16_t read_avail_ring(uint16_t slot) const;
    void write_avail_idx(uint16_t idx);  // release store
    uint16_t read_avail_idx() const;
    void write_avail_flags(uint16_t flags);
    uint16_t read_avail_flags() const;
    void write_used_event(uint16_t v);  // avail->ring[size]
    uint16_t read_used_event() const;
    virtio::UsedElem read_used_elem(uint16_t slot) const;  // slot taken modulo size
    uint16_t read_used_idx() const;                        // acquire load
    uint16_t read_used_flags() const;
    uint16_t read_avail_event() const;  // used->ring[size]
    // Host views of the three rings.
    uint8_t* desc_host() const { return desc_; }
    uint8_t* avail_host() const { return avail_; }
    uint8_t* used_host() const { return used_; }

private:
    DriverQueue(GuestRam& mem, uint16_t size, bool event_idx, uint16_t indirect_max);
    Status init_rings(uint64_t desc_gpa, uint64_t avail_gpa, uint64_t used_gpa);
    Result<uint64_t> indirect_table(uint16_t head);

    uint16_t* avail_idx_ptr() const { return reinterpret_cast<uint16_t*>(avail_ + 2); }
    uint16_t* avail_flags_ptr() const { return reinterpret_cast<uint16_t*>(avail_); }
    uint16_t* avail_ring_ptr(uint16_t slot) const {
        return reinterpret_cast<uint16_t*>(avail_ + 4 + 2u * slot);
    }
    uint16_t* used_event_ptr() const { return reinterpret_cast<uint16_t*>(avail_ + 4 + 2u * size_); }
    uint16_t* used_flags_ptr() const { return reinterpret_cast<uint16_t*>(used_); }
    uint16_t* used_idx_ptr() const { return reinterpret_cast<uint16_t*>(used_ + 2); }
    uint16_t* avail_event_ptr() const { return reinterpret_cast<uint16_t*>(used_ + 4 + 8u * size_); }

    struct Chain {
        uint16_t ndescs = 0;  // ring descriptors used (1 for indirect)
        uint16_t last = 0;    // last ring descriptor of the chain
        bool in_flight = false;
    };

    GuestRam& mem_;
    uint16_t size_;
    bool event_idx_;
    uint16_t indirect_max_;
    uint64_t desc_gpa_ = 0, avail_gpa_ = 0, used_gpa_ = 0;
    uint8_t* desc_ = nullptr;
    uint8_t* avail_ = nullptr;
    uint8_t* used_ = nullptr;
    uint64_t indirect_pool_gpa_ = 0;
    uint8_t* indirect_pool_ = nullptr;  // size_ tables of indirect_max_ descriptors, by head

    std::vector<uint16_t> free_next_;  // host-side free list links (device cannot corrupt them)
    std::vector<Chain> chains_;        // by head
    uint16_t free_head_ = 0;
    uint16_t num_free_ = 0;
    uint16_t avail_shadow_ = 0;     // driver's next avail idx
    uint16_t avail_published_ = 0;  // last value stored to avail->idx by publish()
    uint16_t kick_old_ = 0;         // published idx at the previous kick_prepare()
    uint16_t last_used_ = 0;
    bool call_enabled_ = true;
    bool broken_ = false;
    const char* broken_reason_ = "";
};

}  // namespace vhostd::testing
