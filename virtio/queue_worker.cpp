#include "virtio/queue_worker.hpp"

#include <sys/eventfd.h>

#include <algorithm>
#include <utility>

#include "core/fault.hpp"
#include "core/log.hpp"

namespace vhostd::virtio {

Status QueueWorker::start(QueueStart&& s) {
    Status result;
    layout_ = s.layout;
    features_ = s.features;
    kick_ = std::move(s.kick);
    call_ = s.call;
    err_ = s.err;
    inflight_ = s.inflight;
    inflight_owner_ = s.inflight_owner;
    log_ = std::move(s.log);
    reactor_.run_sync([&] {
        broken_ = false;
        Status st = vq_.activate(s.mem, s.layout, s.base, (s.features & kFEventIdx) != 0,
                                 (s.features & kFIndirectDesc) != 0, inflight_, s.features);
        if (st.ok()) apply_log();
        if (st.ok())
            VLOG_DEBUG("queue {}: active at avail {} (used index in guest memory {})", index_, vq_.base(),
                       vq_.ring_used());
        if (st.ok() && vq_.resubmits_left() > 0)
            VLOG_INFO("queue {}: resubmitting {} requests left in flight by a previous backend", index_,
                      vq_.resubmits_left());
        if (st.ok()) st = on_start(s);
        if (!st.ok()) {
            result = std::move(st);
            return;
        }
        // A polling reactor polls from the first pass on: no kicks wanted until it tries to sleep.
        if (reactor_.mode() != PollMode::kNever) vq_.disable_notify();
        arm_kick();
        reactor_.add_poller(this);
        signal_unconditionally();
    });
    if (result.ok()) {
        running_ = true;
    } else {
        kick_.reset();
        inflight_ = nullptr;
        inflight_owner_.reset();
        log_ = {};
    }
    return result;
}

uint32_t QueueWorker::detach() {
    std::promise<void> done;
    auto fut = done.get_future();
    reactor_.post([this, &done] { begin_stop(&done); });
    fut.wait();
    return vq_.base();
}

uint32_t QueueWorker::stop() {
    if (!running_) return vq_.base();
    uint32_t last = detach();
    reactor_.run_sync([this] {
        VLOG_DEBUG("queue {}: stopped at avail {} (used index in guest memory {})", index_, vq_.base(),
                   vq_.ring_used());
        on_stop();
        vq_.deactivate();  // a stopped queue must not keep the guest's memory mapped
        vq_.set_used_log(nullptr, 0);
        data_log_ = nullptr;
    });
    log_ = {};  // the next start brings its own
    running_ = false;
    kick_.reset();
    inflight_ = nullptr;
    inflight_owner_.reset();
    return last;
}

void QueueWorker::set_call(int fd) {
    if (!running_) {
        call_ = fd;  // start() signals it
        return;
    }
    reactor_.run_sync([this, fd] {
        call_ = fd;
        signal_unconditionally();
    });
}

void QueueWorker::set_logging(LogSettings log) {
    if (!running_) {
        log_ = std::move(log);
        return;
    }
    LogSettings old;  // let go of a replaced log here, not on the reactor
    reactor_.run_sync([&] {
        old = std::exchange(log_, std::move(log));
        apply_log();
    });
}

void QueueWorker::apply_log() {
    data_log_ = log_.log.get();
    vq_.set_used_log(log_.used ? data_log_ : nullptr, log_.used_gpa);
}

void QueueWorker::log_write(const void* p, size_t len) const {
    if (data_log_ == nullptr || len == 0) return;
    if (auto gpa = vq_.mem().host_to_gpa(p, len)) data_log_->mark(*gpa, len);
}

void QueueWorker::log_write(const iovec* iov, size_t n, size_t len) const {
    if (data_log_ == nullptr) return;
    for (size_t i = 0; i < n && len > 0; ++i) {
        size_t c = std::min(iov[i].iov_len, len);
        log_write(iov[i].iov_base, c);
        len -= c;
    }
}

// A previous backend (or this one, before the frontend swapped call fds) may have published used
// entries and died, or lost the fd, before the notification that announces them: the guest would
// wait for them forever (Linux's virtio-blk has no request timeout). Neither the ring nor the
// inflight region tells whether that notification went out, so signal once, whatever the
// suppression state says: a spurious interrupt costs the guest one look at its used ring. (QEMU's
// libvhost-user does the same on SET_VRING_CALL, "in case of I/O hang after reconnecting".)
void QueueWorker::signal_unconditionally() {
    if (call_ < 0) return;
    eventfd_write(call_, 1);
    calls_.add();
}

Status QueueWorker::set_memory(std::shared_ptr<const shm::MemoryMap> mem) {
    if (!running_) return ok_status();
    // No request may point into the old mapping: drain, then re-translate the rings.
    uint32_t last = detach();
    Status result;
    reactor_.run_sync([&] {
        result = vq_.activate(mem, layout_, last, (features_ & kFEventIdx) != 0, (features_ & kFIndirectDesc) != 0,
                              inflight_, features_);
        if (result.ok()) {
            apply_log();
            on_memory(*mem);
        }
        if (!result.ok()) {
            on_stop();
            vq_.deactivate();
            vq_.set_used_log(nullptr, 0);
            data_log_ = nullptr;
            return;
        }
        if (reactor_.mode() != PollMode::kNever) vq_.disable_notify();
        arm_kick();
        reactor_.add_poller(this);
    });
    if (!result.ok()) {
        running_ = false;
        kick_.reset();
        inflight_ = nullptr;
        inflight_owner_.reset();
        log_ = {};
    }
    return result;
}

// Kicks arrive as an io_uring read on the kick eventfd, kept armed while the queue runs. QEMU
// creates its eventfds O_NONBLOCK; io_uring still waits for them (it arms an internal poll for
// pollable files), so a sleeping reactor is woken by the next kick without a read syscall of
// ours. BlkIdle.IdleReactorSleepsAndWakesOnKick checks exactly this.
void QueueWorker::arm_kick() {
    if (!kick_.valid() || kick_armed_) return;
    io_uring_sqe* sqe = reactor_.get_sqe();
    if (sqe == nullptr) return;  // retried on the next pass
    io_uring_prep_read(sqe, kick_.get(), &kick_buf_, sizeof(kick_buf_), 0);
    io_uring_sqe_set_data(sqe, static_cast<Completion*>(this));
    kick_armed_ = true;
}

void QueueWorker::complete(int32_t res) {
    kick_armed_ = false;
    if (res > 0) kicks_.add();
    if (res < 0 && res != -ECANCELED) VLOG_WARN("queue {}: kick read failed: {}", index_, strerror(-res));
    // A parked queue is polled again from the next pass on (which re-arms the read and looks at
    // the ring); a hot one already is.
    reactor_.wake(this);
}

void QueueWorker::fail(const Error& e) {
    if (broken_) return;
    broken_ = true;
    VLOG_ERROR("queue {}: guest error, queue stopped until reset: {}", index_, e.describe());
    if (err_ >= 0) eventfd_write(err_, 1);
}

bool QueueWorker::poll() {
    bool work = poll_device();
    // Completions become visible before new requests are taken: the driver refills its ring
    // while we parse, instead of the whole depth bouncing between the two sides as one batch.
    if (work) publish_and_notify();
    if (stop_done_ != nullptr) {
        try_finish_stop();
        return work;
    }
    if (!kick_armed_ && kick_.valid()) arm_kick();
    if (!broken_) {
        uint16_t before = vq_.taken();
        work |= process();
        reactor_.note_arrivals(static_cast<uint16_t>(vq_.taken() - before));
    }
    return work;
}

bool QueueWorker::publish_and_notify() {
    if (!vq_.active() || !vq_.publish_used()) return false;
    if (vq_.needs_notify() && call_ >= 0) {
        fault::before_interrupt();
        eventfd_write(call_, 1);
        calls_.add();
    }
    return true;
}

// A completion published here counts as the queue's work for parking: a request that took
// longer than the park window must not leave its queue parked (and the guest kicking) the moment
// it completes, while the guest is about to send the next one.
bool QueueWorker::end_pass() {
    bool published = publish_and_notify();
    if (stop_done_ != nullptr) try_finish_stop();
    return published;
}

bool QueueWorker::prepare_sleep() {
    if (device_needs_poll()) return false;
    if (!kick_.valid()) return false;  // no kick fd: this queue must be polled
    if (broken_ || stop_done_ != nullptr) return true;
    if (uint64_t t = held_until(); t != 0) {
        reactor_.wake_at(t);
        return true;
    }
    return !arm_guest_notify();
}

// Parking differs from prepare_sleep(): the queue stays parked across any number of reactor
// passes and sleeps, so it must be safe to leave unpolled until its kick read (or its backend's
// readiness poll) completes. Requests in flight complete through passes (a null backend's
// completions are polled; a used entry is published in end_pass), a QoS hold needs a timer, a
// stop needs try_finish_stop: all of those stay hot.
bool QueueWorker::park() {
    if (stop_done_ != nullptr || !kick_.valid() || !kick_armed_) return false;
    if (requests_in_flight() || !device_idle() || !device_can_park()) return false;
    if (broken_) return true;  // nothing to do until a stop or reset, which wakes it
    if (held_until() != 0) return false;
    return !arm_guest_notify();
}

void QueueWorker::after_wake() {
    if (broken_ || stop_done_ != nullptr) return;
    vq_.disable_notify();
}

void QueueWorker::begin_stop(std::promise<void>* done) {
    stop_done_ = done;
    reactor_.wake(this);  // a parked queue must be polled to finish its stop
    cancel_device_io();
    if (kick_armed_ && !kick_cancel_sent_) {
        io_uring_sqe* sqe = reactor_.get_sqe();
        if (sqe != nullptr) {
            io_uring_prep_cancel(sqe, static_cast<Completion*>(this), 0);
            io_uring_sqe_set_data(sqe, nullptr);
            kick_cancel_sent_ = true;
        }
    }
    try_finish_stop();
}

void QueueWorker::try_finish_stop() {
    if (stop_done_ == nullptr) return;
    if (kick_armed_ && !kick_cancel_sent_) begin_stop(stop_done_);
    if (inflight() > 0 || kick_armed_ || !device_idle()) return;
    // All requests completed: make their used entries visible before we let go.
    publish_and_notify();
    reactor_.remove_poller(this);
    kick_cancel_sent_ = false;
    auto* done = stop_done_;
    stop_done_ = nullptr;
    done->set_value();
}

}  // namespace vhostd::virtio
