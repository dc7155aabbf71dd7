// FileBackend on a real io_uring reactor: submit-batch decides when SQEs reach the kernel, and
// the data read back is the file's.
#include <gtest/gtest.h>
#include <liburing.h>
#include <sys/uio.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <thread>

#include "backends/file_backend.hpp"
#include "reactor/reactor.hpp"

using namespace vhostd;

namespace {

constexpr uint32_t kBlock = 4096;
constexpr uint32_t kBlocks = 8;

struct TempFile {
    std::string path;
    TempFile() {
        char tmpl[] = "/tmp/vhostd-filebackend-XXXXXX";
        int fd = mkstemp(tmpl);
        EXPECT_GE(fd, 0);
        path = tmpl;
        for (uint32_t b = 0; b < kBlocks; ++b) {
            std::array<uint8_t, kBlock> buf;
            buf.fill(static_cast<uint8_t>(0x10 + b));
            EXPECT_EQ(pwrite(fd, buf.data(), buf.size(), uint64_t{b} * kBlock), static_cast<ssize_t>(kBlock));
        }
        close(fd);
    }
    ~TempFile() { unlink(path.c_str()); }
};

struct Read final : Completion {
    std::array<uint8_t, kBlock> buf{};
    iovec iov{buf.data(), buf.size()};
    std::atomic<int32_t> res{INT32_MIN};
    void complete(int32_t r) override { res.store(r); }
};

// Submits reads of blocks 0..n-1 in one reactor message; returns how many SQEs were still
// waiting for the kernel after each submit() call, then waits for all completions.
std::vector<unsigned> submit_reads(uint32_t submit_batch, uint32_t n, std::array<Read, kBlocks>& reads) {
    TempFile f;
    backends::FileOptions o;
    o.path = f.path;
    o.submit_batch = submit_batch;
    auto fb = backends::FileBackend::open(o);
    EXPECT_TRUE(fb.ok()) << fb.error().describe();
    Reactor r(0, ReactorConfig{.mode = PollMode::kNever});
    EXPECT_TRUE(r.start().ok());
    std::unique_ptr<backends::BlockChannel> ch;
    std::vector<unsigned> queued;
    r.run_sync([&] {
        auto c = fb.value()->open_channel(r, 64);
        ASSERT_TRUE(c.ok());
        ch = std::move(c).value();
        // Whatever the reactor itself had queued goes first, so the counts below are ours alone.
        io_uring_submit(r.ring());
        for (uint32_t i = 0; i < n; ++i) {
            backends::BlockRequest q{backends::BlockOp::kRead, &reads[i].iov, 1, uint64_t{i} * kBlock, kBlock};
            EXPECT_TRUE(ch->submit(q, &reads[i]).ok());
            queued.push_back(io_uring_sq_ready(r.ring()));
        }
    });
    // The reactor's end-of-pass submit hands over any rest; every read completes.
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    for (uint32_t i = 0; i < n; ++i) {
        while (reads[i].res.load() == INT32_MIN && std::chrono::steady_clock::now() < deadline)
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    r.run_sync([&] { ch.reset(); });
    r.stop();
    return queued;
}

}  // namespace

TEST(FileBackend, SubmitBatchOneHandsEachRequestToTheKernelAtOnce) {
    std::array<Read, kBlocks> reads;
    auto queued = submit_reads(1, 3, reads);
    EXPECT_EQ(queued, (std::vector<unsigned>{0, 0, 0}));
    for (uint32_t i = 0; i < 3; ++i) {
        ASSERT_EQ(reads[i].res.load(), static_cast<int32_t>(kBlock)) << "read " << i;
        EXPECT_EQ(reads[i].buf[0], 0x10 + i);
        EXPECT_EQ(reads[i].buf[kBlock - 1], 0x10 + i);
    }
}

TEST(FileBackend, SubmitBatchFourQueuesUntilFourThenTheReactorSubmitsTheRest) {
    std::array<Read, kBlocks> reads;
    auto queued = submit_reads(4, 6, reads);
    EXPECT_EQ(queued, (std::vector<unsigned>{1, 2, 3, 0, 1, 2}));
    for (uint32_t i = 0; i < 6; ++i) {
        ASSERT_EQ(reads[i].res.load(), static_cast<int32_t>(kBlock)) << "read " << i;
        EXPECT_EQ(reads[i].buf[100], 0x10 + i);
    }
}

TEST(FileBackend, SubmitBatchOutOfRangeIsRefused) {
    TempFile f;
    backends::FileOptions o;
    o.path = f.path;
    o.submit_batch = 0;
    EXPECT_FALSE(backends::FileBackend::open(o).ok());
    o.submit_batch = backends::FileOptions::kMaxSubmitBatch + 1;
    EXPECT_FALSE(backends::FileBackend::open(o).ok());
    o.submit_batch = backends::FileOptions::kMaxSubmitBatch;
    EXPECT_TRUE(backends::FileBackend::open(o).ok());
}
