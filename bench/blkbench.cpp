// blkbench: a vhost-user-blk load generator. It connects to any vhost-user-blk socket the way
// QEMU does (features, protocol features, memfd guest memory, split rings, kick/call eventfds,
// EVENT_IDX honoured both ways) and drives it from one thread per queue, like a guest driver that
// never sleeps. Reports IOPS, MB/s, latency percentiles (log-linear histogram), kicks and calls
// per request, and the backend's CPU time over the measured window (--backend-pid).
//
//   blkbench --socket S [--queues 1] [--qd 32] [--bs 4096] [--rw randread|randwrite|read|write]
//            [--seconds 5] [--ramp 1] [--notify poll|call] [--cpus 1,..] [--backend-pid PID] [--json]
#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <fstream>
#include <sstream>
#include <random>
#include <thread>

#include "app/device_spec.hpp"
#include "vhost/frontend.hpp"
#include "virtio/blk_driver.hpp"
#include "virtio/driver_queue.hpp"

using namespace vhostd;
using Clock = std::chrono::steady_clock;

namespace {

// Log-linear latency histogram in nanoseconds: 16 sub-buckets per power of two (<= 6% error).
class Histogram {
public:
    void add(uint64_t ns) {
        ++b_[bucket(ns)];
        ++n_;
        sum_ += ns;
        max_ = std::max(max_, ns);
    }
    void merge(const Histogram& o) {
        for (size_t i = 0; i < b_.size(); ++i) b_[i] += o.b_[i];
        n_ += o.n_;
        sum_ += o.sum_;
        max_ = std::max(max_, o.max_);
    }
    uint64_t count() const { return n_; }
    double avg() const { return n_ ? static_cast<double>(sum_) / static_cast<double>(n_) : 0; }
    uint64_t max() const { return max_; }
    uint64_t percentile(double p) const {
        uint64_t want = static_cast<uint64_t>(std::ceil(p / 100.0 * static_cast<double>(n_)));
        uint64_t seen = 0;
        for (size_t i = 0; i < b_.size(); ++i) {
            seen += b_[i];
            if (seen >= want && b_[i]) return upper(i);
        }
        return max_;
    }

private:
    static size_t bucket(uint64_t ns) {
        if (ns < 16) return ns;
        int e = 63 - __builtin_clzll(ns);  // >= 4
        return static_cast<size_t>((e - 3) * 16 + static_cast<int>((ns >> (e - 4)) & 15));
    }
    static uint64_t upper(size_t i) {
        if (i < 16) return i;
        uint64_t e = i / 16 + 3, sub = i % 16;
        return ((16 + sub + 1) << (e - 4)) - 1;
    }
    std::array<uint64_t, 16 * 62> b_{};
    uint64_t n_ = 0, sum_ = 0, max_ = 0;
};

struct Options {
    std::string socket;
    uint32_t queues = 1, qd = 32, bs = 4096;
    std::string rw = "randread", notify = "poll";
    double seconds = 5, ramp = 1;
    std::vector<int> cpus;
    int backend_pid = 0;
    bool json = false;
};

struct QueueResult {
    Histogram lat;
    uint64_t ios = 0, kicks = 0, calls = 0;
};

uint64_t process_cpu_ticks(int pid) {
    std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
    std::string s((std::istreambuf_iterator<char>(f)), {});
    auto p = s.rfind(')');
    if (p == std::string::npos) return 0;
    std::istringstream in(s.substr(p + 2));
    std::string tok;
    uint64_t ut = 0, st = 0;
    for (int i = 3; i <= 15 && in >> tok; ++i) {
        if (i == 14) ut = std::stoull(tok);
        if (i == 15) st = std::stoull(tok);
    }
    return ut + st;
}

[[noreturn]] void die(const std::string& what, const Error& e) {
    fmt::print(stderr, "blkbench: {}: {}\n", what, e.describe());
    std::exit(1);
}
#define CHECK(expr, what)                                   \
    do {                                                    \
        auto&& _r = (expr);                                 \
        if (!_r.ok()) die(what, _r.error());                \
    } while (0)

}  // namespace

int main(int argc, char** argv) {
    Options o;
    CLI::App cli{"blkbench - vhost-user-blk load generator"};
    std::string cpus;
    cli.add_option("--socket", o.socket, "vhost-user-blk socket")->required();
    cli.add_option("--queues", o.queues)->check(CLI::Range(1u, 16u));
    cli.add_option("--qd", o.qd, "queue depth per queue")->check(CLI::Range(1u, 256u));
    cli.add_option("--bs", o.bs, "block size in bytes")->check(CLI::Range(512u, 1u << 20));
    cli.add_option("--rw", o.rw)->check(CLI::IsMember({"randread", "randwrite", "read", "write"}));
    cli.add_option("--seconds", o.seconds, "measured time");
    cli.add_option("--ramp", o.ramp, "warm-up time before measuring");
    cli.add_option("--notify", o.notify, "poll: spin on the used ring; call: sleep on the call eventfd")
        ->check(CLI::IsMember({"poll", "call"}));
    cli.add_option("--cpus", cpus, "pin queue thread i to the i-th CPU");
    cli.add_option("--backend-pid", o.backend_pid, "report this process's CPU time over the window");
    cli.add_flag("--json", o.json, "one JSON object on stdout");
    CLI11_PARSE(cli, argc, argv);
    if (!cpus.empty()) {
        auto c = app::parse_cpu_list(cpus);
        if (!c.ok()) die("--cpus", c.error());
        o.cpus = c.value();
    }
    bool poll_mode = o.notify == "poll";
    uint32_t qsize = 256;
    while (qsize < o.qd * 3) qsize *= 2;

    auto fe_r = driver::Frontend::connect(o.socket);
    CHECK(fe_r, "connect");
    auto& fe = *fe_r.value();
    auto feats = fe.get_features();
    CHECK(feats, "GET_FEATURES");
    uint64_t want = virtio::kFVersion1 | virtio::kFEventIdx | virtio::kFIndirectDesc | virtio::blk::kFFlush |
                    virtio::blk::kFMq | virtio::blk::kFBlkSize | virtio::blk::kFSegMax | vhost::kFProtocolFeatures;
    uint64_t f = feats.value() & want;
    auto pf = fe.get_protocol_features();
    CHECK(pf, "GET_PROTOCOL_FEATURES");
    CHECK(fe.set_protocol_features(pf.value() & (vhost::pf::kMq | vhost::pf::kReplyAck | vhost::pf::kConfig)),
          "SET_PROTOCOL_FEATURES");
    auto nq = fe.get_queue_num();
    CHECK(nq, "GET_QUEUE_NUM");
    if (nq.value() < o.queues) {
        fmt::print(stderr, "blkbench: backend offers {} queues, {} asked\n", nq.value(), o.queues);
        return 1;
    }
    CHECK(fe.set_owner(), "SET_OWNER");
    auto cfg = fe.get_config(0, 60);
    CHECK(cfg, "GET_CONFIG");
    uint64_t capacity = driver::parse_blk_config(cfg.value()).capacity;
    CHECK(fe.set_features(f), "SET_FEATURES");
    uint64_t mem_bytes = 64ull << 20;
    while (mem_bytes < uint64_t{o.queues} * o.qd * (o.bs + 8192) * 2) mem_bytes *= 2;
    auto mem_r = driver::GuestMemory::create({{0, mem_bytes}});
    CHECK(mem_r, "guest memory");
    auto& mem = *mem_r.value();
    CHECK(fe.set_mem_table(mem), "SET_MEM_TABLE");

    struct Q {
        std::unique_ptr<driver::DriverQueue> dq;
        UniqueFd kick, call;
        std::vector<driver::BlkRequest> reqs;  // indexed by slot
        QueueResult res;
    };
    std::vector<Q> qs(o.queues);
    bool is_write = o.rw == "randwrite" || o.rw == "write";
    for (uint32_t i = 0; i < o.queues; ++i) {
        auto dq = driver::DriverQueue::create(mem, static_cast<uint16_t>(qsize), (f & virtio::kFEventIdx) != 0);
        CHECK(dq, "driver queue");
        qs[i].dq = std::move(dq).value();
        qs[i].kick.reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
        qs[i].call.reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
        qs[i].dq->enable_call(!poll_mode);
        CHECK(fe.setup_queue(i, *qs[i].dq, qs[i].kick.get(), qs[i].call.get(), true), "queue setup");
        for (uint32_t k = 0; k < o.qd; ++k) {
            std::vector<uint8_t> data(is_write ? o.bs : 0, 0x5a);
            auto r = is_write ? driver::make_blk_write(mem, 0, data) : driver::make_blk_read(mem, 0, o.bs);
            CHECK(r, "request");
            qs[i].reqs.push_back(std::move(r).value());
        }
    }

    std::atomic<int> phase{0};  // 0 ramp, 1 measure, 2 stop
    uint64_t blocks = capacity * 512 / o.bs;
    auto worker = [&](uint32_t qi) {
        if (!o.cpus.empty()) {
            cpu_set_t set;
            CPU_ZERO(&set);
            CPU_SET(o.cpus[qi % o.cpus.size()], &set);
            pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
        }
        Q& q = qs[qi];
        std::mt19937_64 rng(qi * 7919 + 1);
        uint64_t seq = qi * (blocks / o.queues);
        std::vector<Clock::time_point> start(qsize);
        std::vector<uint32_t> slot_of(qsize);
        auto next_sector = [&] {
            uint64_t b = (o.rw[0] == 'r' && o.rw[1] == 'a') || o.rw == "randwrite" ? rng() % blocks : (seq++ % blocks);
            return b * (o.bs / 512);
        };
        auto submit = [&](uint32_t slot) {
            auto& r = q.reqs[slot];
            r.rearm(r.type(), next_sector());
            auto head = r.submit(*q.dq);
            if (!head.ok()) die("submit", head.error());
            slot_of[head.value()] = slot;
            start[head.value()] = Clock::now();
        };
        for (uint32_t k = 0; k < o.qd; ++k) submit(k);
        q.dq->publish();
        if (q.dq->kick_prepare()) eventfd_write(q.kick.get(), 1), ++q.res.kicks;
        while (phase.load(std::memory_order_relaxed) < 2) {
            if (!poll_mode && !q.dq->has_used()) {
                pollfd p{q.call.get(), POLLIN, 0};
                if (::poll(&p, 1, 100) <= 0) continue;
                eventfd_t v;
                eventfd_read(q.call.get(), &v);
                if (phase.load(std::memory_order_relaxed) == 1) ++q.res.calls;
            }
            bool measuring = phase.load(std::memory_order_relaxed) == 1;
            auto now = Clock::now();
            uint32_t n = 0;
            while (auto u = q.dq->pop_used()) {
                uint32_t slot = slot_of[u->id];
                if (q.reqs[slot].status() != virtio::blk::kSOk) {
                    fmt::print(stderr, "blkbench: request failed with status {}\n", q.reqs[slot].status());
                    std::exit(1);
                }
                if (measuring) {
                    q.res.lat.add(static_cast<uint64_t>(std::chrono::nanoseconds(now - start[u->id]).count()));
                    ++q.res.ios;
                }
                submit(slot);
                ++n;
            }
            if (n > 0) {
                q.dq->publish();
                if (q.dq->kick_prepare()) {
                    eventfd_write(q.kick.get(), 1);
                    if (measuring) ++q.res.kicks;
                }
            }
        }
    };
    std::vector<std::thread> threads;
    for (uint32_t i = 0; i < o.queues; ++i) threads.emplace_back(worker, i);
    std::this_thread::sleep_for(std::chrono::duration<double>(o.ramp));
    uint64_t cpu0 = o.backend_pid ? process_cpu_ticks(o.backend_pid) : 0;
    auto t0 = Clock::now();
    phase = 1;
    std::this_thread::sleep_for(std::chrono::duration<double>(o.seconds));
    phase = 2;
    auto t1 = Clock::now();
    uint64_t cpu1 = o.backend_pid ? process_cpu_ticks(o.backend_pid) : 0;
    for (auto& t : threads) t.join();
    for (uint32_t i = 0; i < o.queues; ++i) (void)fe.get_vring_base(i);

    QueueResult all;
    for (auto& q : qs) {
        all.lat.merge(q.res.lat);
        all.ios += q.res.ios;
        all.kicks += q.res.kicks;
        all.calls += q.res.calls;
    }
    double secs = std::chrono::duration<double>(t1 - t0).count();
    double iops = static_cast<double>(all.ios) / secs;
    double cpu_s = static_cast<double>(cpu1 - cpu0) / static_cast<double>(sysconf(_SC_CLK_TCK));
    double per_io = all.ios ? 1.0 / static_cast<double>(all.ios) : 0;
    if (o.json) {
        fmt::print(
            "{{\"rw\":\"{}\",\"bs\":{},\"qd\":{},\"queues\":{},\"notify\":\"{}\",\"seconds\":{:.3f},\"iops\":{:.0f},"
            "\"mbps\":{:.1f},\"lat_avg_us\":{:.2f},\"lat_p50_us\":{:.2f},\"lat_p99_us\":{:.2f},\"lat_p999_us\":{:.2f},"
            "\"lat_max_us\":{:.2f},\"kicks_per_io\":{:.4f},\"calls_per_io\":{:.4f},\"backend_cpu_s\":{:.3f},"
            "\"iops_per_backend_cpu_s\":{:.0f}}}\n",
            o.rw, o.bs, o.qd, o.queues, o.notify, secs, iops, iops * o.bs / 1e6, all.lat.avg() / 1e3,
            all.lat.percentile(50) / 1e3, all.lat.percentile(99) / 1e3, all.lat.percentile(99.9) / 1e3,
            all.lat.max() / 1e3, all.kicks * per_io, all.calls * per_io, cpu_s,
            cpu_s > 0 ? static_cast<double>(all.ios) / cpu_s : 0.0);
    } else {
        fmt::print("{} bs={} qd={} queues={} notify={}: {:.0f} IOPS, {:.1f} MB/s\n", o.rw, o.bs, o.qd, o.queues,
                   o.notify, iops, iops * o.bs / 1e6);
        fmt::print("  latency us: avg {:.2f}  p50 {:.2f}  p99 {:.2f}  p99.9 {:.2f}  max {:.2f}\n", all.lat.avg() / 1e3,
                   all.lat.percentile(50) / 1e3, all.lat.percentile(99) / 1e3, all.lat.percentile(99.9) / 1e3,
                   all.lat.max() / 1e3);
        fmt::print("  kicks/io {:.4f}  calls/io {:.4f}", all.kicks * per_io, all.calls * per_io);
        if (o.backend_pid) fmt::print("  backend cpu {:.2f} s ({:.0f} IOPS per cpu-second)", cpu_s,
                                      cpu_s > 0 ? static_cast<double>(all.ios) / cpu_s : 0.0);
        fmt::print("\n");
    }
    return 0;
}
