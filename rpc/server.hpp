// The management API's transport: a unix stream socket, JSON-RPC 2.0 with one JSON object per
// line each way, served by one thread (an epoll loop). Handlers run on that thread one at a time.
//
// Clients are adversaries too: a line is bounded (max_line; longer gets an error and the
// connection closes), so are the connections (max_clients; more are closed at once) and each
// client's unread output (a client that does not read its answers is dropped). Requests of one
// connection are answered in order.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <map>
#include <optional>
#include <string>
#include <thread>

#include "core/result.hpp"
#include "core/unique_fd.hpp"
#include "rpc/jsonrpc.hpp"

namespace vhostd::rpc {

struct ServerOptions {
    std::string path = "/run/vhostd/vhostd.sock";
    std::string group;  // non-empty: the socket is 0660 for this group; else 0600
    unsigned max_clients = 64;
    size_t max_line = 1 << 20;
    size_t max_output = 16 << 20;  // a client's unread responses
};

class Server {
public:
    Server(ServerOptions opts, Dispatcher& dispatcher);
    ~Server();
    Server(const Server&) = delete;
    Server& operator=(const Server&) = delete;

    // Creates the socket's folder if missing (0755), replaces a stale socket (refuses a live
    // one: another vhostd), binds with the final mode, listens and starts the thread.
    Status start();
    // start() in two steps: the socket (open), then the thread that serves it (serve). vhostd
    // switches --user in between, so that the thread starts with the switched credentials.
    Status open();
    Status serve();
    // Stops the thread, closes every client, unlinks the socket (if it is still ours).
    void stop();
    const std::string& path() const { return opts_.path; }

private:
    struct Client {
        UniqueFd fd;
        std::string in;
        std::string out;
        bool closing = false;  // close once `out` is written
    };
    void run();
    bool peer_allowed(int fd);
    uid_t owner_uid_ = 0;  // who opened the socket: served besides root and the group
    void accept_all();
    // False when the client is to be dropped.
    bool on_readable(Client& c);
    bool flush(Client& c);
    void watch(Client& c, int fd);

    ServerOptions opts_;
    Dispatcher& dispatcher_;
    UniqueFd listen_;
    UniqueFd epoll_;
    UniqueFd stop_fd_;
    std::thread thread_;
    std::map<int, Client> clients_;
    dev_t dev_ = 0;
    ino_t ino_ = 0;
    bool bound_ = false;
    std::optional<gid_t> group_gid_;  // --rpc-group's
    uint64_t denied_ = 0;             // connections refused by their credentials
    uint64_t refused_ = 0;
};

}  // namespace vhostd::rpc
