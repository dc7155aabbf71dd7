// backend=nvme: the namespace description read from sysfs (anywhere), and the passthrough data
// path on a real NVMe namespace when VHOSTD_TEST_NVME names its generic device (/dev/ngXnY), and
// a zoned virtio-blk device served from a real ZNS namespace when VHOSTD_TEST_NVME_ZONED does.
// This host has no NVMe: tests/e2e/test_nvme.sh runs these inside a TCG guest with a
// QEMU-emulated controller, where the NvmeDevice tests must run (it fails on a skip there).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>
#include <vector>

#include "backends/nvme_backend.hpp"
#include "reactor/reactor.hpp"
#include "testing/blk_fixture.hpp"
#include "testing/channel_runner.hpp"

using namespace vhostd;
using backends::BlockOp;
using backends::BlockRequest;

namespace {

namespace fs = std::filesystem;
namespace vt = vhostd::testing;

// A fake /sys/block/nvme0n1 in a temporary directory.
struct FakeSysfs {
    fs::path root;
    fs::path dir;
    FakeSysfs() {
        char tmpl[] = "/tmp/vhostd-nvme-sysfs-XXXXXX";
        root = mkdtemp(tmpl);
        dir = root / "nvme0n1";
        fs::create_directories(dir / "queue");
        set("nsid", "1");
        set("size", "131072");  // 64 MiB in 512-byte sectors
        set("queue/logical_block_size", "512");
        set("queue/physical_block_size", "4096");
        set("queue/max_hw_sectors_kb", "512");
        set("queue/max_segments", "127");
        set("queue/write_cache", "write back");
        set("queue/discard_max_hw_bytes", "2199023255040");
        set("queue/write_zeroes_max_bytes", "33554432");
        set("queue/zoned", "none");
    }
    ~FakeSysfs() { fs::remove_all(root); }
    void set(const std::string& attr, const std::string& v) { std::ofstream(dir / attr) << v << "\n"; }
};

TEST(NvmeNamespace, ReadsTheDriversDescription) {
    FakeSysfs s;
    auto ns = backends::read_nvme_namespace(s.dir);
    ASSERT_TRUE(ns.ok()) << ns.error().describe();
    EXPECT_EQ(ns->block_name, "nvme0n1");
    EXPECT_EQ(ns->nsid, 1u);
    EXPECT_EQ(ns->lba_size, 512u);
    EXPECT_EQ(ns->physical_block, 4096u);
    EXPECT_EQ(ns->lbas, 131072u);
    EXPECT_EQ(ns->max_bytes, 512u * 1024);
    EXPECT_EQ(ns->max_segments, 127u);
    EXPECT_TRUE(ns->volatile_cache);
    EXPECT_TRUE(ns->deallocate);
    EXPECT_TRUE(ns->write_zeroes);
    EXPECT_EQ(ns->write_zeroes_max_lbas, 65536u);  // 32 MiB of 512 B LBAs

    s.set("queue/logical_block_size", "4096");
    s.set("queue/write_cache", "write through");
    s.set("queue/discard_max_hw_bytes", "0");
    s.set("queue/write_zeroes_max_bytes", "0");
    ns = backends::read_nvme_namespace(s.dir);
    ASSERT_TRUE(ns.ok()) << ns.error().describe();
    EXPECT_EQ(ns->lbas, 16384u);
    EXPECT_FALSE(ns->volatile_cache);
    EXPECT_FALSE(ns->deallocate);
    EXPECT_FALSE(ns->write_zeroes);
}

TEST(NvmeNamespace, RefusesWhatItCannotServe) {
    struct Case {
        const char* attr;
        const char* value;
        const char* says;
    };
    const Case cases[] = {
        {"queue/zoned", "host-aware", "host-managed ones are served"},
        {"queue/zoned", "host-managed", "chunk_sectors"},  // no zone attributes in the fake
        {"size", "0", "no capacity"},                       // an LBA format with metadata
        {"queue/logical_block_size", "8192", "LBA size"},
        {"queue/logical_block_size", "1000", "LBA size"},
        {"nsid", "0", "namespace id"},
        {"nsid", "-1", "not a number"},
        {"size", "12abc", "not a number"},
        {"size", "99999999999999999999999", "not a number"},  // out of range for 64 bits
        {"queue/max_segments", "", "not a number"},
    };
    for (const Case& c : cases) {
        FakeSysfs s;
        s.set(c.attr, c.value);
        auto ns = backends::read_nvme_namespace(s.dir);
        ASSERT_FALSE(ns.ok()) << c.attr << "=" << c.value;
        EXPECT_NE(ns.error().describe().find(c.says), std::string::npos) << ns.error().describe();
    }
    FakeSysfs s;
    fs::remove(s.dir / "nsid");
    EXPECT_FALSE(backends::read_nvme_namespace(s.dir).ok());
    // Huge limits are clamped, not trusted.
    FakeSysfs big;
    big.set("queue/max_hw_sectors_kb", "4294967295");
    big.set("queue/max_segments", "4294967295");
    auto ns = backends::read_nvme_namespace(big.dir);
    ASSERT_TRUE(ns.ok());
    EXPECT_EQ(ns->max_bytes, 16u << 20);
    EXPECT_EQ(ns->max_segments, 1024u);
}

// A host-managed namespace: 64 MiB in 32 zones of 2 MiB.
struct FakeZonedSysfs : FakeSysfs {
    FakeZonedSysfs() {
        set("queue/zoned", "host-managed");
        set("queue/chunk_sectors", "4096");
        set("queue/nr_zones", "32");
        set("queue/max_open_zones", "14");
        set("queue/max_active_zones", "0");
        set("queue/zone_append_max_bytes", "1048576");
    }
};

TEST(NvmeNamespace, ReadsAZonedNamespacesZones) {
    FakeZonedSysfs s;
    auto ns = backends::read_nvme_namespace(s.dir);
    ASSERT_TRUE(ns.ok()) << ns.error().describe();
    EXPECT_EQ(ns->zone_lbas, 4096u);
    EXPECT_EQ(ns->nr_zones, 32u);
    EXPECT_EQ(ns->max_open, 14u);
    EXPECT_EQ(ns->max_active, 0u);
    // The append limit is one command's: 512 KiB of transfer, and 126 whole pages whatever the
    // buffer's layout (127 segments).
    EXPECT_EQ(ns->max_append_bytes, 126u * 4096);
    EXPECT_FALSE(ns->deallocate) << "no discard on a host-managed namespace";
    EXPECT_FALSE(ns->write_zeroes);

    s.set("queue/zone_append_max_bytes", "65536");
    EXPECT_EQ(backends::read_nvme_namespace(s.dir)->max_append_bytes, 65536u);
    s.set("queue/logical_block_size", "4096");  // 16384 LBAs, zones of 512
    ns = backends::read_nvme_namespace(s.dir);
    ASSERT_TRUE(ns.ok()) << ns.error().describe();
    EXPECT_EQ(ns->zone_lbas, 512u);
}

TEST(NvmeNamespace, RefusesZonesThatDoNotAddUp) {
    struct Case {
        const char* attr;
        const char* value;
        const char* says;
    };
    const Case cases[] = {
        {"queue/chunk_sectors", "0", "zone size"},
        {"queue/chunk_sectors", "8589934592", "zone size"},  // more than virtio's 32 bits
        {"queue/nr_zones", "31", "do not make"},
        {"queue/nr_zones", "0", "do not make"},
        {"queue/max_open_zones", "4294967296", "out of range"},
        {"queue/zone_append_max_bytes", "256", "no zone append"},
        {"queue/nr_zones", "x", "not a number"},
    };
    for (const Case& c : cases) {
        FakeZonedSysfs s;
        s.set(c.attr, c.value);
        auto ns = backends::read_nvme_namespace(s.dir);
        ASSERT_FALSE(ns.ok()) << c.attr << "=" << c.value;
        EXPECT_NE(ns.error().describe().find(c.says), std::string::npos) << ns.error().describe();
    }
    FakeZonedSysfs s;
    s.set("queue/logical_block_size", "4096");
    s.set("queue/chunk_sectors", "4");  // 2 KiB zones: not whole 4 KiB LBAs
    EXPECT_FALSE(backends::read_nvme_namespace(s.dir).ok());
}

TEST(NvmeBackend, RefusesWhatIsNotAGenericNamespaceDevice) {
    auto b = backends::NvmeBackend::open({"/dev/null", false});
    ASSERT_FALSE(b.ok());
    EXPECT_NE(b.error().describe().find("generic device"), std::string::npos) << b.error().describe();
    EXPECT_FALSE(backends::NvmeBackend::open({"/nonexistent/ng0n1", false}).ok());
    EXPECT_FALSE(backends::NvmeBackend::open({"", false}).ok());
    // The right name, but a regular file: refused before anything is sent to it.
    char tmpl[] = "/tmp/vhostd-nvme-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    std::string fake = std::string(tmpl) + "/ng0n1";
    std::ofstream(fake) << "x";
    b = backends::NvmeBackend::open({fake, false});
    ASSERT_FALSE(b.ok());
    EXPECT_NE(b.error().describe().find("not a character device"), std::string::npos) << b.error().describe();
    fs::remove_all(tmpl);
}

// ---- a real namespace -------------------------------------------------------------------------

class NvmeDevice : public ::testing::Test {
protected:
    void SetUp() override {
        const char* dev = std::getenv("VHOSTD_TEST_NVME");
        if (dev == nullptr) GTEST_SKIP() << "VHOSTD_TEST_NVME is not set (tests/e2e/test_nvme.sh sets it in a guest)";
        auto b = backends::NvmeBackend::open({dev, false});
        ASSERT_TRUE(b.ok()) << b.error().describe();
        be_ = std::move(b).value();
        lba_ = be_->info().block_size;
        // kNever: the reactor sleeps whenever it can, so every completion comes through the
        // command ring's eventfd.
        r_ = std::make_unique<Reactor>(0, ReactorConfig{.mode = PollMode::kNever});
        ASSERT_TRUE(r_->start().ok());
        r_->run_sync([&] {
            auto c = be_->open_channel(*r_, 64);
            ASSERT_TRUE(c.ok()) << c.error().describe();
            ch_ = std::move(c).value();
        });
    }
    void TearDown() override {
        if (r_) {
            r_->run_sync([&] { ch_.reset(); });
            r_->stop();
        }
    }

    // One submission; its result, or -1000 - Errc when submit() refused it.
    int32_t run(const BlockRequest& q) { return vt::run_request(*r_, *ch_, q); }

    // A read or write of `buf` in pieces of the given sizes, continued after short transfers
    // (as the device does); the number of commands it took, or -1.
    int io(BlockOp op, uint64_t offset, std::vector<uint8_t>& buf, const std::vector<size_t>& pieces, bool fua = false) {
        auto iov = vt::iovecs_of(buf, pieces);
        size_t first = 0;
        uint64_t left = buf.size();
        int commands = 0;
        while (left > 0) {
            BlockRequest q{op, iov.data() + first, static_cast<unsigned>(iov.size() - first), offset, 0, fua};
            int32_t res = run(q);
            ++commands;
            if (res <= 0) {
                ADD_FAILURE() << "op " << static_cast<int>(op) << " at " << offset << ": " << res;
                return -1;
            }
            auto done = static_cast<uint64_t>(res);
            EXPECT_LE(done, left);
            left -= done;
            offset += done;
            while (done > 0) {
                size_t take = std::min<size_t>(done, iov[first].iov_len);
                iov[first].iov_base = static_cast<uint8_t*>(iov[first].iov_base) + take;
                iov[first].iov_len -= take;
                done -= take;
                if (iov[first].iov_len == 0) ++first;
            }
        }
        return commands;
    }

    std::vector<uint8_t> pattern(size_t n, uint32_t seed) { return vt::random_bytes(n, seed); }

    std::unique_ptr<backends::NvmeBackend> be_;
    std::unique_ptr<Reactor> r_;
    std::unique_ptr<backends::BlockChannel> ch_;
    uint32_t lba_ = 512;
};

TEST_F(NvmeDevice, WritesReadBackAcrossCommandsAndSegments) {
    const auto& ns = be_->ns();
    ASSERT_GE(be_->info().size_bytes, uint64_t{8} << 20);
    // Larger than a command carries: the first answers are short, the rest follows.
    const size_t n = 2 * ns.max_bytes + 3 * lba_;
    auto data = pattern(n, 7);
    // Odd segment sizes (the kernel bounces what the controller cannot map).
    std::vector<size_t> w = {100, lba_ - 100, 3 * lba_ + 17, n - (4 * lba_ + 17)};
    EXPECT_GE(io(BlockOp::kWrite, 8 * lba_, data, w), 3);
    std::vector<uint8_t> back(n, 0);
    std::vector<size_t> r = {n / 2, n - n / 2};
    EXPECT_GE(io(BlockOp::kRead, 8 * lba_, back, r), 3);
    EXPECT_TRUE(back == data) << "read back differs";
    // A single-segment read of one LBA in the middle.
    std::vector<uint8_t> one(lba_);
    EXPECT_EQ(io(BlockOp::kRead, 8 * lba_ + ns.max_bytes, one, {lba_}), 1);
    EXPECT_EQ(std::memcmp(one.data(), data.data() + ns.max_bytes, lba_), 0);
    // FUA write, then a flush.
    auto f = pattern(4 * lba_, 9);
    EXPECT_EQ(io(BlockOp::kWrite, 0, f, {4 * lba_}, true), 1);
    EXPECT_EQ(run(BlockRequest{BlockOp::kFlush}), 0);
    std::vector<uint8_t> fb(4 * lba_);
    EXPECT_EQ(io(BlockOp::kRead, 0, fb, {lba_, 3 * lba_}), 1);
    EXPECT_TRUE(fb == f);
}

// Pages that need not merge into segments (two-page pieces with a gap page between them): a
// command carries at most max_segments pages, however few bytes that is (the kernel refuses a
// command whose pages make more segments with EINVAL).
TEST_F(NvmeDevice, ScatteredPagesAreCutToTheSegmentLimit) {
    const uint32_t segs = be_->ns().max_segments;
    constexpr size_t kPiece = 8192, kStride = 12288;
    const size_t n = segs / 2 + 3;
    void* mem = nullptr;
    ASSERT_EQ(posix_memalign(&mem, 4096, n * kStride), 0);
    std::unique_ptr<uint8_t, decltype(&free)> hold(static_cast<uint8_t*>(mem), &free);
    auto data = pattern(n * kPiece, 21);
    std::vector<iovec> iov(n);
    for (size_t i = 0; i < n; ++i) {
        iov[i] = {hold.get() + i * kStride, kPiece};
        std::memcpy(iov[i].iov_base, data.data() + i * kPiece, kPiece);
    }
    size_t at = 0;
    int commands = 0;
    while (at < n * kPiece) {
        // Rebuild the remaining iovecs from byte `at`.
        std::vector<iovec> rest;
        for (size_t i = at / kPiece; i < n; ++i) {
            size_t skip = i == at / kPiece ? at % kPiece : 0;
            rest.push_back({hold.get() + i * kStride + skip, kPiece - skip});
        }
        int32_t res = run(BlockRequest{BlockOp::kWrite, rest.data(), static_cast<unsigned>(rest.size()), at, 0});
        ASSERT_GT(res, 0) << "the kernel refused a command (" << res << ") at byte " << at;
        EXPECT_LE(static_cast<uint64_t>(res), uint64_t{segs} * 4096);
        at += static_cast<size_t>(res);
        ++commands;
    }
    EXPECT_GE(commands, 2);
    std::vector<uint8_t> back(n * kPiece);
    EXPECT_GE(io(BlockOp::kRead, 0, back, {back.size()}), 1);
    EXPECT_TRUE(back == data);
}

TEST_F(NvmeDevice, WriteZeroesAndDeallocate) {
    const auto& ns = be_->ns();
    ASSERT_TRUE(ns.write_zeroes && ns.deallocate) << "the emulated namespace supports both";
    const uint64_t base = 4096 * uint64_t{lba_};
    auto data = pattern(16 * lba_, 11);
    for (BlockOp op : {BlockOp::kWriteZeroes, BlockOp::kWriteZeroesUnmap}) {
        ASSERT_EQ(io(BlockOp::kWrite, base, data, {data.size()}), 1);
        EXPECT_EQ(run(BlockRequest{op, nullptr, 0, base + 4 * lba_, 8 * uint64_t{lba_}}), 0);
        std::vector<uint8_t> back(data.size(), 0xee);
        ASSERT_EQ(io(BlockOp::kRead, base, back, {back.size()}), 1);
        for (size_t i = 0; i < back.size(); ++i) {
            bool zero = i >= 4 * lba_ && i < 12 * lba_;
            if (back[i] != (zero ? 0 : data[i])) {
                ADD_FAILURE() << "op " << static_cast<int>(op) << ": byte " << i << " is " << int(back[i]);
                break;
            }
        }
    }
    // Deallocate: succeeds (what it reads back is the controller's business).
    EXPECT_EQ(run(BlockRequest{BlockOp::kDiscard, nullptr, 0, base, 16 * uint64_t{lba_}}), 0);
    // Write zeroes larger than one command: pieces, one after the other, up to the last LBA.
    const uint64_t lbas = ns.write_zeroes_max_lbas + 3;
    const uint64_t end = be_->info().size_bytes;
    ASSERT_GT(end, lbas * lba_ + lba_);
    auto tail = pattern(lba_, 13);
    ASSERT_EQ(io(BlockOp::kWrite, end - lba_, tail, {lba_}), 1);
    EXPECT_EQ(run(BlockRequest{BlockOp::kWriteZeroes, nullptr, 0, end - lbas * lba_, lbas * lba_}), 0);
    std::vector<uint8_t> back(lba_, 0xee);
    ASSERT_EQ(io(BlockOp::kRead, end - lba_, back, {lba_}), 1);
    EXPECT_EQ(back, std::vector<uint8_t>(lba_, 0));
    EXPECT_EQ(run(BlockRequest{BlockOp::kDiscard, nullptr, 0, end - lbas * lba_, lbas * lba_}), 0);
}

TEST_F(NvmeDevice, RefusesRequestsTheNamespaceCannotTake) {
    const uint64_t end = be_->info().size_bytes;
    std::vector<uint8_t> buf(2 * lba_);
    iovec iov{buf.data(), buf.size()};
    const int32_t invalid = -1000 - static_cast<int32_t>(Errc::kInvalid);
    EXPECT_EQ(run(BlockRequest{BlockOp::kRead, &iov, 1, 1, 0}), invalid);                  // unaligned
    EXPECT_EQ(run(BlockRequest{BlockOp::kRead, &iov, 1, end - lba_, 0}), invalid);         // past the end
    EXPECT_EQ(run(BlockRequest{BlockOp::kWrite, &iov, 1, UINT64_MAX - lba_ + 1, 0}), invalid);
    EXPECT_EQ(run(BlockRequest{BlockOp::kDiscard, nullptr, 0, 0, 0}), invalid);            // empty
    EXPECT_EQ(run(BlockRequest{BlockOp::kWriteZeroes, nullptr, 0, 0, lba_ + 1}), invalid);  // partial LBA
    EXPECT_EQ(run(BlockRequest{BlockOp::kWriteZeroes, nullptr, 0, end, lba_}), invalid);
    // A first LBA spread over more segments than a command may carry.
    const uint32_t segs = be_->ns().max_segments;
    if (segs < lba_) {
        std::vector<iovec> tiny(segs + 1);
        for (uint32_t i = 0; i <= segs; ++i) tiny[i] = {buf.data() + i, 1};
        EXPECT_EQ(run(BlockRequest{BlockOp::kRead, tiny.data(), segs + 1, 0, 0}), invalid);
    }
    // The channel still works afterwards.
    EXPECT_EQ(run(BlockRequest{BlockOp::kRead, &iov, 1, 0, 0}), static_cast<int32_t>(buf.size()));
}

// ---- a real zoned namespace, served as a zoned virtio-blk device ---------------------------------
//
// vhostd (in-process, a real socket) serves backend=nvme on a ZNS namespace; the test is the
// guest driver. test_nvme.sh's namespace: 4 KiB LBAs, zones of 1 MiB with 768 KiB writable,
// at most 4 open and 6 active zones.
namespace blk = vhostd::virtio::blk;

class ZonedNvme : public vt::BlkFixture {
protected:
    void SetUp() override {
        const char* dev = std::getenv("VHOSTD_TEST_NVME_ZONED");
        if (dev == nullptr) GTEST_SKIP() << "VHOSTD_TEST_NVME_ZONED is not set (tests/e2e/test_nvme.sh sets it in a guest)";
        BlkFixture::SetUp();
        start_daemon(1);
        sock_ = add_blk("socket=" + path("z.sock") + ",backend=nvme,path=" + dev);
        connect_guest(g_, sock_, 1, vt::kGuestFeatures | blk::kFZoned);
        ASSERT_TRUE(g_.features & blk::kFZoned) << "the device did not offer VIRTIO_BLK_F_ZONED";
        auto raw = g_.fe->get_config(0, sizeof(blk::Config));
        ASSERT_TRUE(raw.ok());
        cfg_ = vt::parse_blk_config(raw.value());
        zs_ = cfg_.zone_sectors;
        ASSERT_GT(zs_, 0u);
        nr_ = cfg_.capacity / zs_;
        ASSERT_EQ(status(vt::make_blk_zone_mgmt(*g_.mem, blk::kTZoneResetAll, 0)), blk::kSOk);
    }

    uint8_t status(const Result<vt::GuestBlkRequest>& r) { return status_of(g_, 0, r); }
    uint8_t mgmt(uint32_t type, uint64_t zone) { return status(vt::make_blk_zone_mgmt(*g_.mem, type, zone * zs_)); }

    // The zones from the one holding `sector`, `room` descriptors at most.
    std::vector<blk::ZoneDescriptor> report(uint64_t sector, uint32_t room) {
        auto r = vt::make_blk_zone_report(*g_.mem, sector, 64 + 64 * room);
        EXPECT_TRUE(r.ok());
        uint32_t used = run(g_, 0, r.value());
        EXPECT_EQ(r.value().status(), blk::kSOk);
        blk::ZoneReportHeader h{};
        std::memcpy(&h, r.value().data().data(), sizeof(h));
        EXPECT_LE(h.nr_zones, room);
        EXPECT_EQ(used, 64 + 64 * h.nr_zones + 1) << "the used length covers the header, the zones and the status";
        std::vector<blk::ZoneDescriptor> z(std::min<uint64_t>(h.nr_zones, room));
        std::memcpy(z.data(), r.value().data().data() + 64, z.size() * 64);
        return z;
    }
    blk::ZoneDescriptor zone(uint64_t i) {
        auto z = report(i * zs_, 1);
        EXPECT_EQ(z.size(), 1u);
        return z.empty() ? blk::ZoneDescriptor{} : z[0];
    }

    std::string sock_;
    vt::Guest g_;
    blk::Config cfg_{};
    uint64_t zs_ = 0, nr_ = 0;
};

TEST_F(ZonedNvme, TheConfigDescribesTheNamespacesZones) {
    EXPECT_FALSE(g_.features & blk::kFDiscard) << "a host-managed device takes no discard";
    EXPECT_EQ(cfg_.model, blk::kZHostManaged);
    EXPECT_EQ(cfg_.zone_sectors, 2048u);  // 1 MiB
    EXPECT_EQ(cfg_.max_open_zones, 4u);
    EXPECT_EQ(cfg_.max_active_zones, 6u);
    EXPECT_EQ(cfg_.write_granularity, 4096u);
    EXPECT_GE(cfg_.max_append_sectors, 8u);
    EXPECT_EQ(cfg_.max_append_sectors % 8, 0u) << "whole 4 KiB LBAs";
    EXPECT_EQ(cfg_.capacity % zs_, 0u);
    EXPECT_GE(nr_, 8u);
}

TEST_F(ZonedNvme, ReportsEveryZoneAndPartialReports) {
    auto all = report(0, static_cast<uint32_t>(nr_) + 3);
    ASSERT_EQ(all.size(), nr_);
    for (uint64_t i = 0; i < nr_; ++i) {
        EXPECT_EQ(all[i].z_start, i * zs_);
        EXPECT_EQ(all[i].z_wp, i * zs_);
        EXPECT_EQ(all[i].z_cap, 1536u) << "768 KiB writable of each 1 MiB zone, in sectors";
        EXPECT_EQ(all[i].z_type, 2) << "sequential write required";
        EXPECT_EQ(all[i].z_state, 1) << "empty";
    }
    // From the zone holding a sector inside zone 3, room for two: zones 3 and 4.
    auto two = report(3 * zs_ + 17, 2);
    ASSERT_EQ(two.size(), 2u);
    EXPECT_EQ(two[0].z_start, 3 * zs_);
    EXPECT_EQ(two[1].z_start, 4 * zs_);
    // The last zone alone.
    auto last = report((nr_ - 1) * zs_, 4);
    ASSERT_EQ(last.size(), 1u);
    EXPECT_EQ(last[0].z_start, (nr_ - 1) * zs_);
}

TEST_F(ZonedNvme, WritesGoAtTheWritePointerAndAppendsSayWhere) {
    std::vector<uint8_t> a(8192), b(16384), c(4096);
    for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<uint8_t>(i * 3 + 1);
    for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<uint8_t>(i * 5 + 2);
    for (size_t i = 0; i < c.size(); ++i) c[i] = static_cast<uint8_t>(i * 7 + 3);
    ASSERT_EQ(status(vt::make_blk_write(*g_.mem, 0, a)), blk::kSOk);
    auto z = zone(0);
    EXPECT_EQ(z.z_wp, 16u);
    EXPECT_EQ(z.z_state, 2) << "implicitly open";
    EXPECT_EQ(status(vt::make_blk_write(*g_.mem, 0, a)), blk::kSZoneUnalignedWp) << "a write behind the write pointer";
    EXPECT_EQ(status(vt::make_blk_write(*g_.mem, 64, c)), blk::kSZoneUnalignedWp) << "a write past the write pointer";

    auto ap = vt::make_blk_zone_append(*g_.mem, 0, b);
    ASSERT_TRUE(ap.ok());
    EXPECT_EQ(run(g_, 0, ap.value()), 9u) << "the append sector and the status";
    EXPECT_EQ(ap.value().status(), blk::kSOk);
    EXPECT_EQ(ap.value().append_sector(), 16u) << "the append went to the write pointer";
    auto ap2 = vt::make_blk_zone_append(*g_.mem, 0, c, {.data_segments = 3});
    ASSERT_TRUE(ap2.ok());
    run(g_, 0, ap2.value());
    EXPECT_EQ(ap2.value().status(), blk::kSOk);
    EXPECT_EQ(ap2.value().append_sector(), 48u);
    EXPECT_EQ(zone(0).z_wp, 56u);

    // Appends to another zone, then everything reads back where the device said it went.
    auto ap3 = vt::make_blk_zone_append(*g_.mem, 5 * zs_, c);
    ASSERT_TRUE(ap3.ok());
    run(g_, 0, ap3.value());
    EXPECT_EQ(ap3.value().append_sector(), 5 * zs_);
    auto rd = vt::make_blk_read(*g_.mem, 0, 28672);
    ASSERT_EQ(status(rd), blk::kSOk);
    auto got = rd.value().data();
    EXPECT_TRUE(std::equal(a.begin(), a.end(), got.begin()));
    EXPECT_TRUE(std::equal(b.begin(), b.end(), got.begin() + 8192));
    EXPECT_TRUE(std::equal(c.begin(), c.end(), got.begin() + 24576));
    auto rd5 = vt::make_blk_read(*g_.mem, 5 * zs_, 4096);
    ASSERT_EQ(status(rd5), blk::kSOk);
    EXPECT_TRUE(std::equal(c.begin(), c.end(), rd5.value().data().begin()));

    // Appends the device refuses before the drive sees them.
    EXPECT_EQ(status(vt::make_blk_zone_append(*g_.mem, 8, c)), blk::kSZoneInvalidCmd) << "not a zone's start";
    std::vector<uint8_t> huge((cfg_.max_append_sectors + 8) * 512);
    EXPECT_EQ(status(vt::make_blk_zone_append(*g_.mem, 0, huge)), blk::kSZoneInvalidCmd) << "past max_append_sectors";
    EXPECT_EQ(zone(0).z_wp, 56u) << "refused appends wrote nothing";
}

TEST_F(ZonedNvme, FinishResetAndAFullZone) {
    std::vector<uint8_t> d(4096, 0x5a);
    ASSERT_EQ(status(vt::make_blk_write(*g_.mem, 2 * zs_, d)), blk::kSOk);
    ASSERT_EQ(mgmt(blk::kTZoneFinish, 2), blk::kSOk);
    auto z = zone(2);
    EXPECT_EQ(z.z_state, 14) << "full";
    EXPECT_EQ(status(vt::make_blk_write(*g_.mem, 2 * zs_ + 8, d)), blk::kSZoneInvalidCmd) << "a write to a full zone";
    EXPECT_EQ(status(vt::make_blk_zone_append(*g_.mem, 2 * zs_, d)), blk::kSZoneInvalidCmd) << "an append to a full zone";
    ASSERT_EQ(mgmt(blk::kTZoneReset, 2), blk::kSOk);
    z = zone(2);
    EXPECT_EQ(z.z_state, 1) << "empty again";
    EXPECT_EQ(z.z_wp, 2 * zs_);
    // Filling a zone to its capacity makes it full too.
    std::vector<uint8_t> cap(z.z_cap * 512, 0x11);
    ASSERT_EQ(status(vt::make_blk_write(*g_.mem, 2 * zs_, cap)), blk::kSOk);
    EXPECT_EQ(zone(2).z_state, 14);
    EXPECT_EQ(mgmt(blk::kTZoneResetAll, 0), blk::kSOk);
    for (const auto& e : report(0, static_cast<uint32_t>(nr_))) EXPECT_EQ(e.z_state, 1);
    EXPECT_EQ(mgmt(blk::kTZoneOpen, 0), blk::kSOk);
    EXPECT_EQ(zone(0).z_state, 3) << "explicitly open";
    EXPECT_EQ(mgmt(blk::kTZoneClose, 0), blk::kSOk);
    const uint8_t st = zone(0).z_state;
    EXPECT_TRUE(st == 1 || st == 4) << "closed (or empty again: nothing was written), not " << int{st};
}

TEST_F(ZonedNvme, OpenAndActiveLimitsAreZoneStatuses) {
    // 4 open at most: the fifth explicit open is refused (nothing implicitly open to close).
    for (uint64_t i = 0; i < 4; ++i) ASSERT_EQ(mgmt(blk::kTZoneOpen, i), blk::kSOk) << i;
    EXPECT_EQ(mgmt(blk::kTZoneOpen, 4), blk::kSZoneOpenResource);
    // A closed zone that was written stays active: 6 active at most.
    std::vector<uint8_t> d(4096, 1);
    for (uint64_t i = 0; i < 2; ++i) {
        ASSERT_EQ(status(vt::make_blk_write(*g_.mem, i * zs_, d)), blk::kSOk);
        ASSERT_EQ(mgmt(blk::kTZoneClose, i), blk::kSOk);
        EXPECT_EQ(zone(i).z_state, 4) << "closed";
        ASSERT_EQ(mgmt(blk::kTZoneOpen, 4 + i), blk::kSOk) << "open " << 4 + i << " with " << i + 1 << " closed";
    }
    // 2 closed + 4 open = 6 active; closing one more leaves 6 active, and opening another would be 7.
    ASSERT_EQ(status(vt::make_blk_write(*g_.mem, 2 * zs_, d)), blk::kSOk);
    ASSERT_EQ(mgmt(blk::kTZoneClose, 2), blk::kSOk);
    EXPECT_EQ(mgmt(blk::kTZoneOpen, 6), blk::kSZoneActiveResource);
    ASSERT_EQ(mgmt(blk::kTZoneResetAll, 0), blk::kSOk);
    EXPECT_EQ(mgmt(blk::kTZoneOpen, 6), blk::kSOk) << "after a reset everything is free again";
}

TEST_F(ZonedNvme, MalformedZoneRequestsFailAndTheDeviceServesOn) {
    EXPECT_EQ(mgmt(blk::kTZoneReset, nr_), blk::kSZoneInvalidCmd) << "past the last zone";
    EXPECT_EQ(status(vt::make_blk_zone_mgmt(*g_.mem, blk::kTZoneOpen, 3)), blk::kSZoneInvalidCmd) << "not a zone start";
    EXPECT_EQ(status(vt::make_blk_zone_report(*g_.mem, 0, 100)), blk::kSIoErr) << "no room for one zone";
    std::vector<uint8_t> d(4096, 2);
    ASSERT_EQ(status(vt::make_blk_write(*g_.mem, 0, d)), blk::kSOk);
    EXPECT_EQ(zone(0).z_wp, 8u);
}

}  // namespace
