// A reactor's io_uring is created disabled and enabled only after IORING_REGISTER_RESTRICTIONS:
// the opcodes of kRingOps, no SQE flag, no register operation. Whatever else is put on it fails
// with EACCES; with restrict_ring off (--sandbox=off) the same SQEs run.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <future>
#include <thread>

#include "core/unique_fd.hpp"
#include "reactor/reactor.hpp"

namespace vhostd {
namespace {

class OneShot final : public Completion {
public:
    void complete(int32_t res) override { done.set_value(res); }
    std::promise<int32_t> done;
};

class RingRestrictions : public ::testing::TestWithParam<bool> {
protected:
    void SetUp() override {
        ReactorConfig cfg;
        cfg.restrict_ring = GetParam();
        reactor_ = std::make_unique<Reactor>(0, cfg);
        ASSERT_TRUE(reactor_->start().ok());
    }
    void TearDown() override { reactor_->stop(); }
    // Puts one SQE on the reactor's ring (prep fills it) and returns its result.
    template <class Prep>
    int32_t run(Prep prep) {
        OneShot c;
        auto fut = c.done.get_future();
        reactor_->post([&] {
            io_uring_sqe* sqe = reactor_->get_sqe();
            ASSERT_NE(sqe, nullptr);
            prep(sqe);
            io_uring_sqe_set_data(sqe, static_cast<Completion*>(&c));
        });
        EXPECT_EQ(fut.wait_for(std::chrono::seconds(10)), std::future_status::ready);
        return fut.get();
    }
    std::unique_ptr<Reactor> reactor_;
};

TEST_P(RingRestrictions, AnOpcodeOutsideTheListIsRefused) {
    int32_t res = run([](io_uring_sqe* sqe) { io_uring_prep_openat(sqe, AT_FDCWD, "/dev/null", O_RDONLY | O_CLOEXEC, 0); });
    if (GetParam()) {
        EXPECT_EQ(res, -EACCES);
    } else {
        EXPECT_GE(res, 0);
        if (res >= 0) ::close(res);
    }
}

TEST_P(RingRestrictions, AnOpcodeOnTheListRunsButNotWithAFlag) {
    UniqueFd efd(eventfd(1, EFD_CLOEXEC | EFD_NONBLOCK));
    ASSERT_TRUE(efd.valid());
    uint64_t buf = 0;
    EXPECT_EQ(run([&](io_uring_sqe* sqe) { io_uring_prep_read(sqe, efd.get(), &buf, sizeof(buf), 0); }), 8);
    EXPECT_EQ(buf, 1u);
    ASSERT_EQ(eventfd_write(efd.get(), 2), 0);
    int32_t res = run([&](io_uring_sqe* sqe) {
        io_uring_prep_read(sqe, efd.get(), &buf, sizeof(buf), 0);
        io_uring_sqe_set_flags(sqe, IOSQE_ASYNC);
    });
    EXPECT_EQ(res, GetParam() ? -EACCES : 8);
}

class CmdShot final : public CmdCompletion {
public:
    void complete_cmd(int32_t res, uint64_t) override { done.set_value(res); }
    std::promise<int32_t> done;
};

// The command ring (128-byte SQEs) takes IORING_OP_URING_CMD and nothing else. Its completions
// reach a reactor that went to sleep (through the ring's eventfd) as well.
TEST_P(RingRestrictions, TheCommandRingTakesPassthroughCommandsOnly) {
    ASSERT_TRUE(reactor_->cmd_ring_status().ok()) << reactor_->cmd_ring_status().error().describe();
    UniqueFd efd(eventfd(1, EFD_CLOEXEC | EFD_NONBLOCK));
    ASSERT_TRUE(efd.valid());
    uint64_t buf = 0;
    auto run_cmd = [&](auto prep) {
        CmdShot c;
        auto fut = c.done.get_future();
        std::this_thread::sleep_for(std::chrono::milliseconds(20));  // the reactor is asleep by now
        reactor_->post([&] {
            io_uring_sqe* sqe = reactor_->cmd_sqe();
            ASSERT_NE(sqe, nullptr);
            std::memset(sqe, 0, 2 * sizeof(*sqe));
            prep(sqe);
            io_uring_sqe_set_data(sqe, static_cast<CmdCompletion*>(&c));
        });
        EXPECT_EQ(fut.wait_for(std::chrono::seconds(10)), std::future_status::ready);
        return fut.get();
    };
    EXPECT_EQ(run_cmd([&](io_uring_sqe* sqe) { io_uring_prep_read(sqe, efd.get(), &buf, sizeof(buf), 0); }),
              GetParam() ? -EACCES : 8);
    // A passthrough command reaches the file (an eventfd has none to take).
    int32_t res = run_cmd([&](io_uring_sqe* sqe) {
        sqe->opcode = IORING_OP_URING_CMD;
        sqe->fd = efd.get();
    });
    EXPECT_EQ(res, -EOPNOTSUPP);
    if (!GetParam()) {
        // Unrestricted, a read that waits: its completion comes while the reactor sleeps, and
        // only the command ring's eventfd can end that sleep.
        UniqueFd empty(eventfd(0, EFD_CLOEXEC));
        CmdShot c;
        auto fut = c.done.get_future();
        reactor_->post([&] {
            io_uring_sqe* sqe = reactor_->cmd_sqe();
            ASSERT_NE(sqe, nullptr);
            std::memset(sqe, 0, 2 * sizeof(*sqe));
            io_uring_prep_read(sqe, empty.get(), &buf, sizeof(buf), 0);
            io_uring_sqe_set_data(sqe, static_cast<CmdCompletion*>(&c));
        });
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        const uint64_t sleeps = reactor_->sleeps.get();
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        EXPECT_EQ(reactor_->sleeps.get(), sleeps) << "the reactor is not asleep";
        ASSERT_EQ(eventfd_write(empty.get(), 5), 0);
        ASSERT_EQ(fut.wait_for(std::chrono::seconds(10)), std::future_status::ready) << "the sleeping reactor missed it";
        EXPECT_EQ(fut.get(), 8);
        EXPECT_EQ(buf, 5u);
    }
}

// The command ring's buffer table (fixed=on): runs of slots handed out and back, filled with
// shared memory as guest memory is (a memfd mapping), restricted or not (the one register
// operation the restricted ring takes). Unrestricted, a fixed read on the command ring lands in
// the slot it names.
TEST_P(RingRestrictions, TheCommandRingsBufferTable) {
    ASSERT_TRUE(reactor_->cmd_ring_status().ok()) << reactor_->cmd_ring_status().error().describe();
    constexpr size_t kLen = 2 << 20;
    UniqueFd mfd(memfd_create("guest", MFD_CLOEXEC));
    ASSERT_TRUE(mfd.valid());
    ASSERT_EQ(ftruncate(mfd.get(), 2 * kLen), 0);
    void* m = mmap(nullptr, 2 * kLen, PROT_READ | PROT_WRITE, MAP_SHARED, mfd.get(), 0);
    ASSERT_NE(m, MAP_FAILED);
    auto* mem = static_cast<uint8_t*>(m);
    std::promise<unsigned> first_p;
    reactor_->post([&] {
        auto a = reactor_->cmd_buffers_alloc(3);
        ASSERT_TRUE(a.ok()) << a.error().describe();
        auto b = reactor_->cmd_buffers_alloc(2);
        ASSERT_TRUE(b.ok());
        EXPECT_EQ(b.value(), a.value() + 3);
        reactor_->cmd_buffers_free(a.value(), 3);
        auto c = reactor_->cmd_buffers_alloc(2);  // the freed run again
        ASSERT_TRUE(c.ok());
        EXPECT_EQ(c.value(), a.value());
        auto huge = reactor_->cmd_buffers_alloc(1u << 20);
        ASSERT_FALSE(huge.ok());
        EXPECT_EQ(huge.error().code, Errc::kBusy);
        iovec iov[2] = {{mem, kLen}, {mem + kLen, kLen}};
        Status st = reactor_->cmd_buffers_set(c.value(), iov, 2);
        EXPECT_TRUE(st.ok()) << st.error().describe();
        EXPECT_FALSE(reactor_->cmd_buffers_set(c.value() + 1, iov, 1u << 20).ok()) << "past the table";
        reactor_->cmd_buffers_free(b.value(), 2);
        first_p.set_value(c.value());
    });
    const unsigned first = first_p.get_future().get();
    if (!GetParam()) {
        // A fixed read from a file into the second slot: the bytes land in the second half.
        char tmpl[] = "/tmp/vhostd-fixed.XXXXXX";
        UniqueFd f(mkstemp(tmpl));
        ASSERT_TRUE(f.valid());
        unlink(tmpl);
        const char msg[] = "registered";
        ASSERT_EQ(pwrite(f.get(), msg, sizeof(msg), 0), static_cast<ssize_t>(sizeof(msg)));
        CmdShot c;
        auto fut = c.done.get_future();
        reactor_->post([&] {
            io_uring_sqe* sqe = reactor_->cmd_sqe();
            ASSERT_NE(sqe, nullptr);
            std::memset(sqe, 0, 2 * sizeof(*sqe));
            io_uring_prep_read_fixed(sqe, f.get(), mem + kLen + 100, sizeof(msg), 0, static_cast<int>(first + 1));
            io_uring_sqe_set_data(sqe, static_cast<CmdCompletion*>(&c));
        });
        ASSERT_EQ(fut.wait_for(std::chrono::seconds(10)), std::future_status::ready);
        EXPECT_EQ(fut.get(), static_cast<int32_t>(sizeof(msg)));
        EXPECT_EQ(std::memcmp(mem + kLen + 100, msg, sizeof(msg)), 0);
    }
    std::promise<void> freed;
    reactor_->post([&] {
        reactor_->cmd_buffers_free(first, 2);
        freed.set_value();
    });
    freed.get_future().wait();
    munmap(m, 2 * kLen);
}

TEST_P(RingRestrictions, RegisterOperationsAreRefused) {
    std::promise<int> p;
    static char page[4096];
    reactor_->post([&] {
        iovec iov{page, sizeof(page)};
        int rc = io_uring_register_buffers(reactor_->ring(), &iov, 1);
        if (rc == 0) io_uring_unregister_buffers(reactor_->ring());
        p.set_value(rc);
    });
    EXPECT_EQ(p.get_future().get(), GetParam() ? -EACCES : 0);
}

INSTANTIATE_TEST_SUITE_P(Restricted, RingRestrictions, ::testing::Values(true, false),
                         [](const auto& info) { return info.param ? std::string("On") : std::string("Off"); });

}  // namespace
}  // namespace vhostd
