// Validates the driver side (Frontend + DriverQueue + blk requests) against an independent
// vhost-user-blk backend: qemu-storage-daemon. Skipped when qemu-storage-daemon is not on PATH.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "testing/frontend.hpp"
#include "testing/blk_driver.hpp"
#include "testing/driver_queue.hpp"

extern char** environ;

namespace vhostd::testing {
namespace {

namespace blk = virtio::blk;
using namespace std::chrono_literals;

bool on_path(const std::string& prog) {
    const char* p = std::getenv("PATH");
    if (p == nullptr) return false;
    std::stringstream ss(p);
    std::string dir;
    while (std::getline(ss, dir, ':')) {
        if (!dir.empty() && ::access((dir + "/" + prog).c_str(), X_OK) == 0) return true;
    }
    return false;
}

// Temp dir + a qemu-storage-daemon child, both cleaned up on every path.
class QsdGuard {
public:
    QsdGuard() {
        char tmpl[] = "/tmp/vhostd-qsd-XXXXXX";
        if (::mkdtemp(tmpl) != nullptr) dir_ = tmpl;
    }
    ~QsdGuard() {
        stop();
        if (!dir_.empty()) {
            std::error_code ec;
            std::filesystem::remove_all(dir_, ec);
        }
    }
    QsdGuard(const QsdGuard&) = delete;
    QsdGuard& operator=(const QsdGuard&) = delete;

    const std::string& dir() const { return dir_; }
    std::string img() const { return dir_ + "/disk.img"; }
    std::string sock() const { return dir_ + "/vhost.sock"; }
    std::string log() const { return dir_ + "/qsd.log"; }

    bool start(uint64_t img_bytes, int num_queues) {
        if (dir_.empty()) return false;
        {
            UniqueFd f(::open(img().c_str(), O_CREAT | O_RDWR | O_TRUNC | O_CLOEXEC, 0600));
            if (!f || ::ftruncate(f.get(), static_cast<off_t>(img_bytes)) != 0) return false;
        }
        std::vector<std::string> args = {
            "qemu-storage-daemon",
            "--blockdev",
            "driver=file,node-name=f,filename=" + img(),
            "--export",
            "type=vhost-user-blk,id=e,node-name=f,addr.type=unix,addr.path=" + sock() +
                ",writable=on,num-queues=" + std::to_string(num_queues),
        };
        std::vector<char*> argv;
        for (auto& a : args) argv.push_back(a.data());
        argv.push_back(nullptr);
        posix_spawn_file_actions_t fa;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_addopen(&fa, 1, log().c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
        posix_spawn_file_actions_adddup2(&fa, 1, 2);
        int rc = posix_spawnp(&pid_, "qemu-storage-daemon", &fa, nullptr, argv.data(), environ);
        posix_spawn_file_actions_destroy(&fa);
        if (rc != 0) pid_ = -1;
        return rc == 0;
    }

    // SIGTERM, then SIGKILL if it does not exit within 3 s. Returns the wait status.
    int stop() {
        if (pid_ <= 0) return 0;
        ::kill(pid_, SIGTERM);
        int status = 0;
        for (int i = 0; i < 300; ++i) {
            pid_t r = ::waitpid(pid_, &status, WNOHANG);
            if (r == pid_ || (r < 0 && errno != EINTR)) {
                pid_ = -1;
                return status;
            }
            std::this_thread::sleep_for(10ms);
        }
        ::kill(pid_, SIGKILL);
        while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
        }
        pid_ = -1;
        return status;
    }

    bool alive() const { return pid_ > 0 && ::kill(pid_, 0) == 0; }

    std::string log_text() const {
        std::ifstream f(log());
        std::stringstream ss;
        ss << f.rdbuf();
        return ss.str();
    }

private:
    std::string dir_;
    pid_t pid_ = -1;
};

struct QueueCtx {
    std::unique_ptr<DriverQueue> q;
    UniqueFd kick;
    UniqueFd call;
    uint32_t submitted = 0;
};

void kick_if_wanted(QueueCtx& c) {
    auto k = c.q->publish_and_kick(c.kick.get());
    ASSERT_TRUE(k.ok()) << k.error().describe();
}

std::optional<virtio::UsedElem> wait_used(QueueCtx& c) { return c.q->wait_used(c.call.get(), 5000ms); }

// Submits one request, kicks if needed, waits for its completion; checks id and used len.
void run(QueueCtx& c, GuestBlkRequest& req, const char* what) {
    SCOPED_TRACE(what);
    auto head = req.submit(*c.q);
    ASSERT_TRUE(head.ok()) << head.error().describe();
    ++c.submitted;
    kick_if_wanted(c);
    auto u = wait_used(c);
    ASSERT_TRUE(u.has_value()) << "no completion (broken=" << c.q->broken() << " " << c.q->broken_reason() << ")";
    EXPECT_EQ(u->id, *head);
    EXPECT_EQ(u->len, req.expected_used_len());
    EXPECT_EQ(req.status(), blk::kSOk);
}

std::vector<uint8_t> pattern(size_t n, uint32_t seed) {
    std::vector<uint8_t> v(n);
    uint32_t x = seed * 2654435761u + 1;
    for (auto& b : v) {
        x = x * 1103515245u + 12345u;
        b = static_cast<uint8_t>(x >> 16);
    }
    return v;
}

TEST(DriverFrontendQsd, NegotiateSetupAndVerifiedIo) {
    if (!on_path("qemu-storage-daemon")) GTEST_SKIP() << "qemu-storage-daemon not on PATH";
    constexpr uint64_t kImgBytes = 16ull << 20;
    QsdGuard qsd;
    ASSERT_TRUE(qsd.start(kImgBytes, 2)) << "could not spawn qemu-storage-daemon";

    auto fe_r = Frontend::connect(qsd.sock(), 10s);
    ASSERT_TRUE(fe_r.ok()) << fe_r.error().describe() << "\nqsd log:\n" << qsd.log_text();
    auto& fe = **fe_r;

    // --- Negotiation, in QEMU's vhost_user_backend_init / vhost_dev_init order ---
    auto feats = fe.get_features();
    ASSERT_TRUE(feats.ok()) << feats.error().describe();
    std::printf("[qsd] GET_FEATURES        = %#llx\n", static_cast<unsigned long long>(*feats));
    ASSERT_TRUE(*feats & vhost::kFProtocolFeatures);
    ASSERT_TRUE(*feats & virtio::kFVersion1);
    auto pf = fe.get_protocol_features();
    ASSERT_TRUE(pf.ok()) << pf.error().describe();
    std::printf("[qsd] GET_PROTOCOL_FEATURES = %#llx\n", static_cast<unsigned long long>(*pf));
    const uint64_t want_pf = vhost::pf::kMq | vhost::pf::kReplyAck | vhost::pf::kConfig |
                             vhost::pf::kInflightShmfd | vhost::pf::kConfigureMemSlots;
    ASSERT_EQ(*pf & (vhost::pf::kMq | vhost::pf::kReplyAck | vhost::pf::kConfig),
              vhost::pf::kMq | vhost::pf::kReplyAck | vhost::pf::kConfig);
    ASSERT_TRUE(fe.set_protocol_features(*pf & want_pf).ok());
    auto nq = fe.get_queue_num();
    ASSERT_TRUE(nq.ok()) << nq.error().describe();
    EXPECT_EQ(*nq, 2u);
    if (*pf & vhost::pf::kConfigureMemSlots) {
        auto slots = fe.get_max_mem_slots();
        ASSERT_TRUE(slots.ok()) << slots.error().describe();
        std::printf("[qsd] GET_MAX_MEM_SLOTS   = %llu\n", static_cast<unsigned long long>(*slots));
    }
    auto so = fe.set_owner();
    ASSERT_TRUE(so.ok()) << so.error().describe();

    // --- Config space ---
    // QEMU 7.2's vhost-user-blk asks for sizeof(struct virtio_blk_config) = 60 bytes.
    auto cfg_bytes = fe.get_config(0, 60);
    ASSERT_TRUE(cfg_bytes.ok()) << cfg_bytes.error().describe();
    auto cfg = parse_blk_config(*cfg_bytes);
    std::printf("[qsd] config: capacity=%llu blk_size=%u seg_max=%u num_queues=%u wce=%u "
                "max_discard_sectors=%u max_write_zeroes_sectors=%u\n",
                static_cast<unsigned long long>(cfg.capacity), cfg.blk_size, cfg.seg_max, cfg.num_queues,
                cfg.writeback, cfg.max_discard_sectors, cfg.max_write_zeroes_sectors);
    EXPECT_EQ(cfg.capacity, kImgBytes / 512);
    EXPECT_EQ(cfg.num_queues, 2);
    // A larger request than the device's config struct is answered with size 0 by libvhost-user.
    {
        vhost::ConfigHeader h{0, 72, 0};
        std::vector<uint8_t> p(sizeof(h) + 72, 0);
        std::memcpy(p.data(), &h, sizeof(h));
        ASSERT_TRUE(fe.send_raw({static_cast<uint32_t>(vhost::Request::kGetConfig), vhost::kVersion,
                                 static_cast<uint32_t>(p.size())},
                                p)
                        .ok());
        auto r = fe.recv_raw();
        ASSERT_TRUE(r.ok()) << r.error().describe();
        std::printf("[qsd] GET_CONFIG(size=72) -> reply flags=%#x size=%u\n", r->hdr.flags.get(), r->hdr.size.get());
    }

    // --- Features ---
    const uint64_t want = virtio::kFVersion1 | virtio::kFEventIdx | virtio::kFIndirectDesc |
                          vhost::kFProtocolFeatures | blk::kFFlush | blk::kFBlkSize | blk::kFSegMax | blk::kFMq |
                          blk::kFDiscard | blk::kFWriteZeroes | blk::kFSizeMax | blk::kFTopology;
    const uint64_t acked = *feats & want;
    ASSERT_TRUE(acked & virtio::kFEventIdx);
    ASSERT_TRUE(acked & virtio::kFIndirectDesc);
    std::printf("[qsd] SET_FEATURES        = %#llx\n", static_cast<unsigned long long>(acked));
    ASSERT_TRUE(fe.set_features(acked).ok());

    // --- Memory: two regions, the second at a high gpa and 64 KiB into its memfd ---
    auto mem_r = GuestRam::create({{0, 8ull << 20}, {1ull << 32, 8ull << 20, 64 * 1024}});
    ASSERT_TRUE(mem_r.ok()) << mem_r.error().describe();
    auto& mem = **mem_r;
    auto st = fe.set_mem_table(mem);
    ASSERT_TRUE(st.ok()) << st.error().describe();

    // --- Queues: queue 0 rings in region 0, queue 1 rings in region 1 ---
    QueueCtx qs[2];
    {
        auto q0 = DriverQueue::create(mem, 128, true);
        ASSERT_TRUE(q0.ok()) << q0.error().describe();
        qs[0].q = std::move(q0).value();
        auto d = mem.alloc_in(1, virtio::desc_table_bytes(128), 16);
        auto a = mem.alloc_in(1, virtio::avail_ring_bytes(128), 2);
        auto u = mem.alloc_in(1, virtio::used_ring_bytes(128), 4);
        ASSERT_TRUE(d.ok() && a.ok() && u.ok());
        auto q1 = DriverQueue::create_at(mem, 128, true, *d, *a, *u);
        ASSERT_TRUE(q1.ok()) << q1.error().describe();
        qs[1].q = std::move(q1).value();
    }
    // Leave ~100 KiB in region 0: the first requests land there, later ones in region 1.
    ASSERT_TRUE(mem.alloc_in(0, mem.available(0) - 100 * 1024, 1).ok());
    for (uint32_t i = 0; i < 2; ++i) {
        qs[i].kick.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
        qs[i].call.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
        ASSERT_TRUE(qs[i].kick && qs[i].call);
        auto s = fe.setup_queue(i, *qs[i].q, qs[i].kick.get(), qs[i].call.get(), true);
        ASSERT_TRUE(s.ok()) << "queue " << i << ": " << s.error().describe();
    }

    // --- Verified I/O ---
    auto p1 = pattern(64 * 1024, 1);
    auto p2 = pattern(16 * 1024, 2);
    auto p3 = pattern(4096, 3);
    const uint64_t s1 = 0, s2 = 1000, s3 = 4096;
    {
        auto w = make_blk_write(mem, s1, p1, {.data_segments = 4});
        ASSERT_TRUE(w.ok()) << w.error().describe();
        EXPECT_LT(w->data_gpa(), 1ull << 32) << "expected this buffer in region 0";
        run(qs[0], *w, "OUT 64K, 4 data descriptors");
    }
    {
        auto w = make_blk_write(mem, s2, p2, {.data_segments = 5, .header_segments = 2, .indirect = true});
        ASSERT_TRUE(w.ok()) << w.error().describe();
        run(qs[1], *w, "OUT 16K indirect, 2 header + 5 data descriptors");
    }
    {
        auto w = make_blk_write(mem, s3, p3, {.indirect = true});
        ASSERT_TRUE(w.ok());
        run(qs[0], *w, "OUT 4K indirect");
    }
    {
        auto f = make_blk_flush(mem);
        ASSERT_TRUE(f.ok());
        run(qs[0], *f, "FLUSH");
    }
    {
        auto r = make_blk_read(mem, s1, static_cast<uint32_t>(p1.size()), {.data_segments = 7});
        ASSERT_TRUE(r.ok());
        EXPECT_GE(r->data_gpa(), 1ull << 32) << "expected this buffer in region 1";
        run(qs[1], *r, "IN 64K, 7 data descriptors");
        EXPECT_TRUE(std::equal(p1.begin(), p1.end(), r->data().begin()));
    }
    {
        auto r = make_blk_read(mem, s2, static_cast<uint32_t>(p2.size()),
                               {.data_segments = 3, .merge_status = true, .indirect = true});
        ASSERT_TRUE(r.ok());
        run(qs[0], *r, "IN 16K indirect, status merged into the last data descriptor");
        EXPECT_TRUE(std::equal(p2.begin(), p2.end(), r->data().begin()));
    }
    {
        // Several requests in flight at once, one publish and (at most) one kick.
        std::vector<GuestBlkRequest> reqs;
        for (uint32_t i = 0; i < 8; ++i) {
            auto r = make_blk_read(mem, s3, 4096, {.indirect = (i % 2) == 1});
            ASSERT_TRUE(r.ok());
            reqs.push_back(std::move(r).value());
        }
        for (auto& r : reqs) {
            ASSERT_TRUE(r.submit(*qs[1].q).ok());
            ++qs[1].submitted;
        }
        kick_if_wanted(qs[1]);
        for (size_t i = 0; i < reqs.size(); ++i) {
            auto u = wait_used(qs[1]);
            ASSERT_TRUE(u.has_value()) << "batch completion " << i;
        }
        for (auto& r : reqs) {
            EXPECT_EQ(r.status(), blk::kSOk);
            EXPECT_TRUE(std::equal(p3.begin(), p3.end(), r.data().begin()));
        }
    }
    {
        auto g = make_blk_get_id(mem);
        ASSERT_TRUE(g.ok());
        auto head = g->submit(*qs[0].q);
        ASSERT_TRUE(head.ok());
        ++qs[0].submitted;
        kick_if_wanted(qs[0]);
        auto u = wait_used(qs[0]);
        ASSERT_TRUE(u.has_value());
        std::string id(reinterpret_cast<const char*>(g->data().data()), strnlen(reinterpret_cast<const char*>(g->data().data()), 20));
        std::printf("[qsd] GET_ID status=%u used.len=%u id=\"%s\"\n", g->status(), u->len, id.c_str());
        EXPECT_EQ(g->status(), blk::kSOk);
    }
    if (acked & blk::kFWriteZeroes) {
        blk::DiscardSegment seg[] = {blk_segment(s1 + 8, 16)};
        auto wz = make_blk_write_zeroes(mem, seg);
        ASSERT_TRUE(wz.ok());
        run(qs[1], *wz, "WRITE_ZEROES 8K");
        std::fill(p1.begin() + 8 * 512, p1.begin() + 24 * 512, 0);
        auto r = make_blk_read(mem, s1, static_cast<uint32_t>(p1.size()), {.data_segments = 2});
        ASSERT_TRUE(r.ok());
        run(qs[0], *r, "IN after WRITE_ZEROES");
        EXPECT_TRUE(std::equal(p1.begin(), p1.end(), r->data().begin()));
    }
    if (acked & blk::kFDiscard) {
        blk::DiscardSegment seg[] = {blk_segment(8192, 8)};
        auto d = make_blk_discard(mem, seg);
        ASSERT_TRUE(d.ok());
        run(qs[0], *d, "DISCARD 4K");
    }
    {
        // Reading past the end of the disk must fail with IOERR, not hang.
        auto r = make_blk_read(mem, kImgBytes / 512, 512);
        ASSERT_TRUE(r.ok());
        auto head = r->submit(*qs[1].q);
        ASSERT_TRUE(head.ok());
        ++qs[1].submitted;
        kick_if_wanted(qs[1]);
        auto u = wait_used(qs[1]);
        ASSERT_TRUE(u.has_value());
        std::printf("[qsd] IN past end: status=%u used.len=%u\n", r->status(), u->len);
        EXPECT_EQ(r->status(), blk::kSIoErr);
    }
    {
        auto f = make_blk_flush(mem);
        ASSERT_TRUE(f.ok());
        run(qs[1], *f, "FLUSH q1");
    }

    // --- The image file holds the data ---
    {
        UniqueFd img(::open(qsd.img().c_str(), O_RDONLY | O_CLOEXEC));
        ASSERT_TRUE(img.valid());
        auto check = [&](uint64_t sector, const std::vector<uint8_t>& want_bytes, const char* what) {
            std::vector<uint8_t> got(want_bytes.size());
            ASSERT_EQ(::pread(img.get(), got.data(), got.size(), static_cast<off_t>(sector * 512)),
                      static_cast<ssize_t>(got.size()));
            EXPECT_TRUE(got == want_bytes) << what;
        };
        check(s1, p1, "region 1 (with zeroed hole)");
        check(s2, p2, "region 2");
        check(s3, p3, "region 3");
    }

    // --- Stop: GET_VRING_BASE returns the next avail index the device would process ---
    for (uint32_t i = 0; i < 2; ++i) {
        auto base = fe.get_vring_base(i);
        ASSERT_TRUE(base.ok()) << base.error().describe();
        std::printf("[qsd] GET_VRING_BASE(%u) = %u (submitted %u)\n", i, *base, qs[i].submitted);
        EXPECT_EQ(*base, qs[i].submitted);
    }
    EXPECT_TRUE(qsd.alive());
    EXPECT_FALSE(fe.peer_closed(50ms));
    if (auto log = qsd.log_text(); !log.empty()) std::printf("[qsd] log:\n%s", log.c_str());
}

// Memory hot-add/remove and the "no fd" kick/call flags, against qsd.
TEST(DriverFrontendQsd, MemSlotsHotAddRemove) {
    if (!on_path("qemu-storage-daemon")) GTEST_SKIP() << "qemu-storage-daemon not on PATH";
    QsdGuard qsd;
    ASSERT_TRUE(qsd.start(4ull << 20, 1));
    auto fe_r = Frontend::connect(qsd.sock(), 10s);
    ASSERT_TRUE(fe_r.ok()) << fe_r.error().describe();
    auto& fe = **fe_r;
    auto feats = fe.get_features();
    ASSERT_TRUE(feats.ok());
    auto pf = fe.get_protocol_features();
    ASSERT_TRUE(pf.ok());
    if (!(*pf & vhost::pf::kConfigureMemSlots)) GTEST_SKIP() << "qsd lacks CONFIGURE_MEM_SLOTS";
    ASSERT_TRUE(fe.set_protocol_features(*pf & (vhost::pf::kReplyAck | vhost::pf::kConfigureMemSlots |
                                                vhost::pf::kMq | vhost::pf::kConfig))
                    .ok());
    ASSERT_TRUE(fe.set_owner().ok());
    ASSERT_TRUE(fe.set_features(*feats & (virtio::kFVersion1 | vhost::kFProtocolFeatures | blk::kFFlush)).ok());

    // Start with one region, hot-add a second one via ADD_MEM_REG and put the rings there.
    auto mem = std::move(GuestRam::create({{0, 1 << 20}})).value();
    ASSERT_TRUE(fe.set_mem_table(*mem).ok());
    auto idx = mem->add_region({1ull << 30, 1 << 20});
    ASSERT_TRUE(idx.ok());
    auto st = fe.add_mem_reg(mem->regions()[*idx]);
    ASSERT_TRUE(st.ok()) << st.error().describe();
    QueueCtx c;
    c.q = std::move(DriverQueue::create_at(*mem, 64, false, 1ull << 30, (1ull << 30) + 0x1000,
                                           (1ull << 30) + 0x2000))
              .value();
    c.kick.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    c.call.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    st = fe.setup_queue(0, *c.q, c.kick.get(), c.call.get(), true);
    ASSERT_TRUE(st.ok()) << st.error().describe();
    auto data = pattern(8192, 9);
    auto w = make_blk_write(*mem, 16, data, {.data_segments = 2});
    ASSERT_TRUE(w.ok());
    run(c, *w, "OUT with rings in a hot-added region");
    auto r = make_blk_read(*mem, 16, 8192);
    ASSERT_TRUE(r.ok());
    run(c, *r, "IN");
    EXPECT_TRUE(std::equal(data.begin(), data.end(), r->data().begin()));
    auto base = fe.get_vring_base(0);
    ASSERT_TRUE(base.ok()) << base.error().describe();
    EXPECT_EQ(*base, 2u);

    // Remove region 0 (rings are in region 1); the backend must accept it.
    st = fe.rem_mem_reg(mem->regions()[0]);
    EXPECT_TRUE(st.ok()) << st.error().describe();
    EXPECT_FALSE(fe.peer_closed(50ms));
    if (auto log = qsd.log_text(); !log.empty()) std::printf("[qsd] log:\n%s", log.c_str());
}

}  // namespace
}  // namespace vhostd::testing
