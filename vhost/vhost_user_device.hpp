// The backend side of the vhost-user protocol for one device: validates every message,
// keeps per-vring state, and drives the virtio device (start/stop queues, memory, config).
// One connection at a time; after it ends every resource of that session is released and the
// device waits for the next frontend.
#pragma once

#include <map>
#include <memory>
#include <vector>

#include "shm/shared_buffer.hpp"
#include "vhost/connection.hpp"
#include "virtio/device.hpp"

namespace vhostd::vhost {

class VhostUserDevice {
public:
    static constexpr uint64_t kBaseProtocolFeatures = pf::kMq | pf::kReplyAck | pf::kConfig |
                                                      pf::kConfigureMemSlots | pf::kBackendReq |
                                                      pf::kResetDevice | pf::kStatus;

    explicit VhostUserDevice(std::unique_ptr<virtio::VirtioDevice> dev);
    ~VhostUserDevice();

    // Serves one connection until the peer leaves, violates the protocol, or stop_fd becomes
    // readable. Always ends with the device reset (queues drained and stopped, memory unmapped).
    void serve(UniqueFd conn, int stop_fd);

    virtio::VirtioDevice& device() { return *dev_; }
    const std::string& name() const { return name_; }

    // Testing/fuzzing entry: handle one already-received message as if from a connection.
    // Returns false if the connection would be closed.
    bool handle_for_test(Connection& conn, Message& m) { return dispatch(conn, m); }
    void reset_for_test() { reset_session(); }

private:
    struct Vring {
        uint32_t num = 0;
        bool addr_set = false;
        VringAddr addr{};
        uint16_t base = 0;
        bool kick_set = false;  // a kick fd, or "no fd: poll"
        UniqueFd kick;
        UniqueFd call;
        UniqueFd err;
        bool enabled = false;
        bool started = false;
    };

    // Handles one message; false means "close the connection".
    bool dispatch(Connection& conn, Message& m);
    // Returns the result and, for requests with a reply, fills reply_payload.
    Status handle(Message& m, std::vector<uint8_t>& reply, bool& has_reply);

    Status set_mem_table(Message& m);
    Status add_mem_reg(Message& m);
    Status rem_mem_reg(Message& m);
    Status apply_memory(std::shared_ptr<const shm::MemoryMap> map);
    Result<uint32_t> vring_index(uint64_t idx) const;
    Status set_vring_fd(Message& m, Request r);
    Status try_start(uint32_t i);
    void stop_vring(uint32_t i);
    void reset_vrings();
    void reset_session();
    uint64_t offered_protocol_features() const;
    Status check_inflight_desc(const InflightDesc& d) const;
    Status get_inflight_fd(Message& m, std::vector<uint8_t>& reply, bool& has_reply);
    Status set_inflight_fd(Message& m);
    bool rings_enabled_by_default() const { return !(acked_features_ & kFProtocolFeatures); }

    std::unique_ptr<virtio::VirtioDevice> dev_;
    std::string name_;
    uint64_t acked_features_ = 0;
    uint64_t acked_protocol_ = 0;
    bool features_set_ = false;
    uint8_t status_ = 0;
    std::shared_ptr<const shm::MemoryMap> mem_;
    std::vector<Vring> vrings_;
    UniqueFd backend_req_;
    std::shared_ptr<shm::SharedBuffer> inflight_;          // the buffer in use (SET_INFLIGHT_FD)
    std::shared_ptr<shm::SharedBuffer> inflight_created_;  // the last one we handed out
    InflightDesc inflight_desc_{};
    int reply_fd_ = -1;  // an fd to send with the current reply
    std::map<uint64_t, uint32_t> region_refs_;  // gpa -> times the frontend added that region
};

}  // namespace vhostd::vhost
