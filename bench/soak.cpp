// soak: leaks over many sessions and devices, against a running vhostd (issue 18's soak).
//
//   soak --pid PID --socket SOCK [--cycles 10000]            connect / negotiate / disconnect
//        --api API.SOCK --dir DIR [--add-remove 1000]        device_add / use / device_remove
//
// Connect cycles: each one is a frontend as QEMU's vhost-user-blk is one: features, protocol
// features, the inflight buffer, the memory table (a new memfd each time), two queues started, one
// write completed and one read left in flight, then the connection closes under it (the backend
// drains it). Add/remove cycles: a null blk device added through the management API, a frontend
// connected to it with a write done and a read in flight, the device removed under it.
//
// The backend's open fds and RSS are read from /proc after a warm-up (--warmup cycles: pools and
// arenas reach their size) and after the last cycle, each once the backend is quiet (its fd count
// unchanged for 300 ms). Verdict: fds equal, RSS within --rss-slack-kib (1024) of the warm value.
// Exit 0 when both phases hold, 1 when one leaks, 2 on a usage or connection error.
#include <dirent.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <functional>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "rpc/client.hpp"
#include "testing/blk_driver.hpp"
#include "testing/driver_queue.hpp"
#include "testing/frontend.hpp"
#include "testing/guest_ram.hpp"
#include "vhost/protocol.hpp"
#include "virtio/blk_types.hpp"
#include "virtio/virtqueue.hpp"

using namespace vhostd;

namespace {

size_t count_fds(int pid) {
    size_t n = 0;
    std::string dir = "/proc/" + std::to_string(pid) + "/fd";
    if (DIR* d = opendir(dir.c_str())) {
        while (dirent* e = readdir(d))
            if (e->d_name[0] != '.') ++n;
        closedir(d);
    }
    return n;
}

size_t rss_kib(int pid) {
    std::ifstream f("/proc/" + std::to_string(pid) + "/status");
    std::string line;
    while (std::getline(f, line))
        if (line.rfind("VmRSS:", 0) == 0) return std::stoul(line.substr(6));
    return 0;
}

struct Sample {
    size_t fds = 0, rss = 0;
};

// Waits until the backend's fd count has not moved for 300 ms (sessions and devices tear down
// on their own threads), at most 10 s.
Sample settle(int pid) {
    size_t last = count_fds(pid);
    auto still_since = std::chrono::steady_clock::now();
    auto deadline = still_since + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        size_t now = count_fds(pid);
        if (now != last) {
            last = now;
            still_since = std::chrono::steady_clock::now();
        } else if (std::chrono::steady_clock::now() - still_since >= std::chrono::milliseconds(300)) {
            break;
        }
    }
    return Sample{count_fds(pid), rss_kib(pid)};
}

UniqueFd make_eventfd() { return UniqueFd(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)); }

// One session on `sock`, as described above; `before_close` runs while the read is in flight and
// the frontend still connected. An error names the step.
Status session(const std::string& sock, const std::function<Status()>& before_close = {}) {
    VHOSTD_ASSIGN_OR_RETURN(auto fe, testing::Frontend::connect(sock));
    VHOSTD_ASSIGN_OR_RETURN(uint64_t feats, fe->get_features());
    const uint64_t f = feats & (virtio::kFVersion1 | virtio::kFEventIdx | virtio::kFIndirectDesc | virtio::blk::kFFlush |
                                virtio::blk::kFMq | vhost::kFProtocolFeatures);
    VHOSTD_ASSIGN_OR_RETURN(uint64_t pf, fe->get_protocol_features());
    VHOSTD_TRY(fe->set_protocol_features(pf & (vhost::pf::kMq | vhost::pf::kReplyAck | vhost::pf::kConfig |
                                               vhost::pf::kInflightShmfd)));
    VHOSTD_TRY(fe->set_owner());
    VHOSTD_ASSIGN_OR_RETURN(auto inflight, fe->get_inflight_fd(2, 128));
    VHOSTD_TRY(fe->set_inflight_fd(inflight.fd.get(), inflight.desc));
    VHOSTD_TRY(fe->set_features(f));
    VHOSTD_ASSIGN_OR_RETURN(auto mem, testing::GuestRam::create({{0, 8ull << 20}}));
    VHOSTD_TRY(fe->set_mem_table(*mem));
    std::vector<std::unique_ptr<testing::DriverQueue>> qs;
    std::vector<UniqueFd> kicks, calls;
    for (uint32_t i = 0; i < 2; ++i) {
        VHOSTD_ASSIGN_OR_RETURN(auto q, testing::DriverQueue::create(*mem, 128, (f & virtio::kFEventIdx) != 0));
        qs.push_back(std::move(q));
        kicks.push_back(make_eventfd());
        calls.push_back(make_eventfd());
        VHOSTD_TRY(fe->setup_queue(i, *qs[i], kicks[i].get(), calls[i].get(), true));
    }
    std::vector<uint8_t> data(4096, 0x5a);
    VHOSTD_ASSIGN_OR_RETURN(auto w, testing::make_blk_write(*mem, 8, data));
    VHOSTD_TRY(w.submit(*qs[0]));
    VHOSTD_TRY(qs[0]->publish_and_kick(kicks[0].get()));
    if (!qs[0]->wait_used(calls[0].get(), std::chrono::seconds(5)))
        return make_error(Errc::kState, "the write did not complete");
    VHOSTD_ASSIGN_OR_RETURN(auto r, testing::make_blk_read(*mem, 16, 4096));
    VHOSTD_TRY(r.submit(*qs[1]));
    VHOSTD_TRY(qs[1]->publish_and_kick(kicks[1].get()));
    if (before_close) VHOSTD_TRY(before_close());
    return ok_status();  // the frontend goes with the read in flight
}

struct Phase {
    const char* name;
    unsigned cycles = 0;
    Sample warm, end;
    double seconds = 0;
    bool ok = false;
};

void report(const Phase& p, size_t slack) {
    long long drss = static_cast<long long>(p.end.rss) - static_cast<long long>(p.warm.rss);
    long long dfds = static_cast<long long>(p.end.fds) - static_cast<long long>(p.warm.fds);
    fmt::print("{}: {} cycles in {:.1f} s ({:.0f}/s); fds {} -> {} ({:+}); RSS {} -> {} KiB ({:+} KiB, slack {}): {}\n",
               p.name, p.cycles, p.seconds, p.cycles / std::max(p.seconds, 1e-9), p.warm.fds, p.end.fds, dfds,
               p.warm.rss, p.end.rss, drss, slack, p.ok ? "flat" : "LEAK");
    fmt::print("{{\"phase\": \"{}\", \"cycles\": {}, \"seconds\": {:.2f}, \"fds_warm\": {}, \"fds_end\": {}, "
               "\"rss_warm_kib\": {}, \"rss_end_kib\": {}, \"flat\": {}}}\n",
               p.name, p.cycles, p.seconds, p.warm.fds, p.end.fds, p.warm.rss, p.end.rss, p.ok);
}

template <typename F>
int run_phase(Phase& p, int pid, unsigned warmup, size_t slack, F&& cycle) {
    for (unsigned i = 0; i < warmup; ++i) {
        if (Status st = cycle(i); !st.ok()) {
            fmt::print(stderr, "soak: {} warm-up cycle {}: {}\n", p.name, i, st.error().describe());
            return 2;
        }
    }
    p.warm = settle(pid);
    auto t0 = std::chrono::steady_clock::now();
    for (unsigned i = 0; i < p.cycles; ++i) {
        if (Status st = cycle(warmup + i); !st.ok()) {
            fmt::print(stderr, "soak: {} cycle {}: {}\n", p.name, i, st.error().describe());
            return 2;
        }
    }
    p.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    p.end = settle(pid);
    p.ok = p.end.fds == p.warm.fds && p.end.rss <= p.warm.rss + slack;
    report(p, slack);
    return p.ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App cli{"soak - connect/disconnect and add/remove cycles against a running vhostd; its fds and RSS must stay flat"};
    int pid = 0;
    std::string sock, api, dir;
    unsigned cycles = 10000, add_remove = 1000, warmup = 200;
    size_t slack = 1024;
    cli.add_option("--pid", pid, "the vhostd to watch")->required();
    cli.add_option("--socket", sock, "connect cycles on this vhost-user-blk socket");
    cli.add_option("--cycles", cycles, "connect cycles after the warm-up")->capture_default_str();
    cli.add_option("--api", api, "add/remove cycles through this management socket");
    cli.add_option("--dir", dir, "folder for the added devices' sockets");
    cli.add_option("--add-remove", add_remove, "add/remove cycles after the warm-up")->capture_default_str();
    cli.add_option("--warmup", warmup, "cycles before the first sample (each phase; add/remove: a tenth)")
        ->capture_default_str();
    cli.add_option("--rss-slack-kib", slack, "RSS growth allowed")->capture_default_str();
    CLI11_PARSE(cli, argc, argv);
    if (sock.empty() && api.empty()) {
        fmt::print(stderr, "soak: give --socket, --api, or both\n");
        return 2;
    }
    if (!api.empty() && dir.empty()) {
        fmt::print(stderr, "soak: --api needs --dir\n");
        return 2;
    }
    int rc = 0;
    if (!sock.empty()) {
        Phase p{"connect", cycles};
        rc = std::max(rc, run_phase(p, pid, warmup, slack, [&](unsigned) { return session(sock); }));
        if (rc == 2) return rc;
    }
    if (!api.empty()) {
        auto c = rpc::Client::connect(api);
        if (!c.ok()) {
            fmt::print(stderr, "soak: {}\n", c.error().describe());
            return 2;
        }
        rpc::Client client = std::move(c).value();
        const std::string dev_sock = dir + "/soak-dev.sock";
        auto cycle = [&](unsigned) -> Status {
            rpc::Json add{{"kind", "blk"}, {"id", "soak"}, {"socket", dev_sock}, {"backend", "null"},
                          {"size", "16M"}, {"queues", "2"}};
            VHOSTD_ASSIGN_OR_RETURN(auto added, client.call("device_add", add));
            (void)added;
            // Removed under a connected frontend with a read in flight.
            return session(dev_sock, [&]() -> Status {
                VHOSTD_ASSIGN_OR_RETURN(auto removed, client.call("device_remove", rpc::Json{{"id", "soak"}}));
                (void)removed;
                return ok_status();
            });
        };
        Phase p{"add-remove", add_remove};
        rc = std::max(rc, run_phase(p, pid, std::max(1u, warmup / 10), slack, cycle));
    }
    return rc;
}
