// Live migration's dirty log: the bitmap itself (shm::DirtyLog), and what a running device
// marks in it through a real vhost-user session (SET_LOG_BASE, LOG_ALL, VHOST_VRING_F_LOG): every
// byte it writes into guest memory, and nothing that QEMU does not need (a page it did not
// write is not sent again). A write that is not logged is silent corruption on the destination,
// so each write path has its own check here.
#include <fcntl.h>
#include <poll.h>
#include <sys/mman.h>
#include <unistd.h>

#include <set>
#include <thread>

#include "shm/dirty_log.hpp"
#include "testing/blk_fixture.hpp"
#include "virtio/virtio_types.hpp"

namespace vhostd::testing {
namespace {

using shm::DirtyLog;
constexpr uint64_t kPage = DirtyLog::kPageBytes;

// The frontend's side of a log: a memfd (sealed like QEMU's unless asked not to) it reads back.
class TestLog {
public:
    explicit TestLog(uint64_t bytes, bool seal = true, uint64_t fd_bytes = 0) : size_(bytes) {
        fd_ = UniqueFd(memfd_create("test-log", MFD_CLOEXEC | MFD_ALLOW_SEALING));
        EXPECT_TRUE(fd_.valid());
        const uint64_t len = fd_bytes != 0 ? fd_bytes : bytes;
        EXPECT_EQ(ftruncate(fd_.get(), static_cast<off_t>(len)), 0);
        if (seal) {
            EXPECT_EQ(fcntl(fd_.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW), 0);
        }
        map_len_ = len;
        void* p = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd_.get(), 0);
        EXPECT_NE(p, MAP_FAILED);
        bits_ = static_cast<uint8_t*>(p);
    }
    ~TestLog() { munmap(bits_, map_len_); }
    TestLog(const TestLog&) = delete;
    TestLog& operator=(const TestLog&) = delete;

    int fd() const { return fd_.get(); }
    uint64_t size() const { return size_; }
    bool marked(uint64_t gpa, uint64_t off = 0) const {
        uint64_t page = gpa / kPage;
        return (bits_[off + page / 8] >> (page % 8)) & 1;
    }
    // Every page of [gpa, gpa+len) marked?
    bool all_marked(uint64_t gpa, uint64_t len) const {
        for (uint64_t p = gpa / kPage; p <= (gpa + len - 1) / kPage; ++p)
            if (!marked(p * kPage)) return false;
        return true;
    }
    std::set<uint64_t> pages() const {
        std::set<uint64_t> out;
        for (uint64_t b = 0; b < size_; ++b)
            for (int i = 0; i < 8; ++i)
                if ((bits_[b] >> i) & 1) out.insert(b * 8 + static_cast<uint64_t>(i));
        return out;
    }
    void clear() { std::memset(bits_, 0, size_); }

private:
    UniqueFd fd_;
    uint8_t* bits_ = nullptr;
    uint64_t size_ = 0;
    size_t map_len_ = 0;
};

// ---- the bitmap ----------------------------------------------------------------------------

TEST(DirtyLog, MapRefusesWhatCouldHurtUs) {
    TestLog ok(4096);
    EXPECT_FALSE(DirtyLog::map(-1, 4096, 0).ok()) << "no fd";
    EXPECT_FALSE(DirtyLog::map(ok.fd(), 0, 0).ok()) << "empty";
    EXPECT_FALSE(DirtyLog::map(ok.fd(), DirtyLog::kMaxBytes + 1, 0).ok()) << "larger than any guest needs";
    EXPECT_FALSE(DirtyLog::map(ok.fd(), 4096, UINT64_MAX - 100).ok()) << "offset + size overflows";
    EXPECT_FALSE(DirtyLog::map(ok.fd(), 4096, 1).ok()) << "past the end of the fd";
    EXPECT_FALSE(DirtyLog::map(ok.fd(), 8192, 0).ok()) << "past the end of the fd";
    TestLog unsealed(4096, false);
    EXPECT_FALSE(DirtyLog::map(unsealed.fd(), 4096, 0).ok()) << "could be truncated under us";
    auto m = DirtyLog::map(ok.fd(), 4096, 0);
    ASSERT_OK(m);
    EXPECT_EQ(m.value()->size(), 4096u);
}

TEST(DirtyLog, AnUnalignedOffsetIsWhereGuestAddressZeroIs) {
    TestLog t(8192);
    auto m = DirtyLog::map(t.fd(), 4000, 100);
    ASSERT_OK(m);
    m.value()->mark(0, 1);
    m.value()->mark(9 * kPage, 1);
    EXPECT_TRUE(t.marked(0, 100));
    EXPECT_TRUE(t.marked(9 * kPage, 100));
    EXPECT_EQ(t.pages(), (std::set<uint64_t>{100 * 8, 101 * 8 + 1}));
}

TEST(DirtyLog, MarksExactlyThePagesARangeTouches) {
    TestLog t(64);
    auto m = DirtyLog::map(t.fd(), 64, 0);
    ASSERT_OK(m);
    const DirtyLog& log = *m.value();
    log.mark(kPage - 1, 2);  // one byte on each side of a page boundary
    EXPECT_EQ(t.pages(), (std::set<uint64_t>{0, 1}));
    t.clear();
    log.mark(5 * kPage + 7, 16 * kPage);  // pages 5..21, across bitmap bytes
    std::set<uint64_t> want;
    for (uint64_t p = 5; p <= 21; ++p) want.insert(p);
    EXPECT_EQ(t.pages(), want);
    t.clear();
    log.mark(3 * kPage, 0);
    EXPECT_TRUE(t.pages().empty()) << "an empty range marks nothing";
    log.mark(8 * kPage, kPage);
    EXPECT_EQ(t.pages(), (std::set<uint64_t>{8})) << "exactly one page";
}

TEST(DirtyLog, PagesPastTheEndAreCountedNotWritten) {
    TestLog t(4096, true, 8192);  // the fd is larger than the log: bytes past the log stay 0
    auto m = DirtyLog::map(t.fd(), 2, 0);  // 16 pages
    ASSERT_OK(m);
    const DirtyLog& log = *m.value();
    log.mark(15 * kPage, 3 * kPage);
    EXPECT_EQ(t.pages(), (std::set<uint64_t>{15}));
    EXPECT_EQ(log.pages_beyond(), 2u);
    log.mark(UINT64_MAX - 10, 100);  // runs off the top of the address space
    log.mark(1ull << 40, kPage);
    EXPECT_EQ(t.pages(), (std::set<uint64_t>{15}));
    EXPECT_EQ(log.pages_beyond(), 4u);
}

TEST(DirtyLog, ConcurrentMarksOfOneByteAllLand) {
    TestLog t(4096);
    auto m = DirtyLog::map(t.fd(), 4096, 0);
    ASSERT_OK(m);
    const DirtyLog& log = *m.value();
    // Two threads own alternate pages, so every bitmap byte is written by both at once.
    auto worker = [&](uint64_t parity) {
        for (uint64_t p = parity; p < 4096 * 8; p += 2) log.mark(p * kPage, 1);
    };
    std::thread a(worker, 0), b(worker, 1);
    a.join();
    b.join();
    EXPECT_EQ(t.pages().size(), 4096u * 8);
}

// ---- through a session ---------------------------------------------------------------------

// Guest memory ends at 4 GiB + 16 MiB (BlkFixture): the log QEMU would size for it.
constexpr uint64_t kLogBytes = ((4ull << 30) + (16ull << 20)) / kPage / 8;

class DirtyLogBlk : public BlkFixture {
protected:
    void SetUp() override {
        BlkFixture::SetUp();
        start_daemon(1);
        disk_ = make_disk("disk.img");
        sock_ = add_blk("socket=" + path("blk.sock") + ",path=" + disk_);
    }

    // A guest with LOG_SHMFD whose queue 0 logs into `log` (LOG_ALL on while the ring runs, and
    // the ring's log flag with its used ring at `used_log_gpa`, 0: where QEMU puts it, the ring).
    void connect_logging(Guest& g, TestLog& log, uint64_t used_log_gpa = 0, bool ring_flag = true) {
        extra_protocol_features_ = vhost::pf::kLogShmfd;
        connect_guest(g, sock_, 1);
        auto offered = g.fe->get_features();
        ASSERT_OK(offered);
        ASSERT_TRUE(offered.value() & vhost::kFLogAll) << "LOG_ALL offered";
        ASSERT_OK(g.fe->set_log_base(log.fd(), log.size()));
        ASSERT_OK(g.fe->set_features(g.features | vhost::kFLogAll));
        set_ring_log(g, ring_flag, used_log_gpa);
        log.clear();
    }
    void set_ring_log(Guest& g, bool on, uint64_t used_log_gpa = 0) {
        DriverQueue& q = *g.queues[0];
        ASSERT_OK(g.fe->set_vring_addr(vhost::VringAddr{0, on ? vhost::kVringAddrFlagLog : 0u, q.desc_uva(),
                                                        q.used_uva(), q.avail_uva(),
                                                        used_log_gpa != 0 ? used_log_gpa : q.used_gpa()}));
    }
    uint64_t used_bytes(const Guest& g) const { return virtio::used_ring_bytes(g.queues[0]->size()); }

    std::string disk_, sock_;
};

TEST_F(DirtyLogBlk, AReadLogsItsDataItsStatusAndTheUsedRing) {
    TestLog log(kLogBytes);
    Guest g;
    connect_logging(g, log);
    auto r = make_blk_read(*g.mem, 0, 64 * 1024, BlkReqOptions{.data_segments = 5});
    ASSERT_OK(r);
    ASSERT_EQ(run(g, 0, r.value()), 64u * 1024 + 1);
    EXPECT_TRUE(log.all_marked(r.value().data_gpa(), 64 * 1024)) << "every page the read's data landed in";
    EXPECT_TRUE(log.marked(r.value().status_gpa())) << "the status byte's page";
    EXPECT_TRUE(log.all_marked(g.queues[0]->used_gpa(), used_bytes(g))) << "the used ring";
}

TEST_F(DirtyLogBlk, AWriteLogsItsStatusNotTheDataItOnlyRead) {
    TestLog log(kLogBytes);
    Guest g;
    connect_logging(g, log);
    std::vector<uint8_t> data(64 * 1024, 0x5a);
    auto w = make_blk_write(*g.mem, 8, data);
    ASSERT_OK(w);
    ASSERT_EQ(run(g, 0, w.value()), 1u);
    EXPECT_TRUE(log.marked(w.value().status_gpa()));
    // Pages wholly inside the data the device only read are not sent again for nothing.
    const uint64_t first_inner = (w.value().data_gpa() + kPage - 1) / kPage;
    const uint64_t end_inner = (w.value().data_gpa() + data.size()) / kPage;
    ASSERT_GT(end_inner, first_inner + 4);
    for (uint64_t p = first_inner; p < end_inner; ++p) EXPECT_FALSE(log.marked(p * kPage)) << "page " << p;
}

TEST_F(DirtyLogBlk, GetIdLogsTheIdItWrote) {
    TestLog log(kLogBytes);
    Guest g;
    connect_logging(g, log);
    auto id = make_blk_get_id(*g.mem);
    ASSERT_OK(id);
    run(g, 0, id.value());
    EXPECT_TRUE(log.all_marked(id.value().data_gpa(), virtio::blk::kIdBytes));
    EXPECT_TRUE(log.marked(id.value().status_gpa()));
}

TEST_F(DirtyLogBlk, TheUsedRingIsLoggedAtLogGuestAddrAndOnlyWithTheRingFlag) {
    TestLog log(kLogBytes);
    Guest g;
    // Somewhere else in guest-physical space (the spec allows any address the log covers).
    const uint64_t elsewhere = (4ull << 30) + (8ull << 20);
    connect_logging(g, log, elsewhere);
    auto r = make_blk_read(*g.mem, 0, 4096);
    ASSERT_OK(r);
    run(g, 0, r.value());
    EXPECT_TRUE(log.all_marked(elsewhere, used_bytes(g))) << "at log_guest_addr";
    EXPECT_TRUE(log.marked(r.value().status_gpa()));
    // The ring's flag off (LOG_ALL stays on): data is still logged, the used ring not.
    set_ring_log(g, false, elsewhere);
    log.clear();
    run(g, 0, r.value());
    EXPECT_TRUE(log.all_marked(r.value().data_gpa(), 4096));
    EXPECT_FALSE(log.marked(elsewhere)) << "used ring logged without VHOST_VRING_F_LOG";
}

TEST_F(DirtyLogBlk, LoggingTogglesWithoutRestartingTheRingAndOffMarksNothing) {
    TestLog log(kLogBytes);
    Guest g;
    connect_logging(g, log);
    auto r = make_blk_read(*g.mem, 0, 8192);
    ASSERT_OK(r);
    run(g, 0, r.value());
    // A ring that restarts signals its call fd (the lost-interrupt guard): toggling logging must
    // not restart it.
    auto drain = [&] {
        pollfd p{g.calls[0].get(), POLLIN, 0};
        uint64_t v;
        while (::poll(&p, 1, 50) == 1 && ::read(g.calls[0].get(), &v, sizeof(v)) == sizeof(v)) {
        }
        return ::poll(&p, 1, 200) == 0;
    };
    ASSERT_TRUE(drain());
    ASSERT_OK(g.fe->set_features(g.features));  // LOG_ALL off: the migration ended
    set_ring_log(g, false);
    EXPECT_TRUE(drain()) << "turning logging off restarted the ring";
    log.clear();
    run(g, 0, r.value());
    EXPECT_TRUE(log.pages().empty()) << "logged with LOG_ALL off";
    ASSERT_OK(g.fe->set_features(g.features | vhost::kFLogAll));
    set_ring_log(g, true);
    EXPECT_TRUE(drain()) << "turning logging on restarted the ring";
    log.clear();
    run(g, 0, r.value());
    EXPECT_TRUE(log.all_marked(r.value().data_gpa(), 8192));
}

TEST_F(DirtyLogBlk, ANewLogReplacesTheOldOneBeforeTheReply) {
    TestLog first(kLogBytes), second(kLogBytes);
    Guest g;
    connect_logging(g, first);
    ASSERT_OK(g.fe->set_log_base(second.fd(), second.size()));  // QEMU's resize
    first.clear();
    second.clear();
    auto r = make_blk_read(*g.mem, 0, 4096);
    ASSERT_OK(r);
    run(g, 0, r.value());
    EXPECT_TRUE(first.pages().empty()) << "marked in a log the frontend already freed";
    EXPECT_TRUE(second.all_marked(r.value().data_gpa(), 4096));
}

TEST_F(DirtyLogBlk, HostileLogsAreRefusedAndTheDeviceServesOn) {
    // Without LOG_SHMFD acked, SET_LOG_BASE is refused.
    {
        Guest g;
        connect_guest(g, sock_, 1);
        TestLog log(kLogBytes);
        EXPECT_FALSE(g.fe->set_log_base(log.fd(), log.size()).ok());
    }
    struct Case {
        const char* what;
        uint64_t size, offset;
        bool seal;
        uint64_t fd_bytes;
    };
    const Case cases[] = {
        {"empty", 0, 0, true, 0},
        {"huge", DirtyLog::kMaxBytes + 1, 0, true, 0},
        {"offset overflows", 4096, UINT64_MAX - 10, true, 0},
        {"past the end of the fd", 8192, 0, true, 4096},
        {"not sealed", 4096, 0, false, 0},
    };
    for (const Case& c : cases) {
        Guest g;
        extra_protocol_features_ = vhost::pf::kLogShmfd;
        connect_guest(g, sock_, 1);
        TestLog log(std::max<uint64_t>(c.size == 0 || c.size > 4096 ? 4096 : c.size, 1), c.seal, c.fd_bytes);
        EXPECT_FALSE(g.fe->set_log_base(log.fd(), c.size, c.offset).ok()) << c.what;
    }
    extra_protocol_features_ = 0;
    expect_blk_serves(sock_);
}

}  // namespace
}  // namespace vhostd::testing
