// The virtio-net device without a tap: its host side is an in-memory NetBackend (frames in
// deques, -EAGAIN when empty / full, readiness an eventfd read the test fires by hand). A
// driver-side guest drives RX and TX through a real vhost-user socket. This is what the backend
// boundary promises: the device needs nothing but the interface, and honours its readiness (it
// does not spin on an empty / full backend, a fired wake-up wakes a sleeping reactor, and a
// queue stops only after its armed wake-up completed).
#include <fcntl.h>
#include <sys/mman.h>
#include <poll.h>
#include <sys/eventfd.h>

#include <algorithm>
#include <atomic>
#include <deque>
#include <mutex>
#include <thread>
#include <utility>

#include "testing/fake_net_backend.hpp"
#include "testing/packed_driver_queue.hpp"
#include "testing/blk_fixture.hpp"
#include "vhost/server.hpp"
#include "virtio/net_device.hpp"
#include "virtio/net_types.hpp"

namespace vhostd::testing {
namespace {

namespace net = virtio::net;

constexpr uint64_t kNetFeatures = virtio::kFVersion1 | virtio::kFEventIdx | virtio::kFIndirectDesc | net::kFMac |
                                  net::kFMtu | net::kFMrgRxbuf | net::kFCsum | net::kFGuestCsum | net::kFHostTso4 |
                                  net::kFHostTso6 | net::kFGuestTso4 | net::kFGuestTso6 | net::kFHostEcn |
                                  net::kFGuestEcn | net::kFHostUfo | net::kFGuestUfo | net::kFStatus | net::kFMq |
                                  net::kFCtrlVq | vhost::kFProtocolFeatures;

Frame eth_frame(size_t len, uint8_t seed) {
    Frame f(len);
    const uint8_t dst[6] = {0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc}, src[6] = {0x02, 0, 0, 0, 0, 0x01};
    std::memcpy(f.data(), dst, 6);
    std::memcpy(f.data() + 6, src, 6);
    f[12] = 0x88;
    f[13] = 0xb5;
    for (size_t i = 14; i < len; ++i) f[i] = static_cast<uint8_t>(seed + i * 13);
    return f;
}

// `hdr` bytes of virtio-net header (flags as given, the rest zero) + frame.
Frame with_hdr(uint32_t hdr, const Frame& f, uint8_t flags = 0) {
    Frame out(hdr, 0);
    out[0] = flags;
    out.insert(out.end(), f.begin(), f.end());
    return out;
}

class NetFakeBackend : public BlkFixture {
protected:
    void SetUp() override {
        BlkFixture::SetUp();
        auto fake = std::make_unique<FakeNetBackend>(2);
        fake_ = fake.get();
        virtio::NetOptions opts;
        opts.queue_pairs = 2;
        Reactor& r = own_reactor();
        serve(std::make_unique<virtio::NetDevice>("fakenet", std::move(fake), opts, std::vector<Reactor*>{&r, &r}),
              path("n.sock"));
    }

    void connect(Guest& g, uint64_t want = kNetFeatures) {
        connect_guest(g, path("n.sock"), 4, want, 256);
        hdr_ = net::hdr_size(g.features);
    }

    void post_rx(Guest& g, uint32_t qi, int n, uint32_t size = 1536) {
        for (int i = 0; i < n; ++i) {
            auto gpa = g.mem->alloc(size, 64);
            ASSERT_OK(gpa);
            DriverBuf b{gpa.value(), size, true};
            auto head = g.queues[qi]->add_chain({&b, 1});
            ASSERT_OK(head);
            rx_bufs_[head.value()] = b;
        }
        ASSERT_OK(g.queues[qi]->publish_and_kick(g.kicks[qi].get()));
    }

    // One received frame: its header and data, merged over num_buffers used entries.
    std::optional<std::pair<net::Hdr, Frame>> recv_rx(Guest& g, uint32_t qi, int timeout_ms = 3000) {
        auto take = [&](const virtio::UsedElem& e) {
            auto b = rx_bufs_.at(static_cast<uint16_t>(e.id));
            rx_bufs_.erase(static_cast<uint16_t>(e.id));
            EXPECT_LE(e.len, b.len);
            const uint8_t* p = g.mem->host(b.gpa, e.len);
            return Frame(p, p + e.len);
        };
        auto u = g.queues[qi]->wait_used(g.calls[qi].get(), std::chrono::milliseconds(timeout_ms));
        if (!u) return std::nullopt;
        Frame first = take(*u);
        EXPECT_GE(first.size(), hdr_);
        if (first.size() < hdr_) return std::nullopt;
        net::Hdr h{};
        std::memcpy(&h, first.data(), hdr_);
        Frame data(first.begin() + hdr_, first.end());
        uint16_t n = hdr_ == sizeof(net::Hdr) ? h.num_buffers : 1;
        for (uint16_t i = 1; i < n; ++i) {
            auto more = g.queues[qi]->wait_used(g.calls[qi].get(), std::chrono::milliseconds(timeout_ms));
            EXPECT_TRUE(more.has_value()) << "merged buffer " << i << " of " << n << " missing";
            if (!more) return std::nullopt;
            Frame d = take(*more);
            data.insert(data.end(), d.begin(), d.end());
        }
        return std::make_pair(h, data);
    }

    // Adds a TX chain of header + frame on queue qi (published with the next kick).
    uint16_t add_tx(Guest& g, uint32_t qi, const Frame& frame, net::Hdr h = {}) {
        Frame bytes(hdr_);
        std::memcpy(bytes.data(), &h, hdr_);
        bytes.insert(bytes.end(), frame.begin(), frame.end());
        auto gpa = g.mem->alloc(bytes.size(), 64);
        EXPECT_TRUE(gpa.ok());
        std::memcpy(g.mem->host(gpa.value(), bytes.size()), bytes.data(), bytes.size());
        DriverBuf b{gpa.value(), static_cast<uint32_t>(bytes.size()), false};
        auto head = g.queues[qi]->add_chain({&b, 1});
        EXPECT_TRUE(head.ok());
        return head.ok() ? head.value() : 0;
    }

    // Waits (bounded) until pred() holds.
    template <class P>
    static bool eventually(P pred, int timeout_ms = 3000) {
        auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
        while (!pred()) {
            if (std::chrono::steady_clock::now() > end) return false;
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        return true;
    }

    FakeNetBackend* fake_ = nullptr;  // owned by the device the fixture serves
    uint32_t hdr_ = sizeof(net::Hdr);
    std::map<uint16_t, DriverBuf> rx_bufs_;
};

TEST_F(NetFakeBackend, FrameFormatFollowsTheGuest) {
    {
        Guest g;
        connect(g);
        auto [hdr, o] = fake_->format();
        EXPECT_EQ(hdr, sizeof(net::Hdr));
        EXPECT_EQ(o, (backends::NetOffloads{.csum = true, .tso4 = true, .tso6 = true, .tso_ecn = true, .ufo = true}));
        EXPECT_TRUE(fake_->queue(0).attached);
        EXPECT_TRUE(fake_->queue(1).attached);
    }
    EXPECT_TRUE(eventually([&] { return !fake_->queue(0).attached && !fake_->queue(1).attached; }))
        << "queues stay attached after the session ended";
    Guest g;
    connect(g, kNetFeatures & ~(virtio::kFVersion1 | net::kFMrgRxbuf | net::kFGuestCsum));
    auto [hdr, o] = fake_->format();
    EXPECT_EQ(hdr, net::kHdrLegacyBytes);
    EXPECT_EQ(o, backends::NetOffloads{}) << "no GUEST_CSUM: no offloads at all";
}

TEST_F(NetFakeBackend, EveryQueueSignalsOnceWhenItStartsAndWhenItGetsANewCallFd) {
    // A previous backend may have published used entries and died before their interrupt: each
    // queue signals its call fd when it starts and when the frontend hands it another one, with
    // no traffic at all (blk and net share this in QueueWorker).
    auto fires = [](int fd, int ms) {
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, ms) != 1) return false;
        uint64_t v = 0;
        return ::read(fd, &v, sizeof(v)) == static_cast<ssize_t>(sizeof(v));
    };
    Guest g;
    connect(g);
    for (uint32_t i = 0; i < 4; ++i) EXPECT_TRUE(fires(g.calls[i].get(), 2000)) << "queue " << i << " at start";
    for (uint32_t i = 0; i < 4; ++i) EXPECT_FALSE(fires(g.calls[i].get(), 0)) << "queue " << i << ": once";
    UniqueFd fresh = make_eventfd();
    ASSERT_OK(g.fe->set_vring_call(1, fresh.get()));
    EXPECT_TRUE(fires(fresh.get(), 2000)) << "a running queue signals its new call fd";
    EXPECT_FALSE(fires(g.calls[1].get(), 0)) << "not the old one";
}

TEST_F(NetFakeBackend, RxFramesAreLoggedForAMigrationHeaderAndMergedBuffersToo) {
    // Live migration: every byte a received frame puts in guest buffers (the backend's data, and
    // the header fields vhostd writes itself) is marked in the dirty log.
    extra_protocol_features_ = vhost::pf::kLogShmfd;
    Guest g;
    connect(g);
    constexpr uint64_t kLogBytes = ((4ull << 30) + (16ull << 20)) / 4096 / 8;
    UniqueFd fd(memfd_create("log", MFD_CLOEXEC | MFD_ALLOW_SEALING));
    ASSERT_EQ(ftruncate(fd.get(), kLogBytes), 0);
    ASSERT_EQ(fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK), 0);
    void* m = mmap(nullptr, kLogBytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
    ASSERT_NE(m, MAP_FAILED);
    const auto* bits = static_cast<const uint8_t*>(m);
    auto marked = [&](uint64_t gpa) { return (bits[gpa / 4096 / 8] >> (gpa / 4096 % 8)) & 1; };
    ASSERT_OK(g.fe->set_log_base(fd.get(), kLogBytes));
    ASSERT_OK(g.fe->set_features(g.features | vhost::kFLogAll));
    post_rx(g, 0, 16);
    // Buffers in the order the device takes them (a fresh ring: posting order, rising gpa).
    std::vector<DriverBuf> bufs;
    for (auto& [head, b] : rx_bufs_) bufs.push_back(b);
    std::sort(bufs.begin(), bufs.end(), [](const DriverBuf& a, const DriverBuf& b) { return a.gpa < b.gpa; });
    Frame f = eth_frame(5000, 7);
    fake_->inject(0, with_hdr(hdr_, f));
    auto r = recv_rx(g, 0);
    ASSERT_TRUE(r.has_value());
    ASSERT_EQ(r->first.num_buffers, 4) << "merged over 4 buffers";
    uint64_t left = hdr_ + f.size();
    for (size_t i = 0; left > 0; ++i) {
        uint64_t n = std::min<uint64_t>(left, bufs[i].len);
        for (uint64_t off = 0; off < n; off += 4096) EXPECT_TRUE(marked(bufs[i].gpa + off)) << "buffer " << i << " +" << off;
        EXPECT_TRUE(marked(bufs[i].gpa + n - 1)) << "buffer " << i << " end";
        left -= n;
    }
    munmap(m, kLogBytes);
}

TEST_F(NetFakeBackend, PackedRingsCarryFramesBothWaysAndGetVringBaseReportsBothPositions) {
    auto fe = Frontend::connect(path("n.sock"));
    ASSERT_OK(fe);
    auto& f = *fe.value();
    auto offered = f.get_features();
    ASSERT_OK(offered);
    ASSERT_TRUE(offered.value() & virtio::kFRingPacked) << "net devices offer packed rings";
    const uint64_t features = offered.value() & (kNetFeatures | virtio::kFRingPacked);
    auto pf = f.get_protocol_features();
    ASSERT_OK(pf);
    ASSERT_OK(f.set_protocol_features(pf.value() & (vhost::pf::kMq | vhost::pf::kReplyAck)));
    ASSERT_OK(f.set_owner());
    ASSERT_OK(f.set_features(features));
    auto mem = GuestRam::create({{0, 16ull << 20}});
    ASSERT_OK(mem);
    ASSERT_OK(f.set_mem_table(*mem.value()));
    std::vector<std::unique_ptr<PackedDriverQueue>> qs;
    std::vector<UniqueFd> kicks, calls;
    for (uint32_t i = 0; i < 2; ++i) {  // rx0, tx0
        auto q = PackedDriverQueue::create(*mem.value(), 256, (features & virtio::kFEventIdx) != 0);
        ASSERT_OK(q);
        qs.push_back(std::move(q).value());
        kicks.push_back(make_eventfd());
        calls.push_back(make_eventfd());
        const virtio::QueueLayout l = qs[i]->layout();
        ASSERT_OK(f.set_vring_num(i, 256));
        ASSERT_OK(f.set_vring_base(i, virtio::kPackedFreshBase));
        ASSERT_OK(f.set_vring_addr(vhost::VringAddr{i, 0, l.desc_uva, l.used_uva, l.avail_uva, 0}));
        ASSERT_OK(f.set_vring_kick(i, kicks[i].get()));
        ASSERT_OK(f.set_vring_call(i, calls[i].get()));
        ASSERT_OK(f.set_vring_enable(i, true));
    }
    const uint32_t hdr = net::hdr_size(features);
    // TX: frames (several rounds of the 256-slot ring, so the wrap counters flip) reach the backend.
    for (int round = 0; round < 3; ++round) {
        std::vector<Frame> frames;
        for (int i = 0; i < 100; ++i) frames.push_back(eth_frame(60 + static_cast<size_t>(i) * 7, static_cast<uint8_t>(i + round)));
        for (const auto& fr : frames) {
            Frame bytes(hdr);
            bytes.insert(bytes.end(), fr.begin(), fr.end());
            auto gpa = mem.value()->alloc(bytes.size(), 64);
            ASSERT_OK(gpa);
            std::memcpy(mem.value()->host(gpa.value(), bytes.size()), bytes.data(), bytes.size());
            DriverBuf b{gpa.value(), static_cast<uint32_t>(bytes.size()), false};
            ASSERT_OK(qs[1]->add_chain({&b, 1}));
        }
        ASSERT_OK(qs[1]->publish_and_kick(kicks[1].get()));
        for (size_t i = 0; i < frames.size(); ++i)
            ASSERT_TRUE(qs[1]->wait_used(calls[1].get(), std::chrono::seconds(3)).has_value()) << "frame " << i;
        auto sent = fake_->take_sent(0);
        ASSERT_EQ(sent.size(), frames.size());
        for (size_t i = 0; i < frames.size(); ++i) EXPECT_EQ(sent[i], with_hdr(hdr, frames[i]));
    }
    // RX: a frame lands in the guest's buffers.
    std::vector<DriverBuf> rx;
    for (int i = 0; i < 8; ++i) {
        auto gpa = mem.value()->alloc(1536, 64);
        ASSERT_OK(gpa);
        rx.push_back({gpa.value(), 1536, true});
        ASSERT_OK(qs[0]->add_chain({&rx.back(), 1}));
    }
    ASSERT_OK(qs[0]->publish_and_kick(kicks[0].get()));
    Frame fr = eth_frame(1000, 9);
    fake_->inject(0, with_hdr(hdr, fr));
    auto u = qs[0]->wait_used(calls[0].get(), std::chrono::seconds(3));
    ASSERT_TRUE(u.has_value());
    EXPECT_EQ(u->len, hdr + fr.size());
    const uint8_t* got = mem.value()->host(rx[u->id].gpa + hdr, fr.size());
    EXPECT_EQ(Frame(got, got + fr.size()), fr);
    // Stopping reports where both rings are, wrap counters included: everything taken was used,
    // so both positions are where the driver's next used buffer would be (RX took one of eight).
    for (uint32_t i = 0; i < 2; ++i) {
        auto base = f.get_vring_base(i);
        ASSERT_OK(base);
        EXPECT_EQ(base.value(), virtio::packed_base(qs[i]->next_used(), qs[i]->next_used())) << "vring " << i;
    }
    EXPECT_FALSE(qs[1]->next_used().wrap) << "the TX ring wrapped";
}

TEST_F(NetFakeBackend, TxFramesReachTheBackendWithACheckedHeader) {
    Guest g;
    connect(g);
    std::vector<Frame> frames;
    for (int i = 0; i < 8; ++i) frames.push_back(eth_frame(60 + 100 * static_cast<size_t>(i), static_cast<uint8_t>(i)));
    net::Hdr h{};
    h.flags = 0xfe;  // DATA_VALID and unknown bits: not passed on
    h.num_buffers = 7;
    for (const auto& f : frames) add_tx(g, 1, f, h);
    ASSERT_OK(g.queues[1]->publish_and_kick(g.kicks[1].get()));
    for (size_t i = 0; i < frames.size(); ++i) {
        auto u = g.queues[1]->wait_used(g.calls[1].get(), std::chrono::seconds(3));
        ASSERT_TRUE(u.has_value()) << "frame " << i;
        EXPECT_EQ(u->len, 0u);
    }
    auto sent = fake_->take_sent(0);
    ASSERT_EQ(sent.size(), frames.size());
    for (size_t i = 0; i < frames.size(); ++i) EXPECT_EQ(sent[i], with_hdr(hdr_, frames[i])) << "frame " << i;
    // A malformed chain (runt frame) never reaches the backend.
    add_tx(g, 1, Frame(8, 1));
    ASSERT_OK(g.queues[1]->publish_and_kick(g.kicks[1].get()));
    ASSERT_TRUE(g.queues[1]->wait_used(g.calls[1].get(), std::chrono::seconds(3)).has_value());
    EXPECT_TRUE(fake_->take_sent(0).empty());
}

TEST_F(NetFakeBackend, RxFramesLandInGuestBuffersAndMerge) {
    {
        Guest g;
        connect(g);
        post_rx(g, 0, 128);  // 128 x 1536: room for the largest (GSO) frame, so reads go direct
        for (size_t len : {60u, 1514u, 5000u}) {
            Frame f = eth_frame(len, static_cast<uint8_t>(len));
            fake_->inject(0, with_hdr(hdr_, f, net::kHdrFNeedsCsum));
            auto r = recv_rx(g, 0);
            ASSERT_TRUE(r.has_value()) << len;
            EXPECT_EQ(r->second, f);
            EXPECT_EQ(r->first.num_buffers, (hdr_ + len + 1535) / 1536) << len;
            EXPECT_EQ(r->first.flags, net::kHdrFNeedsCsum) << "GUEST_CSUM: the backend's flags pass";
        }
    }
    // Fewer buffers than the largest frame needs: through the bounce buffer, still whole.
    rx_bufs_.clear();
    Guest g;
    connect(g);
    post_rx(g, 0, 4);
    Frame f = eth_frame(3000, 1);
    fake_->inject(0, with_hdr(hdr_, f));
    auto r = recv_rx(g, 0);
    ASSERT_TRUE(r.has_value());
    EXPECT_EQ(r->second, f);
    EXPECT_EQ(r->first.num_buffers, 2);
}

TEST_F(NetFakeBackend, RxWithoutGuestCsumClearsTheFlags) {
    Guest g;
    connect(g, kNetFeatures & ~(net::kFGuestCsum | net::kFGuestTso4 | net::kFGuestTso6 | net::kFGuestUfo));
    post_rx(g, 0, 8);
    Frame f = eth_frame(200, 3);
    fake_->inject(0, with_hdr(hdr_, f, net::kHdrFNeedsCsum));
    auto r = recv_rx(g, 0);
    ASSERT_TRUE(r.has_value());
    EXPECT_EQ(r->first.flags, 0);
    EXPECT_EQ(r->second, f);
}

TEST_F(NetFakeBackend, RxWaitsForReadiness) {
    Guest g;
    connect(g);
    post_rx(g, 0, 64);
    // The backend is empty: the device arms its wake-up and stops asking (no spinning).
    ASSERT_TRUE(eventually([&] { return fake_->queue(0).arms.load() > 0; }));
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    uint64_t receives = fake_->queue(0).receives.load();
    // A frame without a readiness signal is not noticed...
    Frame f1 = eth_frame(100, 1);
    fake_->inject(0, with_hdr(hdr_, f1), false);
    EXPECT_FALSE(recv_rx(g, 0, 300).has_value()) << "the device read without being told the backend is ready";
    EXPECT_EQ(fake_->queue(0).receives.load(), receives) << "the device polls a backend that said EAGAIN";
    // ...until it is fired: the (sleeping) reactor wakes and the frame arrives.
    ASSERT_TRUE(fake_->fire_ready(0, 0));
    auto r = recv_rx(g, 0);
    ASSERT_TRUE(r.has_value());
    EXPECT_EQ(r->second, f1);
}

TEST_F(NetFakeBackend, RxFramesWaitInTheBackendForGuestBuffers) {
    Guest g;
    connect(g);
    for (int i = 0; i < 10; ++i) fake_->inject(0, with_hdr(hdr_, eth_frame(100, static_cast<uint8_t>(i))));
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    EXPECT_EQ(fake_->waiting_for_guest(0), 10u) << "frames taken from the backend without guest buffers";
    post_rx(g, 0, 16);
    for (int i = 0; i < 10; ++i) {
        auto r = recv_rx(g, 0);
        ASSERT_TRUE(r.has_value()) << "frame " << i;
        EXPECT_EQ(r->second, eth_frame(100, static_cast<uint8_t>(i))) << "frame " << i << " out of order or corrupt";
    }
}

TEST_F(NetFakeBackend, TxWaitsForRoomAndKeepsOrder) {
    Guest g;
    connect(g);
    fake_->set_tx_cap(1, 3);  // pair 1: TX vring 3
    std::vector<Frame> frames;
    for (int i = 0; i < 10; ++i) frames.push_back(eth_frame(100, static_cast<uint8_t>(i)));
    for (const auto& f : frames) add_tx(g, 3, f);
    ASSERT_OK(g.queues[3]->publish_and_kick(g.kicks[3].get()));
    std::vector<Frame> got;
    size_t used = 0;
    while (got.size() < frames.size()) {
        // The backend takes three, then says EAGAIN: the rest stays in the ring (not dropped,
        // not completed) until the test makes room and fires TX readiness.
        ASSERT_TRUE(eventually([&] { return fake_->queue(1).arms.load() > 0 || g.queues[3]->has_used(); }));
        size_t expect = std::min<size_t>(3, frames.size() - got.size());
        for (size_t i = 0; i < expect; ++i) {
            auto u = g.queues[3]->wait_used(g.calls[3].get(), std::chrono::seconds(3));
            ASSERT_TRUE(u.has_value()) << "frame " << used;
            ++used;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        EXPECT_FALSE(g.queues[3]->has_used()) << "a frame completed although the backend had no room";
        for (auto& s : fake_->take_sent(1)) got.push_back(std::move(s));
        ASSERT_EQ(got.size(), used);
        ASSERT_TRUE(fake_->fire_ready(1, 1));
    }
    for (size_t i = 0; i < frames.size(); ++i) EXPECT_EQ(got[i], with_hdr(hdr_, frames[i])) << "frame " << i;
    EXPECT_GE(fake_->queue(1).arms.load(), 3u);
}

TEST_F(NetFakeBackend, StopWaitsForArmedWakeups) {
    for (int round = 0; round < 10; ++round) {
        {
            Guest g;
            connect(g);
            post_rx(g, 0, 4);  // RX waits for the empty backend
            fake_->set_tx_cap(0, 0);
            add_tx(g, 1, eth_frame(100, 1));  // TX waits for room that never comes
            ASSERT_OK(g.queues[1]->publish_and_kick(g.kicks[1].get()));
            ASSERT_TRUE(eventually([&] { return fake_->queue(0).arms.load() >= 2u * (round + 1); }));
            // Stop both while their wake-ups are armed: the stop cancels them (retrying when the
            // first try finds no SQ space) and waits for the cancelled operation to complete. The
            // queue's kick read is cancelled at once, so only this ordering tells the two apart.
            fake_->queue(0).cancel_refusals = 2;
            ASSERT_OK(g.fe->get_vring_base(0));
            fake_->queue(0).cancel_refusals = 2;
            auto base = g.fe->get_vring_base(1);
            ASSERT_OK(base);
            EXPECT_EQ(base.value(), 0) << "the frame the backend refused must go back to the ring";
            EXPECT_EQ(fake_->queue(0).open_channels.load(), 0);
        }
        fake_->set_tx_cap(0, 1024);
        EXPECT_EQ(fake_->queue(0).destroyed_armed.load(), 0) << "a channel went away with its wake-up armed";
    }
    // A RARP that comes before any ring runs (a migration destination) goes out when one starts.
    {
        Guest early;
        connect_guest(early, path("n.sock"), 4, kNetFeatures, 256, false);
        const uint8_t mac[6] = {0x52, 0x54, 0, 9, 8, 7};
        ASSERT_OK(early.fe->send_rarp(mac));
        EXPECT_TRUE(fake_->take_sent(0).empty()) << "no queue runs yet";
        ASSERT_OK(early.fe->set_vring_enable(0, true));
        ASSERT_OK(early.fe->set_vring_enable(1, true));
        auto sent = fake_->take_sent(0);
        ASSERT_EQ(sent.size(), 1u) << "announced once its queue started";
        EXPECT_EQ(0, std::memcmp(sent[0].data() + net::hdr_size(early.features) + 6, mac, 6));
    }
    // RARP goes through the backend of an attached queue.
    Guest g;
    connect(g);
    const uint8_t mac[6] = {0x52, 0x54, 0, 1, 2, 3};
    ASSERT_OK(g.fe->send_rarp(mac));
    auto sent = fake_->take_sent(0);
    ASSERT_EQ(sent.size(), 1u);
    ASSERT_EQ(sent[0].size(), hdr_ + 60);
    EXPECT_EQ(0, std::memcmp(sent[0].data() + hdr_ + 6, mac, 6));
}

}  // namespace
}  // namespace vhostd::testing
