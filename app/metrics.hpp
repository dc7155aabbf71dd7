// Prometheus metrics: the counters the reactors keep (core/stats.hpp), read at scrape time and
// served in the text exposition format by prometheus-cpp's pull server (its own HTTP threads).
// A scrape takes the registry lock the management API takes and reads the counters with relaxed
// loads: the data path never sees it. README.md lists the metrics.
#pragma once

#include <prometheus/metric_family.h>

#include <memory>
#include <string>
#include <vector>

#include "app/daemon.hpp"

namespace prometheus {
class Exposer;
}

namespace vhostd::app {

// The default listen address of a bare --metrics: loopback only.
inline constexpr const char* kDefaultMetricsAddress = "127.0.0.1:9810";

// "PORT", "ADDR:PORT" or "[V6ADDR]:PORT" (ADDR a numeric IPv4/IPv6 address; PORT 0 picks a free
// one) as the server's listen string; a bare port listens on loopback.
Result<std::string> parse_metrics_address(const std::string& text);

// Every metric family, as a scrape sees it (the server's collector; tests use it directly).
std::vector<prometheus::MetricFamily> collect_metrics(Daemon& daemon);
// The same, in the text exposition format.
std::string metrics_text(Daemon& daemon);

class MetricsServer {
public:
    // Listens on `address` (parse_metrics_address's form) and serves /metrics until destroyed.
    static Result<std::unique_ptr<MetricsServer>> start(Daemon& daemon, const std::string& address);
    ~MetricsServer();
    MetricsServer(const MetricsServer&) = delete;
    MetricsServer& operator=(const MetricsServer&) = delete;

    // The address it listens on, with the port it got ("127.0.0.1:9810").
    const std::string& address() const { return address_; }

private:
    MetricsServer() = default;
    class Collector;
    std::shared_ptr<Collector> collector_;
    std::unique_ptr<prometheus::Exposer> exposer_;
    std::string address_;
};

}  // namespace vhostd::app
