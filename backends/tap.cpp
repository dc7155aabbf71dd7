#include "backends/tap.hpp"

#include <fcntl.h>
#include <net/if.h>  // before linux/if_tun.h: glibc's ifreq, not the kernel's
#include <linux/if_tun.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <cstring>

#include "core/log.hpp"

namespace vhostd::backends {

unsigned tun_offload_flags(const NetOffloads& o) {
    // GSO frames always carry a partial checksum: without csum the tap may use nothing else
    // (the device's mapping never asks for that; this keeps the tap safe on its own).
    if (!o.csum) return 0;
    unsigned t = TUN_F_CSUM;
    if (o.tso4) t |= TUN_F_TSO4;
    if (o.tso6) t |= TUN_F_TSO6;
    if (o.tso_ecn && (t & (TUN_F_TSO4 | TUN_F_TSO6))) t |= TUN_F_TSO_ECN;
    if (o.ufo) t |= TUN_F_UFO;
    return t;
}

namespace {

// A channel on one tap queue fd. Readiness is an io_uring poll on the fd, armed only after the
// fd ran dry (EAGAIN): while a queue is busy it costs nothing, and a sleeping reactor wakes when
// the tap has frames / room.
template <class Base>
class TapChannel : public Base, private Completion {
public:
    TapChannel(Reactor& r, int fd, short events) : reactor_(r), fd_(fd), events_(events) {}
    ~TapChannel() override = default;

    void cancel() override {
        if (!armed_ || cancel_sent_) return;
        io_uring_sqe* sqe = reactor_.get_sqe();
        if (sqe == nullptr) return;  // the stop path calls again
        io_uring_prep_poll_remove(sqe, reinterpret_cast<uint64_t>(static_cast<Completion*>(this)));
        io_uring_sqe_set_data(sqe, nullptr);
        cancel_sent_ = true;
    }
    bool armed() const override { return armed_; }

protected:
    void arm() override {
        if (armed_) return;
        io_uring_sqe* sqe = reactor_.get_sqe();
        if (sqe == nullptr) return;  // the caller polls again next pass
        io_uring_prep_poll_add(sqe, fd_, static_cast<unsigned>(events_));
        io_uring_sqe_set_data(sqe, static_cast<Completion*>(this));
        armed_ = true;
        cancel_sent_ = false;
    }

    Reactor& reactor_;
    const int fd_;  // borrowed from the Tap, which outlives its channels

private:
    void complete(int32_t) override {
        armed_ = false;
        this->set_ready();  // readable/writable, or cancelled: either way try the fd again
    }

    const short events_;
    bool armed_ = false;
    bool cancel_sent_ = false;
};

class TapRx final : public TapChannel<NetRxChannel> {
public:
    TapRx(Reactor& r, int fd) : TapChannel(r, fd, POLLIN) {}
    ssize_t receive(const iovec* iov, unsigned iovcnt) override {
        ssize_t n = ::readv(fd_, iov, static_cast<int>(iovcnt));
        return n < 0 ? -errno : n;
    }
};

class TapTx final : public TapChannel<NetTxChannel> {
public:
    TapTx(Reactor& r, int fd) : TapChannel(r, fd, POLLOUT) {}
    ssize_t send(const iovec* iov, unsigned iovcnt) override {
        ssize_t n = ::writev(fd_, iov, static_cast<int>(iovcnt));
        return n < 0 ? -errno : n;
    }
};

Status if_ioctl(unsigned long req, ifreq* ifr, const char* what) {
    UniqueFd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (!s.valid()) return sys_error("socket for {}", what);
    if (::ioctl(s.get(), req, ifr) < 0) return sys_error("{} on {}", what, ifr->ifr_name);
    return ok_status();
}

void fill_name(ifreq* ifr, const std::string& name) {
    std::memset(ifr, 0, sizeof(*ifr));
    std::memcpy(ifr->ifr_name, name.data(), std::min(name.size(), sizeof(ifr->ifr_name) - 1));
}

}  // namespace

Result<std::unique_ptr<Tap>> Tap::open(const TapOptions& opts) {
    if (opts.name.empty() || opts.name.size() >= IFNAMSIZ || opts.name.find('/') != std::string::npos)
        return make_error(Errc::kInvalid, "bad tap name '{}' (1..{} characters)", opts.name, IFNAMSIZ - 1);
    if (opts.queues == 0 || opts.queues > 256) return make_error(Errc::kInvalid, "tap queues {} (1..256)", opts.queues);
    std::unique_ptr<Tap> t(new Tap());
    t->name_ = opts.name;
    t->label_ = "tap " + opts.name;
    t->created_ = ::if_nametoindex(opts.name.c_str()) == 0;
    for (uint32_t i = 0; i < opts.queues; ++i) {
        UniqueFd fd(::open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC));
        if (!fd.valid()) return sys_error("open /dev/net/tun");
        ifreq ifr;
        fill_name(&ifr, opts.name);
        ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | IFF_MULTI_QUEUE;
        if (::ioctl(fd.get(), TUNSETIFF, &ifr) < 0) {
            int e = errno;
            if (!t->created_ && e == EINVAL)
                return make_error(Errc::kInvalid,
                                  "interface {} exists but is not a multi-queue tap with vnet headers "
                                  "(ip tuntap add {} mode tap multi_queue vnet_hdr)",
                                  opts.name, opts.name);
            return sys_error_code(e, "TUNSETIFF {} (queue {})", opts.name, i);
        }
        // Nobody may use a queue before its guest ring runs.
        std::memset(&ifr, 0, sizeof(ifr));
        ifr.ifr_flags = IFF_DETACH_QUEUE;
        if (::ioctl(fd.get(), TUNSETQUEUE, &ifr) < 0) return sys_error("detach queue {} of {}", i, opts.name);
        t->fds_.push_back(std::move(fd));
        t->attached_.push_back(false);
    }
    if (opts.mtu != 0) VHOSTD_TRY(t->set_mtu(opts.mtu));
    if (t->created_) VHOSTD_TRY(t->set_up());
    VLOG_DEBUG("tap {}: {} with {} queues", t->name_, t->created_ ? "created" : "attached", opts.queues);
    return t;
}

Tap::~Tap() {
    fds_.clear();  // a tap we created goes away with its last queue
}

Status Tap::set_queue_attached(uint32_t i, bool attached) {
    if (i >= fds_.size()) return make_error(Errc::kOutOfRange, "tap queue {} out of range", i);
    if (attached_[i] == attached) return ok_status();
    ifreq ifr;
    std::memset(&ifr, 0, sizeof(ifr));
    ifr.ifr_flags = attached ? IFF_ATTACH_QUEUE : IFF_DETACH_QUEUE;
    if (::ioctl(fds_[i].get(), TUNSETQUEUE, &ifr) < 0)
        return sys_error("{} queue {} of {}", attached ? "attach" : "detach", i, name_);
    attached_[i] = attached;
    return ok_status();
}

Status Tap::configure(uint32_t via, uint32_t vnet_hdr_bytes, const NetOffloads& offloads) {
    if (via >= fds_.size() || !attached_[via]) return make_error(Errc::kState, "tap queue {} is not attached", via);
    int fd = fds_[via].get();
    int vnet_hdr_size = static_cast<int>(vnet_hdr_bytes);
    unsigned offload_flags = tun_offload_flags(offloads);
    if (::ioctl(fd, TUNSETVNETHDRSZ, &vnet_hdr_size) < 0) return sys_error("TUNSETVNETHDRSZ {} on {}", vnet_hdr_size, name_);
    if (::ioctl(fd, TUNSETOFFLOAD, static_cast<unsigned long>(offload_flags)) < 0)
        return sys_error("TUNSETOFFLOAD {:#x} on {}", offload_flags, name_);
    return ok_status();
}

Status Tap::send_frame(uint32_t queue, const iovec* iov, unsigned iovcnt) {
    if (queue >= fds_.size() || !attached_[queue])
        return make_error(Errc::kState, "tap queue {} is not attached", queue);
    if (::writev(fds_[queue].get(), iov, static_cast<int>(iovcnt)) < 0) return sys_error("frame to {}", name_);
    return ok_status();
}

Result<std::unique_ptr<NetRxChannel>> Tap::open_rx(uint32_t queue, Reactor& reactor) {
    if (queue >= fds_.size()) return make_error(Errc::kOutOfRange, "tap queue {} out of range", queue);
    return std::unique_ptr<NetRxChannel>(std::make_unique<TapRx>(reactor, fds_[queue].get()));
}

Result<std::unique_ptr<NetTxChannel>> Tap::open_tx(uint32_t queue, Reactor& reactor) {
    if (queue >= fds_.size()) return make_error(Errc::kOutOfRange, "tap queue {} out of range", queue);
    return std::unique_ptr<NetTxChannel>(std::make_unique<TapTx>(reactor, fds_[queue].get()));
}

Result<uint32_t> Tap::mtu() const {
    ifreq ifr;
    fill_name(&ifr, name_);
    VHOSTD_TRY(if_ioctl(SIOCGIFMTU, &ifr, "SIOCGIFMTU"));
    return static_cast<uint32_t>(ifr.ifr_mtu);
}

Status Tap::set_mtu(uint32_t mtu) {
    ifreq ifr;
    fill_name(&ifr, name_);
    ifr.ifr_mtu = static_cast<int>(mtu);
    return if_ioctl(SIOCSIFMTU, &ifr, "SIOCSIFMTU");
}

Status Tap::set_up() {
    ifreq ifr;
    fill_name(&ifr, name_);
    VHOSTD_TRY(if_ioctl(SIOCGIFFLAGS, &ifr, "SIOCGIFFLAGS"));
    if (ifr.ifr_flags & IFF_UP) return ok_status();
    ifr.ifr_flags |= IFF_UP;
    return if_ioctl(SIOCSIFFLAGS, &ifr, "SIOCSIFFLAGS");
}

}  // namespace vhostd::backends
