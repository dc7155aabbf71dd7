#include "reactor/reactor.hpp"

#include <array>
#include <cstring>

#include <pthread.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <future>

#include "core/log.hpp"
#include "core/sandbox.hpp"

namespace vhostd {

Reactor::Reactor(unsigned index, ReactorConfig cfg)
    : index_(index), cfg_(cfg), nap_(cfg.mode == PollMode::kAdaptive ? cfg.nap : NapConfig{.nap_max = {}}) {
    // kNever: notifications are always on, so a queue may park as soon as a pass finds nothing.
    if (cfg_.park_after.count() > 0)
        park_ns_ = cfg_.mode == PollMode::kNever ? 1 : static_cast<uint64_t>(cfg_.park_after.count()) * 1000;
}

Reactor::~Reactor() {
    stop();
    if (ring_ok_) io_uring_queue_exit(&ring_);
    if (cmd_ok_) io_uring_queue_exit(&cmd_ring_);
}

Status Reactor::start() {
    int efd = eventfd(0, EFD_CLOEXEC);
    if (efd < 0) return sys_error("eventfd for reactor {}", index_);
    msg_fd_.reset(efd);
    std::promise<Status> started;
    auto fut = started.get_future();
    thread_ = std::thread([this, &started] { run(&started); });
    Status st = fut.get();
    if (!st.ok() && thread_.joinable()) thread_.join();
    return st;
}

void Reactor::stop() {
    if (!thread_.joinable()) return;
    stop_.store(true);
    uint64_t one = 1;
    [[maybe_unused]] ssize_t n = write(msg_fd_.get(), &one, sizeof(one));
    thread_.join();
}

void Reactor::post(std::function<void()> fn) {
    {
        std::lock_guard lk(msg_mu_);
        msgs_.push_back(std::move(fn));
    }
    msg_pending_.store(true, std::memory_order_release);
    uint64_t one = 1;
    [[maybe_unused]] ssize_t n = write(msg_fd_.get(), &one, sizeof(one));
}

void Reactor::run_sync(const std::function<void()>& fn) {
    std::promise<void> done;
    auto fut = done.get_future();
    post([&] {
        fn();
        done.set_value();
    });
    fut.wait();
}

void Reactor::drain_messages() {
    // A plain load first: this runs every pass, and a locked exchange each time was ~9 % of a
    // null-device pass (perf, bench/results/).
    if (!msg_pending_.load(std::memory_order_relaxed)) return;
    if (!msg_pending_.exchange(false, std::memory_order_acq_rel)) return;
    std::vector<std::function<void()>> batch;
    {
        std::lock_guard lk(msg_mu_);
        batch.swap(msgs_);
    }
    for (auto& fn : batch) fn();
}

void Reactor::MsgCompletion::complete(int32_t res) {
    r_->msg_armed_ = false;
    if (res < 0 && res != -ECANCELED) VLOG_WARN("reactor {}: message eventfd read failed: {}", r_->index_, res);
}

void Reactor::arm_msg_read() {
    if (msg_armed_) return;
    io_uring_sqe* sqe = get_sqe();
    if (sqe == nullptr) return;  // retried next pass
    io_uring_prep_read(sqe, msg_fd_.get(), &msg_completion_.buf, sizeof(msg_completion_.buf), 0);
    io_uring_sqe_set_data(sqe, static_cast<Completion*>(&msg_completion_));
    msg_armed_ = true;
}

io_uring_sqe* Reactor::get_sqe() {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    if (sqe == nullptr) {
        io_uring_submit(&ring_);
        sqe = io_uring_get_sqe(&ring_);
    }
    return sqe;
}

unsigned Reactor::sq_space_left() { return io_uring_sq_space_left(&ring_); }

Status Reactor::cmd_ring_status() const {
    if (cmd_ok_) return ok_status();
    return make_error(Errc::kUnsupported, "reactor {} has no command ring: {}", index_, cmd_error_);
}

io_uring_sqe* Reactor::cmd_sqe() {
    if (!cmd_ok_) return nullptr;
    io_uring_sqe* sqe = io_uring_get_sqe(&cmd_ring_);
    if (sqe == nullptr) {
        io_uring_submit(&cmd_ring_);
        sqe = io_uring_get_sqe(&cmd_ring_);
    }
    if (sqe != nullptr) ++cmd_inflight_;
    return sqe;
}

namespace {
// A ring created disabled is limited to `ops` (no SQE flag, no register operation) and enabled.
constexpr size_t kMaxRestrictions = 16;
static_assert(std::size(kRingOps) < kMaxRestrictions && std::size(kCmdRingOps) + std::size(kCmdRingRegisterOps) < kMaxRestrictions,
              "room for every opcode and the SQE-flags rule");
int restrict_and_enable(io_uring& ring, const uint8_t* ops, size_t n_ops, const uint8_t* reg_ops = nullptr,
                        size_t n_reg = 0) {
    std::array<io_uring_restriction, kMaxRestrictions> res{};
    size_t n = 0;
    for (size_t i = 0; i < n_ops && n + 1 < res.size(); ++i) {
        res[n].opcode = IORING_RESTRICTION_SQE_OP;
        res[n++].sqe_op = ops[i];
    }
    for (size_t i = 0; i < n_reg && n + 1 < res.size(); ++i) {
        res[n].opcode = IORING_RESTRICTION_REGISTER_OP;
        res[n++].register_op = reg_ops[i];
    }
    res[n].opcode = IORING_RESTRICTION_SQE_FLAGS_ALLOWED;
    res[n++].sqe_flags = 0;
    // (liburing 2.3 declares io_uring_register_restrictions but does not export it.)
    int rc = static_cast<int>(syscall(__NR_io_uring_register, ring.ring_fd, IORING_REGISTER_RESTRICTIONS, res.data(),
                                      static_cast<unsigned>(n)));
    if (rc == 0) rc = static_cast<int>(syscall(__NR_io_uring_register, ring.ring_fd, IORING_REGISTER_ENABLE_RINGS, nullptr, 0));
    return rc < 0 ? -errno : 0;
}
}  // namespace

// The command ring: SQE128|CQE32 (kernel 5.19+). Its completions are reaped every pass; an
// eventfd registered on it, read on the main ring, ends a sleep while commands are out.
Status Reactor::setup_cmd_ring() {
    if (cfg_.cmd_ring_entries == 0) {
        cmd_error_ = "disabled";
        return ok_status();
    }
    int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (efd < 0) return sys_error("eventfd for reactor {}'s command ring", index_);
    cmd_efd_.reset(efd);
    const unsigned disabled = cfg_.restrict_ring ? IORING_SETUP_R_DISABLED : 0;
    io_uring_params params{};
    params.flags = IORING_SETUP_SQE128 | IORING_SETUP_CQE32 | IORING_SETUP_CQSIZE | IORING_SETUP_SINGLE_ISSUER |
                   IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG | disabled;
    params.cq_entries = cfg_.cmd_ring_entries * 8;
    int rc = io_uring_queue_init_params(cfg_.cmd_ring_entries, &cmd_ring_, &params);
    if (rc < 0) {
        // Older than 5.19 (no SQE128), or no passthrough at all: only backend=nvme misses it.
        cmd_error_ = fmt::format("io_uring with 128-byte SQEs: {} (kernel 5.19 or newer needed)", std::strerror(-rc));
        VLOG_DEBUG("reactor {}: no command ring: {}", index_, cmd_error_);
        return ok_status();
    }
    cmd_ok_ = true;
    rc = io_uring_register_eventfd(&cmd_ring_, cmd_efd_.get());
    if (rc < 0) return sys_error_code(-rc, "registering reactor {}'s command ring eventfd", index_);
    if (cfg_.cmd_buffer_slots > 0) {
        // An empty table now (the ring is not restricted yet); channels fill slots later.
        rc = io_uring_register_buffers_sparse(&cmd_ring_, cfg_.cmd_buffer_slots);
        if (rc == 0) {
            cmd_slot_used_.assign(cfg_.cmd_buffer_slots, false);
        } else {
            cmd_buffers_error_ = fmt::format("a sparse buffer table: {}", std::strerror(-rc));
            VLOG_DEBUG("reactor {}: no buffer table on the command ring: {}", index_, cmd_buffers_error_);
        }
    } else {
        cmd_buffers_error_ = "no buffer slots configured";
    }
    if (cfg_.restrict_ring) {
        rc = restrict_and_enable(cmd_ring_, kCmdRingOps, std::size(kCmdRingOps), kCmdRingRegisterOps,
                                 std::size(kCmdRingRegisterOps));
        if (rc < 0) return sys_error_code(-rc, "restricting reactor {}'s command ring", index_);
    }
    cmd_error_.clear();
    return ok_status();
}

Result<unsigned> Reactor::cmd_buffers_alloc(unsigned n) {
    if (cmd_slot_used_.empty())
        return make_error(Errc::kUnsupported, "reactor {} has no buffer table on its command ring ({})", index_,
                          cmd_error_.empty() ? cmd_buffers_error_ : cmd_error_);
    unsigned run = 0;
    for (unsigned i = 0; i < cmd_slot_used_.size() && n > 0; ++i) {
        run = cmd_slot_used_[i] ? 0 : run + 1;
        if (run == n) {
            const unsigned first = i + 1 - n;
            for (unsigned j = first; j <= i; ++j) cmd_slot_used_[j] = true;
            return first;
        }
    }
    return make_error(Errc::kBusy, "reactor {}: no {} free buffer slots of {} on the command ring", index_, n,
                      cmd_slot_used_.size());
}

void Reactor::cmd_buffers_free(unsigned first, unsigned n) {
    if (first >= cmd_slot_used_.size() || n > cmd_slot_used_.size() - first) return;
    std::vector<iovec> none(n, iovec{nullptr, 0});
    // Emptied, so no memory stays pinned for a channel that is gone.
    if (Status st = cmd_buffers_set(first, none.data(), n); !st.ok())
        VLOG_WARN("reactor {}: emptying buffer slots {}+{}: {}", index_, first, n, st.error().describe());
    for (unsigned i = first; i < first + n; ++i) cmd_slot_used_[i] = false;
}

Status Reactor::cmd_buffers_set(unsigned first, const iovec* iov, unsigned n) {
    if (first >= cmd_slot_used_.size() || n > cmd_slot_used_.size() - first)
        return make_error(Errc::kInvalid, "buffer slots {}+{} past the table's {}", first, n, cmd_slot_used_.size());
    int rc = io_uring_register_buffers_update_tag(&cmd_ring_, first, iov, nullptr, n);
    if (rc < 0) return sys_error_code(-rc, "registering {} buffers at slot {} of reactor {}'s command ring", n, first, index_);
    if (static_cast<unsigned>(rc) != n)
        return make_error(Errc::kSystem, "registered {} of {} buffers at slot {} of reactor {}'s command ring", rc, n, first, index_);
    return ok_status();
}

void Reactor::arm_cmd_wake() {
    if (cmd_inflight_ == 0 || cmd_armed_) return;
    io_uring_sqe* sqe = get_sqe();
    if (sqe == nullptr) return;
    io_uring_prep_read(sqe, cmd_efd_.get(), &cmd_wake_.buf, sizeof(cmd_wake_.buf), 0);
    io_uring_sqe_set_data(sqe, static_cast<Completion*>(&cmd_wake_));
    cmd_armed_ = true;
}

bool Reactor::reap_cmd() {
    if (cmd_inflight_ == 0) return false;
    if (IO_URING_READ_ONCE(*cmd_ring_.sq.kflags) & (IORING_SQ_TASKRUN | IORING_SQ_CQ_OVERFLOW)) io_uring_get_events(&cmd_ring_);
    bool any = false;
    io_uring_cqe* cqe = nullptr;
    for (unsigned n = 0; n < 8 * cfg_.cmd_ring_entries; ++n) {
        if (io_uring_cq_ready(&cmd_ring_) == 0) break;
        if (io_uring_peek_cqe(&cmd_ring_, &cqe) != 0 || cqe == nullptr) break;
        auto* c = reinterpret_cast<CmdCompletion*>(io_uring_cqe_get_data(cqe));
        int32_t res = cqe->res;
        uint64_t result = cqe->big_cqe[0];
        io_uring_cqe_seen(&cmd_ring_, cqe);
        --cmd_inflight_;
        if (c != nullptr) c->complete_cmd(res, result);
        any = true;
    }
    return any;
}

void Reactor::add_poller(Poller* p) {
    if (p->attached_) return;
    pollers_.push_back(p);
    // wake() never allocates: the hot set can hold every poller.
    if (hot_.capacity() < pollers_.size()) hot_.reserve(std::max<size_t>(pollers_.size(), 2 * hot_.capacity()));
    p->attached_ = true;
    p->hot_ = true;
    p->last_work_ns_ = mono_ns();
    hot_.push_back(p);
    pollers_changed_ = true;
    n_pollers_.store(static_cast<uint32_t>(pollers_.size()), std::memory_order_relaxed);
    set_hot_count();
}

void Reactor::remove_poller(Poller* p) {
    if (!p->attached_) return;
    pollers_.erase(std::remove(pollers_.begin(), pollers_.end(), p), pollers_.end());
    if (p->hot_) hot_.erase(std::remove(hot_.begin(), hot_.end(), p), hot_.end());
    p->attached_ = p->hot_ = false;
    pollers_changed_ = true;
    n_pollers_.store(static_cast<uint32_t>(pollers_.size()), std::memory_order_relaxed);
    set_hot_count();
}

void Reactor::wake(Poller* p) {
    if (!p->attached_ || p->hot_) return;
    p->hot_ = true;
    p->last_work_ns_ = now_ns();
    hot_.push_back(p);  // capacity reserved in add_poller
    wakes.add();
    set_hot_count();
    // Back to polling: notifications off again (they stay on in kNever).
    if (cfg_.mode != PollMode::kNever) p->after_wake();
}

void Reactor::park_idle(uint64_t now, bool all) {
    if (park_ns_ == 0) return;
    size_t kept = 0;
    for (size_t i = 0; i < hot_.size(); ++i) {
        Poller* p = hot_[i];
        if ((all || now - p->last_work_ns_ >= park_ns_) && p->park()) {
            p->hot_ = false;
            parks.add();
            continue;
        }
        hot_[kept++] = p;
    }
    if (kept != hot_.size()) {
        hot_.resize(kept);
        set_hot_count();
    }
}

ReactorStats Reactor::stats() const {
    ReactorStats s;
    s.index = index_;
    s.cpu = cfg_.cpu;
    s.passes = passes.get();
    s.sleeps = sleeps.get();
    s.naps = naps.get();
    s.busy_ns = busy_ns_.get();
    s.total_ns = total_ns_.get();
    s.pollers = n_pollers_.load(std::memory_order_relaxed);
    s.hot = n_hot_.load(std::memory_order_relaxed);
    s.parks = parks.get();
    s.wakes = wakes.get();
    return s;
}

void Reactor::sleep() {
    arm_cmd_wake();
    uint64_t deadline = wake_at_;
    wake_at_ = UINT64_MAX;
    sleeps.add();
    if (deadline == UINT64_MAX) {
        io_uring_submit_and_wait(&ring_, 1);
        return;
    }
    uint64_t now = mono_ns();
    if (deadline <= now) return;
    uint64_t ns = deadline - now;
    __kernel_timespec ts{.tv_sec = static_cast<int64_t>(ns / 1000000000), .tv_nsec = static_cast<long long>(ns % 1000000000)};
    io_uring_cqe* cqe = nullptr;
    io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, &ts, nullptr);
}

bool Reactor::reap() {
    bool any = false;
    // Completions waiting as task work (COOP_TASKRUN): one syscall runs them all.
    // CQEs the kernel had to hold back (CQ_OVERFLOW) are flushed by the same call; the early
    // return below never calls into liburing, whose peek would otherwise have done that.
    if (IO_URING_READ_ONCE(*ring_.sq.kflags) & (IORING_SQ_TASKRUN | IORING_SQ_CQ_OVERFLOW)) io_uring_get_events(&ring_);
    io_uring_cqe* cqe = nullptr;
    // Bounded: at most one CQ's worth per call, so a flood can't starve the pollers. The tail
    // is checked first (one load): an empty peek calls into liburing, and this runs every pass.
    for (unsigned n = 0; n < 4 * cfg_.ring_entries; ++n) {
        if (io_uring_cq_ready(&ring_) == 0) break;
        if (io_uring_peek_cqe(&ring_, &cqe) != 0 || cqe == nullptr) break;
        auto* c = reinterpret_cast<Completion*>(io_uring_cqe_get_data(cqe));
        int32_t res = cqe->res;
        io_uring_cqe_seen(&ring_, cqe);
        if (c != nullptr) c->complete(res);
        any = true;
    }
    any |= reap_cmd();
    return any;
}

bool Reactor::nap_idle() const {
    if (msg_pending_.load(std::memory_order_acquire) || !msg_armed_) return false;
    for (const auto* p : hot_)  // a parked poller has nothing in flight
        if (p->io_pending()) return false;
    return true;
}

void Reactor::run(std::promise<Status>* started) {
    std::string name = fmt::format("vhostd-r{}", index_);
    pthread_setname_np(pthread_self(), name.c_str());
    if (cfg_.cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(cfg_.cpu, &set);
        if (pthread_setaffinity_np(pthread_self(), sizeof(set), &set) != 0) {
            started->set_value(make_error(Errc::kInvalid, "cannot pin reactor {} to cpu {}", index_, cfg_.cpu));
            return;
        }
    }
    // COOP_TASKRUN: completions don't interrupt a busy-polling reactor with an IPI each; the
    // kernel raises IORING_SQ_TASKRUN instead and reap() enters the kernel only then
    // (TASKRUN_FLAG). Measured +30% IOPS on O_DIRECT files at QD32 (bench/results/). Older
    // kernels (< 6.0) get the plain ring.
    const unsigned disabled = cfg_.restrict_ring ? IORING_SETUP_R_DISABLED : 0;
    io_uring_params params{};
    params.flags = IORING_SETUP_CQSIZE | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_COOP_TASKRUN |
                   IORING_SETUP_TASKRUN_FLAG | disabled;
    params.cq_entries = cfg_.ring_entries * 4;
    int rc = io_uring_queue_init_params(cfg_.ring_entries, &ring_, &params);
    if (rc == -EINVAL) {
        params = io_uring_params{};
        params.flags = IORING_SETUP_CQSIZE | disabled;
        params.cq_entries = cfg_.ring_entries * 4;
        rc = io_uring_queue_init_params(cfg_.ring_entries, &ring_, &params);
    }
    if (rc < 0) {
        started->set_value(sys_error_code(-rc, "io_uring_queue_init for reactor {}", index_));
        return;
    }
    ring_ok_ = true;
    if (cfg_.restrict_ring) {
        // Opcodes only; SQE flags none (nothing sets one), register operations none. The thread
        // that enables a SINGLE_ISSUER ring becomes its submitter: this one.
        rc = restrict_and_enable(ring_, kRingOps, std::size(kRingOps));
        if (rc < 0) {
            started->set_value(sys_error_code(-rc, "restricting reactor {}'s io_uring", index_));
            return;
        }
    }
    if (Status st = setup_cmd_ring(); !st.ok()) {
        started->set_value(std::move(st));
        return;
    }
    if (Status st = sandbox::enter(sandbox::Kind::kReactor); !st.ok()) {
        started->set_value(std::move(st));
        return;
    }
    started->set_value(ok_status());
    VLOG_DEBUG("reactor {} running (cpu {}, mode {})", index_, cfg_.cpu, static_cast<int>(cfg_.mode));

    using Clock = std::chrono::steady_clock;
    auto last_work = Clock::now();
    uint64_t pass_start = mono_ns();
    bool stopping = false;
    while (true) {
        if (stop_.load(std::memory_order_relaxed)) stopping = true;
        drain_messages();
        if (stopping && pollers_.empty()) break;
        arm_msg_read();
        // Only this thread writes the counters: a load and a store, not a locked add per pass.
        passes.add();
        clock_ = 0;

        bool work = false;
        pollers_changed_ = false;
        for (size_t i = 0; i < hot_.size() && !pollers_changed_; ++i) {
            if (hot_[i]->poll()) {
                // The previous pass's end stands for this pass: no clock read per poller.
                hot_[i]->last_work_ns_ = pass_start;
                work = true;
            }
        }
        if (io_uring_sq_ready(&ring_) > 0) {
            io_uring_submit(&ring_);
            clock_ = 0;
        }
        if (cmd_ok_ && io_uring_sq_ready(&cmd_ring_) > 0) {
            io_uring_submit(&cmd_ring_);
            clock_ = 0;
        }
        work |= reap();  // kicks of parked pollers wake them here (into hot_)
        for (size_t i = 0; i < hot_.size(); ++i) {
            if (hot_[i]->end_pass()) hot_[i]->last_work_ns_ = pass_start;
        }

        // Busy time: a pass that found work counts from the end of the previous pass (a sleep
        // or nap that ended it counts as idle: it lies before the previous pass's end). The
        // pass's clock if a poller read it (one clock read per pass, not two): the totals
        // telescope, so only the split between adjacent passes can shift by a pass's tail.
        uint64_t pass_end = now_ns();
        uint64_t dt = pass_end - pass_start;
        pass_start = pass_end;
        total_ns_.add(dt);
        if (work) busy_ns_.add(dt);
        if (!stopping) park_idle(pass_end, false);

        if (cfg_.mode == PollMode::kAdaptive) {
            auto now = Clock::time_point(std::chrono::nanoseconds(pass_end));
            nap_.tick(now);
            if (work) {
                last_work = now;
                continue;
            }
            // Nap mode keeps napping while the stream lasts; two naps without work: sleep below.
            auto nap_window = std::max<Clock::duration>(cfg_.poll_budget, 2 * nap_.nap_length());
            if (!stopping && nap_.napping() && now - last_work < nap_window) {
                if (nap_idle()) {
                    // Notifications stay off: requests pile up and are taken as one batch. A
                    // completion or a control message ends the nap early.
                    naps.add();
                    auto ns = nap_.nap_length().count();
                    nap_.napped();
                    __kernel_timespec ts{.tv_sec = ns / 1000000000, .tv_nsec = ns % 1000000000};
                    arm_cmd_wake();
                    io_uring_cqe* cqe = nullptr;
                    io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, &ts, nullptr);
                    pass_start = mono_ns();  // the nap is idle time
                    total_ns_.add(pass_start - pass_end);
                }
                continue;
            }
            if (!stopping && now - last_work < cfg_.poll_budget) continue;
        } else if (work) {
            continue;
        }
        if (cfg_.mode == PollMode::kAlways && !stopping) continue;

        // Try to sleep: arm notifications everywhere, then re-check (a guest may have added
        // work between our last poll and the arming).
        bool can_sleep = true;
        wake_at_ = UINT64_MAX;
        // Whatever can park does so now (then only the pollers a wake-up names are polled after
        // the sleep); the rest arm for this sleep. Parked pollers armed theirs when they parked.
        if (!stopping) park_idle(0, true);
        for (auto* p : hot_) can_sleep &= p->prepare_sleep();
        if (can_sleep && !msg_pending_.load(std::memory_order_acquire) && msg_armed_) sleep();
        if (cfg_.mode != PollMode::kNever) {
            for (auto* p : hot_) p->after_wake();
        }
        uint64_t woke = mono_ns();
        total_ns_.add(woke - pass_start);
        pass_start = woke;
        last_work = Clock::time_point(std::chrono::nanoseconds(woke));
    }
    // Cancel our own outstanding eventfd reads so no CQE refers to freed state.
    if (msg_armed_ || cmd_armed_) {
        for (Completion* c : {static_cast<Completion*>(&msg_completion_), static_cast<Completion*>(&cmd_wake_)}) {
            if (c == &msg_completion_ ? !msg_armed_ : !cmd_armed_) continue;
            io_uring_sqe* sqe = get_sqe();
            if (sqe == nullptr) continue;
            io_uring_prep_cancel(sqe, c, 0);
            io_uring_sqe_set_data(sqe, nullptr);
        }
        io_uring_submit(&ring_);
        while (msg_armed_ || cmd_armed_) {
            io_uring_cqe* cqe = nullptr;
            if (io_uring_wait_cqe(&ring_, &cqe) != 0) break;
            auto* c = reinterpret_cast<Completion*>(io_uring_cqe_get_data(cqe));
            int32_t res = cqe->res;
            io_uring_cqe_seen(&ring_, cqe);
            if (c != nullptr) c->complete(res);
        }
    }
    VLOG_INFO("reactor {} stopped: {} passes, {} sleeps, {} naps (nap mode entered {}x, {} of {} verdicts "
              "found a closed-loop client)",
              index_, passes.get(), sleeps.get(), naps.get(), nap_.entered, nap_.closed_loops, nap_.verdicts);
}

}  // namespace vhostd
