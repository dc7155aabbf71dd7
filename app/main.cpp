// vhostd: a vhost-user device backend. Parses flags, starts reactors, the devices of the
// command line and the config file, and the management API; waits for SIGINT/SIGTERM, then
// stops the API and every device (draining in-flight I/O) and exits.
#include <sys/resource.h>
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <cstring>
#include <functional>
#include <optional>
#include <string_view>
#include <thread>

#include "app/daemon.hpp"
#include "app/device_spec.hpp"
#include "app/management.hpp"
#include "app/metrics.hpp"
#include "app/service.hpp"
#include "core/fault.hpp"
#include "core/log.hpp"
#include "core/privileges.hpp"
#include "core/sandbox.hpp"
#include "rpc/server.hpp"

using namespace vhostd;

int main(int argc, char** argv) {
    CLI::App cli{"vhostd - vhost-user virtio-blk and virtio-net backend driven by io_uring polling reactors"};
    std::vector<std::string> blk_specs;
    std::vector<std::string> net_specs;
    unsigned hw = std::max(1u, std::thread::hardware_concurrency());
    unsigned threads = std::clamp(hw / 2, 1u, 4u);
    std::string poll = "adaptive";
    unsigned poll_us = 50;
    unsigned nap_us = 200;
    unsigned park_us = 50;
    std::string cpus;
    std::string log_level = "info";
    std::string log_format = "text";
    std::string rpc_path;
    std::string rpc_group;
    std::string run_as;
    std::string config_file;
    std::string metrics_addr;
    // QEMU's backend program conventions (docs/interop/vhost-user.rst): one disk per process.
    std::string socket_path;
    int given_fd = -1;
    std::string blk_file;
    std::string tap;
    unsigned conv_queues = 0;
    bool read_only = false;
    bool print_caps = false;
#ifdef VHOSTD_SANITIZED
    std::string sandbox = "off";  // ASan reports exec llvm-symbolizer, LeakSanitizer ptraces us
#else
    std::string sandbox = "on";
#endif
    // Installed a second time as vhostd-net (the net descriptor's binary): its capabilities are
    // those of a net backend. Everything else is the same program.
    std::string_view self = argv[0];
    if (auto slash = self.rfind('/'); slash != std::string_view::npos) self.remove_prefix(slash + 1);
    const bool net_persona = self == "vhostd-net";
    cli.set_version_flag("--version", std::string("vhostd ") + VHOSTD_VERSION);
    cli.add_option("--blk", blk_specs,
                   "virtio-blk device on a file or block device: "
                   "socket=PATH,path=FILE[,id=NAME][,queues=N][,readonly=on][,direct=on][,block-size=512|4096]"
                   "[,serial=ID][,submit-batch=N][,client=on]  or an NVMe namespace through passthrough: "
                   "socket=PATH,backend=nvme,path=/dev/ngXnY[,id=NAME][,queues=N][,readonly=on][,fixed=on (guest memory as fixed buffers)][,serial=ID][,client=on]"
                   "  or a null device: "
                   "socket=PATH,backend=null,size=SIZE[,id=NAME][,queues=N][,readonly=on][,block-size=512|4096]"
                   "[,serial=ID][,client=on]  or a remote NBD export: "
                   "socket=PATH,backend=nbd,uri=nbd://HOST[:PORT]/EXPORT|nbd+unix:///EXPORT?socket=PATH|nbds://..."
                   "[,timeout=SECS (30; 0: wait forever for the server)][,id=NAME][,queues=N][,readonly=on]"
                   "[,block-size=512|4096][,serial=ID][,client=on]  or a Ceph RBD image: "
                   "socket=PATH,backend=rbd,pool=POOL,image=IMAGE[,snap=SNAP (read-only)][,conf=CEPH.CONF]"
                   "[,user=CEPHX-USER (admin)][,timeout=SECS][,id=NAME][,queues=N][,readonly=on][,block-size=512|4096]"
                   "[,serial=ID][,client=on];  QoS limits on any (0: none): [,iops=N][,bps=RATE]"
                   "[,read-iops=N][,write-iops=N][,read-bps=RATE][,write-bps=RATE][,burst-ms=MS]"
                   " (RATE in bytes/s, K/M/G suffixes);  who may connect (any, not client=on):"
                   " [,socket-mode=OCTAL (0600; 0660 with a group)][,socket-group=GROUP]")
        ->take_all();
    std::vector<std::string> pool_specs;
    cli.add_option("--pool", pool_specs,
                   "serve a pool (made with pool_create / vhostctl pool create): drives=A:B:C, all of its drives in "
                   "any order; its volumes attach with --blk socket=...,volume=POOL/NAME (repeatable)");
    cli.add_option("--net", net_specs,
                   "virtio-net device on a tap: socket=PATH,tap=NAME[,id=NAME][,queues=PAIRS][,mac=MAC][,mtu=N]"
                   "[,client=on][,socket-mode=OCTAL][,socket-group=GROUP]")
        ->take_all();
    cli.add_option("--threads", threads, "number of reactor threads")->check(CLI::Range(1u, 256u))->capture_default_str();
    cli.add_option("--poll", poll, "polling mode: always | adaptive | never")
        ->check(CLI::IsMember({"always", "adaptive", "never"}))
        ->capture_default_str();
    cli.add_option("--poll-us", poll_us, "adaptive mode: busy-poll this many microseconds after the last work")
        ->check(CLI::Range(0u, 1000000u))
        ->capture_default_str();
    cli.add_option("--poll-nap-us", nap_us,
                   "adaptive mode: longest nap on a steady sparse request stream (0: never nap)")
        ->check(CLI::Range(0u, 10000u))
        ->capture_default_str();
    cli.add_option("--park-us", park_us,
                   "a virtqueue idle this many microseconds leaves the reactor's busy-poll set and waits for its "
                   "kick (every mode; never: at once; 0: queues never park)")
        ->check(CLI::Range(0u, 10000000u))
        ->capture_default_str();
    cli.add_option("--sandbox", sandbox,
                   "on: system calls outside each thread kind's seccomp allowlist kill the process (SIGSYS, "
                   "the call named on stderr) and each reactor's io_uring carries only the operations vhostd "
                   "uses; log: such calls run and the kernel logs them (audit type=1326), rings unrestricted "
                   "(for finding what a new feature needs); off: neither")
        ->check(CLI::IsMember({"on", "log", "off"}))
        ->capture_default_str();
    cli.add_option("--user", run_as,
                   "run as USER[:GROUP] (names or numbers) once the devices of the command line and the config "
                   "file, the management and metrics sockets are open (USER: not root; best a dedicated account). No "
                   "capability is kept, except CAP_NET_ADMIN on one helper thread when --rpc may add net devices");
    cli.add_option("--cpus", cpus, "pin reactors to these CPUs, e.g. 2,3 or 0-3 (reactor i -> entry i mod the list's length)");
    cli.add_option("--rpc", rpc_path,
                   "serve the management API (JSON-RPC 2.0, one object per line; vhostctl) on this unix socket; "
                   "--rpc alone: /run/vhostd/vhostd.sock")
        ->expected(0, 1)
        ->default_str("/run/vhostd/vhostd.sock");
    cli.add_option("--rpc-group", rpc_group, "the management socket is 0660 for this group (default 0600)");
    cli.add_option("--config", config_file,
                   "add the devices of this config document at start (the JSON that save_config / vhostctl "
                   "save-config writes)");
    cli.add_option("--metrics", metrics_addr,
                   "serve Prometheus metrics on http://ADDR:PORT/metrics: PORT, ADDR:PORT or [IPV6]:PORT "
                   "(a bare port: loopback); --metrics alone: " + std::string(app::kDefaultMetricsAddress))
        ->expected(0, 1)
        ->default_str(app::kDefaultMetricsAddress);
    auto* conv = "QEMU vhost-user backend program conventions (one device per process: --blk-file or --tap)";
    cli.add_option("--socket-path", socket_path, "listen on this vhost-user socket")->group(conv);
    cli.add_option("--fd", given_fd,
                   "serve the vhost-user socket inherited as this fd, listening or connected; a connected one is "
                   "served once, then vhostd exits")
        ->check(CLI::Range(0, 1 << 20))
        ->group(conv);
    cli.add_option("--blk-file", blk_file, "a virtio-blk device on this disk: a regular file or a block device")
        ->group(conv);
    cli.add_flag("--read-only", read_only, "the --blk-file disk is read-only")->group(conv);
    cli.add_option("--tap", tap, "a virtio-net device on this tap (created if missing)")->group(conv);
    cli.add_option("--queues", conv_queues, "the device's queues (blk) or queue pairs (net); default as --blk/--net")
        ->check(CLI::Range(1u, 256u))
        ->group(conv);
    cli.add_flag("--print-capabilities", print_caps,
                 "print the backend's capabilities as JSON and exit (block; net when run as vhostd-net)")
        ->group(conv);
    cli.add_option("--log-level", log_level, "trace | debug | info | warn | error | off")->capture_default_str();
    cli.add_option("--log-format", log_format,
                   "text, or json: one object per line (time, level, thread, device, queue, message)")
        ->check(CLI::IsMember({"text", "json"}))
        ->capture_default_str();
    CLI11_PARSE(cli, argc, argv);

    if (print_caps) {
        // VHostUserBackendCapabilities (QEMU docs/interop/vhost-user.json): the block branch, or
        // the bare type for net (the schema defines no net features).
        if (net_persona)
            fmt::print("{{\n  \"type\": \"net\"\n}}\n");
        else
            fmt::print("{{\n  \"type\": \"block\",\n  \"features\": [\n    \"read-only\",\n    \"blk-file\"\n  ]\n}}\n");
        return 0;
    }
    if (!socket_path.empty() && given_fd >= 0) {
        fmt::print(stderr, "vhostd: --socket-path and --fd exclude each other\n");
        return 2;
    }
    if (!blk_file.empty() && !tap.empty()) {
        fmt::print(stderr, "vhostd: --blk-file and --tap exclude each other (one device per process)\n");
        return 2;
    }
    const bool single = !blk_file.empty() || !tap.empty();
    if ((!socket_path.empty() || given_fd >= 0) != single) {
        fmt::print(stderr, "vhostd: --blk-file or --tap needs --socket-path or --fd, and they need one of them\n");
        return 2;
    }
    if (read_only && blk_file.empty()) {
        fmt::print(stderr, "vhostd: --read-only applies to --blk-file\n");
        return 2;
    }
    if (conv_queues != 0 && !single) {
        fmt::print(stderr, "vhostd: --queues applies to --blk-file or --tap\n");
        return 2;
    }
    const std::string conv_socket = given_fd >= 0 ? "fd:" + std::to_string(given_fd) : socket_path;
    set_log_format(log_format);
    if (!set_log_level(log_level)) {
        fmt::print(stderr, "vhostd: unknown log level '{}'\n", log_level);
        return 2;
    }
    if (auto st = fault::arm_from_env(); !st.ok()) {
        fmt::print(stderr, "vhostd: {}\n", st.error().describe());
        return 2;
    }
    if (cli.count("--rpc") > 0 && rpc_path.empty()) rpc_path = "/run/vhostd/vhostd.sock";
    if (cli.count("--metrics") > 0 && metrics_addr.empty()) metrics_addr = app::kDefaultMetricsAddress;
    if (!metrics_addr.empty()) {
        if (auto a = app::parse_metrics_address(metrics_addr); !a.ok()) {
            fmt::print(stderr, "vhostd: --metrics: {}\n", a.error().context);
            return 2;
        }
    }
    if (!rpc_group.empty() && rpc_path.empty()) {
        fmt::print(stderr, "vhostd: --rpc-group needs --rpc\n");
        return 2;
    }
    std::vector<std::vector<std::string>> pool_drives;
    for (const auto& p : pool_specs) {
        if (p.rfind("drives=", 0) != 0 || p.size() == 7 || p.find(',') != std::string::npos) {
            fmt::print(stderr, "vhostd: --pool {}: expected drives=PATH[:PATH...]\n", p);
            return 2;
        }
        std::vector<std::string> drives;
        for (size_t at = 7; at <= p.size();) {
            size_t colon = p.find(':', at);
            if (colon == std::string::npos) colon = p.size();
            if (colon == at) {
                fmt::print(stderr, "vhostd: --pool {}: an empty drive path\n", p);
                return 2;
            }
            drives.push_back(p.substr(at, colon - at));
            at = colon + 1;
        }
        pool_drives.push_back(std::move(drives));
    }
    if (blk_specs.empty() && !single && net_specs.empty() && config_file.empty() && rpc_path.empty()) {
        fmt::print(stderr, "vhostd: no devices given (use --blk ..., --net ..., --config FILE, or --rpc to add them "
                           "later; see --help)\n");
        return 2;
    }
    std::optional<rpc::Json> config_doc;
    if (!config_file.empty()) {
        auto doc = app::read_config_file(config_file);
        if (!doc.ok()) {
            fmt::print(stderr, "vhostd: --config: {}\n", doc.error().describe());
            return 2;
        }
        config_doc = std::move(doc).value();
    }
    std::vector<app::BlkSpec> blks;
    if (!blk_file.empty()) {
        // The same device as --blk socket=...,path=... (every default of the flag applies); the
        // names are set after parsing, so that a comma in them is no key separator.
        // --queues goes through the flag's parser too, which knows the limits.
        std::string base = read_only ? "socket=x,path=x,readonly=on" : "socket=x,path=x";
        if (conv_queues != 0) base += ",queues=" + std::to_string(conv_queues);
        auto r = app::parse_blk_spec(base);
        if (!r.ok()) {
            fmt::print(stderr, "vhostd: --queues: {}\n", r.error().context);
            return 2;
        }
        app::BlkSpec b = r.value();
        b.socket = conv_socket;
        b.path = blk_file;
        blks.push_back(b);
    }
    for (const auto& s : blk_specs) {
        auto r = app::parse_blk_spec(s);
        if (!r.ok()) {
            fmt::print(stderr, "vhostd: --blk {}: {}\n", s, r.error().context);
            return 2;
        }
        blks.push_back(r.value());
    }

    std::vector<app::NetSpec> nets;
    if (!tap.empty()) {
        std::string base = "socket=x,tap=x";
        if (conv_queues != 0) base += ",queues=" + std::to_string(conv_queues);
        auto r = app::parse_net_spec(base);
        if (!r.ok()) {
            fmt::print(stderr, "vhostd: --queues: {}\n", r.error().context);
            return 2;
        }
        app::NetSpec n = r.value();
        n.socket = conv_socket;
        n.tap = tap;
        nets.push_back(n);
    }
    for (const auto& s : net_specs) {
        auto r = app::parse_net_spec(s);
        if (!r.ok()) {
            fmt::print(stderr, "vhostd: --net {}: {}\n", s, r.error().context);
            return 2;
        }
        nets.push_back(r.value());
    }

    app::DaemonConfig cfg;
    cfg.threads = threads;
    cfg.reactor.mode = poll == "always" ? PollMode::kAlways : poll == "never" ? PollMode::kNever : PollMode::kAdaptive;
    cfg.reactor.poll_budget = std::chrono::microseconds(poll_us);
    cfg.reactor.nap.nap_max = std::chrono::microseconds(nap_us);
    cfg.reactor.park_after = std::chrono::microseconds(park_us);
    cfg.reactor.restrict_ring = sandbox == "on";
    if (!cpus.empty()) {
        auto c = app::parse_cpu_list(cpus);
        if (!c.ok()) {
            fmt::print(stderr, "vhostd: --cpus {}: {}\n", cpus, c.error().context);
            return 2;
        }
        cfg.cpus = c.value();
    }

    // Signals are taken synchronously by the main thread; every other thread blocks them.
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
    signal(SIGPIPE, SIG_IGN);

    {
        // Each device holds a few fds (its sockets, kick/call/err eventfds per queue, memory and
        // inflight fds): hundreds of devices need more than the usual soft limit of 1024.
        rlimit rl{};
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
            rlim_t was = rl.rlim_cur;
            rl.rlim_cur = rl.rlim_max;
            if (setrlimit(RLIMIT_NOFILE, &rl) == 0)
                VLOG_DEBUG("open file limit raised from {} to {}", was, rl.rlim_max);
        }
    }
    // --user: the ids come from the user and group databases, read before the sandbox is on.
    std::optional<privileges::Identity> identity;
    sandbox::IdChange id_change;
    if (!run_as.empty()) {
        auto id = privileges::resolve(run_as);
        if (!id.ok()) {
            fmt::print(stderr, "vhostd: {}\n", id.error().describe());
            return 2;
        }
        identity = std::move(id).value();
        if (auto st = privileges::forbid_new_privileges(); !st.ok()) {
            fmt::print(stderr, "vhostd: --user: {}\n", st.error().describe());
            return 1;
        }
        id_change = {identity->uid, identity->gid, static_cast<uint32_t>(identity->groups.size())};
    }
    // Before the first thread: every thread inherits the process filter.
    if (auto st = sandbox::init(sandbox == "on" ? sandbox::Mode::kOn : sandbox == "log" ? sandbox::Mode::kLog
                                                                                      : sandbox::Mode::kOff,
                                identity ? &id_change : nullptr);
        !st.ok()) {
        fmt::print(stderr, "vhostd: --sandbox {}: {}\n", sandbox, st.error().describe());
        return 1;
    }
    app::Daemon daemon(cfg);
    if (auto st = daemon.start(); !st.ok()) {
        fmt::print(stderr, "vhostd: {}\n", st.error().describe());
        return 1;
    }
    // Before any device: a port in use fails the start before a socket is created.
    std::unique_ptr<app::MetricsServer> metrics;
    if (!metrics_addr.empty()) {
        auto m = app::MetricsServer::start(daemon, metrics_addr);
        if (!m.ok()) {
            fmt::print(stderr, "vhostd: --metrics {}: {}\n", metrics_addr, m.error().describe());
            daemon.stop();
            return 1;
        }
        metrics = std::move(m).value();
    }
    // The socket handed over with --fd belongs to the single device (the first of its kind). A
    // connected one is served once: when its frontend leaves, vhostd stops as if told to (the
    // main thread takes the signal and drains).
    auto stop_self = [] { kill(getpid(), SIGTERM); };
    for (const auto& drives : pool_drives) {
        auto p = daemon.import_pool(drives);
        if (!p.ok()) {
            fmt::print(stderr, "vhostd: --pool: {}\n", p.error().describe());
            daemon.stop();
            return 1;
        }
    }
    for (size_t i = 0; i < blks.size(); ++i) {
        const auto& b = blks[i];
        const bool mine = i == 0 && given_fd >= 0 && !blk_file.empty();
        UniqueFd adopt;
        if (mine) adopt.reset(given_fd);
        auto id = daemon.add_blk(b, std::move(adopt), mine ? std::function<void()>(stop_self) : nullptr);
        if (!id.ok()) {
            fmt::print(stderr, "vhostd: --blk socket={}: {}\n", b.socket, id.error().describe());
            daemon.stop();
            return 1;
        }
    }
    for (size_t i = 0; i < nets.size(); ++i) {
        const auto& n = nets[i];
        const bool mine = i == 0 && given_fd >= 0 && !tap.empty();
        UniqueFd adopt;
        if (mine) adopt.reset(given_fd);
        auto id = daemon.add_net(n, std::move(adopt), mine ? std::function<void()>(stop_self) : nullptr);
        if (!id.ok()) {
            fmt::print(stderr, "vhostd: --net socket={}: {}\n", n.socket, id.error().describe());
            daemon.stop();
            return 1;
        }
    }
    if (config_doc) {
        if (auto st = app::load_config(daemon, *config_doc); !st.ok()) {
            fmt::print(stderr, "vhostd: --config {}: {}\n", config_file, st.error().describe());
            daemon.stop();
            return 1;
        }
    }
    rpc::Dispatcher dispatcher;
    app::register_methods(dispatcher, daemon);
    std::unique_ptr<rpc::Server> rpc_server;
    if (!rpc_path.empty()) {
        rpc::ServerOptions ro;
        ro.path = rpc_path;
        ro.group = rpc_group;
        rpc_server = std::make_unique<rpc::Server>(ro, dispatcher);
        if (auto st = rpc_server->open(); !st.ok()) {
            fmt::print(stderr, "vhostd: --rpc {}: {}\n", rpc_path, st.error().describe());
            daemon.stop();
            return 1;
        }
    }
    // --user: everything of the start that needs root is done. The management API may add net
    // devices later: one helper thread keeps CAP_NET_ADMIN for their taps, started while the
    // main thread still has it; the main thread then drops it before it starts the API's thread.
    std::unique_ptr<privileges::PrivilegedHelper> tap_helper;
    if (identity) {
        const bool keep_net_admin = rpc_server != nullptr;
        Status st = privileges::switch_to(*identity, keep_net_admin);
        if (st.ok() && keep_net_admin) {
            auto h = privileges::PrivilegedHelper::start("vhostd-priv");
            if (h.ok()) {
                tap_helper = std::move(h).value();
                daemon.set_tap_opener([helper = tap_helper.get()](const backends::TapOptions& o) {
                    Result<std::unique_ptr<backends::Tap>> r = make_error(Errc::kState, "no tap");
                    helper->run([&] { r = backends::Tap::open(o); });
                    return r;
                });
                st = privileges::drop_thread_capabilities();
            } else {
                st = std::move(h).take_error();
            }
        }
        if (!st.ok()) {
            fmt::print(stderr, "vhostd: {}\n", st.error().describe());
            rpc_server.reset();
            daemon.stop();
            return 1;
        }
        VLOG_INFO("running as {} (uid {}, gid {}, {} group(s))", identity->spec, identity->uid, identity->gid,
                  identity->groups.size());
        // The helper's CAP_NET_ADMIN makes taps, but opening /dev/net/tun is a file permission.
        if (tap_helper && access("/dev/net/tun", R_OK | W_OK) != 0)
            VLOG_WARN("--user {}: /dev/net/tun is not open to this user ({}): net devices added through the "
                      "management API will fail (udev's default is mode 0666)",
                      identity->spec, std::strerror(errno));
        VLOG_DEBUG("capabilities: main thread {}; tap helper {}", privileges::describe_thread_capabilities(),
                   tap_helper ? tap_helper->capabilities() : std::string("(none: no --rpc)"));
    }
    if (rpc_server) {
        if (auto st = rpc_server->serve(); !st.ok()) {
            fmt::print(stderr, "vhostd: --rpc {}: {}\n", rpc_path, st.error().describe());
            daemon.stop();
            return 1;
        }
    }
    VLOG_INFO("vhostd ready: {} device(s), {} reactor(s), poll={}{}{}", daemon.device_count(), threads, poll,
              rpc_path.empty() ? std::string() : ", management API on " + rpc_path,
              metrics ? ", metrics on http://" + metrics->address() + "/metrics" : std::string());

    // A service manager (systemd Type=notify) hears of it only now: every device listens.
    app::ServiceNotifier service;
    service.ready(app::service_status(daemon));
    int sig = 0;
    for (;;) {
        auto wait = service.tick_interval();
        timespec ts{static_cast<time_t>(wait.count() / 1000), static_cast<long>(wait.count() % 1000) * 1'000'000};
        sig = sigtimedwait(&sigs, nullptr, &ts);
        if (sig == SIGINT || sig == SIGTERM) break;
        service.tick(daemon, app::service_status(daemon));
    }
    VLOG_INFO("got {}, stopping: draining in-flight I/O", sig == SIGINT ? "SIGINT" : "SIGTERM");
    service.stopping("draining in-flight I/O of " + std::to_string(daemon.device_count()) + " device(s)");
    if (rpc_server) rpc_server->stop();  // no management call runs while the devices go
    metrics.reset();                     // nor a scrape
    daemon.stop();
    tap_helper.reset();
    VLOG_INFO("vhostd stopped");
    return 0;
}
