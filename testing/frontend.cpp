#include "testing/frontend.hpp"

#include "testing/packed_driver_queue.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <thread>

namespace vhostd::testing {

using vhost::MsgHeader;
using vhost::Request;

namespace {

using Clock = std::chrono::steady_clock;
constexpr uint32_t kMaxReplyPayload = 64 * 1024;

int remaining_ms(Clock::time_point deadline) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    return left <= 0 ? 0 : static_cast<int>(std::min<int64_t>(left, INT32_MAX));
}

// Waits for `events` on fd until the deadline. EINTR restarts with the remaining time.
Status wait_fd(int fd, short events, Clock::time_point deadline, const char* what) {
    for (;;) {
        pollfd p{fd, events, 0};
        int r = ::poll(&p, 1, remaining_ms(deadline));
        if (r < 0) {
            if (errno == EINTR) continue;
            return sys_error("poll ({})", what);
        }
        if (r == 0) return make_error(Errc::kBusy, "timed out waiting to {}", what);
        return ok_status();
    }
}

Result<sockaddr_un> make_addr(const std::string& path) {
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    if (path.size() >= sizeof(a.sun_path)) return make_error(Errc::kInvalid, "socket path too long: {}", path);
    std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
    return a;
}

// Sends all of [iov] with fds attached to the first byte; handles short writes and EINTR.
Status send_all(int fd, std::span<const uint8_t> a, std::span<const uint8_t> b, std::span<const int> fds,
                Clock::time_point deadline) {
    if (fds.size() > vhost::kMaxFds) return make_error(Errc::kInvalid, "{} fds > {}", fds.size(), vhost::kMaxFds);
    size_t off = 0;
    const size_t total = a.size() + b.size();
    bool fds_sent = fds.empty();
    alignas(cmsghdr) char cbuf[CMSG_SPACE(sizeof(int) * vhost::kMaxFds)];
    while (off < total || !fds_sent) {
        iovec iov[2];
        int niov = 0;
        if (off < a.size()) iov[niov++] = {const_cast<uint8_t*>(a.data() + off), a.size() - off};
        size_t boff = off > a.size() ? off - a.size() : 0;
        if (boff < b.size()) iov[niov++] = {const_cast<uint8_t*>(b.data() + boff), b.size() - boff};
        msghdr m{};
        m.msg_iov = iov;
        m.msg_iovlen = static_cast<size_t>(niov);
        if (!fds_sent) {
            std::memset(cbuf, 0, sizeof(cbuf));
            m.msg_control = cbuf;
            m.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
            cmsghdr* c = CMSG_FIRSTHDR(&m);
            c->cmsg_level = SOL_SOCKET;
            c->cmsg_type = SCM_RIGHTS;
            c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
            std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
        }
        if (niov == 0) {
            // fds with an empty message: SCM_RIGHTS needs at least one byte of data.
            return make_error(Errc::kInvalid, "cannot send fds without data");
        }
        ssize_t n = ::sendmsg(fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                VHOSTD_TRY(wait_fd(fd, POLLOUT, deadline, "send"));
                continue;
            }
            if (errno == EPIPE || errno == ECONNRESET) return Error{Errc::kClosed, errno, "backend closed the socket"};
            return sys_error("sendmsg");
        }
        fds_sent = true;
        off += static_cast<size_t>(n);
    }
    return ok_status();
}

// Reads exactly dst.size() bytes, collecting any SCM_RIGHTS fds.
Status recv_all(int fd, std::span<uint8_t> dst, std::vector<UniqueFd>& fds, Clock::time_point deadline) {
    size_t off = 0;
    alignas(cmsghdr) char cbuf[CMSG_SPACE(sizeof(int) * vhost::kMaxFds)];
    while (off < dst.size()) {
        iovec iov{dst.data() + off, dst.size() - off};
        msghdr m{};
        m.msg_iov = &iov;
        m.msg_iovlen = 1;
        m.msg_control = cbuf;
        m.msg_controllen = sizeof(cbuf);
        ssize_t n = ::recvmsg(fd, &m, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                VHOSTD_TRY(wait_fd(fd, POLLIN, deadline, "receive"));
                continue;
            }
            if (errno == ECONNRESET) return Error{Errc::kClosed, errno, "backend reset the connection"};
            return sys_error("recvmsg");
        }
        for (cmsghdr* c = CMSG_FIRSTHDR(&m); c != nullptr; c = CMSG_NXTHDR(&m, c)) {
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
                size_t nfd = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                for (size_t i = 0; i < nfd; ++i) {
                    int f;
                    std::memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
                    fds.emplace_back(f);
                }
            }
        }
        if (m.msg_flags & MSG_CTRUNC) return make_error(Errc::kInvalid, "backend sent too many fds");
        if (n == 0) {
            return make_error(Errc::kClosed, "backend closed the connection ({} of {} bytes read)", off, dst.size());
        }
        off += static_cast<size_t>(n);
    }
    return ok_status();
}

template <typename T>
std::span<const uint8_t> bytes_of(const T& v) {
    return {reinterpret_cast<const uint8_t*>(&v), sizeof(T)};
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Connection set-up

Result<std::unique_ptr<Frontend>> Frontend::connect(const std::string& path, std::chrono::milliseconds timeout) {
    VHOSTD_ASSIGN_OR_RETURN(sockaddr_un addr, make_addr(path));
    auto deadline = Clock::now() + timeout;
    for (;;) {
        UniqueFd s(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
        if (!s) return sys_error("socket");
        int r;
        do {
            r = ::connect(s.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
        } while (r != 0 && errno == EINTR);
        if (r == 0) return std::unique_ptr<Frontend>(new Frontend(std::move(s)));
        if (errno != ENOENT && errno != ECONNREFUSED && errno != EAGAIN) return sys_error("connect {}", path);
        if (Clock::now() >= deadline) return sys_error("connect {} (timed out)", path);
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
}

Result<std::unique_ptr<Frontend>> Frontend::from_fd(UniqueFd fd) {
    if (!fd) return make_error(Errc::kInvalid, "invalid fd");
    return std::unique_ptr<Frontend>(new Frontend(std::move(fd)));
}

Result<std::unique_ptr<Frontend>> Frontend::listen_and_accept(const std::string& path,
                                                              std::chrono::milliseconds timeout) {
    VHOSTD_ASSIGN_OR_RETURN(sockaddr_un addr, make_addr(path));
    UniqueFd l(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!l) return sys_error("socket");
    ::unlink(path.c_str());
    if (::bind(l.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) return sys_error("bind {}", path);
    if (::listen(l.get(), 1) != 0) return sys_error("listen {}", path);
    auto deadline = Clock::now() + timeout;
    for (;;) {
        auto w = wait_fd(l.get(), POLLIN, deadline, "accept a backend");
        if (!w) {
            ::unlink(path.c_str());
            return std::move(w).take_error();
        }
        int c = ::accept4(l.get(), nullptr, nullptr, SOCK_CLOEXEC);
        if (c < 0) {
            if (errno == EINTR || errno == EAGAIN || errno == ECONNABORTED) continue;
            return sys_error("accept");
        }
        ::unlink(path.c_str());
        return std::unique_ptr<Frontend>(new Frontend(UniqueFd(c)));
    }
}

// ---------------------------------------------------------------------------------------------
// Raw I/O

Status Frontend::send_raw(const MsgHeader& hdr, std::span<const uint8_t> payload, std::span<const int> fds) {
    return send_all(sock_.get(), bytes_of(hdr), payload, fds, Clock::now() + timeout_);
}

Result<RawReply> Frontend::recv_raw(std::chrono::milliseconds timeout) {
    auto deadline = Clock::now() + timeout;
    RawReply r;
    VHOSTD_TRY(recv_all(sock_.get(), {reinterpret_cast<uint8_t*>(&r.hdr), sizeof(r.hdr)}, r.fds, deadline));
    if (r.hdr.size > kMaxReplyPayload)
        return make_error(Errc::kInvalid, "reply payload of {} bytes (request {})", r.hdr.size, r.hdr.request);
    r.payload.resize(r.hdr.size);
    VHOSTD_TRY(recv_all(sock_.get(), r.payload, r.fds, deadline));
    return r;
}

bool Frontend::peer_closed(std::chrono::milliseconds timeout) {
    auto deadline = Clock::now() + timeout;
    for (;;) {
        // POLLRDHUP fires on the peer's shutdown/close even with unread data pending.
        pollfd p{sock_.get(), POLLRDHUP, 0};
        int r = ::poll(&p, 1, remaining_ms(deadline));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return false;
        return (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
    }
}

bool Frontend::want_ack() const {
    if (reply_ack_forced_ >= 0) return reply_ack_forced_ == 1;
    return (protocol_features_ & vhost::pf::kReplyAck) != 0;
}

Status Frontend::send_noreply(Request req, std::span<const uint8_t> payload, std::span<const int> fds) {
    bool ack = want_ack();
    MsgHeader h{static_cast<uint32_t>(req), vhost::kVersion | (ack ? vhost::kFlagNeedReply : 0u),
                static_cast<uint32_t>(payload.size())};
    VHOSTD_TRY(send_raw(h, payload, fds));
    if (!ack) return ok_status();
    VHOSTD_ASSIGN_OR_RETURN(RawReply r, recv_raw(timeout_));
    if (r.hdr.request != h.request)
        return make_error(Errc::kInvalid, "{} ack: reply is for request {}", vhost::request_name(req), r.hdr.request);
    if ((r.hdr.flags & vhost::kVersionMask) != vhost::kVersion || !(r.hdr.flags & vhost::kFlagReply))
        return make_error(Errc::kInvalid, "{} ack: bad reply flags {:#x}", vhost::request_name(req), r.hdr.flags);
    if (r.hdr.size != sizeof(uint64_t) || !r.fds.empty())
        return make_error(Errc::kInvalid, "{} ack: size {} / {} fds", vhost::request_name(req), r.hdr.size,
                          r.fds.size());
    uint64_t v;
    std::memcpy(&v, r.payload.data(), sizeof(v));
    if (v != 0) return make_error(Errc::kInvalid, "{} failed: backend acked {:#x}", vhost::request_name(req), v);
    return ok_status();
}

Result<RawReply> Frontend::call(Request req, std::span<const uint8_t> payload, uint32_t reply_size,
                                std::span<const int> fds) {
    MsgHeader h{static_cast<uint32_t>(req), vhost::kVersion, static_cast<uint32_t>(payload.size())};
    VHOSTD_TRY(send_raw(h, payload, fds));
    VHOSTD_ASSIGN_OR_RETURN(RawReply r, recv_raw(timeout_));
    if (r.hdr.request != h.request)
        return make_error(Errc::kInvalid, "{}: reply is for request {}", vhost::request_name(req), r.hdr.request);
    if ((r.hdr.flags & vhost::kVersionMask) != vhost::kVersion || !(r.hdr.flags & vhost::kFlagReply))
        return make_error(Errc::kInvalid, "{}: bad reply flags {:#x}", vhost::request_name(req), r.hdr.flags);
    if (r.hdr.size != reply_size)
        return make_error(Errc::kInvalid, "{}: reply size {} != {}", vhost::request_name(req), r.hdr.size, reply_size);
    return r;
}

Status Frontend::send_u64(Request req, uint64_t v, std::span<const int> fds) {
    return send_noreply(req, bytes_of(v), fds);
}

Result<uint64_t> Frontend::get_u64(Request req) {
    VHOSTD_ASSIGN_OR_RETURN(RawReply r, call(req, {}, sizeof(uint64_t)));
    if (!r.fds.empty()) return make_error(Errc::kInvalid, "{}: unexpected fds", vhost::request_name(req));
    uint64_t v;
    std::memcpy(&v, r.payload.data(), sizeof(v));
    return v;
}

// ---------------------------------------------------------------------------------------------
// Messages

Result<uint64_t> Frontend::get_features() { return get_u64(Request::kGetFeatures); }
Status Frontend::set_features(uint64_t f) { return send_u64(Request::kSetFeatures, f); }
Result<uint64_t> Frontend::get_protocol_features() { return get_u64(Request::kGetProtocolFeatures); }

Status Frontend::set_protocol_features(uint64_t f) {
    // NEED_REPLY follows what was negotiated before this message (QEMU's behaviour).
    VHOSTD_TRY(send_u64(Request::kSetProtocolFeatures, f));
    protocol_features_ = f;
    return ok_status();
}

Status Frontend::set_owner() { return send_noreply(Request::kSetOwner, {}); }
Status Frontend::reset_owner() { return send_noreply(Request::kResetOwner, {}); }
Status Frontend::reset_device() { return send_noreply(Request::kResetDevice, {}); }
Result<uint64_t> Frontend::get_queue_num() { return get_u64(Request::kGetQueueNum); }
Result<uint64_t> Frontend::get_max_mem_slots() { return get_u64(Request::kGetMaxMemSlots); }

Status Frontend::set_mem_table(const GuestRam& mem) {
    auto regs = mem.regions();
    if (regs.size() > vhost::kMaxMemTableRegions)
        return make_error(Errc::kInvalid, "{} regions > {}", regs.size(), vhost::kMaxMemTableRegions);
    vhost::MemRegion descs[vhost::kMaxMemTableRegions];
    int fds[vhost::kMaxMemTableRegions];
    for (size_t i = 0; i < regs.size(); ++i) {
        descs[i] = regs[i].desc();
        fds[i] = regs[i].fd();
    }
    return set_mem_table(std::span(descs, regs.size()), std::span(fds, regs.size()));
}

Status Frontend::set_mem_table(std::span<const vhost::MemRegion> regions, std::span<const int> fds) {
    std::vector<uint8_t> p(sizeof(vhost::MemTableHeader) + regions.size() * sizeof(vhost::MemRegion));
    vhost::MemTableHeader h{static_cast<uint32_t>(regions.size()), 0};
    std::memcpy(p.data(), &h, sizeof(h));
    if (!regions.empty()) std::memcpy(p.data() + sizeof(h), regions.data(), regions.size() * sizeof(vhost::MemRegion));
    return send_noreply(Request::kSetMemTable, p, fds);
}

Status Frontend::add_mem_reg(const GuestRam::Region& region) { return add_mem_reg(region.desc(), region.fd()); }

Status Frontend::add_mem_reg(const vhost::MemRegion& region, int fd) {
    vhost::SingleMemRegion m{0, region};
    if (fd < 0) return send_noreply(Request::kAddMemReg, bytes_of(m));
    return send_noreply(Request::kAddMemReg, bytes_of(m), std::span(&fd, 1));
}

Status Frontend::rem_mem_reg(const GuestRam::Region& region, bool send_fd) {
    return rem_mem_reg(region.desc(), send_fd ? region.fd() : -1);
}

Status Frontend::rem_mem_reg(const vhost::MemRegion& region, int fd) {
    vhost::SingleMemRegion m{0, region};
    if (fd < 0) return send_noreply(Request::kRemMemReg, bytes_of(m));
    return send_noreply(Request::kRemMemReg, bytes_of(m), std::span(&fd, 1));
}

Status Frontend::set_vring_num(uint32_t index, uint32_t num) {
    vhost::VringState s{index, num};
    return send_noreply(Request::kSetVringNum, bytes_of(s));
}

Status Frontend::set_vring_addr(uint32_t index, const DriverQueue& q, uint32_t flags) {
    return set_vring_addr(vhost::VringAddr{index, flags, q.desc_uva(), q.used_uva(), q.avail_uva(), 0});
}

Status Frontend::set_vring_addr(const vhost::VringAddr& a) { return send_noreply(Request::kSetVringAddr, bytes_of(a)); }

Status Frontend::set_vring_base(uint32_t index, uint32_t base) {
    vhost::VringState s{index, base};
    return send_noreply(Request::kSetVringBase, bytes_of(s));
}

Result<uint32_t> Frontend::get_vring_base(uint32_t index) {
    vhost::VringState s{index, 0};
    VHOSTD_ASSIGN_OR_RETURN(RawReply r, call(Request::kGetVringBase, bytes_of(s), sizeof(vhost::VringState)));
    vhost::VringState out;
    std::memcpy(&out, r.payload.data(), sizeof(out));
    if (out.index != index)
        return make_error(Errc::kInvalid, "GET_VRING_BASE: reply for vring {} (asked {})", out.index, index);
    return out.num.get();
}

Status Frontend::send_vring_fd(Request req, uint32_t index, int fd) {
    uint64_t v = index & vhost::kVringIndexMask;
    if (fd < 0) return send_u64(req, v | vhost::kVringNoFdFlag);
    return send_u64(req, v, std::span(&fd, 1));
}

Status Frontend::set_vring_kick(uint32_t index, int fd) { return send_vring_fd(Request::kSetVringKick, index, fd); }
Status Frontend::set_vring_call(uint32_t index, int fd) { return send_vring_fd(Request::kSetVringCall, index, fd); }
Status Frontend::set_vring_err(uint32_t index, int fd) { return send_vring_fd(Request::kSetVringErr, index, fd); }

Status Frontend::set_vring_enable(uint32_t index, bool enable) {
    vhost::VringState s{index, enable ? 1u : 0u};
    return send_noreply(Request::kSetVringEnable, bytes_of(s));
}

Result<std::vector<uint8_t>> Frontend::get_config(uint32_t offset, uint32_t size, uint32_t flags) {
    std::vector<uint8_t> p(sizeof(vhost::ConfigHeader) + size, 0);
    vhost::ConfigHeader h{offset, size, flags};
    std::memcpy(p.data(), &h, sizeof(h));
    VHOSTD_ASSIGN_OR_RETURN(RawReply r, call(Request::kGetConfig, p, static_cast<uint32_t>(p.size())));
    vhost::ConfigHeader rh;
    std::memcpy(&rh, r.payload.data(), sizeof(rh));
    if (rh.offset != offset || rh.size != size)
        return make_error(Errc::kInvalid, "GET_CONFIG: reply header offset {} size {} (asked {} {})", rh.offset,
                          rh.size, offset, size);
    return std::vector<uint8_t>(r.payload.begin() + sizeof(rh), r.payload.end());
}

Status Frontend::set_config(uint32_t offset, std::span<const uint8_t> bytes, uint32_t flags) {
    std::vector<uint8_t> p(sizeof(vhost::ConfigHeader) + bytes.size());
    vhost::ConfigHeader h{offset, static_cast<uint32_t>(bytes.size()), flags};
    std::memcpy(p.data(), &h, sizeof(h));
    if (!bytes.empty()) std::memcpy(p.data() + sizeof(h), bytes.data(), bytes.size());
    return send_noreply(Request::kSetConfig, p);
}

Status Frontend::set_backend_req_fd(int fd) {
    // QEMU sends this with an empty payload and the fd attached; SCM_RIGHTS needs a data byte,
    // which the 12-byte header provides.
    return send_noreply(Request::kSetBackendReqFd, {}, std::span(&fd, 1));
}

Result<uint8_t> Frontend::get_status() {
    VHOSTD_ASSIGN_OR_RETURN(uint64_t v, get_u64(Request::kGetStatus));
    if (v > 0xff) return make_error(Errc::kInvalid, "GET_STATUS: status {:#x} > 0xff", v);
    return static_cast<uint8_t>(v);
}

Status Frontend::net_set_mtu(uint64_t mtu) { return send_u64(vhost::Request::kNetSetMtu, mtu); }

Status Frontend::send_rarp(const uint8_t mac[6]) {
    uint64_t v = 0;
    std::memcpy(&v, mac, 6);
    return send_u64(vhost::Request::kSendRarp, v);
}

Status Frontend::set_status(uint8_t status) { return send_u64(Request::kSetStatus, status); }

Result<InflightFd> Frontend::get_inflight_fd(uint16_t num_queues, uint16_t queue_size) {
    vhost::InflightDesc d{0, 0, num_queues, queue_size, 0};
    VHOSTD_ASSIGN_OR_RETURN(RawReply r, call(Request::kGetInflightFd, bytes_of(d), sizeof(vhost::InflightDesc)));
    if (r.fds.size() != 1) return make_error(Errc::kInvalid, "GET_INFLIGHT_FD: {} fds in reply", r.fds.size());
    InflightFd out;
    std::memcpy(&out.desc, r.payload.data(), sizeof(out.desc));
    out.fd = std::move(r.fds[0]);
    return out;
}

Status Frontend::set_inflight_fd(int fd, const vhost::InflightDesc& desc) {
    return send_noreply(Request::kSetInflightFd, bytes_of(desc), std::span(&fd, 1));
}

Status Frontend::set_log_base(int fd, uint64_t size, uint64_t offset) {
    vhost::LogDesc d{size, offset};
    VHOSTD_ASSIGN_OR_RETURN(RawReply r, call(Request::kSetLogBase, bytes_of(d), 0, std::span(&fd, 1)));
    if (!r.fds.empty()) return make_error(Errc::kInvalid, "SET_LOG_BASE: unexpected fds in the reply");
    return ok_status();
}

Status Frontend::setup_queue(uint32_t index, DriverQueue& q, int kick_fd, int call_fd, bool enable) {
    VHOSTD_TRY(set_vring_num(index, q.size()));
    VHOSTD_TRY(set_vring_base(index, 0));
    VHOSTD_TRY(set_vring_addr(index, q));
    VHOSTD_TRY(set_vring_kick(index, kick_fd));
    VHOSTD_TRY(set_vring_call(index, call_fd));
    return set_vring_enable(index, enable);
}

Status Frontend::setup_packed_queue(uint32_t index, PackedDriverQueue& q, int kick_fd, int call_fd, bool enable) {
    const virtio::QueueLayout l = q.layout();
    VHOSTD_TRY(set_vring_num(index, q.size()));
    VHOSTD_TRY(set_vring_base(index, virtio::kPackedFreshBase));
    VHOSTD_TRY(set_vring_addr(vhost::VringAddr{index, 0, l.desc_uva, l.used_uva, l.avail_uva, 0}));
    VHOSTD_TRY(set_vring_kick(index, kick_fd));
    VHOSTD_TRY(set_vring_call(index, call_fd));
    return set_vring_enable(index, enable);
}

}  // namespace vhostd::testing
