#include "virtio/packed_queue.hpp"

#include <atomic>
#include <cstring>

#include "core/checked.hpp"

namespace vhostd::virtio {

namespace {

uint16_t load_acquire(const uint16_t* p) {
    return std::atomic_ref<uint16_t>(*const_cast<uint16_t*>(p)).load(std::memory_order_acquire);
}
uint16_t load_relaxed(const uint16_t* p) {
    return std::atomic_ref<uint16_t>(*const_cast<uint16_t*>(p)).load(std::memory_order_relaxed);
}
void store_release(uint16_t* p, uint16_t v) { std::atomic_ref<uint16_t>(*p).store(v, std::memory_order_release); }
void store_relaxed(uint16_t* p, uint16_t v) { std::atomic_ref<uint16_t>(*p).store(v, std::memory_order_relaxed); }

}  // namespace

Status PackedQueue::activate(std::shared_ptr<const shm::MemoryMap> mem, const QueueLayout& l, uint32_t base,
                             bool event_idx, bool indirect) {
    deactivate();
    if (l.size == 0 || l.size > kMaxQueueSize)
        return make_error(Errc::kInvalid, "packed queue size {} is not 1..{}", l.size, kMaxQueueSize);
    if (l.desc_uva % 16 != 0 || l.avail_uva % 4 != 0 || l.used_uva % 4 != 0)
        return make_error(Errc::kInvalid, "misaligned packed ring addresses desc={:#x} driver={:#x} device={:#x}",
                          l.desc_uva, l.avail_uva, l.used_uva);
    auto* d = mem->uva_to_host(l.desc_uva, 16ull * l.size);
    auto* drv = mem->uva_to_host(l.avail_uva, sizeof(EventSuppress));
    auto* dev = mem->uva_to_host(l.used_uva, sizeof(EventSuppress));
    if (d == nullptr || drv == nullptr || dev == nullptr)
        return make_error(Errc::kOutOfRange, "packed ring not inside guest memory desc={:#x} driver={:#x} device={:#x}",
                          l.desc_uva, l.avail_uva, l.used_uva);
    if (reinterpret_cast<uintptr_t>(d) % 16 != 0 || reinterpret_cast<uintptr_t>(drv) % 4 != 0 ||
        reinterpret_cast<uintptr_t>(dev) % 4 != 0)
        return make_error(Errc::kInvalid, "packed ring is misaligned in host memory (odd region offset?)");
    const PackedPos avail{static_cast<uint16_t>(base & 0x7fff), ((base >> 15) & 1) != 0};
    const PackedPos used{static_cast<uint16_t>((base >> 16) & 0x7fff), ((base >> 31) & 1) != 0};
    if (avail.idx >= l.size || used.idx >= l.size)
        return make_error(Errc::kInvalid, "packed ring base {:#x}: index past the ring of {}", base, l.size);
    mem_ = std::move(mem);
    size_ = l.size;
    event_idx_ = event_idx;
    indirect_ = indirect;
    desc_ = reinterpret_cast<PackedDesc*>(d);
    driver_event_ = reinterpret_cast<EventSuppress*>(drv);
    device_event_ = reinterpret_cast<EventSuppress*>(dev);
    avail_ = scan_ = avail;
    scanned_ = 0;
    scanned_descs_ = 0;
    used_ = used;
    taken_.assign(size_, Taken{});
    pop_order_.assign(size_, Popped{});
    pops_ = 0;
    in_flight_ = 0;
    batch_open_ = false;
    advanced_ = 0;
    signalled_valid_ = false;
    return ok_status();
}

void PackedQueue::deactivate() {
    desc_ = nullptr;
    driver_event_ = device_event_ = nullptr;
    mem_.reset();
}

PackedPos PackedQueue::advance(PackedPos p, uint32_t n) const {
    uint32_t i = uint32_t{p.idx} + n % size_;
    bool wrap = p.wrap;
    if (((n / size_) & 1) != 0) wrap = !wrap;
    if (i >= size_) {
        i -= size_;
        wrap = !wrap;
    }
    return PackedPos{static_cast<uint16_t>(i), wrap};
}

bool PackedQueue::is_avail(PackedPos p) const {
    const uint16_t f = load_acquire(&desc_[p.idx].flags);
    const bool avail = (f & kPackedDescFAvail) != 0;
    const bool used = (f & kPackedDescFUsed) != 0;
    return avail == p.wrap && used != p.wrap;
}

Result<PackedQueue::Taken> PackedQueue::chain_at(PackedPos p, uint16_t* id) const {
    // A chain never has more descriptors than the ring.
    for (uint32_t n = 0; n < size_; ++n) {
        const PackedPos q = advance(p, n);
        if (n > 0 && !is_avail(q))
            return make_error(Errc::kInvalid, "packed ring: descriptor {} of a chain at {} is not available", q.idx, p.idx);
        PackedDesc d;
        std::memcpy(&d, &desc_[q.idx], sizeof(d));
        if (!(d.flags & kDescFNext)) {
            *id = d.id;
            return Taken{p.idx, static_cast<uint16_t>(n + 1)};
        }
    }
    return make_error(Errc::kInvalid, "packed ring: the chain at {} does not end within the ring of {}", p.idx, size_);
}

Result<uint16_t> PackedQueue::pending() {
    // Count complete chains from the scan cursor on, without passing a full ring.
    while (scanned_descs_ < size_ && is_avail(scan_)) {
        uint16_t id = 0;
        VHOSTD_ASSIGN_OR_RETURN(Taken t, chain_at(scan_, &id));
        if (uint32_t{scanned_descs_} + t.count > size_)
            return make_error(Errc::kInvalid, "packed ring: available chains exceed the ring of {}", size_);
        scan_ = advance(scan_, t.count);
        ++scanned_;
        scanned_descs_ = static_cast<uint16_t>(scanned_descs_ + t.count);
    }
    return scanned_;
}

Result<uint16_t> PackedQueue::pop_head() {
    if (!is_avail(avail_)) return make_error(Errc::kInvalid, "packed ring: no chain available at {}", avail_.idx);
    uint16_t id = 0;
    VHOSTD_ASSIGN_OR_RETURN(Taken t, chain_at(avail_, &id));
    if (id >= size_) return make_error(Errc::kInvalid, "packed ring: buffer id {} >= queue size {}", id, size_);
    if (taken_[id].count != 0) return make_error(Errc::kInvalid, "packed ring: buffer id {} made available again while in flight", id);
    taken_[id] = t;
    pop_order_[pops_ % size_] = Popped{avail_, id};
    ++pops_;
    ++in_flight_;
    avail_ = advance(avail_, t.count);
    if (scanned_ > 0 && scanned_descs_ >= t.count) {
        --scanned_;
        scanned_descs_ = static_cast<uint16_t>(scanned_descs_ - t.count);
    } else {
        scanned_ = 0;  // the driver rewrote what pending() counted: count again from here
        scanned_descs_ = 0;
    }
    if (scanned_ == 0) scan_ = avail_;
    return id;
}

void PackedQueue::rewind(uint16_t n) {
    n = static_cast<uint16_t>(std::min<uint32_t>({n, pops_, in_flight_}));
    for (uint16_t k = 0; k < n; ++k) {
        const Popped& p = pop_order_[(pops_ - 1) % size_];
        avail_ = p.start;
        taken_[p.id] = Taken{};
        --pops_;
        --in_flight_;
    }
    scan_ = avail_;
    scanned_ = 0;
    scanned_descs_ = 0;
}

bool PackedQueue::walk_indirect(const PackedDesc& d, std::span<iovec> iov, Chain* out, ChainError* err) const {
    if (!indirect_ || (d.flags & kDescFNext) || d.len == 0 || d.len % sizeof(PackedDesc) != 0 ||
        d.len / sizeof(PackedDesc) > kMaxIndirect)
        return *err = ChainError::kBadIndirect, false;
    const uint8_t* t = mem_->gpa_to_host(d.addr, d.len);
    if (t == nullptr) return *err = ChainError::kBadIndirect, false;  // must lie in one region
    for (uint32_t i = 0; i < d.len / sizeof(PackedDesc); ++i) {
        PackedDesc e;
        std::memcpy(&e, t + i * sizeof(PackedDesc), sizeof(e));  // copy once, validate the copy
        // In a table only WRITE means anything (the spec: the rest is reserved and ignored).
        if (!add_chain_buffer(*mem_, e.addr, e.len, (e.flags & kDescFWrite) != 0, iov, out, err)) return false;
    }
    return true;
}

bool PackedQueue::walk(uint16_t id, std::span<iovec> iov, Chain* out, ChainError* err) const {
    *out = Chain{};
    out->head = id;
    *err = ChainError::kNone;
    if (id >= size_ || taken_[id].count == 0) return *err = ChainError::kBadIndex, false;
    const Taken& t = taken_[id];
    for (uint32_t n = 0; n < t.count; ++n) {
        const uint32_t i = (uint32_t{t.start} + n) % size_;
        PackedDesc d;
        std::memcpy(&d, &desc_[i], sizeof(d));
        if (d.flags & kDescFIndirect) {
            // Only alone: never in a NEXT-linked list.
            if (t.count != 1) return *err = ChainError::kBadIndirect, false;
            return walk_indirect(d, iov, out, err);
        }
        if (!add_chain_buffer(*mem_, d.addr, d.len, (d.flags & kDescFWrite) != 0, iov, out, err)) return false;
    }
    return true;
}

void PackedQueue::log_host(const void* p, size_t len) const {
    if (used_log_ == nullptr) return;
    if (auto gpa = mem_->host_to_gpa(p, len)) used_log_->mark(*gpa, len);
}

void PackedQueue::push_used(uint16_t id, uint32_t len) {
    if (id >= size_ || taken_[id].count == 0) return;  // not ours to hand back (a device bug, not the guest's)
    PackedDesc& d = desc_[used_.idx];
    std::atomic_ref<uint16_t>(d.id).store(id, std::memory_order_relaxed);
    std::atomic_ref<uint32_t>(d.len).store(len, std::memory_order_relaxed);
    const uint16_t flags = static_cast<uint16_t>((len != 0 ? kDescFWrite : 0) |
                                                 (used_.wrap ? (kPackedDescFAvail | kPackedDescFUsed) : 0));
    if (!batch_open_) {
        // The batch's first descriptor becomes used last (publish_used): the driver never sees
        // a later one before it.
        batch_open_ = true;
        batch_first_ = used_.idx;
        batch_flags_ = flags;
    } else {
        store_release(&d.flags, flags);
    }
    log_host(&d, sizeof(d));
    used_ = advance(used_, taken_[id].count);
    advanced_ += taken_[id].count;
    taken_[id] = Taken{};
    --in_flight_;
}

bool PackedQueue::publish_used() {
    if (!batch_open_) return false;
    store_release(&desc_[batch_first_].flags, batch_flags_);
    log_host(&desc_[batch_first_], sizeof(PackedDesc));
    batch_open_ = false;
    return true;
}

bool PackedQueue::needs_notify() {
    // Order the flags stores before reading the driver's suppression state.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    const uint16_t flags = load_relaxed(&driver_event_->flags) & 3;
    const uint32_t advanced = advanced_;
    const bool valid = signalled_valid_;
    advanced_ = 0;
    signalled_valid_ = true;
    if (flags == kRingEventDisable) return false;
    if (flags != kRingEventDesc || !event_idx_ || !valid || advanced >= size_) return true;
    // Notify if the descriptor the driver named lies among those used since the last
    // notification, [new - advanced, new), in ring order (offsets of the previous round count
    // as negative).
    const uint16_t off_wrap = load_relaxed(&driver_event_->off_wrap);
    auto event = static_cast<uint16_t>(off_wrap & 0x7fff);
    if (((off_wrap >> 15) != 0) != used_.wrap) event = static_cast<uint16_t>(event - size_);
    const uint16_t now = used_.idx;
    return static_cast<uint16_t>(now - event - 1) < advanced;
}

bool PackedQueue::enable_notify() {
    if (event_idx_) {
        store_relaxed(&device_event_->off_wrap, static_cast<uint16_t>(avail_.idx | (avail_.wrap ? 0x8000 : 0)));
        store_relaxed(&device_event_->flags, kRingEventDesc);
    } else {
        store_relaxed(&device_event_->flags, kRingEventEnable);
    }
    log_host(device_event_, sizeof(EventSuppress));
    // The driver may have made a chain available before it saw our flags: check after a full fence.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    return scanned_ > 0 || is_avail(scan_);
}

uint16_t PackedQueue::avail_token() {
    (void)pending();  // moves the frontier; a broken ring shows up in the caller's next pending()
    return static_cast<uint16_t>(scan_.idx | (scan_.wrap ? 0x8000 : 0));
}

bool PackedQueue::enable_notify_beyond(uint16_t token) {
    const PackedPos at{static_cast<uint16_t>(token & 0x7fff), (token & 0x8000) != 0};
    if (at.idx >= size_) return enable_notify();
    if (event_idx_) {
        store_relaxed(&device_event_->off_wrap, token);
        store_relaxed(&device_event_->flags, kRingEventDesc);
    } else {
        store_relaxed(&device_event_->flags, kRingEventEnable);
    }
    log_host(device_event_, sizeof(EventSuppress));
    std::atomic_thread_fence(std::memory_order_seq_cst);
    return is_avail(at);
}

void PackedQueue::disable_notify() {
    store_relaxed(&device_event_->flags, kRingEventDisable);
    log_host(device_event_, sizeof(EventSuppress));
}

}  // namespace vhostd::virtio
