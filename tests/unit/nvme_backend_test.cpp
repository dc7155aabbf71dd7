// backend=nvme: the namespace description read from sysfs (anywhere), and the passthrough data
// path on a real NVMe namespace when VHOSTD_TEST_NVME names its generic device (/dev/ngXnY).
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

using namespace vhostd;
using backends::BlockOp;
using backends::BlockRequest;

namespace {

namespace fs = std::filesystem;

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
        {"queue/zoned", "host-managed", "zoned"},
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

struct Op final : Completion {
    std::atomic<int32_t> res{INT32_MIN};
    void complete(int32_t r) override { res.store(r); }
};

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
    int32_t run(const BlockRequest& q) {
        Op op;
        r_->run_sync([&] {
            Status st = ch_->submit(q, &op);
            if (!st.ok()) op.res = -1000 - static_cast<int32_t>(st.error().code);
        });
        auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
        while (op.res.load() == INT32_MIN && std::chrono::steady_clock::now() < deadline)
            std::this_thread::sleep_for(std::chrono::microseconds(200));
        EXPECT_NE(op.res.load(), INT32_MIN) << "no completion in 30 s";
        return op.res.load();
    }

    // A read or write of `buf` in pieces of the given sizes, continued after short transfers
    // (as the device does); the number of commands it took, or -1.
    int io(BlockOp op, uint64_t offset, std::vector<uint8_t>& buf, const std::vector<size_t>& pieces, bool fua = false) {
        std::vector<iovec> iov;
        size_t at = 0;
        for (size_t p : pieces) {
            iov.push_back({buf.data() + at, p});
            at += p;
        }
        EXPECT_EQ(at, buf.size());
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

    std::vector<uint8_t> pattern(size_t n, uint32_t seed) {
        std::vector<uint8_t> v(n);
        std::mt19937 g(seed);
        for (auto& b : v) b = static_cast<uint8_t>(g());
        return v;
    }

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

}  // namespace
