// The frontend's side of the vhost-user backend channel, for tests that expect config changes.
#pragma once

#include <sys/socket.h>

#include <atomic>
#include <cstring>
#include <memory>
#include <thread>

#include "core/unique_fd.hpp"
#include "testing/frontend.hpp"
#include "vhost/protocol.hpp"
#include "virtio/blk_types.hpp"

namespace vhostd::testing {

// The frontend's side of the backend channel: answers CONFIG_CHANGE_MSG the way QEMU does (it
// re-reads the capacity with GET_CONFIG on the main channel first, then acks).
class BackendChannelPeer {
public:
    BackendChannelPeer(int fd, Frontend& fe) : fd_(fd), fe_(fe) {
        thread_ = std::thread([this] { run(); });
    }
    // Makes the channel (a socketpair), hands the backend its end (SET_BACKEND_REQ_FD) and
    // answers on ours. Null if either step failed.
    static std::unique_ptr<BackendChannelPeer> attach(Frontend& fe) {
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return nullptr;
        UniqueFd ours(sv[0]), theirs(sv[1]);
        if (!fe.set_backend_req_fd(theirs.get()).ok()) return nullptr;
        return std::make_unique<BackendChannelPeer>(ours.release(), fe);
    }
    ~BackendChannelPeer() {
        ::shutdown(fd_.get(), SHUT_RDWR);
        thread_.join();
    }
    std::atomic<int> changes{0};
    std::atomic<uint64_t> capacity{0};

private:
    void run() {
        while (true) {
            vhost::MsgHeader h{};
            if (::recv(fd_.get(), &h, sizeof(h), MSG_WAITALL) != static_cast<ssize_t>(sizeof(h))) return;
            if (h.request != static_cast<uint32_t>(vhost::BackendRequest::kConfigChangeMsg) || h.size != 0) return;
            auto cfg = fe_.get_config(0, sizeof(virtio::blk::Config));
            if (cfg.ok()) {
                virtio::blk::Config c{};
                std::memcpy(&c, cfg.value().data(), sizeof(c));
                capacity = c.capacity;
            }
            ++changes;
            if (h.flags & vhost::kFlagNeedReply) {
                vhost::MsgHeader rh{h.request, vhost::kVersion | vhost::kFlagReply, 8};
                uint8_t reply[sizeof(rh) + 8] = {};  // the u64 payload: 0, success
                std::memcpy(reply, &rh, sizeof(rh));
                if (::send(fd_.get(), reply, sizeof(reply), MSG_NOSIGNAL) != static_cast<ssize_t>(sizeof(reply))) return;
            }
        }
    }
    UniqueFd fd_;
    Frontend& fe_;
    std::thread thread_;
};

}  // namespace vhostd::testing
