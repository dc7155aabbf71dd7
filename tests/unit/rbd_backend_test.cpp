// The rbd backend against a real one-node Ceph cluster: run through tests/ceph/with_cluster.sh
// (the ctest entry rbd_backend does), which starts it and names its ceph.conf in
// VHOSTD_TEST_CEPH_CONF. Without a cluster these tests are skipped. A guest driver talks to a real
// vhostd daemon in-process (BlkFixture); what it wrote is read back with librbd directly.
#include <gtest/gtest.h>
#include <rados/librados.h>
#include <rbd/librbd.h>

#include <chrono>
#include <cstdlib>
#include <random>
#include <thread>

#include "testing/backend_channel_peer.hpp"
#include "testing/blk_fixture.hpp"

namespace vhostd::testing {
namespace {

using namespace std::chrono_literals;

class RbdBackendTest : public BlkFixture {
protected:
    void SetUp() override {
        const char* conf = std::getenv("VHOSTD_TEST_CEPH_CONF");
        const char* dir = std::getenv("VHOSTD_TEST_CEPH_DIR");
        if (conf == nullptr || dir == nullptr) GTEST_SKIP() << "no Ceph cluster (run through tests/ceph/with_cluster.sh)";
        conf_ = conf;
        ceph_dir_ = dir;
        BlkFixture::SetUp();
        ASSERT_EQ(rados_create(&cluster_, "admin"), 0);
        ASSERT_EQ(rados_conf_read_file(cluster_, conf), 0);
        ASSERT_EQ(rados_connect(cluster_), 0);
        ASSERT_EQ(rados_ioctx_create(cluster_, "rbd", &io_), 0);
        image_ = fmt::format("t{}", std::random_device{}());
        int order = 22;
        ASSERT_EQ(rbd_create(io_, image_.c_str(), 64ull << 20, &order), 0);
    }
    void TearDown() override {
        if (cluster_ == nullptr) return;
        BlkFixture::TearDown();  // the daemon (and its librbd clients) first
        osd("osd-start");        // a test that stopped the OSD leaves the cluster usable
        rbd_remove(io_, image_.c_str());
        rados_ioctx_destroy(io_);
        rados_shutdown(cluster_);
    }
    void osd(const char* what) {
        std::string cmd = fmt::format("{}/ceph/cluster.sh {} {} >/dev/null 2>&1", VHOSTD_TESTS_DIR, what, ceph_dir_);
        ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
    }
    std::string spec(const std::string& sock, const std::string& extra = "") const {
        return fmt::format("socket={},backend=rbd,pool=rbd,image={},conf={},queues=1{}", sock, image_, conf_, extra);
    }
    // The image's bytes, read with librbd (not through vhostd).
    std::vector<uint8_t> image_bytes(uint64_t off, size_t len) {
        rbd_image_t img = nullptr;
        EXPECT_EQ(rbd_open_read_only(io_, image_.c_str(), &img, nullptr), 0);
        std::vector<uint8_t> out(len);
        EXPECT_EQ(rbd_read(img, off, len, reinterpret_cast<char*>(out.data())), static_cast<ssize_t>(len));
        rbd_close(img);
        return out;
    }
    static std::vector<uint8_t> pattern(size_t n, uint8_t seed) {
        std::vector<uint8_t> v(n);
        for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(i * 13 + seed + i / 4096);
        return v;
    }

    std::string conf_, ceph_dir_, image_;
    rados_t cluster_ = nullptr;
    rados_ioctx_t io_ = nullptr;
};

// Every command type; the writes checked through librbd, the zeroed ranges read back as zeroes.
TEST_F(RbdBackendTest, ReadsWritesFlushDiscardAndZeroesReachTheImage) {
    start_daemon(1, PollMode::kAdaptive);
    auto s = add_blk(spec(path("v.sock")));
    Guest g;
    connect_guest(g, s, 1);
    auto data = pattern(65536, 5);
    EXPECT_EQ(status_of(g, 0, make_blk_write(*g.mem, 128, data, {.data_segments = 4})), blk::kSOk);
    EXPECT_EQ(status_of(g, 0, make_blk_flush(*g.mem)), blk::kSOk);
    EXPECT_EQ(image_bytes(128 * 512, data.size()), data) << "the write is not in the image";
    auto rd = make_blk_read(*g.mem, 128, 65536, {.data_segments = 3});
    ASSERT_OK(rd);
    EXPECT_EQ(run(g, 0, rd.value()), 65537u);
    EXPECT_TRUE(std::equal(data.begin(), data.end(), rd.value().data().begin())) << "read back differs";
    // Write-zeroes, without and with unmap allowed, must read back as zeroes; discard is advisory
    // (librbd skips what does not cover whole objects): it only has to succeed.
    blk::DiscardSegment z = blk_segment(128, 16);
    EXPECT_EQ(status_of(g, 0, make_blk_write_zeroes(*g.mem, std::span(&z, 1))), blk::kSOk);
    blk::DiscardSegment zu = blk_segment(144, 16, true);
    EXPECT_EQ(status_of(g, 0, make_blk_write_zeroes(*g.mem, std::span(&zu, 1))), blk::kSOk);
    auto img = image_bytes(128 * 512, 32 * 512);
    EXPECT_TRUE(std::all_of(img.begin(), img.end(), [](uint8_t b) { return b == 0; })) << "write-zeroes left data";
    blk::DiscardSegment d = blk_segment(160, 16);
    EXPECT_EQ(status_of(g, 0, make_blk_discard(*g.mem, std::span(&d, 1))), blk::kSOk);
}

// The OSD stops with the guest's writes on their way: they wait (librbd resends them), and
// complete once it is back; the data is in the image.
TEST_F(RbdBackendTest, RequestsWaitForAStoppedOsdAndComplete) {
    start_daemon(1, PollMode::kAdaptive);
    auto s = add_blk(spec(path("v.sock"), ",timeout=120"));
    Guest g;
    connect_guest(g, s, 1);
    EXPECT_EQ(status_of(g, 0, make_blk_read(*g.mem, 0, 4096)), blk::kSOk);
    osd("osd-stop");
    std::vector<GuestBlkRequest> reqs;
    std::vector<std::vector<uint8_t>> datas;
    for (int i = 0; i < 4; ++i) {
        datas.push_back(pattern(4096, static_cast<uint8_t>(70 + i)));
        auto w = make_blk_write(*g.mem, 4096 + i * 8, datas.back());
        ASSERT_OK(w);
        ASSERT_OK(w.value().submit(*g.queues[0]));
        reqs.push_back(std::move(w).value());
    }
    ASSERT_OK(g.queues[0]->publish_and_kick(g.kicks[0].get()));
    std::this_thread::sleep_for(1500ms);
    EXPECT_FALSE(g.queues[0]->pop_used().has_value()) << "a write completed while the OSD was stopped";
    osd("osd-start");
    size_t done = 0;
    while (done < reqs.size()) {
        ASSERT_TRUE(g.queues[0]->wait_used(g.calls[0].get(), std::chrono::seconds(60))) << done << " completed";
        ++done;
        while (done < reqs.size() && g.queues[0]->pop_used()) ++done;
    }
    for (size_t i = 0; i < reqs.size(); ++i) {
        EXPECT_EQ(reqs[i].status(), blk::kSOk) << i;
        EXPECT_EQ(image_bytes((4096 + i * 8) * 512, 4096), datas[i]) << i;
    }
}

// With timeout=3 a request to a cluster whose OSD is gone fails with an I/O error after about
// that long; another device on the same reactor serves throughout.
TEST_F(RbdBackendTest, ARequestFailsAfterTheTimeoutWhileOthersServe) {
    start_daemon(1, PollMode::kAdaptive);
    auto s = add_blk(spec(path("v.sock"), ",timeout=3"));
    auto other = add_blk("socket=" + path("o.sock") + ",backend=null,size=8M,queues=1");
    Guest g, o;
    connect_guest(g, s, 1);
    connect_guest(o, other, 1);
    EXPECT_EQ(status_of(g, 0, make_blk_read(*g.mem, 0, 4096)), blk::kSOk);
    osd("osd-stop");
    auto rd = make_blk_read(*g.mem, 64, 4096);
    ASSERT_OK(rd);
    auto t0 = std::chrono::steady_clock::now();
    ASSERT_OK(rd.value().submit(*g.queues[0]));
    ASSERT_OK(g.queues[0]->publish_and_kick(g.kicks[0].get()));
    for (int i = 0; i < 20; ++i) EXPECT_EQ(status_of(o, 0, make_blk_read(*o.mem, 0, 4096)), blk::kSOk);
    auto used = g.queues[0]->wait_used(g.calls[0].get(), std::chrono::seconds(30));
    ASSERT_TRUE(used.has_value()) << "the request never failed";
    auto took = std::chrono::steady_clock::now() - t0;
    EXPECT_EQ(rd.value().status(), blk::kSIoErr);
    EXPECT_GE(took, 2500ms);
    EXPECT_LT(took, 20s);
}

// Another client resizes the image (rbd resize, here librbd on a second handle): vhostd notices
// through its update watch, tells the frontend (CONFIG_CHANGE_MSG; the capacity GET_CONFIG reads
// while handling it is the new one), and checks requests against the new end. Then a shrink.
TEST_F(RbdBackendTest, AResizeByAnotherClientReachesTheGuest) {
    start_daemon(1, PollMode::kAdaptive);
    extra_protocol_features_ = vhost::pf::kBackendReq;
    auto s = add_blk(spec(path("v.sock"), ",id=vol"));
    Guest g;
    connect_guest(g, s, 1);
    auto channel = BackendChannelPeer::attach(*g.fe);
    ASSERT_NE(channel, nullptr);
    BackendChannelPeer& peer = *channel;
    const uint64_t old_sectors = (64ull << 20) / 512;
    EXPECT_EQ(status_of(g, 0, make_blk_read(*g.mem, old_sectors, 4096)), blk::kSIoErr);

    auto resize_elsewhere = [&](uint64_t bytes) {
        rbd_image_t img = nullptr;
        ASSERT_EQ(rbd_open(io_, image_.c_str(), &img, nullptr), 0);
        ASSERT_EQ(rbd_resize(img, bytes), 0);
        rbd_close(img);
    };
    auto wait_for = [&](int changes) {
        for (int i = 0; i < 200 && peer.changes.load() < changes; ++i) std::this_thread::sleep_for(50ms);
        return peer.changes.load();
    };
    resize_elsewhere(128ull << 20);
    ASSERT_EQ(wait_for(1), 1) << "the frontend was not told of the grow";
    EXPECT_EQ(peer.capacity.load(), 2 * old_sectors);
    EXPECT_EQ(daemon_->info("vol").value().size, 128ull << 20);
    auto data = pattern(4096, 9);
    EXPECT_EQ(status_of(g, 0, make_blk_write(*g.mem, old_sectors + 8, data)), blk::kSOk);
    EXPECT_EQ(image_bytes((old_sectors + 8) * 512, data.size()), data);

    resize_elsewhere(32ull << 20);
    ASSERT_EQ(wait_for(2), 2) << "the frontend was not told of the shrink";
    EXPECT_EQ(peer.capacity.load(), old_sectors / 2);
    EXPECT_EQ(status_of(g, 0, make_blk_read(*g.mem, old_sectors / 2, 512)), blk::kSIoErr);
    EXPECT_EQ(status_of(g, 0, make_blk_read(*g.mem, old_sectors / 2 - 8, 4096)), blk::kSOk);

    // A header update that is not a resize (a snapshot) tells nobody anything.
    rbd_image_t img = nullptr;
    ASSERT_EQ(rbd_open(io_, image_.c_str(), &img, nullptr), 0);
    EXPECT_EQ(rbd_snap_create(img, "s1"), 0);
    std::this_thread::sleep_for(1s);
    EXPECT_EQ(peer.changes.load(), 2);
    EXPECT_EQ(rbd_snap_remove(img, "s1"), 0);
    rbd_close(img);
}

// No such image: a clear error, no device.
TEST_F(RbdBackendTest, NoImageNoDevice) {
    start_daemon(1, PollMode::kAdaptive);
    auto sp = app::parse_blk_spec(fmt::format("socket={},backend=rbd,pool=rbd,image=nope{},conf={}", path("v.sock"),
                                              image_, conf_));
    ASSERT_OK(sp);
    auto id = daemon_->add_blk(sp.value());
    ASSERT_FALSE(id.ok());
    EXPECT_NE(id.error().describe().find("open the image"), std::string::npos) << id.error().describe();
}

}  // namespace
}  // namespace vhostd::testing
