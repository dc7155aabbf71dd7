// virtio-blk through the whole stack: vhost-user negotiation, memory, rings, every request
// type and status, both queues, read-only and 4K devices, cache mode, ring stop/restart.
#include <cstring>
#include <numeric>

#include "testing/blk_fixture.hpp"
#include "virtio/blk_device.hpp"

namespace vhostd::testing {
namespace {

std::vector<uint8_t> pattern(size_t n, uint8_t seed) {
    std::vector<uint8_t> v(n);
    for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(seed + i * 13 + (i >> 9));
    return v;
}

class BlkProtocol : public BlkFixture {};

TEST_F(BlkProtocol, NegotiationFeaturesAndConfig) {
    start_daemon();
    auto disk = make_disk("d.img");
    auto sock = add_blk("socket=" + path("s.sock") + ",path=" + disk + ",queues=3,serial=sn-123");
    auto fe = Frontend::connect(sock);
    ASSERT_OK(fe);
    auto& f = *fe.value();
    auto feats = f.get_features();
    ASSERT_OK(feats);
    for (uint64_t bit : {virtio::kFVersion1, virtio::kFEventIdx, virtio::kFIndirectDesc, vhost::kFProtocolFeatures,
                         blk::kFFlush, blk::kFMq, blk::kFDiscard, blk::kFWriteZeroes, blk::kFConfigWce, blk::kFSegMax,
                         blk::kFBlkSize, blk::kFTopology, blk::kFSizeMax})
        EXPECT_TRUE(feats.value() & bit) << "missing feature bit " << __builtin_ctzll(bit);
    EXPECT_FALSE(feats.value() & blk::kFRo);
    auto pf = f.get_protocol_features();
    ASSERT_OK(pf);
    for (uint64_t bit : {vhost::pf::kMq, vhost::pf::kReplyAck, vhost::pf::kConfig, vhost::pf::kConfigureMemSlots,
                         vhost::pf::kBackendReq, vhost::pf::kResetDevice, vhost::pf::kStatus})
        EXPECT_TRUE(pf.value() & bit) << "missing protocol feature bit " << __builtin_ctzll(bit);
    ASSERT_OK(f.set_protocol_features(pf.value()));
    auto qn = f.get_queue_num();
    ASSERT_OK(qn);
    EXPECT_EQ(qn.value(), 3u);
    auto slots = f.get_max_mem_slots();
    ASSERT_OK(slots);
    EXPECT_GE(slots.value(), 32u);

    auto cfg = f.get_config(0, 60);
    ASSERT_OK(cfg);
    ASSERT_EQ(cfg.value().size(), 60u);
    auto c = testing::parse_blk_config(cfg.value());
    EXPECT_EQ(c.capacity, kDiskBytes / 512);
    EXPECT_EQ(c.blk_size, 512u);
    EXPECT_EQ(c.seg_max, virtio::BlkDevice::kSegMax);
    EXPECT_EQ(c.num_queues, 3u);
    EXPECT_EQ(c.writeback, 1u);
    EXPECT_EQ(c.max_discard_seg, 1u);
    EXPECT_GT(c.max_discard_sectors, 0u);
    EXPECT_EQ(c.write_zeroes_may_unmap, 1u);
    // Exactly the size asked for, also past the device's config (zero filled) and at an offset.
    auto big = f.get_config(0, 100);
    ASSERT_OK(big);
    EXPECT_EQ(big.value().size(), 100u);
    EXPECT_TRUE(std::all_of(big.value().begin() + sizeof(blk::Config), big.value().end(), [](uint8_t b) { return b == 0; }));
    auto part = f.get_config(20, 4);
    ASSERT_OK(part);
    uint32_t bs;
    std::memcpy(&bs, part.value().data(), 4);
    EXPECT_EQ(bs, 512u);
    // Out of the 256-byte config space: an error, and with REPLY_ACK not a dead connection.
    EXPECT_FALSE(f.get_config(250, 10).ok());
}

TEST_F(BlkProtocol, VerifiedReadWriteOnTwoQueuesReachesTheFile) {
    start_daemon(2);
    auto disk = make_disk("d.img");
    auto sock = add_blk("socket=" + path("s.sock") + ",path=" + disk + ",queues=2");
    Guest g;
    connect_guest(g, sock, 2);
    // Write on queue 0 in several shapes, read back on queue 1, and check the file itself.
    struct Shape {
        uint64_t sector;
        size_t len;
        testing::BlkReqOptions o;
    };
    std::vector<Shape> shapes = {{8, 4096, {}},
                                 {100, 65536, {.data_segments = 7}},
                                 {300, 16384, {.data_segments = 3, .header_segments = 4, .indirect = true}},
                                 {1000, 512, {.header_segments = 16}}};
    uint8_t seed = 1;
    for (auto& s : shapes) {
        auto data = pattern(s.len, seed++);
        auto w = testing::make_blk_write(*g.mem, s.sector, data, s.o);
        ASSERT_OK(w);
        EXPECT_EQ(run(g, 0, w.value()), 1u);
        EXPECT_EQ(w.value().status(), blk::kSOk);
        testing::BlkReqOptions ro = s.o;
        ro.merge_status = true;  // status byte inside the last data descriptor
        auto r = testing::make_blk_read(*g.mem, s.sector, static_cast<uint32_t>(s.len), ro);
        ASSERT_OK(r);
        EXPECT_EQ(run(g, 1, r.value()), s.len + 1);
        EXPECT_EQ(r.value().status(), blk::kSOk);
        auto got = r.value().data();
        EXPECT_TRUE(std::equal(got.begin(), got.end(), data.begin())) << "read back differs at sector " << s.sector;
        EXPECT_EQ(read_file(disk, s.sector * 512, s.len), data) << "file differs at sector " << s.sector;
    }
    // Untouched data reads as the file's original pattern.
    auto r = testing::make_blk_read(*g.mem, 5000, 4096);
    ASSERT_OK(r);
    EXPECT_EQ(run(g, 0, r.value()), 4097u);
    auto orig = read_file(disk, 5000 * 512, 4096);
    EXPECT_TRUE(std::equal(orig.begin(), orig.end(), r.value().data().begin()));
}

TEST_F(BlkProtocol, EveryRequestTypeAndStatus) {
    start_daemon(1);
    auto disk = make_disk("d.img");
    auto sock = add_blk("socket=" + path("s.sock") + ",path=" + disk + ",queues=1,serial=disk-serial-01");
    Guest g;
    connect_guest(g, sock, 1);
    auto& mem = *g.mem;

    auto fl = testing::make_blk_flush(mem);
    ASSERT_OK(fl);
    EXPECT_EQ(run(g, 0, fl.value()), 1u);
    EXPECT_EQ(fl.value().status(), blk::kSOk);

    auto id = testing::make_blk_get_id(mem);
    ASSERT_OK(id);
    EXPECT_EQ(run(g, 0, id.value()), 21u);
    EXPECT_EQ(id.value().status(), blk::kSOk);
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(id.value().data().data()), 14), "disk-serial-01");

    // WRITE_ZEROES with and without unmap reads back zeroes; DISCARD succeeds.
    for (bool unmap : {false, true}) {
        blk::DiscardSegment seg = testing::blk_segment(64, 16, unmap);
        auto wz = testing::make_blk_write_zeroes(mem, {&seg, 1});
        ASSERT_OK(wz);
        EXPECT_EQ(run(g, 0, wz.value()), 1u);
        EXPECT_EQ(wz.value().status(), blk::kSOk);
        auto file = read_file(disk, 64 * 512, 16 * 512);
        EXPECT_TRUE(std::all_of(file.begin(), file.end(), [](uint8_t b) { return b == 0; })) << "unmap=" << unmap;
    }
    blk::DiscardSegment dseg = testing::blk_segment(128, 8);
    auto dc = testing::make_blk_discard(mem, {&dseg, 1});
    ASSERT_OK(dc);
    run(g, 0, dc.value());
    EXPECT_EQ(dc.value().status(), blk::kSOk);

    auto expect_status = [&](const Result<GuestBlkRequest>& req, uint8_t st, const char* what) {
        EXPECT_EQ(status_of(g, 0, req), st) << what;
    };
    // Spec: unmap on DISCARD and unknown flags are UNSUPP; more segments than max_discard_seg UNSUPP.
    blk::DiscardSegment bad = testing::blk_segment(0, 8, true);
    expect_status(testing::make_blk_discard(mem, {&bad, 1}), blk::kSUnsupp, "discard with unmap");
    bad = testing::blk_segment(0, 8);
    bad.flags = 0x4;
    expect_status(testing::make_blk_write_zeroes(mem, {&bad, 1}), blk::kSUnsupp, "write zeroes, unknown flag");
    blk::DiscardSegment two[2] = {testing::blk_segment(0, 8), testing::blk_segment(16, 8)};
    expect_status(testing::make_blk_discard(mem, two), blk::kSUnsupp, "two discard segments");
    bad = testing::blk_segment(kDiskBytes / 512 - 4, 8);
    expect_status(testing::make_blk_write_zeroes(mem, {&bad, 1}), blk::kSIoErr, "write zeroes past the end");

    // Out of range I/O is IOERR, including sector * 512 overflowing.
    expect_status(testing::make_blk_read(mem, kDiskBytes / 512 - 1, 1024), blk::kSIoErr, "read past the end");
    expect_status(testing::make_blk_read(mem, UINT64_MAX / 256, 512), blk::kSIoErr, "sector overflow");
    auto data = pattern(512, 9);
    expect_status(testing::make_blk_write(mem, kDiskBytes / 512, data), blk::kSIoErr, "write past the end");
    // Not a multiple of 512.
    expect_status(testing::make_blk_read(mem, 0, 100), blk::kSIoErr, "partial sector read");
    // Unknown request types are UNSUPP.
    auto unk = GuestBlkRequest::create(mem, 99, 0, 0);
    expect_status(unk, blk::kSUnsupp, "unknown type 99");
    auto se = GuestBlkRequest::create(mem, blk::kTSecureErase, 0, 16);
    expect_status(se, blk::kSUnsupp, "secure erase (not offered)");
}

TEST_F(BlkProtocol, MalformedChainsGetAnErrorNotACrash) {
    start_daemon(1);
    auto disk = make_disk("d.img");
    auto sock = add_blk("socket=" + path("s.sock") + ",path=" + disk + ",queues=1");
    Guest g;
    connect_guest(g, sock, 1);
    auto& q = *g.queues[0];
    auto buf = g.mem->alloc(4096, 16);
    ASSERT_OK(buf);
    uint64_t b = buf.value();
    auto submit = [&](std::vector<testing::DriverBuf> bufs) -> std::optional<virtio::UsedElem> {
        auto h = q.add_chain(bufs);
        EXPECT_TRUE(h.ok());
        EXPECT_TRUE(q.publish_and_kick(g.kicks[0].get()).ok());
        return q.wait_used(g.calls[0].get(), std::chrono::seconds(5));
    };
    uint8_t* host = g.mem->host(b, 4096);
    // Header shorter than 16 bytes: IOERR in the status byte.
    host[100] = 0xff;
    auto u = submit({{b, 8, false}, {b + 100, 1, true}});
    ASSERT_TRUE(u);
    EXPECT_EQ(host[100], blk::kSIoErr);
    // No writable byte at all: returned with used length 0, nothing written.
    u = submit({{b, 16, false}});
    ASSERT_TRUE(u);
    EXPECT_EQ(u->len, 0u);
    // Read request whose data buffer is device-readable: IOERR.
    blk::ReqHeader h{blk::kTIn, 0, 0};
    std::memcpy(host, &h, sizeof(h));
    host[100] = 0xff;
    u = submit({{b, 16, false}, {b + 512, 512, false}, {b + 100, 1, true}});
    ASSERT_TRUE(u);
    EXPECT_EQ(host[100], blk::kSIoErr);
    // Buffer outside guest memory: the chain comes back (len 0) and the queue keeps working.
    u = submit({{b, 16, false}, {0x7000000000ull, 512, true}, {b + 100, 1, true}});
    ASSERT_TRUE(u);
    EXPECT_EQ(u->len, 0u);
    auto r = testing::make_blk_read(*g.mem, 0, 512);
    ASSERT_OK(r);
    EXPECT_EQ(run(g, 0, r.value()), 513u);
    EXPECT_EQ(r.value().status(), blk::kSOk);
}

TEST_F(BlkProtocol, ReadOnlyDeviceRefusesWrites) {
    start_daemon(1);
    auto disk = make_disk("ro.img");
    auto before = read_file(disk, 0, 4096);
    auto sock = add_blk("socket=" + path("s.sock") + ",path=" + disk + ",queues=1,readonly=on");
    Guest g;
    connect_guest(g, sock, 1);
    auto feats = g.fe->get_features();
    ASSERT_OK(feats);
    EXPECT_TRUE(feats.value() & blk::kFRo);
    EXPECT_FALSE(feats.value() & blk::kFDiscard);
    EXPECT_FALSE(feats.value() & blk::kFWriteZeroes);
    auto data = pattern(4096, 3);
    EXPECT_EQ(status_of(g, 0, testing::make_blk_write(*g.mem, 0, data)), blk::kSIoErr);
    blk::DiscardSegment seg = testing::blk_segment(0, 8);
    EXPECT_EQ(status_of(g, 0, testing::make_blk_write_zeroes(*g.mem, {&seg, 1})), blk::kSUnsupp);
    auto r = testing::make_blk_read(*g.mem, 0, 4096);
    ASSERT_OK(r);
    run(g, 0, r.value());
    EXPECT_EQ(r.value().status(), blk::kSOk);
    EXPECT_TRUE(std::equal(before.begin(), before.end(), r.value().data().begin()));
    EXPECT_EQ(read_file(disk, 0, 4096), before);
}

TEST_F(BlkProtocol, FourKLogicalBlocks) {
    start_daemon(1);
    auto disk = make_disk("4k.img");
    auto sock = add_blk("socket=" + path("s.sock") + ",path=" + disk + ",queues=1,block-size=4096");
    Guest g;
    connect_guest(g, sock, 1);
    auto cfg = g.fe->get_config(0, sizeof(blk::Config));
    ASSERT_OK(cfg);
    auto c = testing::parse_blk_config(cfg.value());
    EXPECT_EQ(c.blk_size, 4096u);
    EXPECT_EQ(c.capacity, kDiskBytes / 512);  // capacity is always in 512-byte sectors
    EXPECT_EQ(c.discard_sector_alignment, 8u);
    auto data = pattern(4096, 5);
    EXPECT_EQ(status_of(g, 0, testing::make_blk_write(*g.mem, 1, data)), blk::kSIoErr) << "512- but not 4K-aligned";
    EXPECT_EQ(status_of(g, 0, testing::make_blk_read(*g.mem, 8, 512)), blk::kSIoErr) << "shorter than a block";
    EXPECT_EQ(status_of(g, 0, testing::make_blk_write(*g.mem, 8, data)), blk::kSOk);
    EXPECT_EQ(read_file(disk, 4096, 4096), data);
}

TEST_F(BlkProtocol, WriteCacheToggleNeedsConfigWce) {
    start_daemon(1);
    auto disk = make_disk("d.img");
    auto sock = add_blk("socket=" + path("s.sock") + ",path=" + disk + ",queues=1");
    {
        Guest g;
        connect_guest(g, sock, 1);
        uint8_t off = 0;
        ASSERT_OK(g.fe->set_config(blk::kWritebackOffset, {&off, 1}));
        auto cfg = g.fe->get_config(blk::kWritebackOffset, 1);
        ASSERT_OK(cfg);
        EXPECT_EQ(cfg.value()[0], 0u);
        // Writes still work in write-through mode (RWF_DSYNC).
        auto data = pattern(4096, 7);
        auto w = testing::make_blk_write(*g.mem, 16, data);
        ASSERT_OK(w);
        run(g, 0, w.value());
        EXPECT_EQ(w.value().status(), blk::kSOk);
        EXPECT_EQ(read_file(disk, 16 * 512, 4096), data);
        // Other config bytes are read-only.
        uint8_t cap = 1;
        EXPECT_FALSE(g.fe->set_config(0, {&cap, 1}).ok());
    }
    Guest g2;
    connect_guest(g2, sock, 1, kGuestFeatures & ~blk::kFConfigWce);
    uint8_t off = 0;
    EXPECT_FALSE(g2.fe->set_config(blk::kWritebackOffset, {&off, 1}).ok()) << "WCE write without CONFIG_WCE";
}

TEST_F(BlkProtocol, GetVringBaseStopsAfterDrainAndRingRestartsFromBase) {
    start_daemon(1);
    auto disk = make_disk("d.img");
    auto sock = add_blk("socket=" + path("s.sock") + ",path=" + disk + ",queues=1");
    Guest g;
    connect_guest(g, sock, 1);
    auto& q = *g.queues[0];
    std::vector<GuestBlkRequest> reqs;
    for (int i = 0; i < 40; ++i) {
        auto r = testing::make_blk_read(*g.mem, static_cast<uint64_t>(i) * 8, 4096);
        ASSERT_OK(r);
        ASSERT_OK(r.value().submit(q));
        reqs.push_back(std::move(r).value());
    }
    ASSERT_OK(q.publish_and_kick(g.kicks[0].get()));
    auto base = g.fe->get_vring_base(0);
    ASSERT_OK(base);
    // The reactor may not have taken all 40 yet, but everything it took was completed (and
    // published) before the reply: exactly `base` used entries are there, none in flight.
    ASSERT_LE(base.value(), 40u);
    EXPECT_EQ(q.read_used_idx(), base.value());
    uint32_t done = 0;
    while (q.pop_used()) ++done;
    EXPECT_EQ(done, base.value());

    // Start the ring again from the base (as QEMU does after a stop/cont).
    g.kicks[0] = make_eventfd();
    ASSERT_OK(g.fe->set_vring_num(0, q.size()));
    ASSERT_OK(g.fe->set_vring_base(0, base.value()));
    ASSERT_OK(g.fe->set_vring_addr(0, q));
    ASSERT_OK(g.fe->set_vring_kick(0, g.kicks[0].get()));
    ASSERT_OK(g.fe->set_vring_call(0, g.calls[0].get()));
    ASSERT_OK(g.fe->set_vring_enable(0, true));
    // The requests left on the ring are taken now, then a new write.
    auto data = pattern(4096, 11);
    auto w = testing::make_blk_write(*g.mem, 0, data);
    ASSERT_OK(w);
    ASSERT_OK(w.value().submit(q));
    ASSERT_OK(q.publish_and_kick(g.kicks[0].get()));
    wait_completions(g, 0, 41 - done);
    for (auto& r : reqs) EXPECT_EQ(r.status(), blk::kSOk);
    EXPECT_EQ(w.value().status(), blk::kSOk);
    EXPECT_EQ(read_file(disk, 0, 4096), data);
    auto base2 = g.fe->get_vring_base(0);
    ASSERT_OK(base2);
    EXPECT_EQ(base2.value(), 41u);
}

TEST_F(BlkProtocol, WithoutProtocolFeaturesRingsAreEnabledImplicitly) {
    start_daemon(1);
    auto sock = add_blk("socket=" + path("s.sock") + ",backend=null,size=8M,queues=1");
    // Never negotiates VHOST_USER_F_PROTOCOL_FEATURES and never sends SET_VRING_ENABLE.
    Guest g;
    auto fe = Frontend::connect(sock);
    ASSERT_OK(fe);
    g.fe = std::move(fe).value();
    ASSERT_OK(g.fe->set_owner());
    ASSERT_OK(g.fe->set_features(kGuestFeatures & ~vhost::kFProtocolFeatures));
    auto mem = GuestRam::create({{0, 8ull << 20}});
    ASSERT_OK(mem);
    g.mem = std::move(mem).value();
    ASSERT_OK(g.fe->set_mem_table(*g.mem));
    auto q = DriverQueue::create(*g.mem, 64, true);
    ASSERT_OK(q);
    g.queues.push_back(std::move(q).value());
    g.kicks.push_back(make_eventfd());
    g.calls.push_back(make_eventfd());
    ASSERT_OK(g.fe->set_vring_num(0, 64));
    ASSERT_OK(g.fe->set_vring_base(0, 0));
    ASSERT_OK(g.fe->set_vring_addr(0, *g.queues[0]));
    ASSERT_OK(g.fe->set_vring_call(0, g.calls[0].get()));
    ASSERT_OK(g.fe->set_vring_kick(0, g.kicks[0].get()));
    auto r = testing::make_blk_read(*g.mem, 0, 4096);
    ASSERT_OK(r);
    std::memset(r.value().data().data(), 0xaa, 4096);
    EXPECT_EQ(run(g, 0, r.value()), 4097u);
    EXPECT_EQ(r.value().status(), blk::kSOk);
    EXPECT_TRUE(std::all_of(r.value().data().begin(), r.value().data().end(), [](uint8_t b) { return b == 0; }))
        << "null backend reads zeroes";
}

TEST_F(BlkProtocol, RealFrontendOrderings) {
    start_daemon(1);
    auto sock = add_blk("socket=" + path("s.sock") + ",backend=null,size=8M,queues=2");
    auto fe = Frontend::connect(sock);
    ASSERT_OK(fe);
    auto& f = *fe.value();
    auto pf = f.get_protocol_features();
    ASSERT_OK(pf);
    ASSERT_OK(f.set_protocol_features(pf.value() & (vhost::pf::kReplyAck | vhost::pf::kMq)));
    // SET_VRING_ENABLE before anything about the ring is known; SET_FEATURES twice.
    ASSERT_OK(f.set_vring_enable(1, true));
    ASSERT_OK(f.set_features(kGuestFeatures));
    ASSERT_OK(f.set_features(kGuestFeatures));
    auto mem = GuestRam::create({{0, 8ull << 20}});
    ASSERT_OK(mem);
    ASSERT_OK(f.set_mem_table(*mem.value()));
    auto q = DriverQueue::create(*mem.value(), 64, true);
    ASSERT_OK(q);
    // Cloud Hypervisor sends a non-zero SET_VRING_BASE: the queue continues from there.
    q.value()->set_positions(500, 500);
    auto kick = make_eventfd(), call = make_eventfd();
    ASSERT_OK(f.set_vring_num(1, 64));
    ASSERT_OK(f.set_vring_base(1, 500));
    ASSERT_OK(f.set_vring_addr(1, *q.value()));
    // used->idx in memory must match what the guest expects after a reconnect.
    q.value()->write_avail_idx(500);
    std::atomic_ref<uint16_t>(*reinterpret_cast<uint16_t*>(q.value()->used_host() + 2)).store(500);
    ASSERT_OK(f.set_vring_call(1, call.get()));
    ASSERT_OK(f.set_vring_kick(1, kick.get()));
    auto r = testing::make_blk_read(*mem.value(), 0, 512);
    ASSERT_OK(r);
    auto head = r.value().submit(*q.value());
    ASSERT_OK(head);
    ASSERT_OK(q.value()->publish_and_kick(kick.get()));
    auto u = q.value()->wait_used(call.get(), std::chrono::seconds(5));
    ASSERT_TRUE(u);
    EXPECT_EQ(u->id, head.value());
    EXPECT_EQ(q.value()->read_used_idx(), 501);
    auto base = f.get_vring_base(1);
    ASSERT_OK(base);
    EXPECT_EQ(base.value(), 501u);
}

TEST_F(BlkProtocol, TinySubmissionQueueIsBackPressureNotFailure) {
    // 8 SQ entries per reactor, 100 requests in flight at once.
    start_daemon(1, PollMode::kAdaptive, 8);
    auto disk = make_disk("d.img");
    auto sock = add_blk("socket=" + path("s.sock") + ",path=" + disk + ",queues=1");
    Guest g;
    connect_guest(g, sock, 1, kGuestFeatures, 128);
    auto& q = *g.queues[0];
    std::vector<GuestBlkRequest> reqs;
    for (int i = 0; i < 100; ++i) {
        auto r = testing::make_blk_read(*g.mem, static_cast<uint64_t>(i) * 8, 4096, {.indirect = true});
        ASSERT_OK(r);
        ASSERT_OK(r.value().submit(q));
        reqs.push_back(std::move(r).value());
    }
    ASSERT_OK(q.publish_and_kick(g.kicks[0].get()));
    wait_completions(g, 0, 100);
    for (int i = 0; i < 100; ++i) {
        EXPECT_EQ(reqs[i].status(), blk::kSOk);
        auto want = read_file(disk, static_cast<uint64_t>(i) * 4096, 4096);
        ASSERT_TRUE(std::equal(want.begin(), want.end(), reqs[i].data().begin())) << i;
    }
}

class BlkPollModes : public BlkFixture, public ::testing::WithParamInterface<PollMode> {};

TEST_P(BlkPollModes, IoWorksInEveryPollingMode) {
    start_daemon(1, GetParam());
    auto disk = make_disk("d.img");
    auto sock = add_blk("socket=" + path("s.sock") + ",path=" + disk + ",queues=1");
    Guest g;
    connect_guest(g, sock, 1);
    for (int i = 0; i < 20; ++i) {
        auto data = pattern(4096, static_cast<uint8_t>(i));
        auto w = testing::make_blk_write(*g.mem, static_cast<uint64_t>(i) * 8, data);
        ASSERT_OK(w);
        run(g, 0, w.value());
        ASSERT_EQ(w.value().status(), blk::kSOk);
        // Let the reactor fall asleep between requests (adaptive: after 50 us).
        usleep(2000);
        EXPECT_EQ(read_file(disk, static_cast<uint64_t>(i) * 4096, 4096), data);
    }
}
INSTANTIATE_TEST_SUITE_P(Modes, BlkPollModes,
                         ::testing::Values(PollMode::kAlways, PollMode::kAdaptive, PollMode::kNever));

}  // namespace
}  // namespace vhostd::testing

namespace vhostd::testing {
namespace {

class BlkIdle : public BlkFixture, public ::testing::WithParamInterface<PollMode> {};

// An idle device must not keep its reactor looping: after the poll window it sleeps on the kick
// eventfds (which QEMU creates O_NONBLOCK, like these) until the guest kicks. Counts reactor
// passes over an idle stretch; a spinning reactor makes hundreds of thousands.
TEST_P(BlkIdle, IdleReactorSleepsAndWakesOnKick) {
    start_daemon(1, GetParam());
    auto sock = add_blk("socket=" + path("s.sock") + ",backend=null,size=8M,queues=2");
    Guest g;
    connect_guest(g, sock, 2);
    auto r = testing::make_blk_read(*g.mem, 0, 4096);
    ASSERT_OK(r);
    EXPECT_EQ(run(g, 0, r.value()), 4097u);
    usleep(50000);
    uint64_t p0 = daemon_->reactor(0).passes.get(), s0 = daemon_->reactor(0).sleeps.get();
    usleep(300000);
    uint64_t p1 = daemon_->reactor(0).passes.get(), s1 = daemon_->reactor(0).sleeps.get();
    EXPECT_LT(p1 - p0, 50u) << "reactor kept looping while idle";
    EXPECT_LE(s1 - s0, 5u);
    // And it wakes up for the next request.
    auto r2 = testing::make_blk_read(*g.mem, 8, 4096);
    ASSERT_OK(r2);
    EXPECT_EQ(run(g, 1, r2.value()), 4097u);
    usleep(50000);
    EXPECT_GT(daemon_->reactor(0).sleeps.get(), s1) << "reactor did not go back to sleep";
}
INSTANTIATE_TEST_SUITE_P(Modes, BlkIdle, ::testing::Values(PollMode::kAdaptive, PollMode::kNever));

}  // namespace
}  // namespace vhostd::testing

namespace vhostd::testing {
namespace {

class BlkKickSuppression : public BlkFixture, public ::testing::WithParamInterface<std::tuple<PollMode, bool>> {};

// A polling reactor must tell the guest not to kick (VRING_USED_F_NO_NOTIFY, or a stale
// avail_event with EVENT_IDX); a sleeping one must ask for every kick. Queues never park here
// (park_after 0): a closed loop through the test's threads can leave a queue idle for longer than
// the park window, and a parked queue asks for kicks (ReactorPark tests that).
TEST_P(BlkKickSuppression, KicksWantedOnlyWhenTheReactorSleeps) {
    auto [mode, event_idx] = GetParam();
    app::DaemonConfig cfg;
    cfg.threads = 1;
    cfg.reactor.mode = mode;
    cfg.reactor.park_after = std::chrono::microseconds(0);
    start_daemon(cfg);
    auto sock = add_blk("socket=" + path("s.sock") + ",backend=null,size=8M,queues=1");
    Guest g;
    connect_guest(g, sock, 1, event_idx ? kGuestFeatures : kGuestFeatures & ~virtio::kFEventIdx);
    auto& q = *g.queues[0];
    auto r = testing::make_blk_read(*g.mem, 0, 512);
    ASSERT_OK(r);
    int wanted = 0;
    for (int i = 0; i < 50; ++i) {
        r.value().rearm(blk::kTIn, static_cast<uint64_t>(i));
        ASSERT_OK(r.value().submit(q));
        q.publish();
        if (q.kick_prepare()) {
            ++wanted;
            eventfd_write(g.kicks[0].get(), 1);
        }
        ASSERT_TRUE(q.wait_used(g.calls[0].get(), std::chrono::seconds(5))) << i;
        if (mode == PollMode::kNever) usleep(1000);  // let it fall asleep
    }
    if (mode == PollMode::kAlways) EXPECT_EQ(wanted, 0) << "polling reactor asked for kicks";
    else EXPECT_GE(wanted, 45) << "sleeping reactor did not ask for kicks";
}
INSTANTIATE_TEST_SUITE_P(Modes, BlkKickSuppression,
                         ::testing::Combine(::testing::Values(PollMode::kAlways, PollMode::kNever),
                                            ::testing::Bool()));

}  // namespace
}  // namespace vhostd::testing

namespace vhostd::testing {
namespace {

// Adaptive polling on a steady sparse stream (open loop, one request every 20 us): the reactor
// must switch to napping (reactor/nap_policy.hpp) and still complete every request, and stopping
// the daemon while it naps must not hang. How much CPU this saves is a benchmark matter
// (bench/run.sh, fixed-rate cell), not asserted here.
TEST_F(BlkFixture, AdaptiveReactorNapsOnSparseStreamAndServesIt) {
    app::DaemonConfig cfg;
    cfg.threads = 1;
    cfg.reactor.mode = PollMode::kAdaptive;
    cfg.reactor.nap.epoch = std::chrono::milliseconds(1);
    start_daemon(cfg);
    auto sock = add_blk("socket=" + path("s.sock") + ",backend=null,size=8M,queues=1");
    Guest g;
    connect_guest(g, sock, 1);
    auto& q = *g.queues[0];
    q.enable_call(false);  // the driver polls its used ring, like blkbench --notify poll
    std::vector<GuestBlkRequest> reqs;
    std::vector<int> by_head(256, -1);
    std::vector<int> free_list;
    for (int i = 0; i < 32; ++i) {
        auto r = testing::make_blk_read(*g.mem, static_cast<uint64_t>(i) * 8, 512);
        ASSERT_OK(r);
        reqs.push_back(std::move(r).value());
        free_list.push_back(i);
    }
    using Clock = std::chrono::steady_clock;
    const auto gap = std::chrono::microseconds(20);
    auto start = Clock::now(), next = start;
    const auto end = start + std::chrono::milliseconds(600);
    uint64_t submitted = 0, completed = 0, bad = 0;
    uint64_t naps0 = daemon_->reactor(0).naps.get();
    while (Clock::now() < end) {
        auto now = Clock::now();
        while (next <= now && !free_list.empty()) {  // open loop: catch up on the schedule
            int i = free_list.back();
            free_list.pop_back();
            auto head = reqs[i].submit(q);
            ASSERT_OK(head);
            by_head[head.value()] = i;
            ASSERT_OK(q.publish_and_kick(g.kicks[0].get()));
            ++submitted;
            next += gap;
        }
        while (auto u = q.pop_used()) {
            int i = by_head[u->id];
            ASSERT_GE(i, 0);
            by_head[u->id] = -1;
            bad += reqs[i].status() != blk::kSOk;
            free_list.push_back(i);
            ++completed;
        }
    }
    // Drain what is still in flight (liveness, not speed: generous bound).
    auto drain_end = Clock::now() + std::chrono::seconds(5);
    while (completed < submitted && Clock::now() < drain_end) {
        while (auto u = q.pop_used()) {
            ++completed;
            bad += reqs[by_head[u->id]].status() != blk::kSOk;
        }
    }
    EXPECT_EQ(completed, submitted);
    EXPECT_EQ(bad, 0u);
    EXPECT_GT(submitted, 10000u);
    EXPECT_GT(daemon_->reactor(0).naps.get() - naps0, 0u) << "adaptive reactor never napped on a 50 k/s stream";
    // TearDown stops the daemon while the reactor is in nap mode.
}

TEST_F(BlkFixture, NapDisabledReactorDoesNotNap) {
    app::DaemonConfig cfg;
    cfg.threads = 1;
    cfg.reactor.mode = PollMode::kAdaptive;
    cfg.reactor.nap.nap_max = std::chrono::microseconds(0);
    start_daemon(cfg);
    auto sock = add_blk("socket=" + path("s.sock") + ",backend=null,size=8M,queues=1");
    Guest g;
    connect_guest(g, sock, 1);
    auto r = testing::make_blk_read(*g.mem, 0, 512);
    ASSERT_OK(r);
    auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(200);
    while (std::chrono::steady_clock::now() < end) {
        EXPECT_EQ(run(g, 0, r.value()), 513u);
        usleep(20);
    }
    EXPECT_EQ(daemon_->reactor(0).naps.get(), 0u);
}

}  // namespace
}  // namespace vhostd::testing
