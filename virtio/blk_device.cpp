#include "virtio/blk_device.hpp"

#include <array>
#include <cstddef>
#include <cstring>

#include "core/checked.hpp"
#include "core/log.hpp"
#include "virtio/blk_request.hpp"
#include "virtio/iov.hpp"
#include "virtio/queue_worker.hpp"

namespace vhostd::virtio {

using backends::BlockOp;
using backends::BlockRequest;

// A backend's zone report goes to the guest as it is: the layouts must agree.
static_assert(sizeof(backends::ZoneReportHeader) == sizeof(blk::ZoneReportHeader));
static_assert(offsetof(backends::ZoneDescriptor, capacity) == offsetof(blk::ZoneDescriptor, z_cap));
static_assert(offsetof(backends::ZoneDescriptor, start) == offsetof(blk::ZoneDescriptor, z_start));
static_assert(offsetof(backends::ZoneDescriptor, wp) == offsetof(blk::ZoneDescriptor, z_wp));
static_assert(offsetof(backends::ZoneDescriptor, type) == offsetof(blk::ZoneDescriptor, z_type));
static_assert(offsetof(backends::ZoneDescriptor, state) == offsetof(blk::ZoneDescriptor, z_state));
static_assert(sizeof(backends::ZoneDescriptor) == sizeof(blk::ZoneDescriptor));

// One queue of a blk device, on its reactor. Requests live in slots indexed by head id,
// preallocated at start: the data path allocates nothing.
class BlkQueue final : public QueueWorker {
public:
    BlkQueue(Reactor& r, uint32_t index, BlkDevice& dev) : QueueWorker(r, index), dev_(dev) {}

    // Any thread: adds this queue's latency buckets into `buckets`.
    BlkQueueStats stats(std::array<uint64_t, LogBuckets::kCount>& buckets, uint64_t& max) const {
        BlkQueueStats st;
        st.index = index();
        st.reads = c_.kind[kRead].get();
        st.writes = c_.kind[kWrite].get();
        st.flushes = c_.kind[kFlush].get();
        st.discards = c_.kind[kDiscard].get();
        st.write_zeroes = c_.kind[kWriteZeroes].get();
        st.get_ids = c_.kind[kGetId].get();
        st.others = c_.kind[kOther].get();
        st.bytes_read = c_.bytes_read.get();
        st.bytes_written = c_.bytes_written.get();
        st.err_ioerr = c_.ioerr.get();
        st.err_unsupp = c_.unsupp.get();
        st.bad_chains = c_.bad_chains.get();
        st.inflight = c_.inflight.get();
        st.kicks = kicks();
        st.calls = calls();
        st.qos_delays = c_.qos_delays.get();
        st.qos_delay_ns = c_.qos_delay_ns.get();
        std::array<uint64_t, LogBuckets::kCount> mine{};
        uint64_t my_max = 0;
        c_.latency.snapshot(mine, my_max);
        st.latency = LatencyHistogram::summarize(mine, my_max);
        st.latency_sum_ns = c_.latency.sum_ns();
        st.latency_buckets = mine;
        for (size_t i = 0; i < mine.size(); ++i) buckets[i] += mine[i];
        max = std::max(max, my_max);
        return st;
    }

private:
    enum Kind : uint8_t { kRead, kWrite, kFlush, kDiscard, kWriteZeroes, kGetId, kOther, kKinds };
    static Kind kind_of(uint32_t type) {
        switch (type) {
            case blk::kTIn: return kRead;
            case blk::kTOut:
            case blk::kTZoneAppend: return kWrite;
            case blk::kTFlush: return kFlush;
            case blk::kTDiscard: return kDiscard;
            case blk::kTWriteZeroes: return kWriteZeroes;
            case blk::kTGetId: return kGetId;
            default: return kOther;
        }
    }

    // Written by this queue's reactor only (core/stats.hpp); they live as long as the device.
    struct Counters {
        Counter kind[kKinds];
        Counter bytes_read, bytes_written, ioerr, unsupp, bad_chains, inflight, qos_delays, qos_delay_ns;
        LatencyHistogram latency;
    };

    struct Slot final : ::vhostd::Completion {
        BlkQueue* q = nullptr;
        uint16_t head = 0;
        bool busy = false;
        bool fallback_done = false;
        Kind kind = kOther;
        uint8_t* status = nullptr;
        uint32_t used_len = 0;
        uint64_t remaining = 0;  // read/write bytes not transferred yet
        uint64_t bytes = 0;      // read/write: the request's length
        uint64_t start_ns = 0;   // the pass that took it
        uint64_t append_at = 0;  // zone append: the byte offset the backend wrote at
        iovec* in_iov = nullptr;  // zone append: where that goes as a sector (8 bytes)
        unsigned n_in = 0;
        BlockRequest req;
        iovec iov[BlkDevice::kSlotIovecs];

        void complete(int32_t res) override { q->on_complete(*this, res); }
    };

    Status on_start(const QueueStart& s) override {
        size_ = s.layout.size;
        slots_ = std::make_unique<Slot[]>(size_);
        for (uint32_t i = 0; i < size_; ++i) slots_[i].q = this;
        retry_ = std::make_unique<uint16_t[]>(size_);
        n_retry_ = 0;
        inflight_ = 0;
        c_.inflight.set(0);
        parked_ = nullptr;
        auto ch = dev_.backend().open_channel(reactor(), size_);
        if (!ch.ok()) return std::move(ch).take_error();
        channel_ = std::move(ch).value();
        if (s.mem) channel_->set_memory(*s.mem);
        return ok_status();
    }

    void on_memory(const shm::MemoryMap& mem) override {
        if (channel_) channel_->set_memory(mem);
    }

    void on_stop() override {
        parked_ = nullptr;
        channel_.reset();
        slots_.reset();
        retry_.reset();
    }

    uint32_t inflight() const override { return inflight_; }
    uint64_t held_until() const override { return parked_ != nullptr ? parked_until_ : 0; }
    bool poll_device() override {
        if (!channel_) return false;
        bool work = parked_ != nullptr && release_parked();
        work |= channel_->poll();
        // Resubmissions (short transfers, fallbacks) that found the SQ full last time.
        while (n_retry_ > 0 && channel_->ready()) {
            submit(slots_[retry_[--n_retry_]]);
            work = true;
        }
        return work;
    }
    bool device_idle() const override { return !channel_ || (channel_->idle() && n_retry_ == 0); }
    bool device_needs_poll() const override { return channel_ && (channel_->must_poll() || n_retry_ > 0); }

    bool process() override {
        bool work = false;
        if (parked_ != nullptr) return work;  // the ring waits behind a request QoS holds
        auto pending = vq_.pending();
        if (!pending.ok()) {
            fail(pending.error());
            return work;
        }
        // At most one queue's worth per pass (pending <= size), then other queues get a turn.
        for (uint16_t i = 0; i < *pending && parked_ == nullptr; ++i) {
            if (!channel_->ready()) break;  // back-pressure: the rest stays on the ring
            auto head = vq_.pop_head();
            if (!head.ok()) {
                fail(head.error());
                break;
            }
            Slot& s = slots_[*head];
            if (s.busy) {
                fail(make_error(Errc::kInvalid, "head {} made available again while in flight", *head));
                break;
            }
            handle(s, *head);
            work = true;
        }
        return work;
    }

    void finish(Slot& s, uint8_t status) {
        if (s.status != nullptr) {
            *s.status = status;
            if (logging()) [[unlikely]] log_write(s.status, 1);
        }
        push_used(s.head, status == blk::kSOk ? s.used_len : (s.status ? 1u : 0u));
        if (s.busy) {
            s.busy = false;
            --inflight_;
            c_.inflight.set(inflight_);
        }
        uint64_t now = reactor().now_ns();
        c_.latency.record(now > s.start_ns ? now - s.start_ns : 0);
        c_.kind[s.kind].add();
        if (status == blk::kSOk) {
            if (s.kind == kRead) c_.bytes_read.add(s.bytes);
            if (s.kind == kWrite) c_.bytes_written.add(s.bytes);
        } else if (status == blk::kSIoErr) {
            c_.ioerr.add();
        } else if (status == blk::kSUnsupp) {
            c_.unsupp.add();
        }
    }

    // QoS: the request waits in its slot until `at`; the ring waits behind it (one held request
    // per queue bounds what the queues reserve ahead of the clock).
    void hold(Slot& s, uint64_t at, uint64_t now) {
        parked_ = &s;
        parked_until_ = at;
        parked_since_ = now;
        parked_gen_ = dev_.qos_buckets().generation();
        c_.qos_delays.add();
    }

    // Submits the held request once its time has come; at once when the queue stops (a drain
    // admits everything) or QoS is off; admits it again when the limits changed meanwhile.
    bool release_parked() {
        uint64_t now = reactor().now_ns();
        Qos& qos = dev_.qos_buckets();
        if (!stopping() && now < parked_until_) {
            uint32_t gen = qos.generation();
            if (gen == parked_gen_) return false;
            parked_gen_ = gen;
            uint64_t at = qos.enabled() ? qos.admit(parked_->kind != kRead, parked_->bytes, now) : 0;
            if (at > now) {
                parked_until_ = at;
                return false;
            }
        }
        c_.qos_delay_ns.add(now - parked_since_);
        Slot& s = *parked_;
        parked_ = nullptr;
        submit(s);
        return true;
    }

    void bad_request(Slot& s, uint8_t status, const char* why) {
        VLOG_LIMITED(dev_.guest_log(), log_at(dev_.name(), index(), {{"head", s.head}}), warn, "{} queue {}: head {}: {}", dev_.name(), index(), s.head, why);
        finish(s, status);
    }

    void handle(Slot& s, uint16_t head) {
        s.head = head;
        s.status = nullptr;
        s.used_len = 0;
        s.fallback_done = false;
        s.kind = kOther;
        s.bytes = 0;
        s.start_ns = reactor().now_ns();
        Chain c;
        ChainError ce;
        if (!vq_.walk(head, std::span<iovec>(s.iov, BlkDevice::kSlotIovecs), &c, &ce)) {
            // Return the chain so the guest does not leak it; nothing can be written safely.
            VLOG_LIMITED(dev_.guest_log(), log_at(dev_.name(), index(), {{"head", head}}), warn,
                         "{} queue {}: head {}: bad descriptor chain: {}", dev_.name(),
                         index(), head, chain_error_name(ce));
            push_used(head, 0);
            c_.bad_chains.add();
            return;
        }
        if (c.writable_bytes == 0) return bad_request(s, 0, "no writable status byte");
        // Status: the last writable byte.
        size_t last = c.n_readable + c.n_writable - 1;
        s.status = static_cast<uint8_t*>(s.iov[last].iov_base) + s.iov[last].iov_len - 1;
        if (--s.iov[last].iov_len == 0) --c.n_writable;
        uint64_t in_bytes = c.writable_bytes - 1;

        blk::ReqHeader h{};
        if (c.readable_bytes < sizeof(h)) return bad_request(s, blk::kSIoErr, "request header shorter than 16 bytes");
        iov_copy_from(s.iov, c.n_readable, &h, sizeof(h));  // copied once; the copy is what we trust
        s.kind = kind_of(h.type);
        size_t first_out = iov_consume_front(s.iov, c.n_readable, sizeof(h));
        uint64_t out_bytes = c.readable_bytes - sizeof(h);
        iovec* out_iov = s.iov + first_out;
        auto n_out = static_cast<unsigned>(c.n_readable - first_out);
        iovec* in_iov = s.iov + c.n_readable;
        auto n_in = static_cast<unsigned>(c.n_writable);

        s.busy = true;
        ++inflight_;
        c_.inflight.set(inflight_);
        blk::Buffers bufs{out_iov, n_out, out_bytes, in_iov, n_in, in_bytes};
        blk::Parsed p = blk::parse_request(h, bufs, dev_.limits());
        s.used_len = p.used_len;
        switch (p.action) {
            case blk::Action::kSubmit: {
                s.req = p.op;
                s.remaining = p.op.len;
                if (p.op.op == BlockOp::kZoneAppend) {
                    s.req.append_at = &s.append_at;
                    s.in_iov = in_iov;
                    s.n_in = n_in;
                }
                bool rw = p.op.op == BlockOp::kRead || p.op.op == BlockOp::kWrite || p.op.op == BlockOp::kZoneAppend;
                if (rw) s.bytes = p.op.len;
                if (Qos& qos = dev_.qos_buckets(); qos.enabled()) [[unlikely]] {
                    uint64_t now = reactor().now_ns();
                    uint64_t at = qos.admit(p.op.op != BlockOp::kRead, s.bytes, now);
                    if (at > now) return hold(s, at, now);
                }
                return submit(s);
            }
            case blk::Action::kGetId: {
                char id[blk::kIdBytes] = {};
                std::memcpy(id, dev_.serial().data(), std::min<size_t>(dev_.serial().size(), sizeof(id)));
                size_t n = iov_copy_to(in_iov, n_in, id, std::min<uint64_t>(in_bytes, sizeof(id)));
                if (logging()) [[unlikely]] log_write(in_iov, n_in, n);
                s.used_len = static_cast<uint32_t>(n + 1);
                return finish(s, blk::kSOk);
            }
            case blk::Action::kComplete:
                if (p.error != nullptr) return bad_request(s, p.status, p.error);
                return finish(s, p.status);
        }
    }

    void submit(Slot& s) {
        Status st = channel_->submit(s.req, &s);
        if (st.ok()) return;
        if (st.error().code == Errc::kBusy) {
            retry_[n_retry_++] = s.head;  // at most one entry per slot: bounded by queue size
            return;
        }
        VLOG_LIMITED(dev_.io_log(), log_at(dev_.name(), index(), {{"head", s.head}}), warn, "{} queue {}: submit failed: {}", dev_.name(), index(), st.error().describe());
        finish(s, blk::kSIoErr);
    }

    void on_complete(Slot& s, int32_t res) {
        BlockOp op = s.req.op;
        // A read's data is in guest memory now (the first res bytes of what is left of its iovecs).
        if (op == BlockOp::kRead && res > 0 && logging()) [[unlikely]]
            log_write(s.req.iov, s.req.iovcnt, static_cast<size_t>(res));
        if (res < 0) {
            if (op == BlockOp::kDiscard && (res == -EOPNOTSUPP || res == -EINVAL)) return finish(s, blk::kSOk);
            if (op == BlockOp::kWriteZeroes && res == -EOPNOTSUPP && !s.fallback_done) {
                // No ZERO_RANGE here (e.g. tmpfs): a punched hole reads back as zeroes too.
                s.fallback_done = true;
                s.req.op = BlockOp::kWriteZeroesUnmap;
                return submit(s);
            }
            if (backends::is_zone_op(op) || (dev_.limits().zone_bytes != 0 && op == BlockOp::kWrite)) {
                // What a zoned device says of a command the zone's state refuses: the guest's
                // business (its file system tracks write pointers), not an I/O error to log.
                if (uint8_t zs = zone_status(res); zs != 0) return finish(s, zs);
            }
            VLOG_LIMITED(dev_.io_log(),
                         log_at(dev_.name(), index(),
                                {{"head", s.head}, {"op", static_cast<int>(op)}, {"offset", static_cast<int64_t>(s.req.offset)},
                                 {"len", static_cast<int64_t>(s.req.len)}, {"errno", -res}}),
                         warn, "{} queue {}: I/O error op={} off={} len={}: {}", dev_.name(), index(),
                         static_cast<int>(op), s.req.offset, s.req.len, strerror(-res));
            return finish(s, blk::kSIoErr);
        }
        if (op == BlockOp::kZoneAppend) {
            if (static_cast<uint64_t>(res) != s.remaining || s.append_at % blk::kSectorSize != 0) return finish(s, blk::kSIoErr);
            const uint64_t sector = s.append_at / blk::kSectorSize;  // little-endian (x86; virtio 1.x is LE)
            iov_copy_to(s.in_iov, s.n_in, &sector, sizeof(sector));
            if (logging()) [[unlikely]] log_write(s.in_iov, s.n_in, sizeof(sector));
            return finish(s, blk::kSOk);
        }
        if (op == BlockOp::kZoneReport) {
            // res: the bytes of the report the backend wrote (header + zones), within the buffer.
            if (static_cast<uint64_t>(res) > s.req.len) return finish(s, blk::kSIoErr);
            if (logging()) [[unlikely]] log_write(s.req.iov, s.req.iovcnt, static_cast<size_t>(res));
            s.used_len = static_cast<uint32_t>(res) + 1;
            return finish(s, blk::kSOk);
        }
        if ((op == BlockOp::kRead || op == BlockOp::kWrite) && static_cast<uint64_t>(res) < s.remaining) {
            if (res == 0) return finish(s, blk::kSIoErr);
            // Short transfer: continue with the rest.
            auto done = static_cast<uint64_t>(res);
            s.remaining -= done;
            s.req.offset += done;
            size_t skip = iov_consume_front(const_cast<iovec*>(s.req.iov), s.req.iovcnt, done);
            s.req.iov += skip;
            s.req.iovcnt -= static_cast<unsigned>(skip);
            return submit(s);
        }
        finish(s, blk::kSOk);
    }

    static uint8_t zone_status(int32_t res) {
        switch (res) {
            case backends::kErrZoneInvalid: return blk::kSZoneInvalidCmd;
            case backends::kErrZoneUnalignedWrite: return blk::kSZoneUnalignedWp;
            case backends::kErrZoneOpenResource: return blk::kSZoneOpenResource;
            case backends::kErrZoneActiveResource: return blk::kSZoneActiveResource;
            default: return 0;
        }
    }

    BlkDevice& dev_;
    uint32_t size_ = 0;
    std::unique_ptr<Slot[]> slots_;
    std::unique_ptr<uint16_t[]> retry_;
    uint32_t n_retry_ = 0;
    uint32_t inflight_ = 0;
    std::unique_ptr<backends::BlockChannel> channel_;
    Slot* parked_ = nullptr;  // the request QoS holds back, if any
    uint64_t parked_until_ = 0;
    uint64_t parked_since_ = 0;
    uint32_t parked_gen_ = 0;
    Counters c_;
};

BlkDevice::BlkDevice(std::string name, std::shared_ptr<backends::BlockBackend> backend, BlkOptions opts,
                     std::vector<Reactor*> queue_reactors)
    : name_(std::move(name)), backend_(std::move(backend)), opts_(std::move(opts)) {
    const auto& in = backend_->info();
    limits_ = blk::DeviceLimits{in.size_bytes, in.block_size, in.readonly, in.discard && !zoned(), in.write_zeroes,
                                kMaxDiscardSectors};
    if (zoned()) {
        limits_.zone_bytes = in.zoned.zone_bytes;
        limits_.max_append_bytes = in.zoned.max_append_bytes;
    }
    size_bytes_.store(in.size_bytes);
    if (opts_.qos.any()) qos_.set(opts_.qos);
    for (uint32_t i = 0; i < queue_reactors.size(); ++i) {
        queues_.push_back(std::make_unique<BlkQueue>(*queue_reactors[i], i, *this));
        add_queue(*queues_.back());
    }
    update_writethrough();
}

BlkDevice::~BlkDevice() { stop_all_queues(); }

uint64_t BlkDevice::features() const {
    uint64_t f = blk::kFSizeMax | blk::kFSegMax | blk::kFBlkSize | blk::kFFlush | blk::kFTopology |
                 blk::kFConfigWce | blk::kFMq | kFVersion1 | kFIndirectDesc | kFEventIdx | kFRingPacked;
    const auto& in = backend_->info();
    if (in.readonly) f |= blk::kFRo;
    // A host-managed device takes no DISCARD (QEMU's virtio-blk drops it the same way).
    if (in.discard && !zoned()) f |= blk::kFDiscard;
    if (in.write_zeroes) f |= blk::kFWriteZeroes;
    if (zoned()) f |= blk::kFZoned;
    return f;
}

void BlkDevice::read_config(uint32_t offset, std::span<uint8_t> out) const {
    const auto& in = backend_->info();
    blk::Config c{};
    c.capacity = size_bytes() / blk::kSectorSize;
    c.size_max = kSizeMax;
    c.seg_max = kSegMax;
    c.blk_size = in.block_size;
    uint32_t pbs = in.physical_block > in.block_size ? in.physical_block : in.block_size;
    c.physical_block_exp = static_cast<uint8_t>(__builtin_ctz(pbs) - __builtin_ctz(in.block_size));
    c.min_io_size = 1;
    c.opt_io_size = 0;
    c.writeback = wce_.load();
    c.num_queues = static_cast<uint16_t>(num_queues());
    uint32_t align_sectors = in.block_size / blk::kSectorSize;
    if (in.discard && !zoned()) {
        c.max_discard_sectors = kMaxDiscardSectors;
        c.max_discard_seg = 1;
        c.discard_sector_alignment = align_sectors;
    }
    if (in.write_zeroes) {
        c.max_write_zeroes_sectors = kMaxDiscardSectors;
        c.max_write_zeroes_seg = 1;
        c.write_zeroes_may_unmap = 1;
    }
    if (zoned()) {
        c.zone_sectors = static_cast<uint32_t>(in.zoned.zone_bytes / blk::kSectorSize);
        c.max_open_zones = in.zoned.max_open;
        c.max_active_zones = in.zoned.max_active;
        c.max_append_sectors = in.zoned.max_append_bytes / static_cast<uint32_t>(blk::kSectorSize);
        c.write_granularity = in.block_size;
        c.model = in.zoned.model;
    }
    std::memcpy(out.data(), reinterpret_cast<const uint8_t*>(&c) + offset, out.size());
}

Status BlkDevice::write_config(uint32_t offset, std::span<const uint8_t> in) {
    // Only the writeback byte is writable, and only with CONFIG_WCE.
    if (offset != blk::kWritebackOffset || in.size() != 1 || !(acked_ & blk::kFConfigWce))
        return make_error(Errc::kUnsupported, "config write at {} ({} bytes) not allowed", offset, in.size());
    wce_.store(in[0] ? 1 : 0);
    update_writethrough();
    VLOG_INFO("{}: guest turned the write cache {}", name_, in[0] ? "on" : "off");
    return ok_status();
}

Result<uint64_t> BlkDevice::resize(uint64_t new_size) {
    const uint64_t old = size_bytes();
    if (new_size != 0 && new_size < old) {
        // Every request parsed from here on is checked against the new end; the ones already
        // admitted past it complete before the storage shrinks (a write landing after the
        // truncate would grow the file again).
        size_bytes_.store(new_size);
        Status st = quiesce_queues();
        if (!st.ok()) VLOG_WARN("{}: draining the queues for a shrink: {}", name_, st.error().describe());
        auto r = backend_->resize(new_size);
        if (!r.ok()) {
            size_bytes_.store(old);
            return std::move(r).take_error();
        }
        size_bytes_.store(*r);
        VLOG_INFO("{}: shrunk from {} to {} bytes", name_, old, *r);
        return *r;
    }
    auto r = backend_->resize(new_size);
    if (!r.ok()) return std::move(r).take_error();
    if (*r < old) {
        // A block device that shrank under us: refuse past the end now, drain what was admitted.
        size_bytes_.store(*r);
        Status st = quiesce_queues();
        if (!st.ok()) VLOG_WARN("{}: draining the queues after a shrink: {}", name_, st.error().describe());
    }
    size_bytes_.store(*r);
    VLOG_INFO("{}: resized from {} to {} bytes", name_, old, *r);
    return *r;
}

void BlkDevice::set_qos(const QosLimits& l) {
    qos_.set(l);
    // A queue asleep until a held request's old deadline looks again now.
    for (auto& q : queues_) q->reactor().post([] {});
    VLOG_INFO("{}: QoS iops={} bps={} read_iops={} write_iops={} read_bps={} write_bps={} burst_ms={}", name_, l.iops,
              l.bps, l.read_iops, l.write_iops, l.read_bps, l.write_bps, l.burst_ms);
}

BlkDeviceStats BlkDevice::stats() const {
    BlkDeviceStats d;
    std::array<uint64_t, LogBuckets::kCount> buckets{};
    uint64_t max = 0;
    BlkQueueStats& t = d.total;
    for (const auto& q : queues_) {
        BlkQueueStats s = q->stats(buckets, max);
        t.reads += s.reads;
        t.writes += s.writes;
        t.flushes += s.flushes;
        t.discards += s.discards;
        t.write_zeroes += s.write_zeroes;
        t.get_ids += s.get_ids;
        t.others += s.others;
        t.bytes_read += s.bytes_read;
        t.bytes_written += s.bytes_written;
        t.err_ioerr += s.err_ioerr;
        t.err_unsupp += s.err_unsupp;
        t.bad_chains += s.bad_chains;
        t.inflight += s.inflight;
        t.kicks += s.kicks;
        t.calls += s.calls;
        t.qos_delays += s.qos_delays;
        t.qos_delay_ns += s.qos_delay_ns;
        t.latency_sum_ns += s.latency_sum_ns;
        d.queues.push_back(s);
    }
    t.index = static_cast<uint32_t>(queues_.size());
    t.latency = LatencyHistogram::summarize(buckets, max);
    t.latency_buckets = buckets;
    return d;
}

void BlkDevice::set_features(uint64_t features) {
    acked_ = features;
    if (zoned() && info().zoned.model == blk::kZHostManaged && !(features & blk::kFZoned))
        VLOG_WARN("{}: the driver did not accept VIRTIO_BLK_F_ZONED on a host-managed zoned device: writes off a "
                  "zone's write pointer will fail",
                  name_);
    update_writethrough();
}

void BlkDevice::update_writethrough() {
    // Without CONFIG_WCE the cache mode follows FLUSH: a driver that can't flush gets
    // write-through so that a completed write is durable.
    bool wb = (acked_ & blk::kFConfigWce) ? wce_.load() != 0 : (acked_ & blk::kFFlush) != 0;
    writethrough_.store(!wb, std::memory_order_relaxed);
}

}  // namespace vhostd::virtio
