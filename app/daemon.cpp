#include "app/daemon.hpp"

#include "backends/file_backend.hpp"
#include "backends/null_backend.hpp"
#include "backends/nbd_backend.hpp"
#include "backends/nvme_backend.hpp"
#include "backends/rbd_backend.hpp"
#include "backends/tap.hpp"
#include "core/log.hpp"
#include "core/unix_group.hpp"
#include "virtio/blk_device.hpp"
#include "virtio/net_device.hpp"

#include <pthread.h>
#include <sys/random.h>

namespace vhostd::app {

namespace {
virtio::QosLimits to_limits(const QosSpec& q) {
    return virtio::QosLimits{q.iops, q.bps, q.read_iops, q.write_iops, q.read_bps, q.write_bps, q.burst_ms};
}
Status apply_access(vhost::SocketServer& server, const SocketAccess& a) {
    gid_t gid = static_cast<gid_t>(-1);
    if (!a.group.empty()) { VHOSTD_ASSIGN_OR_RETURN(gid, lookup_group(a.group)); }
    server.set_access(static_cast<mode_t>(a.effective_mode()), gid);
    return ok_status();
}
}  // namespace

Daemon::Daemon(DaemonConfig cfg) : cfg_(std::move(cfg)) {}

void Daemon::set_tap_opener(TapOpener open) {
    std::lock_guard lk(mu_);
    open_tap_ = std::move(open);
}

Daemon::~Daemon() { stop(); }

Status Daemon::start() {
    for (unsigned i = 0; i < cfg_.threads; ++i) {
        ReactorConfig rc = cfg_.reactor;
        rc.cpu = cfg_.cpus.empty() ? -1 : cfg_.cpus[i % cfg_.cpus.size()];
        auto r = std::make_unique<Reactor>(i, rc);
        VHOSTD_TRY(r->start());
        reactors_.push_back(std::move(r));
    }
    watch_thread_ = std::thread([this] { watch_loop(); });
    return ok_status();
}

void Daemon::size_may_have_changed(const std::string& id) {
    {
        std::lock_guard lk(watch_mu_);
        if (watch_stop_) return;
        watch_pending_.insert(id);
    }
    watch_cv_.notify_one();
}

void Daemon::watch_loop() {
    pthread_setname_np(pthread_self(), "vhostd-watch");
    std::unique_lock lk(watch_mu_);
    while (true) {
        watch_cv_.wait(lk, [&] { return watch_stop_ || !watch_pending_.empty(); });
        if (watch_stop_) return;
        std::string id = std::move(watch_pending_.extract(watch_pending_.begin()).value());
        lk.unlock();
        auto r = resize_device(id, 0, true);
        if (!r.ok())
            VLOG_WARN("{}: re-reading the size after an outside change: {}", id, r.error().describe());
        lk.lock();
    }
}

std::vector<Reactor*> Daemon::assign_queues(uint32_t n) {
    // Round-robin across reactors, continuing where the previous device stopped, so queues of
    // many devices spread evenly.
    std::vector<Reactor*> out;
    for (uint32_t i = 0; i < n; ++i) out.push_back(reactors_[next_reactor_++ % reactors_.size()].get());
    return out;
}

Result<std::string> Daemon::claim_id(const std::string& wanted, const char* prefix, unsigned& counter,
                                     const std::string& socket) const {
    if (reactors_.empty()) return make_error(Errc::kState, "the daemon is not running");
    for (auto& [id, e] : devices_) {
        if (e.server->path() == socket)
            return make_error(Errc::kInvalid, "socket {} is used by device {}", socket, id);
    }
    if (!wanted.empty()) {
        VHOSTD_TRY(check_device_id(wanted));
        if (devices_.count(wanted)) return make_error(Errc::kInvalid, "a device with id '{}' exists", wanted);
        return wanted;
    }
    // The first free name of the series (an operator may have taken one by hand).
    for (unsigned n = 0; n < 1'000'000; ++n) {
        std::string id = fmt::format("{}{}", prefix, counter++);
        if (!devices_.count(id)) return id;
    }
    return make_error(Errc::kState, "no free device id");
}

Result<std::string> Daemon::add_blk(BlkSpec spec, UniqueFd adopt, std::function<void()> on_closed) {
    std::shared_ptr<backends::BlockBackend> backend;
    std::string backend_kind = spec.backend;
    if (spec.backend == "null") {
        backend = std::make_shared<backends::NullBackend>(spec.size, spec.block_size ? spec.block_size : 512,
                                                          spec.readonly);
    } else if (spec.backend == "rbd") {
        backends::RbdOptions ro;
        ro.pool = spec.pool;
        ro.image = spec.image;
        ro.snap = spec.snap;
        ro.conf = spec.conf;
        if (!spec.user.empty()) ro.user = spec.user;
        ro.readonly = spec.readonly;
        ro.block_size = spec.block_size;
        if (spec.timeout_set) ro.timeout_s = spec.timeout;
        VHOSTD_ASSIGN_OR_RETURN(auto rb, backends::RbdBackend::open(ro));
        backend = std::move(rb);
    } else if (spec.backend == "volume") {
        const auto slash = spec.volume.find('/');
        auto svc = pool(spec.volume.substr(0, slash));
        if (!svc) return make_error(Errc::kInvalid, "volume={}: no pool '{}' (import it first)", spec.volume, spec.volume.substr(0, slash));
        VHOSTD_ASSIGN_OR_RETURN(auto vb, svc->attach(spec.volume.substr(slash + 1), spec.readonly));
        backend = std::move(vb);
    } else if (spec.backend == "nvme") {
        VHOSTD_ASSIGN_OR_RETURN(auto nb, backends::NvmeBackend::open(backends::NvmeOptions{spec.path, spec.readonly, spec.fixed}));
        backend = std::move(nb);
    } else if (spec.backend == "nbd") {
        backends::NbdOptions no;
        no.uri = spec.uri;
        no.readonly = spec.readonly;
        no.block_size = spec.block_size;
        if (spec.timeout_set) no.timeout_s = spec.timeout;
        VHOSTD_ASSIGN_OR_RETURN(auto nb, backends::NbdBackend::open(no));
        backend = std::move(nb);
    } else {
        backends::FileOptions fo{spec.path, spec.readonly, spec.direct, spec.block_size};
        if (spec.submit_batch != 0) fo.submit_batch = spec.submit_batch;
        VHOSTD_ASSIGN_OR_RETURN(auto fb, backends::FileBackend::open(fo));
        if (fb->is_block_device()) backend_kind = "block-device";
        backend = std::move(fb);
    }
    std::lock_guard lk(mu_);
    VHOSTD_ASSIGN_OR_RETURN(std::string id, claim_id(spec.id, "blk", next_blk_id_, spec.socket));
    LogScope scope(id.c_str());
    spec.id = id;
    std::string desc = backend->info().description;
    if (Status st = backend->watch_size([this, id] { size_may_have_changed(id); }); !st.ok())
        VLOG_WARN("{}: the size will not follow changes made by others: {}", id, st.error().describe());
    virtio::BlkOptions opts{spec.queues, spec.serial.empty() ? id : spec.serial, to_limits(spec.qos)};
    auto queues = assign_queues(backend->single_reactor() ? 1 : spec.queues);
    queues.resize(spec.queues, queues.front());  // a single-reactor backend: all on the first one
    auto dev = std::make_unique<virtio::BlkDevice>(id, std::move(backend), opts, std::move(queues));
    virtio::BlkDevice* raw = dev.get();
    auto server = std::make_unique<vhost::SocketServer>(spec.socket, spec.client,
                                                        std::make_unique<vhost::Session>(std::move(dev)));
    VHOSTD_TRY(apply_access(*server, spec.access));
    if (adopt) VHOSTD_TRY(server->adopt(std::move(adopt), std::move(on_closed)));
    VHOSTD_TRY(server->start());
    VLOG_INFO("{}: virtio-blk on {} ({} queues, {}, {})", id, spec.socket, spec.queues, desc,
              spec.client ? "client mode" : "server mode");
    Entry e;
    e.kind = "blk";
    e.server = std::move(server);
    e.blk = raw;
    e.blk_spec = std::move(spec);
    e.backend = backend_kind;
    devices_.emplace(id, std::move(e));
    return id;
}

Result<pool::PoolInfo> Daemon::create_pool(const pool::CreateOptions& opts, const std::vector<std::string>& drives) {
    std::lock_guard lk(mu_);
    if (pools_.count(opts.name)) return make_error(Errc::kInvalid, "a pool named '{}' is served already", opts.name);
    VHOSTD_ASSIGN_OR_RETURN(auto disks, pool::Pool::open_disks(drives));
    VHOSTD_ASSIGN_OR_RETURN(auto p, pool::Pool::create(opts, std::move(disks)));
    VHOSTD_ASSIGN_OR_RETURN(auto svc, backends::PoolService::start(std::move(p)));
    auto info = svc->pool().info();
    pools_.emplace(opts.name, PoolEntry{std::move(svc), drives});
    return info;
}

Result<pool::PoolInfo> Daemon::import_pool(const std::vector<std::string>& drives) {
    std::lock_guard lk(mu_);
    for (const auto& [name, e] : pools_) {
        for (const auto& d : drives) {
            if (std::find(e.drives.begin(), e.drives.end(), d) != e.drives.end())
                return make_error(Errc::kInvalid, "{} is a drive of pool '{}', served already", d, name);
        }
    }
    VHOSTD_ASSIGN_OR_RETURN(auto disks, pool::Pool::open_disks(drives));
    VHOSTD_ASSIGN_OR_RETURN(auto p, pool::Pool::import(std::move(disks)));
    if (pools_.count(p->name())) return make_error(Errc::kInvalid, "a pool named '{}' is served already", p->name());
    // The drives in member order, so the config document names them the same way every time.
    std::vector<std::string> ordered;
    for (size_t i = 0; i < p->superblock().members.size(); ++i) ordered.push_back(p->disk(i).path());
    VHOSTD_ASSIGN_OR_RETURN(auto svc, backends::PoolService::start(std::move(p)));
    auto info = svc->pool().info();
    pools_.emplace(info.name, PoolEntry{std::move(svc), ordered});
    return info;
}

std::shared_ptr<backends::PoolService> Daemon::pool(const std::string& name) const {
    std::lock_guard lk(mu_);
    auto it = pools_.find(name);
    return it == pools_.end() ? nullptr : it->second.svc;
}

std::vector<Daemon::PoolEntry> Daemon::pools() const {
    std::lock_guard lk(mu_);
    std::vector<PoolEntry> out;
    for (const auto& [n, e] : pools_) out.push_back(e);
    return out;
}

std::optional<std::string> Daemon::device_of_volume(const std::string& volume) const {
    std::lock_guard lk(mu_);
    for (const auto& [id, e] : devices_) {
        if (e.blk_spec && e.blk_spec->backend == "volume" && e.blk_spec->volume == volume) return id;
    }
    return std::nullopt;
}

Result<std::string> Daemon::add_net(NetSpec spec, UniqueFd adopt, std::function<void()> on_closed) {
    std::lock_guard lk(mu_);
    VHOSTD_ASSIGN_OR_RETURN(std::string id, claim_id(spec.id, "net", next_net_id_, spec.socket));
    LogScope scope(id.c_str());
    if (taps_.count(spec.tap)) return make_error(Errc::kInvalid, "tap {} is used by device {}", spec.tap, taps_[spec.tap]);
    const backends::TapOptions topts{spec.tap, spec.queue_pairs, spec.mtu};
    VHOSTD_ASSIGN_OR_RETURN(auto tap, open_tap_ ? open_tap_(topts) : backends::Tap::open(topts));
    bool created = tap->created();
    virtio::NetOptions opts;
    opts.queue_pairs = spec.queue_pairs;
    opts.mtu = spec.mtu;
    opts.mac = spec.mac;
    if (!spec.mac_set) {
        // Random, locally administered, unicast; kept in the spec so that save_config keeps it.
        if (::getrandom(opts.mac.data(), opts.mac.size(), 0) != static_cast<ssize_t>(opts.mac.size()))
            return sys_error("getrandom");
        opts.mac[0] = static_cast<uint8_t>((opts.mac[0] & 0xfe) | 0x02);
        spec.mac = opts.mac;
        spec.mac_set = true;
    }
    spec.id = id;
    auto dev = std::make_unique<virtio::NetDevice>(id, std::move(tap), opts, assign_queues(spec.queue_pairs));
    virtio::NetDevice* raw = dev.get();
    uint32_t mtu = dev->mtu();
    auto server = std::make_unique<vhost::SocketServer>(spec.socket, spec.client,
                                                        std::make_unique<vhost::Session>(std::move(dev)));
    VHOSTD_TRY(apply_access(*server, spec.access));
    if (adopt) VHOSTD_TRY(server->adopt(std::move(adopt), std::move(on_closed)));
    VHOSTD_TRY(server->start());
    const auto& m = opts.mac;
    VLOG_INFO("{}: virtio-net on {} ({} queue pairs, tap {} {}, mac {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}, mtu {}, {})",
              id, spec.socket, spec.queue_pairs, spec.tap, created ? "created" : "attached", m[0], m[1], m[2], m[3],
              m[4], m[5], mtu, spec.client ? "client mode" : "server mode");
    taps_[spec.tap] = id;
    Entry e;
    e.kind = "net";
    e.server = std::move(server);
    e.net = raw;
    e.net_spec = std::move(spec);
    e.backend = "tap";
    devices_.emplace(id, std::move(e));
    return id;
}

Status Daemon::remove_device(const std::string& id) {
    LogScope scope(id.c_str());
    Entry e;
    {
        std::lock_guard lk(mu_);
        auto it = devices_.find(id);
        if (it == devices_.end()) return make_error(Errc::kInvalid, "no device '{}'", id);
        e = std::move(it->second);
        devices_.erase(it);
        std::erase_if(taps_, [&](const auto& kv) { return kv.second == id; });
    }
    // Outside the lock: the drain may take a moment and the registry stays usable meanwhile.
    e.server->stop();  // disconnects the frontend, drains the queues, unlinks the socket
    e.server.reset();  // the session, the device, the backend and their fds go
    VLOG_INFO("{}: removed", id);
    return ok_status();
}

Result<Daemon::ResizeResult> Daemon::resize_device(const std::string& id, uint64_t new_size) {
    return resize_device(id, new_size, false);
}

Result<Daemon::ResizeResult> Daemon::resize_device(const std::string& id, uint64_t new_size, bool external) {
    LogScope scope(id.c_str());
    std::lock_guard lk(mu_);
    auto it = devices_.find(id);
    if (it == devices_.end()) {
        if (external) return ResizeResult{};  // removed meanwhile: nothing to follow
        return make_error(Errc::kInvalid, "no device '{}'", id);
    }
    Entry& e = it->second;
    if (e.blk == nullptr) return make_error(Errc::kInvalid, "device '{}' is a {} device: only blk devices resize", id, e.kind);
    ResizeResult out;
    out.old_size = e.blk->size_bytes();
    auto r = e.server->session().exclusive([&](virtio::VirtioDevice&) { return e.blk->resize(new_size); });
    if (!r.ok()) return std::move(r).take_error();
    out.size = *r;
    if (external && out.size == out.old_size) return out;  // (a header update that was not a resize)
    if (e.blk_spec->backend == "null") e.blk_spec->size = out.size;  // a restart brings the new size back
    // The frontend re-reads the config space (GET_CONFIG, on the session's thread) while it
    // handles this message, so this runs outside exclusive().
    Status st = e.server->session().notify_config_change();
    out.notified = st.ok();
    if (!st.ok()) {
        out.note = st.error().context;
        if (st.error().code != Errc::kState) VLOG_WARN("{}: telling the frontend about the new size: {}", id, st.error().describe());
    }
    if (external)
        VLOG_INFO("{}: the storage's size was changed from outside: {} -> {} bytes ({})", id, out.old_size, out.size,
                  out.notified ? "the guest was told" : out.note);
    return out;
}

Status Daemon::set_qos(const std::string& id, const QosSpec& qos) {
    LogScope scope(id.c_str());
    std::lock_guard lk(mu_);
    auto it = devices_.find(id);
    if (it == devices_.end()) return make_error(Errc::kInvalid, "no device '{}'", id);
    Entry& e = it->second;
    if (e.blk == nullptr) return make_error(Errc::kInvalid, "device '{}' is a {} device: QoS applies to blk devices", id, e.kind);
    e.blk->set_qos(to_limits(qos));
    e.blk_spec->qos = qos;
    return ok_status();
}

DeviceInfo Daemon::describe(const std::string& id, const Entry& e) const {
    DeviceInfo d;
    d.id = id;
    d.kind = e.kind;
    d.socket = e.server->path();
    d.client = e.server->client_mode();
    d.backend = e.backend;
    d.frontend = e.server->peer();
    d.queues_running = e.server->session().exclusive([](virtio::VirtioDevice& dev) {
        uint32_t n = 0;
        for (uint32_t i = 0; i < dev.num_queues(); ++i) n += dev.queue_running(i) ? 1 : 0;
        return n;
    });
    if (e.blk != nullptr) {
        const BlkSpec& s = *e.blk_spec;
        d.target = s.backend == "volume" ? s.volume
                   : s.backend == "nbd" ? s.uri
                   : s.backend == "rbd" ? fmt::format("{}/{}{}{}", s.pool, s.image, s.snap.empty() ? "" : "@", s.snap)
                                          : s.path;
        d.size = e.blk->size_bytes();
        d.block_size = e.blk->limits().block_size;
        d.readonly = s.readonly;
        d.queues = e.blk->num_queues();
        d.qos = s.qos;
        d.keys = to_keys(s);
    } else {
        const NetSpec& s = *e.net_spec;
        d.target = s.tap;
        d.queues = e.net->num_queues();
        d.keys = to_keys(s);
    }
    if (d.queues_running > 0) d.state = "running";
    else if (d.frontend.connected) d.state = "connected";
    else d.state = d.client ? "connecting" : "listening";
    return d;
}

std::vector<DeviceInfo> Daemon::list() const {
    std::lock_guard lk(mu_);
    std::vector<DeviceInfo> out;
    for (auto& [id, e] : devices_) out.push_back(describe(id, e));
    return out;
}

Result<DeviceInfo> Daemon::info(const std::string& id) const {
    std::lock_guard lk(mu_);
    auto it = devices_.find(id);
    if (it == devices_.end()) return make_error(Errc::kInvalid, "no device '{}'", id);
    return describe(id, it->second);
}

Status Daemon::with_blk(const std::string& id, const std::function<void(virtio::BlkDevice&)>& fn) const {
    std::lock_guard lk(mu_);
    auto it = devices_.find(id);
    if (it == devices_.end()) return make_error(Errc::kInvalid, "no device '{}'", id);
    if (it->second.blk == nullptr) return make_error(Errc::kInvalid, "device '{}' is not a blk device", id);
    fn(*it->second.blk);
    return ok_status();
}

Status Daemon::with_net(const std::string& id, const std::function<void(virtio::NetDevice&)>& fn) const {
    std::lock_guard lk(mu_);
    auto it = devices_.find(id);
    if (it == devices_.end()) return make_error(Errc::kInvalid, "no device '{}'", id);
    if (it->second.net == nullptr) return make_error(Errc::kInvalid, "device '{}' is not a net device", id);
    fn(*it->second.net);
    return ok_status();
}

std::vector<ReactorStats> Daemon::reactor_stats() const {
    std::lock_guard lk(mu_);
    std::vector<ReactorStats> out;
    for (const auto& r : reactors_) out.push_back(r->stats());
    return out;
}

size_t Daemon::device_count() const {
    std::lock_guard lk(mu_);
    return devices_.size();
}

void Daemon::stop() {
    {
        std::lock_guard lk(watch_mu_);
        watch_stop_ = true;
    }
    watch_cv_.notify_all();
    if (watch_thread_.joinable()) watch_thread_.join();
    std::map<std::string, Entry> devs;
    {
        std::lock_guard lk(mu_);
        devs.swap(devices_);
        taps_.clear();
    }
    for (auto& [id, e] : devs) e.server->stop();
    devs.clear();  // closes the taps: the ones we created go away
    std::map<std::string, PoolEntry> pools;
    {
        std::lock_guard lk(mu_);
        pools.swap(pools_);
    }
    for (auto& [name, p] : pools) p.svc->close();  // a checkpoint each
    pools.clear();
    for (auto& r : reactors_) r->stop();
    reactors_.clear();
}

}  // namespace vhostd::app
