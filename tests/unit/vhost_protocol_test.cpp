// The frontend as an adversary, and the session lifecycle: malformed messages get a closed
// connection (or an error ack when one was asked for), never a crash; the device serves the
// next frontend afterwards; other devices are unaffected; reconnect cycles leak nothing;
// client mode; memory table changes under running queues; guest ring abuse stops one queue.
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>

#include <cstring>

#include "testing/blk_fixture.hpp"

namespace vhostd::testing {
namespace {

using vhost::MsgHeader;
using vhost::Request;

MsgHeader hdr(Request r, uint32_t size, uint32_t flags = vhost::kVersion) {
    return MsgHeader{static_cast<uint32_t>(r), flags, size};
}


class VhostProtocol : public OneBlkDevice {
protected:


    // Sends one raw message on a fresh connection (after optional setup) and expects the
    // backend to close the connection.
    void expect_closed(const MsgHeader& h, std::vector<uint8_t> payload, std::vector<int> fds = {},
                       const char* what = "") {
        auto fe = Frontend::connect(sock_);
        ASSERT_OK(fe);
        ASSERT_OK(fe.value()->send_raw(h, payload, fds));
        EXPECT_TRUE(fe.value()->peer_closed(std::chrono::seconds(3))) << "connection not closed: " << what;
    }
};

TEST_F(VhostProtocol, OversizedPayloadClosesConnection) {
    expect_closed(hdr(Request::kGetFeatures, vhost::kMaxPayload + 1), std::vector<uint8_t>(64), {}, "oversized");
    expect_device_still_serves();
}

TEST_F(VhostProtocol, BadVersionAndReplyFlagClose) {
    expect_closed(hdr(Request::kGetFeatures, 0, 0x2), {}, {}, "version 2");
    expect_closed(hdr(Request::kGetFeatures, 0, vhost::kVersion | vhost::kFlagReply), {}, {}, "reply flag");
    expect_device_still_serves();
}

TEST_F(VhostProtocol, TruncatedPayloadThenHangupIsHandled) {
    auto fe = Frontend::connect(sock_);
    ASSERT_OK(fe);
    // Header promises 40 bytes; 10 arrive, then the frontend disappears.
    ASSERT_OK(fe.value()->send_raw(hdr(Request::kSetVringAddr, 40), std::vector<uint8_t>(10)));
    fe.value().reset();
    expect_device_still_serves();
}

TEST_F(VhostProtocol, WrongPayloadSizesClose) {
    expect_closed(hdr(Request::kSetFeatures, 4), std::vector<uint8_t>(4), {}, "short u64");
    expect_closed(hdr(Request::kSetVringNum, 12), std::vector<uint8_t>(12), {}, "long vring state");
    expect_closed(hdr(Request::kSetVringAddr, 8), std::vector<uint8_t>(8), {}, "short vring addr");
    expect_device_still_serves();
}

TEST_F(VhostProtocol, VringIndexOutOfRangeIncludingHighBits) {
    expect_closed(hdr(Request::kSetVringNum, 8), bytes(vhost::VringState{2, 64}), {}, "index == queues");
    expect_closed(hdr(Request::kSetVringNum, 8), bytes(vhost::VringState{0x80000000u, 64}), {}, "high bit");
    expect_closed(hdr(Request::kGetVringBase, 8), bytes(vhost::VringState{255, 0}), {}, "get base 255");
    UniqueFd e = make_eventfd();
    int fd = e.get();
    expect_closed(hdr(Request::kSetVringKick, 8), bytes(uint64_t{5}), {fd}, "kick index 5");
    expect_closed(hdr(Request::kSetVringCall, 8), bytes(uint64_t{1ull << 40}), {fd}, "reserved bits");
    expect_device_still_serves();
}

TEST_F(VhostProtocol, WrongFdCountsClose) {
    UniqueFd e1 = make_eventfd(), e2 = make_eventfd();
    // A kick with no fd and no "no fd" flag; a kick with two fds; GET_FEATURES with an fd.
    expect_closed(hdr(Request::kSetVringKick, 8), bytes(uint64_t{0}), {}, "kick without fd");
    expect_closed(hdr(Request::kSetVringKick, 8), bytes(uint64_t{0}), {e1.get(), e2.get()}, "kick with 2 fds");
    expect_closed(hdr(Request::kGetFeatures, 0), {}, {e1.get()}, "fd on GET_FEATURES");
    // SET_MEM_TABLE claiming 2 regions with 1 fd.
    std::vector<uint8_t> mt(8 + 2 * 32, 0);
    uint32_t n = 2;
    std::memcpy(mt.data(), &n, 4);
    expect_closed(hdr(Request::kSetMemTable, static_cast<uint32_t>(mt.size())), mt, {e1.get()}, "2 regions 1 fd");
    // Region count that lies about the payload size.
    n = 7;
    std::memcpy(mt.data(), &n, 4);
    expect_closed(hdr(Request::kSetMemTable, static_cast<uint32_t>(mt.size())), mt, {e1.get(), e2.get()},
                  "count lies");
    expect_device_still_serves();
}

TEST_F(VhostProtocol, BadMemoryRegionsAreRejected) {
    int fd = memfd_create("t", MFD_CLOEXEC);
    ASSERT_GE(fd, 0);
    UniqueFd mfd(fd);
    ASSERT_EQ(ftruncate(fd, 1 << 20), 0);
    auto table = [](std::vector<vhost::MemRegion> regs) {
        std::vector<uint8_t> p(8 + regs.size() * 32, 0);
        uint32_t n = static_cast<uint32_t>(regs.size());
        std::memcpy(p.data(), &n, 4);
        std::memcpy(p.data() + 8, regs.data(), regs.size() * 32);
        return p;
    };
    struct Case {
        const char* what;
        std::vector<vhost::MemRegion> regs;
    };
    std::vector<Case> cases = {
        {"offset past the fd's size", {{0, 1 << 20, 0x1000000, 1 << 20}}},
        {"size past the fd's size", {{0, 2 << 20, 0x1000000, 0}}},
        {"gpa wraps 2^64", {{~0ull - 100, 1 << 20, 0x1000000, 0}}},
        {"uva wraps 2^64", {{0, 1 << 20, ~0ull - 5, 0}}},
        {"offset wraps 2^64", {{0, 1 << 20, 0x1000000, ~0ull - 10}}},
        {"size 0", {{0, 0, 0x1000000, 0}}},
        {"overlapping gpa", {{0, 1 << 19, 0x1000000, 0}, {1 << 18, 1 << 19, 0x2000000, 0}}},
        {"overlapping uva", {{0, 1 << 19, 0x1000000, 0}, {1 << 20, 1 << 19, 0x1000000 + 4096, 0}}},
    };
    for (auto& c : cases) {
        auto p = table(c.regs);
        std::vector<int> fds(c.regs.size(), fd);
        // With REPLY_ACK negotiated the frontend gets an error ack and the connection stays.
        auto fe = Frontend::connect(sock_);
        ASSERT_OK(fe);
        ASSERT_OK(fe.value()->set_protocol_features(vhost::pf::kReplyAck));
        auto st = fe.value()->set_mem_table(std::span<const vhost::MemRegion>(c.regs), fds);
        EXPECT_FALSE(st.ok()) << c.what;
        EXPECT_TRUE(fe.value()->get_features().ok()) << "connection died after: " << c.what;
        fe.value().reset();  // one frontend at a time: free the device for the next one
        // Without an ack requested: closed.
        expect_closed(hdr(Request::kSetMemTable, static_cast<uint32_t>(p.size())), p, fds, c.what);
    }
    expect_device_still_serves();
}

TEST_F(VhostProtocol, BadRingParametersAreRejected) {
    Guest g;
    connect_guest(g, sock_, 1);
    auto& f = *g.fe;
    for (uint32_t num : {0u, 3u, 2048u, 65536u}) EXPECT_FALSE(f.set_vring_num(1, num).ok()) << "size " << num;
    EXPECT_FALSE(f.set_vring_base(1, 0x10000).ok());
    // Ring addresses outside guest memory: the ring can't start; the frontend hears about it.
    ASSERT_OK(f.set_vring_num(1, 64));
    vhost::VringAddr a{1, 0, 0x7000000000ull, 0x7000001000ull, 0x7000002000ull, 0};
    ASSERT_OK(f.set_vring_addr(a));
    UniqueFd k = make_eventfd();
    ASSERT_OK(f.set_vring_kick(1, k.get()));  // not enabled yet: nothing starts
    EXPECT_FALSE(f.set_vring_enable(1, true).ok()) << "ring outside memory started";
    // Misaligned descriptor table.
    auto base = g.mem->alloc(0x4000, 4096);
    ASSERT_OK(base);
    a = {1, 0, g.mem->uva_of(base.value()) + 8, g.mem->uva_of(base.value()) + 0x1000,
         g.mem->uva_of(base.value()) + 0x2000, 0};
    EXPECT_FALSE(f.set_vring_addr(a).ok()) << "misaligned ring started";
    // A used ring logged at an address whose ring would run past 2^64.
    a.desc_user_addr = a.desc_user_addr - 8;
    a.flags = vhost::kVringAddrFlagLog;
    a.log_guest_addr = UINT64_MAX - 100;
    EXPECT_FALSE(f.set_vring_addr(a).ok());
    // Unknown and unsupported requests: error ack, connection survives.
    ASSERT_OK(f.send_raw(hdr(Request::kSetLogFd, 0, vhost::kVersion | vhost::kFlagNeedReply), {}));
    auto rep = f.recv_raw();
    ASSERT_OK(rep);
    ASSERT_EQ(rep.value().payload.size(), 8u);
    EXPECT_NE(rep.value().payload[0], 0);
    ASSERT_OK(f.send_raw(hdr(static_cast<Request>(99), 0, vhost::kVersion | vhost::kFlagNeedReply), {}));
    rep = f.recv_raw();
    ASSERT_OK(rep);
    EXPECT_NE(rep.value().payload.at(0), 0);
    // Queue 0 still works after all of that.
    auto r = testing::make_blk_read(*g.mem, 0, 512);
    ASSERT_OK(r);
    EXPECT_EQ(run(g, 0, r.value()), 513u);
}

TEST_F(VhostProtocol, ReconnectCyclesLeakNothing) {
    auto cycle = [&] {
        Guest g;
        connect_guest(g, sock_, 2);
        int sv[2];
        ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        UniqueFd a(sv[0]), b(sv[1]);
        ASSERT_OK(g.fe->set_backend_req_fd(b.get()));  // QEMU sends one; vhostd keeps a dup
        auto data = std::vector<uint8_t>(4096, 0x5a);
        auto w = testing::make_blk_write(*g.mem, 8, data);
        ASSERT_OK(w);
        EXPECT_EQ(run(g, 1, w.value()), 1u);
        // Leave a request in flight on purpose: the disconnect must drain it.
        auto r = testing::make_blk_read(*g.mem, 16, 4096);
        ASSERT_OK(r);
        ASSERT_OK(r.value().submit(*g.queues[0]));
        ASSERT_OK(g.queues[0]->publish_and_kick(g.kicks[0].get()));
    };
    // A session is reset before the next connection is accepted: a GET_FEATURES round trip on
    // a fresh connection is the sync point. Measure while that connection is open, so both
    // samples hold exactly one connection (its two ends) and nothing else in flux.
    for (int i = 0; i < 3; ++i) cycle();
    auto s0 = settle();
    size_t fds0 = count_fds();
    // The test's guests are gone and vhostd must not hold a disconnected guest's memory.
    EXPECT_EQ(count_memfd_mappings(), 0u) << "guest memory still mapped after the frontend left";
    s0.reset();
    for (int i = 0; i < 100; ++i) {
        cycle();
        if (HasFatalFailure()) return;
    }
    auto s1 = settle();
    EXPECT_EQ(count_fds(), fds0) << "fd leak over 100 connect/disconnect cycles";
    EXPECT_EQ(count_memfd_mappings(), 0u) << "guest memory still mapped after 100 cycles";
}

TEST_F(VhostProtocol, GarbageOnOneDeviceDoesNotDisturbAnother) {
    auto disk2 = make_disk("e.img");
    auto sock2 = add_blk("socket=" + path("b.sock") + ",path=" + disk2 + ",queues=1");
    Guest g;
    connect_guest(g, sock2, 1);
    for (int i = 0; i < 20; ++i) {
        expect_closed(hdr(static_cast<Request>(1000 + i), 0), {}, {}, "unknown request without ack");
        auto data = std::vector<uint8_t>(4096, static_cast<uint8_t>(i));
        auto w = testing::make_blk_write(*g.mem, static_cast<uint64_t>(i) * 8, data);
        ASSERT_OK(w);
        EXPECT_EQ(run(g, 0, w.value()), 1u);
        EXPECT_EQ(w.value().status(), blk::kSOk);
        EXPECT_EQ(read_file(disk2, static_cast<uint64_t>(i) * 4096, 4096), data);
    }
}

TEST_F(VhostProtocol, ClientModeConnectsAndReconnects) {
    std::string csock = path("c.sock");
    add_blk("socket=" + csock + ",backend=null,size=8M,queues=1,client=on");
    for (int round = 0; round < 2; ++round) {
        // The frontend listens; vhostd (retrying) connects.
        auto fe = Frontend::listen_and_accept(csock, std::chrono::seconds(5));
        ASSERT_OK(fe);
        Guest g;
        g.fe = std::move(fe).value();
        auto f = g.fe->get_features();
        ASSERT_OK(f);
        ASSERT_OK(g.fe->set_features(f.value() & kGuestFeatures & ~vhost::kFProtocolFeatures));
        auto mem = GuestRam::create({{0, 4ull << 20}});
        ASSERT_OK(mem);
        g.mem = std::move(mem).value();
        ASSERT_OK(g.fe->set_mem_table(*g.mem));
        auto q = DriverQueue::create(*g.mem, 32, true);
        ASSERT_OK(q);
        g.queues.push_back(std::move(q).value());
        g.kicks.push_back(make_eventfd());
        g.calls.push_back(make_eventfd());
        ASSERT_OK(g.fe->set_vring_num(0, 32));
        ASSERT_OK(g.fe->set_vring_base(0, 0));
        ASSERT_OK(g.fe->set_vring_addr(0, *g.queues[0]));
        ASSERT_OK(g.fe->set_vring_call(0, g.calls[0].get()));
        ASSERT_OK(g.fe->set_vring_kick(0, g.kicks[0].get()));
        auto r = testing::make_blk_read(*g.mem, 0, 512);
        ASSERT_OK(r);
        EXPECT_EQ(run(g, 0, r.value()), 513u) << "round " << round;
        unlink(csock.c_str());
    }
}

TEST_F(VhostProtocol, MemoryHotplugUnderRunningQueues) {
    Guest g;
    connect_guest(g, sock_, 1);
    auto data = std::vector<uint8_t>(8192, 0x3c);
    // Add a region (as QEMU's memory hotplug does with ADD_MEM_REG) while the queue runs,
    // then do I/O whose buffers live in it.
    auto idx = g.mem->add_region({8ull << 32, 4ull << 20});
    ASSERT_OK(idx);
    ASSERT_OK(g.fe->add_mem_reg(g.mem->regions()[idx.value()]));
    auto buf = g.mem->alloc_in(idx.value(), 8192 + 4096, 4096);
    ASSERT_OK(buf);
    uint64_t b = buf.value();
    std::memcpy(g.mem->host(b + 4096, 8192), data.data(), 8192);
    blk::ReqHeader h{blk::kTOut, 0, 40};
    std::memcpy(g.mem->host(b, 16), &h, sizeof(h));
    uint8_t* status = g.mem->host(b + 100, 1);
    *status = 0xff;
    auto& q = *g.queues[0];
    ASSERT_OK(q.add_chain(std::vector<testing::DriverBuf>{{b, 16, false}, {b + 4096, 8192, false}, {b + 100, 1, true}}));
    ASSERT_OK(q.publish_and_kick(g.kicks[0].get()));
    ASSERT_TRUE(q.wait_used(g.calls[0].get(), std::chrono::seconds(5)));
    EXPECT_EQ(*status, blk::kSOk);
    EXPECT_EQ(read_file(disk_, 40 * 512, 8192), data);
    // Remove it again: I/O in the remaining memory still works; buffers in the removed region
    // are now "outside guest memory" (chain returned with length 0), not a wild access.
    ASSERT_OK(g.fe->rem_mem_reg(g.mem->regions()[idx.value()]));
    ASSERT_OK(q.add_chain(std::vector<testing::DriverBuf>{{b, 16, false}, {b + 4096, 512, false}, {b + 100, 1, true}}));
    ASSERT_OK(q.publish_and_kick(g.kicks[0].get()));
    auto u = q.wait_used(g.calls[0].get(), std::chrono::seconds(5));
    ASSERT_TRUE(u);
    EXPECT_EQ(u->len, 0u);
    auto r = testing::make_blk_read(*g.mem, 40, 4096);
    ASSERT_OK(r);
    EXPECT_EQ(run(g, 0, r.value()), 4097u);
    EXPECT_TRUE(std::equal(data.begin(), data.begin() + 4096, r.value().data().begin()));
}

TEST_F(VhostProtocol, DuplicateAddMemRegIsCountedNotRejected) {
    // QEMU 7.2 sends ADD/REM_MEM_REG once per vhost device; a multi-queue net device has one per
    // queue pair on the same socket. The region stays mapped until the last REM_MEM_REG.
    Guest g;
    connect_guest(g, sock_, 1);
    auto idx = g.mem->add_region({8ull << 32, 4ull << 20});
    ASSERT_OK(idx);
    const auto& reg = g.mem->regions()[idx.value()];
    ASSERT_OK(g.fe->add_mem_reg(reg));
    ASSERT_OK(g.fe->add_mem_reg(reg));  // the second vhost device
    auto buf = g.mem->alloc_in(idx.value(), 8192, 4096);
    ASSERT_OK(buf);
    uint64_t b = buf.value();
    blk::ReqHeader h{blk::kTIn, 0, 0};
    auto read_into_region = [&]() -> uint32_t {
        std::memcpy(g.mem->host(b, 16), &h, sizeof(h));
        auto& q = *g.queues[0];
        EXPECT_TRUE(q.add_chain(std::vector<testing::DriverBuf>{{b, 16, false}, {b + 4096, 512, true}, {b + 100, 1, true}}).ok());
        EXPECT_TRUE(q.publish_and_kick(g.kicks[0].get()).ok());
        auto u = q.wait_used(g.calls[0].get(), std::chrono::seconds(5));
        return u ? u->len : UINT32_MAX;
    };
    EXPECT_EQ(read_into_region(), 513u);
    ASSERT_OK(g.fe->rem_mem_reg(reg));  // one vhost device lets go: still mapped
    EXPECT_EQ(read_into_region(), 513u);
    ASSERT_OK(g.fe->rem_mem_reg(reg));  // the last one: gone
    EXPECT_EQ(read_into_region(), 0u) << "buffers in a removed region are outside guest memory";
    // A region at the same address with different parameters is still an overlap.
    auto other = g.mem->add_region({16ull << 32, 4ull << 20});
    ASSERT_OK(other);
    vhost::MemRegion clash = g.mem->regions()[other.value()].desc();
    clash.guest_phys_addr = 0;  // overlaps the first region with another fd/offset
    g.fe->force_reply_ack(true);
    EXPECT_FALSE(g.fe->add_mem_reg(clash, g.mem->regions()[other.value()].fd()).ok());
}

TEST_F(VhostProtocol, GuestRingAbuseStopsOnlyThatQueue) {
    Guest g;
    connect_guest(g, sock_, 2);
    UniqueFd err0 = make_eventfd();
    ASSERT_OK(g.fe->set_vring_err(0, err0.get()));
    auto& q = *g.queues[0];
    // A head made available twice in one batch while the first is in flight.
    auto r = testing::make_blk_read(*g.mem, 0, 4096);
    ASSERT_OK(r);
    auto head = r.value().submit(q);
    ASSERT_OK(head);
    uint16_t idx = q.read_avail_idx();
    q.write_avail_ring(static_cast<uint16_t>(idx + 1), head.value());  // slot after the one add_chain used
    q.write_avail_idx(static_cast<uint16_t>(idx + 2));
    eventfd_write(g.kicks[0].get(), 1);
    pollfd p{err0.get(), POLLIN, 0};
    EXPECT_EQ(poll(&p, 1, 3000), 1) << "err eventfd not signalled for a duplicate head";
    // Queue 1 keeps working.
    auto r1 = testing::make_blk_read(*g.mem, 8, 4096);
    ASSERT_OK(r1);
    EXPECT_EQ(run(g, 1, r1.value()), 4097u);
    // Avail index jumping by more than the queue size on queue 1's neighbour, then reset:
    // after GET_VRING_BASE + a fresh setup queue 0 works again.
    auto base = g.fe->get_vring_base(0);
    ASSERT_OK(base);
    auto fresh = DriverQueue::create(*g.mem, 64, true);
    ASSERT_OK(fresh);
    g.queues[0] = std::move(fresh).value();
    g.kicks[0] = make_eventfd();
    ASSERT_OK(g.fe->setup_queue(0, *g.queues[0], g.kicks[0].get(), g.calls[0].get(), true));
    auto r2 = testing::make_blk_read(*g.mem, 8, 4096);
    ASSERT_OK(r2);
    EXPECT_EQ(run(g, 0, r2.value()), 4097u);
}

}  // namespace
}  // namespace vhostd::testing

namespace vhostd::testing {
namespace {

TEST_F(VhostProtocol, StatusAndResetsStopRingsAndTheDeviceWorksAfterwards) {
    Guest g;
    connect_guest(g, sock_, 1);
    // GET/SET_STATUS round trip; FEATURES_OK sticks because SET_FEATURES came first.
    uint8_t st = virtio::kStatusAcknowledge | virtio::kStatusDriver | virtio::kStatusFeaturesOk |
                 virtio::kStatusDriverOk;
    ASSERT_OK(g.fe->set_status(st));
    auto got = g.fe->get_status();
    ASSERT_OK(got);
    EXPECT_EQ(got.value(), st);

    auto& q = *g.queues[0];
    auto reset_and_reuse = [&](const char* how, auto&& reset) {
        // A request completes, then the reset stops the ring...
        auto r = testing::make_blk_read(*g.mem, 0, 512);
        ASSERT_OK(r);
        EXPECT_EQ(run(g, 0, r.value()), 513u) << how;
        ASSERT_OK(reset());
        // ...so a request published now is not taken (the queue no longer runs).
        auto r2 = testing::make_blk_read(*g.mem, 8, 512);
        ASSERT_OK(r2);
        ASSERT_OK(r2.value().submit(q));
        ASSERT_OK(q.publish_and_kick(g.kicks[0].get()));
        EXPECT_FALSE(q.wait_used(g.calls[0].get(), std::chrono::milliseconds(300))) << how << ": ring still running";
        // The driver re-initialises the device as after a guest reset: features, fresh ring.
        ASSERT_OK(g.fe->set_features(g.features));
        auto fresh = DriverQueue::create(*g.mem, 64, true);
        ASSERT_OK(fresh);
        g.queues[0] = std::move(fresh).value();
        g.kicks[0] = make_eventfd();
        ASSERT_OK(g.fe->setup_queue(0, *g.queues[0], g.kicks[0].get(), g.calls[0].get(), true));
        auto r3 = testing::make_blk_read(*g.mem, 16, 512);
        ASSERT_OK(r3);
        EXPECT_EQ(run(g, 0, r3.value()), 513u) << how << ": device did not work after the reset";
    };
    reset_and_reuse("SET_STATUS 0", [&] { return g.fe->set_status(0); });
    auto s0 = g.fe->get_status();
    ASSERT_OK(s0);
    EXPECT_EQ(s0.value(), 0u);
}

TEST_F(VhostProtocol, SetStatusZeroThenGetVringBaseReportsTheRingPosition) {
    // QEMU 7.2's vhost_dev_stop (VM stop, end of a migration): SET_STATUS 0, SET_VRING_ENABLE 0,
    // then GET_VRING_BASE, whose answer it restores with SET_VRING_BASE on the next start (or
    // sends to the migration destination). A position of 0 there makes the guest's ring look
    // thousands of requests ahead.
    Guest g;
    connect_guest(g, sock_, 1);
    auto r = testing::make_blk_read(*g.mem, 0, 512);
    ASSERT_OK(r);
    for (int i = 0; i < 5; ++i) {
        r.value().reset_status();
        EXPECT_EQ(run(g, 0, r.value()), 513u);
    }
    ASSERT_OK(g.fe->set_status(0));
    ASSERT_OK(g.fe->set_vring_enable(0, false));
    auto base = g.fe->get_vring_base(0);
    ASSERT_OK(base);
    EXPECT_EQ(base.value(), 5u) << "the ring's position survives SET_STATUS 0";
    // And the device starts again where it stopped (QEMU's vhost_dev_start after "cont").
    ASSERT_OK(g.fe->set_features(g.features));
    ASSERT_OK(g.fe->set_vring_num(0, g.queues[0]->size()));
    ASSERT_OK(g.fe->set_vring_base(0, base.value()));
    ASSERT_OK(g.fe->set_vring_addr(0, *g.queues[0]));
    ASSERT_OK(g.fe->set_vring_kick(0, g.kicks[0].get()));
    ASSERT_OK(g.fe->set_vring_call(0, g.calls[0].get()));
    ASSERT_OK(g.fe->set_vring_enable(0, true));
    r.value().reset_status();
    EXPECT_EQ(run(g, 0, r.value()), 513u);
    EXPECT_FALSE(g.queues[0]->broken()) << g.queues[0]->broken_reason();
}

TEST_F(VhostProtocol, ResetDeviceAndResetOwnerStopRings) {
    for (int which = 0; which < 2; ++which) {
        Guest g;
        connect_guest(g, sock_, 1);
        auto r = testing::make_blk_read(*g.mem, 0, 512);
        ASSERT_OK(r);
        EXPECT_EQ(run(g, 0, r.value()), 513u);
        ASSERT_OK(which == 0 ? g.fe->reset_device() : g.fe->reset_owner());
        auto r2 = testing::make_blk_read(*g.mem, 8, 512);
        ASSERT_OK(r2);
        ASSERT_OK(r2.value().submit(*g.queues[0]));
        ASSERT_OK(g.queues[0]->publish_and_kick(g.kicks[0].get()));
        EXPECT_FALSE(g.queues[0]->wait_used(g.calls[0].get(), std::chrono::milliseconds(300)))
            << (which == 0 ? "RESET_DEVICE" : "RESET_OWNER") << " left the ring running";
        // Features are forgotten: a ring set up without SET_FEATURES does not start.
        auto fresh = DriverQueue::create(*g.mem, 64, true);
        ASSERT_OK(fresh);
        UniqueFd k = make_eventfd();
        ASSERT_OK(g.fe->setup_queue(0, *fresh.value(), k.get(), g.calls[0].get(), true));
        ASSERT_OK(g.fe->set_features(g.features));  // now it starts
        auto r3 = testing::make_blk_read(*g.mem, 16, 512);
        ASSERT_OK(r3);
        ASSERT_OK(r3.value().submit(*fresh.value()));
        ASSERT_OK(fresh.value()->publish_and_kick(k.get()));
        EXPECT_TRUE(fresh.value()->wait_used(g.calls[0].get(), std::chrono::seconds(5)));
    }
}

}  // namespace
}  // namespace vhostd::testing

namespace vhostd::testing {
namespace {

TEST_F(VhostProtocol, RemovingADeviceAtRuntimeDrainsItAndLeavesOthersServing) {
    auto disk2 = make_disk("e.img");
    auto sock2 = add_blk("socket=" + path("b.sock") + ",path=" + disk2 + ",queues=1");
    Guest g;
    connect_guest(g, sock_, 1);
    // Requests in flight on the device being removed.
    std::vector<GuestBlkRequest> reqs;
    for (int i = 0; i < 16; ++i) {
        auto r = testing::make_blk_read(*g.mem, static_cast<uint64_t>(i) * 8, 4096);
        ASSERT_OK(r);
        ASSERT_OK(r.value().submit(*g.queues[0]));
        reqs.push_back(std::move(r).value());
    }
    ASSERT_OK(g.queues[0]->publish_and_kick(g.kicks[0].get()));
    ASSERT_EQ(daemon_->device_count(), 2u);
    ASSERT_OK(daemon_->remove_device("blk0"));
    EXPECT_EQ(daemon_->device_count(), 1u);
    // Whatever it took was completed and published before it went away.
    uint16_t used = g.queues[0]->read_used_idx();
    uint32_t done = 0;
    while (g.queues[0]->pop_used()) ++done;
    EXPECT_EQ(done, used);
    for (uint32_t i = 0; i < done; ++i) EXPECT_EQ(reqs[i].status(), blk::kSOk);
    EXPECT_TRUE(g.fe->peer_closed(std::chrono::seconds(3))) << "connection of the removed device still open";
    EXPECT_FALSE(std::filesystem::exists(sock_)) << "socket file left behind";
    EXPECT_FALSE(daemon_->remove_device("blk0").ok());
    // The other device is untouched.
    Guest g2;
    connect_guest(g2, sock2, 1);
    auto r = testing::make_blk_read(*g2.mem, 0, 4096);
    ASSERT_OK(r);
    EXPECT_EQ(run(g2, 0, r.value()), 4097u);
    EXPECT_EQ(r.value().status(), blk::kSOk);
}

}  // namespace
}  // namespace vhostd::testing
