#include "app/metrics.hpp"

#include <arpa/inet.h>
#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <prometheus/collectable.h>
#include <prometheus/exposer.h>
#include <prometheus/text_serializer.h>

#include <cmath>
#include <fstream>
#include <sstream>

#include "core/log.hpp"
#include "virtio/blk_device.hpp"
#include "virtio/net_device.hpp"

namespace vhostd::app {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

namespace {

using Labels = std::vector<ClientMetric::Label>;

class Families {
public:
    MetricFamily& family(const std::string& name, MetricType type, const std::string& help) {
        for (auto& f : out_)
            if (f.name == name) return f;
        out_.push_back(MetricFamily{name, help, type, {}});
        return out_.back();
    }
    void counter(const std::string& name, const std::string& help, Labels labels, double v) {
        ClientMetric m;
        m.label = std::move(labels);
        m.counter.value = v;
        family(name, MetricType::Counter, help).metric.push_back(std::move(m));
    }
    void gauge(const std::string& name, const std::string& help, Labels labels, double v) {
        ClientMetric m;
        m.label = std::move(labels);
        m.gauge.value = v;
        family(name, MetricType::Gauge, help).metric.push_back(std::move(m));
    }
    void histogram(const std::string& name, const std::string& help, Labels labels, ClientMetric::Histogram h) {
        ClientMetric m;
        m.label = std::move(labels);
        m.histogram = std::move(h);
        family(name, MetricType::Histogram, help).metric.push_back(std::move(m));
    }
    std::vector<MetricFamily> take() { return std::move(out_); }

private:
    std::vector<MetricFamily> out_;
};

// Request latency buckets, in seconds: 1 µs to 10 s, 1-2.5-5 per decade.
constexpr double kLatencyBounds[] = {1e-6,   2.5e-6, 5e-6,   1e-5,   2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3,
                                     5e-3,   1e-2,   2.5e-2, 5e-2,   0.1,    0.25, 0.5,  1.0,    2.5,  5.0,  10.0};

ClientMetric::Histogram latency_histogram(const virtio::BlkQueueStats& s) {
    ClientMetric::Histogram h;
    uint64_t total = 0;
    for (uint64_t n : s.latency_buckets) total += n;
    for (double b : kLatencyBounds) {
        auto ns = static_cast<uint64_t>(std::llround(b * 1e9));
        h.bucket.push_back({count_at_most(s.latency_buckets, ns), b});
    }
    h.bucket.push_back({total, std::numeric_limits<double>::infinity()});
    h.sample_count = total;
    h.sample_sum = static_cast<double>(s.latency_sum_ns) / 1e9;
    return h;
}

void blk_metrics(Families& f, const std::string& dev, const virtio::BlkDeviceStats& st) {
    for (const auto& q : st.queues) {
        auto L = [&](std::initializer_list<ClientMetric::Label> extra = {}) {
            Labels l{{"device", dev}, {"queue", std::to_string(q.index)}};
            l.insert(l.end(), extra);
            return l;
        };
        const char* req = "vhostd_blk_requests_total";
        const char* req_help = "virtio-blk requests completed, by type";
        for (auto [type, n] : {std::pair{"read", q.reads}, {"write", q.writes}, {"flush", q.flushes},
                               {"discard", q.discards}, {"write_zeroes", q.write_zeroes}, {"get_id", q.get_ids},
                               {"other", q.others}})
            f.counter(req, req_help, L({{"type", type}}), static_cast<double>(n));
        f.counter("vhostd_blk_bytes_total", "bytes of read and write requests completed OK",
                  L({{"direction", "read"}}), static_cast<double>(q.bytes_read));
        f.counter("vhostd_blk_bytes_total", "bytes of read and write requests completed OK",
                  L({{"direction", "write"}}), static_cast<double>(q.bytes_written));
        for (auto [kind, n] : {std::pair{"ioerr", q.err_ioerr}, {"unsupp", q.err_unsupp}, {"bad_chain", q.bad_chains}})
            f.counter("vhostd_blk_errors_total",
                      "requests completed with VIRTIO_BLK_S_IOERR / _UNSUPP, and malformed chains returned unread",
                      L({{"status", kind}}), static_cast<double>(n));
        f.gauge("vhostd_blk_inflight_requests", "requests taken from the ring and not completed yet", L(),
                static_cast<double>(q.inflight));
        f.counter("vhostd_blk_qos_delayed_requests_total", "requests a QoS limit held back", L(),
                  static_cast<double>(q.qos_delays));
        f.counter("vhostd_blk_qos_delay_seconds_total", "time requests spent held back by QoS limits", L(),
                  static_cast<double>(q.qos_delay_ns) / 1e9);
        f.histogram("vhostd_blk_request_duration_seconds",
                    "time from taking a request off the ring to its completion", L(), latency_histogram(q));
        f.counter("vhostd_queue_kicks_total", "guest notifications (kick eventfd reads) received", L(),
                  static_cast<double>(q.kicks));
        f.counter("vhostd_queue_calls_total", "guest interrupts (call eventfd writes) sent", L(),
                  static_cast<double>(q.calls));
    }
}

void net_metrics(Families& f, const std::string& dev, const std::vector<virtio::NetPairStats>& pairs) {
    for (size_t i = 0; i < pairs.size(); ++i) {
        for (auto [dir, s, vring] : {std::tuple{"rx", &pairs[i].rx, 2 * i}, std::tuple{"tx", &pairs[i].tx, 2 * i + 1}}) {
            Labels l{{"device", dev}, {"pair", std::to_string(i)}, {"direction", dir}};
            f.counter("vhostd_net_packets_total", "frames moved between the guest and the backend", l,
                      static_cast<double>(s->packets));
            f.counter("vhostd_net_bytes_total", "frame bytes moved (without virtio headers)", l,
                      static_cast<double>(s->bytes));
            f.counter("vhostd_net_gso_packets_total", "frames carrying a GSO header", l, static_cast<double>(s->gso));
            f.counter("vhostd_net_dropped_packets_total", "frames dropped", l, static_cast<double>(s->dropped));
            Labels q{{"device", dev}, {"queue", std::to_string(vring)}};
            f.counter("vhostd_queue_kicks_total", "guest notifications (kick eventfd reads) received", q,
                      static_cast<double>(s->kicks));
            f.counter("vhostd_queue_calls_total", "guest interrupts (call eventfd writes) sent", q,
                      static_cast<double>(s->calls));
        }
    }
}

// /proc/self/stat fields 14 (utime), 15 (stime), 20 (threads), 22 (start time), 23 (vsize), 24 (rss).
void process_metrics(Families& f) {
    std::ifstream in("/proc/self/stat");
    std::string line;
    if (std::getline(in, line)) {
        auto close = line.rfind(')');  // the command name may hold spaces
        if (close != std::string::npos) {
            std::istringstream rest(line.substr(close + 2));
            std::vector<std::string> v;  // v[0] is field 3
            for (std::string w; rest >> w;) v.push_back(w);
            auto field = [&](size_t n) -> double { return n - 3 < v.size() ? std::strtod(v[n - 3].c_str(), nullptr) : 0; };
            const double tck = static_cast<double>(sysconf(_SC_CLK_TCK));
            const double page = static_cast<double>(sysconf(_SC_PAGESIZE));
            f.counter("process_cpu_seconds_total", "user and system CPU time", {}, (field(14) + field(15)) / tck);
            f.gauge("process_virtual_memory_bytes", "virtual memory size", {}, field(23));
            f.gauge("process_resident_memory_bytes", "resident set size", {}, field(24) * page);
            f.gauge("vhostd_threads", "threads of the process", {}, field(20));
            std::ifstream st("/proc/stat");
            for (std::string l; std::getline(st, l);)
                if (l.rfind("btime ", 0) == 0)
                    f.gauge("process_start_time_seconds", "start time since the Unix epoch", {},
                            std::strtod(l.c_str() + 6, nullptr) + field(22) / tck);
        }
    }
    double fds = 0;
    if (DIR* d = opendir("/proc/self/fd")) {
        while (dirent* e = readdir(d))
            if (e->d_name[0] != '.') ++fds;
        closedir(d);
        fds -= 1;  // the directory's own fd
    }
    f.gauge("process_open_fds", "open file descriptors", {}, fds);
    rlimit rl{};
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
        f.gauge("process_max_fds", "the open file descriptor limit", {}, static_cast<double>(rl.rlim_cur));
}

}  // namespace

std::vector<MetricFamily> collect_metrics(Daemon& daemon) {
    Families f;
    f.gauge("vhostd_build_info", "the running vhostd's version", {{"version", VHOSTD_VERSION}}, 1);
    auto devices = daemon.list();
    f.gauge("vhostd_devices", "devices served", {}, static_cast<double>(devices.size()));
    for (const auto& d : devices) {
        f.gauge("vhostd_device_info", "one per device: its kind, socket and backend", 
                {{"device", d.id}, {"kind", d.kind}, {"socket", d.socket}, {"backend", d.backend}, {"target", d.target}},
                1);
        f.gauge("vhostd_device_frontend_connected", "1 while a frontend (a VMM) is connected", {{"device", d.id}},
                d.frontend.connected ? 1 : 0);
        f.gauge("vhostd_device_queues", "virtqueues the device offers", {{"device", d.id}}, d.queues);
        f.gauge("vhostd_device_queues_running", "virtqueues the frontend started", {{"device", d.id}},
                d.queues_running);
        if (d.kind == "blk") {
            f.gauge("vhostd_blk_size_bytes", "the disk's size as the guest sees it", {{"device", d.id}},
                    static_cast<double>(d.size));
            for (auto [name, v] : {std::pair{"iops", d.qos.iops}, {"bps", d.qos.bps}, {"read_iops", d.qos.read_iops},
                                   {"write_iops", d.qos.write_iops}, {"read_bps", d.qos.read_bps},
                                   {"write_bps", d.qos.write_bps}})
                f.gauge("vhostd_blk_qos_limit", "QoS limits per second (0: none)", {{"device", d.id}, {"limit", name}},
                        static_cast<double>(v));
            virtio::BlkDeviceStats st;
            // A device removed since list(): it just has no counters in this scrape.
            uint64_t suppressed = 0;
            if (daemon.with_blk(d.id, [&](virtio::BlkDevice& dev) {
                        st = dev.stats();
                        suppressed = dev.guest_log().total_suppressed() + dev.io_log().total_suppressed();
                    }).ok()) {
                blk_metrics(f, d.id, st);
                f.counter("vhostd_log_suppressed_lines_total", "warnings the device's log rate limit dropped",
                          {{"device", d.id}}, static_cast<double>(suppressed));
            }
        } else {
            std::vector<virtio::NetPairStats> pairs;
            uint64_t suppressed = 0;
            if (daemon.with_net(d.id, [&](virtio::NetDevice& dev) {
                        for (uint32_t i = 0; i < dev.pairs(); ++i) pairs.push_back(dev.stats(i));
                        suppressed = dev.guest_log().total_suppressed();
                    }).ok()) {
                net_metrics(f, d.id, pairs);
                f.counter("vhostd_log_suppressed_lines_total", "warnings the device's log rate limit dropped",
                          {{"device", d.id}}, static_cast<double>(suppressed));
            }
        }
    }
    for (const auto& r : daemon.reactor_stats()) {
        Labels l{{"reactor", std::to_string(r.index)}};
        f.counter("vhostd_reactor_busy_seconds_total", "time the reactor spent in passes that found work", l,
                  static_cast<double>(r.busy_ns) / 1e9);
        f.counter("vhostd_reactor_idle_seconds_total", "time the reactor spent polling idle, napping or asleep", l,
                  static_cast<double>(r.total_ns - std::min(r.total_ns, r.busy_ns)) / 1e9);
        f.counter("vhostd_reactor_passes_total", "polling passes over the reactor's queues", l,
                  static_cast<double>(r.passes));
        f.counter("vhostd_reactor_sleeps_total", "times the reactor slept in io_uring until a kick or completion", l,
                  static_cast<double>(r.sleeps));
        f.counter("vhostd_reactor_naps_total", "short naps on a steady sparse request stream", l,
                  static_cast<double>(r.naps));
        f.gauge("vhostd_reactor_queues", "virtqueues the reactor serves", l, r.pollers);
        f.gauge("vhostd_reactor_hot_queues", "virtqueues in the reactor's busy-poll set (the rest are parked)", l,
                r.hot);
        f.counter("vhostd_reactor_parks_total", "times a quiet virtqueue left the busy-poll set", l,
                  static_cast<double>(r.parks));
        f.counter("vhostd_reactor_wakes_total", "times a parked virtqueue was woken (a kick or a backend wake-up)", l,
                  static_cast<double>(r.wakes));
        f.gauge("vhostd_reactor_cpu", "the CPU the reactor is pinned to (-1: not pinned)", l, r.cpu);
    }
    process_metrics(f);
    return f.take();
}

std::string metrics_text(Daemon& daemon) {
    std::ostringstream out;
    prometheus::TextSerializer().Serialize(out, collect_metrics(daemon));
    return out.str();
}

Result<std::string> parse_metrics_address(const std::string& text) {
    std::string host = "127.0.0.1", port = text;
    bool v6 = false;
    if (!text.empty() && text[0] == '[') {
        auto end = text.find("]:");
        if (end == std::string::npos) return make_error(Errc::kInvalid, "'{}': expected [IPV6]:PORT", text);
        host = text.substr(1, end - 1);
        port = text.substr(end + 2);
        v6 = true;
    } else if (auto colon = text.rfind(':'); colon != std::string::npos) {
        host = text.substr(0, colon);
        port = text.substr(colon + 1);
    }
    unsigned char buf[sizeof(in6_addr)];
    if (inet_pton(v6 ? AF_INET6 : AF_INET, host.c_str(), buf) != 1)
        return make_error(Errc::kInvalid, "'{}' is not a numeric IP{} address", host, v6 ? "v6" : "v4");
    if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos ||
        std::stoul(port) > 65535)
        return make_error(Errc::kInvalid, "'{}' is not a port number (0-65535)", port);
    return v6 ? "[" + host + "]:" + port : host + ":" + port;
}

class MetricsServer::Collector final : public prometheus::Collectable {
public:
    explicit Collector(Daemon& d) : daemon_(d) {}
    std::vector<MetricFamily> Collect() const override { return collect_metrics(daemon_); }

private:
    Daemon& daemon_;
};

Result<std::unique_ptr<MetricsServer>> MetricsServer::start(Daemon& daemon, const std::string& address) {
    VHOSTD_ASSIGN_OR_RETURN(std::string listen, parse_metrics_address(address));
    std::unique_ptr<MetricsServer> s(new MetricsServer());
    s->collector_ = std::make_shared<Collector>(daemon);
    try {
        // One HTTP thread: scrapes are rare and each walks every device under the registry lock.
        s->exposer_ = std::make_unique<prometheus::Exposer>(listen, 1);
    } catch (const std::exception& e) {
        return make_error(Errc::kBusy, "cannot listen on {}: {}", listen, e.what());
    }
    s->exposer_->RegisterCollectable(s->collector_);
    auto ports = s->exposer_->GetListeningPorts();
    auto colon = listen.rfind(':');
    s->address_ = listen.substr(0, colon + 1) + (ports.empty() ? listen.substr(colon + 1) : std::to_string(ports[0]));
    return s;
}

MetricsServer::~MetricsServer() {
    if (exposer_) exposer_->RemoveCollectable(collector_);
    exposer_.reset();  // joins the HTTP thread: no scrape runs after this
}

}  // namespace vhostd::app
