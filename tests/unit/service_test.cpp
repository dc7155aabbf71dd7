// The service manager's watchdog: ServiceNotifier::tick pings only while every reactor answers.
// A real NOTIFY_SOCKET datagram socket reads what it sends (tests/systemd_test.sh covers the
// protocol end to end against the vhostd binary).
#include <gtest/gtest.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>

#include "app/daemon.hpp"
#include "app/service.hpp"
#include "core/unique_fd.hpp"

using namespace vhostd;

namespace {

class NotifySocket {
public:
    NotifySocket() {
        char dir[] = "/tmp/vhostd-notify.XXXXXX";
        dir_ = mkdtemp(dir);
        path_ = dir_ + "/notify";
        fd_.reset(socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
        sockaddr_un a{};
        a.sun_family = AF_UNIX;
        snprintf(a.sun_path, sizeof a.sun_path, "%s", path_.c_str());
        EXPECT_EQ(bind(fd_.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    }
    ~NotifySocket() {
        unlink(path_.c_str());
        rmdir(dir_.c_str());
    }
    const std::string& path() const { return path_; }
    // Every datagram that arrives within `ms`, concatenated.
    std::string read_for(int ms) {
        std::string all;
        auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
        for (;;) {
            auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - std::chrono::steady_clock::now());
            if (left.count() <= 0) break;
            pollfd p{fd_.get(), POLLIN, 0};
            if (poll(&p, 1, static_cast<int>(left.count())) <= 0) break;
            char buf[512];
            ssize_t n = recv(fd_.get(), buf, sizeof buf, 0);
            if (n > 0) all.append(buf, static_cast<size_t>(n)).append("|");
        }
        return all;
    }

private:
    std::string dir_, path_;
    UniqueFd fd_;
};

struct EnvGuard {
    ~EnvGuard() {
        unsetenv("NOTIFY_SOCKET");
        unsetenv("WATCHDOG_USEC");
        unsetenv("WATCHDOG_PID");
    }
};

}  // namespace

TEST(ServiceNotifier, WatchdogWithheldWhileAReactorHangs) {
    NotifySocket ns;
    EnvGuard env;
    setenv("NOTIFY_SOCKET", ns.path().c_str(), 1);
    setenv("WATCHDOG_USEC", "400000", 1);  // tick every 200 ms, reactors must answer within 100 ms
    app::DaemonConfig cfg;
    cfg.threads = 2;
    app::Daemon daemon(cfg);
    ASSERT_TRUE(daemon.start().ok());
    app::ServiceNotifier svc;
    ASSERT_TRUE(svc.enabled());
    EXPECT_EQ(svc.tick_interval(), std::chrono::milliseconds(200));

    svc.ready("ok");
    EXPECT_NE(ns.read_for(50).find("READY=1\nSTATUS=ok"), std::string::npos);
    svc.tick(daemon, "ok");
    EXPECT_NE(ns.read_for(50).find("WATCHDOG=1"), std::string::npos) << "healthy reactors: a ping";

    // Reactor 1 is stuck in a task: no ping while it is.
    std::atomic<bool> release{false};
    daemon.reactor(1).post([&] {
        while (!release.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    });
    svc.tick(daemon, "ok");
    svc.tick(daemon, "ok");
    EXPECT_EQ(ns.read_for(50).find("WATCHDOG=1"), std::string::npos) << "pinged with a hung reactor";
    release = true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    svc.tick(daemon, "changed");
    std::string got = ns.read_for(50);
    EXPECT_NE(got.find("WATCHDOG=1"), std::string::npos) << "no ping after the reactor came back";
    EXPECT_NE(got.find("STATUS=changed"), std::string::npos);
    daemon.stop();
}

TEST(ServiceNotifier, NothingWithoutNotifySocket) {
    EnvGuard env;
    unsetenv("NOTIFY_SOCKET");
    setenv("WATCHDOG_USEC", "100000", 1);
    app::ServiceNotifier svc;
    EXPECT_FALSE(svc.enabled());
    EXPECT_EQ(svc.tick_interval(), std::chrono::milliseconds(5000));
}
