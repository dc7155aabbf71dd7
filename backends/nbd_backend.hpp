// A remote block device behind an NBD server, through libnbd's asynchronous API.
//
// Each reactor that serves queues of the device drives its own connection: libnbd never touches
// the socket on its own, the reactor's io_uring polls it and tells libnbd when it is readable or
// writable (nbd_aio_notify_*), and completions run on that reactor. When the server does not
// offer multi-conn, the NBD spec gives no consistency between connections (a flush on one does
// not cover writes on another): then there is one connection and all of the device's queues are
// put on one reactor (BlockBackend::single_reactor).
//
// Guest buffers go to libnbd as they are (zero copy): a request is split into one NBD command per
// iovec segment (and per server maximum), completed when all of them are.
//
// A connection that dies (server restart, network) is made again with a back-off; requests in
// flight and new ones wait for it and are sent again, so a server restart costs the guest a
// pause, not an error. A request that has waited `timeout` seconds in all (in flight on a server
// that does not answer, or for a reconnect) fails with an I/O error; an unanswered request first
// takes the connection down with it, so no late reply can write into a buffer the guest got
// back. timeout 0 waits forever.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "backends/block_backend.hpp"
#include "core/log.hpp"

struct nbd_handle;

namespace vhostd::backends {

struct NbdOptions {
    // nbd://HOST[:PORT]/EXPORT, nbds://... (TLS), nbd+unix:///EXPORT?socket=PATH, nbds+unix://...
    std::string uri;
    bool readonly = false;
    uint32_t block_size = 0;        // 0: what the server asks for (512 when it says nothing)
    uint32_t timeout_s = kDefaultTimeout;
    uint32_t connect_timeout_s = 10;  // the first connection, made when the device is added
    // How often a connection checks its timeouts and reconnects, and its first reconnect back-off
    // (doubling up to 2 s). Not device keys: the defaults suit any server; the NBD reply fuzz
    // target shortens them so that a broken connection costs it milliseconds, not 100 ms.
    uint32_t tick_us = 100'000;
    uint32_t first_backoff_us = 100'000;
    static constexpr uint32_t kDefaultTimeout = 30;
    static constexpr uint32_t kMaxTimeout = 86400;
};

class NbdConn;

class NbdBackend final : public BlockBackend {
public:
    // Connects once (blocking, connect_timeout_s) to learn the export's size and capabilities;
    // that connection becomes the first reactor's.
    static Result<std::unique_ptr<NbdBackend>> open(const NbdOptions& opts);
    ~NbdBackend() override;
    const BlockInfo& info() const override { return info_; }
    Result<std::unique_ptr<BlockChannel>> open_channel(Reactor& reactor, uint32_t depth) override;
    bool single_reactor() const override { return !multi_conn_; }

    // What the server offered (for the connections and the tests).
    struct Caps {
        bool multi_conn = false, fua = false, flush = false, trim = false, zero = false;
        uint64_t max_request = 0;  // bytes per read/write command
    };
    const Caps& caps() const { return caps_; }
    const NbdOptions& options() const { return opts_; }

private:
    friend class NbdConn;
    NbdBackend() = default;
    // A new handle with this backend's settings, not connected yet.
    Result<nbd_handle*> new_handle() const;

    NbdOptions opts_;
    BlockInfo info_;
    Caps caps_;
    bool multi_conn_ = false;
    std::mutex mu_;                      // control path: channels opening and closing
    std::vector<NbdConn*> conns_;        // one per reactor in use
    nbd_handle* spare_ = nullptr;        // the probe connection, for the first NbdConn
    LogRateLimit log_limit_;             // what the server and the network make us log
};

}  // namespace vhostd::backends
