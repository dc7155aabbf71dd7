// The backend side of the vhost-user protocol for one device: a session per connection. Every
// message is checked against the message table (message_table.hpp) and then handled by the one
// method for its request, which keeps per-vring state and drives the virtio device (start/stop
// queues, memory, config). One connection at a time; after it ends every resource of that
// session is released and the device waits for the next frontend.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/unique_fd.hpp"
#include "vhost/connection.hpp"
#include "vhost/inflight.hpp"
#include "vhost/mem_table.hpp"
#include "vhost/message_table.hpp"
#include "virtio/device.hpp"

namespace vhostd::vhost {

class Session {
public:
    static constexpr uint64_t kBaseProtocolFeatures = pf::kMq | pf::kReplyAck | pf::kConfig |
                                                      pf::kConfigureMemSlots | pf::kBackendReq |
                                                      pf::kResetDevice | pf::kStatus | pf::kLogShmfd;

    explicit Session(std::unique_ptr<virtio::VirtioDevice> dev);
    ~Session();
    Session(const Session&) = delete;
    Session& operator=(const Session&) = delete;

    // Serves one connection until the peer leaves, violates the protocol, or stop_fd becomes
    // readable. Always ends with the device reset (queues drained and stopped, memory unmapped).
    void serve(UniqueFd conn, int stop_fd);

    virtio::VirtioDevice& device() { return *dev_; }

    // ---- other control threads (the management API) ----
    // Runs fn with the device while no frontend message is being handled: the device's control
    // calls (queue start/stop, memory swaps, a resize's drain) never run from two threads at once.
    template <typename Fn>
    auto exclusive(Fn&& fn) {
        std::lock_guard lk(control_mu_);
        return fn(*dev_);
    }
    // Tells the frontend that the device's config space changed (VHOST_USER_BACKEND_CONFIG_CHANGE_MSG
    // on the backend channel; needs protocol features BACKEND_REQ and CONFIG; waits for the
    // frontend's answer when REPLY_ACK was negotiated). Errc::kState when no frontend is
    // connected or it did not negotiate the channel. Not to be called under exclusive(): the
    // frontend answers by reading the config space (GET_CONFIG) first.
    Status notify_config_change();
    const std::string& name() const { return name_; }

    // Testing/fuzzing entry: handle one already-received message as if from a connection.
    // Returns false if the connection would be closed.
    bool handle_for_test(Connection& conn, Message& m) { return dispatch(conn, m); }
    void reset_for_test() { reset_session(); }

private:
    struct Vring {
        uint32_t num = 0;
        bool addr_set = false;
        uint64_t desc_addr = 0;  // frontend virtual addresses of the ring parts
        uint64_t avail_addr = 0;
        uint64_t used_addr = 0;
        uint32_t base = 0;  // SET/GET_VRING_BASE (packed rings: both positions, see packed_base())
        bool kick_set = false;  // a kick fd, or "no fd: poll"
        UniqueFd kick;
        UniqueFd call;
        UniqueFd err;
        bool enabled = false;
        bool started = false;
        bool log = false;  // VHOST_VRING_F_LOG: log the used ring's writes at log_addr
        uint64_t log_addr = 0;
    };

    // What a handler answers, for the messages that have a reply (MessageInfo::reply).
    struct Reply {
        std::vector<uint8_t> payload;
        int fd = -1;  // sent along with the reply; borrowed (the session keeps it open)
    };
    using Handler = Status (Session::*)(Message&, Reply&);
    // The method for a request; nullptr for the ones the table marks unsupported.
    static constexpr Handler handler_for(Request r);
    static constexpr bool handlers_match_table();

    // Handles one message; false means "close the connection".
    bool dispatch(Connection& conn, Message& m);

    // One method per message. The message passed validate_message(): the payload has the size
    // its row asks for and the fds are there in the number it allows.
    Status on_get_features(Message& m, Reply& reply);
    Status on_set_features(Message& m, Reply& reply);
    Status on_set_owner(Message& m, Reply& reply);
    Status on_reset_owner(Message& m, Reply& reply);
    Status on_set_mem_table(Message& m, Reply& reply);
    Status on_set_vring_num(Message& m, Reply& reply);
    Status on_set_vring_addr(Message& m, Reply& reply);
    Status on_set_vring_base(Message& m, Reply& reply);
    Status on_get_vring_base(Message& m, Reply& reply);
    Status on_set_vring_kick(Message& m, Reply& reply);
    Status on_set_vring_call(Message& m, Reply& reply);
    Status on_set_vring_err(Message& m, Reply& reply);
    Status on_get_protocol_features(Message& m, Reply& reply);
    Status on_set_protocol_features(Message& m, Reply& reply);
    Status on_get_queue_num(Message& m, Reply& reply);
    Status on_set_vring_enable(Message& m, Reply& reply);
    Status on_send_rarp(Message& m, Reply& reply);
    Status on_net_set_mtu(Message& m, Reply& reply);
    Status on_set_backend_req_fd(Message& m, Reply& reply);
    Status on_get_config(Message& m, Reply& reply);
    Status on_set_config(Message& m, Reply& reply);
    Status on_get_inflight_fd(Message& m, Reply& reply);
    Status on_set_inflight_fd(Message& m, Reply& reply);
    Status on_reset_device(Message& m, Reply& reply);
    Status on_get_max_mem_slots(Message& m, Reply& reply);
    Status on_add_mem_reg(Message& m, Reply& reply);
    Status on_rem_mem_reg(Message& m, Reply& reply);
    Status on_set_status(Message& m, Reply& reply);
    Status on_get_status(Message& m, Reply& reply);
    Status on_set_log_base(Message& m, Reply& reply);

    // Shared by the handlers.

    // The payload as a T. validate_message() checked its size against the request's row; should
    // a row and its handler ever disagree, the missing bytes read as zero, never as stale ones.
    template <typename T>
    static T payload_as(const Message& m) {
        T v{};
        std::memcpy(&v, m.payload.data(), std::min<size_t>(sizeof(T), m.hdr.size));
        return v;
    }
    template <typename T>
    static void put(std::vector<uint8_t>& out, const T& v) {
        out.resize(sizeof(T));
        std::memcpy(out.data(), &v, sizeof(T));
    }
    struct VringFd {
        uint32_t index;
        UniqueFd fd;  // invalid for "no fd"
    };
    Result<VringFd> take_vring_fd(Message& m);  // SET_VRING_KICK/CALL/ERR payload and fd
    Result<uint32_t> vring_index(uint64_t idx) const;
    Status apply_memory(std::shared_ptr<const shm::MemoryMap> map);
    Status try_start(uint32_t i);
    // Dirty logging of vring i as the features, the log and the ring's flag say now.
    virtio::LogSettings log_settings(uint32_t i) const;
    // Hands every running ring its current log settings.
    void update_logging();
    void stop_vring(uint32_t i);
    void reset_vrings();
    void reset_features();  // RESET_OWNER / RESET_DEVICE
    void reset_session();
    uint64_t offered_protocol_features() const;
    bool rings_enabled_by_default() const { return !(acked_features_ & kFProtocolFeatures); }

    std::unique_ptr<virtio::VirtioDevice> dev_;
    std::string name_;
    uint64_t acked_features_ = 0;
    uint64_t acked_protocol_ = 0;
    bool features_set_ = false;
    uint8_t status_ = 0;
    MemTable mem_;
    std::vector<Vring> vrings_;
    // Guards the control calls of the session thread against other control threads (exclusive()).
    std::mutex control_mu_;
    // The backend channel and what it may carry, shared with notify_config_change().
    std::mutex backend_mu_;
    std::unique_ptr<Connection> backend_req_;
    uint64_t backend_protocol_ = 0;  // acked_protocol_ as of the channel's setup
    InflightBuffers inflight_;
    std::shared_ptr<const shm::DirtyLog> log_;  // SET_LOG_BASE
};

}  // namespace vhostd::vhost
