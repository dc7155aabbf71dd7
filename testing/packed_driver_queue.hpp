// Driver side of a packed virtqueue (VIRTIO_F_RING_PACKED), as Linux's virtio_ring.c drives it,
// over memfd "guest RAM" shared with the device under test: for the device-side PackedQueue's
// tests, including hostile ones (the raw API writes any descriptor).
//
// Single-threaded on the driver side; the device runs concurrently, so descriptor flags and the
// event suppression areas are accessed with std::atomic_ref and acquire/release.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "core/result.hpp"
#include "testing/driver_queue.hpp"
#include "testing/guest_ram.hpp"
#include "virtio/packed_queue.hpp"

namespace vhostd::testing {

class PackedDriverQueue {
public:
    // Allocates and zeroes the descriptor ring (align 16) and both event suppression areas
    // (align 4) in `mem`. size in [1, 32768].
    static Result<std::unique_ptr<PackedDriverQueue>> create(GuestRam& mem, uint16_t size, bool event_idx,
                                                             uint16_t indirect_max = 64);

    uint16_t size() const { return size_; }
    uint64_t desc_gpa() const { return desc_gpa_; }
    uint64_t driver_gpa() const { return driver_gpa_; }
    uint64_t device_gpa() const { return device_gpa_; }
    // The device's view (QueueLayout): desc, driver area (as "avail"), device area (as "used").
    virtio::QueueLayout layout() const {
        return {size_, mem_.uva_of(desc_gpa_), mem_.uva_of(driver_gpa_), mem_.uva_of(device_gpa_)};
    }

    // Writes the chain (or one INDIRECT descriptor and its table) at the next free ring slots
    // with a free buffer id; all flags but the first descriptor's (published by publish()).
    // kBusy if the ring or the ids are exhausted.
    Result<uint16_t> add_chain(std::span<const DriverBuf> bufs, bool indirect = false);
    // Makes every chain added since the last publish available, in order (each chain's first
    // descriptor's flags with release).
    void publish();
    // Does the device want a kick for what was published since the last kick_prepare()?
    bool kick_prepare();
    Result<bool> publish_and_kick(int kick_fd);

    // Next used buffer in ring order; nullopt if none (or the device wrote a bad id: broken()).
    std::optional<virtio::UsedElem> pop_used();
    // Is a used buffer ready at the next used position? How many in a row (without taking them)?
    bool has_used() const;
    uint16_t used_ready() const;
    // pop_used(), or wait for the call eventfd (strict: the ring is re-checked only when it fires).
    std::optional<virtio::UsedElem> wait_used(int call_fd, std::chrono::milliseconds timeout);
    // Used buffer notifications on/off (RING_EVENT_FLAGS_DESC at the next used slot with
    // EVENT_IDX, else ENABLE/DISABLE).
    void enable_call(bool enable);

    virtio::PackedPos next_avail() const { return avail_; }
    virtio::PackedPos next_used() const { return used_; }
    uint16_t ids_in_use() const { return in_use_; }
    bool broken() const { return broken_; }
    const char* broken_reason() const { return broken_reason_; }

    // ---- raw access (hostile tests) ----
    virtio::PackedDesc read_desc(uint16_t i) const;
    void write_desc(uint16_t i, const virtio::PackedDesc& d);  // flags last, with release
    virtio::EventSuppress read_device_event() const;
    // Sets the driver's ring position (as after SET_VRING_BASE) without touching the ring.
    void set_positions(virtio::PackedPos avail, virtio::PackedPos used);

private:
    PackedDriverQueue(GuestRam& mem, uint16_t size, bool event_idx, uint16_t indirect_max)
        : mem_(mem), size_(size), event_idx_(event_idx), indirect_max_(indirect_max) {}
    virtio::PackedPos advance(virtio::PackedPos p, uint32_t n) const;
    uint16_t avail_flags(bool writable, bool next) const;

    GuestRam& mem_;
    uint16_t size_;
    bool event_idx_;
    uint16_t indirect_max_;
    uint64_t desc_gpa_ = 0, driver_gpa_ = 0, device_gpa_ = 0, indirect_gpa_ = 0;
    virtio::PackedDesc* desc_ = nullptr;
    virtio::EventSuppress* driver_ = nullptr;
    virtio::EventSuppress* device_ = nullptr;
    uint8_t* indirect_ = nullptr;
    virtio::PackedPos avail_, used_;
    std::vector<uint16_t> free_ids_;
    std::vector<uint16_t> count_;  // ring slots of each id in flight
    uint16_t in_use_ = 0;
    uint16_t slots_used_ = 0;  // ring slots held by chains in flight
    struct Pending {
        uint16_t idx, flags;
    };
    std::vector<Pending> pending_;
    uint32_t since_kick_ = 0;  // slots made available since the last kick_prepare
    bool broken_ = false;
    const char* broken_reason_ = "";
};

}  // namespace vhostd::testing
