// An in-memory host side for virtio-net: frames wait in deques, receive() / send() say -EAGAIN
// when there is nothing / no room, and readiness is an io_uring read on an eventfd that the test
// fires by hand, so a test decides exactly when the device may notice new frames or room. With
// it the net device runs without a tap (tests/unit/net_fake_backend_test.cpp).
#pragma once

#include <sys/eventfd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "backends/net_backend.hpp"
#include "core/unique_fd.hpp"
#include "reactor/reactor.hpp"

namespace vhostd::testing {

using Frame = std::vector<uint8_t>;

// One queue of the fake host side. The reactor thread reads / writes the deques through the
// channels, the test thread through the backend: hence the mutex (a test double, not a data path).
struct FakeQueue {
    std::mutex mu;
    std::deque<Frame> to_guest;    // header + frame, as the device will receive it
    std::deque<Frame> from_guest;  // header + frame, as the device sent it
    size_t from_guest_cap = 1024;  // send() says -EAGAIN beyond this
    UniqueFd wake[2];              // eventfds: RX, TX readiness
    std::atomic<bool> attached{false};
    std::atomic<uint64_t> receives{0}, sends{0}, arms{0};
    std::atomic<int> open_channels{0};
    std::atomic<int> destroyed_armed{0};  // channels destroyed with a wake-up outstanding: a bug
    std::atomic<int> cancel_refusals{0};  // cancel() calls that act as if the SQ were full
};

// Readiness: an io_uring read on the direction's eventfd, armed only when the device waits.
template <class Base>
class FakeChannel : public Base, private Completion {
public:
    FakeChannel(Reactor& r, FakeQueue& q, int dir) : q_(q), reactor_(r), fd_(q.wake[dir].get()) { ++q_.open_channels; }
    ~FakeChannel() override {
        if (armed_) ++q_.destroyed_armed;
        --q_.open_channels;
    }
    void cancel() override {
        if (!armed_ || cancel_sent_) return;
        if (q_.cancel_refusals > 0) {  // "SQ full": the device must call again on a later pass
            --q_.cancel_refusals;
            return;
        }
        io_uring_sqe* sqe = reactor_.get_sqe();
        if (sqe == nullptr) return;
        io_uring_prep_cancel(sqe, static_cast<Completion*>(this), 0);
        io_uring_sqe_set_data(sqe, nullptr);
        cancel_sent_ = true;
    }
    bool armed() const override { return armed_; }

protected:
    void arm() override {
        if (armed_) return;
        io_uring_sqe* sqe = reactor_.get_sqe();
        if (sqe == nullptr) return;
        io_uring_prep_read(sqe, fd_, &buf_, sizeof(buf_), 0);
        io_uring_sqe_set_data(sqe, static_cast<Completion*>(this));
        armed_ = true;
        cancel_sent_ = false;
        ++q_.arms;
    }
    FakeQueue& q_;

private:
    void complete(int32_t) override {
        armed_ = false;
        this->set_ready();
    }
    Reactor& reactor_;
    int fd_;
    uint64_t buf_ = 0;
    bool armed_ = false;
    bool cancel_sent_ = false;
};

class FakeRx final : public FakeChannel<backends::NetRxChannel> {
public:
    FakeRx(Reactor& r, FakeQueue& q) : FakeChannel(r, q, 0) {}
    ssize_t receive(const iovec* iov, unsigned iovcnt) override {
        ++q_.receives;
        std::lock_guard lk(q_.mu);
        if (q_.to_guest.empty()) return -EAGAIN;
        Frame f = std::move(q_.to_guest.front());
        q_.to_guest.pop_front();
        size_t off = 0;
        for (unsigned i = 0; i < iovcnt && off < f.size(); ++i) {
            size_t c = std::min(iov[i].iov_len, f.size() - off);
            std::memcpy(iov[i].iov_base, f.data() + off, c);
            off += c;
        }
        return static_cast<ssize_t>(f.size());  // a frame larger than the buffers shows as such
    }
};

class FakeTx final : public FakeChannel<backends::NetTxChannel> {
public:
    FakeTx(Reactor& r, FakeQueue& q) : FakeChannel(r, q, 1) {}
    ssize_t send(const iovec* iov, unsigned iovcnt) override {
        ++q_.sends;
        std::lock_guard lk(q_.mu);
        if (q_.from_guest.size() >= q_.from_guest_cap) return -EAGAIN;
        Frame f;
        for (unsigned i = 0; i < iovcnt; ++i) {
            auto* p = static_cast<const uint8_t*>(iov[i].iov_base);
            f.insert(f.end(), p, p + iov[i].iov_len);
        }
        q_.from_guest.push_back(std::move(f));
        return static_cast<ssize_t>(q_.from_guest.back().size());
    }
};

class FakeNetBackend final : public backends::NetBackend {
public:
    explicit FakeNetBackend(uint32_t queues) : q_(queues) {
        for (auto& q : q_) {
            for (auto& w : q.wake) w.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
        }
    }
    const std::string& name() const override { return name_; }
    uint32_t queues() const override { return static_cast<uint32_t>(q_.size()); }
    Result<uint32_t> mtu() const override { return mtu_.load(); }
    Status set_mtu(uint32_t mtu) override {
        mtu_ = mtu;
        return ok_status();
    }
    Status set_queue_attached(uint32_t queue, bool attached) override {
        if (queue >= q_.size()) return make_error(Errc::kOutOfRange, "fake queue {}", queue);
        q_[queue].attached = attached;
        return ok_status();
    }
    Status configure(uint32_t queue, uint32_t hdr_bytes, const backends::NetOffloads& o) override {
        if (queue >= q_.size() || !q_[queue].attached) return make_error(Errc::kState, "fake queue {} detached", queue);
        std::lock_guard lk(mu_);
        hdr_bytes_ = hdr_bytes;
        offloads_ = o;
        ++configures_;
        return ok_status();
    }
    Status send_frame(uint32_t queue, const iovec* iov, unsigned iovcnt) override {
        if (queue >= q_.size() || !q_[queue].attached) return make_error(Errc::kState, "fake queue {} detached", queue);
        Frame f;
        for (unsigned i = 0; i < iovcnt; ++i) {
            auto* p = static_cast<const uint8_t*>(iov[i].iov_base);
            f.insert(f.end(), p, p + iov[i].iov_len);
        }
        std::lock_guard lk(q_[queue].mu);
        q_[queue].from_guest.push_back(std::move(f));
        return ok_status();
    }
    Result<std::unique_ptr<backends::NetRxChannel>> open_rx(uint32_t queue, Reactor& r) override {
        if (queue >= q_.size()) return make_error(Errc::kOutOfRange, "fake queue {}", queue);
        return std::unique_ptr<backends::NetRxChannel>(std::make_unique<FakeRx>(r, q_[queue]));
    }
    Result<std::unique_ptr<backends::NetTxChannel>> open_tx(uint32_t queue, Reactor& r) override {
        if (queue >= q_.size()) return make_error(Errc::kOutOfRange, "fake queue {}", queue);
        return std::unique_ptr<backends::NetTxChannel>(std::make_unique<FakeTx>(r, q_[queue]));
    }

    // ---- test side ----
    FakeQueue& queue(uint32_t i) { return q_.at(i); }
    // Frames for the guest; `fire` signals RX readiness (else the device must not notice yet).
    void inject(uint32_t i, Frame f, bool fire = true) {
        {
            std::lock_guard lk(q_[i].mu);
            q_[i].to_guest.push_back(std::move(f));
        }
        if (fire) (void)fire_ready(i, 0);
    }
    // Signals readiness of direction `dir` (0: RX, 1: TX) of queue i. False if the eventfd write failed.
    bool fire_ready(uint32_t i, int dir) { return ::eventfd_write(q_[i].wake[dir].get(), 1) == 0; }
    size_t waiting_for_guest(uint32_t i) {
        std::lock_guard lk(q_[i].mu);
        return q_[i].to_guest.size();
    }
    std::deque<Frame> take_sent(uint32_t i) {
        std::lock_guard lk(q_[i].mu);
        return std::exchange(q_[i].from_guest, {});
    }
    void set_tx_cap(uint32_t i, size_t cap) {
        std::lock_guard lk(q_[i].mu);
        q_[i].from_guest_cap = cap;
    }
    std::pair<uint32_t, backends::NetOffloads> format() {
        std::lock_guard lk(mu_);
        return {hdr_bytes_, offloads_};
    }

private:
    std::string name_ = "fake";
    std::deque<FakeQueue> q_;  // not movable (mutex, atomics): a deque builds them in place
    std::atomic<uint32_t> mtu_{1500};
    std::mutex mu_;
    uint32_t hdr_bytes_ = 0;
    backends::NetOffloads offloads_;
    int configures_ = 0;
};

}  // namespace vhostd::testing
