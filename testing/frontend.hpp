// vhost-user frontend (the QEMU side of the socket) for tests and bench/: one method per
// message, QEMU's REPLY_ACK behaviour, strict reply validation, and a raw API for hostile tests.
//
// Every socket operation is bounded by a timeout (default 5 s) so a stuck backend fails a test
// instead of hanging it. Blocking is done with poll(); sends use MSG_NOSIGNAL.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/result.hpp"
#include "core/unique_fd.hpp"
#include "vhost/protocol.hpp"
#include "testing/driver_queue.hpp"

namespace vhostd::testing {

class PackedDriverQueue;

inline constexpr std::chrono::milliseconds kDefaultFrontendTimeout{5000};

struct RawReply {
    vhost::MsgHeader hdr{};
    std::vector<uint8_t> payload;
    std::vector<UniqueFd> fds;
};

struct InflightFd {
    UniqueFd fd;
    vhost::InflightDesc desc{};
};

class Frontend {
public:
    // Connects to a listening backend, retrying (ENOENT/ECONNREFUSED) until `timeout`.
    static Result<std::unique_ptr<Frontend>> connect(const std::string& path,
                                                     std::chrono::milliseconds timeout = kDefaultFrontendTimeout);
    // Wraps an already connected stream socket (e.g. one end of a socketpair).
    static Result<std::unique_ptr<Frontend>> from_fd(UniqueFd fd);
    // "Backend client mode": listen on `path` and accept one backend connection.
    static Result<std::unique_ptr<Frontend>> listen_and_accept(const std::string& path,
                                                               std::chrono::milliseconds timeout = kDefaultFrontendTimeout);

    Frontend(const Frontend&) = delete;
    Frontend& operator=(const Frontend&) = delete;

    int fd() const { return sock_.get(); }
    void set_timeout(std::chrono::milliseconds t) { timeout_ = t; }
    std::chrono::milliseconds timeout() const { return timeout_; }
    // Protocol features acked with set_protocol_features (drives NEED_REPLY use).
    uint64_t protocol_features() const { return protocol_features_; }
    // Override whether NEED_REPLY is set on messages without a reply (default: iff REPLY_ACK acked).
    void force_reply_ack(bool on) { reply_ack_forced_ = on ? 1 : 0; }

    Result<uint64_t> get_features();
    Status set_features(uint64_t features);
    Result<uint64_t> get_protocol_features();
    Status set_protocol_features(uint64_t features);
    Status set_owner();
    Status reset_owner();
    Status reset_device();
    Result<uint64_t> get_queue_num();
    Result<uint64_t> get_max_mem_slots();

    // All regions of `mem` (max 8) with their fds.
    Status set_mem_table(const GuestRam& mem);
    // Arbitrary table (hostile tests): regions.size() may differ from fds.size().
    Status set_mem_table(std::span<const vhost::MemRegion> regions, std::span<const int> fds);
    Status add_mem_reg(const GuestRam::Region& region);
    Status add_mem_reg(const vhost::MemRegion& region, int fd);
    // QEMU sends REM_MEM_REG without an fd; send_fd=true attaches the region's fd anyway.
    Status rem_mem_reg(const GuestRam::Region& region, bool send_fd = false);
    Status rem_mem_reg(const vhost::MemRegion& region, int fd = -1);

    Status set_vring_num(uint32_t index, uint32_t num);
    Status set_vring_addr(uint32_t index, const DriverQueue& q, uint32_t flags = 0);
    Status set_vring_addr(const vhost::VringAddr& addr);
    Status set_vring_base(uint32_t index, uint32_t base);
    Result<uint32_t> get_vring_base(uint32_t index);
    // fd < 0 sends the "no fd" flag (bit 8) instead of an fd.
    Status set_vring_kick(uint32_t index, int fd);
    Status set_vring_call(uint32_t index, int fd);
    Status set_vring_err(uint32_t index, int fd);
    Status set_vring_enable(uint32_t index, bool enable);

    Result<std::vector<uint8_t>> get_config(uint32_t offset, uint32_t size, uint32_t flags = 0);
    Status set_config(uint32_t offset, std::span<const uint8_t> bytes, uint32_t flags = 0);
    Status set_backend_req_fd(int fd);
    Result<uint8_t> get_status();
    Status set_status(uint8_t status);
    Status net_set_mtu(uint64_t mtu);
    // The MAC goes in the first 6 bytes of the u64 payload.
    Status send_rarp(const uint8_t mac[6]);
    Result<InflightFd> get_inflight_fd(uint16_t num_queues, uint16_t queue_size);
    Status set_inflight_fd(int fd, const vhost::InflightDesc& desc);
    // Live migration: hands the backend the dirty log (LOG_SHMFD) and waits for its reply, as
    // QEMU does.
    Status set_log_base(int fd, uint64_t size, uint64_t offset = 0);

    // QEMU's per-queue start order: NUM, BASE(0), ADDR, KICK, CALL, then ENABLE(enable).
    Status setup_queue(uint32_t index, DriverQueue& q, int kick_fd, int call_fd, bool enable);
    // The same for a packed ring (VIRTIO_F_RING_PACKED negotiated), from the fresh base.
    Status setup_packed_queue(uint32_t index, PackedDriverQueue& q, int kick_fd, int call_fd, bool enable);

    // ---- raw API (hostile tests) ----
    // Sends header + payload (hdr.size is sent as given, not fixed up) with fds via SCM_RIGHTS.
    Status send_raw(const vhost::MsgHeader& hdr, std::span<const uint8_t> payload, std::span<const int> fds = {});
    // Receives one message (header, then hdr.size bytes, capped at 64 KiB) and any fds.
    Result<RawReply> recv_raw(std::chrono::milliseconds timeout);
    Result<RawReply> recv_raw() { return recv_raw(timeout_); }
    // True if the backend closed (or shut down) the connection within `timeout`.
    bool peer_closed(std::chrono::milliseconds timeout);

private:
    explicit Frontend(UniqueFd sock) : sock_(std::move(sock)) {}
    bool want_ack() const;
    // Message without its own reply: sends it, and waits for the REPLY_ACK u64 if negotiated.
    Status send_noreply(vhost::Request req, std::span<const uint8_t> payload, std::span<const int> fds = {});
    // Message with a reply: sends it and returns the validated reply payload (exact size).
    Result<RawReply> call(vhost::Request req, std::span<const uint8_t> payload, uint32_t reply_size,
                          std::span<const int> fds = {});
    Status send_u64(vhost::Request req, uint64_t v, std::span<const int> fds = {});
    Result<uint64_t> get_u64(vhost::Request req);
    Status send_vring_fd(vhost::Request req, uint32_t index, int fd);

    UniqueFd sock_;
    std::chrono::milliseconds timeout_ = kDefaultFrontendTimeout;
    uint64_t protocol_features_ = 0;
    int reply_ack_forced_ = -1;
};

}  // namespace vhostd::testing
