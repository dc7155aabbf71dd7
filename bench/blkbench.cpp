// blkbench: a vhost-user-blk load generator. It connects to any vhost-user-blk socket the way
// QEMU does (features, protocol features, memfd guest memory, split rings, kick/call eventfds,
// EVENT_IDX honoured both ways) and drives it from one thread per queue, like a guest driver that
// never sleeps. Reports IOPS, MB/s, latency percentiles (log-linear histogram), kicks and calls
// per request, and the backend's CPU time over the measured window (--backend-pid).
//
// --rate N: open loop at N requests/s in total (up to --qd outstanding per queue); latency counts
// from each request's scheduled time, so a backend that falls behind is not flattered
// (no coordinated omission). Backend CPU per request at a fixed rate is the efficiency figure.
// --self: no backend at all: an in-process responder thread per queue completes every request
// straight from the ring (device-side SplitQueue, status OK). That is the generator's own
// ceiling: a backend cannot be measured faster than this.
//
//   blkbench (--socket S | --self) [--queues 1] [--qd 32] [--bs 4096] [--rw randread|randwrite|read|write]
//            [--rate 0] [--seconds 5] [--ramp 1] [--notify poll|call] [--cpus 1,..] [--backend-pid PID] [--json]
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
#include "shm/memory_map.hpp"
#include "vhost/frontend.hpp"
#include "virtio/blk_driver.hpp"
#include "virtio/driver_queue.hpp"
#include "virtio/virtqueue.hpp"

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
    double rate = 0;  // total requests/s; 0: closed loop
    bool self = false;
    bool no_inflight = false;
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
    auto* sock_opt = cli.add_option("--socket", o.socket, "vhost-user-blk socket");
    cli.add_flag("--self", o.self, "measure the generator itself against an in-process responder")->excludes(sock_opt);
    cli.add_flag("--no-inflight", o.no_inflight,
                 "do not use the backend's inflight buffer (QEMU uses it whenever a blk backend offers it)");
    cli.add_option("--rate", o.rate, "fixed total request rate per second (open loop); 0: as fast as possible")
        ->check(CLI::Range(0.0, 1e8));
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
    if (o.socket.empty() && !o.self) {
        fmt::print(stderr, "blkbench: --socket or --self is required\n");
        return 2;
    }
    if (!cpus.empty()) {
        auto c = app::parse_cpu_list(cpus);
        if (!c.ok()) die("--cpus", c.error());
        o.cpus = c.value();
    }
    bool poll_mode = o.notify == "poll";
    uint32_t qsize = 256;
    while (qsize < o.qd * 3) qsize *= 2;

    std::unique_ptr<driver::Frontend> fe_holder;
    uint64_t f = virtio::kFVersion1 | virtio::kFEventIdx | virtio::kFIndirectDesc;
    uint64_t capacity = (1ull << 30) / 512;
    bool inflight_on = false;
    driver::InflightFd inflight;
    if (!o.self) {
        auto fe_r = driver::Frontend::connect(o.socket);
        CHECK(fe_r, "connect");
        fe_holder = std::move(fe_r).value();
        auto& fe = *fe_holder;
        auto feats = fe.get_features();
        CHECK(feats, "GET_FEATURES");
        uint64_t want = virtio::kFVersion1 | virtio::kFEventIdx | virtio::kFIndirectDesc | virtio::blk::kFFlush |
                        virtio::blk::kFMq | virtio::blk::kFBlkSize | virtio::blk::kFSegMax | vhost::kFProtocolFeatures;
        f = feats.value() & want;
        auto pf = fe.get_protocol_features();
        CHECK(pf, "GET_PROTOCOL_FEATURES");
        uint64_t want_pf = vhost::pf::kMq | vhost::pf::kReplyAck | vhost::pf::kConfig;
        if (!o.no_inflight) want_pf |= vhost::pf::kInflightShmfd;
        CHECK(fe.set_protocol_features(pf.value() & want_pf), "SET_PROTOCOL_FEATURES");
        inflight_on = (pf.value() & want_pf & vhost::pf::kInflightShmfd) != 0;
        auto nq = fe.get_queue_num();
        CHECK(nq, "GET_QUEUE_NUM");
        if (nq.value() < o.queues) {
            fmt::print(stderr, "blkbench: backend offers {} queues, {} asked\n", nq.value(), o.queues);
            return 1;
        }
        CHECK(fe.set_owner(), "SET_OWNER");
        auto cfg = fe.get_config(0, 60);
        CHECK(cfg, "GET_CONFIG");
        capacity = driver::parse_blk_config(cfg.value()).capacity;
        CHECK(fe.set_features(f), "SET_FEATURES");
    }
    uint64_t mem_bytes = 64ull << 20;
    while (mem_bytes < uint64_t{o.queues} * o.qd * (o.bs + 8192) * 2) mem_bytes *= 2;
    auto mem_r = driver::GuestMemory::create({{0, mem_bytes}});
    CHECK(mem_r, "guest memory");
    auto& mem = *mem_r.value();
    if (inflight_on) {
        // As QEMU's vhost-user-blk does: get the buffer once, hand it back before the rings start.
        uint16_t qs_size = 256;
        while (qs_size < o.qd * 3) qs_size = static_cast<uint16_t>(qs_size * 2);
        auto i = fe_holder->get_inflight_fd(static_cast<uint16_t>(o.queues), qs_size);
        CHECK(i, "GET_INFLIGHT_FD");
        inflight = std::move(i).value();
        CHECK(fe_holder->set_inflight_fd(inflight.fd.get(), inflight.desc), "SET_INFLIGHT_FD");
    }
    if (!o.self) CHECK(fe_holder->set_mem_table(mem), "SET_MEM_TABLE");

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
        if (!o.self) CHECK(fe_holder->setup_queue(i, *qs[i].dq, qs[i].kick.get(), qs[i].call.get(), true), "queue setup");
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
        auto submit = [&](uint32_t slot) -> uint16_t {
            auto& r = q.reqs[slot];
            r.rearm(r.type(), next_sector());
            auto head = r.submit(*q.dq);
            if (!head.ok()) die("submit", head.error());
            slot_of[head.value()] = slot;
            start[head.value()] = Clock::now();
            return head.value();
        };
        // Open loop: requests are due every `interval`; free slots wait on a stack.
        const bool paced = o.rate > 0;
        const auto interval = std::chrono::duration_cast<Clock::duration>(
            std::chrono::duration<double>(paced ? o.queues / o.rate : 0.0));
        auto due = Clock::now();
        std::vector<uint32_t> free_slots;
        std::vector<Clock::time_point> sched(qsize);
        auto submit_due = [&]() {
            uint32_t n = 0;
            auto now = Clock::now();
            while (!free_slots.empty() && due <= now) {
                uint32_t slot = free_slots.back();
                free_slots.pop_back();
                sched[submit(slot)] = due;  // latency counts from the schedule
                due += interval;
                ++n;
            }
            return n;
        };
        if (paced) {
            for (uint32_t k = 0; k < o.qd; ++k) free_slots.push_back(o.qd - 1 - k);
            submit_due();
        } else {
            for (uint32_t k = 0; k < o.qd; ++k) submit(k);
        }
        q.dq->publish();
        if (q.dq->kick_prepare()) eventfd_write(q.kick.get(), 1), ++q.res.kicks;
        while (phase.load(std::memory_order_relaxed) < 2) {
            if (!poll_mode && !q.dq->has_used()) {
                pollfd p{q.call.get(), POLLIN, 0};
                timespec ts{0, 100'000'000};
                if (paced) {
                    auto wait = std::max<Clock::duration>(due - Clock::now(), Clock::duration::zero());
                    if (free_slots.empty()) wait = std::chrono::milliseconds(100);
                    ts.tv_sec = std::chrono::duration_cast<std::chrono::seconds>(wait).count();
                    ts.tv_nsec = (std::chrono::duration_cast<std::chrono::nanoseconds>(wait) % std::chrono::seconds(1)).count();
                }
                int pr = ::ppoll(&p, 1, &ts, nullptr);
                if (pr > 0) {
                    eventfd_t v;
                    eventfd_read(q.call.get(), &v);
                    if (phase.load(std::memory_order_relaxed) == 1) ++q.res.calls;
                } else if (!paced) {
                    continue;
                }
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
                    auto t0 = paced ? sched[u->id] : start[u->id];
                    q.res.lat.add(static_cast<uint64_t>(std::chrono::nanoseconds(now - t0).count()));
                    ++q.res.ios;
                }
                if (paced) {
                    free_slots.push_back(slot);
                } else {
                    submit(slot);
                    ++n;
                }
            }
            if (paced) n += submit_due();
            if (n > 0) {
                q.dq->publish();
                if (q.dq->kick_prepare()) {
                    eventfd_write(q.kick.get(), 1);
                    if (measuring) ++q.res.kicks;
                }
            }
        }
    };
    // --self: the trivial device, one spinning thread per queue (pinned after the workers' CPUs).
    std::vector<std::thread> responders;
    std::shared_ptr<const shm::MemoryMap> self_map;
    if (o.self) {
        std::vector<std::shared_ptr<const shm::Region>> regs;
        for (const auto& r : mem.regions()) {
            auto m = shm::Region::map(r.desc(), r.fd());
            CHECK(m, "map guest memory");
            regs.push_back(m.value());
        }
        auto mm = shm::MemoryMap::build(regs);
        CHECK(mm, "memory map");
        self_map = mm.value();
        for (uint32_t qi = 0; qi < o.queues; ++qi) {
            responders.emplace_back([&, qi] {
                if (!o.cpus.empty()) {
                    cpu_set_t set;
                    CPU_ZERO(&set);
                    CPU_SET(o.cpus[(qi + o.queues) % o.cpus.size()], &set);
                    pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
                }
                Q& q = qs[qi];
                virtio::SplitQueue vq;
                virtio::QueueLayout l{static_cast<uint16_t>(qsize), q.dq->desc_uva(), q.dq->avail_uva(), q.dq->used_uva()};
                CHECK(vq.activate(self_map, l, 0, (f & virtio::kFEventIdx) != 0, true), "responder queue");
                vq.disable_notify();
                std::vector<iovec> iov(256);
                while (phase.load(std::memory_order_relaxed) < 2) {
                    auto n = vq.pending();
                    if (!n.ok() || *n == 0) continue;
                    for (uint16_t i = 0; i < *n; ++i) {
                        auto head = vq.pop_head();
                        if (!head.ok()) break;
                        virtio::Chain c;
                        virtio::ChainError ce;
                        uint32_t len = 0;
                        if (vq.walk(*head, iov, &c, &ce) && c.n_writable > 0) {
                            const iovec& last = iov[c.n_readable + c.n_writable - 1];
                            static_cast<uint8_t*>(last.iov_base)[last.iov_len - 1] = virtio::blk::kSOk;
                            len = static_cast<uint32_t>(c.writable_bytes);
                        }
                        vq.push_used(*head, len);
                    }
                    if (vq.publish_used() && vq.needs_notify()) eventfd_write(q.call.get(), 1);
                }
            });
        }
    }
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
    for (auto& t : responders) t.join();
    if (!o.self) {
        for (uint32_t i = 0; i < o.queues; ++i) (void)fe_holder->get_vring_base(i);
    }

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
