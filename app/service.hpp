// Supervision by a service manager (systemd's notify protocol, through libsystemd's sd_notify):
// READY=1 once every configured device listens and the API and metrics sockets are up, STATUS=
// with what is served, STOPPING=1 when a drain starts, and WATCHDOG=1 while every reactor still
// answers. With no NOTIFY_SOCKET in the environment every call does nothing.
#pragma once

#include <chrono>
#include <string>

#include "app/daemon.hpp"

namespace vhostd::app {

class ServiceNotifier {
public:
    ServiceNotifier();

    bool enabled() const { return enabled_; }
    // How often the main loop must call tick(): half the watchdog interval when WatchdogSec is
    // set (WATCHDOG_USEC), else every few seconds for STATUS=.
    std::chrono::milliseconds tick_interval() const { return tick_; }

    void ready(const std::string& status);
    void status(const std::string& status);
    void stopping(const std::string& status);
    // Sends WATCHDOG=1 if every reactor of `daemon` runs a posted task within the tick interval;
    // a hung reactor withholds it, so the manager restarts vhostd. Refreshes STATUS= when it changed.
    void tick(Daemon& daemon, const std::string& status);

private:
    bool enabled_ = false;
    bool watchdog_ = false;
    std::chrono::milliseconds tick_{5000};
    std::string last_status_;
};

// "3 device(s) (2 blk, 1 net), 1 frontend(s) connected, 2 reactor(s)".
std::string service_status(const Daemon& daemon);

}  // namespace vhostd::app
