#include "virtio/net_device.hpp"

#include <sys/uio.h>

#include <bit>
#include <cstring>
#include <type_traits>

#include "core/log.hpp"
#include "virtio/iov.hpp"
#include "virtio/packed_queue.hpp"
#include "virtio/queue_worker.hpp"

static_assert(std::endian::native == std::endian::little, "virtio-net headers are little-endian: port the header code");

namespace vhostd::virtio {

namespace {

// iovecs one backend receive/send may take (the kernel's UIO_MAXIOV: a tap's readv/writev).
constexpr size_t kMaxIov = 1024;
// Frames per reactor pass and queue, so that one busy queue cannot starve the others.
constexpr uint32_t kRxBudget = 64;
constexpr uint32_t kTxBudget = 256;

}  // namespace

backends::NetOffloads guest_offloads(uint64_t f) {
    // Without GUEST_CSUM the guest wants fully checksummed frames, and GSO frames always need
    // partial-checksum support, so nothing else may be enabled either.
    backends::NetOffloads o;
    if (!(f & net::kFGuestCsum)) return o;
    o.csum = true;
    o.tso4 = (f & net::kFGuestTso4) != 0;
    o.tso6 = (f & net::kFGuestTso6) != 0;
    o.tso_ecn = (f & net::kFGuestEcn) != 0 && (o.tso4 || o.tso6);  // ECN alone means nothing
    o.ufo = (f & net::kFGuestUfo) != 0;
    return o;
}

const char* check_tx_header(net::Hdr& h, uint32_t hdr_bytes, uint64_t frame_len, uint64_t f) {
    if (hdr_bytes == sizeof(net::Hdr)) h.num_buffers = 0;  // meaningless on TX
    // DATA_VALID is for the device to set on RX; other bits are undefined. The host side sees
    // only what we understand.
    h.flags &= net::kHdrFNeedsCsum;
    if (h.flags & net::kHdrFNeedsCsum) {
        if (!(f & net::kFCsum)) return "partial checksum without CSUM";
        if (uint64_t{h.csum_start} + h.csum_offset + 2 > frame_len) return "checksum field outside the frame";
    }
    uint8_t gso = h.gso_type & ~net::kGsoEcn;
    if (gso == net::kGsoNone) {
        if (h.gso_type & net::kGsoEcn) return "ECN flag without GSO";
        return nullptr;
    }
    uint64_t need = 0;
    switch (gso) {
        case net::kGsoTcpv4: need = net::kFHostTso4; break;
        case net::kGsoTcpv6: need = net::kFHostTso6; break;
        case net::kGsoUdp: need = net::kFHostUfo; break;
        default: return "unknown GSO type";
    }
    if (!(f & need)) return "GSO type not negotiated";
    if ((h.gso_type & net::kGsoEcn) && !(f & net::kFHostEcn)) return "GSO ECN not negotiated";
    if (h.gso_size == 0) return "GSO with gso_size 0";
    if (!(h.flags & net::kHdrFNeedsCsum)) return "GSO frame without a partial checksum";
    return nullptr;
}

// ---------------------------------------------------------------------------------------------
// What both directions of a queue pair share: the device, the header size and the backend
// channel (RX or TX) of the pair's backend queue, whose armed wake-up must be cancelled (and
// completed) before the queue may stop. The channel is opened on the reactor when the queue
// starts and closed when it stops (a memory swap keeps it).
template <class Channel>
class NetQueue : public QueueWorker {
protected:
    NetQueue(Reactor& r, uint32_t index, NetDevice& dev, NetDirCounters& stats)
        : QueueWorker(r, index), dev_(dev), stats_(stats) {}

    Status start_common(const QueueStart& s) {
        hdr_ = net::hdr_size(s.features);
        if constexpr (std::is_same_v<Channel, backends::NetRxChannel>) {
            VHOSTD_ASSIGN_OR_RETURN(chan_, dev_.backend().open_rx(index() / 2, reactor()));
        } else {
            VHOSTD_ASSIGN_OR_RETURN(chan_, dev_.backend().open_tx(index() / 2, reactor()));
        }
        chan_->set_waker(&reactor(), this);  // a parked queue waiting for the backend
        return ok_status();
    }
    void stop_common() { chan_.reset(); }  // only after inflight() reached zero
    uint32_t inflight() const override { return chan_ != nullptr && chan_->armed() ? 1 : 0; }
    // The backend's wake-up is an event source like a kick (its completion ends a nap), not a
    // request.
    bool requests_in_flight() const override { return false; }
    // Waiting for the backend is fine only while its wake-up is armed.
    bool device_can_park() const override { return chan_ == nullptr || chan_->ready() || chan_->armed(); }
    void cancel_device_io() override {
        if (chan_ != nullptr) chan_->cancel();
    }
    bool poll_device() override {
        if (stopping()) cancel_device_io();  // retried here if the SQ was full at stop time
        return false;
    }

    NetDevice& dev_;
    NetDirCounters& stats_;
    std::unique_ptr<Channel> chan_;
    uint32_t hdr_ = sizeof(net::Hdr);
};

// ---------------------------------------------------------------------------------------------
// RX: host -> guest.
//
// The backend gives no frame length before the read, so the read goes straight into guest
// buffers only when the chains we hold can take the largest frame it may produce (a mergeable
// guest keeps its ring full, so this is the normal case: no copy of ours). With fewer buffers,
// the frame is read into a bounce buffer and copied out once the guest has room for it (frames
// stay in order, nothing is dropped). No buffers at all: the backend is not read (back-pressure).
class NetRxQueue final : public NetQueue<backends::NetRxChannel> {
public:
    NetRxQueue(Reactor& r, uint32_t index, NetDevice& dev, NetPairCounters& stats)
        : NetQueue(r, index, dev, stats.rx) {}

private:
    struct Held {  // a chain taken from the avail ring and walked, not used yet
        uint16_t head;
        uint32_t iov_first;
        uint32_t iov_count;
        uint32_t bytes;
    };
    static constexpr uint32_t kIovCap = 2 * kMaxIov;

    Status on_start(const QueueStart& s) override {
        VHOSTD_TRY(start_common(s));
        mergeable_ = (s.features & net::kFMrgRxbuf) != 0;
        guest_csum_ = (s.features & net::kFGuestCsum) != 0;
        bool gso = (s.features & (net::kFGuestTso4 | net::kFGuestTso6 | net::kFGuestUfo)) != 0;
        max_frame_ = hdr_ + (gso ? net::kMaxGsoFrame : dev_.mtu() + net::kEthOverhead);
        held_ = std::make_unique<Held[]>(s.layout.size);
        iov_ = std::make_unique<iovec[]>(kIovCap);
        bounce_ = std::make_unique<uint8_t[]>(kBounceBytes);
        bounce_len_ = 0;
        waiting_ = false;
        return ok_status();
    }
    void on_stop() override {
        held_.reset();
        iov_.reset();
        if (bounce_len_ != 0) stats_.dropped.add();  // a frame read but never delivered
        bounce_.reset();
        stop_common();
    }
    // Idle (may sleep) while waiting for the backend or for guest buffers. Frames still in the
    // backend are not ours to drain on a stop.
    bool device_idle() const override { return stopping() || !chan_->ready() || waiting_; }
    bool arm_guest_notify() override { return waiting_ ? vq_.enable_notify_beyond(wait_idx_) : vq_.enable_notify(); }

    bool process() override {
        if (waiting_) {
            if (vq_.avail_idx() == wait_idx_) return false;  // still no new buffers
            waiting_ = false;
        }
        n_held_ = first_ = 0;
        iov_used_ = 0;
        bool work = false;
        for (uint32_t i = 0; i < kRxBudget && !broken(); ++i) {
            if (bounce_len_ != 0) {
                // A frame waits in the bounce buffer: it goes first.
                uint64_t have = gather(bounce_len_);
                if (have < bounce_len_) {
                    if (n_held_ - first_ < vq_.size()) {
                        wait_for_buffers();
                        break;
                    }
                    // The whole ring cannot hold it: it can never be delivered.
                    VLOG_LIMITED(dev_.guest_log(), log_at(dev_.name(), index(), {{"len", bounce_len_}}), warn,
                                 "{} rx queue {}: {}-byte frame larger than all RX buffers, dropped", dev_.name(),
                                  index(), bounce_len_);
                    stats_.dropped.add();
                    bounce_len_ = 0;
                    continue;
                }
                copy_out_bounce();
                work = true;
                continue;
            }
            if (!chan_->ready()) {
                chan_->wait_ready();
                break;
            }
            uint64_t want = mergeable_ ? max_frame_ : 1;
            uint64_t have = gather(want);
            if (broken()) break;
            if (have == 0) {
                wait_for_buffers();  // back-pressure: frames stay in the backend
                break;
            }
            bool direct = have >= want;
            const Held& h0 = held_[first_];
            uint32_t iovs = 0;
            uint64_t room = 0;
            for (uint32_t k = first_; k < n_held_ && iovs + held_[k].iov_count <= kMaxIov; ++k) {
                iovs += held_[k].iov_count;
                room += held_[k].bytes;
                if (!mergeable_) break;
            }
            iovec bounce_iov{bounce_.get(), kBounceBytes};
            ssize_t n = direct ? chan_->receive(iov_.get() + h0.iov_first, iovs) : chan_->receive(&bounce_iov, 1);
            if (n < 0) {
                if (n == -EAGAIN || n == -EWOULDBLOCK) {
                    chan_->wait_ready();
                    break;
                }
                if (n == -EINTR) continue;
                VLOG_LIMITED(dev_.guest_log(), log_at(dev_.name(), index(), {{"errno", -n}}), warn, "{} rx queue {}: {} read failed: {}", dev_.name(), index(), dev_.backend().name(),
                              strerror(static_cast<int>(-n)));
                stats_.dropped.add();
                if (n == -EINVAL || n == -EFAULT) continue;  // the backend dropped this frame
                chan_->wait_ready();  // anything else: wait for the backend before trying again
                break;
            }
            work = true;
            if (direct) {
                deliver(static_cast<uint64_t>(n), room);
            } else if (static_cast<uint64_t>(n) > kBounceBytes || static_cast<uint64_t>(n) < hdr_) {
                VLOG_LIMITED(dev_.guest_log(), log_at(dev_.name(), index(), {{"len", n}}), warn, "{} rx queue {}: dropped a {}-byte frame",
                             dev_.name(), index(), n);
                stats_.dropped.add();
            } else {
                bounce_len_ = static_cast<uint32_t>(n);  // delivered on the next round
            }
        }
        // Chains taken but not filled go back to the guest's avail ring.
        if (n_held_ > first_) vq_.rewind(static_cast<uint16_t>(n_held_ - first_));
        return work;
    }

    // Takes chains until those held from first_ on have `want` bytes, the ring has no more, or
    // a readv could not take more iovecs. Returns the bytes held (0: no buffers, or broken).
    uint64_t gather(uint64_t want) {
        if (first_ == n_held_) {
            n_held_ = first_ = 0;
            iov_used_ = 0;
        }
        uint64_t have = 0;
        uint32_t iovs = 0;
        for (uint32_t k = first_; k < n_held_; ++k) {
            have += held_[k].bytes;
            iovs += held_[k].iov_count;
        }
        while (have < want && iovs < kMaxIov && (mergeable_ || n_held_ == first_)) {
            auto pending = vq_.pending();
            if (!pending.ok()) {
                fail(pending.error());
                return 0;
            }
            if (*pending == 0) break;
            if (iov_used_ + kMaxIov > kIovCap) compact();
            auto head = vq_.pop_head();
            if (!head.ok()) {
                fail(head.error());
                return 0;
            }
            Chain c;
            ChainError ce;
            std::span<iovec> room(iov_.get() + iov_used_, kMaxIov);
            const char* bad = nullptr;
            if (!vq_.walk(*head, room, &c, &ce)) bad = chain_error_name(ce);
            else if (c.n_readable != 0) bad = "device-readable descriptor in an RX chain";
            else if (c.writable_bytes < hdr_ || c.writable_bytes > UINT32_MAX) bad = "RX buffer smaller than the header";
            if (bad != nullptr) {
                if (n_held_ > first_) {
                    // Chains we hold come first: give this one back for now (the chains not
                    // filled are always the last ones taken) and use what we hold. It comes
                    // back at the front once those are used.
                    vq_.rewind(1);
                    break;
                }
                // Returned empty: the guest gets its buffer back and counts an error.
                VLOG_LIMITED(dev_.guest_log(), log_at(dev_.name(), index(), {{"head", *head}}), warn, "{} rx queue {}: head {}: {}", dev_.name(), index(), *head, bad);
                stats_.dropped.add();
                push_used(*head, 0);
                continue;
            }
            held_[n_held_++] = Held{*head, iov_used_, static_cast<uint32_t>(c.n_writable), static_cast<uint32_t>(c.writable_bytes)};
            iov_used_ += static_cast<uint32_t>(c.n_writable);
            iovs += static_cast<uint32_t>(c.n_writable);
            have += c.writable_bytes;
        }
        return have;
    }

    void wait_for_buffers() {
        waiting_ = true;
        wait_idx_ = vq_.avail_idx();
    }

    void compact() {
        uint32_t dst = 0;
        for (uint32_t k = first_; k < n_held_; ++k) {
            std::memmove(iov_.get() + dst, iov_.get() + held_[k].iov_first, held_[k].iov_count * sizeof(iovec));
            held_[k - first_] = held_[k];
            held_[k - first_].iov_first = dst;
            dst += held_[k].iov_count;
        }
        n_held_ -= first_;
        first_ = 0;
        iov_used_ = dst;
    }

    // The held chains have room for the bounced frame: copy it in and deliver.
    void copy_out_bounce() {
        uint64_t left = bounce_len_;
        const uint8_t* src = bounce_.get();
        uint64_t room = 0;
        for (uint32_t k = first_; k < n_held_ && left > 0; ++k) {
            size_t c = iov_copy_to(iov_.get() + held_[k].iov_first, held_[k].iov_count, src, left);
            src += c;
            left -= c;
            room += held_[k].bytes;
            if (!mergeable_) break;
        }
        uint64_t n = bounce_len_;
        bounce_len_ = 0;
        deliver(n, room);
    }

    // n bytes (header included) landed in the held chains from first_ on, which had `room`.
    void deliver(uint64_t n, uint64_t room) {
        if (n > room || n < hdr_) {
            // Truncated: the frame was larger than the buffers (or garbage). Drop it; the
            // chains stay unused and go back to the guest.
            VLOG_LIMITED(dev_.guest_log(), log_at(dev_.name(), index(), {{"len", static_cast<int64_t>(n)}, {"room", static_cast<int64_t>(room)}}), warn,
                         "{} rx queue {}: dropped a {}-byte frame, buffers held {}", dev_.name(), index(), n, room);
            stats_.dropped.add();
            return;
        }
        const Held& h0 = held_[first_];
        const iovec* hdr_iov = iov_.get() + h0.iov_first;
        uint32_t hdr_iovs = h0.iov_count;
        uint16_t buffers = 0;
        uint64_t left = n;
        while (left > 0) {
            const Held& h = held_[first_++];
            uint32_t take = static_cast<uint32_t>(std::min<uint64_t>(left, h.bytes));
            push_used(h.head, take);
            left -= take;
            ++buffers;
        }
        // The backend wrote the first 10 header bytes; num_buffers and (without GUEST_CSUM) the
        // flags are ours.
        if (hdr_ == sizeof(net::Hdr)) iov_write_at(hdr_iov, hdr_iovs, net::kNumBuffersOffset, &buffers, sizeof(buffers));
        if (!guest_csum_) {
            uint8_t zero = 0;
            iov_write_at(hdr_iov, hdr_iovs, 0, &zero, 1);
        }
        if (logging()) [[unlikely]] {
            // After the header fix-ups above: every byte of the frame is in guest memory now.
            uint64_t rest = n;
            for (uint32_t k = first_ - buffers; rest > 0; ++k) {
                uint32_t take = static_cast<uint32_t>(std::min<uint64_t>(rest, held_[k].bytes));
                log_write(iov_.get() + held_[k].iov_first, held_[k].iov_count, take);
                rest -= take;
            }
        }
        uint8_t gso_type = 0;
        iov_read_at(hdr_iov, hdr_iovs, 1, &gso_type, 1);
        stats_.packets.add();
        stats_.bytes.add(n - hdr_);
        if (gso_type != net::kGsoNone) stats_.gso.add();
    }

    static constexpr uint32_t kBounceBytes = sizeof(net::Hdr) + net::kMaxGsoFrame;

    bool mergeable_ = false;
    bool guest_csum_ = false;
    uint64_t max_frame_ = 0;
    bool waiting_ = false;
    uint16_t wait_idx_ = 0;
    std::unique_ptr<Held[]> held_;
    uint32_t n_held_ = 0;
    uint32_t first_ = 0;
    std::unique_ptr<iovec[]> iov_;
    uint32_t iov_used_ = 0;
    std::unique_ptr<uint8_t[]> bounce_;
    uint32_t bounce_len_ = 0;
};

// ---------------------------------------------------------------------------------------------
// TX: guest -> host.
class NetTxQueue final : public NetQueue<backends::NetTxChannel> {
public:
    NetTxQueue(Reactor& r, uint32_t index, NetDevice& dev, NetPairCounters& stats)
        : NetQueue(r, index, dev, stats.tx) {}

private:
    Status on_start(const QueueStart& s) override {
        VHOSTD_TRY(start_common(s));
        iov_ = std::make_unique<iovec[]>(kMaxIov + 1);
        return ok_status();
    }
    void on_stop() override {
        iov_.reset();
        stop_common();
    }
    bool device_idle() const override { return true; }  // a full backend wakes us through its channel

    bool process() override {
        if (!chan_->ready()) {
            chan_->wait_ready();
            return false;
        }
        auto pending = vq_.pending();
        if (!pending.ok()) {
            fail(pending.error());
            return false;
        }
        uint32_t n = std::min<uint32_t>(*pending, kTxBudget);
        for (uint32_t i = 0; i < n; ++i) {
            auto head = vq_.pop_head();
            if (!head.ok()) {
                fail(head.error());
                return true;
            }
            if (!send(*head)) break;  // backend full: retried when it has room
        }
        return n > 0;
    }

    void drop(uint16_t head, const char* why) {
        VLOG_LIMITED(dev_.guest_log(), log_at(dev_.name(), index(), {{"head", head}}), warn, "{} tx queue {}: head {}: frame dropped: {}", dev_.name(), index(), head, why);
        stats_.dropped.add();
        push_used(head, 0);
    }

    // False if the backend cannot take the frame now (the head was given back).
    bool send(uint16_t head) {
        Chain c;
        ChainError ce;
        // iov_[0] is kept for our copy of the header.
        if (!vq_.walk(head, std::span<iovec>(iov_.get() + 1, kMaxIov - 1), &c, &ce)) {
            drop(head, chain_error_name(ce));
            return true;
        }
        if (c.n_writable != 0) {
            drop(head, "device-writable descriptor in a TX chain");
            return true;
        }
        if (c.readable_bytes < hdr_) {
            drop(head, "chain shorter than the virtio-net header");
            return true;
        }
        uint64_t frame = c.readable_bytes - hdr_;
        if (frame < 14 || frame > net::kMaxGsoFrame) {
            drop(head, "frame length out of range");
            return true;
        }
        net::Hdr h{};
        iov_copy_from(iov_.get() + 1, c.n_readable, &h, hdr_);  // copied once; the copy is what the backend gets
        if (const char* why = check_tx_header(h, hdr_, frame, features_)) {
            drop(head, why);
            return true;
        }
        size_t skip = iov_consume_front(iov_.get() + 1, c.n_readable, hdr_);
        iovec* v = iov_.get() + skip;  // the slot right before the first frame iovec
        v[0] = iovec{&h, hdr_};
        unsigned cnt = static_cast<unsigned>(c.n_readable - skip + 1);
        ssize_t w = chan_->send(v, cnt);
        if (w < 0) {
            if (w == -EAGAIN || w == -EWOULDBLOCK) {
                vq_.rewind(1);
                chan_->wait_ready();
                return false;
            }
            // A tap: EIO it is down, EINVAL the kernel refused the frame. Either way it is gone.
            drop(head, strerror(static_cast<int>(-w)));
            return true;
        }
        stats_.packets.add();
        stats_.bytes.add(frame);
        if (h.gso_type != net::kGsoNone) stats_.gso.add();
        push_used(head, 0);
        return true;
    }

    std::unique_ptr<iovec[]> iov_;
};

// ---------------------------------------------------------------------------------------------

NetDevice::NetDevice(std::string name, std::unique_ptr<backends::NetBackend> backend, NetOptions opts,
                     std::vector<Reactor*> pair_reactors)
    : name_(std::move(name)), backend_(std::move(backend)), opts_(opts), pairs_(pair_reactors.size()),
      counters_(std::make_unique<NetPairCounters[]>(pair_reactors.size())), logged_(pair_reactors.size()) {
    if (opts_.mtu != 0) {
        mtu_ = opts_.mtu;
    } else if (auto m = backend_->mtu(); m.ok()) {
        mtu_ = m.value();
    }
    for (uint32_t p = 0; p < pair_reactors.size(); ++p) {
        rx_.push_back(std::make_unique<NetRxQueue>(*pair_reactors[p], 2 * p, *this, counters_[p]));
        tx_.push_back(std::make_unique<NetTxQueue>(*pair_reactors[p], 2 * p + 1, *this, counters_[p]));
        add_queue(*rx_.back());  // vring 2p
        add_queue(*tx_.back());  // vring 2p + 1
    }
}

NetDevice::~NetDevice() { stop_all_queues(); }

uint64_t NetDevice::features() const {
    return kFVersion1 | kFIndirectDesc | kFEventIdx | net::kFAnyLayout | net::kFMac | net::kFMtu | net::kFStatus |
           net::kFMrgRxbuf | net::kFCsum | net::kFGuestCsum | net::kFHostTso4 | net::kFHostTso6 | net::kFHostEcn |
           net::kFHostUfo | net::kFGuestTso4 | net::kFGuestTso6 | net::kFGuestEcn | net::kFGuestUfo | net::kFCtrlVq |
           net::kFMq | kFRingPacked;
}

void NetDevice::read_config(uint32_t offset, std::span<uint8_t> out) const {
    net::Config c{};
    std::memcpy(c.mac, opts_.mac.data(), sizeof(c.mac));
    c.status = net::kStatusLinkUp;
    c.max_virtqueue_pairs = static_cast<uint16_t>(pairs());
    c.mtu = static_cast<uint16_t>(mtu_);
    std::memcpy(out.data(), reinterpret_cast<const uint8_t*>(&c) + offset, out.size());
}

Status NetDevice::write_config(uint32_t offset, std::span<const uint8_t> in) {
    // The MAC is changed through the control queue, which the frontend services.
    return make_error(Errc::kUnsupported, "config write at {} ({} bytes): virtio-net config is read-only", offset,
                      in.size());
}

void NetDevice::set_features(uint64_t features) { acked_ = features; }

bool NetDevice::backend_attached(uint32_t pair) const { return rx_[pair]->running() || tx_[pair]->running(); }

Status NetDevice::start_queue(uint32_t index, QueueStart&& start) {
    uint32_t pair = index / 2;
    // A backend queue takes traffic while either vring of its pair runs, and follows the
    // guest's features: header size and the offloads it may hand us.
    bool was_attached = backend_attached(pair);
    VHOSTD_TRY(backend_->set_queue_attached(pair, true));
    Status st = backend_->configure(pair, net::hdr_size(start.features), guest_offloads(start.features));
    if (st.ok()) st = QueuedDevice::start_queue(index, std::move(start));
    if (!st.ok() && !was_attached) (void)backend_->set_queue_attached(pair, false);
    if (st.ok() && pending_rarp_) {
        auto sent = announce(*pending_rarp_);
        if (!sent.ok()) VLOG_WARN("{}", sent.error().describe());
        if (!sent.ok() || sent.value()) pending_rarp_.reset();
    }
    return st;
}

uint32_t NetDevice::stop_queue(uint32_t index) {
    uint32_t pair = index / 2;
    uint32_t last = QueuedDevice::stop_queue(index);
    if (!backend_attached(pair)) {
        if (auto st = backend_->set_queue_attached(pair, false); !st.ok())
            VLOG_WARN("{}: {}", name_, st.error().describe());
    }
    return last;
}

Status NetDevice::net_set_mtu(uint64_t mtu) {
    if (mtu < net::kMinMtu || mtu > net::kMaxMtu)
        return make_error(Errc::kInvalid, "NET_SET_MTU {} out of range {}..{}", mtu, net::kMinMtu, net::kMaxMtu);
    for (uint32_t p = 0; p < pairs(); ++p) {
        if (rx_[p]->running()) return make_error(Errc::kState, "NET_SET_MTU while queues run");
    }
    // The MTU the tap has already (QEMU's host_mtu= as the device was made with mtu=): nothing to
    // change, and no CAP_NET_ADMIN needed (a control thread has none after --user).
    auto now = backend_->mtu();
    if (!now.ok() || now.value() != mtu) VHOSTD_TRY(backend_->set_mtu(static_cast<uint32_t>(mtu)));
    mtu_ = static_cast<uint32_t>(mtu);
    VLOG_INFO("{}: MTU {} ({})", name_, mtu_, backend_->name());
    return ok_status();
}

Result<bool> NetDevice::announce(std::span<const uint8_t, 6> mac) {
    // After a migration: announce the guest's MAC on the host side, as a RARP broadcast from
    // it (what QEMU's own announce does), so that bridges and switches learn the new port.
    uint8_t frame[60] = {};  // minimum Ethernet frame, zero padded
    std::memset(frame, 0xff, 6);                       // broadcast
    std::memcpy(frame + 6, mac.data(), 6);             // from the guest
    const uint8_t arp[] = {0x80, 0x35, 0, 1, 8, 0, 6, 4, 0, 3};  // RARP, Ethernet/IPv4, reverse request
    std::memcpy(frame + 12, arp, sizeof(arp));
    std::memcpy(frame + 22, mac.data(), 6);  // sender hardware address (protocol address 0)
    std::memcpy(frame + 32, mac.data(), 6);  // target hardware address (protocol address 0)
    net::Hdr hdr{};
    iovec iov[2] = {{&hdr, net::hdr_size(acked_)}, {frame, sizeof(frame)}};
    for (uint32_t p = 0; p < pairs(); ++p) {
        if (!backend_attached(p)) continue;  // only attached backend queues take frames
        if (Status st = backend_->send_frame(p, iov, 2); !st.ok()) {
            Error e = std::move(st).take_error();
            e.context = fmt::format("{}: RARP: {}", name_, e.context);
            return e;
        }
        VLOG_INFO("{}: announced {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x} (RARP)", name_, mac[0], mac[1], mac[2],
                  mac[3], mac[4], mac[5]);
        return true;
    }
    return false;
}

Status NetDevice::net_send_rarp(std::span<const uint8_t, 6> mac) {
    VHOSTD_ASSIGN_OR_RETURN(bool sent, announce(mac));
    if (!sent) {
        std::array<uint8_t, 6> m;
        std::memcpy(m.data(), mac.data(), m.size());
        pending_rarp_ = m;
        VLOG_INFO("{}: SEND_RARP before any queue runs: announced when the first one starts", name_);
    }
    return ok_status();
}

NetPairStats NetDevice::stats(uint32_t pair) const {
    if (pair >= pairs_) return {};
    auto dir = [](const NetDirCounters& c, const QueueWorker& q) {
        return NetDirStats{c.packets.get(), c.bytes.get(), c.gso.get(), c.dropped.get(), q.kicks(), q.calls()};
    };
    return NetPairStats{dir(counters_[pair].rx, *rx_[pair]), dir(counters_[pair].tx, *tx_[pair])};
}

void NetDevice::session_ended() {
    pending_rarp_.reset();
    // The counters run on for the device's life (device_stats); the log line tells this session's part.
    for (uint32_t p = 0; p < pairs(); ++p) {
        NetPairStats now = stats(p);
        const NetPairStats& was = logged_[p];
        NetDirStats rx{now.rx.packets - was.rx.packets, now.rx.bytes - was.rx.bytes, now.rx.gso - was.rx.gso,
                       now.rx.dropped - was.rx.dropped};
        NetDirStats tx{now.tx.packets - was.tx.packets, now.tx.bytes - was.tx.bytes, now.tx.gso - was.tx.gso,
                       now.tx.dropped - was.tx.dropped};
        if (rx.packets + tx.packets + rx.dropped + tx.dropped != 0)
            VLOG_INFO("{}: queue pair {}: rx {} packets {} bytes {} gso {} dropped; tx {} packets {} bytes {} gso {} dropped",
                      name_, p, rx.packets, rx.bytes, rx.gso, rx.dropped, tx.packets, tx.bytes, tx.gso, tx.dropped);
        logged_[p] = now;
    }
}

}  // namespace vhostd::virtio
