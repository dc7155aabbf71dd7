#include "rpc/server.hpp"

#include <fcntl.h>
#include <grp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

#include "core/log.hpp"
#include "core/sandbox.hpp"
#include "core/unix_group.hpp"

namespace vhostd::rpc {

namespace {

constexpr uint64_t kListenTag = UINT64_MAX;
constexpr uint64_t kStopTag = UINT64_MAX - 1;

Status make_dirs(const std::string& dir) {
    if (dir.empty()) return ok_status();
    struct stat st {};
    if (stat(dir.c_str(), &st) == 0) {
        if (!S_ISDIR(st.st_mode)) return make_error(Errc::kInvalid, "{} is not a directory", dir);
        return ok_status();
    }
    auto slash = dir.find_last_of('/');
    if (slash != std::string::npos && slash > 0) VHOSTD_TRY(make_dirs(dir.substr(0, slash)));
    if (mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) return sys_error("mkdir {}", dir);
    return ok_status();
}

Result<sockaddr_un> address(const std::string& path) {
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    if (path.empty() || path.size() >= sizeof(a.sun_path))
        return make_error(Errc::kInvalid, "socket path '{}' is empty or longer than {} bytes", path, sizeof(a.sun_path) - 1);
    std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
    return a;
}

}  // namespace

Server::Server(ServerOptions opts, Dispatcher& dispatcher) : opts_(std::move(opts)), dispatcher_(dispatcher) {}

Server::~Server() { stop(); }

Status Server::start() {
    VHOSTD_TRY(open());
    return serve();
}

Status Server::open() {
    VHOSTD_ASSIGN_OR_RETURN(sockaddr_un addr, address(opts_.path));
    gid_t gid = 0;
    if (!opts_.group.empty()) {
        VHOSTD_ASSIGN_OR_RETURN(gid, lookup_group(opts_.group));
        group_gid_ = gid;
    }
    auto slash = opts_.path.find_last_of('/');
    if (slash != std::string::npos && slash > 0) VHOSTD_TRY(make_dirs(opts_.path.substr(0, slash)));

    UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd) return sys_error("socket");
    struct stat st {};
    if (lstat(opts_.path.c_str(), &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) return make_error(Errc::kInvalid, "{} exists and is not a socket", opts_.path);
        UniqueFd probe(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
        if (!probe) return sys_error("socket");
        if (connect(probe.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0)
            return make_error(Errc::kBusy, "another vhostd is serving {}", opts_.path);
        if (errno != ECONNREFUSED) return sys_error("probing {}", opts_.path);
        if (unlink(opts_.path.c_str()) != 0 && errno != ENOENT) return sys_error("removing the stale socket {}", opts_.path);
        VLOG_INFO("management API: replaced the stale socket {}", opts_.path);
    }
    // The socket is created with its final mode: never briefly open to everyone.
    mode_t old = umask(opts_.group.empty() ? 0177 : 0117);
    int rc = bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    int err = errno;
    umask(old);
    if (rc != 0) return sys_error_code(err, "bind {}", opts_.path);
    bound_ = true;
    if (lstat(opts_.path.c_str(), &st) != 0) return sys_error("stat {}", opts_.path);
    dev_ = st.st_dev;
    ino_ = st.st_ino;
    owner_uid_ = geteuid();
    VHOSTD_TRY(own_socket_file(opts_.path, opts_.group.empty() ? static_cast<gid_t>(-1) : gid, opts_.group.empty() ? 0600 : 0660));
    if (listen(fd.get(), SOMAXCONN) != 0) return sys_error("listen {}", opts_.path);
    listen_ = std::move(fd);

    epoll_.reset(epoll_create1(EPOLL_CLOEXEC));
    if (!epoll_) return sys_error("epoll_create1");
    stop_fd_.reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!stop_fd_) return sys_error("eventfd");
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = kListenTag;
    if (epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, listen_.get(), &ev) != 0) return sys_error("epoll_ctl");
    ev.data.u64 = kStopTag;
    if (epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, stop_fd_.get(), &ev) != 0) return sys_error("epoll_ctl");
    return ok_status();
}

Status Server::serve() {
    if (!listen_ || thread_.joinable()) return make_error(Errc::kState, "the management API is not open or already served");
    thread_ = std::thread([this] { run(); });
    VLOG_INFO("management API on {} (mode {})", opts_.path, opts_.group.empty() ? "0600" : "0660 group " + opts_.group);
    return ok_status();
}

void Server::stop() {
    if (thread_.joinable()) {
        uint64_t one = 1;
        [[maybe_unused]] ssize_t n = write(stop_fd_.get(), &one, sizeof(one));
        thread_.join();
    }
    clients_.clear();
    listen_.reset();
    if (bound_) {
        // Only our own socket: another process may have replaced it meanwhile.
        struct stat st {};
        if (lstat(opts_.path.c_str(), &st) == 0 && st.st_dev == dev_ && st.st_ino == ino_) unlink(opts_.path.c_str());
        bound_ = false;
    }
}

void Server::watch(Client& c, int fd) {
    epoll_event ev{};
    // A closing client is only written to (its input is done with).
    if (c.closing) ev.events = EPOLLOUT;
    else ev.events = EPOLLIN | EPOLLRDHUP | (c.out.empty() ? 0u : static_cast<uint32_t>(EPOLLOUT));
    ev.data.u64 = static_cast<uint64_t>(fd);
    epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, fd, &ev);
}

// Who may use the API, checked on the connection as well as by the socket's mode (a socket or a
// directory made wider by hand, a descriptor passed on): root, our own user, and with --rpc-group
// that group's members (primary or supplementary group of the peer).
bool Server::peer_allowed(int fd) {
    ucred cred{};
    socklen_t len = sizeof(cred);
    bool ok = false;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
        // The user vhostd was started as (opened the socket), not a --user it switched to since:
        // other processes of that (service) account are not operators.
        ok = cred.uid == 0 || cred.uid == owner_uid_;
        if (!ok && group_gid_) {
            ok = cred.gid == *group_gid_;
            gid_t groups[256];
            socklen_t glen = sizeof(groups);
            if (!ok && getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &glen) == 0) {
                for (size_t i = 0; i < glen / sizeof(gid_t) && !ok; ++i) ok = groups[i] == *group_gid_;
            }
        }
    }
    if (!ok && denied_++ % 100 == 0)
        VLOG_WARN("management API: refused a connection from uid {} gid {} pid {} (not root, not uid {}{}; {} so far)",
                  cred.uid, cred.gid, cred.pid, owner_uid_, group_gid_ ? fmt::format(", not in group {}", *group_gid_) : "",
                  denied_);
    return ok;
}

void Server::accept_all() {
    while (true) {
        int fd = accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK) VLOG_WARN("management API: accept: {}", strerror(errno));
            return;
        }
        UniqueFd owned(fd);
        if (!peer_allowed(fd)) continue;
        if (clients_.size() >= opts_.max_clients) {
            if (refused_++ % 100 == 0)
                VLOG_WARN("management API: more than {} connections, closing new ones ({} so far)", opts_.max_clients,
                          refused_);
            continue;
        }
        epoll_event ev{};
        ev.events = EPOLLIN | EPOLLRDHUP;
        ev.data.u64 = static_cast<uint64_t>(fd);
        if (epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) continue;
        clients_[fd].fd = std::move(owned);
    }
}

bool Server::flush(Client& c) {
    while (!c.out.empty()) {
        ssize_t n = send(c.fd.get(), c.out.data(), c.out.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return true;
            return false;
        }
        c.out.erase(0, static_cast<size_t>(n));
    }
    return !c.closing;
}

bool Server::on_readable(Client& c) {
    char buf[65536];
    // Bounded per wakeup: one busy client cannot starve the others.
    for (int round = 0; round < 16; ++round) {
        ssize_t n = recv(c.fd.get(), buf, sizeof(buf), MSG_DONTWAIT);
        if (n == 0) {  // EOF (or a half-close): answer what came, then close; a partial last line is dropped
            c.closing = true;
            return true;
        }
        if (n < 0) {
            if (errno == EINTR) continue;
            return errno == EAGAIN || errno == EWOULDBLOCK;
        }
        size_t start = 0;
        for (size_t i = 0; i < static_cast<size_t>(n); ++i) {
            if (buf[i] != '\n') continue;
            c.in.append(buf + start, i - start);
            start = i + 1;
            std::string line = std::move(c.in);
            c.in.clear();
            if (!line.empty() && line.back() == '\r') line.pop_back();
            if (line.find_first_not_of(" \t") == std::string::npos) continue;
            if (auto resp = dispatcher_.handle_line(line)) {
                c.out += *resp;
                c.out += '\n';
            }
            if (c.out.size() > opts_.max_output) {
                VLOG_WARN("management API: a client does not read its responses ({} bytes queued), dropped", c.out.size());
                return false;
            }
        }
        c.in.append(buf + start, static_cast<size_t>(n) - start);
        if (c.in.size() > opts_.max_line) {
            c.out += dump_line(Dispatcher::error_response(
                nullptr, kInvalidRequest, "request longer than " + std::to_string(opts_.max_line) + " bytes"));
            c.out += '\n';
            c.in.clear();
            c.closing = true;
            return true;
        }
    }
    return true;
}

void Server::run() {
    pthread_setname_np(pthread_self(), "vhostd-rpc");
    // Its own seccomp list (core/sandbox.hpp); the threads a method starts inherit it.
    if (Status st = sandbox::enter(sandbox::Kind::kApi); !st.ok()) {
        VLOG_ERROR("management API: the sandbox: {}; the API is not served", st.error().describe());
        return;
    }
    epoll_event events[32];
    while (true) {
        int n = epoll_wait(epoll_.get(), events, 32, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            VLOG_ERROR("management API: epoll_wait: {}", strerror(errno));
            return;
        }
        for (int i = 0; i < n; ++i) {
            uint64_t tag = events[i].data.u64;
            if (tag == kStopTag) return;
            if (tag == kListenTag) {
                accept_all();
                continue;
            }
            int fd = static_cast<int>(tag);
            auto it = clients_.find(fd);
            if (it == clients_.end()) continue;
            Client& c = it->second;
            bool keep = true;
            if (events[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
                if (!c.closing) keep = on_readable(c);
                else keep = !(events[i].events & (EPOLLHUP | EPOLLERR));
            }
            if (keep) keep = flush(c);
            if (keep && c.closing && c.out.empty()) keep = false;
            if (!keep) {
                epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr);
                clients_.erase(it);
                continue;
            }
            watch(c, fd);
        }
    }
}

}  // namespace vhostd::rpc
