// Light neighbours for the density cell (blkbench --light-*): N vhost-user-blk devices, each
// connected as its own frontend (one queue of 16, its own small guest memory), each sent one
// 4 KiB read every 1/rate seconds (open loop, schedules spread evenly over the devices), in call
// mode: the device signals its call eventfd. One thread serves them all through an io_uring: a
// read kept armed on every call eventfd, kicks as eventfd writes on the same ring, one
// io_uring_enter per wake-up for everything due and everything completed (about a thousand devices
// at 100/s each are 100 k requests/s: with a syscall or four per request the generator, not the
// backend, would be the limit). Latency is from the kick to the completion seen. A request still in
// flight when its device's next one is due is counted late and sent when it completes.
#pragma once

#include <liburing.h>
#include <sys/eventfd.h>
#include <pthread.h>
#include <sched.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "bench/histogram.hpp"
#include "core/unique_fd.hpp"
#include "testing/blk_driver.hpp"
#include "testing/driver_queue.hpp"
#include "testing/frontend.hpp"
#include "virtio/blk_types.hpp"

namespace vhostd::bench {

struct LightOptions {
    std::string socket_fmt;  // "{}" becomes the device's number, 0 .. count-1
    uint32_t count = 0;
    double rate = 100;  // requests/s per device; 0: connect and stay idle
    bool realtime = false;  // run the thread SCHED_FIFO when allowed
};

class LightLoad {
public:
    using Clock = std::chrono::steady_clock;

    static Result<std::unique_ptr<LightLoad>> connect(const LightOptions& o) {
        auto l = std::unique_ptr<LightLoad>(new LightLoad(o));
        unsigned entries = 64;
        while (entries < 2 * o.count + 64 && entries < 32768) entries *= 2;
        io_uring_params p{};
        p.flags = IORING_SETUP_CQSIZE;
        p.cq_entries = 2 * entries;
        if (int rc = io_uring_queue_init_params(entries, &l->ring_, &p); rc < 0)
            return sys_error_code(-rc, "io_uring for the light neighbours");
        l->ring_ok_ = true;
        l->devs_.reserve(o.count);
        for (uint32_t i = 0; i < o.count; ++i) {
            std::string path = o.socket_fmt;
            auto at = path.find("{}");
            if (at != std::string::npos) path.replace(at, 2, std::to_string(i));
            auto d = l->connect_one(path, i);
            if (!d.ok()) return make_error(d.error().code, "light device {} ({}): {}", i, path, d.error().describe());
            l->devs_.push_back(std::move(d).value());
        }
        return l;
    }

    // Thread body: sends until phase reaches 2; measures while it is 1.
    void run(const std::atomic<int>& phase) {
        // Real-time on request (when allowed): a wake-up preempts a spinning hot thread on the same
        // CPU at once. Off by default: at a few 10 k wake-ups/s it starves that thread (measured: a
        // hot device's 4 M IOPS fell to 60 k at 255 neighbours), which then measures the generator.
        sched_param sp{.sched_priority = 1};
        realtime = o_.realtime && pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp) == 0;
        struct Cpu {  // the thread's CPU time while measuring: what the generator itself costs
            LightLoad& l;
            const std::atomic<int>& phase;
            int seen = 0;
            uint64_t t0 = 0;
            void tick() {
                int p = phase.load(std::memory_order_relaxed);
                if (p == seen) return;
                if (p >= 1 && seen == 0) t0 = thread_cpu_ns();
                if (p >= 2 && seen <= 1) l.cpu_ns = thread_cpu_ns() - t0;
                seen = p;
            }
        } cpu{*this, phase};
        if (o_.rate <= 0 || devs_.empty()) {
            while (phase.load() < 2) {
                cpu.tick();
                std::this_thread::sleep_for(std::chrono::milliseconds(10));
            }
            cpu.tick();
            return;
        }
        const double gap_ns = 1e9 / (o_.rate * static_cast<double>(devs_.size()));
        for (uint32_t i = 0; i < devs_.size(); ++i) arm_call(i);
        const auto t0 = Clock::now();
        uint64_t j = 0;  // global schedule index: device j % count, at t0 + j * gap
        while (phase.load(std::memory_order_relaxed) < 2) {
            cpu.tick();
            const bool measuring = phase.load(std::memory_order_relaxed) == 1;
            io_uring_cqe* cqe = nullptr;
            unsigned head = 0, seen = 0;
            io_uring_for_each_cqe(&ring_, head, cqe) {
                ++seen;
                uint64_t tag = cqe->user_data;
                if (tag & kKickTag) continue;  // a kick's write
                reap(static_cast<uint32_t>(tag), measuring);
            }
            io_uring_cq_advance(&ring_, seen);
            // Everything due within the next window goes now (at most one window early: the schedule
            // is open loop at 100/s per device, a few tens of µs do not matter to it).
            auto due = t0 + std::chrono::nanoseconds(static_cast<int64_t>(static_cast<double>(j) * gap_ns));
            auto now = Clock::now();
            while (due <= now + kWindow) {
                send(static_cast<uint32_t>(j % devs_.size()), measuring);
                ++j;
                due = t0 + std::chrono::nanoseconds(static_cast<int64_t>(static_cast<double>(j) * gap_ns));
            }
            // One wake-up per window when the backend is quick: wait for every request in flight to
            // complete (kicks post no CQE), or for the next window. A completion is timed when the
            // thread wakes, so a request that completed before the batch's last one counts a little
            // long: the bias is upward, and the generator's CPU stays small at 100 k requests/s.
            auto wait_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(due - kWindow - now).count();
            wait_ns = std::max<int64_t>(wait_ns, 1000);
            __kernel_timespec ts{.tv_sec = wait_ns / 1'000'000'000, .tv_nsec = wait_ns % 1'000'000'000};
            unsigned want = std::max(1u, in_flight_);
            io_uring_submit_and_wait_timeout(&ring_, &cqe, want, &ts, nullptr);
        }
        cpu.tick();
        // Withdraw the armed reads before the eventfds and buffers go.
        io_uring_sqe* sqe = get_sqe();
        if (sqe != nullptr) {
            io_uring_prep_cancel64(sqe, 0, IORING_ASYNC_CANCEL_ANY);
            io_uring_submit(&ring_);
        }
    }

    ~LightLoad() {
        if (ring_ok_) io_uring_queue_exit(&ring_);
    }

    Histogram lat;
    uint64_t ios = 0, late = 0, errors = 0;
    bool realtime = false;  // the thread ran SCHED_FIFO
    uint64_t cpu_ns = 0;    // the thread's CPU time over the measured window
    size_t size() const { return devs_.size(); }

private:
    struct Dev {
        std::unique_ptr<testing::Frontend> fe;
        std::unique_ptr<testing::GuestRam> mem;
        std::unique_ptr<testing::DriverQueue> q;
        UniqueFd kick, call;
        std::unique_ptr<testing::GuestBlkRequest> req;
        uint64_t call_buf = 0, kick_val = 1;
        uint64_t sectors = 0, next = 0;
        bool busy = false, owed = false;
        Clock::time_point sent;
    };

    explicit LightLoad(LightOptions o) : o_(std::move(o)) {}

    static uint64_t thread_cpu_ns() {
        timespec ts{};
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
        return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(ts.tv_nsec);
    }

    Result<std::unique_ptr<Dev>> connect_one(const std::string& path, uint32_t index) {
        auto d = std::make_unique<Dev>();
        VHOSTD_ASSIGN_OR_RETURN(d->fe, testing::Frontend::connect(path));
        VHOSTD_ASSIGN_OR_RETURN(uint64_t feats, d->fe->get_features());
        const uint64_t f = feats & (virtio::kFVersion1 | virtio::kFEventIdx | vhost::kFProtocolFeatures);
        if (f & vhost::kFProtocolFeatures) {
            VHOSTD_ASSIGN_OR_RETURN(uint64_t pf, d->fe->get_protocol_features());
            VHOSTD_TRY(d->fe->set_protocol_features(pf & (vhost::pf::kReplyAck | vhost::pf::kConfig)));
        }
        VHOSTD_TRY(d->fe->set_owner());
        VHOSTD_ASSIGN_OR_RETURN(auto cfg, d->fe->get_config(0, 60));
        d->sectors = testing::parse_blk_config(cfg).capacity;
        if (d->sectors < 8) return make_error(Errc::kInvalid, "device smaller than 4 KiB");
        VHOSTD_TRY(d->fe->set_features(f));
        VHOSTD_ASSIGN_OR_RETURN(d->mem, testing::GuestRam::create({{0, 1ull << 20}}));
        VHOSTD_TRY(d->fe->set_mem_table(*d->mem));
        VHOSTD_ASSIGN_OR_RETURN(d->q, testing::DriverQueue::create(*d->mem, 16, (f & virtio::kFEventIdx) != 0));
        d->kick.reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
        d->call.reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
        if (!d->kick.valid() || !d->call.valid()) return sys_error("eventfd");
        d->q->enable_call(true);
        VHOSTD_TRY(d->fe->setup_queue(0, *d->q, d->kick.get(), d->call.get(), true));
        VHOSTD_ASSIGN_OR_RETURN(auto r, testing::make_blk_read(*d->mem, 0, 4096));
        d->req = std::make_unique<testing::GuestBlkRequest>(std::move(r));
        d->next = index * 8;
        return d;
    }

    static constexpr uint64_t kKickTag = 1ull << 63;
    static constexpr std::chrono::microseconds kWindow{50};

    io_uring_sqe* get_sqe() {
        io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
        if (sqe == nullptr) {
            io_uring_submit(&ring_);
            sqe = io_uring_get_sqe(&ring_);
        }
        return sqe;
    }

    void arm_call(uint32_t i) {
        io_uring_sqe* sqe = get_sqe();
        if (sqe == nullptr) return;
        io_uring_prep_read(sqe, devs_[i]->call.get(), &devs_[i]->call_buf, sizeof(uint64_t), 0);
        io_uring_sqe_set_data64(sqe, i);
    }

    void send(uint32_t i, bool measuring) {
        Dev& d = *devs_[i];
        if (d.busy) {  // the previous one has not completed: late, sent when it does
            if (measuring) ++late;
            d.owed = true;
            return;
        }
        d.req->rearm(virtio::blk::kTIn, d.next % (d.sectors - 7));
        d.next += 8;
        if (!d.req->submit(*d.q).ok()) {
            ++errors;
            return;
        }
        d.busy = true;
        ++in_flight_;
        d.sent = Clock::now();
        d.q->publish();
        if (d.q->kick_prepare()) {
            io_uring_sqe* sqe = get_sqe();
            if (sqe == nullptr) {
                eventfd_write(d.kick.get(), 1);
                return;
            }
            io_uring_prep_write(sqe, d.kick.get(), &d.kick_val, sizeof(uint64_t), 0);
            io_uring_sqe_set_data64(sqe, kKickTag | i);
            sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;  // a CQE only if the write failed
        }
    }

    void reap(uint32_t i, bool measuring) {
        Dev& d = *devs_[i];
        arm_call(i);
        while (auto u = d.q->pop_used()) {
            auto now = Clock::now();
            if (d.req->status() != virtio::blk::kSOk) ++errors;
            if (measuring && d.busy) {
                lat.add(static_cast<uint64_t>(std::chrono::nanoseconds(now - d.sent).count()));
                ++ios;
            }
            if (d.busy) --in_flight_;
            d.busy = false;
        }
        if (d.owed && !d.busy) {
            d.owed = false;
            send(i, false);
        }
    }

    const LightOptions o_;
    io_uring ring_{};
    bool ring_ok_ = false;
    unsigned in_flight_ = 0;  // devices with a request out
    std::vector<std::unique_ptr<Dev>> devs_;
};

}  // namespace vhostd::bench
