// Fuzzes the virtio-net device's data path: guest memory (a memfd at gpa 0) is filled from the
// input and holds an RX ring (descriptor table 0x0, avail 0x1000, used 0x2000) and a TX ring
// (0x3000, 0x4000, 0x5000); the device runs both on a real reactor over an in-memory host side
// (testing::FakeNetBackend), with features from the input. TX: every chain the guest made is
// walked, its virtio-net header checked (check_tx_header: checksum and GSO fields against the
// frame and the negotiated offloads) and the frame handed to the host side. RX: frames from the
// input (their own virtio-net headers, as a tap writes them) go into the guest's buffers, merged
// over several with MRG_RXBUF. Any crash, hang, out-of-bounds access or sanitizer report is a bug.
//
// Input: [u8 log2 queue size][u8 flags][u8 feature bits][u8 frames][u16 rx base][u16 tx base]
//        then `frames` times [u16 length][bytes] for RX (capped at 4 frames of 9 KiB),
//        then the guest memory image.
// flags: 1 EVENT_IDX, 2 INDIRECT_DESC, 4 the TX queue's first chains are walked before the RX
// frames arrive (else after).
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "core/log.hpp"
#include "guest_memory.hpp"
#include "testing/fake_net_backend.hpp"
#include "virtio/net_device.hpp"
#include "virtio/net_types.hpp"
#include "virtio/virtqueue.hpp"

using namespace vhostd;

namespace {

constexpr size_t kMemSize = 1 << 16;
constexpr uint64_t kUvaBase = 0x7f0000000000ull;

// The feature byte's bits, in order.
constexpr uint64_t kFeatureBits[8] = {
    virtio::net::kFCsum,     virtio::net::kFGuestCsum, virtio::net::kFMrgRxbuf, virtio::net::kFHostTso4,
    virtio::net::kFHostTso6, virtio::net::kFGuestTso4, virtio::net::kFHostUfo,  virtio::net::kFHostEcn,
};

// Made once: the reactor, the device on its fake host side, guest memory and its map, call fds.
struct Env {
    Reactor reactor{0, ReactorConfig{.mode = PollMode::kNever, .poll_budget = std::chrono::microseconds(0), .cpu = -1, .ring_entries = 256}};
    testing::FakeNetBackend* fake = nullptr;  // owned by the device
    std::unique_ptr<virtio::NetDevice> net;
    fuzz::GuestMemory mem{kMemSize, kUvaBase};
    std::shared_ptr<const shm::Region>& region = mem.region;
    std::shared_ptr<const shm::MemoryMap>& map = mem.map;
    UniqueFd call[2];
    Env() {
        spdlog::set_level(spdlog::level::off);
        if (!reactor.start().ok()) abort();
        auto backend = std::make_unique<testing::FakeNetBackend>(1);
        fake = backend.get();
        net = std::make_unique<virtio::NetDevice>("fuzz", std::move(backend), virtio::NetOptions{},
                                                  std::vector<Reactor*>{&reactor});
        for (auto& c : call) {
            c.reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
            if (!c) abort();
        }
    }
};

void drain(int fd) {
    uint64_t v;
    while (read(fd, &v, sizeof(v)) > 0) {
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static Env env;
    if (size < 8) return 0;
    const uint16_t qsize = static_cast<uint16_t>(1u << (data[0] % 9));  // 1..256
    const uint8_t flags = data[1];
    uint64_t features = virtio::kFVersion1 | (flags & 1 ? virtio::kFEventIdx : 0) | (flags & 2 ? virtio::kFIndirectDesc : 0);
    for (int b = 0; b < 8; ++b)
        if (data[2] & (1u << b)) features |= kFeatureBits[b];
    const unsigned nframes = std::min<unsigned>(data[3], 4);
    uint16_t base[2];
    std::memcpy(&base[0], data + 4, 2);
    std::memcpy(&base[1], data + 6, 2);
    data += 8;
    size -= 8;
    std::vector<testing::Frame> frames;
    for (unsigned i = 0; i < nframes && size >= 2; ++i) {
        uint16_t len;
        std::memcpy(&len, data, 2);
        data += 2;
        size -= 2;
        size_t n = std::min<size_t>({len, size, 9216});
        frames.emplace_back(data, data + n);
        data += n;
        size -= n;
    }
    auto& region = env.region;
    const size_t n = std::min(size, kMemSize);
    std::memcpy(region->host(), data, n);
    std::memset(region->host() + n, 0, kMemSize - n);  // nothing of the previous input is left

    {
        std::lock_guard lk(env.fake->queue(0).mu);
        env.fake->queue(0).to_guest.clear();
        env.fake->queue(0).from_guest.clear();
    }
    env.net->set_features(features);
    bool running[2] = {false, false};
    for (uint32_t qi = 0; qi < 2; ++qi) {
        virtio::QueueStart s;
        const uint64_t at = kUvaBase + qi * 0x3000;
        s.layout = virtio::QueueLayout{qsize, at, at + 0x1000, at + 0x2000};
        s.base = base[qi];
        s.features = features;
        s.mem = env.map;
        s.call = env.call[qi].get();
        running[qi] = env.net->start_queue(qi, std::move(s)).ok();
    }
    auto inject = [&] {
        for (auto& f : frames) env.fake->inject(0, f);
    };
    if (flags & 4) {
        (void)env.fake->fire_ready(0, 1);
        env.reactor.run_sync([] {});
        inject();
    } else {
        inject();
        (void)env.fake->fire_ready(0, 1);
    }
    env.reactor.run_sync([] {});
    env.reactor.run_sync([] {});
    for (uint32_t qi = 0; qi < 2; ++qi)
        if (running[qi]) env.net->stop_queue(qi);
    for (auto& c : env.call) drain(c.get());
    // What the guest sent reached the host side within its own memory's bounds (ASan checks the
    // copies); drop it for the next input.
    (void)env.fake->take_sent(0);
    return 0;
}
