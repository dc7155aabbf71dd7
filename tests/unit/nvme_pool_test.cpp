// A pool whose members are NVMe namespaces (their generic devices, /dev/ngXnY): the metadata
// through synchronous NVMe commands (pool/nvme_disk), volumes' data through NVMe commands on the
// reactor's command ring (backends/pool_backend). Runs when VHOSTD_TEST_NVME_POOL names two or
// more generic devices, colon-separated; this host has no NVMe, so tests/e2e/test_nvme.sh runs
// these inside a TCG guest with a QEMU-emulated controller (512 B and 4 KiB LBA namespaces, so
// the pool's block size is 4 KiB), where a skip fails the test.
#include <gtest/gtest.h>
#include <sys/uio.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <random>
#include <sstream>
#include <thread>
#include <vector>

#include "backends/pool_backend.hpp"
#include "pool/nvme_disk.hpp"
#include "pool/pool.hpp"
#include "reactor/reactor.hpp"
#include "testing/channel_runner.hpp"

using namespace vhostd;
using backends::BlockOp;
using backends::BlockRequest;

namespace {

std::vector<std::string> pool_drives() {
    std::vector<std::string> out;
    const char* env = std::getenv("VHOSTD_TEST_NVME_POOL");
    if (env == nullptr) return out;
    std::stringstream ss(env);
    for (std::string p; std::getline(ss, p, ':');)
        if (!p.empty()) out.push_back(p);
    return out;
}

std::vector<uint8_t> pattern(size_t n, uint32_t seed) { return vhostd::testing::random_bytes(n, seed); }

TEST(NvmeDisk, ReadsWritesZeroesAndFlushesAnyByteRange) {
    auto drives = pool_drives();
    if (drives.empty()) GTEST_SKIP() << "VHOSTD_TEST_NVME_POOL is not set (tests/e2e/test_nvme.sh sets it in a guest)";
    for (const auto& path : drives) {
        SCOPED_TRACE(path);
        auto d = pool::NvmeDisk::open(path);
        ASSERT_TRUE(d.ok()) << d.error().describe();
        pool::Disk& disk = *d.value();
        const nvme::NvmeNamespace* ns = disk.nvme();
        ASSERT_NE(ns, nullptr);
        EXPECT_EQ(disk.size(), ns->lbas * ns->lba_size);
        // Exclusive, like a file member.
        auto again = pool::NvmeDisk::open(path);
        ASSERT_FALSE(again.ok());
        EXPECT_EQ(again.error().code, Errc::kBusy);
        // Whole LBAs, then parts of LBAs at both ends, larger than one command carries.
        const uint64_t lba = ns->lba_size;
        auto whole = pattern(8 * lba, 1);
        ASSERT_TRUE(disk.write(lba, whole.data(), whole.size()).ok());
        const size_t n = ns->max_bytes + 3 * lba + 77;
        auto odd = pattern(n, 2);
        const uint64_t at = 20 * lba + 100;
        ASSERT_TRUE(disk.write(at, odd.data(), odd.size()).ok());
        std::vector<uint8_t> back(n);
        ASSERT_TRUE(disk.read(at, back.data(), back.size()).ok());
        EXPECT_TRUE(back == odd);
        // The bytes next to the partial LBAs were kept (read-modify-write).
        std::vector<uint8_t> w(8 * lba);
        ASSERT_TRUE(disk.read(lba, w.data(), w.size()).ok());
        EXPECT_TRUE(w == whole);
        // Zeroes: Write Zeroes for whole LBAs, written zeroes for a partial range.
        ASSERT_TRUE(disk.zero(lba, 4 * lba).ok());
        ASSERT_TRUE(disk.zero(at + 10, 50).ok());
        ASSERT_TRUE(disk.sync().ok());
        ASSERT_TRUE(disk.read(lba, w.data(), w.size()).ok());
        EXPECT_TRUE(std::all_of(w.begin(), w.begin() + 4 * lba, [](uint8_t b) { return b == 0; }));
        EXPECT_EQ(std::memcmp(w.data() + 4 * lba, whole.data() + 4 * lba, 4 * lba), 0);
        std::vector<uint8_t> mid(70);
        ASSERT_TRUE(disk.read(at, mid.data(), mid.size()).ok());
        EXPECT_EQ(std::memcmp(mid.data(), odd.data(), 10), 0);
        EXPECT_TRUE(std::all_of(mid.begin() + 10, mid.begin() + 60, [](uint8_t b) { return b == 0; }));
        EXPECT_EQ(std::memcmp(mid.data() + 60, odd.data() + 60, 10), 0);
        // Past the end: an error, not a command.
        EXPECT_FALSE(disk.read(disk.size() - 10, back.data(), 20).ok());
    }
    if (const char* z = std::getenv("VHOSTD_TEST_NVME_ZONED")) {
        auto zd = pool::NvmeDisk::open(z);
        ASSERT_FALSE(zd.ok()) << "a zoned namespace became a pool member";
        EXPECT_NE(zd.error().context.find("zoned"), std::string::npos) << zd.error().describe();
    }
}

// Polls the channel as a device's queue would (deferred completions, allocation answers).
struct ChannelPoller final : Poller {
    backends::BlockChannel* ch = nullptr;
    bool poll() override { return ch != nullptr && ch->poll(); }
    bool prepare_sleep() override { return ch == nullptr || !ch->must_poll(); }
};

class NvmePool : public ::testing::Test {
protected:
    void SetUp() override {
        drives_ = pool_drives();
        if (drives_.size() < 2) GTEST_SKIP() << "VHOSTD_TEST_NVME_POOL needs two generic devices (tests/e2e/test_nvme.sh)";
        r_ = std::make_unique<Reactor>(0, ReactorConfig{});
        ASSERT_TRUE(r_->start().ok());
        r_->run_sync([&] { r_->add_poller(&poller_); });
    }
    void TearDown() override {
        if (r_) {
            r_->run_sync([&] {
                poller_.ch = nullptr;
                ch_.reset();
                r_->remove_poller(&poller_);
            });
            vol_.reset();
            if (svc_) svc_->close();
            svc_.reset();
            r_->stop();
        }
    }

    void serve(std::unique_ptr<pool::Pool> p) {
        auto s = backends::PoolService::start(std::move(p));
        ASSERT_TRUE(s.ok()) << s.error().describe();
        svc_ = std::move(s).value();
    }
    void attach(const std::string& volume) {
        r_->run_sync([&] {
            poller_.ch = nullptr;
            ch_.reset();
        });
        vol_.reset();
        auto v = svc_->attach(volume, false);
        ASSERT_TRUE(v.ok()) << v.error().describe();
        vol_ = std::move(v).value();
        r_->run_sync([&] {
            auto c = vol_->open_channel(*r_, 32);
            ASSERT_TRUE(c.ok()) << c.error().describe();
            ch_ = std::move(c).value();
            poller_.ch = ch_.get();
        });
    }
    void close_pool() {
        r_->run_sync([&] {
            poller_.ch = nullptr;
            ch_.reset();
        });
        vol_.reset();
        svc_->close();
        svc_.reset();
    }

    int32_t run(const BlockRequest& q) { return vhostd::testing::run_request(*r_, *ch_, q, std::chrono::seconds(60)); }
    // `buf` in iovecs of the given sizes, one request; its result.
    int32_t io(BlockOp op, uint64_t offset, std::vector<uint8_t>& buf, const std::vector<size_t>& pieces, bool fua = false) {
        auto iov = vhostd::testing::iovecs_of(buf, pieces);
        return run(BlockRequest{op, iov.data(), static_cast<unsigned>(iov.size()), offset, 0, fua});
    }
    std::vector<uint8_t> read(uint64_t offset, size_t n) {
        std::vector<uint8_t> b(n, 0xee);
        EXPECT_EQ(io(BlockOp::kRead, offset, b, {n / 3, n - n / 3}), static_cast<int32_t>(n));
        return b;
    }

    std::vector<std::string> drives_;
    std::unique_ptr<Reactor> r_;
    std::shared_ptr<backends::PoolService> svc_;
    std::shared_ptr<backends::VolumeBackend> vol_;
    std::unique_ptr<backends::BlockChannel> ch_;
    ChannelPoller poller_;
};

TEST_F(NvmePool, VolumesSnapshotsClonesAndImportOnNamespaces) {
    constexpr uint64_t kChunk = 256 * 1024;
    {
        auto disks = pool::Pool::open_disks(drives_);
        ASSERT_TRUE(disks.ok()) << disks.error().describe();
        pool::CreateOptions o;
        o.name = "np";
        o.chunk_size = kChunk;
        o.force = true;
        auto p = pool::Pool::create(o, std::move(disks).value());
        ASSERT_TRUE(p.ok()) << p.error().describe();
        serve(std::move(p).value());
    }
    ASSERT_TRUE(svc_->pool().create_volume("v", 16 << 20, false, std::nullopt).ok());
    attach("v");
    uint32_t lba = 512;
    for (const auto& m : svc_->members()) {
        ASSERT_NE(m.ns, nullptr) << "a member on a generic device is not driven as NVMe";
        lba = std::max(lba, m.ns->lba_size);
    }
    EXPECT_EQ(vol_->info().block_size, lba) << "the volume's block is its largest member LBA";

    // Never written: zeroes, no I/O.
    auto z = read(0, 64 * 1024);
    EXPECT_TRUE(std::all_of(z.begin(), z.end(), [](uint8_t b) { return b == 0; }));

    // 3 MiB from just before a chunk boundary: stripes over both members, first writes (chunk
    // allocation), pieces larger than one command, odd iovecs.
    const uint64_t off = kChunk - 2 * lba;
    const size_t n = 3 * 1024 * 1024;
    auto a = pattern(n, 11);
    EXPECT_EQ(io(BlockOp::kWrite, off, a, {lba, 3 * lba, 700 * 1024 - 4 * lba, n - 700 * 1024}), static_cast<int32_t>(n));
    EXPECT_TRUE(read(off, n) == a) << "read back differs";
    // FUA and flush.
    auto f = pattern(8 * lba, 12);
    EXPECT_EQ(io(BlockOp::kWrite, 8 << 20, f, {8 * lba}, true), static_cast<int32_t>(8 * lba));
    EXPECT_EQ(run(BlockRequest{BlockOp::kFlush}), 0);
    EXPECT_TRUE(read(8 << 20, 8 * lba) == f);
    // Not in whole LBAs of the 4 KiB member: refused (the 512 B member takes it), and the
    // volume serves on. Chunks from 10 MiB on, away from the data above.
    if (lba > 512) {
        std::vector<uint8_t> s(lba, 0x5a);
        int refused = 0;
        for (uint64_t i = 0; i < 4; ++i) {
            int32_t r = io(BlockOp::kWrite, (10 << 20) + i * kChunk + 512, s, {lba});
            EXPECT_TRUE(r == static_cast<int32_t>(lba) || r == -EINVAL) << r;
            refused += r == -EINVAL;
        }
        EXPECT_GE(refused, 1) << "no piece landed on the 4 KiB-LBA member";
        EXPECT_TRUE(read(off, n) == a);
    }

    // Snapshot, overwrite a part (copy-on-write of the chunks it touches), clone the snapshot.
    ASSERT_TRUE(svc_->snapshot("v", "s").ok());
    auto b = pattern(kChunk, 13);
    const uint64_t boff = off + kChunk + 5 * lba;
    EXPECT_EQ(io(BlockOp::kWrite, boff, b, {kChunk}), static_cast<int32_t>(kChunk));
    auto now = a;
    std::memcpy(now.data() + (boff - off), b.data(), b.size());
    EXPECT_TRUE(read(off, n) == now) << "the volume after its overwrite";
    ASSERT_TRUE(svc_->pool().clone("v@s", "c").ok());

    // Write zeroes and discard on the volume (its own chunks now).
    EXPECT_EQ(run(BlockRequest{BlockOp::kWriteZeroes, nullptr, 0, off + 2 * lba, 64 * lba, false}), 0);
    std::fill(now.begin() + 2 * lba, now.begin() + 66 * lba, 0);
    EXPECT_TRUE(read(off, n) == now) << "after write zeroes";
    EXPECT_EQ(run(BlockRequest{BlockOp::kDiscard, nullptr, 0, 12 << 20, kChunk, false}), 0);
    EXPECT_EQ(run(BlockRequest{BlockOp::kFlush}), 0);

    auto rep = svc_->pool().check();
    EXPECT_TRUE(rep.problems.empty()) << rep.problems.front();
    close_pool();

    // Import with the drives in the other order: the volume, its snapshot and the clone.
    {
        std::vector<std::string> rev(drives_.rbegin(), drives_.rend());
        auto disks = pool::Pool::open_disks(rev);
        ASSERT_TRUE(disks.ok()) << disks.error().describe();
        auto p = pool::Pool::import(std::move(disks).value());
        ASSERT_TRUE(p.ok()) << p.error().describe();
        serve(std::move(p).value());
    }
    rep = svc_->pool().check();
    EXPECT_TRUE(rep.problems.empty()) << rep.problems.front();
    EXPECT_EQ(rep.volumes, 3u);
    attach("v");
    EXPECT_TRUE(read(off, n) == now) << "the volume after the import";
    attach("c");
    EXPECT_TRUE(read(off, n) == a) << "the clone sees the snapshot's data";
    // The clone's own first write (copy-on-write from the snapshot), read back beside the rest.
    auto c = pattern(3 * lba, 14);
    EXPECT_EQ(io(BlockOp::kWrite, off + 4 * lba, c, {lba, 2 * lba}), static_cast<int32_t>(3 * lba));
    auto cnow = a;
    std::memcpy(cnow.data() + 4 * lba, c.data(), c.size());
    EXPECT_TRUE(read(off, n) == cnow);
    rep = svc_->pool().check();
    EXPECT_TRUE(rep.problems.empty()) << rep.problems.front();
}

}  // namespace
