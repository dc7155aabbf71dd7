// The block-device path on real loop devices: size and logical block size come from the
// device (BLKGETSIZE64 / BLKSSZGET), O_DIRECT I/O, discard as a real discard, write-zeroes.
// Needs root (losetup); skipped otherwise.
#include <cstdio>
#include <cstring>

#include "testing/blk_fixture.hpp"

namespace vhostd::testing {
namespace {

// Attaches a loop device; detached in the destructor.
class LoopDevice {
public:
    LoopDevice(const std::string& file, unsigned sector_size) {
        std::string cmd = "losetup --find --show --direct-io=on --sector-size " + std::to_string(sector_size) + " " +
                          file + " 2>/dev/null";
        FILE* p = popen(cmd.c_str(), "r");
        if (p == nullptr) return;
        char buf[128] = {};
        if (fgets(buf, sizeof(buf), p) != nullptr) dev_ = buf;
        pclose(p);
        while (!dev_.empty() && (dev_.back() == '\n' || dev_.back() == ' ')) dev_.pop_back();
    }
    ~LoopDevice() {
        if (!dev_.empty()) [[maybe_unused]] int rc = system(("losetup -d " + dev_).c_str());
    }
    const std::string& dev() const { return dev_; }

private:
    std::string dev_;
};

class BlkBlockDevice : public BlkFixture, public ::testing::WithParamInterface<unsigned> {};

TEST_P(BlkBlockDevice, DirectIoDiscardAndWriteZeroesOnALoopDevice) {
    unsigned ss = GetParam();
    auto file = make_disk("backing.img");
    LoopDevice loop(file, ss);
    if (loop.dev().empty()) GTEST_SKIP() << "cannot attach a loop device (not root?)";
    start_daemon(1);
    auto sock = add_blk("socket=" + path("s.sock") + ",path=" + loop.dev() + ",queues=1,direct=on");
    Guest g;
    connect_guest(g, sock, 1);
    auto cfg = g.fe->get_config(0, sizeof(blk::Config));
    ASSERT_OK(cfg);
    auto c = testing::parse_blk_config(cfg.value());
    EXPECT_EQ(c.capacity, kDiskBytes / 512);
    EXPECT_EQ(c.blk_size, ss) << "logical block size comes from the device";

    // O_DIRECT write + read back, multi-segment, buffers page-aligned as a guest's are.
    std::vector<uint8_t> data(64 * 1024);
    for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i * 31 + 7);
    auto w = testing::make_blk_write(*g.mem, 64, data, {.data_segments = 4});
    ASSERT_OK(w);
    run(g, 0, w.value());
    EXPECT_EQ(w.value().status(), blk::kSOk);
    auto fl = testing::make_blk_flush(*g.mem);
    ASSERT_OK(fl);
    run(g, 0, fl.value());
    EXPECT_EQ(fl.value().status(), blk::kSOk);
    auto r = testing::make_blk_read(*g.mem, 64, static_cast<uint32_t>(data.size()));
    ASSERT_OK(r);
    run(g, 0, r.value());
    EXPECT_EQ(r.value().status(), blk::kSOk);
    EXPECT_TRUE(std::equal(data.begin(), data.end(), r.value().data().begin()));
    EXPECT_EQ(read_file(file, 64 * 512, data.size()), data) << "data reached the backing file";

    // Write-zeroes (both flavours) reads back zeroes on the device.
    for (bool unmap : {false, true}) {
        blk::DiscardSegment seg = testing::blk_segment(64, 32, unmap);
        auto wz = testing::make_blk_write_zeroes(*g.mem, {&seg, 1});
        ASSERT_OK(wz);
        run(g, 0, wz.value());
        EXPECT_EQ(wz.value().status(), blk::kSOk) << "unmap=" << unmap;
        auto z = testing::make_blk_read(*g.mem, 64, 32 * 512);
        ASSERT_OK(z);
        run(g, 0, z.value());
        EXPECT_TRUE(std::all_of(z.value().data().begin(), z.value().data().end(), [](uint8_t b) { return b == 0; }))
            << "unmap=" << unmap;
    }
    // Discard is accepted.
    blk::DiscardSegment d = testing::blk_segment(1024, 256);
    auto dc = testing::make_blk_discard(*g.mem, {&d, 1});
    ASSERT_OK(dc);
    run(g, 0, dc.value());
    EXPECT_EQ(dc.value().status(), blk::kSOk);
    // A 512-byte read on a 4K device is misaligned: IOERR, not a kernel EINVAL surprise.
    if (ss == 4096) {
        auto bad = testing::make_blk_read(*g.mem, 1, 512);
        ASSERT_OK(bad);
        run(g, 0, bad.value());
        EXPECT_EQ(bad.value().status(), blk::kSIoErr);
    }
}
INSTANTIATE_TEST_SUITE_P(SectorSizes, BlkBlockDevice, ::testing::Values(512u, 4096u));

}  // namespace
}  // namespace vhostd::testing
