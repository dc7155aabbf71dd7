// Shared fixture for protocol-level tests: a real vhostd Daemon (reactors, socket servers,
// vhost-user devices, blk devices, io_uring file/null backends) in-process, and an in-process
// frontend + guest driver over memfd memory talking to it through a real unix socket.
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "app/daemon.hpp"
#include "core/log.hpp"
#include "testing/frontend.hpp"
#include "testing/blk_driver.hpp"
#include "virtio/blk_types.hpp"
#include "testing/driver_queue.hpp"

namespace vhostd::testing {

namespace blk = virtio::blk;

inline constexpr uint64_t kGuestFeatures = virtio::kFVersion1 | virtio::kFEventIdx | virtio::kFIndirectDesc |
                                           blk::kFFlush | blk::kFBlkSize | blk::kFSegMax | blk::kFMq |
                                           blk::kFDiscard | blk::kFWriteZeroes | blk::kFConfigWce |
                                           vhost::kFProtocolFeatures;

#define ASSERT_OK(expr)                                                        \
    do {                                                                       \
        auto&& _r = (expr);                                                    \
        ASSERT_TRUE(_r.ok()) << #expr << ": " << _r.error().describe();        \
    } while (0)

inline UniqueFd make_eventfd() { return UniqueFd(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)); }

inline size_t count_fds() {
    size_t n = 0;
    for ([[maybe_unused]] auto& e : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
    return n;
}

// Guest-memory mappings (memfd-backed) in this process: vhostd's and the test driver's.
inline size_t count_memfd_mappings() {
    FILE* f = fopen("/proc/self/maps", "r");
    size_t n = 0;
    char line[512];
    while (fgets(line, sizeof(line), f) != nullptr) n += strstr(line, "/memfd:") != nullptr;
    fclose(f);
    return n;
}

// One guest's view of a device: memory, queues with their kick/call eventfds.
struct Guest {
    std::unique_ptr<Frontend> fe;
    std::unique_ptr<GuestRam> mem;
    std::vector<std::unique_ptr<DriverQueue>> queues;
    std::vector<UniqueFd> kicks, calls;
    uint64_t features = 0;
};

class BlkFixture : public ::testing::Test {
protected:
    static constexpr uint64_t kDiskBytes = 8ull << 20;

    void SetUp() override {
        if (const char* lvl = getenv("VHOSTD_TEST_LOG")) set_log_level(lvl);
        else spdlog::set_level(spdlog::level::warn);
        char tmpl[] = "/tmp/vhostd-test.XXXXXX";
        ASSERT_NE(mkdtemp(tmpl), nullptr);
        dir_ = tmpl;
    }

    void TearDown() override {
        own_server_.reset();  // before its reactor: the server's device stops its queues there
        if (own_reactor_) own_reactor_->stop();
        own_reactor_.reset();
        daemon_.reset();
        std::filesystem::remove_all(dir_);
    }

    // A device built outside the daemon (on a fake backend): its queues run on the fixture's own
    // reactor (started on first use) and serve() puts it on `sock` until TearDown.
    Reactor& own_reactor() {
        if (!own_reactor_) {
            own_reactor_ = std::make_unique<Reactor>(0, ReactorConfig{});
            auto st = own_reactor_->start();
            EXPECT_TRUE(st.ok()) << st.error().describe();
        }
        return *own_reactor_;
    }
    void serve(std::unique_ptr<virtio::VirtioDevice> dev, const std::string& sock) {
        own_server_ = std::make_unique<vhost::SocketServer>(sock, false, std::make_unique<vhost::Session>(std::move(dev)));
        ASSERT_OK(own_server_->start());
    }

    std::string path(const std::string& name) const { return dir_ + "/" + name; }

    // A backing file filled with a deterministic pattern (byte i = (i * 7 + i / 4096) & 0xff).
    std::string make_disk(const std::string& name, uint64_t bytes = kDiskBytes) {
        std::string p = path(name);
        std::vector<uint8_t> buf(bytes);
        for (uint64_t i = 0; i < bytes; ++i) buf[i] = static_cast<uint8_t>((i * 7 + i / 4096) & 0xff);
        UniqueFd fd(open(p.c_str(), O_CREAT | O_RDWR | O_TRUNC | O_CLOEXEC, 0644));
        EXPECT_TRUE(fd.valid());
        EXPECT_EQ(pwrite(fd.get(), buf.data(), buf.size(), 0), static_cast<ssize_t>(buf.size()));
        return p;
    }

    std::vector<uint8_t> read_file(const std::string& p, uint64_t off, size_t len) {
        std::vector<uint8_t> out(len);
        UniqueFd fd(open(p.c_str(), O_RDONLY | O_CLOEXEC));
        EXPECT_EQ(pread(fd.get(), out.data(), len, static_cast<off_t>(off)), static_cast<ssize_t>(len));
        return out;
    }

    void start_daemon(unsigned threads = 2, PollMode mode = PollMode::kAdaptive, unsigned ring_entries = 1024) {
        app::DaemonConfig cfg;
        cfg.threads = threads;
        cfg.reactor.mode = mode;
        cfg.reactor.ring_entries = ring_entries;
        start_daemon(cfg);
    }
    void start_daemon(const app::DaemonConfig& cfg) {
        daemon_ = std::make_unique<app::Daemon>(cfg);
        ASSERT_OK(daemon_->start());
    }

    // Adds a device from a --blk spec string; returns its socket path.
    std::string add_blk(const std::string& spec) {
        auto s = app::parse_blk_spec(spec);
        EXPECT_TRUE(s.ok()) << s.error().describe();
        auto id = daemon_->add_blk(s.value());
        EXPECT_TRUE(id.ok()) << id.error().describe();
        return s.value().socket;
    }

    // QEMU's order: features, protocol features, queue num, owner, config, then memory and rings.
    void connect_guest(Guest& g, const std::string& sock, uint32_t nqueues, uint64_t want = kGuestFeatures,
                       uint16_t qsize = 128, bool enable = true) {
        auto fe = Frontend::connect(sock);
        ASSERT_OK(fe);
        g.fe = std::move(fe).value();
        auto f = g.fe->get_features();
        ASSERT_OK(f);
        g.features = f.value() & want;
        if (g.features & vhost::kFProtocolFeatures) {
            auto pf = g.fe->get_protocol_features();
            ASSERT_OK(pf);
            ASSERT_OK(g.fe->set_protocol_features(pf.value() & (vhost::pf::kMq | vhost::pf::kReplyAck |
                                                                vhost::pf::kConfig | vhost::pf::kConfigureMemSlots |
                                                                vhost::pf::kStatus | vhost::pf::kResetDevice |
                                                                vhost::pf::kNetMtu | vhost::pf::kRarp |
                                                                extra_protocol_features_)));
        }
        ASSERT_OK(g.fe->set_owner());
        ASSERT_OK(g.fe->set_features(g.features));
        auto mem = GuestRam::create({{0, 16ull << 20}, {1ull << 32, 16ull << 20}});
        ASSERT_OK(mem);
        g.mem = std::move(mem).value();
        ASSERT_OK(g.fe->set_mem_table(*g.mem));
        for (uint32_t i = 0; i < nqueues; ++i) {
            auto q = DriverQueue::create(*g.mem, qsize, (g.features & virtio::kFEventIdx) != 0);
            ASSERT_OK(q);
            g.queues.push_back(std::move(q).value());
            g.kicks.push_back(make_eventfd());
            g.calls.push_back(make_eventfd());
            ASSERT_OK(g.fe->setup_queue(i, *g.queues[i], g.kicks[i].get(), g.calls[i].get(), enable));
        }
    }

    // A fresh frontend connects to the blk device on `sock` and does a verified 4 KiB read: the
    // device serves (e.g. after a hostile session).
    void expect_blk_serves(const std::string& sock) {
        Guest g;
        connect_guest(g, sock, 1);
        auto r = testing::make_blk_read(*g.mem, 0, 4096);
        ASSERT_TRUE(r.ok());
        EXPECT_EQ(run(g, 0, r.value()), 4097u);
        EXPECT_EQ(r.value().status(), blk::kSOk);
    }

    // Submits one request on queue qi and waits for its completion; returns the used length.
    uint32_t run(Guest& g, uint32_t qi, const GuestBlkRequest& req) {
        auto head = req.submit(*g.queues[qi]);
        EXPECT_TRUE(head.ok()) << head.error().describe();
        auto k = g.queues[qi]->publish_and_kick(g.kicks[qi].get());
        EXPECT_TRUE(k.ok());
        auto used = g.queues[qi]->wait_used(g.calls[qi].get(), std::chrono::seconds(5));
        EXPECT_TRUE(used.has_value()) << "request did not complete";
        if (!used) return UINT32_MAX;
        EXPECT_EQ(used->id, head.value());
        return used->len;
    }

    // Runs a request built by one of the driver's make_blk_* helpers; returns its status byte.
    uint8_t status_of(Guest& g, uint32_t qi, const Result<GuestBlkRequest>& req) {
        EXPECT_TRUE(req.ok()) << (req.ok() ? "" : req.error().describe());
        if (!req.ok()) return 0xee;
        run(g, qi, req.value());
        return req.value().status();
    }

    // Waits until `n` more completions arrived on queue qi (call-driven, batches drained).
    void wait_completions(Guest& g, uint32_t qi, size_t n) {
        size_t done = 0;
        while (done < n) {
            ASSERT_TRUE(g.queues[qi]->wait_used(g.calls[qi].get(), std::chrono::seconds(5)))
                << "stalled after " << done << " of " << n;
            ++done;
            while (done < n && g.queues[qi]->pop_used()) ++done;
        }
    }

    std::string dir_;
    uint64_t extra_protocol_features_ = 0;  // connect_guest asks for these too (e.g. BACKEND_REQ)
    std::unique_ptr<app::Daemon> daemon_;
    std::unique_ptr<Reactor> own_reactor_;
    std::unique_ptr<vhost::SocketServer> own_server_;
};

// One daemon (one reactor) serving one 2-queue blk device on a file: the setting of the protocol
// and session tests.
class OneBlkDevice : public BlkFixture {
protected:
    void SetUp() override {
        BlkFixture::SetUp();
        start_daemon(1);
        disk_ = make_disk("d.img");
        sock_ = add_blk("socket=" + path("a.sock") + ",path=" + disk_ + ",queues=2");
    }

    // After a hostile session: the device accepts a new frontend and does verified I/O.
    void expect_device_still_serves() { expect_blk_serves(sock_); }

    // A fresh connection whose GET_FEATURES was answered: the previous session has been reset
    // by then (one connection at a time). Measure fds while it is open.
    std::unique_ptr<Frontend> settle() {
        auto fe = Frontend::connect(sock_);
        EXPECT_TRUE(fe.ok());
        EXPECT_TRUE(fe.value()->get_features().ok());
        return std::move(fe).value();
    }

    std::string disk_, sock_;
};

template <typename T>
std::vector<uint8_t> bytes(const T& v) {
    std::vector<uint8_t> b(sizeof(T));
    std::memcpy(b.data(), &v, sizeof(T));
    return b;
}

}  // namespace vhostd::testing
