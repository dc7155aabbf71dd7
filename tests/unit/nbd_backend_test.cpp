// The nbd backend against real NBD servers started by the tests: nbdkit (file and memory
// plugins, its multi-conn filter), and a hostile server (hostile_nbd.py) that breaks the protocol
// in the ways a broken or malicious server could. A guest driver talks to a real vhostd daemon
// in-process (BlkFixture).
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "backends/nbd_backend.hpp"
#include "testing/blk_fixture.hpp"

extern char** environ;

namespace vhostd::testing {
namespace {

using namespace std::chrono_literals;

// A server process of the test's: started with argv, killed (SIGKILL) when the object goes.
class ServerProcess {
public:
    ServerProcess() = default;
    ServerProcess(const ServerProcess&) = delete;
    ServerProcess& operator=(const ServerProcess&) = delete;
    ~ServerProcess() { kill(SIGKILL); }

    // Starts argv; waits (bounded) until `sock` accepts connections.
    bool start(const std::vector<std::string>& argv, const std::string& sock) {
        std::vector<char*> args;
        for (auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
        args.push_back(nullptr);
        ::unlink(sock.c_str());
        if (posix_spawnp(&pid_, args[0], nullptr, nullptr, args.data(), environ) != 0) return false;
        for (int i = 0; i < 500; ++i) {
            int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
            sockaddr_un a{};
            a.sun_family = AF_UNIX;
            std::snprintf(a.sun_path, sizeof(a.sun_path), "%s", sock.c_str());
            bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
            ::close(fd);
            if (ok) return true;
            int st = 0;
            if (waitpid(pid_, &st, WNOHANG) == pid_) {
                pid_ = -1;
                return false;
            }
            std::this_thread::sleep_for(10ms);
        }
        return false;
    }
    void kill(int sig) {
        if (pid_ <= 0) return;
        ::kill(pid_, sig);
        if (sig == SIGKILL || sig == SIGTERM) {
            waitpid(pid_, nullptr, 0);
            pid_ = -1;
        } else if (sig == SIGSTOP) {
            // kill() returns before the process stops: wait (bounded) until every thread has.
            for (int i = 0; i < 400 && !stopped(); ++i) std::this_thread::sleep_for(5ms);
        }
    }

private:
    bool stopped() const {
        std::error_code ec;
        for (const auto& t : std::filesystem::directory_iterator(fmt::format("/proc/{}/task", pid_), ec)) {
            std::ifstream f(t.path() / "stat");
            std::string line;
            std::getline(f, line);
            auto paren = line.rfind(')');
            if (paren == std::string::npos || paren + 2 >= line.size() || line[paren + 2] != 'T') return false;
        }
        return !ec;
    }

public:

private:
    pid_t pid_ = -1;
};

class NbdBackendTest : public BlkFixture {
protected:
    std::string sock() const { return path("nbd.sock"); }
    std::string uri() const { return "nbd+unix:///?socket=" + sock(); }
    // nbdkit in the foreground on sock(), serving `plugin_args` (e.g. {"file", PATH}).
    void start_nbdkit(ServerProcess& p, std::vector<std::string> plugin_args, std::vector<std::string> extra = {}) {
        std::vector<std::string> argv{"nbdkit", "--foreground", "--exit-with-parent", "--unix", sock()};
        argv.insert(argv.end(), extra.begin(), extra.end());
        argv.insert(argv.end(), plugin_args.begin(), plugin_args.end());
        ASSERT_TRUE(p.start(argv, sock())) << "nbdkit did not start (is the nbdkit package installed?)";
    }
    void start_hostile(ServerProcess& p, const std::string& mode) {
        ASSERT_TRUE(p.start({"python3", std::string(VHOSTD_TESTS_DIR) + "/unit/hostile_nbd.py", sock(), mode}, sock()))
            << "hostile_nbd.py did not start";
    }
    // A request that completes within `limit` (or the test fails): its status.
    uint8_t status_within(Guest& g, uint32_t qi, const GuestBlkRequest& req, std::chrono::seconds limit) {
        auto head = req.submit(*g.queues[qi]);
        EXPECT_TRUE(head.ok());
        EXPECT_TRUE(g.queues[qi]->publish_and_kick(g.kicks[qi].get()).ok());
        auto used = g.queues[qi]->wait_used(g.calls[qi].get(), limit);
        EXPECT_TRUE(used.has_value()) << "no completion within " << limit.count() << " s";
        return used ? req.status() : 0xee;
    }
    std::vector<uint8_t> pattern(size_t n, uint8_t seed) {
        std::vector<uint8_t> v(n);
        for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(i * 31 + seed + i / 4096);
        return v;
    }
};

// Every command type against nbdkit's file plugin, checked in the file: reads of what is there,
// writes (split over several descriptors, so several NBD commands each), flush, discard and
// write-zeroes.
TEST_F(NbdBackendTest, ReadsWritesFlushDiscardAndZeroesReachTheServer) {
    auto disk = make_disk("d.img");
    ServerProcess srv;
    start_nbdkit(srv, {"file", disk});
    start_daemon(1, PollMode::kAdaptive);
    auto s = add_blk("socket=" + path("v.sock") + ",backend=nbd,uri=" + uri() + ",queues=2");
    Guest g;
    connect_guest(g, s, 2);

    auto want = read_file(disk, 5 * 4096, 8192);
    auto rd = make_blk_read(*g.mem, 5 * 8, 8192, {.data_segments = 3});
    ASSERT_OK(rd);
    EXPECT_EQ(run(g, 0, rd.value()), 8193u);
    ASSERT_EQ(rd.value().status(), blk::kSOk);
    EXPECT_TRUE(std::equal(want.begin(), want.end(), rd.value().data().begin())) << "read data differs from the file";

    auto data = pattern(65536, 7);
    EXPECT_EQ(status_of(g, 1, make_blk_write(*g.mem, 64, data, {.data_segments = 5})), blk::kSOk);
    EXPECT_EQ(status_of(g, 1, make_blk_flush(*g.mem)), blk::kSOk);
    EXPECT_EQ(read_file(disk, 64 * 512, data.size()), data) << "the write did not reach the file";

    auto data2 = pattern(4096, 99);
    EXPECT_EQ(status_of(g, 0, make_blk_write(*g.mem, 2048, data2)), blk::kSOk);
    EXPECT_EQ(read_file(disk, 2048 * 512, data2.size()), data2);

    blk::DiscardSegment zero = blk_segment(4096, 64);
    EXPECT_EQ(status_of(g, 0, make_blk_write_zeroes(*g.mem, std::span(&zero, 1))), blk::kSOk);
    auto z = read_file(disk, 4096 * 512, 64 * 512);
    EXPECT_TRUE(std::all_of(z.begin(), z.end(), [](uint8_t b) { return b == 0; })) << "write-zeroes left data";
    blk::DiscardSegment disc = blk_segment(8192, 128);
    EXPECT_EQ(status_of(g, 0, make_blk_discard(*g.mem, std::span(&disc, 1))), blk::kSOk);
}

// A server without multi-conn (nbdkit's multi-conn filter turns it off): every queue of the
// device goes to one reactor, over one connection, and still serves.
TEST_F(NbdBackendTest, WithoutMultiConnAllQueuesShareOneReactor) {
    ServerProcess srv;
    start_nbdkit(srv, {"memory", "size=16M", "multi-conn-mode=disable"}, {"--filter=multi-conn"});
    start_daemon(2, PollMode::kAdaptive);
    auto s = add_blk("socket=" + path("v.sock") + ",backend=nbd,uri=" + uri() + ",queues=4");
    Guest g;
    connect_guest(g, s, 4);
    auto rs = daemon_->reactor_stats();
    ASSERT_EQ(rs.size(), 2u);
    EXPECT_EQ(rs[0].pollers + rs[1].pollers, 4u);
    EXPECT_TRUE(rs[0].pollers == 0 || rs[1].pollers == 0) << "queues on both reactors: " << rs[0].pollers << " and "
                                                          << rs[1].pollers;
    for (uint32_t qi = 0; qi < 4; ++qi) {
        auto data = pattern(4096, static_cast<uint8_t>(qi));
        EXPECT_EQ(status_of(g, qi, make_blk_write(*g.mem, qi * 8, data)), blk::kSOk);
        auto rd = make_blk_read(*g.mem, qi * 8, 4096);
        ASSERT_OK(rd);
        EXPECT_EQ(run(g, qi, rd.value()), 4097u);
        EXPECT_TRUE(std::equal(data.begin(), data.end(), rd.value().data().begin())) << "queue " << qi;
    }
}

// The server is killed with requests in flight and comes back: they are sent again and complete
// (the guest sees a pause, no error), and what they wrote is in the file.
TEST_F(NbdBackendTest, RequestsSurviveAServerRestart) {
    auto disk = make_disk("d.img");
    ServerProcess srv;
    start_nbdkit(srv, {"file", disk});
    start_daemon(1, PollMode::kAdaptive);
    auto s = add_blk("socket=" + path("v.sock") + ",backend=nbd,uri=" + uri() + ",queues=1,timeout=20");
    Guest g;
    connect_guest(g, s, 1);
    EXPECT_EQ(status_of(g, 0, make_blk_read(*g.mem, 0, 4096)), blk::kSOk);
    srv.kill(SIGKILL);
    // Sent while the server is gone: they wait for it.
    std::vector<GuestBlkRequest> reqs;
    std::vector<std::vector<uint8_t>> datas;
    for (int i = 0; i < 8; ++i) {
        datas.push_back(pattern(4096, static_cast<uint8_t>(40 + i)));
        auto w = make_blk_write(*g.mem, 1000 + i * 8, datas.back());
        ASSERT_OK(w);
        ASSERT_OK(w.value().submit(*g.queues[0]));
        reqs.push_back(std::move(w).value());
    }
    ASSERT_OK(g.queues[0]->publish_and_kick(g.kicks[0].get()));
    std::this_thread::sleep_for(700ms);
    EXPECT_FALSE(g.queues[0]->pop_used().has_value()) << "a request completed while the server was down";
    ServerProcess srv2;
    start_nbdkit(srv2, {"file", disk});
    wait_completions(g, 0, reqs.size());
    for (size_t i = 0; i < reqs.size(); ++i) {
        EXPECT_EQ(reqs[i].status(), blk::kSOk) << "request " << i;
        EXPECT_EQ(read_file(disk, (1000 + i * 8) * 512, 4096), datas[i]) << "request " << i;
    }
}

// A server that stops answering (SIGSTOP: the connection stays up): the request fails with an
// I/O error after timeout=, the connection is dropped (no late reply can land in the buffer),
// and once the server answers again new requests succeed. Another device on the same reactor
// serves throughout.
TEST_F(NbdBackendTest, AnUnansweredRequestFailsAfterTheTimeoutAndTheDeviceRecovers) {
    ServerProcess srv;
    start_nbdkit(srv, {"memory", "size=16M"});
    start_daemon(1, PollMode::kAdaptive);
    auto s = add_blk("socket=" + path("v.sock") + ",backend=nbd,uri=" + uri() + ",queues=1,timeout=1");
    auto other = add_blk("socket=" + path("o.sock") + ",backend=null,size=8M,queues=1");
    Guest g, o;
    connect_guest(g, s, 1);
    connect_guest(o, other, 1);
    EXPECT_EQ(status_of(g, 0, make_blk_read(*g.mem, 0, 4096)), blk::kSOk);
    srv.kill(SIGSTOP);
    auto rd = make_blk_read(*g.mem, 8, 4096);
    ASSERT_OK(rd);
    auto t0 = std::chrono::steady_clock::now();
    auto head = rd.value().submit(*g.queues[0]);
    ASSERT_OK(head);
    ASSERT_OK(g.queues[0]->publish_and_kick(g.kicks[0].get()));
    // Meanwhile the other device answers at once.
    for (int i = 0; i < 20; ++i) EXPECT_EQ(status_of(o, 0, make_blk_read(*o.mem, 0, 4096)), blk::kSOk);
    auto used = g.queues[0]->wait_used(g.calls[0].get(), std::chrono::seconds(10));
    ASSERT_TRUE(used.has_value()) << "the request never failed";
    auto took = std::chrono::steady_clock::now() - t0;
    EXPECT_EQ(rd.value().status(), blk::kSIoErr);
    EXPECT_GE(took, 900ms);
    EXPECT_LT(took, 5s);
    srv.kill(SIGCONT);
    EXPECT_EQ(status_within(g, 0, make_blk_read(*g.mem, 16, 4096).value(), 10s), blk::kSOk);
}

// The server is gone for good: requests fail after timeout=, not before, and not never.
TEST_F(NbdBackendTest, ServerGoneRequestsFailAfterTheTimeout) {
    ServerProcess srv;
    start_nbdkit(srv, {"memory", "size=16M"});
    start_daemon(1, PollMode::kAdaptive);
    auto s = add_blk("socket=" + path("v.sock") + ",backend=nbd,uri=" + uri() + ",queues=1,timeout=1");
    Guest g;
    connect_guest(g, s, 1);
    srv.kill(SIGKILL);
    auto t0 = std::chrono::steady_clock::now();
    EXPECT_EQ(status_within(g, 0, make_blk_read(*g.mem, 0, 4096).value(), 10s), blk::kSIoErr);
    EXPECT_GE(std::chrono::steady_clock::now() - t0, 900ms);
}

// nbds://: TLS (a pre-shared key here); data goes through. The same server refuses a client
// without TLS, so the device cannot be added with a plain nbd+unix URI.
TEST_F(NbdBackendTest, TlsWithAPreSharedKey) {
    std::string psk = path("keys.psk");
    {
        FILE* f = std::fopen(psk.c_str(), "w");
        ASSERT_NE(f, nullptr);
        std::fputs("vhostd:0123456789abcdef0123456789abcdef\n", f);
        std::fclose(f);
    }
    ServerProcess srv;
    start_nbdkit(srv, {"memory", "size=16M"}, {"--tls=require", "--tls-psk=" + psk});
    start_daemon(1, PollMode::kAdaptive);
    auto plain = app::parse_blk_spec("socket=" + path("p.sock") + ",backend=nbd,uri=" + uri());
    ASSERT_OK(plain);
    EXPECT_FALSE(daemon_->add_blk(plain.value()).ok()) << "a TLS-only server served a plain client";
    std::string tls_uri = "nbds+unix://vhostd@/?socket=" + sock() + "&tls-psk-file=" + psk;
    auto spec = app::parse_blk_spec("socket=" + path("v.sock") + ",backend=nbd,uri=" + tls_uri + ",queues=1");
    ASSERT_OK(spec);
    auto id = daemon_->add_blk(spec.value());
    ASSERT_OK(id);
    Guest g;
    connect_guest(g, path("v.sock"), 1);
    auto data = pattern(8192, 3);
    EXPECT_EQ(status_of(g, 0, make_blk_write(*g.mem, 16, data)), blk::kSOk);
    auto rd = make_blk_read(*g.mem, 16, 8192);
    ASSERT_OK(rd);
    EXPECT_EQ(run(g, 0, rd.value()), 8193u);
    EXPECT_TRUE(std::equal(data.begin(), data.end(), rd.value().data().begin()));
}

// A device cannot be added when no server answers: a clear error, no device.
TEST_F(NbdBackendTest, NoServerNoDevice) {
    start_daemon(1, PollMode::kAdaptive);
    auto spec = app::parse_blk_spec("socket=" + path("v.sock") + ",backend=nbd,uri=" + uri());
    ASSERT_OK(spec);
    auto id = daemon_->add_blk(spec.value());
    ASSERT_FALSE(id.ok());
    EXPECT_NE(id.error().describe().find("nbd"), std::string::npos) << id.error().describe();
}

// Hostile servers: whatever the replies, vhostd does not crash or hang; the request fails with
// an I/O error (at the latest after timeout=), and another device on the reactor keeps serving.
class NbdHostileTest : public NbdBackendTest, public ::testing::WithParamInterface<const char*> {};

TEST_P(NbdHostileTest, BrokenRepliesFailTheRequestNotTheDaemon) {
    ServerProcess srv;
    start_hostile(srv, GetParam());
    start_daemon(1, PollMode::kAdaptive);
    auto s = add_blk("socket=" + path("v.sock") + ",backend=nbd,uri=" + uri() + ",queues=1,timeout=1");
    auto other = add_blk("socket=" + path("o.sock") + ",backend=null,size=8M,queues=1");
    Guest g, o;
    connect_guest(g, s, 1);
    connect_guest(o, other, 1);
    const bool lie = std::string(GetParam()) == "lie-size";
    const bool extra = std::string(GetParam()) == "extra-data";
    for (int i = 0; i < 3; ++i) {
        // lie-size: the first MiB reads fine, past it the "disk" fails.
        uint64_t sector = lie ? (4u << 20) / 512 + i * 8 : static_cast<uint64_t>(i) * 8;
        auto rd = make_blk_read(*g.mem, sector, 8192, {.data_segments = 2});
        ASSERT_OK(rd);
        uint8_t st = status_within(g, 0, rd.value(), 15s);
        if (extra) {
            // The read was answered in full before the garbage: it may succeed (the garbage then
            // costs a reconnect), but must not return the garbage.
            EXPECT_TRUE(st == blk::kSOk || st == blk::kSIoErr) << "read " << i << ": status " << int(st);
            if (st == blk::kSOk) {
                auto d = rd.value().data();
                EXPECT_TRUE(std::all_of(d.begin(), d.end(), [](uint8_t b) { return b == 0; })) << "read " << i;
            }
        } else {
            EXPECT_EQ(st, blk::kSIoErr) << "read " << i;
        }
        EXPECT_EQ(status_of(o, 0, make_blk_read(*o.mem, 0, 4096)), blk::kSOk);
    }
    if (lie) {
        EXPECT_EQ(status_within(g, 0, make_blk_read(*g.mem, 0, 4096).value(), 15s), blk::kSOk);
    }
    EXPECT_EQ(status_of(o, 0, make_blk_read(*o.mem, 8, 4096)), blk::kSOk);
}

INSTANTIATE_TEST_SUITE_P(Modes, NbdHostileTest,
                         ::testing::Values("wrong-handle", "bad-magic", "short-close", "huge-chunk", "outside-chunk",
                                           "extra-data", "error", "lie-size", "silent"),
                         [](const auto& info) {
                             std::string n = info.param;
                             std::replace(n.begin(), n.end(), '-', '_');
                             return n;
                         });

}  // namespace
}  // namespace vhostd::testing
