// The socket side of one device: a control thread that either listens on a unix socket path
// (server mode: QEMU's default chardev, Cloud Hypervisor's vhost-user-blk) or connects to one,
// retrying (client mode: QEMU `server=on`). One frontend at a time; after it leaves the
// device is reset and the thread waits for the next one.
#pragma once

#include <sys/types.h>

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "core/result.hpp"
#include "core/unique_fd.hpp"
#include "vhost/session.hpp"

namespace vhostd::vhost {

class SocketServer {
public:
    SocketServer(std::string path, bool client_mode, std::unique_ptr<Session> session);
    ~SocketServer();

    // Server mode: creates the listening socket now, so errors (in use, bad path) surface at
    // start-up. Then spawns the control thread.
    Status start();
    // Before start(): serve a socket handed over by whoever started us (a management layer's
    // --fd, QEMU's backend program conventions) instead of the path. A listening socket is
    // accepted on as usual (and not unlinked by us); a connected one is served once: when that
    // frontend leaves, nobody can come back, and `on_closed` runs on the control thread.
    Status adopt(UniqueFd fd, std::function<void()> on_closed);
    // Before start(), server mode: the socket's mode and group (default 0600, our group).
    void set_access(mode_t mode, gid_t gid) {
        mode_ = mode;
        gid_ = gid;
    }
    // Disconnects the frontend (draining its queues) and joins the thread.
    void stop();

    const std::string& path() const { return path_; }
    bool client_mode() const { return client_; }
    Session& session() { return *session_; }

    // The frontend being served, if any (any thread). pid/uid from SO_PEERCRED at connect time.
    struct Peer {
        bool connected = false;
        pid_t pid = 0;
        uid_t uid = 0;
        gid_t gid = 0;
    };
    Peer peer() const;

private:
    void run();
    UniqueFd accept_one();
    UniqueFd connect_one();

    std::string path_;
    bool client_;
    std::unique_ptr<Session> session_;
    UniqueFd listen_fd_;
    UniqueFd stop_fd_;
    std::thread thread_;
    bool created_socket_ = false;
    dev_t dev_ = 0;  // the socket file we made: stop() unlinks only that one
    ino_t ino_ = 0;
    mode_t mode_ = 0600;
    gid_t gid_ = static_cast<gid_t>(-1);  // -1: leave the group
    UniqueFd given_conn_;  // adopt(): a connected socket, served once
    bool adopted_ = false;
    std::function<void()> on_closed_;
    mutable std::mutex peer_mu_;
    Peer peer_;
};

// Binds a listening unix socket at path. A stale socket file (nobody listening) is replaced;
// a live one is an error ("already in use").
// The file gets `mode` (and group `gid` unless -1); it is never more open than that, not even
// between bind() and chmod().
Result<UniqueFd> listen_unix(const std::string& path, mode_t mode = 0600, gid_t gid = static_cast<gid_t>(-1));

}  // namespace vhostd::vhost
