// A reactor is one thread that owns one io_uring and a set of pollers (virtqueues, backend
// channels). It is the only thread that touches them. Other threads reach it with post() /
// run_sync() (a mutex-guarded queue + eventfd: control path only, never per I/O).
//
// Loop: poll every hot poller, submit the batch of SQEs with one syscall, reap completions, let
// pollers publish (used rings, interrupts) once per pass. When idle for longer than the poll
// budget, arm notifications, re-check, and block in io_uring_enter until a kick, a completion
// or a message arrives. Adaptive mode also naps (a bounded io_uring wait with notifications
// left off) when requests arrive as a steady sparse stream: see reactor/nap_policy.hpp.
//
// Hot and parked pollers: a pass walks only the hot set. A poller that found no work for
// `park_after` leaves it (Poller::park(): it arms its own wake-ups, a kick read and guest
// notifications, and re-checks) and costs nothing per pass until one of those completions calls
// wake(). So hundreds of quiet queues on a reactor do not slow its busy ones down (the per-queue
// polling of QEMU's AioContext and Cloud Hypervisor's 50 us spin, applied per queue).
#pragma once

#include <liburing.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <future>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "reactor/nap_policy.hpp"
#include "core/result.hpp"
#include "core/stats.hpp"
#include "core/unique_fd.hpp"

namespace vhostd {

// user_data of an SQE that belongs to us is a Completion*; 0 means "ignore the CQE".
class Completion {
public:
    virtual void complete(int32_t res) = 0;

protected:
    Completion() = default;
    ~Completion() = default;
};

// A passthrough command's completion, from the reactor's command ring (128-byte SQEs, 32-byte
// CQEs: IORING_OP_URING_CMD). res: 0, a positive device status (NVMe: status field), or -errno;
// result: the command's result (NVMe: completion dwords 0-1).
class CmdCompletion {
public:
    virtual void complete_cmd(int32_t res, uint64_t result) = 0;

protected:
    CmdCompletion() = default;
    ~CmdCompletion() = default;
};

class Poller {
public:
    virtual ~Poller() = default;
    // Do work (pop rings, submit I/O, complete deferred ops). True if anything happened.
    virtual bool poll() = 0;
    // End of a pass, after completions were reaped: publish used entries, notify. True if it
    // completed anything (that is work too: a queue whose requests just completed is not idle).
    virtual bool end_pass() { return false; }
    // About to sleep: arm notifications. Return false if work is pending (don't sleep).
    virtual bool prepare_sleep() { return true; }
    // Woke up (or gave up sleeping): back to polling mode.
    virtual void after_wake() {}
    // Requests are in flight to a backend (a nap would delay their completions).
    virtual bool io_pending() const { return false; }
    // Leave the hot set: arm every source of new work (a kick read, guest notifications, a
    // backend's readiness poll) so that its completion calls Reactor::wake(this), then re-check.
    // True: nothing will happen here without such a wake-up (the poller is not polled until
    // then). False: stay hot (work arrived, or something needs polling: requests in flight, a
    // stop in progress). The default never parks.
    virtual bool park() { return false; }

private:
    friend class Reactor;
    bool attached_ = false;      // on a reactor's list
    bool hot_ = false;           // in its hot set (polled every pass)
    uint64_t last_work_ns_ = 0;  // the pass (mono ns) that last found work here
};

enum class PollMode { kAlways, kAdaptive, kNever };

// What a reactor did since it started (reactor_stats). Busy time is the wall time of passes that
// found work; the rest (idle polling, naps, sleeps) is idle.
struct ReactorStats {
    unsigned index = 0;
    int cpu = -1;
    uint64_t passes = 0, sleeps = 0, naps = 0;
    uint64_t busy_ns = 0, total_ns = 0;
    uint32_t pollers = 0;  // queues it serves now
    uint32_t hot = 0;      // ...of which in the hot set (polled every pass); the rest are parked
    uint64_t parks = 0, wakes = 0;  // pollers that left the hot set / came back
};

struct ReactorConfig {
    PollMode mode = PollMode::kAdaptive;
    std::chrono::microseconds poll_budget{50};  // adaptive: busy-poll this long after the last work
    int cpu = -1;                               // pin to this CPU if >= 0
    unsigned ring_entries = 1024;
    NapConfig nap{};  // adaptive: napping on steady sparse streams
    // A poller that found no work for this long leaves the hot set until a wake-up (any mode;
    // kNever parks at once). Zero: pollers never park (every pass walks all of them).
    std::chrono::microseconds park_after{50};
    // The ring is created disabled and enabled only once IORING_REGISTER_RESTRICTIONS limits it
    // to the opcodes below (kRingOps) and no register operation: a memory-safety bug that lets a
    // guest forge SQEs still cannot open files, connect sockets or send messages through it.
    bool restrict_ring = true;
    // The command ring (passthrough commands: backend=nvme): 0 for none. It is created with the
    // reactor (a reactor's seccomp filter allows no io_uring_setup: a thread that could make an
    // unrestricted ring could open files through it) and restricted to IORING_OP_URING_CMD.
    unsigned cmd_ring_entries = 256;
    // Registered-buffer slots on the command ring (an empty, sparse table made with the ring):
    // guest memory registered by passthrough channels (fixed=on), in pieces of a few hundred
    // KiB: the kernel's largest table (16384 slots) holds some 8 GiB of it. 0: none.
    unsigned cmd_buffer_slots = 16384;
};

// Every io_uring opcode a reactor's ring carries: whatever puts an SQE on a reactor's ring must
// use one of these (a new one is added here, with its reason).
inline constexpr uint8_t kRingOps[] = {
    IORING_OP_READ,          // kick/call eventfds, the message eventfd, backends' eventfds
    IORING_OP_READV,         // file backend
    IORING_OP_WRITEV,        // file backend
    IORING_OP_FSYNC,         // file backend: flush
    IORING_OP_FALLOCATE,     // file backend: discard, write-zeroes
    IORING_OP_POLL_ADD,      // tap readiness, NBD sockets
    IORING_OP_POLL_REMOVE,   // tap
    IORING_OP_ASYNC_CANCEL,  // disarming reads and polls
    IORING_OP_TIMEOUT,       // liburing's wait with a timeout on kernels without EXT_ARG
};
// The command ring carries only this, and takes only this register operation (filling and
// emptying slots of its buffer table).
inline constexpr uint8_t kCmdRingOps[] = {
    IORING_OP_URING_CMD,  // NVMe passthrough (backend=nvme)
};
inline constexpr uint8_t kCmdRingRegisterOps[] = {
    IORING_REGISTER_BUFFERS_UPDATE,  // guest memory as fixed buffers (fixed=on)
};

class Reactor {
public:
    Reactor(unsigned index, ReactorConfig cfg);
    ~Reactor();
    Reactor(const Reactor&) = delete;
    Reactor& operator=(const Reactor&) = delete;

    Status start();  // spawns the thread, sets up the ring on it
    void stop();     // runs remaining messages, joins

    unsigned index() const { return index_; }
    PollMode mode() const { return cfg_.mode; }

    // ---- reactor thread only ----
    io_uring* ring() { return &ring_; }
    // An SQE, flushing the SQ to the kernel once if it is full; nullptr means back-pressure.
    io_uring_sqe* get_sqe();
    unsigned sq_space_left();
    // A 128-byte SQE on the command ring (its user_data must be a CmdCompletion*), flushing the
    // ring's SQ once if it is full; nullptr: back-pressure. Every SQE taken is submitted with the
    // pass: fill it. Error: this reactor has no command ring (and why).
    io_uring_sqe* cmd_sqe();
    Status cmd_ring_status() const;
    // The command ring's buffer table: a run of `n` free slots (its first index), given back
    // with cmd_buffers_free (which empties them). cmd_buffers_set registers `iov` (each at most
    // 1 GiB) into slots first.. (pins the memory; an empty iovec empties a slot). Commands in
    // flight keep what they use registered until they complete.
    Result<unsigned> cmd_buffers_alloc(unsigned n);
    void cmd_buffers_free(unsigned first, unsigned n);
    Status cmd_buffers_set(unsigned first, const iovec* iov, unsigned n);
    void add_poller(Poller* p);  // joins the hot set
    void remove_poller(Poller* p);
    // A parked poller has work (its kick read or backend wake-up completed): back into the hot
    // set, polled from the next pass on. No-op when hot or not on this reactor.
    void wake(Poller* p);
    // New requests taken from rings this pass (feeds the adaptive nap policy).
    void note_arrivals(uint32_t n) { nap_.arrivals(n); }
    // The time (mono_ns) as of this pass: read once, when first asked, after the pass began
    // and again after its submission (so a completion reaped in the pass is timed after it).
    uint64_t now_ns() {
        if (clock_ == 0) clock_ = mono_ns();
        return clock_;
    }
    // A poller with work due at `mono` (a request held back by QoS): the reactor's next sleep
    // ends by then. Only valid in prepare_sleep, for that sleep.
    void wake_at(uint64_t mono) { wake_at_ = std::min(wake_at_, mono); }

    // ---- any thread ----
    void post(std::function<void()> fn);
    // Runs fn on the reactor thread and waits for it. Must not be called on the reactor thread.
    void run_sync(const std::function<void()>& fn);

    // Any thread.
    ReactorStats stats() const;

    // Counters (written by the reactor thread only; read from other threads for stats).
    Counter sleeps;
    Counter passes;
    Counter naps;
    Counter parks;
    Counter wakes;

private:
    class MsgCompletion : public Completion {
    public:
        explicit MsgCompletion(Reactor* r) : r_(r) {}
        void complete(int32_t res) override;
        uint64_t buf = 0;

    private:
        Reactor* r_;
    };

    void run(std::promise<Status>* started);
    bool reap();
    bool reap_cmd();
    Status setup_cmd_ring();
    // Commands are out: a completion on the command ring must end a sleep or a nap (its eventfd,
    // read on the main ring).
    void arm_cmd_wake();
    bool nap_idle() const;
    void drain_messages();
    void arm_msg_read();
    // Blocks in io_uring until a completion, or until wake_at_ if a poller asked for one.
    void sleep();
    // End of a pass: pollers idle for park_after (or `all` of them: the reactor is about to
    // sleep) leave the hot set if they can.
    void park_idle(uint64_t now, bool all);
    void set_hot_count() { n_hot_.store(static_cast<uint32_t>(hot_.size()), std::memory_order_relaxed); }

    const unsigned index_;
    const ReactorConfig cfg_;
    io_uring ring_{};
    bool ring_ok_ = false;
    std::thread thread_;
    std::atomic<bool> stop_{false};

    std::vector<Poller*> pollers_;  // all of them
    std::vector<Poller*> hot_;      // walked every pass; capacity kept >= pollers_.size()
    bool pollers_changed_ = false;
    uint64_t park_ns_ = 0;          // 0: never park
    NapPolicy nap_;
    uint64_t clock_ = 0;  // now_ns()'s cache; 0: read it again
    uint64_t wake_at_ = UINT64_MAX;
    Counter busy_ns_;
    Counter total_ns_;
    std::atomic<uint32_t> n_pollers_{0};
    std::atomic<uint32_t> n_hot_{0};

    class CmdWake : public Completion {
    public:
        explicit CmdWake(Reactor* r) : r_(r) {}
        void complete(int32_t) override { r_->cmd_armed_ = false; }
        uint64_t buf = 0;

    private:
        Reactor* r_;
    };
    io_uring cmd_ring_{};
    bool cmd_ok_ = false;
    std::string cmd_error_ = "not started";
    UniqueFd cmd_efd_;
    CmdWake cmd_wake_{this};
    bool cmd_armed_ = false;
    uint64_t cmd_inflight_ = 0;  // SQEs handed out minus CQEs reaped
    std::vector<bool> cmd_slot_used_;  // the buffer table (empty: none)
    std::string cmd_buffers_error_;

    UniqueFd msg_fd_;
    MsgCompletion msg_completion_{this};
    bool msg_armed_ = false;
    std::mutex msg_mu_;
    std::vector<std::function<void()>> msgs_;
    std::atomic<bool> msg_pending_{false};
};

}  // namespace vhostd
