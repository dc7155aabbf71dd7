// Driver-side split ring (DriverQueue), guest memory and blk request builder, without a device:
// the test plays the device through the raw ring API.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <thread>

#include "testing/frontend.hpp"
#include "testing/blk_driver.hpp"
#include "testing/driver_queue.hpp"

namespace vhostd::testing {
namespace {

std::unique_ptr<GuestRam> make_mem(uint64_t size = 1 << 20) {
    auto m = GuestRam::create({{0, size}});
    EXPECT_TRUE(m.ok()) << m.error().describe();
    return std::move(m).value();
}

// Minimal fake device: consumes published avail entries, completes them in order.
struct FakeDevice {
    DriverQueue& q;
    uint16_t last_avail = 0;
    uint16_t used_idx = 0;

    // Returns heads taken from the avail ring (acquire on avail->idx).
    std::vector<uint16_t> take() {
        std::vector<uint16_t> heads;
        uint16_t avail = std::atomic_ref<uint16_t>(*reinterpret_cast<uint16_t*>(q.avail_host() + 2))
                             .load(std::memory_order_acquire);
        while (last_avail != avail) heads.push_back(q.read_avail_ring(last_avail++));
        return heads;
    }
    void complete(uint32_t id, uint32_t len) {
        virtio::UsedElem e{id, len};
        std::memcpy(q.used_host() + 4 + 8u * (used_idx & (q.size() - 1)), &e, sizeof(e));
        ++used_idx;
        std::atomic_ref<uint16_t>(*reinterpret_cast<uint16_t*>(q.used_host() + 2))
            .store(used_idx, std::memory_order_release);
    }
    void set_avail_event(uint16_t v) {
        std::memcpy(q.used_host() + 4 + 8u * q.size(), &v, sizeof(v));
    }
    void set_used_flags(uint16_t v) { std::memcpy(q.used_host(), &v, sizeof(v)); }
};

TEST(DriverGuestMemory, RegionsHostUvaAlloc) {
    auto m = GuestRam::create({{0, 0x10000}, {0x100000, 0x10000, 0x3000}});
    ASSERT_TRUE(m.ok()) << m.error().describe();
    auto& mem = **m;
    ASSERT_EQ(mem.regions().size(), 2u);
    EXPECT_NE(mem.host(0, 0x10000), nullptr);
    EXPECT_EQ(mem.host(0xffff, 2), nullptr);  // crosses the end of region 0
    EXPECT_EQ(mem.host(0x10000, 1), nullptr);
    EXPECT_EQ(mem.host(0x100000 + 0xfff0, 0x10), mem.regions()[1].host() + 0xfff0);
    EXPECT_EQ(mem.uva_of(0x100010), mem.regions()[1].uva() + 0x10);
    EXPECT_EQ(mem.uva_of(0x200000), 0u);
    EXPECT_EQ(mem.regions()[1].desc().mmap_offset, 0x3000u);

    // The region starts mmap_offset bytes into its memfd.
    mem.host(0x100000, 1)[0] = 0xab;
    uint8_t b = 0;
    ASSERT_EQ(pread(mem.regions()[1].fd(), &b, 1, 0x3000), 1);
    EXPECT_EQ(b, 0xab);

    int seals = fcntl(mem.regions()[0].fd(), F_GET_SEALS);
    EXPECT_TRUE(seals & F_SEAL_SHRINK);
    EXPECT_FALSE(ftruncate(mem.regions()[0].fd(), 0x1000) == 0);

    // Bump allocation never crosses a region boundary: 0xc000 does not fit after 0x8000.
    auto a = mem.alloc(0x8000, 4096);
    ASSERT_TRUE(a.ok());
    EXPECT_EQ(*a, 0u);
    auto b2 = mem.alloc(0xc000, 4096);
    ASSERT_TRUE(b2.ok());
    EXPECT_EQ(*b2, 0x100000u);
    auto c = mem.alloc(0x10, 16);
    ASSERT_TRUE(c.ok());
    EXPECT_EQ(*c, 0x8000u);
    EXPECT_FALSE(mem.alloc(0x20000, 8).ok());
    EXPECT_EQ(mem.available(0), 0x10000u - 0x8010u);
    auto d = mem.alloc_in(0, 0x100, 256);
    ASSERT_TRUE(d.ok());
    EXPECT_EQ(*d, 0x8100u);
    EXPECT_FALSE(mem.alloc_in(0, 0x8000, 1).ok());
    EXPECT_FALSE(mem.alloc_in(5, 1, 1).ok());

    EXPECT_FALSE(mem.add_region({0x8000, 0x1000}).ok());  // overlaps region 0
    auto idx = mem.add_region({0x40000000, 0x1000});
    ASSERT_TRUE(idx.ok());
    EXPECT_EQ(*idx, 2u);
    EXPECT_NE(mem.host(0x40000000, 0x1000), nullptr);
    ASSERT_TRUE(mem.remove_region(2).ok());
    EXPECT_EQ(mem.host(0x40000000, 1), nullptr);
}

TEST(DriverQueue, LayoutAndZeroedRings) {
    auto mem = make_mem();
    auto q = DriverQueue::create(*mem, 256, true);
    ASSERT_TRUE(q.ok()) << q.error().describe();
    EXPECT_EQ((*q)->desc_gpa() % 16, 0u);
    EXPECT_EQ((*q)->avail_gpa() % 2, 0u);
    EXPECT_EQ((*q)->used_gpa() % 4, 0u);
    EXPECT_EQ((*q)->desc_uva(), mem->uva_of((*q)->desc_gpa()));
    EXPECT_EQ((*q)->read_avail_idx(), 0);
    EXPECT_EQ((*q)->read_used_idx(), 0);
    EXPECT_EQ((*q)->num_free(), 256);
    EXPECT_FALSE(DriverQueue::create(*mem, 100, false).ok());
}

TEST(DriverQueue, ChainWritesDescriptorsAndFreeListReuse) {
    auto mem = make_mem();
    auto q = std::move(DriverQueue::create(*mem, 4, false)).value();
    FakeDevice dev{*q};

    DriverBuf two[] = {{0x1000, 16, false}, {0x2000, 512, true}};
    auto h1 = q->add_chain(two);
    ASSERT_TRUE(h1.ok());
    auto h2 = q->add_chain(two);
    ASSERT_TRUE(h2.ok());
    EXPECT_EQ(q->num_free(), 0);
    auto full = q->add_chain(std::span(two, 1));
    ASSERT_FALSE(full.ok());
    EXPECT_EQ(full.error().code, Errc::kBusy);

    auto d = q->read_desc(*h1);
    EXPECT_EQ(d.addr, 0x1000u);
    EXPECT_EQ(d.len, 16u);
    EXPECT_EQ(d.flags, virtio::kDescFNext);
    auto d2 = q->read_desc(d.next);
    EXPECT_EQ(d2.addr, 0x2000u);
    EXPECT_EQ(d2.flags, virtio::kDescFWrite);

    // Not visible before publish().
    EXPECT_TRUE(dev.take().empty());
    q->publish();
    auto heads = dev.take();
    ASSERT_EQ(heads.size(), 2u);
    EXPECT_EQ(heads[0], *h1);
    EXPECT_EQ(heads[1], *h2);

    // Complete out of order; pop_used returns used-ring order and frees the descriptors.
    EXPECT_EQ(q->used_ready(), 0);
    dev.complete(*h2, 7);
    EXPECT_EQ(q->used_ready(), 1);
    auto u = q->pop_used();
    EXPECT_EQ(q->used_ready(), 0);
    ASSERT_TRUE(u.has_value());
    EXPECT_EQ(u->id, *h2);
    EXPECT_EQ(u->len, 7u);
    EXPECT_EQ(q->num_free(), 2);
    EXPECT_FALSE(q->pop_used().has_value());

    // The freed descriptors are reused.
    auto h3 = q->add_chain(two);
    ASSERT_TRUE(h3.ok());
    EXPECT_EQ(*h3, *h2);
    dev.complete(*h1, 0);
    ASSERT_TRUE(q->pop_used().has_value());
    EXPECT_EQ(q->num_free(), 2);
    // Single-descriptor chains from the mixed free list.
    ASSERT_TRUE(q->add_chain(std::span(two, 1)).ok());
    ASSERT_TRUE(q->add_chain(std::span(two, 1)).ok());
    EXPECT_EQ(q->num_free(), 0);
    EXPECT_FALSE(q->broken());
}

TEST(DriverQueue, IndicesWrapPast65535) {
    auto mem = make_mem();
    auto q = std::move(DriverQueue::create(*mem, 8, false)).value();
    FakeDevice dev{*q};
    DriverBuf b[] = {{0x1000, 8, false}, {0x2000, 8, true}, {0x3000, 1, true}};
    uint32_t done = 0;
    for (uint32_t round = 0; round < 70000 / 2; ++round) {
        // Two chains per round, 3 + 3 descriptors of 8.
        ASSERT_TRUE(q->add_chain(b).ok());
        ASSERT_TRUE(q->add_chain(b).ok());
        q->publish();
        auto heads = dev.take();
        ASSERT_EQ(heads.size(), 2u) << "round " << round;
        for (auto h : heads) dev.complete(h, 1);
        ASSERT_EQ(q->used_ready(), 2) << "round " << round;  // counts across the 16-bit wrap
        while (auto u = q->pop_used()) ++done;
        ASSERT_EQ(q->num_free(), 8);
    }
    EXPECT_EQ(done, 70000u);
    EXPECT_EQ(q->read_avail_idx(), static_cast<uint16_t>(70000));
    EXPECT_EQ(q->read_used_idx(), static_cast<uint16_t>(70000));
    EXPECT_EQ(q->last_used(), static_cast<uint16_t>(70000));
    EXPECT_FALSE(q->broken());
}

TEST(DriverQueue, NeedEventMath) {
    // Device asked for a kick when avail passes 5.
    EXPECT_TRUE(vring_need_event(5, 6, 5));
    EXPECT_TRUE(vring_need_event(5, 8, 3));
    EXPECT_FALSE(vring_need_event(5, 5, 3));  // 5 not yet written (new is exclusive)
    EXPECT_FALSE(vring_need_event(5, 10, 6));
    // Wrap-around of the 16-bit indices.
    EXPECT_TRUE(vring_need_event(0xffff, 2, 0xfffe));
    EXPECT_TRUE(vring_need_event(0, 1, 0xffff));
    EXPECT_FALSE(vring_need_event(0xfffd, 2, 0xfffe));
    EXPECT_FALSE(vring_need_event(7, 7, 7));
}

TEST(DriverQueue, KickDecisionEventIdxAndNoNotify) {
    auto mem = make_mem();
    DriverBuf b[] = {{0x1000, 8, false}};
    {
        auto q = std::move(DriverQueue::create(*mem, 16, true)).value();
        FakeDevice dev{*q};
        ASSERT_TRUE(q->add_chain(b).ok());
        q->publish();
        EXPECT_TRUE(q->kick_prepare());  // avail_event 0, 0 -> 1
        EXPECT_FALSE(q->kick_prepare());  // nothing new
        dev.set_avail_event(5);
        for (int i = 0; i < 3; ++i) ASSERT_TRUE(q->add_chain(b).ok());
        q->publish();  // 1 -> 4: event 5 not crossed
        EXPECT_FALSE(q->kick_prepare());
        for (int i = 0; i < 2; ++i) ASSERT_TRUE(q->add_chain(b).ok());
        q->publish();  // 4 -> 6 crosses 5
        EXPECT_TRUE(q->kick_prepare());
        EXPECT_TRUE(q->device_wants_kick(5));
        EXPECT_FALSE(q->device_wants_kick(6));
        dev.set_used_flags(virtio::kUsedFNoNotify);  // ignored with EVENT_IDX
        EXPECT_TRUE(q->device_wants_kick(4));
    }
    {
        auto q = std::move(DriverQueue::create(*mem, 16, false)).value();
        FakeDevice dev{*q};
        ASSERT_TRUE(q->add_chain(b).ok());
        q->publish();
        EXPECT_TRUE(q->kick_prepare());
        dev.set_used_flags(virtio::kUsedFNoNotify);
        ASSERT_TRUE(q->add_chain(b).ok());
        q->publish();
        EXPECT_FALSE(q->kick_prepare());
    }
}

TEST(DriverQueue, EnableCallFlagsAndUsedEvent) {
    auto mem = make_mem();
    DriverBuf b[] = {{0x1000, 8, true}};
    {
        auto q = std::move(DriverQueue::create(*mem, 16, false)).value();
        q->enable_call(false);
        EXPECT_EQ(q->read_avail_flags(), virtio::kAvailFNoInterrupt);
        q->enable_call(true);
        EXPECT_EQ(q->read_avail_flags(), 0);
    }
    {
        auto q = std::move(DriverQueue::create(*mem, 16, true)).value();
        FakeDevice dev{*q};
        for (int i = 0; i < 3; ++i) ASSERT_TRUE(q->add_chain(b).ok());
        q->publish();
        for (auto h : dev.take()) dev.complete(h, 8);
        ASSERT_TRUE(q->pop_used().has_value());
        EXPECT_EQ(q->read_used_event(), 1);  // interrupt wanted for the next entry
        q->enable_call(false);
        EXPECT_EQ(q->read_used_event(), 0);  // one behind: never reached without a full wrap
        EXPECT_EQ(q->read_avail_flags(), 0);  // flags are not used with EVENT_IDX
        ASSERT_TRUE(q->pop_used().has_value());
        EXPECT_EQ(q->read_used_event(), 0);  // unchanged while disabled
        q->enable_call(true);
        EXPECT_EQ(q->read_used_event(), 2);
        EXPECT_TRUE(q->has_used());
    }
}

TEST(DriverQueue, IndirectTable) {
    auto mem = make_mem();
    auto q = std::move(DriverQueue::create(*mem, 8, false, 4)).value();
    FakeDevice dev{*q};
    DriverBuf b[] = {{0x1000, 16, false}, {0x2000, 100, true}, {0x3000, 1, true}};
    auto h = q->add_chain(b, true);
    ASSERT_TRUE(h.ok()) << h.error().describe();
    EXPECT_EQ(q->num_free(), 7);
    auto rd = q->read_desc(*h);
    EXPECT_EQ(rd.flags, virtio::kDescFIndirect);
    EXPECT_EQ(rd.len, 3 * sizeof(virtio::Desc));
    const uint8_t* table = mem->host(rd.addr, rd.len);
    ASSERT_NE(table, nullptr);
    virtio::Desc d[3];
    std::memcpy(d, table, sizeof(d));
    EXPECT_EQ(d[0].addr, 0x1000u);
    EXPECT_EQ(d[0].flags, virtio::kDescFNext);
    EXPECT_EQ(d[0].next, 1);
    EXPECT_EQ(d[1].flags, virtio::kDescFNext | virtio::kDescFWrite);
    EXPECT_EQ(d[1].next, 2);
    EXPECT_EQ(d[2].flags, virtio::kDescFWrite);
    EXPECT_EQ(d[2].len, 1u);

    DriverBuf many[5] = {};
    EXPECT_FALSE(q->add_chain(many, true).ok());  // longer than indirect_max

    // Another in-flight indirect chain gets its own table.
    auto h2 = q->add_chain(b, true);
    ASSERT_TRUE(h2.ok());
    EXPECT_NE(q->read_desc(*h2).addr, rd.addr);
    q->publish();
    for (auto x : dev.take()) dev.complete(x, 101);
    ASSERT_TRUE(q->pop_used().has_value());
    ASSERT_TRUE(q->pop_used().has_value());
    EXPECT_EQ(q->num_free(), 8);
}

TEST(DriverQueue, BadUsedIdBreaksQueue) {
    auto mem = make_mem();
    auto q = std::move(DriverQueue::create(*mem, 8, false)).value();
    FakeDevice dev{*q};
    DriverBuf b[] = {{0x1000, 8, true}};
    ASSERT_TRUE(q->add_chain(b).ok());
    q->publish();
    dev.take();
    dev.complete(5, 0);  // never made available
    EXPECT_FALSE(q->pop_used().has_value());
    EXPECT_TRUE(q->broken());
    EXPECT_FALSE(q->add_chain(b).ok());
    q->reset();
    EXPECT_FALSE(q->broken());
    EXPECT_EQ(q->num_free(), 8);
}

TEST(DriverBlk, RequestLayouts) {
    auto mem = make_mem(4 << 20);
    namespace blk = virtio::blk;
    std::vector<uint8_t> data(4096, 0x5a);
    auto w = make_blk_write(*mem, 8, data, {.data_segments = 3});
    ASSERT_TRUE(w.ok()) << w.error().describe();
    auto bufs = w->bufs();
    ASSERT_EQ(bufs.size(), 5u);
    EXPECT_EQ(bufs[0].len, 16u);
    EXPECT_FALSE(bufs[0].device_writable);
    EXPECT_EQ(bufs[1].len + bufs[2].len + bufs[3].len, 4096u);
    EXPECT_FALSE(bufs[2].device_writable);
    EXPECT_EQ(bufs[4].len, 1u);
    EXPECT_TRUE(bufs[4].device_writable);
    EXPECT_EQ(w->data_gpa() % 4096, 0u);
    EXPECT_EQ(w->status(), kBlkStatusUnset);
    EXPECT_EQ(w->expected_used_len(), 1u);
    blk::ReqHeader h;
    std::memcpy(&h, mem->host(w->header_gpa(), 16), 16);
    EXPECT_EQ(h.type, blk::kTOut);
    EXPECT_EQ(h.sector, 8u);
    EXPECT_EQ(w->data()[100], 0x5a);

    auto r = make_blk_read(*mem, 0, 1024, {.header_segments = 2, .merge_status = true, .indirect = true});
    ASSERT_TRUE(r.ok());
    ASSERT_EQ(r->bufs().size(), 3u);
    EXPECT_EQ(r->bufs()[0].len + r->bufs()[1].len, 16u);
    EXPECT_EQ(r->bufs()[2].len, 1025u);
    EXPECT_TRUE(r->bufs()[2].device_writable);
    EXPECT_EQ(r->expected_used_len(), 1025u);
    EXPECT_FALSE(make_blk_write(*mem, 0, data, {.merge_status = true}).ok());

    auto f = make_blk_flush(*mem);
    ASSERT_TRUE(f.ok());
    EXPECT_EQ(f->bufs().size(), 2u);
    blk::DiscardSegment segs[] = {blk_segment(0, 8, true), blk_segment(64, 8)};
    auto dz = make_blk_write_zeroes(*mem, segs);
    ASSERT_TRUE(dz.ok());
    EXPECT_EQ(dz->data_len(), 32u);
    blk::DiscardSegment s0;
    std::memcpy(&s0, dz->data().data(), sizeof(s0));
    EXPECT_EQ(s0.flags, blk::kDiscardFlagUnmap);
    EXPECT_EQ(s0.num_sectors, 8u);

    auto q = std::move(DriverQueue::create(*mem, 16, false)).value();
    auto head = r->submit(*q);
    ASSERT_TRUE(head.ok());
    EXPECT_EQ(q->read_desc(*head).flags, virtio::kDescFIndirect);
}

// Frontend against a scripted peer on a socketpair (the test thread plays the backend).
TEST(DriverFrontend, ReplyAckAndReplyValidation) {
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    auto fe = std::move(Frontend::from_fd(UniqueFd(sv[0]))).value();
    auto be = std::move(Frontend::from_fd(UniqueFd(sv[1]))).value();
    fe->set_timeout(std::chrono::milliseconds(2000));

    auto reply = [&](uint32_t req, std::span<const uint8_t> payload, uint32_t flags = vhost::kVersion | vhost::kFlagReply) {
        vhost::MsgHeader h{req, flags, static_cast<uint32_t>(payload.size())};
        ASSERT_TRUE(be->send_raw(h, payload).ok());
    };
    auto u64 = [](uint64_t v) {
        std::vector<uint8_t> b(8);
        std::memcpy(b.data(), &v, 8);
        return b;
    };

    std::thread backend([&] {
        // 1. GET_PROTOCOL_FEATURES: plain request, u64 reply.
        auto m = be->recv_raw(std::chrono::milliseconds(2000));
        ASSERT_TRUE(m.ok());
        EXPECT_EQ(m->hdr.request, static_cast<uint32_t>(vhost::Request::kGetProtocolFeatures));
        EXPECT_EQ(m->hdr.flags, vhost::kVersion);
        reply(m->hdr.request, u64(vhost::pf::kReplyAck | vhost::pf::kMq));
        // 2. SET_PROTOCOL_FEATURES: no NEED_REPLY yet (REPLY_ACK not negotiated before it).
        m = be->recv_raw(std::chrono::milliseconds(2000));
        ASSERT_TRUE(m.ok());
        EXPECT_EQ(m->hdr.flags, vhost::kVersion);
        // 3. SET_VRING_CALL with an fd: NEED_REPLY set now; ack 0.
        m = be->recv_raw(std::chrono::milliseconds(2000));
        ASSERT_TRUE(m.ok());
        EXPECT_EQ(m->hdr.flags, vhost::kVersion | vhost::kFlagNeedReply);
        EXPECT_EQ(m->fds.size(), 1u);
        EXPECT_EQ(m->hdr.size, 8u);
        reply(m->hdr.request, u64(0));
        // 4. SET_VRING_NUM: ack with failure.
        m = be->recv_raw(std::chrono::milliseconds(2000));
        ASSERT_TRUE(m.ok());
        reply(m->hdr.request, u64(1));
        // 5. GET_QUEUE_NUM: reply without the REPLY flag -> rejected.
        m = be->recv_raw(std::chrono::milliseconds(2000));
        ASSERT_TRUE(m.ok());
        reply(m->hdr.request, u64(2), vhost::kVersion);
        // 6. GET_VRING_BASE: wrong size -> rejected.
        m = be->recv_raw(std::chrono::milliseconds(2000));
        ASSERT_TRUE(m.ok());
        reply(m->hdr.request, u64(2));
        // 7. GET_FEATURES: close instead of answering.
        m = be->recv_raw(std::chrono::milliseconds(2000));
        ASSERT_TRUE(m.ok());
        be.reset();
    });

    auto pf = fe->get_protocol_features();
    ASSERT_TRUE(pf.ok()) << pf.error().describe();
    EXPECT_EQ(*pf, vhost::pf::kReplyAck | vhost::pf::kMq);
    ASSERT_TRUE(fe->set_protocol_features(*pf).ok());
    UniqueFd ev(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    auto st = fe->set_vring_call(0, ev.get());
    EXPECT_TRUE(st.ok()) << st.error().describe();
    EXPECT_FALSE(fe->set_vring_num(0, 256).ok());
    EXPECT_FALSE(fe->get_queue_num().ok());
    EXPECT_FALSE(fe->get_vring_base(0).ok());
    auto gf = fe->get_features();
    ASSERT_FALSE(gf.ok());
    EXPECT_EQ(gf.error().code, Errc::kClosed);
    backend.join();
    EXPECT_TRUE(fe->peer_closed(std::chrono::milliseconds(100)));
}

// Backend "client mode": the frontend listens, the backend connects.
TEST(DriverFrontend, ListenAndAcceptAndFdPassing) {
    char tmpl[] = "/tmp/vhostd-fe-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    std::string path = std::string(tmpl) + "/s";
    std::unique_ptr<Frontend> be;
    std::thread backend([&] {
        auto c = Frontend::connect(path, std::chrono::milliseconds(3000));  // retries until listening
        ASSERT_TRUE(c.ok()) << c.error().describe();
        be = std::move(c).value();
        auto m = be->recv_raw(std::chrono::milliseconds(2000));
        ASSERT_TRUE(m.ok());
        EXPECT_EQ(m->hdr.request, static_cast<uint32_t>(vhost::Request::kSetMemTable));
        ASSERT_EQ(m->hdr.size, 8u + 2 * 32u);
        EXPECT_EQ(m->fds.size(), 2u);
        vhost::MemRegion r1;
        std::memcpy(&r1, m->payload.data() + 8 + 32, sizeof(r1));
        EXPECT_EQ(r1.guest_phys_addr, 0x100000u);
        EXPECT_EQ(r1.mmap_offset, 0x2000u);
        // The received fd maps the same memory.
        uint8_t b = 0;
        EXPECT_EQ(pread(m->fds[1].get(), &b, 1, 0x2000), 1);
        EXPECT_EQ(b, 0x77);
    });
    auto fe = Frontend::listen_and_accept(path, std::chrono::milliseconds(3000));
    ASSERT_TRUE(fe.ok()) << fe.error().describe();
    auto mem = std::move(GuestRam::create({{0, 0x10000}, {0x100000, 0x10000, 0x2000}})).value();
    mem->host(0x100000, 1)[0] = 0x77;
    EXPECT_TRUE((*fe)->set_mem_table(*mem).ok());
    backend.join();
    EXPECT_FALSE((*fe)->peer_closed(std::chrono::milliseconds(10)));
    be.reset();
    EXPECT_TRUE((*fe)->peer_closed(std::chrono::milliseconds(1000)));
    ::rmdir(tmpl);
}

}  // namespace
}  // namespace vhostd::testing
