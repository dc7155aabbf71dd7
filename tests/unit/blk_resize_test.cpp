// Online resize: the device's capacity changes under a connected frontend, the frontend is told
// on the backend channel (VHOST_USER_BACKEND_CONFIG_CHANGE_MSG, answered with REPLY_ACK), and
// requests are checked against the new end from then on.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <thread>

#include "backends/file_backend.hpp"
#include "testing/backend_channel_peer.hpp"
#include "testing/blk_fixture.hpp"

using namespace vhostd;
using namespace vhostd::testing;

namespace {

uint64_t file_size(const std::string& p) {
    struct stat st {};
    EXPECT_EQ(stat(p.c_str(), &st), 0);
    return static_cast<uint64_t>(st.st_size);
}

class BlkResize : public BlkFixture {
protected:
    void SetUp() override {
        BlkFixture::SetUp();
        start_daemon(1);
        disk_ = make_disk("d.img");
        auto s = app::parse_blk_spec("id=disk,socket=" + path("a.sock") + ",path=" + disk_ + ",queues=1");
        ASSERT_OK(s);
        ASSERT_OK(daemon_->add_blk(s.value()));
        sock_ = s.value().socket;
    }
    std::string disk_, sock_;
};

TEST_F(BlkResize, GrowAndShrinkAFileTellTheFrontendAndMoveTheEnd) {
    extra_protocol_features_ = vhost::pf::kBackendReq;
    Guest g;
    connect_guest(g, sock_, 1);
    auto channel = BackendChannelPeer::attach(*g.fe);
    ASSERT_NE(channel, nullptr);
    BackendChannelPeer& peer = *channel;

    const uint64_t old_sectors = kDiskBytes / 512;
    // Past the end before the grow.
    EXPECT_EQ(status_of(g, 0, make_blk_read(*g.mem, old_sectors, 4096)), blk::kSIoErr);

    auto grown = daemon_->resize_device("disk", 2 * kDiskBytes);
    ASSERT_OK(grown);
    EXPECT_EQ(grown.value().old_size, kDiskBytes);
    EXPECT_EQ(grown.value().size, 2 * kDiskBytes);
    EXPECT_TRUE(grown.value().notified) << grown.value().note;
    EXPECT_EQ(peer.changes.load(), 1);
    EXPECT_EQ(peer.capacity.load(), 2 * old_sectors);  // what GET_CONFIG said while handling it
    EXPECT_EQ(file_size(disk_), 2 * kDiskBytes);

    // The new range is there: write past the old end and read it back.
    std::vector<uint8_t> data(4096, 0x5a);
    EXPECT_EQ(status_of(g, 0, make_blk_write(*g.mem, old_sectors + 8, data)), blk::kSOk);
    auto rd = make_blk_read(*g.mem, old_sectors + 8, 4096);
    ASSERT_OK(rd);
    run(g, 0, rd.value());
    EXPECT_EQ(rd.value().status(), blk::kSOk);
    EXPECT_EQ(read_file(disk_, kDiskBytes + 8 * 512, 4096), data);

    // Shrink: the guest's requests past the new end fail with IOERR, before it is too.
    auto shrunk = daemon_->resize_device("disk", kDiskBytes / 2);
    ASSERT_OK(shrunk);
    EXPECT_EQ(shrunk.value().size, kDiskBytes / 2);
    EXPECT_TRUE(shrunk.value().notified);
    EXPECT_EQ(peer.changes.load(), 2);
    EXPECT_EQ(peer.capacity.load(), old_sectors / 2);
    EXPECT_EQ(file_size(disk_), kDiskBytes / 2);
    EXPECT_EQ(status_of(g, 0, make_blk_read(*g.mem, old_sectors / 2, 512)), blk::kSIoErr);
    EXPECT_EQ(status_of(g, 0, make_blk_write(*g.mem, old_sectors / 2 - 1, std::vector<uint8_t>(1024))), blk::kSIoErr);
    EXPECT_EQ(status_of(g, 0, make_blk_read(*g.mem, old_sectors / 2 - 8, 4096)), blk::kSOk);
    EXPECT_EQ(file_size(disk_), kDiskBytes / 2);  // the refused write did not grow the file

    auto list = daemon_->list();
    ASSERT_EQ(list.size(), 1u);
    EXPECT_EQ(list[0].size, kDiskBytes / 2);
    EXPECT_EQ(list[0].state, "running");
    EXPECT_TRUE(list[0].frontend.connected);
    EXPECT_EQ(list[0].frontend.pid, getpid());
}

TEST_F(BlkResize, BadSizesAreRefusedAndChangeNothing) {
    EXPECT_FALSE(daemon_->resize_device("disk", 1000).ok());  // not a multiple of 512
    EXPECT_FALSE(daemon_->resize_device("disk", 0).ok());     // a file needs a size
    EXPECT_FALSE(daemon_->resize_device("nope", kDiskBytes).ok());
    EXPECT_EQ(file_size(disk_), kDiskBytes);
    EXPECT_EQ(daemon_->list()[0].size, kDiskBytes);
}

TEST_F(BlkResize, WithoutABackendChannelTheResizeHappensButIsNotNotified) {
    Guest g;
    connect_guest(g, sock_, 1);  // no BACKEND_REQ
    auto r = daemon_->resize_device("disk", 2 * kDiskBytes);
    ASSERT_OK(r);
    EXPECT_FALSE(r.value().notified);
    EXPECT_NE(r.value().note.find("backend channel"), std::string::npos) << r.value().note;
    // The config space says the new size when the guest reads it.
    auto cfg = g.fe->get_config(0, sizeof(blk::Config));
    ASSERT_OK(cfg);
    blk::Config c{};
    std::memcpy(&c, cfg.value().data(), sizeof(c));
    EXPECT_EQ(c.capacity, 2 * kDiskBytes / 512);
}

TEST(FileBackendResize, ReadOnlyFilesAndOddSizesAreRefused) {
    char tmpl[] = "/tmp/vhostd-resize.XXXXXX";
    int fd = mkstemp(tmpl);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(ftruncate(fd, 1 << 20), 0);
    close(fd);
    auto ro = backends::FileBackend::open({tmpl, true, false, 0});
    ASSERT_OK(ro);
    EXPECT_FALSE(ro.value()->resize(2 << 20).ok());
    auto rw = backends::FileBackend::open({tmpl, false, false, 0});
    ASSERT_OK(rw);
    EXPECT_FALSE(rw.value()->resize(777).ok());
    auto r = rw.value()->resize(3 << 20);
    ASSERT_OK(r);
    EXPECT_EQ(r.value(), 3u << 20);
    EXPECT_EQ(rw.value()->info().size_bytes, 3u << 20);
    EXPECT_EQ(file_size(tmpl), 3u << 20);
    unlink(tmpl);
}

}  // namespace
