#include "virtio/packed_queue.hpp"

#include <algorithm>
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

// The inflight region's accessors (inflight.hpp), short.
template <typename T>
T ld(const T& v) {
    return inflight_load(v);
}
template <typename T>
void st(T& v, T x) {
    inflight_store(v, x);
}
void step() { inflight_step(); }

constexpr uint16_t kAvailUsedMask = kPackedDescFAvail | kPackedDescFUsed;
// The AVAIL/USED bits of a descriptor the driver made available in round `wrap`.
constexpr uint16_t avail_flags(bool wrap) { return wrap ? kPackedDescFAvail : kPackedDescFUsed; }

}  // namespace

Status PackedQueue::activate(std::shared_ptr<const shm::MemoryMap> mem, const QueueLayout& l, uint32_t base,
                             bool event_idx, bool indirect, InflightQueuePacked* inflight, uint64_t features) {
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
    descs_in_flight_ = 0;
    if (inflight != nullptr) {
        inflight_ = inflight;
        Status st = recover_inflight(features);
        if (!st.ok()) {
            deactivate();
            return st;
        }
    }
    return ok_status();
}

void PackedQueue::deactivate() {
    desc_ = nullptr;
    driver_event_ = device_event_ = nullptr;
    inflight_ = nullptr;
    batch_heads_.clear();
    recovered_.clear();
    resubmit_.clear();
    resubmit_pos_ = 0;
    mem_.reset();
}

// ---- inflight tracking -------------------------------------------------------------------------
//
// The spec's algorithm (vhost-user "Inflight I/O tracking", packed virtqueue):
//   take a chain:   copy each descriptor into the entry at free_head and move free_head along
//                   the list; the head entry gets num, last, counter and then inflight = 1;
//                   commit old_free_head = free_head.
//   complete:       per used buffer, splice its entries back (last.next = free_head,
//                   free_head = head) and move used_idx/used_wrap_counter; after the batch's
//                   first used descriptor is visible (its flags, stored last), clear the heads'
//                   inflight flags and commit old_free_head/old_used_idx/old_used_wrap_counter.
//   restart:        if used_idx moved past the committed one, the batch is kept when the driver
//                   can already see it (the descriptor at old_used_idx is no longer available in
//                   round old_used_wrap_counter), else rolled back; every entry on the free list
//                   is not in flight; the heads still marked are resubmitted by counter.
// The free list ends at an index >= desc_num.

Status PackedQueue::recover_inflight(uint64_t features) {
    InflightQueuePacked& r = *inflight_;
    batch_heads_.reserve(size_);
    if (ld(r.version) == 0) {
        // Fresh (or reset by the frontend): nothing to recover; start tracking.
        for (uint16_t i = 0; i < size_; ++i) {
            st(r.desc[i].inflight, uint8_t{0});
            st(r.desc[i].next, static_cast<uint16_t>(i + 1));
        }
        st(r.features, features);
        st(r.desc_num, size_);
        st(r.free_head, uint16_t{0});
        st(r.old_free_head, uint16_t{0});
        st(r.used_idx, used_.idx);
        st(r.old_used_idx, used_.idx);
        st(r.used_wrap_counter, uint8_t{used_.wrap});
        st(r.old_used_wrap_counter, uint8_t{used_.wrap});
        step();
        st(r.version, kInflightVersion);
        free_head_ = 0;
        counter_ = 0;
        return ok_status();
    }
    // Everything below comes from the frontend's memory: checked before use, loops bounded.
    if (ld(r.version) != kInflightVersion)
        return make_error(Errc::kInvalid, "inflight region version {} (expected {})", ld(r.version), kInflightVersion);
    if (ld(r.desc_num) != size_)
        return make_error(Errc::kInvalid, "inflight region for {} descriptors, queue has {}", ld(r.desc_num), size_);
    if ((ld(r.features) & kFRingPacked) == 0)
        return make_error(Errc::kInvalid, "inflight region was written for a split ring");
    uint16_t free_head = ld(r.free_head), used_idx = ld(r.used_idx);
    uint8_t used_wrap = ld(r.used_wrap_counter);
    const uint16_t old_used_idx = ld(r.old_used_idx);
    const uint8_t old_used_wrap = ld(r.old_used_wrap_counter);
    if (old_used_idx >= size_ || old_used_wrap > 1 || used_idx >= size_ || used_wrap > 1)
        return make_error(Errc::kInvalid, "inflight region: used position {}/{} (committed {}/{}) on a ring of {}",
                          used_idx, used_wrap, old_used_idx, old_used_wrap, size_);
    if (used_idx != old_used_idx || used_wrap != old_used_wrap) {
        // A completion batch was under way. Visible to the driver (its first used descriptor's
        // flags were stored): keep it. Otherwise roll it back: its requests run again.
        const uint16_t f = load_acquire(&desc_[old_used_idx].flags) & kAvailUsedMask;
        if (f != avail_flags(old_used_wrap != 0)) {
            st(r.old_free_head, free_head);
            st(r.old_used_idx, used_idx);
            st(r.old_used_wrap_counter, used_wrap);
        }
    }
    step();
    free_head = ld(r.old_free_head);
    used_idx = ld(r.old_used_idx);
    used_wrap = ld(r.old_used_wrap_counter);
    st(r.free_head, free_head);
    st(r.used_idx, used_idx);
    st(r.used_wrap_counter, used_wrap);
    step();
    // Entries on the free list are not in flight (a take or a completion cut short).
    uint16_t e = free_head;
    for (uint32_t n = 0; e < size_; ++n) {
        if (n >= size_) return make_error(Errc::kInvalid, "inflight region: the free list has a cycle");
        st(r.desc[e].inflight, uint8_t{0});
        e = ld(r.desc[e].next);
    }
    // The heads still marked: copy their chains out (validated) and order them by counter.
    struct Rec {
        uint64_t counter;
        uint16_t head;
    };
    std::vector<Rec> heads;
    for (uint16_t i = 0; i < size_; ++i)
        if (ld(r.desc[i].inflight) != 0) heads.push_back({ld(r.desc[i].counter), i});
    std::sort(heads.begin(), heads.end(), [](const Rec& a, const Rec& b) { return a.counter < b.counter; });
    recovered_.clear();
    recovered_.reserve(size_);
    resubmit_.reserve(heads.size());
    uint64_t max_counter = 0;
    uint32_t slots = 0;
    for (const Rec& h : heads) {
        const uint16_t num = ld(r.desc[h.head].num);
        if (num == 0 || num > size_ || slots + num > size_)
            return make_error(Errc::kInvalid, "inflight region: chain at entry {} of {} descriptors ({} already)",
                              h.head, num, slots);
        const auto start = static_cast<uint16_t>(recovered_.size());
        uint16_t cur = h.head;
        for (uint16_t k = 0; k < num; ++k) {
            if (cur >= size_) return make_error(Errc::kInvalid, "inflight region: chain entry {} out of range", cur);
            const InflightDescPacked& d = r.desc[cur];
            recovered_.push_back(PackedDesc{ld(d.addr), ld(d.len), ld(d.id), ld(d.flags)});
            if (k + 1 < num) cur = ld(d.next);
        }
        const uint16_t id = recovered_.back().id;  // a chain's buffer id is in its last descriptor
        if (id >= size_ || taken_[id].count != 0)
            return make_error(Errc::kInvalid, "inflight region: buffer id {} out of range or recovered twice", id);
        taken_[id] = Taken{start, num, true, h.head, cur};
        resubmit_.push_back(id);
        slots += num;
        max_counter = std::max(max_counter, h.counter);
    }
    // Both positions from the region (a crashed backend never answered GET_VRING_BASE, so the
    // frontend's base is stale): the used one committed there, the avail one past every slot
    // the chains in flight occupy.
    used_ = PackedPos{used_idx, used_wrap != 0};
    avail_ = scan_ = advance(used_, slots);
    scanned_ = scanned_descs_ = 0;
    in_flight_ = static_cast<uint16_t>(resubmit_.size());
    descs_in_flight_ = slots;
    free_head_ = free_head;
    counter_ = heads.empty() ? 0 : max_counter + 1;
    return ok_status();
}

Status PackedQueue::track_taken(Taken* t) {
    InflightQueuePacked& r = *inflight_;
    const uint16_t head = free_head_;
    uint16_t e = head, last = head;
    for (uint16_t k = 0; k < t->count; ++k) {
        // Cannot run out while the region is intact (at most size_ slots in flight); the
        // frontend can break it, and then only tracking stops.
        if (e >= size_) return make_error(Errc::kInvalid, "inflight region: free list exhausted or broken");
        PackedDesc d;
        std::memcpy(&d, &desc_[(uint32_t{t->start} + k) % size_], sizeof(d));
        InflightDescPacked& x = r.desc[e];
        st(x.addr, d.addr);
        st(x.len, d.len);
        st(x.id, d.id);
        st(x.flags, d.flags);
        last = e;
        e = ld(x.next);
    }
    InflightDescPacked& h = r.desc[head];
    st(h.num, t->count);
    st(h.last, last);
    st(h.counter, counter_++);
    step();
    st(h.inflight, uint8_t{1});
    step();
    free_head_ = e;
    st(r.free_head, e);
    st(r.old_free_head, e);
    t->head_entry = head;
    t->last_entry = last;
    return ok_status();
}

// A taken chain goes back without a used descriptor (rewind): its entries return to the free
// list before its head stops being in flight.
void PackedQueue::untrack(const Taken& t) {
    InflightQueuePacked& r = *inflight_;
    st(r.desc[t.last_entry].next, free_head_);
    free_head_ = t.head_entry;
    st(r.free_head, free_head_);
    st(r.old_free_head, free_head_);
    step();
    st(r.desc[t.head_entry].inflight, uint8_t{0});
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
    // Recovered chains come first (at most size_ of them).
    return static_cast<uint16_t>(std::min<uint32_t>(uint32_t{scanned_} + resubmits_left(), 0xffff));
}

Result<uint16_t> PackedQueue::pop_head() {
    if (resubmit_pos_ < resubmit_.size()) return resubmit_[resubmit_pos_++];  // still in flight
    if (!is_avail(avail_)) return make_error(Errc::kInvalid, "packed ring: no chain available at {}", avail_.idx);
    uint16_t id = 0;
    VHOSTD_ASSIGN_OR_RETURN(Taken t, chain_at(avail_, &id));
    if (id >= size_) return make_error(Errc::kInvalid, "packed ring: buffer id {} >= queue size {}", id, size_);
    if (taken_[id].count != 0) return make_error(Errc::kInvalid, "packed ring: buffer id {} made available again while in flight", id);
    // A driver that makes slots available again before they were used would have us hold more
    // descriptors than the ring has.
    if (descs_in_flight_ + t.count > size_)
        return make_error(Errc::kInvalid, "packed ring: {} descriptors in flight and {} more on a ring of {}",
                          descs_in_flight_, t.count, size_);
    if (inflight_ != nullptr) VHOSTD_TRY(track_taken(&t));
    descs_in_flight_ += t.count;
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
        if (inflight_ != nullptr) untrack(taken_[p.id]);
        descs_in_flight_ -= taken_[p.id].count;
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
        PackedDesc d;
        if (t.recovered)
            d = recovered_[uint32_t{t.start} + n];  // copied out and bounded at recovery
        else
            std::memcpy(&d, &desc_[(uint32_t{t.start} + n) % size_], sizeof(d));
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
    const Taken& t = taken_[id];
    used_ = advance(used_, t.count);
    if (inflight_ != nullptr) {
        InflightQueuePacked& r = *inflight_;
        st(r.desc[t.last_entry].next, free_head_);
        free_head_ = t.head_entry;
        st(r.free_head, free_head_);
        st(r.used_idx, used_.idx);
        st(r.used_wrap_counter, uint8_t{used_.wrap});
        // At most size_ chains are in flight, so a batch fits the reserved size_ (no allocation).
        if (batch_heads_.size() < size_) batch_heads_.push_back(t.head_entry);
    }
    advanced_ += t.count;
    descs_in_flight_ -= t.count;
    taken_[id] = Taken{};
    --in_flight_;
}

bool PackedQueue::publish_used() {
    if (!batch_open_) return false;
    step();
    store_release(&desc_[batch_first_].flags, batch_flags_);
    log_host(&desc_[batch_first_], sizeof(PackedDesc));
    batch_open_ = false;
    if (inflight_ != nullptr && !batch_heads_.empty()) {
        InflightQueuePacked& r = *inflight_;
        step();
        for (uint16_t h : batch_heads_) st(r.desc[h].inflight, uint8_t{0});
        step();
        st(r.old_free_head, free_head_);
        st(r.old_used_idx, used_.idx);
        st(r.old_used_wrap_counter, uint8_t{used_.wrap});
        batch_heads_.clear();
    }
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
    return resubmits_left() > 0 || scanned_ > 0 || is_avail(scan_);
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
