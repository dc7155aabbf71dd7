// Framing of vhost-user messages on a unix stream socket, with SCM_RIGHTS fd passing.
// Blocking I/O on the device's own control thread; every wait also watches a stop eventfd
// and has a deadline once a message has started, so a stalled peer can't wedge us.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <span>

#include "core/result.hpp"
#include "core/unique_fd.hpp"
#include "vhost/protocol.hpp"

namespace vhostd::vhost {

struct Message {
    MsgHeader hdr{};
    std::array<uint8_t, kMaxPayload> payload{};
    std::array<UniqueFd, kMaxFds> fds;
    size_t nfds = 0;

    Request request() const { return static_cast<Request>(hdr.request.get()); }
    std::span<const uint8_t> body() const { return {payload.data(), hdr.size}; }
    // Closes all received fds (used when a message is rejected).
    void drop_fds() {
        for (auto& f : fds) f.reset();
        nfds = 0;
    }
};

class Connection {
public:
    explicit Connection(UniqueFd fd) : fd_(std::move(fd)) {}
    int fd() const { return fd_.get(); }

    // Waits for and reads one message. Errc::kClosed: peer hung up or stop_fd fired.
    // Any other error: a framing violation (the connection must be closed).
    Status recv(Message& m, int stop_fd);
    Status send(const MsgHeader& hdr, std::span<const uint8_t> payload, std::span<const int> fds = {});
    // Where we send the requests (the backend channel): reads the frontend's reply to request
    // `request`, a u64 (0: success). Anything else (another request, no reply flag, a payload
    // that is not 8 bytes, more than kIoTimeout of silence) is an error.
    Result<uint64_t> recv_u64_reply(uint32_t request, int stop_fd = -1);

    static constexpr std::chrono::milliseconds kIoTimeout{5000};

private:
    Status read_exact(uint8_t* buf, size_t len, int stop_fd);
    UniqueFd fd_;
};

}  // namespace vhostd::vhost
