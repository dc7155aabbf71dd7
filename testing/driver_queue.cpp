#include "testing/driver_queue.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <thread>
#include <utility>

#include "core/checked.hpp"

namespace vhostd::testing {

// ---------------------------------------------------------------------------------------------
// DriverQueue

namespace {

uint16_t load_acquire(uint16_t* p) { return std::atomic_ref<uint16_t>(*p).load(std::memory_order_acquire); }
uint16_t load_relaxed(uint16_t* p) { return std::atomic_ref<uint16_t>(*p).load(std::memory_order_relaxed); }
void store_release(uint16_t* p, uint16_t v) { std::atomic_ref<uint16_t>(*p).store(v, std::memory_order_release); }
void store_relaxed(uint16_t* p, uint16_t v) { std::atomic_ref<uint16_t>(*p).store(v, std::memory_order_relaxed); }

}  // namespace

DriverQueue::DriverQueue(GuestRam& mem, uint16_t size, bool event_idx, uint16_t indirect_max)
    : mem_(mem), size_(size), event_idx_(event_idx), indirect_max_(indirect_max), free_next_(size), chains_(size) {}

Result<std::unique_ptr<DriverQueue>> DriverQueue::create(GuestRam& mem, uint16_t size, bool event_idx,
                                                         uint16_t indirect_max) {
    if (!is_pow2(size) || size > 32768) return make_error(Errc::kInvalid, "queue size {} not a power of two <= 32768", size);
    VHOSTD_ASSIGN_OR_RETURN(uint64_t desc, mem.alloc(virtio::desc_table_bytes(size), 16));
    VHOSTD_ASSIGN_OR_RETURN(uint64_t avail, mem.alloc(virtio::avail_ring_bytes(size), 2));
    VHOSTD_ASSIGN_OR_RETURN(uint64_t used, mem.alloc(virtio::used_ring_bytes(size), 4));
    return create_at(mem, size, event_idx, desc, avail, used, indirect_max);
}

Result<std::unique_ptr<DriverQueue>> DriverQueue::create_at(GuestRam& mem, uint16_t size, bool event_idx,
                                                            uint64_t desc_gpa, uint64_t avail_gpa, uint64_t used_gpa,
                                                            uint16_t indirect_max) {
    if (!is_pow2(size) || size > 32768) return make_error(Errc::kInvalid, "queue size {} not a power of two <= 32768", size);
    std::unique_ptr<DriverQueue> q(new DriverQueue(mem, size, event_idx, indirect_max));
    VHOSTD_TRY(q->init_rings(desc_gpa, avail_gpa, used_gpa));
    return q;
}

Status DriverQueue::init_rings(uint64_t desc_gpa, uint64_t avail_gpa, uint64_t used_gpa) {
    if ((desc_gpa & 15) || (avail_gpa & 1) || (used_gpa & 3))
        return make_error(Errc::kInvalid, "misaligned ring gpas {:#x}/{:#x}/{:#x}", desc_gpa, avail_gpa, used_gpa);
    desc_ = mem_.host(desc_gpa, virtio::desc_table_bytes(size_));
    avail_ = mem_.host(avail_gpa, virtio::avail_ring_bytes(size_));
    used_ = mem_.host(used_gpa, virtio::used_ring_bytes(size_));
    if (!desc_ || !avail_ || !used_) return make_error(Errc::kOutOfRange, "ring not inside one guest region");
    desc_gpa_ = desc_gpa;
    avail_gpa_ = avail_gpa;
    used_gpa_ = used_gpa;
    reset();
    return ok_status();
}

void DriverQueue::reset() {
    std::memset(desc_, 0, virtio::desc_table_bytes(size_));
    std::memset(avail_, 0, virtio::avail_ring_bytes(size_));
    std::memset(used_, 0, virtio::used_ring_bytes(size_));
    for (uint32_t i = 0; i < size_; ++i) {
        free_next_[i] = static_cast<uint16_t>(i + 1);
        chains_[i] = Chain{};
    }
    free_head_ = 0;
    num_free_ = size_;
    avail_shadow_ = avail_published_ = kick_old_ = last_used_ = 0;
    call_enabled_ = true;
    broken_ = false;
    broken_reason_ = "";
    std::atomic_thread_fence(std::memory_order_seq_cst);
}

void DriverQueue::set_positions(uint16_t next_avail, uint16_t last_used) {
    avail_shadow_ = avail_published_ = kick_old_ = next_avail;
    last_used_ = last_used;
}

Result<uint64_t> DriverQueue::indirect_table(uint16_t head) {
    if (indirect_pool_ == nullptr) {
        uint64_t bytes = static_cast<uint64_t>(size_) * indirect_max_ * sizeof(virtio::Desc);
        VHOSTD_ASSIGN_OR_RETURN(indirect_pool_gpa_, mem_.alloc(bytes, 16));
        indirect_pool_ = mem_.host(indirect_pool_gpa_, bytes);
    }
    return indirect_pool_gpa_ + static_cast<uint64_t>(head) * indirect_max_ * sizeof(virtio::Desc);
}

Result<uint16_t> DriverQueue::add_chain(std::span<const DriverBuf> bufs, bool indirect) {
    if (broken_) return make_error(Errc::kState, "queue broken: {}", broken_reason_);
    if (bufs.empty()) return make_error(Errc::kInvalid, "empty chain");
    if (indirect) {
        if (indirect_max_ == 0 || bufs.size() > indirect_max_)
            return make_error(Errc::kInvalid, "indirect chain of {} > {} descriptors", bufs.size(), indirect_max_);
        if (num_free_ < 1) return make_error(Errc::kBusy, "no free descriptors");
    } else if (bufs.size() > num_free_) {
        return make_error(Errc::kBusy, "chain of {} descriptors, {} free", bufs.size(), num_free_);
    }

    uint16_t head = free_head_;
    if (indirect) {
        VHOSTD_ASSIGN_OR_RETURN(uint64_t table_gpa, indirect_table(head));
        uint8_t* table = indirect_pool_ + (table_gpa - indirect_pool_gpa_);
        for (size_t i = 0; i < bufs.size(); ++i) {
            virtio::Desc d{bufs[i].gpa, bufs[i].len,
                           static_cast<uint16_t>((bufs[i].device_writable ? virtio::kDescFWrite : 0) |
                                                 (i + 1 < bufs.size() ? virtio::kDescFNext : 0)),
                           static_cast<uint16_t>(i + 1 < bufs.size() ? i + 1 : 0)};
            std::memcpy(table + i * sizeof(virtio::Desc), &d, sizeof(d));
        }
        virtio::Desc rd{table_gpa, static_cast<uint32_t>(bufs.size() * sizeof(virtio::Desc)), virtio::kDescFIndirect, 0};
        std::memcpy(desc_ + head * sizeof(virtio::Desc), &rd, sizeof(rd));
        free_head_ = free_next_[head];
        chains_[head] = Chain{1, head, true};
        num_free_ = static_cast<uint16_t>(num_free_ - 1);
    } else {
        uint16_t cur = head;
        uint16_t last = head;
        for (size_t i = 0; i < bufs.size(); ++i) {
            uint16_t next = free_next_[cur];
            bool more = i + 1 < bufs.size();
            virtio::Desc d{bufs[i].gpa, bufs[i].len,
                           static_cast<uint16_t>((bufs[i].device_writable ? virtio::kDescFWrite : 0) |
                                                 (more ? virtio::kDescFNext : 0)),
                           more ? next : static_cast<uint16_t>(0)};
            std::memcpy(desc_ + cur * sizeof(virtio::Desc), &d, sizeof(d));
            last = cur;
            cur = next;
        }
        free_head_ = cur;
        chains_[head] = Chain{static_cast<uint16_t>(bufs.size()), last, true};
        num_free_ = static_cast<uint16_t>(num_free_ - bufs.size());
    }
    // The avail slot is a plain store; publish()'s release store of avail->idx orders it.
    store_relaxed(avail_ring_ptr(static_cast<uint16_t>(avail_shadow_ & (size_ - 1))), head);
    avail_shadow_ = static_cast<uint16_t>(avail_shadow_ + 1);
    return head;
}

void DriverQueue::publish() {
    if (avail_shadow_ == avail_published_) return;
    store_release(avail_idx_ptr(), avail_shadow_);
    avail_published_ = avail_shadow_;
}

bool DriverQueue::device_wants_kick(uint16_t old_avail_idx) const {
    // Order our avail->idx store before reading the device's suppression state (Linux virtio_mb).
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (event_idx_) return vring_need_event(load_relaxed(avail_event_ptr()), avail_published_, old_avail_idx);
    return (load_relaxed(used_flags_ptr()) & virtio::kUsedFNoNotify) == 0;
}

bool DriverQueue::kick_prepare() {
    uint16_t old = kick_old_;
    kick_old_ = avail_published_;
    if (old == avail_published_) return false;  // nothing new since the last kick decision
    return device_wants_kick(old);
}

bool DriverQueue::has_used() const { return load_acquire(used_idx_ptr()) != last_used_; }

uint16_t DriverQueue::used_ready() const {
    return static_cast<uint16_t>(load_acquire(used_idx_ptr()) - last_used_);
}

std::optional<virtio::UsedElem> DriverQueue::pop_used() {
    if (broken_) return std::nullopt;
    uint16_t used_idx = load_acquire(used_idx_ptr());
    if (used_idx == last_used_) return std::nullopt;
    if (static_cast<uint16_t>(used_idx - last_used_) > size_) {
        broken_ = true;
        broken_reason_ = "used->idx moved by more than the queue size";
        return std::nullopt;
    }
    virtio::UsedElem e{};
    std::memcpy(&e, used_ + 4 + 8u * (last_used_ & (size_ - 1)), sizeof(e));
    if (e.id >= size_ || !chains_[e.id].in_flight) {
        broken_ = true;
        broken_reason_ = "device returned an id that is not an in-flight head";
        return std::nullopt;
    }
    // Return the chain to the free list (host-side links: never trust desc.next from memory).
    Chain& c = chains_[e.id];
    if (c.ndescs == 1) {
        free_next_[e.id] = free_head_;
    } else {
        // Descriptors of a direct chain were taken in free-list order; relink head..last.
        free_next_[c.last] = free_head_;
    }
    free_head_ = static_cast<uint16_t>(e.id);
    num_free_ = static_cast<uint16_t>(num_free_ + c.ndescs);
    c.in_flight = false;
    last_used_ = static_cast<uint16_t>(last_used_ + 1);
    // As Linux: when callbacks are on, ask for an interrupt at the next entry.
    if (event_idx_ && call_enabled_) {
        store_relaxed(used_event_ptr(), last_used_);
        std::atomic_thread_fence(std::memory_order_seq_cst);
    }
    return e;
}

Result<bool> DriverQueue::publish_and_kick(int kick_fd) {
    publish();
    if (!kick_prepare()) return false;
    if (kick_fd >= 0) {
        uint64_t one = 1;
        for (;;) {
            ssize_t n = ::write(kick_fd, &one, sizeof(one));
            if (n == sizeof(one)) break;
            if (n < 0 && errno == EINTR) continue;
            // EAGAIN: the eventfd counter is saturated, a kick is pending anyway.
            if (n < 0 && errno == EAGAIN) break;
            return sys_error("write kick eventfd");
        }
    }
    return true;
}

std::optional<virtio::UsedElem> DriverQueue::wait_used(int call_fd, std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        if (auto u = pop_used()) return u;
        if (broken_) return std::nullopt;
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) return std::nullopt;
        if (call_fd < 0) {
            std::this_thread::sleep_for(std::chrono::microseconds(100));
            continue;
        }
        // Strict: sleep until the device signals. A completion the device forgets to signal is
        // only found if it was already in the ring, so missed interrupts show up as timeouts.
        pollfd p{call_fd, POLLIN, 0};
        int r = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count(), INT32_MAX)));
        if (r > 0 && (p.revents & POLLIN)) {
            uint64_t v;
            ssize_t n = ::read(call_fd, &v, sizeof(v));
            (void)n;
        }
    }
}

void DriverQueue::enable_call(bool enable) {
    call_enabled_ = enable;
    if (event_idx_) {
        // Disabled: an event index just behind us is only reached after a full 16-bit wrap.
        store_relaxed(used_event_ptr(), enable ? last_used_ : static_cast<uint16_t>(last_used_ - 1));
    } else {
        uint16_t f = load_relaxed(avail_flags_ptr());
        f = enable ? static_cast<uint16_t>(f & ~virtio::kAvailFNoInterrupt)
                   : static_cast<uint16_t>(f | virtio::kAvailFNoInterrupt);
        store_relaxed(avail_flags_ptr(), f);
    }
    std::atomic_thread_fence(std::memory_order_seq_cst);
}

// ---- raw access ----

bool DriverQueue::write_desc(uint16_t index, const virtio::Desc& d) {
    if (index >= size_) return false;
    std::memcpy(desc_ + index * sizeof(virtio::Desc), &d, sizeof(d));
    return true;
}

virtio::Desc DriverQueue::read_desc(uint16_t index) const {
    virtio::Desc d{};
    if (index < size_) std::memcpy(&d, desc_ + index * sizeof(virtio::Desc), sizeof(d));
    return d;
}

void DriverQueue::write_avail_ring(uint16_t slot, uint16_t head) {
    store_relaxed(avail_ring_ptr(static_cast<uint16_t>(slot & (size_ - 1))), head);
}
uint16_t DriverQueue::read_avail_ring(uint16_t slot) const {
    return load_relaxed(avail_ring_ptr(static_cast<uint16_t>(slot & (size_ - 1))));
}
void DriverQueue::write_avail_idx(uint16_t idx) { store_release(avail_idx_ptr(), idx); }
uint16_t DriverQueue::read_avail_idx() const { return load_relaxed(avail_idx_ptr()); }
void DriverQueue::write_avail_flags(uint16_t flags) { store_release(avail_flags_ptr(), flags); }
uint16_t DriverQueue::read_avail_flags() const { return load_relaxed(avail_flags_ptr()); }
void DriverQueue::write_used_event(uint16_t v) { store_release(used_event_ptr(), v); }
uint16_t DriverQueue::read_used_event() const { return load_relaxed(used_event_ptr()); }
virtio::UsedElem DriverQueue::read_used_elem(uint16_t slot) const {
    virtio::UsedElem e{};
    std::memcpy(&e, used_ + 4 + 8u * (slot & (size_ - 1)), sizeof(e));
    return e;
}
uint16_t DriverQueue::read_used_idx() const { return load_acquire(used_idx_ptr()); }
uint16_t DriverQueue::read_used_flags() const { return load_relaxed(used_flags_ptr()); }
uint16_t DriverQueue::read_avail_event() const { return load_acquire(avail_event_ptr()); }

}  // namespace vhostd::testing
