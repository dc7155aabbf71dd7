#include "backends/tap.hpp"

#include <fcntl.h>
#include <net/if.h>  // before linux/if_tun.h: glibc's ifreq, not the kernel's
#include <linux/if_tun.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <cstring>

#include "core/log.hpp"
#include "virtio/net_types.hpp"

namespace vhostd::backends {

namespace net = virtio::net;

unsigned tap_offload_flags(uint64_t f) {
    // Without GUEST_CSUM the guest wants fully checksummed frames, and GSO frames always need
    // partial-checksum support, so nothing else may be enabled either.
    if (!(f & net::kFGuestCsum)) return 0;
    unsigned t = TUN_F_CSUM;
    if (f & net::kFGuestTso4) t |= TUN_F_TSO4;
    if (f & net::kFGuestTso6) t |= TUN_F_TSO6;
    if ((f & net::kFGuestEcn) && (t & (TUN_F_TSO4 | TUN_F_TSO6))) t |= TUN_F_TSO_ECN;
    if (f & net::kFGuestUfo) t |= TUN_F_UFO;
    return t;
}

namespace {

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

Status Tap::configure(uint32_t via, int vnet_hdr_size, unsigned offload_flags) {
    if (via >= fds_.size() || !attached_[via]) return make_error(Errc::kState, "tap queue {} is not attached", via);
    int fd = fds_[via].get();
    if (::ioctl(fd, TUNSETVNETHDRSZ, &vnet_hdr_size) < 0) return sys_error("TUNSETVNETHDRSZ {} on {}", vnet_hdr_size, name_);
    if (::ioctl(fd, TUNSETOFFLOAD, static_cast<unsigned long>(offload_flags)) < 0)
        return sys_error("TUNSETOFFLOAD {:#x} on {}", offload_flags, name_);
    return ok_status();
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
