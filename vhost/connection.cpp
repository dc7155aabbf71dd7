#include "vhost/connection.hpp"

#include <poll.h>
#include <sys/socket.h>

#include <cstring>

namespace vhostd::vhost {

namespace {

// Waits until fd is readable. timeout_ms -1: forever.
Status wait_readable(int fd, int stop_fd, int timeout_ms) {
    pollfd p[2] = {{fd, POLLIN, 0}, {stop_fd, POLLIN, 0}};
    while (true) {
        int n = ::poll(p, stop_fd >= 0 ? 2 : 1, timeout_ms);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return sys_error("poll on vhost-user socket");
        if (n == 0) return make_error(Errc::kInvalid, "peer stalled in the middle of a message");
        if (stop_fd >= 0 && (p[1].revents & POLLIN)) return make_error(Errc::kClosed, "stopping");
        return ok_status();
    }
}

}  // namespace

Status Connection::read_exact(uint8_t* buf, size_t len, int stop_fd) {
    size_t done = 0;
    while (done < len) {
        VHOSTD_TRY(wait_readable(fd_.get(), stop_fd, static_cast<int>(kIoTimeout.count())));
        ssize_t n = ::recv(fd_.get(), buf + done, len - done, MSG_DONTWAIT);
        if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (n < 0) return sys_error("recv on vhost-user socket");
        if (n == 0) return make_error(Errc::kInvalid, "peer closed in the middle of a message");
        done += static_cast<size_t>(n);
    }
    return ok_status();
}

Result<uint64_t> Connection::recv_u64_reply(uint32_t request, int stop_fd) {
    MsgHeader h{};
    VHOSTD_TRY(read_exact(reinterpret_cast<uint8_t*>(&h), sizeof(h), stop_fd));
    const MsgHeader copy = h;
    if ((copy.flags & kVersionMask) != kVersion || !(copy.flags & kFlagReply))
        return make_error(Errc::kInvalid, "reply with flags {:#x} (expected version 1 and the reply flag)",
                          uint32_t{copy.flags});
    if (copy.request != request)
        return make_error(Errc::kInvalid, "reply to request {} while waiting for {}", uint32_t{copy.request}, request);
    if (copy.size != sizeof(le64))
        return make_error(Errc::kInvalid, "reply payload of {} bytes (expected 8)", uint32_t{copy.size});
    le64 v{};
    VHOSTD_TRY(read_exact(reinterpret_cast<uint8_t*>(&v), sizeof(v), stop_fd));
    return uint64_t{v};
}

Status Connection::recv(Message& m, int stop_fd) {
    m.drop_fds();

    // The fds travel with the first bytes of the header.
    alignas(cmsghdr) char cbuf[CMSG_SPACE(sizeof(int) * kMaxFds)];
    iovec iov{&m.hdr, sizeof(m.hdr)};
    msghdr mh{};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = cbuf;
    mh.msg_controllen = sizeof(cbuf);
    ssize_t n;
    do {
        VHOSTD_TRY(wait_readable(fd_.get(), stop_fd, -1));
        n = ::recvmsg(fd_.get(), &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    } while (n < 0 && (errno == EINTR || errno == EAGAIN));  // a spurious wakeup waits again
    if (n < 0) {
        if (errno == ECONNRESET) return make_error(Errc::kClosed, "connection reset");
        return sys_error("recvmsg on vhost-user socket");
    }
    if (n == 0) return make_error(Errc::kClosed, "peer closed the connection");

    // Take ownership of every fd first so that any error below closes them.
    for (cmsghdr* c = CMSG_FIRSTHDR(&mh); c != nullptr; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        size_t cnt = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < cnt; ++i) {
            int fd;
            std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
            if (m.nfds < kMaxFds) m.fds[m.nfds++].reset(fd);
            else ::close(fd);
        }
    }
    if (mh.msg_flags & MSG_CTRUNC) return make_error(Errc::kInvalid, "more than {} fds in one message", kMaxFds);

    if (static_cast<size_t>(n) < sizeof(m.hdr))
        VHOSTD_TRY(read_exact(reinterpret_cast<uint8_t*>(&m.hdr) + n, sizeof(m.hdr) - static_cast<size_t>(n), stop_fd));
    if ((m.hdr.flags & kVersionMask) != kVersion)
        return make_error(Errc::kInvalid, "bad protocol version in flags {:#x}", uint32_t{m.hdr.flags});
    if (m.hdr.flags & kFlagReply) return make_error(Errc::kInvalid, "request has the reply flag set");
    if (m.hdr.size > kMaxPayload)
        return make_error(Errc::kInvalid, "payload of {} bytes exceeds the {} byte limit", uint32_t{m.hdr.size}, kMaxPayload);
    if (m.hdr.size > 0) VHOSTD_TRY(read_exact(m.payload.data(), m.hdr.size, stop_fd));
    return ok_status();
}

Status Connection::send(const MsgHeader& hdr, std::span<const uint8_t> payload, std::span<const int> fds) {
    iovec iov[2] = {{const_cast<MsgHeader*>(&hdr), sizeof(hdr)},
                    {const_cast<uint8_t*>(payload.data()), payload.size()}};
    alignas(cmsghdr) char cbuf[CMSG_SPACE(sizeof(int) * kMaxFds)];
    msghdr mh{};
    mh.msg_iov = iov;
    mh.msg_iovlen = payload.empty() ? 1 : 2;
    if (!fds.empty()) {
        if (fds.size() > kMaxFds) return make_error(Errc::kInvalid, "too many fds to send");
        mh.msg_control = cbuf;
        mh.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
        cmsghdr* c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
        std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
    }
    size_t total = sizeof(hdr) + payload.size();
    ssize_t n;
    do {
        n = ::sendmsg(fd_.get(), &mh, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    if (n < 0) return sys_error("sendmsg on vhost-user socket");
    // Replies are tiny; a short write on a unix stream socket means the peer is gone or stuck.
    if (static_cast<size_t>(n) != total) return make_error(Errc::kClosed, "short write on vhost-user socket");
    return ok_status();
}

}  // namespace vhostd::vhost
