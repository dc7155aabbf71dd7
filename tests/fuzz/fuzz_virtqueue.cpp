// Fuzzes ring walking: guest memory (a memfd at gpa 0) is filled from the input, a split queue
// is activated on it, and every available chain is walked — directly through SplitQueue, and
// through a virtio-blk device with a null backend on a real reactor (request parsing, status
// bytes, used ring). Any crash, hang, out-of-bounds access or sanitizer report is a bug.
//
// With flag 4 the queue also tracks requests in an inflight region taken from the image at
// 0x8000 (so the region's contents are fuzzed too: recovery must validate everything); flag 8
// makes its desc_num match the queue so recovery gets past the first check.
//
// With flag 16 the same image is also a packed ring (descriptor ring at 0x0, driver area at
// 0x1000, device area at 0x2000; the base's avail and used halves both from last_avail): every
// available chain is taken, walked and handed back in reverse order; with flag 4 too, the region
// at 0x8000 is a packed inflight region (its recovered chains come first).
//
// With flag 32 the blk device is a zoned one (a stateless zoned stand-in for a ZNS drive: every
// zone empty, appends land at the zone's start), so zone reports, appends and management
// commands from the image go through the device's parsing and completion paths.
//
// Input: [u8 log2 queue size][u8 flags][u16 last_avail][guest memory image...]
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "backends/null_backend.hpp"
#include "core/log.hpp"
#include "guest_memory.hpp"
#include "virtio/blk_device.hpp"
#include "virtio/iov.hpp"
#include "virtio/packed_queue.hpp"
#include "virtio/virtqueue.hpp"

using namespace vhostd;

namespace {

// Zones of 64 KiB; completes on the next pass like the null backend.
class ZonedNull final : public backends::BlockBackend {
public:
    ZonedNull() {
        info_.size_bytes = 1 << 20;
        info_.zoned = {.model = 1, .zone_bytes = 64 << 10, .max_open = 4, .max_active = 6, .max_append_bytes = 32 << 10};
    }
    const backends::BlockInfo& info() const override { return info_; }
    Result<std::unique_ptr<backends::BlockChannel>> open_channel(Reactor&, uint32_t depth) override {
        return std::unique_ptr<backends::BlockChannel>(std::make_unique<Channel>(depth, info_));
    }

private:
    class Channel final : public backends::BlockChannel {
    public:
        Channel(uint32_t depth, const backends::BlockInfo& in) : in_(in) { pending_.reserve(depth); }
        bool ready() override { return pending_.size() < pending_.capacity(); }
        Status submit(const backends::BlockRequest& q, Completion* c) override {
            using backends::BlockOp;
            if (!ready()) return make_error(Errc::kBusy, "full");
            int32_t res = 0;
            uint64_t total = 0;
            for (unsigned i = 0; i < q.iovcnt; ++i) total += q.iov[i].iov_len;
            if (q.op == BlockOp::kRead || q.op == BlockOp::kWrite) res = static_cast<int32_t>(total);
            if (q.op == BlockOp::kZoneAppend) {
                *q.append_at = q.offset;
                res = static_cast<int32_t>(total);
            }
            if (q.op == BlockOp::kZoneReport) {
                // Every zone from the one holding q.offset, as many as fit in q.len.
                const uint64_t zb = in_.zoned.zone_bytes, first = q.offset / zb, zones = in_.size_bytes / zb;
                const uint64_t n = std::min<uint64_t>((q.len - 64) / 64, zones - first);
                backends::ZoneReportHeader h{};
                h.nr_zones = n;
                size_t at = virtio::iov_copy_to(q.iov, q.iovcnt, &h, sizeof(h));
                for (uint64_t z = 0; z < n; ++z) {
                    backends::ZoneDescriptor d{};
                    d.start = d.wp = (first + z) * zb / 512;
                    d.capacity = zb / 512;
                    d.type = 2;
                    d.state = 1;
                    at += virtio::iov_write_at(q.iov, q.iovcnt, at, &d, sizeof(d));
                }
                res = static_cast<int32_t>(at);
            }
            pending_.push_back({c, res});
            return ok_status();
        }
        bool poll() override {
            if (pending_.empty()) return false;
            size_t n = pending_.size();
            for (size_t i = 0; i < n; ++i) pending_[i].c->complete(pending_[i].res);
            pending_.erase(pending_.begin(), pending_.begin() + static_cast<long>(n));
            return true;
        }
        bool idle() const override { return pending_.empty(); }

    private:
        struct Pending {
            Completion* c;
            int32_t res;
        };
        const backends::BlockInfo& in_;
        std::vector<Pending> pending_;
    };
    backends::BlockInfo info_;
};

constexpr size_t kMemSize = 1 << 16;
constexpr uint64_t kUvaBase = 0x7f0000000000ull;

// Everything an input does not change is made once: the reactor and the device, the guest memory
// (a memfd mapped once; each input overwrites all of it) and its map, the call eventfd. Per input
// that was a memfd, a mapping and a map build, most of the time an execution took.
struct Env {
    Reactor reactor{0, ReactorConfig{.mode = PollMode::kNever, .poll_budget = std::chrono::microseconds(0), .cpu = -1, .ring_entries = 256}};
    std::unique_ptr<virtio::BlkDevice> blk;
    std::unique_ptr<virtio::BlkDevice> zoned;
    fuzz::GuestMemory mem{kMemSize, kUvaBase};
    std::shared_ptr<const shm::Region>& region = mem.region;
    std::shared_ptr<const shm::MemoryMap>& map = mem.map;
    UniqueFd call;
    Env() {
        spdlog::set_level(spdlog::level::off);
        if (!reactor.start().ok()) abort();
        auto backend = std::make_shared<backends::NullBackend>(1 << 20, 512, false);
        blk = std::make_unique<virtio::BlkDevice>("fuzz", backend, virtio::BlkOptions{1, "fuzz"},
                                                  std::vector<Reactor*>{&reactor});
        zoned = std::make_unique<virtio::BlkDevice>("fuzz-zoned", std::make_shared<ZonedNull>(), virtio::BlkOptions{1, "fuzz"},
                                                    std::vector<Reactor*>{&reactor});
        call.reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
        if (!call) abort();
    }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static Env env;
    if (size < 4) return 0;
    uint16_t qsize = static_cast<uint16_t>(1u << (data[0] % 9));  // 1..256
    uint8_t flags = data[1];
    uint16_t last_avail;
    std::memcpy(&last_avail, data + 2, 2);
    data += 4;
    size -= 4;

    auto& region = env.region;
    const size_t n = std::min(size, kMemSize);
    std::memcpy(region->host(), data, n);
    std::memset(region->host() + n, 0, kMemSize - n);  // nothing of the previous input is left
    auto& map = env.map;

    // Fixed ring layout inside the first 16 KiB; the rest is buffer space.
    virtio::QueueLayout layout{qsize, kUvaBase + 0x0, kUvaBase + 0x1000, kUvaBase + 0x2000};
    bool event_idx = flags & 1, indirect = flags & 2;

    virtio::InflightQueue* inflight = nullptr;
    if (flags & 4) {
        inflight = reinterpret_cast<virtio::InflightQueue*>(region->host() + 0x8000);
        if (flags & 8) inflight->desc_num = qsize;
    }
    std::vector<uint8_t> saved;
    if (inflight != nullptr) {
        // The device run below must see the same region the ring run started from.
        const uint64_t n = std::max(virtio::inflight_queue_bytes(qsize), virtio::inflight_queue_bytes_packed(qsize));
        saved.assign(region->host() + 0x8000, region->host() + 0x8000 + n);
    }

    virtio::SplitQueue q;
    if (q.activate(map, layout, last_avail, event_idx, indirect, inflight, virtio::kFVersion1).ok()) {
        iovec iov[64];
        auto pending = q.pending();
        for (uint16_t i = 0; pending.ok() && i < *pending; ++i) {
            auto head = q.pop_head();
            if (!head.ok()) break;
            virtio::Chain c;
            virtio::ChainError err;
            if (q.walk(*head, iov, &c, &err)) {
                for (size_t k = 0; k < c.n_readable + c.n_writable; ++k) {
                    auto* b = static_cast<uint8_t*>(iov[k].iov_base);
                    auto* base = region->host();
                    if (b < base || b + iov[k].iov_len > base + kMemSize) abort();  // escaped guest memory
                    volatile uint8_t touch = iov[k].iov_len ? b[iov[k].iov_len - 1] : 0;
                    (void)touch;
                }
            }
            q.push_used(*head, 0);
        }
        q.publish_used();
        q.needs_notify();
        q.enable_notify();
    }

    if (flags & 16) {
        virtio::PackedQueue pq;
        const uint32_t base = uint32_t{last_avail} | (uint32_t{last_avail} << 16);
        // With flag 4 the same region bytes are read as a packed inflight region (recovery of
        // a hostile one; then tracking on whatever it recovered).
        virtio::InflightQueuePacked* pin = nullptr;
        if (inflight != nullptr) {
            std::memcpy(region->host() + 0x8000, saved.data(), saved.size());
            pin = reinterpret_cast<virtio::InflightQueuePacked*>(region->host() + 0x8000);
        }
        if (pq.activate(map, layout, base, event_idx, indirect, pin, virtio::kFVersion1 | virtio::kFRingPacked).ok()) {
            iovec iov[64];
            std::vector<uint16_t> taken;
            auto pending = pq.pending();
            for (uint16_t i = 0; pending.ok() && i < *pending; ++i) {
                auto id = pq.pop_head();
                if (!id.ok()) break;
                taken.push_back(*id);
                virtio::Chain c;
                virtio::ChainError err;
                if (pq.walk(*id, iov, &c, &err)) {
                    for (size_t k = 0; k < c.n_readable + c.n_writable; ++k) {
                        auto* b = static_cast<uint8_t*>(iov[k].iov_base);
                        auto* base_ptr = region->host();
                        if (b < base_ptr || b + iov[k].iov_len > base_ptr + kMemSize) abort();  // escaped guest memory
                    }
                }
            }
            if (taken.size() > 1) pq.rewind(1);
            for (size_t k = taken.size() > 1 ? taken.size() - 1 : taken.size(); k-- > 0;) pq.push_used(taken[k], 1);
            pq.publish_used();
            pq.needs_notify();
            pq.enable_notify();
            pq.disable_notify();
        }
    }

    // The same memory through the blk device on a reactor.
    int call = env.call.get();
    virtio::QueueStart s;
    s.layout = layout;
    s.base = last_avail;
    s.features = (event_idx ? virtio::kFEventIdx : 0) | (indirect ? virtio::kFIndirectDesc : 0) | virtio::kFVersion1;
    s.mem = map;
    s.call = call;
    if (inflight != nullptr) {
        std::memcpy(region->host() + 0x8000, saved.data(), saved.size());
        s.inflight = inflight;
    }
    virtio::BlkDevice& dev = (flags & 32) ? *env.zoned : *env.blk;
    if (flags & 32) s.features |= virtio::blk::kFZoned;
    dev.set_features(s.features);
    if (dev.start_queue(0, std::move(s)).ok()) {
        env.reactor.run_sync([] {});
        env.reactor.run_sync([] {});
        dev.stop_queue(0);
    }
    uint64_t drained;
    while (read(call, &drained, sizeof(drained)) > 0) {
    }
    return 0;
}
