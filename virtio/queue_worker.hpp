// The reactor-side life of one virtqueue, shared by all device types: ring activation, the
// kick eventfd (an io_uring read kept armed), notification suppression while polling,
// batched used-ring publication and interrupts, and stop-with-drain.
//
// Threading: start/stop/set_call/set_memory are called from the control thread and run their
// work on the owning reactor (run_sync / post); everything else runs on the reactor thread.
#pragma once

#include <future>

#include "reactor/reactor.hpp"
#include "virtio/device.hpp"
#include "virtio/vring.hpp"

namespace vhostd::virtio {

class QueueWorker : public Poller, private Completion {
public:
    QueueWorker(Reactor& reactor, uint32_t index) : reactor_(reactor), index_(index) {}
    ~QueueWorker() override = default;

    Reactor& reactor() { return reactor_; }
    uint32_t index() const { return index_; }
    bool running() const { return running_; }
    // Any thread: kicks received (kick eventfd reads) and interrupts sent (call eventfd writes)
    // since the device was created.
    uint64_t kicks() const { return kicks_.get(); }
    uint64_t calls() const { return calls_.get(); }

    // ---- control thread ----
    Status start(QueueStart&& s);
    uint32_t stop();  // drains; returns the ring's position (Virtqueue::base())
    void set_call(int fd);
    // Dirty logging for a live migration (takes effect between two reactor passes: a request
    // completing after this call is logged).
    void set_logging(LogSettings log);
    // Drains in-flight requests, swaps memory and re-translates the rings.
    Status set_memory(std::shared_ptr<const shm::MemoryMap> mem);
    // Waits until every request taken before the call has completed, then goes on serving (the
    // ring and memory stay): what a device shrink needs before its storage shrinks.
    Status quiesce() { return running_ ? set_memory(vq_.mem_ref()) : ok_status(); }

    // ---- reactor thread: Poller ----
    bool poll() final;
    bool end_pass() final;
    bool prepare_sleep() final;
    void after_wake() final;
    bool park() final;
    bool io_pending() const final { return stop_done_ == nullptr && requests_in_flight(); }

protected:
    // Device hooks (reactor thread).
    virtual Status on_start(const QueueStart& s) = 0;  // allocate slots / open channels
    virtual void on_stop() {}
    // The queue runs on new guest memory (set_memory, after the drain and the rings' new
    // translation; not after start: on_start gets the memory itself).
    virtual void on_memory(const shm::MemoryMap& /*mem*/) {}
    // Pop and process new requests; true if any work was done.
    virtual bool process() = 0;
    // Poll device-internal completion sources (e.g. a null backend) and resubmit requests that
    // waited for submission space. Runs while stopping too (a drain must finish). True if any.
    virtual bool poll_device() { return false; }
    virtual bool device_idle() const { return true; }
    // Must the reactor poll this queue's device before it may sleep? (Its completions would
    // otherwise not arrive: they are polled, not delivered by a CQE.)
    virtual bool device_needs_poll() const { return !device_idle(); }
    // May the queue park (leave the reactor's hot set until a kick or a backend wake-up)? False
    // when a device's wake-up source is not armed yet (e.g. the SQ was full): it must be polled.
    virtual bool device_can_park() const { return true; }
    // Operations that still reference this queue (requests, and the device's own armed io_uring
    // operations such as a poll on a tap fd). A stop completes only when this reaches zero.
    virtual uint32_t inflight() const = 0;
    // Requests waiting for a backend completion (not the device's own armed event sources).
    virtual bool requests_in_flight() const { return inflight() > 0; }
    // Stopping: cancel the device's own long-lived io_uring operations (their completions then
    // bring inflight() down).
    virtual void cancel_device_io() {}
    // Before sleeping: ask the guest for a kick; true if work arrived meanwhile (don't sleep).
    virtual bool arm_guest_notify() { return vq_.enable_notify(); }
    // Nonzero: the queue holds a request back until this time (mono ns; QoS), and the ring waits
    // behind it. The reactor then sleeps until then instead of asking the guest for a kick.
    virtual uint64_t held_until() const { return 0; }

    // Live migration: is this queue logging its writes into guest memory? The device marks every
    // device-writable byte it (or its backend) wrote, after the write and before the used entry
    // that hands the buffer back is published.
    bool logging() const { return data_log_ != nullptr; }
    void log_write(const void* p, size_t len) const;
    // The first `len` bytes of the iovecs.
    void log_write(const iovec* iov, size_t n, size_t len) const;

    bool broken() const { return broken_; }
    bool stopping() const { return stop_done_ != nullptr; }
    // Marks the queue broken (guest error): stop processing until reset; signal the err fd.
    void fail(const Error& e);
    // Request completion path: published after the device poll and in end_pass.
    void push_used(uint16_t head, uint32_t len) { vq_.push_used(head, len); }

    Virtqueue vq_;
    uint64_t features_ = 0;

private:
    void complete(int32_t res) override;  // kick read finished
    // Makes used entries visible and signals the driver if it asked for it. True if it published.
    bool publish_and_notify();
    // Writes the call eventfd regardless of notification suppression (a queue (re)starts or gets
    // a new call fd): completions a killed predecessor published but never announced reach the
    // guest.
    void signal_unconditionally();
    void arm_kick();
    void apply_log();  // reactor thread: log_ -> data_log_ and the ring's used log
    uint32_t detach();  // drain and leave the reactor; keeps fds and device state
    void begin_stop(std::promise<void>* done);
    void try_finish_stop();

    Reactor& reactor_;
    const uint32_t index_;
    QueueLayout layout_;
    InflightQueue* inflight_ = nullptr;
    std::shared_ptr<const void> inflight_owner_;
    UniqueFd kick_;
    int call_ = -1;
    LogSettings log_;
    const shm::DirtyLog* data_log_ = nullptr;
    int err_ = -1;
    uint64_t kick_buf_ = 0;
    bool kick_armed_ = false;
    bool kick_cancel_sent_ = false;
    bool broken_ = false;
    std::promise<void>* stop_done_ = nullptr;
    bool running_ = false;  // control-thread view
    Counter kicks_;
    Counter calls_;
};

}  // namespace vhostd::virtio
