#include "testing/packed_driver_queue.hpp"

#include <poll.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <thread>

namespace vhostd::testing {

using virtio::EventSuppress;
using virtio::PackedDesc;
using virtio::PackedPos;

namespace {
uint16_t ld_acq(const uint16_t* p) { return std::atomic_ref<uint16_t>(*const_cast<uint16_t*>(p)).load(std::memory_order_acquire); }
void st_rel(uint16_t* p, uint16_t v) { std::atomic_ref<uint16_t>(*p).store(v, std::memory_order_release); }
}  // namespace

Result<std::unique_ptr<PackedDriverQueue>> PackedDriverQueue::create(GuestRam& mem, uint16_t size, bool event_idx,
                                                                     uint16_t indirect_max) {
    if (size == 0 || size > 32768) return make_error(Errc::kInvalid, "packed queue size {}", size);
    std::unique_ptr<PackedDriverQueue> q(new PackedDriverQueue(mem, size, event_idx, indirect_max));
    VHOSTD_ASSIGN_OR_RETURN(q->desc_gpa_, mem.alloc(16ull * size, 16));
    VHOSTD_ASSIGN_OR_RETURN(q->driver_gpa_, mem.alloc(4, 4));
    VHOSTD_ASSIGN_OR_RETURN(q->device_gpa_, mem.alloc(4, 4));
    q->desc_ = reinterpret_cast<PackedDesc*>(mem.host(q->desc_gpa_, 16ull * size));
    q->driver_ = reinterpret_cast<EventSuppress*>(mem.host(q->driver_gpa_, 4));
    q->device_ = reinterpret_cast<EventSuppress*>(mem.host(q->device_gpa_, 4));
    if (indirect_max > 0) {
        const uint64_t bytes = uint64_t{size} * indirect_max * sizeof(PackedDesc);
        VHOSTD_ASSIGN_OR_RETURN(q->indirect_gpa_, mem.alloc(bytes, 16));
        q->indirect_ = mem.host(q->indirect_gpa_, bytes);
    }
    q->count_.assign(size, 0);
    for (uint32_t i = size; i-- > 0;) q->free_ids_.push_back(static_cast<uint16_t>(i));
    return q;
}

PackedPos PackedDriverQueue::advance(PackedPos p, uint32_t n) const {
    uint32_t i = p.idx + n;
    bool wrap = p.wrap;
    while (i >= size_) {
        i -= size_;
        wrap = !wrap;
    }
    return {static_cast<uint16_t>(i), wrap};
}

uint16_t PackedDriverQueue::avail_flags(bool writable, bool next) const {
    return static_cast<uint16_t>((writable ? virtio::kDescFWrite : 0) | (next ? virtio::kDescFNext : 0) |
                                 (avail_.wrap ? virtio::kPackedDescFAvail : virtio::kPackedDescFUsed));
}

Result<uint16_t> PackedDriverQueue::add_chain(std::span<const DriverBuf> bufs, bool indirect) {
    if (broken_) return make_error(Errc::kState, "queue broken: {}", broken_reason_);
    if (bufs.empty()) return make_error(Errc::kInvalid, "empty chain");
    const uint16_t slots = indirect ? 1 : static_cast<uint16_t>(bufs.size());
    if (indirect && (indirect_max_ == 0 || bufs.size() > indirect_max_))
        return make_error(Errc::kInvalid, "indirect chain of {} > {}", bufs.size(), indirect_max_);
    if (free_ids_.empty() || uint32_t{slots_used_} + slots > size_)
        return make_error(Errc::kBusy, "chain of {} slots, {} free", slots, size_ - slots_used_);
    const uint16_t id = free_ids_.back();
    free_ids_.pop_back();
    const uint16_t first = avail_.idx;
    uint16_t first_flags = 0;
    if (indirect) {
        uint8_t* t = indirect_ + uint64_t{id} * indirect_max_ * sizeof(PackedDesc);
        for (size_t i = 0; i < bufs.size(); ++i) {
            PackedDesc e{bufs[i].gpa, bufs[i].len, 0, static_cast<uint16_t>(bufs[i].device_writable ? virtio::kDescFWrite : 0)};
            std::memcpy(t + i * sizeof(PackedDesc), &e, sizeof(e));
        }
        PackedDesc d{indirect_gpa_ + uint64_t{id} * indirect_max_ * sizeof(PackedDesc),
                     static_cast<uint32_t>(bufs.size() * sizeof(PackedDesc)), id, 0};
        first_flags = static_cast<uint16_t>(avail_flags(false, false) | virtio::kDescFIndirect);
        std::memcpy(&desc_[avail_.idx], &d, sizeof(d) - sizeof(uint16_t));  // flags at publish
        avail_ = advance(avail_, 1);
    } else {
        for (size_t i = 0; i < bufs.size(); ++i) {
            const bool last = i + 1 == bufs.size();
            PackedDesc d{bufs[i].gpa, bufs[i].len, static_cast<uint16_t>(last ? id : 0),
                         avail_flags(bufs[i].device_writable, !last)};
            if (i == 0) {
                first_flags = d.flags;
                std::memcpy(&desc_[avail_.idx], &d, sizeof(d) - sizeof(uint16_t));
            } else {
                write_desc(avail_.idx, d);
            }
            avail_ = advance(avail_, 1);
        }
    }
    pending_.push_back({first, first_flags});
    count_[id] = slots;
    slots_used_ = static_cast<uint16_t>(slots_used_ + slots);
    ++in_use_;
    since_kick_ += slots;
    return id;
}

void PackedDriverQueue::publish() {
    for (const Pending& p : pending_) st_rel(&desc_[p.idx].flags, p.flags);
    pending_.clear();
}

bool PackedDriverQueue::kick_prepare() {
    std::atomic_thread_fence(std::memory_order_seq_cst);
    const uint32_t added = since_kick_;
    since_kick_ = 0;
    const uint16_t flags = ld_acq(&device_->flags) & 3;
    if (flags == virtio::kRingEventDisable) return false;
    if (flags != virtio::kRingEventDesc || !event_idx_ || added >= size_) return true;
    const uint16_t off_wrap = ld_acq(&device_->off_wrap);
    auto event = static_cast<uint16_t>(off_wrap & 0x7fff);
    if (((off_wrap >> 15) != 0) != avail_.wrap) event = static_cast<uint16_t>(event - size_);
    return static_cast<uint16_t>(avail_.idx - event - 1) < added;
}

Result<bool> PackedDriverQueue::publish_and_kick(int kick_fd) {
    publish();
    if (!kick_prepare()) return false;
    if (kick_fd >= 0) {
        uint64_t one = 1;
        if (::write(kick_fd, &one, sizeof(one)) != sizeof(one)) return sys_error("kick");
    }
    return true;
}

std::optional<virtio::UsedElem> PackedDriverQueue::pop_used() {
    if (broken_) return std::nullopt;
    const uint16_t f = ld_acq(&desc_[used_.idx].flags);
    const bool avail = (f & virtio::kPackedDescFAvail) != 0, used = (f & virtio::kPackedDescFUsed) != 0;
    if (used != used_.wrap || avail != used) return std::nullopt;
    PackedDesc d;
    std::memcpy(&d, &desc_[used_.idx], sizeof(d));
    if (d.id >= size_ || count_[d.id] == 0) {
        broken_ = true;
        broken_reason_ = "device returned a buffer id that is not in flight";
        return std::nullopt;
    }
    used_ = advance(used_, count_[d.id]);
    slots_used_ = static_cast<uint16_t>(slots_used_ - count_[d.id]);
    count_[d.id] = 0;
    free_ids_.push_back(d.id);
    --in_use_;
    return virtio::UsedElem{d.id, d.len};
}

bool PackedDriverQueue::has_used() const {
    const uint16_t f = ld_acq(&desc_[used_.idx].flags);
    const bool avail = (f & virtio::kPackedDescFAvail) != 0, used = (f & virtio::kPackedDescFUsed) != 0;
    return used == used_.wrap && avail == used;
}

uint16_t PackedDriverQueue::used_ready() const {
    uint16_t n = 0;
    PackedPos p = used_;
    while (n < in_use_) {  // bounded by the buffers in flight
        const uint16_t f = ld_acq(&desc_[p.idx].flags);
        const bool avail = (f & virtio::kPackedDescFAvail) != 0, used = (f & virtio::kPackedDescFUsed) != 0;
        if (used != p.wrap || avail != used) break;
        const uint16_t id = std::atomic_ref<uint16_t>(desc_[p.idx].id).load(std::memory_order_relaxed);
        if (id >= size_ || count_[id] == 0) break;  // pop_used reports it
        p = advance(p, count_[id]);
        ++n;
    }
    return n;
}

std::optional<virtio::UsedElem> PackedDriverQueue::wait_used(int call_fd, std::chrono::milliseconds timeout) {
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
        pollfd p{call_fd, POLLIN, 0};
        if (::poll(&p, 1, static_cast<int>(left.count())) > 0 && (p.revents & POLLIN)) {
            uint64_t v;
            [[maybe_unused]] ssize_t n = ::read(call_fd, &v, sizeof(v));
        }
    }
}

void PackedDriverQueue::enable_call(bool enable) {
    if (enable && event_idx_) {
        std::atomic_ref<uint16_t>(driver_->off_wrap)
            .store(static_cast<uint16_t>(used_.idx | (used_.wrap ? 0x8000 : 0)), std::memory_order_relaxed);
        st_rel(&driver_->flags, virtio::kRingEventDesc);
    } else {
        st_rel(&driver_->flags, enable ? virtio::kRingEventEnable : virtio::kRingEventDisable);
    }
    std::atomic_thread_fence(std::memory_order_seq_cst);
}

PackedDesc PackedDriverQueue::read_desc(uint16_t i) const {
    PackedDesc d{};
    if (i < size_) std::memcpy(&d, &desc_[i], sizeof(d));
    return d;
}

void PackedDriverQueue::write_desc(uint16_t i, const PackedDesc& d) {
    if (i >= size_) return;
    std::memcpy(&desc_[i], &d, sizeof(d) - sizeof(uint16_t));
    st_rel(&desc_[i].flags, d.flags);
}

EventSuppress PackedDriverQueue::read_device_event() const {
    EventSuppress e{};
    e.off_wrap = ld_acq(&device_->off_wrap);
    e.flags = ld_acq(&device_->flags);
    return e;
}

void PackedDriverQueue::set_positions(PackedPos avail, PackedPos used) {
    avail_ = avail;
    used_ = used;
}

}  // namespace vhostd::testing
