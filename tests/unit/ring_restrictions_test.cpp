// A reactor's io_uring is created disabled and enabled only after IORING_REGISTER_RESTRICTIONS:
// the opcodes of kRingOps, no SQE flag, no register operation. Whatever else is put on it fails
// with EACCES; with restrict_ring off (--sandbox=off) the same SQEs run.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <chrono>
#include <future>

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
