// Inflight I/O tracking (INFLIGHT_SHMFD).
//
// Ring level: a device queue is abandoned mid-flight ("crash": no completion, no cleanup) and a
// fresh one recovers from the shared region: exactly the unfinished heads come back, in the
// order they were first taken, none twice; a crash between publishing a batch and clearing it
// is repaired; a hostile region is refused.
//
// Process level: a real vhostd device in a child process is killed with SIGKILL while it holds
// requests that completed out of order; a second one on the same socket, handed the same inflight
// buffer by the frontend (as QEMU does on reconnect), finishes exactly the missing requests.
// Without the buffer the same restart re-executes finished requests and loses others (checked:
// the test would catch a backend that ignores the buffer).
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <thread>

#include "core/fault.hpp"
#include "testing/fake_block_backend.hpp"
#include "testing/packed_driver_queue.hpp"
#include "shm/memory_map.hpp"
#include "shm/shared_buffer.hpp"
#include "testing/blk_fixture.hpp"
#include "vhost/mem_table.hpp"
#include "vhost/server.hpp"
#include "virtio/blk_device.hpp"
#include "virtio/inflight.hpp"
#include "virtio/packed_queue.hpp"
#include "virtio/virtqueue.hpp"

namespace vhostd::testing {
namespace {

using virtio::InflightQueue;

// ---- ring level ---------------------------------------------------------------------------

class InflightRing : public ::testing::Test {
protected:
    static constexpr uint16_t kSize = 8;

    void SetUp() override {
        auto g = GuestRam::create({{0, 1ull << 20}});
        ASSERT_OK(g);
        gm_ = std::move(g).value();
        std::vector<std::shared_ptr<const shm::Region>> regs;
        for (const auto& r : gm_->regions()) {
            auto m = shm::Region::map(vhost::to_region_desc(r.desc()), r.fd());
            ASSERT_OK(m);
            regs.push_back(m.value());
        }
        auto mm = shm::MemoryMap::build(regs);
        ASSERT_OK(mm);
        map_ = mm.value();
        auto q = DriverQueue::create(*gm_, kSize, true);
        ASSERT_OK(q);
        dq_ = std::move(q).value();
        auto b = shm::SharedBuffer::create("test-inflight", virtio::inflight_queue_bytes(kSize));
        ASSERT_OK(b);
        buf_ = b.value();
        region()->desc_num = kSize;
    }
    InflightQueue* region() { return reinterpret_cast<InflightQueue*>(buf_->data()); }
    virtio::QueueLayout layout() const { return {kSize, dq_->desc_uva(), dq_->avail_uva(), dq_->used_uva()}; }

    // A device queue as a (re)started backend brings it up: base is what QEMU sends after a
    // backend crash, the ring's used index.
    std::unique_ptr<virtio::SplitQueue> start(Status* st = nullptr) {
        auto vq = std::make_unique<virtio::SplitQueue>();
        Status s = vq->activate(map_, layout(), dq_->last_used(), true, false, region(), virtio::kFVersion1);
        if (st != nullptr) *st = s;
        else EXPECT_TRUE(s.ok()) << s.error().describe();
        return vq;
    }
    std::vector<uint16_t> add(int n) {
        std::vector<uint16_t> heads;
        for (int i = 0; i < n; ++i) {
            auto gpa = gm_->alloc(64, 16);
            DriverBuf b{gpa.value(), 64, true};
            auto h = dq_->add_chain({&b, 1});
            EXPECT_TRUE(h.ok());
            heads.push_back(h.value());
        }
        dq_->publish();
        return heads;
    }
    std::vector<uint16_t> pop_all(virtio::SplitQueue& vq) {
        std::vector<uint16_t> out;
        auto n = vq.pending();
        EXPECT_TRUE(n.ok());
        for (uint16_t i = 0; i < n.value(); ++i) out.push_back(vq.pop_head().value());
        return out;
    }
    std::vector<uint16_t> driver_completions() {
        std::vector<uint16_t> out;
        while (auto u = dq_->pop_used()) out.push_back(static_cast<uint16_t>(u->id));
        EXPECT_FALSE(dq_->broken()) << dq_->broken_reason();
        return out;
    }

    std::unique_ptr<GuestRam> gm_;
    std::shared_ptr<const shm::MemoryMap> map_;
    std::unique_ptr<DriverQueue> dq_;
    std::shared_ptr<shm::SharedBuffer> buf_;
};

TEST_F(InflightRing, FreshRegionIsInitialisedAndTracksRequests) {
    auto vq = start();
    EXPECT_EQ(region()->version, virtio::kInflightVersion);
    auto heads = add(3);
    EXPECT_EQ(pop_all(*vq), heads);
    for (uint16_t h : heads) EXPECT_EQ(region()->desc[h].inflight, 1) << "recorded before submission";
    EXPECT_LT(region()->desc[heads[0]].counter, region()->desc[heads[1]].counter);
    vq->push_used(heads[1], 0);
    EXPECT_EQ(region()->desc[heads[1]].inflight, 1) << "cleared only once the guest can see the completion";
    vq->publish_used();
    EXPECT_EQ(region()->desc[heads[1]].inflight, 0);
    EXPECT_EQ(region()->used_idx, 1);
    EXPECT_EQ(region()->desc[heads[0]].inflight, 1);
}

TEST_F(InflightRing, CrashWithOutOfOrderCompletionsResubmitsExactlyTheRest) {
    auto heads = add(6);
    {
        auto a = start();
        EXPECT_EQ(pop_all(*a), heads);
        a->push_used(heads[1], 0);
        a->push_used(heads[3], 0);
        a->publish_used();
        a->push_used(heads[4], 0);  // completed, but never published: the guest did not see it
        // crash: `a` goes away without completing or cleaning anything
    }
    EXPECT_EQ(driver_completions(), (std::vector<uint16_t>{heads[1], heads[3]}));
    auto b = start();
    EXPECT_EQ(b->last_avail(), 6) << "everything up to the crash was taken";
    EXPECT_EQ(b->resubmits_left(), 4);
    EXPECT_EQ(pop_all(*b), (std::vector<uint16_t>{heads[0], heads[2], heads[4], heads[5]})) << "original order";
    // New requests follow the recovered ones.
    auto more = add(1);
    EXPECT_EQ(pop_all(*b), more);
    for (uint16_t h : {heads[0], heads[2], heads[4], heads[5], more[0]}) b->push_used(h, 0);
    b->publish_used();
    auto done = driver_completions();
    EXPECT_EQ(done, (std::vector<uint16_t>{heads[0], heads[2], heads[4], heads[5], more[0]})) << "each exactly once";
    for (uint16_t i = 0; i < kSize; ++i) EXPECT_EQ(region()->desc[i].inflight, 0);
}

TEST_F(InflightRing, CrashBetweenPublishAndClearIsRepaired) {
    auto heads = add(5);
    {
        auto a = start();
        pop_all(*a);
        a->push_used(heads[2], 0);
        a->push_used(heads[0], 0);
        a->push_used(heads[3], 0);
        a->publish_used();
        // Undo the clears that follow the used->idx store: the state a crash right after that
        // store leaves behind.
        for (uint16_t h : {heads[2], heads[0], heads[3]}) region()->desc[h].inflight = 1;
        region()->used_idx = 0;
    }
    EXPECT_EQ(driver_completions(), (std::vector<uint16_t>{heads[2], heads[0], heads[3]}));
    auto b = start();
    EXPECT_EQ(pop_all(*b), (std::vector<uint16_t>{heads[1], heads[4]})) << "the published batch is not replayed";
    EXPECT_EQ(region()->used_idx, 3);
}

TEST_F(InflightRing, CleanStopLeavesNothingToResubmit) {
    auto heads = add(4);
    {
        auto a = start();
        pop_all(*a);
        for (uint16_t h : heads) a->push_used(h, 0);
        a->publish_used();
    }
    driver_completions();
    auto b = start();
    EXPECT_EQ(b->resubmits_left(), 0);
    EXPECT_EQ(b->last_avail(), 4);
}

TEST_F(InflightRing, HostileRegionsAreRefused) {
    add(2);
    start();  // initialise
    Status st;
    region()->desc_num = kSize * 2;
    start(&st);
    EXPECT_FALSE(st.ok()) << "region for another queue size";
    region()->desc_num = kSize;
    region()->version = 9;
    start(&st);
    EXPECT_FALSE(st.ok()) << "unknown version";
    region()->version = virtio::kInflightVersion;
    region()->used_idx = static_cast<uint16_t>(dq_->last_used() - kSize - 1);
    start(&st);
    EXPECT_FALSE(st.ok()) << "used_idx further behind than a queue's worth";
    region()->used_idx = dq_->last_used();
    // A batch list that leaves the table.
    auto heads = add(2);
    {
        auto a = start();
        pop_all(*a);
        a->push_used(heads[0], 0);
        a->publish_used();
    }
    driver_completions();
    region()->used_idx = static_cast<uint16_t>(region()->used_idx - 1);
    region()->last_batch_head = 0x7fff;
    start(&st);
    EXPECT_FALSE(st.ok()) << "batch list out of range";
    // Every entry marked in flight: bounded by the queue size, and each head still goes through
    // the usual chain checks when it is walked.
    region()->last_batch_head = heads[0];
    for (uint16_t i = 0; i < kSize; ++i) region()->desc[i].inflight = 0xff;
    auto c = start(&st);
    ASSERT_TRUE(st.ok()) << st.error().describe();
    EXPECT_EQ(c->resubmits_left(), kSize - 1) << "the repaired batch entry is not replayed";
}

// ---- process level -------------------------------------------------------------------------

class InflightRestart : public BlkFixture {
protected:
    static constexpr int kWrites = 8;
    static constexpr uint16_t kQ = 64;

    void TearDown() override {
        for (pid_t p : children_) {
            ::kill(p, SIGKILL);
            ::waitpid(p, nullptr, 0);
        }
        BlkFixture::TearDown();
    }

    // A vhostd blk device in a child process (so it can be killed for real). hold_odd: the
    // awkward backend above; otherwise the real file backend. kill_before_interrupt: the child
    // kills itself just before that used-buffer notification (fault hook; 0 = never).
    pid_t spawn(bool hold_odd, uint64_t kill_before_interrupt = 0) {
        pid_t pid = ::fork();
        if (pid == 0) {
            spdlog::set_level(spdlog::level::off);
            fault::arm_kill_before_interrupt(kill_before_interrupt);
            if (hold_odd) {
                Reactor r(0, ReactorConfig{});
                if (!r.start().ok()) _exit(2);
                int fd = ::open(disk_.c_str(), O_RDWR | O_CLOEXEC);
                // Writes to even sectors complete at once, the others never: after these, a crash
                // leaves completions out of order.
                auto be = std::make_shared<FakeBlockBackend>(
                    FakeBlockOptions{.size_bytes = kDiskBytes, .fd = fd, .hold_odd_writes = true, .description = "hold-odd"});
                auto dev = std::make_unique<virtio::BlkDevice>("blk0", be, virtio::BlkOptions{1, "x"},
                                                               std::vector<Reactor*>{&r});
                vhost::SocketServer s(sock_, false, std::make_unique<vhost::Session>(std::move(dev)));
                if (!s.start().ok()) _exit(3);
                for (;;) ::pause();
            }
            app::DaemonConfig cfg;
            app::Daemon d(cfg);
            if (!d.start().ok()) _exit(2);
            auto spec = app::parse_blk_spec("socket=" + sock_ + ",path=" + disk_ + ",queues=1");
            if (!spec.ok() || !d.add_blk(spec.value()).ok()) _exit(3);
            for (;;) ::pause();
        }
        children_.push_back(pid);
        return pid;
    }

    void kill9(pid_t pid) {
        ASSERT_EQ(::kill(pid, SIGKILL), 0);
        int status = 0;
        ASSERT_EQ(::waitpid(pid, &status, 0), pid);
        children_.erase(std::find(children_.begin(), children_.end(), pid));
    }

    // QEMU's (re)connect sequence for vhost-user-blk with inflight tracking.
    void connect(bool with_inflight) {
        auto fe = Frontend::connect(sock_);
        ASSERT_OK(fe);
        g_.fe = std::move(fe).value();
        auto f = g_.fe->get_features();
        ASSERT_OK(f);
        g_.features = f.value() & kGuestFeatures;
        auto pf = g_.fe->get_protocol_features();
        ASSERT_OK(pf);
        uint64_t want = vhost::pf::kReplyAck | vhost::pf::kConfig | vhost::pf::kMq;
        if (with_inflight) {
            ASSERT_TRUE(pf.value() & vhost::pf::kInflightShmfd) << "blk devices offer INFLIGHT_SHMFD";
            want |= vhost::pf::kInflightShmfd;
        }
        ASSERT_OK(g_.fe->set_protocol_features(pf.value() & want));
        ASSERT_OK(g_.fe->set_owner());
        ASSERT_OK(g_.fe->set_features(g_.features));
        if (with_inflight) {
            if (!inflight_.fd.valid()) {
                auto i = g_.fe->get_inflight_fd(1, kQ);
                ASSERT_OK(i);
                inflight_ = std::move(i).value();
            }
            ASSERT_OK(g_.fe->set_inflight_fd(inflight_.fd.get(), inflight_.desc));
        }
        if (!g_.mem) {
            auto mem = GuestRam::create({{0, 16ull << 20}});
            ASSERT_OK(mem);
            g_.mem = std::move(mem).value();
            auto q = DriverQueue::create(*g_.mem, kQ, true);
            ASSERT_OK(q);
            g_.queues.push_back(std::move(q).value());
            g_.kicks.push_back(make_eventfd());
            g_.calls.push_back(make_eventfd());
        }
        ASSERT_OK(g_.fe->set_mem_table(*g_.mem));
        DriverQueue& q = *g_.queues[0];
        ASSERT_OK(g_.fe->set_vring_num(0, kQ));
        ASSERT_OK(g_.fe->set_vring_base(0, q.last_used()));  // what QEMU restores after a backend crash
        ASSERT_OK(g_.fe->set_vring_addr(0, q));
        ASSERT_OK(g_.fe->set_vring_kick(0, g_.kicks[0].get()));
        ASSERT_OK(g_.fe->set_vring_call(0, g_.calls[0].get()));
        ASSERT_OK(g_.fe->set_vring_enable(0, true));
    }

    // The same on a packed ring. After a backend crash QEMU 7.2 cannot read a packed ring's
    // position back, so it sends the base it set last: the fresh ring's here.
    void connect_packed() {
        auto fe = Frontend::connect(sock_);
        ASSERT_OK(fe);
        g_.fe = std::move(fe).value();
        auto f = g_.fe->get_features();
        ASSERT_OK(f);
        ASSERT_TRUE(f.value() & virtio::kFRingPacked) << "blk devices offer packed rings";
        g_.features = f.value() & (kGuestFeatures | virtio::kFRingPacked);
        auto pf = g_.fe->get_protocol_features();
        ASSERT_OK(pf);
        ASSERT_OK(g_.fe->set_protocol_features(
            pf.value() & (vhost::pf::kReplyAck | vhost::pf::kConfig | vhost::pf::kMq | vhost::pf::kInflightShmfd)));
        ASSERT_OK(g_.fe->set_owner());
        ASSERT_OK(g_.fe->set_features(g_.features));
        if (!inflight_.fd.valid()) {
            auto i = g_.fe->get_inflight_fd(1, kQ);
            ASSERT_OK(i);
            inflight_ = std::move(i).value();
        }
        ASSERT_OK(g_.fe->set_inflight_fd(inflight_.fd.get(), inflight_.desc));
        if (!pq_) {
            auto mem = GuestRam::create({{0, 16ull << 20}});
            ASSERT_OK(mem);
            g_.mem = std::move(mem).value();
            auto q = PackedDriverQueue::create(*g_.mem, kQ, true);
            ASSERT_OK(q);
            pq_ = std::move(q).value();
            g_.kicks.push_back(make_eventfd());
            g_.calls.push_back(make_eventfd());
        }
        ASSERT_OK(g_.fe->set_mem_table(*g_.mem));
        const virtio::QueueLayout l = pq_->layout();
        ASSERT_OK(g_.fe->set_vring_num(0, kQ));
        ASSERT_OK(g_.fe->set_vring_base(0, virtio::kPackedFreshBase));
        ASSERT_OK(g_.fe->set_vring_addr(vhost::VringAddr{0, 0, l.desc_uva, l.used_uva, l.avail_uva, 0}));
        ASSERT_OK(g_.fe->set_vring_kick(0, g_.kicks[0].get()));
        ASSERT_OK(g_.fe->set_vring_call(0, g_.calls[0].get()));
        ASSERT_OK(g_.fe->set_vring_enable(0, true));
    }
    std::vector<uint16_t> collect_packed(size_t want, int ms) {
        std::vector<uint16_t> got;
        auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
        while (got.size() < want && std::chrono::steady_clock::now() < deadline) {
            auto u = pq_->wait_used(g_.calls[0].get(), std::chrono::milliseconds(100));
            if (u) got.push_back(static_cast<uint16_t>(u->id));
            if (pq_->broken()) break;
        }
        return got;
    }

    // Writes sector i with byte pattern i+1 (8 requests in flight at once).
    void submit_writes() {
        for (int i = 0; i < kWrites; ++i) {
            std::vector<uint8_t> data(512, static_cast<uint8_t>(i + 1));
            reqs_.push_back(testing::make_blk_write(*g_.mem, static_cast<uint64_t>(i), data).value());
            heads_.push_back(reqs_.back().submit(*g_.queues[0]).value());
        }
        ASSERT_OK(g_.queues[0]->publish_and_kick(g_.kicks[0].get()));
    }

    // Completions within `ms` (each head counted; duplicates show up as a broken driver queue).
    std::vector<uint16_t> collect(size_t want, int ms) {
        std::vector<uint16_t> got;
        auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
        while (got.size() < want && std::chrono::steady_clock::now() < deadline) {
            auto u = g_.queues[0]->wait_used(g_.calls[0].get(), std::chrono::milliseconds(100));
            if (u) got.push_back(static_cast<uint16_t>(u->id));
            if (g_.queues[0]->broken()) break;
        }
        return got;
    }

    void SetUp() override {
        BlkFixture::SetUp();
        disk_ = make_disk("disk.img");
        sock_ = path("blk.sock");
    }

    std::string disk_, sock_;
    std::vector<pid_t> children_;
    Guest g_;
    testing::InflightFd inflight_;
    std::vector<GuestBlkRequest> reqs_;
    std::vector<uint16_t> heads_;
    std::unique_ptr<PackedDriverQueue> pq_;
};

TEST_F(InflightRestart, KilledBackendFinishesExactlyTheMissingWrites) {
    pid_t a = spawn(true);
    connect(true);
    submit_writes();
    auto first = collect(kWrites / 2, 3000);
    ASSERT_EQ(first.size(), static_cast<size_t>(kWrites / 2)) << "even sectors complete at once";
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    kill9(a);

    spawn(false);  // a normal vhostd on the same socket (the stale one is replaced)
    connect(true);
    auto second = collect(kWrites / 2, 5000);
    EXPECT_FALSE(g_.queues[0]->broken()) << g_.queues[0]->broken_reason();
    ASSERT_EQ(second.size(), static_cast<size_t>(kWrites / 2)) << "the held writes were not resubmitted";
    std::vector<uint16_t> all = first;
    all.insert(all.end(), second.begin(), second.end());
    std::sort(all.begin(), all.end());
    std::vector<uint16_t> want = heads_;
    std::sort(want.begin(), want.end());
    EXPECT_EQ(all, want) << "every request completes exactly once";
    EXPECT_TRUE(collect(1, 300).empty()) << "nothing completes twice";
    for (auto& r : reqs_) EXPECT_EQ(r.status(), blk::kSOk);
    for (int i = 0; i < kWrites; ++i)
        EXPECT_EQ(read_file(disk_, static_cast<uint64_t>(i) * 512, 512), std::vector<uint8_t>(512, static_cast<uint8_t>(i + 1)))
            << "sector " << i;
}

TEST_F(InflightRestart, PackedRingKilledBackendFinishesExactlyTheMissingWrites) {
    pid_t a = spawn(true);
    connect_packed();
    for (int i = 0; i < kWrites; ++i) {
        std::vector<uint8_t> data(512, static_cast<uint8_t>(i + 1));
        reqs_.push_back(testing::make_blk_write(*g_.mem, static_cast<uint64_t>(i), data).value());
        auto id = pq_->add_chain(reqs_.back().bufs(), reqs_.back().indirect());
        ASSERT_OK(id);
        heads_.push_back(id.value());
    }
    ASSERT_OK(pq_->publish_and_kick(g_.kicks[0].get()));
    auto first = collect_packed(kWrites / 2, 3000);
    ASSERT_EQ(first.size(), static_cast<size_t>(kWrites / 2)) << "even sectors complete at once";
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    kill9(a);

    spawn(false);
    connect_packed();
    auto second = collect_packed(kWrites / 2, 5000);
    EXPECT_FALSE(pq_->broken()) << pq_->broken_reason();
    ASSERT_EQ(second.size(), static_cast<size_t>(kWrites / 2)) << "the held writes were not resubmitted";
    std::vector<uint16_t> all = first;
    all.insert(all.end(), second.begin(), second.end());
    std::sort(all.begin(), all.end());
    std::vector<uint16_t> want = heads_;
    std::sort(want.begin(), want.end());
    EXPECT_EQ(all, want) << "every request completes exactly once";
    EXPECT_TRUE(collect_packed(1, 300).empty()) << "nothing completes twice";
    for (auto& r : reqs_) EXPECT_EQ(r.status(), blk::kSOk);
    for (int i = 0; i < kWrites; ++i)
        EXPECT_EQ(read_file(disk_, static_cast<uint64_t>(i) * 512, 512), std::vector<uint8_t>(512, static_cast<uint8_t>(i + 1)))
            << "sector " << i;
    // New requests after the recovery go on from where the ring really is.
    std::vector<uint8_t> more(512, 0x5a);
    reqs_.push_back(testing::make_blk_write(*g_.mem, 20, more).value());
    ASSERT_OK(pq_->add_chain(reqs_.back().bufs(), reqs_.back().indirect()));
    ASSERT_OK(pq_->publish_and_kick(g_.kicks[0].get()));
    EXPECT_EQ(collect_packed(1, 3000).size(), 1u);
    EXPECT_EQ(read_file(disk_, 20 * 512, 512), more);
    EXPECT_FALSE(pq_->broken()) << pq_->broken_reason();
}

// Readable within `ms`? Drains the eventfd if so.
bool eventfd_fires(int fd, int ms) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, ms) != 1) return false;
    uint64_t v = 0;
    return ::read(fd, &v, sizeof(v)) == static_cast<ssize_t>(sizeof(v));
}

TEST_F(InflightRestart, CompletionPublishedButNeverSignalledIsSignalledByTheNextBackend) {
    // The backend dies between publishing a used entry (inflight tracking marks it done, so no
    // one will redo it) and writing the call eventfd: the fault hook puts the kill exactly there,
    // before its second notification. A guest with nothing else in flight sleeps until an
    // interrupt; the next backend must send one without being asked for anything.
    pid_t a = spawn(false, 2);
    connect(true);
    DriverQueue& q = *g_.queues[0];
    const int call = g_.calls[0].get();
    std::vector<uint8_t> first(512, 0xa1), second(512, 0xb2);
    reqs_.push_back(testing::make_blk_write(*g_.mem, 0, first).value());
    ASSERT_EQ(run(g_, 0, reqs_.back()), 1u) << "notification #1 goes out";
    eventfd_fires(call, 0);  // nothing left to wake the driver
    reqs_.push_back(testing::make_blk_write(*g_.mem, 1, second).value());
    const uint16_t head = reqs_.back().submit(q).value();
    ASSERT_OK(q.publish_and_kick(g_.kicks[0].get()));
    int status = 0;
    ASSERT_EQ(::waitpid(a, &status, 0), a);
    children_.erase(std::find(children_.begin(), children_.end(), a));
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "status " << status;
    ASSERT_EQ(q.used_ready(), 1u) << "the completion was published before the kill";
    ASSERT_FALSE(eventfd_fires(call, 0)) << "and never signalled";

    spawn(false);
    connect(true);  // submits nothing
    ASSERT_TRUE(eventfd_fires(call, 3000)) << "the new backend must signal the completion its predecessor published";
    auto u = q.pop_used();
    ASSERT_TRUE(u.has_value());
    EXPECT_EQ(u->id, head);
    EXPECT_EQ(u->len, 1u);
    EXPECT_EQ(reqs_.back().status(), blk::kSOk);
    EXPECT_EQ(read_file(disk_, 512, 512), second);
    EXPECT_TRUE(collect(1, 300).empty()) << "the finished write is not done again";
    EXPECT_FALSE(q.broken()) << q.broken_reason();
}

TEST_F(InflightRestart, WithoutTheBufferTheSameRestartGoesWrong) {
    // The control experiment: what the test above guards against really happens without
    // inflight tracking (so that test can fail).
    pid_t a = spawn(true);
    connect(false);
    submit_writes();
    ASSERT_EQ(collect(kWrites / 2, 3000).size(), static_cast<size_t>(kWrites / 2));
    kill9(a);
    spawn(false);
    connect(false);
    auto second = collect(kWrites / 2, 1500);
    bool duplicate_or_lost = g_.queues[0]->broken() || second.size() < static_cast<size_t>(kWrites / 2);
    EXPECT_TRUE(duplicate_or_lost) << "restarting at the used index replays finished requests";
}

}  // namespace
}  // namespace vhostd::testing
