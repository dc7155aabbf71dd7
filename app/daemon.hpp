// The daemon: reactors plus a registry of devices, each served on its own socket. Devices are
// added and removed at runtime (flags at start-up, the management API later), by id.
//
// Threading: the registry is the control plane's. Calls come from the main thread (start-up,
// shutdown) and the management API's thread; a mutex keeps them apart. A device's own control
// thread (vhost/server.cpp) and its reactors never take that mutex, so a slow call here (a
// drain, a frontend that answers slowly) never pauses another device's I/O.
#pragma once

#include <condition_variable>
#include <functional>
#include <set>
#include <thread>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "app/device_spec.hpp"
#include "backends/pool_backend.hpp"
#include "backends/tap.hpp"
#include "reactor/reactor.hpp"
#include "vhost/server.hpp"

namespace vhostd::virtio {
class BlkDevice;
class NetDevice;
}  // namespace vhostd::virtio

namespace vhostd::app {

struct DaemonConfig {
    unsigned threads = 1;
    ReactorConfig reactor;
    std::vector<int> cpus;  // reactor i is pinned to cpus[i % size] if not empty
};

// What device_list reports about one device.
struct DeviceInfo {
    std::string id;
    std::string kind;     // "blk" | "net"
    std::string socket;
    bool client = false;  // we connect to the socket (QEMU server=on)
    std::string backend;  // "file" | "block-device" | "null" | "nbd" | "tap"
    std::string target;   // the file/device path or the tap name
    uint64_t size = 0;    // blk: bytes the guest sees
    uint32_t block_size = 0;
    bool readonly = false;
    uint32_t queues = 0;  // vrings (net: 2 per queue pair)
    uint32_t queues_running = 0;
    std::string state;    // "listening" | "connecting" | "connected" | "running"
    vhost::SocketServer::Peer frontend;
    QosSpec qos;
    KeyMap keys;          // the spec as device keys (what save_config writes)
};

class Daemon {
public:
    explicit Daemon(DaemonConfig cfg);
    ~Daemon();

    Status start();
    // How net devices open their tap (default: backends::Tap::open on the calling thread). After
    // --user's switch only one thread may create or attach a tap (privileges::PrivilegedHelper).
    using TapOpener = std::function<Result<std::unique_ptr<backends::Tap>>(const backends::TapOptions&)>;
    void set_tap_opener(TapOpener open);
    // Adds a device and starts serving its socket. Returns its id. With `adopt`, the device
    // serves that socket (handed over by a launcher) instead of spec.socket, which then only
    // names it; see SocketServer::adopt for `on_closed`.
    Result<std::string> add_blk(BlkSpec spec, UniqueFd adopt = {}, std::function<void()> on_closed = {});
    Result<std::string> add_net(NetSpec spec, UniqueFd adopt = {}, std::function<void()> on_closed = {});
    // Drains in-flight I/O, disconnects the frontend, closes every fd, unlinks the socket.
    Status remove_device(const std::string& id);
    // Makes a blk device new_size bytes (0: a block device re-reads its size), then tells the
    // frontend (a config change on the backend channel). Returns the new size; `notified` says
    // whether the frontend was told (false: no frontend, or one without the backend channel).
    struct ResizeResult {
        uint64_t old_size = 0;
        uint64_t size = 0;
        bool notified = false;
        std::string note;  // why not notified
    };
    Result<ResizeResult> resize_device(const std::string& id, uint64_t new_size);
    // Someone else may have changed a blk device's size (its backend's watch said so): the size
    // is re-read on the daemon's watch thread and the frontend told if it changed. Any thread,
    // never blocks; repeated calls before the thread gets to it coalesce.
    void size_may_have_changed(const std::string& id);
    Status set_qos(const std::string& id, const QosSpec& qos);

    std::vector<DeviceInfo> list() const;
    Result<DeviceInfo> info(const std::string& id) const;
    // Runs fn with the device under the registry lock (stats: fn reads the device's counters).
    // Errc::kInvalid if there is no such device.
    Status with_blk(const std::string& id, const std::function<void(virtio::BlkDevice&)>& fn) const;
    Status with_net(const std::string& id, const std::function<void(virtio::NetDevice&)>& fn) const;

    // Pools (volumes attach as blk devices with backend "volume"). A pool is made or assembled
    // from its drives, then served until stop(); `drives` is kept for the config document.
    Result<pool::PoolInfo> create_pool(const pool::CreateOptions& opts, const std::vector<std::string>& drives);
    Result<pool::PoolInfo> import_pool(const std::vector<std::string>& drives);
    std::shared_ptr<backends::PoolService> pool(const std::string& name) const;
    struct PoolEntry {
        std::shared_ptr<backends::PoolService> svc;
        std::vector<std::string> drives;
    };
    std::vector<PoolEntry> pools() const;
    // The blk device a volume ("POOL/NAME") is attached to, if any.
    std::optional<std::string> device_of_volume(const std::string& volume) const;

    // Stops every device (each drains its in-flight I/O), then the pools, then the reactors.
    void stop();

    size_t device_count() const;
    const DaemonConfig& config() const { return cfg_; }
    Reactor& reactor(size_t i) { return *reactors_.at(i); }
    size_t reactor_count() const { return reactors_.size(); }
    std::vector<ReactorStats> reactor_stats() const;

private:
    struct Entry {
        std::string kind;
        std::unique_ptr<vhost::SocketServer> server;
        virtio::BlkDevice* blk = nullptr;  // owned by server's session
        virtio::NetDevice* net = nullptr;
        std::optional<BlkSpec> blk_spec;
        std::optional<NetSpec> net_spec;
        std::string backend;  // as DeviceInfo::backend
    };
    std::vector<Reactor*> assign_queues(uint32_t n);
    Result<ResizeResult> resize_device(const std::string& id, uint64_t new_size, bool external);
    void watch_loop();
    // Under mu_: the socket is free and the id is free (a given one) or a fresh one.
    Result<std::string> claim_id(const std::string& wanted, const char* prefix, unsigned& counter,
                                 const std::string& socket) const;
    DeviceInfo describe(const std::string& id, const Entry& e) const;

    DaemonConfig cfg_;
    std::vector<std::unique_ptr<Reactor>> reactors_;
    mutable std::mutex mu_;  // registry only (control plane)
    std::map<std::string, Entry> devices_;
    unsigned next_reactor_ = 0;
    std::map<std::string, std::string> taps_;  // tap name -> device id
    TapOpener open_tap_;                        // under mu_
    std::map<std::string, PoolEntry> pools_;  // by name, under mu_
    unsigned next_blk_id_ = 0;
    unsigned next_net_id_ = 0;
    // The watch thread: re-reads sizes that others changed (size_may_have_changed), off the
    // threads that report them (a library's callback thread must not wait for a drain).
    std::thread watch_thread_;
    std::mutex watch_mu_;
    std::condition_variable watch_cv_;
    std::set<std::string> watch_pending_;
    bool watch_stop_ = false;
};

}  // namespace vhostd::app
