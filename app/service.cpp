#include "app/service.hpp"

#include <systemd/sd-daemon.h>

#include <atomic>
#include <memory>
#include <thread>

#include "core/log.hpp"

namespace vhostd::app {

ServiceNotifier::ServiceNotifier() {
    const char* sock = getenv("NOTIFY_SOCKET");
    enabled_ = sock != nullptr && *sock != '\0';
    uint64_t usec = 0;
    // > 0: WATCHDOG_USEC is set (and WATCHDOG_PID, if set, is us).
    if (enabled_ && sd_watchdog_enabled(0, &usec) > 0 && usec > 0) {
        watchdog_ = true;
        tick_ = std::max(std::chrono::milliseconds(1), std::chrono::milliseconds(usec / 2000));
        VLOG_INFO("service manager watchdog every {} ms", usec / 1000);
    }
}

namespace {
void notify(bool enabled, const std::string& msg) {
    if (!enabled) return;
    int r = sd_notify(0, msg.c_str());
    if (r < 0) VLOG_WARN("sd_notify: {}", strerror(-r));
}
}  // namespace

void ServiceNotifier::ready(const std::string& status) {
    last_status_ = status;
    notify(enabled_, "READY=1\nSTATUS=" + status);
}

void ServiceNotifier::status(const std::string& status) {
    if (status == last_status_) return;
    last_status_ = status;
    notify(enabled_, "STATUS=" + status);
}

void ServiceNotifier::stopping(const std::string& status) {
    last_status_ = status;
    notify(enabled_, "STOPPING=1\nSTATUS=" + status);
}

void ServiceNotifier::tick(Daemon& daemon, const std::string& st) {
    if (!enabled_) return;
    status(st);
    if (!watchdog_) return;
    // Every reactor must run a posted task within half the interval. The tasks hold the counter
    // by shared_ptr: a reactor that answers late finds it still there.
    auto answered = std::make_shared<std::atomic<size_t>>(0);
    const size_t n = daemon.reactor_count();
    for (size_t i = 0; i < n; ++i) daemon.reactor(i).post([answered] { answered->fetch_add(1); });
    auto deadline = std::chrono::steady_clock::now() + tick_ / 2;
    while (answered->load() < n && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    if (answered->load() < n) {
        VLOG_ERROR("{} of {} reactor(s) did not answer within {} ms: withholding the watchdog ping",
                   n - answered->load(), n, (tick_ / 2).count());
        return;
    }
    notify(true, "WATCHDOG=1");
}

std::string service_status(const Daemon& daemon) {
    size_t blk = 0, net = 0, connected = 0;
    for (const auto& d : daemon.list()) {
        (d.kind == "blk" ? blk : net)++;
        connected += d.frontend.connected ? 1 : 0;
    }
    return fmt::format("{} device(s) ({} blk, {} net), {} frontend(s) connected, {} reactor(s)", blk + net, blk, net,
                       connected, daemon.reactor_count());
}

}  // namespace vhostd::app
