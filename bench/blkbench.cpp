// blkbench: a vhost-user-blk load generator. It connects to any vhost-user-blk socket the way
// QEMU does (features, protocol features, memfd guest memory, split rings or packed ones (--packed), kick/call eventfds,
// EVENT_IDX honoured both ways) and drives it from one thread per queue, like a guest driver that
// never sleeps. Reports IOPS, MB/s, latency percentiles (log-linear histogram), kicks and calls
// per request, and the backend's CPU time over the measured window (--backend-pid).
//
// --rate N: open loop at N requests/s in total (up to --qd outstanding per queue); latency counts
// from each request's scheduled time, so a backend that falls behind is not flattered
// (no coordinated omission). Backend CPU per request at a fixed rate is the efficiency figure.
// --self: no backend at all: an in-process responder thread per queue completes every request
// straight from the ring (device-side SplitQueue, status OK). That is the generator's own
// ceiling: a backend cannot be measured faster than this. With --verify the responder also
// stores what is written (in anonymous memory) and returns it on reads, so verify can pass.
// --rw randrw --rwmix-read P: each request is a read with probability P %, else a write.
// --verify (randrw only): every write carries a pattern per 512-byte sector (its LBA, the
// block's write generation, the run's seed, seed-derived filler); every read of a block this
// run has written (and whose write completed) must return exactly the last such pattern.
// Blocks not yet written by this run may hold anything and are not checked. Each queue owns a
// disjoint block range and never has two requests on one block in flight, so the expected
// content is always known. Mismatches are counted (verify_errors), the first few printed, and
// the exit status is 3.
// --idle: connect, start the rings, send nothing for --seconds: the backend's idle CPU.
// --bad: a guest's error storm: every request is aimed past the device's end; the backend must
// answer each with an I/O error (anything else fails the run) and keep its log bounded.
//
//   blkbench (--socket S | --self) [--queues 1] [--qd 32] [--bs 4096]
//            [--rw randread|randwrite|randrw|read|write] [--rwmix-read 50] [--verify] [--seed N]
//            [--size BYTES] [--rate 0] [--seconds 5] [--ramp 1] [--notify poll|call] [--idle]
//            [--cpus 1,..] [--backend-pid PID] [--json]
// Exit status: 0 ok; 1 error (a request the backend failed, no completion at all in the measured
// window, or a backend that no longer answers after the run); 2 usage; 3 verify mismatch.
#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include "app/device_spec.hpp"
#include "bench/histogram.hpp"
#include "bench/light_load.hpp"
#include "shm/memory_map.hpp"
#include "testing/frontend.hpp"
#include "testing/blk_driver.hpp"
#include "testing/driver_queue.hpp"
#include "testing/packed_driver_queue.hpp"
#include "vhost/mem_table.hpp"
#include "virtio/iov.hpp"
#include "virtio/virtqueue.hpp"

using namespace vhostd;
using Clock = std::chrono::steady_clock;

namespace {

using vhostd::bench::Histogram;

struct Options {
    std::string socket;
    uint32_t queues = 1, qd = 32, bs = 4096;
    std::string rw = "randread", notify = "poll";
    uint32_t rwmix_read = 50;  // randrw: percent of reads
    double seconds = 5, ramp = 1;
    std::vector<int> cpus;
    int backend_pid = 0;
    bool json = false;
    double rate = 0;  // total requests/s; 0: closed loop
    bool self = false;
    bool no_inflight = false;
    bool packed = false;
    bool verify = false;
    bool idle = false;
    bool bad = false;
    uint64_t seed = 0;
    uint64_t size = 0;  // working set in bytes from LBA 0; 0: the whole device
    bench::LightOptions light;  // --light-*: neighbours at a low rate (the density cell)
};

struct QueueResult {
    Histogram lat, rlat, wlat;
    uint64_t ios = 0, reads = 0, writes = 0, kicks = 0, calls = 0;
    // Every request the backend took over the whole run (ramp, window, and the ones still in flight
    // at the end, which it completes when the rings stop; not the ones it had not yet taken when
    // GET_VRING_BASE stopped it): what a backend's own request counters must show afterwards.
    uint64_t sent_reads = 0, sent_writes = 0;
    // Verify counters cover the whole run (ramp included): correctness is not a timed figure.
    uint64_t verify_checked = 0, verify_unwritten = 0, verify_errors = 0;
};

// The backend process's CPU time in ns: its process CPU clock (all threads, dead ones included,
// ns resolution); /proc/PID/stat utime+stime (clock ticks) if that clock is unavailable.
uint64_t process_cpu_ns(int pid) {
    clockid_t cid;
    timespec ts{};
    if (clock_getcpuclockid(pid, &cid) == 0 && clock_gettime(cid, &ts) == 0)
        return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(ts.tv_nsec);
    std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
    std::string s((std::istreambuf_iterator<char>(f)), {});
    auto p = s.rfind(')');
    if (p == std::string::npos) return 0;
    std::istringstream in(s.substr(p + 2));
    std::string tok;
    uint64_t ut = 0, st = 0;
    for (int i = 3; i <= 15 && in >> tok; ++i) {
        if (i == 14) ut = std::strtoull(tok.c_str(), nullptr, 10);
        if (i == 15) st = std::strtoull(tok.c_str(), nullptr, 10);
    }
    return (ut + st) * 1'000'000'000ull / static_cast<uint64_t>(sysconf(_SC_CLK_TCK));
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

// ---- verify pattern: per 512-byte sector, 64 words (host byte order):
// [0] the sector's LBA, [1] the block's write generation, [2] the run's seed,
// [3..63] splitmix64 stream seeded from (seed, lba, generation).
constexpr uint32_t kSector = 512;
constexpr uint32_t kWords = kSector / 8;

uint64_t splitmix64(uint64_t& s) {
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void fill_sector(uint8_t* out, uint64_t lba, uint64_t gen, uint64_t seed) {
    uint64_t w[kWords];
    w[0] = lba;
    w[1] = gen;
    w[2] = seed;
    uint64_t s = seed ^ (lba * 0xd1342543de82ef95ull) ^ (gen * 0xc2b2ae3d27d4eb4full);
    for (uint32_t i = 3; i < kWords; ++i) w[i] = splitmix64(s);
    std::memcpy(out, w, kSector);
}

uint64_t word_at(const uint8_t* p, uint32_t i) {
    uint64_t v;
    std::memcpy(&v, p + 8 * i, 8);
    return v;
}

constexpr int kVerifyReportMax = 5;
std::atomic<int> g_verify_reported{0};

}  // namespace

// The run's clock: ramp, then the measured window (phase 1), then stop (phase 2). Returns the
// window's length and the backend's CPU time over it (seconds).
struct Window {
    Clock::time_point t0, t1;
    double secs = 0, cpu_s = 0;
};
Window run_window(const Options& o, std::atomic<int>& phase) {
    Window w;
    std::this_thread::sleep_for(std::chrono::duration<double>(o.ramp));
    uint64_t cpu0 = o.backend_pid ? process_cpu_ns(o.backend_pid) : 0;
    w.t0 = Clock::now();
    phase = 1;
    std::this_thread::sleep_for(std::chrono::duration<double>(o.seconds));
    phase = 2;
    w.t1 = Clock::now();
    uint64_t cpu1 = o.backend_pid ? process_cpu_ns(o.backend_pid) : 0;
    w.secs = std::chrono::duration<double>(w.t1 - w.t0).count();
    w.cpu_s = static_cast<double>(cpu1 - cpu0) / 1e9;
    return w;
}

// Only light neighbours (no --socket): their latency alone, or with --light-rate 0 the backend's
// idle CPU with all of them connected.
int run_light_only(const Options& o, bench::LightLoad& light) {
    std::atomic<int> phase{0};
    std::thread t([&] { light.run(phase); });
    const Window w = run_window(o, phase);
    t.join();
    const double secs = w.secs;
    const double cpu_s = w.cpu_s;
    auto us = [](uint64_t ns) { return static_cast<double>(ns) / 1e3; };
    if (o.json) {
        fmt::print("{{\"mode\":\"light\",\"light_count\":{},\"light_rate\":{:.0f},\"seconds\":{:.3f},"
                   "\"light_iops\":{:.0f},\"light_p50_us\":{:.2f},\"light_p99_us\":{:.2f},\"light_late\":{},"
                   "\"light_errors\":{},\"light_cpu_pct\":{:.1f},\"backend_cpu_s\":{:.4f},\"backend_cpu_pct\":{:.3f}}}\n",
                   light.size(), o.light.rate, secs, static_cast<double>(light.ios) / secs,
                   us(light.lat.percentile(50)), us(light.lat.percentile(99)), light.late, light.errors,
                   100.0 * static_cast<double>(light.cpu_ns) / 1e9 / secs, cpu_s, 100.0 * cpu_s / secs);
    } else {
        fmt::print("light: {} device(s) at {:.0f}/s each: {:.0f} IOPS, p50 {:.2f} us, p99 {:.2f} us, {} late, {} "
                   "errors",
                   light.size(), o.light.rate, static_cast<double>(light.ios) / secs, us(light.lat.percentile(50)),
                   us(light.lat.percentile(99)), light.late, light.errors);
        if (o.backend_pid) fmt::print("; backend cpu {:.4f} s ({:.3f} % of one CPU)", cpu_s, 100.0 * cpu_s / secs);
        fmt::print("\n");
    }
    if (light.errors > 0) return 1;
    if (o.light.rate > 0 && light.ios == 0) return 1;
    return 0;
}

int main(int argc, char** argv) {
    Options o;
    CLI::App cli{"blkbench - vhost-user-blk load generator"};
    std::string cpus, size_text;
    auto* sock_opt = cli.add_option("--socket", o.socket, "vhost-user-blk socket");
    cli.add_flag("--self", o.self, "measure the generator itself against an in-process responder")->excludes(sock_opt);
    cli.add_flag("--packed", o.packed, "packed virtqueues (VIRTIO_F_RING_PACKED) instead of split ones");
    cli.add_flag("--no-inflight", o.no_inflight,
                 "do not use the backend's inflight buffer (QEMU uses it whenever a blk backend offers it)");
    cli.add_option("--rate", o.rate, "fixed total request rate per second (open loop); 0: as fast as possible")
        ->check(CLI::Range(0.0, 1e8));
    cli.add_option("--queues", o.queues)->check(CLI::Range(1u, 16u));
    cli.add_option("--qd", o.qd, "queue depth per queue")->check(CLI::Range(1u, 256u));
    cli.add_option("--bs", o.bs, "block size in bytes (a multiple of 512)")->check(CLI::Range(512u, 1u << 20));
    cli.add_option("--rw", o.rw)->check(CLI::IsMember({"randread", "randwrite", "randrw", "read", "write"}));
    auto* mix_opt = cli.add_option("--rwmix-read", o.rwmix_read, "randrw: percentage of reads (default 50)")
                        ->check(CLI::Range(0u, 100u));
    cli.add_flag("--verify", o.verify,
                 "randrw: writes carry a per-sector pattern, reads of blocks this run wrote are checked");
    auto* seed_opt = cli.add_option("--seed", o.seed, "verify pattern seed (default: random, printed)");
    cli.add_option("--size", size_text, "working set from LBA 0 (K/M/G suffixes); default the whole device");
    cli.add_option("--seconds", o.seconds, "measured time");
    cli.add_option("--ramp", o.ramp, "warm-up time before measuring");
    cli.add_option("--notify", o.notify, "poll: spin on the used ring; call: sleep on the call eventfd")
        ->check(CLI::IsMember({"poll", "call"}));
    cli.add_flag("--idle", o.idle, "start the rings and send no I/O: report the backend's idle CPU");
    cli.add_flag("--bad", o.bad,
                 "an error storm: every request lies past the device's end and must fail with an I/O error");
    cli.add_option("--cpus", cpus, "pin queue thread i to the i-th CPU");
    cli.add_option("--backend-pid", o.backend_pid, "report this process's CPU time over the window");
    cli.add_option("--light-sockets", o.light.socket_fmt,
                   "light neighbours: socket paths with {} for the number 0..N-1 (one queue each, call mode)");
    cli.add_option("--light-count", o.light.count, "number of light neighbours")->check(CLI::Range(0u, 65536u));
    cli.add_option("--light-rate", o.light.rate, "requests/s per light neighbour, 4 KiB reads (0: connect, stay idle)")
        ->check(CLI::Range(0.0, 1e6));
    cli.add_flag("--light-rt", o.light.realtime, "run the light neighbours' thread SCHED_FIFO (when allowed)");
    cli.add_flag("--json", o.json, "one JSON object on stdout");
    CLI11_PARSE(cli, argc, argv);
    auto usage = [](const std::string& msg) {
        fmt::print(stderr, "blkbench: {}\n", msg);
        return 2;
    };
    if ((o.light.count > 0) != !o.light.socket_fmt.empty())
        return usage("--light-sockets and --light-count go together");
    if (o.socket.empty() && !o.self && o.light.count == 0) return usage("--socket or --self is required");
    {
        // Every light neighbour holds a socket, a memfd and two eventfds.
        rlimit rl{};
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
            rl.rlim_cur = rl.rlim_max;
            setrlimit(RLIMIT_NOFILE, &rl);
        }
    }
    std::unique_ptr<bench::LightLoad> light;
    if (o.light.count > 0) {
        auto l = bench::LightLoad::connect(o.light);
        CHECK(l, "light neighbours");
        light = std::move(l).value();
    }
    if (o.socket.empty() && !o.self) return run_light_only(o, *light);
    if (o.bs % kSector != 0) return usage("--bs must be a multiple of 512");
    if (mix_opt->count() > 0 && o.rw != "randrw") return usage("--rwmix-read only applies to --rw randrw");
    if (o.verify && o.rw != "randrw")
        return usage("--verify checks reads against this run's own writes: it needs --rw randrw "
                     "(a read-only run has nothing to compare with, a write-only run reads nothing back)");
    if (o.verify && (o.rwmix_read == 0 || o.rwmix_read == 100))
        return usage("--verify needs both reads and writes: --rwmix-read must be between 1 and 99");
    if (seed_opt->count() > 0 && !o.verify) return usage("--seed only applies to --verify");
    if (o.bad && (o.self || o.verify || o.idle)) return usage("--bad excludes --self, --verify and --idle");
    if (o.idle && (o.self || o.verify || o.rate > 0))
        return usage("--idle sends no I/O: it excludes --self, --verify and --rate");
    if (o.packed && o.self) return usage("--packed needs a backend: the --self responder serves split rings");
    if (o.idle && o.backend_pid == 0) return usage("--idle measures the backend's CPU: give --backend-pid");
    if (!size_text.empty()) {
        auto s = app::parse_size(size_text);
        if (!s.ok()) die("--size", s.error());
        o.size = s.value();
    }
    if (!cpus.empty()) {
        auto c = app::parse_cpu_list(cpus);
        if (!c.ok()) die("--cpus", c.error());
        o.cpus = c.value();
    }
    if (o.verify && seed_opt->count() == 0) o.seed = std::random_device{}() | (uint64_t{std::random_device{}()} << 32);
    bool poll_mode = o.notify == "poll";
    uint32_t qsize = 256;
    while (qsize < o.qd * 3) qsize *= 2;

    std::unique_ptr<testing::Frontend> fe_holder;
    uint64_t f = virtio::kFVersion1 | virtio::kFEventIdx | virtio::kFIndirectDesc;
    uint64_t capacity = (1ull << 30) / 512;
    bool inflight_on = false;
    testing::InflightFd inflight;
    if (!o.self) {
        auto fe_r = testing::Frontend::connect(o.socket);
        CHECK(fe_r, "connect");
        fe_holder = std::move(fe_r).value();
        auto& fe = *fe_holder;
        auto feats = fe.get_features();
        CHECK(feats, "GET_FEATURES");
        uint64_t want = virtio::kFVersion1 | virtio::kFEventIdx | virtio::kFIndirectDesc | virtio::blk::kFFlush |
                        virtio::blk::kFMq | virtio::blk::kFBlkSize | virtio::blk::kFSegMax | vhost::kFProtocolFeatures;
        if (o.packed) {
            if (!(feats.value() & virtio::kFRingPacked)) {
                fmt::print(stderr, "blkbench: the backend does not offer packed virtqueues\n");
                return 1;
            }
            want |= virtio::kFRingPacked;
        }
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
        capacity = testing::parse_blk_config(cfg.value()).capacity;
        CHECK(fe.set_features(f), "SET_FEATURES");
    }

    // Working set: blocks of --bs from LBA 0; queue i owns the i-th of --queues equal slices.
    uint64_t span_bytes = capacity * kSector;
    if (o.size > 0) {
        if (o.size > span_bytes) {
            fmt::print(stderr, "blkbench: --size {} is larger than the device ({} bytes)\n", o.size, span_bytes);
            return 2;
        }
        span_bytes = o.size;
    }
    const uint64_t blocks = span_bytes / o.bs;
    const uint64_t per_queue = blocks / o.queues;
    if (per_queue == 0) {
        fmt::print(stderr, "blkbench: {} blocks of {} bytes cannot be split over {} queues\n", blocks, o.bs,
                   o.queues);
        return 2;
    }
    if (o.verify && per_queue <= o.qd) {
        fmt::print(stderr,
                   "blkbench: --verify keeps at most one request per block in flight: each queue needs more "
                   "than --qd {} blocks, it has {}\n",
                   o.qd, per_queue);
        return 2;
    }

    const bool random_access = o.rw.rfind("rand", 0) == 0;
    const bool mixed = o.rw == "randrw";
    const bool any_read = o.rw == "randread" || o.rw == "read" || o.rw == "randrw";
    const bool any_write = o.rw == "randwrite" || o.rw == "write" || o.rw == "randrw";
    uint64_t mem_bytes = 64ull << 20;
    while (mem_bytes < uint64_t{o.queues} * o.qd * (o.bs + 8192) * 3) mem_bytes *= 2;
    auto mem_r = testing::GuestRam::create({{0, mem_bytes}});
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

    struct Slot {
        uint64_t block = 0;  // relative to the queue's first block
        uint64_t gen = 0;    // verify: the generation a write carries
        bool write = false;
    };
    struct Q {
        std::unique_ptr<testing::DriverQueue> dq;         // split rings
        std::unique_ptr<testing::PackedDriverQueue> pq;   // --packed
        Result<uint16_t> add(const testing::GuestBlkRequest& r) {
            return pq ? pq->add_chain(r.bufs(), r.indirect()) : r.submit(*dq);
        }
        void publish() { pq ? pq->publish() : dq->publish(); }
        bool kick_prepare() { return pq ? pq->kick_prepare() : dq->kick_prepare(); }
        bool has_used() const { return pq ? pq->has_used() : dq->has_used(); }
        uint16_t used_ready() const { return pq ? pq->used_ready() : dq->used_ready(); }
        std::optional<virtio::UsedElem> pop_used() { return pq ? pq->pop_used() : dq->pop_used(); }
        UniqueFd kick, call;
        std::vector<testing::GuestBlkRequest> rd, wr;  // indexed by slot (empty if the mix has none)
        std::vector<Slot> slots;
        std::vector<uint32_t> slot_of;  // head -> slot of the request it carries
        // verify state of the queue's own blocks
        std::vector<uint64_t> gen;  // generation of the last completed write, 0: not written by this run
        std::vector<uint8_t> busy;  // a request to the block is in flight
        uint64_t next_gen = 0;
        QueueResult res;
    };
    std::vector<Q> qs(o.queues);
    for (uint32_t i = 0; i < o.queues; ++i) {
        qs[i].kick.reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
        qs[i].call.reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
        if (o.packed) {
            auto pq = testing::PackedDriverQueue::create(mem, static_cast<uint16_t>(qsize), (f & virtio::kFEventIdx) != 0);
            CHECK(pq, "driver queue");
            qs[i].pq = std::move(pq).value();
            qs[i].pq->enable_call(!poll_mode);
            CHECK(fe_holder->setup_packed_queue(i, *qs[i].pq, qs[i].kick.get(), qs[i].call.get(), true), "queue setup");
        } else {
            auto dq = testing::DriverQueue::create(mem, static_cast<uint16_t>(qsize), (f & virtio::kFEventIdx) != 0);
            CHECK(dq, "driver queue");
            qs[i].dq = std::move(dq).value();
            qs[i].dq->enable_call(!poll_mode);
            if (!o.self)
                CHECK(fe_holder->setup_queue(i, *qs[i].dq, qs[i].kick.get(), qs[i].call.get(), true), "queue setup");
        }
        if (o.idle) continue;
        qs[i].slots.resize(o.qd);
        qs[i].slot_of.resize(qsize);
        for (uint32_t k = 0; k < o.qd; ++k) {
            if (any_read) {
                auto r = testing::make_blk_read(mem, 0, o.bs);
                CHECK(r, "request");
                qs[i].rd.push_back(std::move(r).value());
            }
            if (any_write) {
                std::vector<uint8_t> data(o.bs, 0x5a);
                auto r = testing::make_blk_write(mem, 0, data);
                CHECK(r, "request");
                qs[i].wr.push_back(std::move(r).value());
            }
        }
        if (o.verify) {
            qs[i].gen.assign(per_queue, 0);
            qs[i].busy.assign(per_queue, 0);
        }
    }

    // Checks one completed read against the block's last written generation. Returns false on a
    // mismatch (after reporting the first few).
    auto check_read = [&](uint32_t qi, uint64_t first_lba, uint64_t gen, const uint8_t* data) {
        alignas(8) uint8_t want[kSector];
        for (uint32_t s = 0; s < o.bs / kSector; ++s) {
            const uint8_t* got = data + uint64_t{s} * kSector;
            fill_sector(want, first_lba + s, gen, o.seed);
            if (std::memcmp(want, got, kSector) == 0) continue;
            if (g_verify_reported.fetch_add(1) < kVerifyReportMax) {
                uint32_t off = 0;
                while (off < kSector && want[off] == got[off]) ++off;
                fmt::print(stderr,
                           "blkbench: verify mismatch: queue {} lba {} (block at lba {}): expected lba {} gen {} "
                           "seed {:#x}, read lba {} gen {} seed {:#x}; first differing byte {} of the sector\n",
                           qi, first_lba + s, first_lba, first_lba + s, gen, o.seed, word_at(got, 0),
                           word_at(got, 1), word_at(got, 2), off);
            }
            return false;
        }
        return true;
    };

    std::atomic<int> phase{0};  // 0 ramp, 1 measure, 2 stop
    auto worker = [&](uint32_t qi) {
        if (!o.cpus.empty()) {
            cpu_set_t set;
            CPU_ZERO(&set);
            CPU_SET(o.cpus[qi % o.cpus.size()], &set);
            pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
        }
        Q& q = qs[qi];
        std::mt19937_64 rng(qi * 7919 + 1);
        const uint64_t base = qi * per_queue;  // first block of this queue's slice
        const uint64_t spb = o.bs / kSector;
        uint64_t seq = 0;
        std::vector<Clock::time_point> start(qsize);
        auto& slot_of = q.slot_of;
        auto submit = [&](uint32_t slot) -> uint16_t {
            Slot& s = q.slots[slot];
            s.write = mixed ? rng() % 100 >= o.rwmix_read : any_write;
            uint64_t b = random_access ? rng() % per_queue : seq++ % per_queue;
            if (o.verify) {
                // Never two requests on one block: take the next idle block (per_queue > qd).
                while (q.busy[b]) b = b + 1 == per_queue ? 0 : b + 1;
                q.busy[b] = 1;
            }
            s.block = b;
            auto& r = s.write ? q.wr[slot] : q.rd[slot];
            const uint64_t lba = (base + b) * spb;
            if (o.verify) {
                auto d = r.data();
                if (s.write) {
                    s.gen = ++q.next_gen;
                    for (uint64_t k = 0; k < spb; ++k) fill_sector(d.data() + k * kSector, lba + k, s.gen, o.seed);
                } else {
                    std::memset(d.data(), 0xa5, d.size());  // a device that writes nothing cannot pass
                }
            }
            r.rearm(r.type(), o.bad ? capacity + lba : lba);
            auto head = q.add(r);
            if (!head.ok()) die("submit", head.error());
            ++(s.write ? q.res.sent_writes : q.res.sent_reads);
            slot_of[head.value()] = slot;
            start[head.value()] = Clock::now();
            // Visible at once, as Linux's virtqueue_add_split() does: the device starts on it
            // while we prepare the next. (Publishing a whole batch with one store instead makes
            // the queue's depth travel between the two sides as one convoy, each side idle while
            // the other works: that measured the generator, not the backend.) Only the kick waits
            // for the end of the batch.
            q.publish();
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
        q.publish();
        if (q.kick_prepare()) eventfd_write(q.kick.get(), 1), ++q.res.kicks;
        while (phase.load(std::memory_order_relaxed) < 2) {
            if (!poll_mode && !q.has_used()) {
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
            if (poll_mode && !paced && !q.has_used()) continue;  // spin on the used index alone
            bool measuring = phase.load(std::memory_order_relaxed) == 1;
            // Only what was complete when `now` was read: requests are published as they are
            // added below, so the device may complete one of them while this loop runs, and its
            // latency must not be taken against an earlier clock.
            const uint16_t ready = q.used_ready();
            auto now = Clock::now();
            uint32_t n = 0;
            for (uint16_t k = 0; k < ready; ++k) {
                auto u = q.pop_used();
                if (!u) break;
                uint32_t slot = slot_of[u->id];
                Slot& s = q.slots[slot];
                auto& r = s.write ? q.wr[slot] : q.rd[slot];
                if (r.status() != (o.bad ? virtio::blk::kSIoErr : virtio::blk::kSOk)) {
                    fmt::print(stderr, "blkbench: {} at lba {} failed with status {}\n", s.write ? "write" : "read",
                               r.sector(), r.status());
                    std::exit(1);
                }
                if (o.verify) {
                    q.busy[s.block] = 0;
                    if (s.write) {
                        q.gen[s.block] = s.gen;
                    } else if (q.gen[s.block] == 0) {
                        ++q.res.verify_unwritten;
                    } else {
                        ++q.res.verify_checked;
                        if (!check_read(qi, r.sector(), q.gen[s.block], r.data().data())) ++q.res.verify_errors;
                    }
                }
                if (measuring) {
                    auto t0 = paced ? sched[u->id] : start[u->id];
                    if (now < t0) die("generator", make_error(Errc::kState, "completion seen before its submission"));
                    auto ns = static_cast<uint64_t>(std::chrono::nanoseconds(now - t0).count());
                    q.res.lat.add(ns);
                    (s.write ? q.res.wlat : q.res.rlat).add(ns);
                    ++q.res.ios;
                    ++(s.write ? q.res.writes : q.res.reads);
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
                q.publish();
                if (q.kick_prepare()) {
                    eventfd_write(q.kick.get(), 1);
                    if (measuring) ++q.res.kicks;
                }
            }
        }
    };
    // --self: the trivial device, one spinning thread per queue (pinned after the workers' CPUs).
    // With --verify it keeps the written data (anonymous memory the size of the working set,
    // populated up front: a page first faulted in by the responder while the generator runs on
    // the other CPU costs a TLB-shootdown IPI) and serves reads from it; otherwise it touches no
    // data at all.
    std::vector<std::thread> responders;
    std::shared_ptr<const shm::MemoryMap> self_map;
    uint8_t* store = nullptr;
    const uint64_t store_bytes = span_bytes;
    if (o.self) {
        if (o.verify) {
            void* p = mmap(nullptr, store_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE,
                           -1, 0);
            if (p == MAP_FAILED) {
                fmt::print(stderr, "blkbench: --self store of {} bytes: {}\n", store_bytes, std::strerror(errno));
                return 1;
            }
            store = static_cast<uint8_t*>(p);
        }
        std::vector<std::shared_ptr<const shm::Region>> regs;
        for (const auto& r : mem.regions()) {
            auto m = shm::Region::map(vhost::to_region_desc(r.desc()), r.fd());
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
                // Serves one request from the store; returns the status.
                auto serve = [&](const virtio::Chain& c) -> uint8_t {
                    virtio::blk::ReqHeader h{};
                    if (virtio::iov_copy_from(iov.data(), c.n_readable, &h, sizeof h) != sizeof h ||
                        c.writable_bytes == 0)
                        return virtio::blk::kSIoErr;
                    const iovec* w = iov.data() + c.n_readable;
                    uint64_t len = h.type == virtio::blk::kTOut ? c.readable_bytes - sizeof h : c.writable_bytes - 1;
                    const uint64_t sectors = store_bytes / kSector;
                    if (h.sector > sectors || len > (sectors - h.sector) * kSector) return virtio::blk::kSIoErr;
                    uint8_t* at = store + h.sector * kSector;
                    if (h.type == virtio::blk::kTOut)
                        virtio::iov_read_at(iov.data(), c.n_readable, sizeof h, at, len);
                    else if (h.type == virtio::blk::kTIn)
                        virtio::iov_write_at(w, c.n_writable, 0, at, len);
                    return virtio::blk::kSOk;
                };
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
                            uint8_t st = store ? serve(c) : virtio::blk::kSOk;
                            static_cast<uint8_t*>(last.iov_base)[last.iov_len - 1] = st;
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
    if (!o.idle)
        for (uint32_t i = 0; i < o.queues; ++i) threads.emplace_back(worker, i);
    if (light) threads.emplace_back([&] { light->run(phase); });
    const Window w = run_window(o, phase);
    for (auto& t : threads) t.join();
    for (auto& t : responders) t.join();
    bool backend_lost = false;  // a backend that died or hung mid-run must not pass as a slow one
    if (!o.self) {
        for (uint32_t i = 0; i < o.queues; ++i) {
            auto r = fe_holder->get_vring_base(i);
            if (!r.ok()) {
                if (!backend_lost)
                    fmt::print(stderr, "blkbench: GET_VRING_BASE {} after the run: {} (backend gone?)\n", i,
                               r.error().describe());
                backend_lost = true;
                continue;
            }
            // The base is the backend's next avail index: what lies between it and ours was
            // published but never taken (a stopped ring leaves it for the next backend).
            Q& q = qs[i];
            if (q.slots.empty()) continue;
            if (q.pq) {
                // Packed: the chains from the backend's avail position to ours were never taken.
                virtio::PackedPos p{static_cast<uint16_t>(r.value() & 0x7fff), ((r.value() >> 15) & 1) != 0};
                const virtio::PackedPos end = q.pq->next_avail();
                for (uint32_t n = 0; !(p == end) && n < qsize; ++n) {
                    uint32_t len = 1;
                    virtio::PackedDesc d = q.pq->read_desc(p.idx);
                    while ((d.flags & virtio::kDescFNext) && len < qsize)
                        d = q.pq->read_desc(static_cast<uint16_t>((p.idx + len++) % qsize));
                    if (d.id < q.slot_of.size()) --(q.slots[q.slot_of[d.id]].write ? q.res.sent_writes : q.res.sent_reads);
                    const uint32_t idx = p.idx + len;
                    p = {static_cast<uint16_t>(idx % qsize), idx >= qsize ? !p.wrap : p.wrap};
                }
                continue;
            }
            const uint16_t avail = q.dq->read_avail_idx();
            if (static_cast<uint16_t>(avail - r.value()) > o.qd) {
                fmt::print(stderr, "blkbench: queue {}: backend's base {} is not within {} of avail {}\n", i,
                           r.value(), o.qd, avail);
                backend_lost = true;
                continue;
            }
            for (uint16_t k = static_cast<uint16_t>(r.value()); k != avail; ++k) {
                const uint16_t head = q.dq->read_avail_ring(k);
                if (head >= q.slot_of.size()) break;
                --(q.slots[q.slot_of[head]].write ? q.res.sent_writes : q.res.sent_reads);
            }
        }
    }
    if (store) munmap(store, store_bytes);

    QueueResult all;
    for (auto& q : qs) {
        all.lat.merge(q.res.lat);
        all.rlat.merge(q.res.rlat);
        all.wlat.merge(q.res.wlat);
        all.ios += q.res.ios;
        all.reads += q.res.reads;
        all.writes += q.res.writes;
        all.sent_reads += q.res.sent_reads;
        all.sent_writes += q.res.sent_writes;
        all.kicks += q.res.kicks;
        all.calls += q.res.calls;
        all.verify_checked += q.res.verify_checked;
        all.verify_unwritten += q.res.verify_unwritten;
        all.verify_errors += q.res.verify_errors;
    }
    const double secs = w.secs;
    const double iops = static_cast<double>(all.ios) / secs;
    const double cpu_s = w.cpu_s;
    const double per_io = all.ios ? 1.0 / static_cast<double>(all.ios) : 0;
    const double cpu_pct = 100.0 * cpu_s / secs;  // of one CPU
    const double cpu_us_per_io = cpu_s * 1e6 * per_io;
    const char* mode = o.idle ? "idle" : o.bad ? "bad" : o.rate > 0 ? "rate" : "closed";
    auto us = [](uint64_t ns) { return static_cast<double>(ns) / 1e3; };
    if (o.json) {
        fmt::print(
            "{{\"mode\":\"{}\",\"rw\":\"{}\",\"rwmix_read\":{},\"bs\":{},\"qd\":{},\"queues\":{},\"notify\":\"{}\","
            "\"rate\":{:.0f},\"seconds\":{:.3f},\"iops\":{:.0f},\"read_iops\":{:.0f},\"write_iops\":{:.0f},"
            "\"mbps\":{:.1f},\"lat_avg_us\":{:.2f},\"lat_p50_us\":{:.2f},\"lat_p99_us\":{:.2f},\"lat_p999_us\":{:.2f},"
            "\"lat_max_us\":{:.2f},\"lat_read_p50_us\":{:.2f},\"lat_read_p99_us\":{:.2f},\"lat_write_p50_us\":{:.2f},"
            "\"lat_write_p99_us\":{:.2f},\"kicks_per_io\":{:.4f},\"calls_per_io\":{:.4f},\"backend_cpu_s\":{:.4f},"
            "\"backend_cpu_pct\":{:.3f},\"backend_cpu_us_per_io\":{:.3f},\"iops_per_backend_cpu_s\":{:.0f},"
            "\"verify\":{},\"seed\":{},\"verify_checked\":{},\"verify_unwritten\":{},\"verify_errors\":{},"
            "\"sent_reads\":{},\"sent_writes\":{},\"light_count\":{},\"light_iops\":{:.0f},"
            "\"light_p50_us\":{:.2f},\"light_p99_us\":{:.2f},\"light_late\":{},\"light_errors\":{},\"light_rt\":{},"
            "\"light_cpu_pct\":{:.1f}}}\n",
            mode, o.rw, o.rw == "randrw" ? o.rwmix_read : (any_read ? 100 : 0), o.bs, o.qd, o.queues, o.notify,
            o.rate, secs, iops, static_cast<double>(all.reads) / secs, static_cast<double>(all.writes) / secs,
            iops * o.bs / 1e6, all.lat.avg() / 1e3, us(all.lat.percentile(50)), us(all.lat.percentile(99)),
            us(all.lat.percentile(99.9)), us(all.lat.max()), us(all.rlat.percentile(50)), us(all.rlat.percentile(99)),
            us(all.wlat.percentile(50)), us(all.wlat.percentile(99)), all.kicks * per_io, all.calls * per_io, cpu_s,
            cpu_pct, cpu_us_per_io, cpu_s > 0 ? static_cast<double>(all.ios) / cpu_s : 0.0,
            o.verify ? "true" : "false", o.seed, all.verify_checked, all.verify_unwritten, all.verify_errors,
            all.sent_reads, all.sent_writes, light ? light->size() : 0,
            light ? static_cast<double>(light->ios) / secs : 0.0, light ? us(light->lat.percentile(50)) : 0.0,
            light ? us(light->lat.percentile(99)) : 0.0, light ? light->late : 0, light ? light->errors : 0, light && light->realtime ? "true" : "false",
            light ? 100.0 * static_cast<double>(light->cpu_ns) / 1e9 / secs : 0.0);
    } else if (o.idle) {
        fmt::print("idle: {} queue(s) started, no I/O for {:.2f} s", o.queues, secs);
        if (o.backend_pid) fmt::print(": backend cpu {:.4f} s ({:.3f} % of one CPU)", cpu_s, cpu_pct);
        fmt::print("\n");
    } else {
        std::string mix = o.rw == "randrw" ? fmt::format(" rwmix-read={}", o.rwmix_read) : "";
        fmt::print("{}{} bs={} qd={} queues={} notify={}: {:.0f} IOPS, {:.1f} MB/s\n", o.rw, mix, o.bs, o.qd,
                   o.queues, o.notify, iops, iops * o.bs / 1e6);
        fmt::print("  latency us: avg {:.2f}  p50 {:.2f}  p99 {:.2f}  p99.9 {:.2f}  max {:.2f}\n", all.lat.avg() / 1e3,
                   us(all.lat.percentile(50)), us(all.lat.percentile(99)), us(all.lat.percentile(99.9)),
                   us(all.lat.max()));
        if (o.rw == "randrw")
            fmt::print("  reads {:.0f} IOPS p50 {:.2f} p99 {:.2f};  writes {:.0f} IOPS p50 {:.2f} p99 {:.2f}\n",
                       static_cast<double>(all.reads) / secs, us(all.rlat.percentile(50)), us(all.rlat.percentile(99)),
                       static_cast<double>(all.writes) / secs, us(all.wlat.percentile(50)),
                       us(all.wlat.percentile(99)));
        if (light)
            fmt::print("  light neighbours: {} at {:.0f}/s each: {:.0f} IOPS, p50 {:.2f} us, p99 {:.2f} us, {} late, "
                       "their thread {:.1f} % of a CPU\n",
                       light->size(), o.light.rate, static_cast<double>(light->ios) / secs,
                       us(light->lat.percentile(50)), us(light->lat.percentile(99)), light->late,
                       100.0 * static_cast<double>(light->cpu_ns) / 1e9 / secs);
        fmt::print("  kicks/io {:.4f}  calls/io {:.4f}", all.kicks * per_io, all.calls * per_io);
        if (o.backend_pid)
            fmt::print("  backend cpu {:.3f} s ({:.1f} % of one CPU, {:.2f} us per request)", cpu_s, cpu_pct,
                       cpu_us_per_io);
        fmt::print("\n");
        if (o.verify)
            fmt::print("  verify (seed {}): {} reads checked, {} of blocks not yet written, {} mismatches\n", o.seed,
                       all.verify_checked, all.verify_unwritten, all.verify_errors);
    }
    if (backend_lost) return 1;
    if (light && light->errors > 0) {
        fmt::print(stderr, "blkbench: {} light neighbour request(s) failed\n", light->errors);
        return 1;
    }
    if (!o.idle && all.ios == 0) {
        fmt::print(stderr, "blkbench: no request completed in the {:.2f} s measured window\n", secs);
        return 1;
    }
    if (all.verify_errors > 0) {
        fmt::print(stderr, "blkbench: verify failed: {} of {} checked reads did not return the data written\n",
                   all.verify_errors, all.verify_checked);
        return 3;
    }
    return 0;
}
