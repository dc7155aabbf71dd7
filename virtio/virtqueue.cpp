#include "virtio/virtqueue.hpp"

#include <algorithm>
#include <cstring>

#include "core/checked.hpp"

namespace vhostd::virtio {

namespace {

uint16_t load_acquire(uint16_t* p) { return std::atomic_ref<uint16_t>(*p).load(std::memory_order_acquire); }
uint16_t load_relaxed(uint16_t* p) { return std::atomic_ref<uint16_t>(*p).load(std::memory_order_relaxed); }
void store_release(uint16_t* p, uint16_t v) { std::atomic_ref<uint16_t>(*p).store(v, std::memory_order_release); }
void store_relaxed(uint16_t* p, uint16_t v) { std::atomic_ref<uint16_t>(*p).store(v, std::memory_order_relaxed); }

// virtio spec: notify if the new index passed event_idx since old.
bool need_event(uint16_t event_idx, uint16_t new_idx, uint16_t old) {
    return static_cast<uint16_t>(new_idx - event_idx - 1) < static_cast<uint16_t>(new_idx - old);
}

}  // namespace

const char* chain_error_name(ChainError e) {
    switch (e) {
        case ChainError::kNone: return "none";
        case ChainError::kLoop: return "descriptor loop / chain too long";
        case ChainError::kBadIndex: return "descriptor index out of range";
        case ChainError::kBadAddress: return "buffer outside guest memory";
        case ChainError::kTooManySegments: return "too many segments";
        case ChainError::kBadIndirect: return "invalid indirect descriptor";
        case ChainError::kOrder: return "readable descriptor after writable";
        case ChainError::kTooLong: return "chain longer than 4 GiB";
    }
    return "?";
}

Status SplitQueue::activate(std::shared_ptr<const shm::MemoryMap> mem, const QueueLayout& l, uint16_t last_avail,
                            bool event_idx, bool indirect, InflightQueue* inflight, uint64_t features) {
    desc_ = nullptr;
    inflight_ = nullptr;
    resubmit_.clear();
    resubmit_pos_ = 0;
    batch_.clear();
    if (!is_pow2(l.size) || l.size > kMaxQueueSize)
        return make_error(Errc::kInvalid, "queue size {} is not a power of two <= {}", l.size, kMaxQueueSize);
    if (l.desc_uva % 16 != 0 || l.avail_uva % 2 != 0 || l.used_uva % 4 != 0)
        return make_error(Errc::kInvalid, "misaligned ring addresses desc={:#x} avail={:#x} used={:#x}", l.desc_uva,
                          l.avail_uva, l.used_uva);
    auto* d = mem->uva_to_host(l.desc_uva, desc_table_bytes(l.size));
    auto* a = mem->uva_to_host(l.avail_uva, avail_ring_bytes(l.size));
    auto* u = mem->uva_to_host(l.used_uva, used_ring_bytes(l.size));
    if (d == nullptr || a == nullptr || u == nullptr)
        return make_error(Errc::kOutOfRange, "ring not inside guest memory desc={:#x} avail={:#x} used={:#x}",
                          l.desc_uva, l.avail_uva, l.used_uva);
    // The frontend's addresses being aligned is not enough: an odd mmap_offset or region address
    // can still put the ring at a misaligned host address, where atomic access is undefined.
    if (reinterpret_cast<uintptr_t>(d) % 16 != 0 || reinterpret_cast<uintptr_t>(a) % 2 != 0 ||
        reinterpret_cast<uintptr_t>(u) % 4 != 0)
        return make_error(Errc::kInvalid, "rings are misaligned in host memory (odd region offset?)");
    mem_ = std::move(mem);
    size_ = l.size;
    event_idx_ = event_idx;
    indirect_ = indirect;
    desc_ = reinterpret_cast<Desc*>(d);
    avail_flags_ = reinterpret_cast<uint16_t*>(a);
    avail_idx_ = reinterpret_cast<uint16_t*>(a + 2);
    avail_ring_ = reinterpret_cast<uint16_t*>(a + 4);
    used_event_ = reinterpret_cast<uint16_t*>(a + 4 + 2ull * l.size);
    used_flags_ = reinterpret_cast<uint16_t*>(u);
    used_idx_ptr_ = reinterpret_cast<uint16_t*>(u + 2);
    used_ring_ = reinterpret_cast<UsedElem*>(u + 4);
    avail_event_ = reinterpret_cast<uint16_t*>(u + 4 + 8ull * l.size);
    last_avail_ = last_avail;
    // The used index continues from what the guest can see (resume after GET_VRING_BASE,
    // or a backend restart): never rewind it.
    used_idx_ = load_acquire(used_idx_ptr_);
    published_idx_ = used_idx_;
    signalled_valid_ = false;
    notify_enabled_ = true;
    if (inflight != nullptr) {
        inflight_ = inflight;
        Status st = recover_inflight(&last_avail_, features);
        if (!st.ok()) {
            deactivate();
            return st;
        }
    }
    return ok_status();
}

namespace {
template <typename T>
T ld(const T& v) {
    return inflight_load(v);
}
template <typename T>
void st(T& v, T x) {
    inflight_store(v, x);
}
void step() { inflight_step(); }
}  // namespace

Status SplitQueue::recover_inflight(uint16_t* last_avail, uint64_t features) {
    InflightQueue& r = *inflight_;
    batch_.reserve(size_);
    uint16_t used = used_idx_;
    // The region comes from the frontend: every field is checked before use.
    if (ld(r.version) == 0) {
        // Fresh (or reset by the frontend): nothing to recover; start tracking.
        for (uint32_t i = 0; i < size_; ++i) {
            st(r.desc[i].inflight, uint8_t{0});
            st(r.desc[i].counter, uint64_t{0});
        }
        st(r.features, features);
        st(r.desc_num, size_);
        st(r.last_batch_head, uint16_t{0});
        st(r.used_idx, used);
        step();
        st(r.version, kInflightVersion);
        counter_ = 0;
        return ok_status();
    }
    if (ld(r.version) != kInflightVersion)
        return make_error(Errc::kInvalid, "inflight region version {} (expected {})", ld(r.version), kInflightVersion);
    if (ld(r.desc_num) != size_)
        return make_error(Errc::kInvalid, "inflight region for {} descriptors, queue has {}", ld(r.desc_num), size_);
    if (ld(r.features) & (1ull << 34))  // VIRTIO_F_RING_PACKED: the other layout
        return make_error(Errc::kInvalid, "inflight region was written for a packed ring");
    // A batch whose used->idx store happened but whose clears did not: clear it now.
    auto batch = static_cast<uint16_t>(used - ld(r.used_idx));
    if (batch > size_)
        return make_error(Errc::kInvalid, "inflight used_idx {} is {} behind the ring's {}", ld(r.used_idx), batch, used);
    uint16_t h = ld(r.last_batch_head);
    for (uint16_t i = 0; i < batch; ++i) {
        if (h >= size_) return make_error(Errc::kInvalid, "inflight batch list points at head {}", h);
        st(r.desc[h].inflight, uint8_t{0});
        h = ld(r.desc[h].next);
    }
    step();
    st(r.used_idx, used);
    // Everything still marked was taken from the avail ring and never completed.
    std::vector<std::pair<uint64_t, uint16_t>> pending;
    uint64_t max_counter = 0;
    for (uint16_t i = 0; i < size_; ++i) {
        if (ld(r.desc[i].inflight) == 0) continue;
        uint64_t c = ld(r.desc[i].counter);
        pending.emplace_back(c, i);
        max_counter = std::max(max_counter, c);
    }
    std::sort(pending.begin(), pending.end());
    resubmit_.reserve(pending.size());
    for (auto& [c, head] : pending) resubmit_.push_back(head);
    counter_ = max_counter + 1;
    *last_avail = static_cast<uint16_t>(used + pending.size());
    return ok_status();
}

void SplitQueue::track_popped(uint16_t head) {
    InflightDescState& d = inflight_->desc[head];
    st(d.counter, counter_++);
    step();
    st(d.inflight, uint8_t{1});
}

void SplitQueue::deactivate() {
    desc_ = nullptr;
    inflight_ = nullptr;
    resubmit_.clear();
    resubmit_pos_ = 0;
    batch_.clear();
    avail_flags_ = avail_idx_ = avail_ring_ = used_event_ = used_flags_ = used_idx_ptr_ = avail_event_ = nullptr;
    used_ring_ = nullptr;
    mem_.reset();
}

uint16_t SplitQueue::ring_used_idx() const { return load_acquire(used_idx_ptr_); }

Result<uint16_t> SplitQueue::pending() {
    uint16_t avail = load_acquire(avail_idx_);
    auto n = static_cast<uint16_t>(avail - last_avail_);
    if (n > size_)
        return make_error(Errc::kInvalid, "avail idx jumped by {} (last {} now {}) on a queue of {}", n, last_avail_,
                          avail, size_);
    // Recovered requests are at most size_ and come first; the caller's loop is still bounded.
    return static_cast<uint16_t>(std::min<uint32_t>(uint32_t{n} + resubmits_left(), 0xffff));
}

Result<uint16_t> SplitQueue::pop_head() {
    if (resubmit_pos_ < resubmit_.size()) return resubmit_[resubmit_pos_++];  // still marked in flight
    uint16_t head = load_relaxed(&avail_ring_[last_avail_ & (size_ - 1)]);
    if (head >= size_) return make_error(Errc::kInvalid, "avail ring head {} >= queue size {}", head, size_);
    if (inflight_ != nullptr) track_popped(head);
    ++last_avail_;
    // With EVENT_IDX and notifications on, tell the guest the next index that should kick us.
    if (event_idx_ && notify_enabled_) {
        store_release(avail_event_, last_avail_);
        log_used();
    }
    return head;
}

void SplitQueue::rewind(uint16_t n) {
    last_avail_ = static_cast<uint16_t>(last_avail_ - n);
    if (inflight_ != nullptr) {
        for (uint16_t i = 0; i < n; ++i) {
            uint16_t head = load_relaxed(&avail_ring_[static_cast<uint16_t>(last_avail_ + i) & (size_ - 1)]);
            if (head < size_) st(inflight_->desc[head].inflight, uint8_t{0});
        }
    }
    if (event_idx_ && notify_enabled_) {
        store_release(avail_event_, last_avail_);
        log_used();
    }
}

bool add_chain_buffer(const shm::MemoryMap& mem, uint64_t addr, uint32_t len, bool writable, std::span<iovec> iov,
                      Chain* out, ChainError* err) {
    if (!writable && out->n_writable > 0) return *err = ChainError::kOrder, false;
    uint64_t& total = writable ? out->writable_bytes : out->readable_bytes;
    auto sum = checked_add<uint64_t>(total, len);
    if (!sum || *sum + (writable ? out->readable_bytes : out->writable_bytes) > kMaxChainBytes)
        return *err = ChainError::kTooLong, false;
    total = *sum;
    size_t n = out->n_readable + out->n_writable;
    const size_t before = n;
    Status st = mem.gpa_to_iovecs(addr, len, iov, &n);
    if (!st.ok()) {
        *err = st.error().code == Errc::kBusy ? ChainError::kTooManySegments : ChainError::kBadAddress;
        return false;
    }
    (writable ? out->n_writable : out->n_readable) += n - before;
    return true;
}

bool SplitQueue::walk(uint16_t head, std::span<iovec> iov, Chain* out, ChainError* err) const {
    *out = Chain{};
    out->head = head;
    *err = ChainError::kNone;
    return walk_table(desc_, size_, head, iov, out, err, false);
}

bool SplitQueue::walk_table(const Desc* table, uint32_t table_size, uint16_t start, std::span<iovec> iov,
                            Chain* out, ChainError* err, bool is_indirect) const {
    uint32_t idx = start;
    // Budget: a chain can't have more descriptors than its table has entries.
    for (uint32_t budget = table_size;; --budget) {
        if (budget == 0) return *err = ChainError::kLoop, false;
        if (idx >= table_size) return *err = ChainError::kBadIndex, false;
        Desc d;
        std::memcpy(&d, &table[idx], sizeof(d));  // copy once, validate the copy

        if (d.flags & kDescFIndirect) {
            // Only one level, only from the ring's table, only when negotiated, never with NEXT.
            if (is_indirect || !indirect_ || (d.flags & kDescFNext) || d.len == 0 || d.len % sizeof(Desc) != 0 ||
                d.len / sizeof(Desc) > kMaxIndirect || out->n_readable + out->n_writable != 0)
                return *err = ChainError::kBadIndirect, false;
            const uint8_t* t = mem_->gpa_to_host(d.addr, d.len);
            if (t == nullptr) return *err = ChainError::kBadIndirect, false;  // must lie in one region
            return walk_table(reinterpret_cast<const Desc*>(t), d.len / sizeof(Desc), 0, iov, out, err, true);
        }

        if (!add_chain_buffer(*mem_, d.addr, d.len, (d.flags & kDescFWrite) != 0, iov, out, err)) return false;

        if (!(d.flags & kDescFNext)) return true;
        idx = d.next;
    }
}

void SplitQueue::push_used(uint16_t head, uint32_t len) {
    UsedElem e{head, len};
    std::memcpy(&used_ring_[used_idx_ & (size_ - 1)], &e, sizeof(e));
    ++used_idx_;
    if (inflight_ != nullptr && head < size_ && batch_.size() < size_) {
        // Link the batch (last -> first) for recovery; see inflight.hpp.
        if (!batch_.empty()) st(inflight_->desc[head].next, batch_.back());
        batch_.push_back(head);
    }
}

bool SplitQueue::publish_used() {
    if (used_idx_ == published_idx_) return false;
    if (inflight_ != nullptr && !batch_.empty()) {
        st(inflight_->last_batch_head, batch_.back());
        step();
        store_release(used_idx_ptr_, used_idx_);
        step();
        for (uint16_t h : batch_) st(inflight_->desc[h].inflight, uint8_t{0});
        step();
        st(inflight_->used_idx, used_idx_);
        batch_.clear();
    } else {
        store_release(used_idx_ptr_, used_idx_);
    }
    published_idx_ = used_idx_;
    log_used();
    return true;
}

bool SplitQueue::needs_notify() {
    // Order the used->idx store before reading the guest's suppression state.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (!event_idx_) return (load_relaxed(avail_flags_) & kAvailFNoInterrupt) == 0;
    uint16_t old = signalled_idx_;
    bool valid = signalled_valid_;
    signalled_idx_ = published_idx_;
    signalled_valid_ = true;
    if (!valid) return true;
    return need_event(load_relaxed(used_event_), published_idx_, old);
}

bool SplitQueue::enable_notify() { return enable_notify_beyond(last_avail_); }

bool SplitQueue::enable_notify_beyond(uint16_t seen) {
    notify_enabled_ = true;
    if (event_idx_) {
        // The guest kicks when its new idx passes avail_event: "seen" means the next publish.
        store_relaxed(avail_event_, seen);
    } else {
        store_relaxed(used_flags_, static_cast<uint16_t>(load_relaxed(used_flags_) & ~kUsedFNoNotify));
    }
    log_used();
    // The guest may have added buffers before it saw our flag: re-check after a full fence.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    return load_acquire(avail_idx_) != seen;
}

uint16_t SplitQueue::avail_idx() const { return load_acquire(avail_idx_); }

void SplitQueue::disable_notify() {
    notify_enabled_ = false;
    if (!event_idx_) {
        store_relaxed(used_flags_, static_cast<uint16_t>(load_relaxed(used_flags_) | kUsedFNoNotify));
    } else {
        // An avail_event just behind what we consumed: the guest's next publish does not cross
        // it, and it stays behind while we poll (a spurious kick once per 64K entries at most).
        store_relaxed(avail_event_, static_cast<uint16_t>(last_avail_ - 1));
    }
    log_used();
}

}  // namespace vhostd::virtio
