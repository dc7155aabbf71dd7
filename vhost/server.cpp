#include "vhost/server.hpp"

#include <poll.h>
#include <pthread.h>
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <cstring>

#include "core/log.hpp"
#include "core/unix_group.hpp"
#include "core/sandbox.hpp"

namespace vhostd::vhost {

namespace {

Result<sockaddr_un> unix_addr(const std::string& path) {
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    if (path.empty() || path.size() >= sizeof(a.sun_path))
        return make_error(Errc::kInvalid, "socket path '{}' is empty or longer than {} bytes", path,
                          sizeof(a.sun_path) - 1);
    std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
    return a;
}

}  // namespace

Result<UniqueFd> listen_unix(const std::string& path, mode_t mode, gid_t gid) {
    VHOSTD_ASSIGN_OR_RETURN(sockaddr_un a, unix_addr(path));
    struct stat st {};
    if (lstat(path.c_str(), &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) return make_error(Errc::kInvalid, "'{}' exists and is not a socket", path);
        UniqueFd probe(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
        if (probe && connect(probe.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0)
            return make_error(Errc::kBusy, "socket '{}' is already in use by another process", path);
        unlink(path.c_str());  // stale
    }
    UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) return sys_error("socket()");
    // bind() gives the new file the socket inode's mode (less the umask): owner-only until the
    // group is set, then the final mode. Connecting needs write permission.
    if (fchmod(fd.get(), mode & 0700) != 0) return sys_error("fchmod of the socket for '{}'", path);
    if (bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) return sys_error("bind '{}'", path);
    if (Status st = own_socket_file(path, gid, mode); !st.ok()) {
        if (st.error().code == Errc::kSystem) unlink(path.c_str());  // ours; a swapped path is not
        return std::move(st).take_error();
    }
    if (listen(fd.get(), 4) != 0) return sys_error("listen '{}'", path);
    return fd;
}

SocketServer::SocketServer(std::string path, bool client_mode, std::unique_ptr<Session> session)
    : path_(std::move(path)), client_(client_mode), session_(std::move(session)) {}

SocketServer::~SocketServer() { stop(); }

Status SocketServer::start() {
    LogScope scope(session_->name().c_str());
    int efd = eventfd(0, EFD_CLOEXEC);
    if (efd < 0) return sys_error("eventfd");
    stop_fd_.reset(efd);
    if (adopted_) {
        VLOG_INFO("{}: serving the {} socket handed over as {}", session_->name(),
                  given_conn_ ? "connected" : "listening", path_);
    } else if (!client_) {
        VHOSTD_ASSIGN_OR_RETURN(listen_fd_, listen_unix(path_, mode_, gid_));
        created_socket_ = true;
        struct stat st {};
        if (lstat(path_.c_str(), &st) == 0) {
            dev_ = st.st_dev;
            ino_ = st.st_ino;
        }
        VLOG_INFO("{}: listening on {} (mode {:04o}{})", session_->name(), path_, mode_,
                  gid_ == static_cast<gid_t>(-1) ? "" : fmt::format(", group {}", gid_));
    } else {
        VHOSTD_TRY(unix_addr(path_));
        VLOG_INFO("{}: will connect to {}", session_->name(), path_);
    }
    thread_ = std::thread([this] { run(); });
    return ok_status();
}

Status SocketServer::adopt(UniqueFd fd, std::function<void()> on_closed) {
    if (!fd) return make_error(Errc::kInvalid, "no socket to adopt");
    int type = 0, listening = 0;
    socklen_t len = sizeof(type);
    if (getsockopt(fd.get(), SOL_SOCKET, SO_TYPE, &type, &len) != 0)
        return make_error(Errc::kInvalid, "fd {} is not a socket: {}", fd.get(), strerror(errno));
    sockaddr_storage addr{};
    socklen_t alen = sizeof(addr);
    if (getsockname(fd.get(), reinterpret_cast<sockaddr*>(&addr), &alen) != 0 || addr.ss_family != AF_UNIX ||
        type != SOCK_STREAM)
        return make_error(Errc::kInvalid, "fd {} is not a unix stream socket", fd.get());
    len = sizeof(listening);
    if (getsockopt(fd.get(), SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0) return sys_error("SO_ACCEPTCONN");
    // Ours from now on: not inherited by anything we might start.
    if (fcntl(fd.get(), F_SETFD, FD_CLOEXEC) != 0) return sys_error("F_SETFD");
    if (listening) listen_fd_ = std::move(fd);
    else given_conn_ = std::move(fd);
    adopted_ = true;
    client_ = false;
    on_closed_ = std::move(on_closed);
    return ok_status();
}

void SocketServer::stop() {
    if (thread_.joinable()) {
        eventfd_write(stop_fd_.get(), 1);
        thread_.join();
    }
    if (created_socket_) {
        // Only our own socket: a newer vhostd may have taken the path over meanwhile.
        struct stat st {};
        if (lstat(path_.c_str(), &st) == 0 && st.st_dev == dev_ && st.st_ino == ino_) unlink(path_.c_str());
        created_socket_ = false;
    }
}

SocketServer::Peer SocketServer::peer() const {
    std::lock_guard lk(peer_mu_);
    return peer_;
}

UniqueFd SocketServer::accept_one() {
    pollfd p[2] = {{listen_fd_.get(), POLLIN, 0}, {stop_fd_.get(), POLLIN, 0}};
    while (true) {
        int n = ::poll(p, 2, -1);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 || (p[1].revents & POLLIN)) return UniqueFd();
        int fd = accept4(listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC);
        if (fd >= 0) return UniqueFd(fd);
        if (errno != EINTR && errno != EAGAIN && errno != ECONNABORTED) {
            VLOG_ERROR("{}: accept failed: {}", session_->name(), strerror(errno));
            return UniqueFd();
        }
    }
}

UniqueFd SocketServer::connect_one() {
    auto a = unix_addr(path_);
    bool logged = false;
    while (true) {
        UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
        if (fd && connect(fd.get(), reinterpret_cast<const sockaddr*>(&a.value()), sizeof(sockaddr_un)) == 0) return fd;
        if (!logged) {
            VLOG_INFO("{}: waiting for a frontend to listen on {}", session_->name(), path_);
            logged = true;
        }
        pollfd p{stop_fd_.get(), POLLIN, 0};
        if (::poll(&p, 1, 200) > 0) return UniqueFd();  // stop requested
    }
}

void SocketServer::run() {
    pthread_setname_np(pthread_self(), "vhostd-ctl");
    LogScope scope(session_->name().c_str());  // every line of this thread is about the device
    if (Status st = sandbox::enter(sandbox::Kind::kControl); !st.ok()) {
        VLOG_ERROR("{}: not serving: {}", session_->name(), st.error().describe());
        return;
    }
    const bool once = static_cast<bool>(given_conn_);
    while (true) {
        UniqueFd conn = once ? std::move(given_conn_) : client_ ? connect_one() : accept_one();
        if (!conn) break;
        Peer who;
        who.connected = true;
        ucred cred{};
        socklen_t len = sizeof(cred);
        if (getsockopt(conn.get(), SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
            who.pid = cred.pid;
            who.uid = cred.uid;
            who.gid = cred.gid;
        }
        {
            std::lock_guard lk(peer_mu_);
            peer_ = who;
        }
        session_->serve(std::move(conn), stop_fd_.get());
        {
            std::lock_guard lk(peer_mu_);
            peer_ = Peer{};
        }
        // Stop requested while serving?
        pollfd p{stop_fd_.get(), POLLIN, 0};
        if (::poll(&p, 1, 0) > 0) break;
        if (once) {
            VLOG_INFO("{}: the frontend of the handed-over connection left", session_->name());
            if (on_closed_) on_closed_();
            break;
        }
        if (client_) {
            // Don't spin if the frontend keeps dropping us immediately.
            pollfd q{stop_fd_.get(), POLLIN, 0};
            if (::poll(&q, 1, 100) > 0) break;
        }
    }
}

}  // namespace vhostd::vhost
