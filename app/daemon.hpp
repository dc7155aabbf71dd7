// The daemon: reactors plus a registry of devices, each served on its own socket. The registry
// is keyed by an id so that a management API can add and remove devices at runtime.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "app/device_spec.hpp"
#include "reactor/reactor.hpp"
#include "vhost/server.hpp"

namespace vhostd::app {

struct DaemonConfig {
    unsigned threads = 1;
    ReactorConfig reactor;
    std::vector<int> cpus;  // reactor i is pinned to cpus[i % size] if not empty
};

class Daemon {
public:
    explicit Daemon(DaemonConfig cfg);
    ~Daemon();

    Status start();
    // Adds a device and starts serving its socket. Returns its id.
    Result<std::string> add_blk(const BlkSpec& spec);
    Result<std::string> add_net(const NetSpec& spec);
    Status remove_device(const std::string& id);
    // Stops every device (each drains its in-flight I/O), then the reactors.
    void stop();

    size_t device_count() const;
    Reactor& reactor(size_t i) { return *reactors_.at(i); }
    size_t reactor_count() const { return reactors_.size(); }

private:
    std::vector<Reactor*> assign_queues(uint32_t n);

    DaemonConfig cfg_;
    std::vector<std::unique_ptr<Reactor>> reactors_;
    mutable std::mutex mu_;  // registry only (control plane)
    std::map<std::string, std::unique_ptr<vhost::SocketServer>> devices_;
    unsigned next_reactor_ = 0;
    std::map<std::string, std::string> taps_;  // tap name -> device id
    unsigned next_blk_id_ = 0;
    unsigned next_net_id_ = 0;
};

}  // namespace vhostd::app
