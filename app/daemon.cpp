#include "app/daemon.hpp"

#include "backends/file_backend.hpp"
#include "backends/null_backend.hpp"
#include "backends/tap.hpp"
#include "core/log.hpp"
#include "virtio/blk_device.hpp"
#include "virtio/net_device.hpp"

#include <sys/random.h>

namespace vhostd::app {

Daemon::Daemon(DaemonConfig cfg) : cfg_(std::move(cfg)) {}

Daemon::~Daemon() { stop(); }

Status Daemon::start() {
    for (unsigned i = 0; i < cfg_.threads; ++i) {
        ReactorConfig rc = cfg_.reactor;
        rc.cpu = cfg_.cpus.empty() ? -1 : cfg_.cpus[i % cfg_.cpus.size()];
        auto r = std::make_unique<Reactor>(i, rc);
        VHOSTD_TRY(r->start());
        reactors_.push_back(std::move(r));
    }
    return ok_status();
}

std::vector<Reactor*> Daemon::assign_queues(uint32_t n) {
    // Round-robin across reactors, continuing where the previous device stopped, so queues of
    // many devices spread evenly.
    std::vector<Reactor*> out;
    for (uint32_t i = 0; i < n; ++i) out.push_back(reactors_[next_reactor_++ % reactors_.size()].get());
    return out;
}

Result<std::string> Daemon::add_blk(const BlkSpec& spec) {
    std::shared_ptr<backends::BlockBackend> backend;
    if (spec.backend == "null") {
        backend = std::make_shared<backends::NullBackend>(spec.size, spec.block_size ? spec.block_size : 512,
                                                          spec.readonly);
    } else {
        backends::FileOptions fo{spec.path, spec.readonly, spec.direct, spec.block_size};
        if (spec.submit_batch != 0) fo.submit_batch = spec.submit_batch;
        VHOSTD_ASSIGN_OR_RETURN(auto fb, backends::FileBackend::open(fo));
        backend = std::move(fb);
    }
    std::lock_guard lk(mu_);
    for (auto& [id, d] : devices_) {
        if (d->path() == spec.socket) return make_error(Errc::kInvalid, "socket {} is used by device {}", spec.socket, id);
    }
    std::string id = fmt::format("blk{}", next_blk_id_++);
    std::string desc = backend->info().description;
    virtio::BlkOptions opts{spec.queues, spec.serial.empty() ? id : spec.serial};
    auto dev = std::make_unique<virtio::BlkDevice>(id, std::move(backend), opts, assign_queues(spec.queues));
    auto server = std::make_unique<vhost::SocketServer>(spec.socket, spec.client,
                                                        std::make_unique<vhost::Session>(std::move(dev)));
    VHOSTD_TRY(server->start());
    VLOG_INFO("{}: virtio-blk on {} ({} queues, {}, {})", id, spec.socket, spec.queues, desc,
              spec.client ? "client mode" : "server mode");
    devices_.emplace(id, std::move(server));
    return id;
}

Result<std::string> Daemon::add_net(const NetSpec& spec) {
    std::lock_guard lk(mu_);
    for (auto& [id, d] : devices_) {
        if (d->path() == spec.socket) return make_error(Errc::kInvalid, "socket {} is used by device {}", spec.socket, id);
    }
    if (taps_.count(spec.tap)) return make_error(Errc::kInvalid, "tap {} is used by another device", spec.tap);
    VHOSTD_ASSIGN_OR_RETURN(auto tap, backends::Tap::open(backends::TapOptions{spec.tap, spec.queue_pairs, spec.mtu}));
    bool created = tap->created();
    virtio::NetOptions opts;
    opts.queue_pairs = spec.queue_pairs;
    opts.mtu = spec.mtu;
    opts.mac = spec.mac;
    if (!spec.mac_set) {
        // Random, locally administered, unicast.
        if (::getrandom(opts.mac.data(), opts.mac.size(), 0) != static_cast<ssize_t>(opts.mac.size()))
            return sys_error("getrandom");
        opts.mac[0] = static_cast<uint8_t>((opts.mac[0] & 0xfe) | 0x02);
    }
    std::string id = fmt::format("net{}", next_net_id_++);
    auto dev = std::make_unique<virtio::NetDevice>(id, std::move(tap), opts, assign_queues(spec.queue_pairs));
    uint32_t mtu = dev->mtu();
    auto server = std::make_unique<vhost::SocketServer>(spec.socket, spec.client,
                                                        std::make_unique<vhost::Session>(std::move(dev)));
    VHOSTD_TRY(server->start());
    const auto& m = opts.mac;
    VLOG_INFO("{}: virtio-net on {} ({} queue pairs, tap {} {}, mac {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}, mtu {}, {})",
              id, spec.socket, spec.queue_pairs, spec.tap, created ? "created" : "attached", m[0], m[1], m[2], m[3],
              m[4], m[5], mtu, spec.client ? "client mode" : "server mode");
    devices_.emplace(id, std::move(server));
    taps_[spec.tap] = id;
    return id;
}

Status Daemon::remove_device(const std::string& id) {
    std::unique_ptr<vhost::SocketServer> s;
    {
        std::lock_guard lk(mu_);
        auto it = devices_.find(id);
        if (it == devices_.end()) return make_error(Errc::kInvalid, "no device {}", id);
        s = std::move(it->second);
        devices_.erase(it);
        std::erase_if(taps_, [&](const auto& kv) { return kv.second == id; });
    }
    s->stop();  // drains
    return ok_status();
}

size_t Daemon::device_count() const {
    std::lock_guard lk(mu_);
    return devices_.size();
}

void Daemon::stop() {
    std::map<std::string, std::unique_ptr<vhost::SocketServer>> devs;
    {
        std::lock_guard lk(mu_);
        devs.swap(devices_);
    }
    for (auto& [id, s] : devs) s->stop();
    devs.clear();  // closes the taps: the ones we created go away
    taps_.clear();
    for (auto& r : reactors_) r->stop();
    reactors_.clear();
}

}  // namespace vhostd::app
