#include "vhost/session.hpp"

#include <algorithm>
#include <cstring>

#include "core/checked.hpp"
#include "core/log.hpp"

namespace vhostd::vhost {

constexpr Session::Handler Session::handler_for(Request r) {
    switch (r) {
        case Request::kGetFeatures: return &Session::on_get_features;
        case Request::kSetFeatures: return &Session::on_set_features;
        case Request::kSetOwner: return &Session::on_set_owner;
        case Request::kResetOwner: return &Session::on_reset_owner;
        case Request::kSetMemTable: return &Session::on_set_mem_table;
        case Request::kSetVringNum: return &Session::on_set_vring_num;
        case Request::kSetVringAddr: return &Session::on_set_vring_addr;
        case Request::kSetVringBase: return &Session::on_set_vring_base;
        case Request::kGetVringBase: return &Session::on_get_vring_base;
        case Request::kSetVringKick: return &Session::on_set_vring_kick;
        case Request::kSetVringCall: return &Session::on_set_vring_call;
        case Request::kSetVringErr: return &Session::on_set_vring_err;
        case Request::kGetProtocolFeatures: return &Session::on_get_protocol_features;
        case Request::kSetProtocolFeatures: return &Session::on_set_protocol_features;
        case Request::kGetQueueNum: return &Session::on_get_queue_num;
        case Request::kSetVringEnable: return &Session::on_set_vring_enable;
        case Request::kSendRarp: return &Session::on_send_rarp;
        case Request::kNetSetMtu: return &Session::on_net_set_mtu;
        case Request::kSetBackendReqFd: return &Session::on_set_backend_req_fd;
        case Request::kGetConfig: return &Session::on_get_config;
        case Request::kSetConfig: return &Session::on_set_config;
        case Request::kGetInflightFd: return &Session::on_get_inflight_fd;
        case Request::kSetInflightFd: return &Session::on_set_inflight_fd;
        case Request::kResetDevice: return &Session::on_reset_device;
        case Request::kGetMaxMemSlots: return &Session::on_get_max_mem_slots;
        case Request::kAddMemReg: return &Session::on_add_mem_reg;
        case Request::kRemMemReg: return &Session::on_rem_mem_reg;
        case Request::kSetStatus: return &Session::on_set_status;
        case Request::kGetStatus: return &Session::on_get_status;
        case Request::kSetLogBase: return &Session::on_set_log_base;
        default: return nullptr;
    }
}

// The table says what is supported; a supported request without a method (or the reverse)
// would be a message that passes validation and then falls through, so it can't compile.
constexpr bool Session::handlers_match_table() {
    for (const MessageInfo& row : kMessageTable) {
        if ((handler_for(row.request) != nullptr) != row.supported) return false;
    }
    return true;
}

Session::Session(std::unique_ptr<virtio::VirtioDevice> dev)
    : dev_(std::move(dev)), name_(dev_->name()), mem_(name_), vrings_(dev_->num_queues()) {
    static_assert(handlers_match_table(), "every supported request needs its on_* method, and only those");
}

Session::~Session() { reset_session(); }

void Session::serve(UniqueFd fd, int stop_fd) {
    Connection conn(std::move(fd));
    auto m = std::make_unique<Message>();
    VLOG_INFO("{}: frontend connected", name_);
    while (true) {
        Status st = conn.recv(*m, stop_fd);
        if (!st.ok()) {
            if (st.error().code == Errc::kClosed) VLOG_INFO("{}: frontend disconnected ({})", name_, st.error().context);
            else VLOG_ERROR("{}: closing connection: {}", name_, st.error().describe());
            break;
        }
        std::lock_guard lk(control_mu_);
        if (!dispatch(conn, *m)) break;
    }
    std::lock_guard lk(control_mu_);
    reset_session();
}

bool Session::dispatch(Connection& conn, Message& m) {
    const Request req = m.request();
    VLOG_DEBUG("{}: {} size={} fds={} flags={:#x}", name_, request_name(req), m.hdr.size, m.nfds, m.hdr.flags);
    Reply reply;
    auto row = validate_message(m, acked_protocol_);
    Status st = row.ok() ? (this->*handler_for(req))(m, reply) : Status(row.error());
    m.drop_fds();  // whatever a handler did not take is closed now, also when the message was refused

    // A message with its own reply sends it when it succeeds. Any other outcome gets the
    // REPLY_ACK answer if the frontend asked for one (also a failed request that normally has a
    // reply: the frontend then sees an error rather than a closed socket).
    const bool has_reply = st.ok() && row.value()->reply;
    const bool want_ack = (m.hdr.flags & kFlagNeedReply) && (acked_protocol_ & pf::kReplyAck) && !has_reply;
    if (!st.ok()) {
        if (!want_ack) {
            VLOG_ERROR("{}: closing connection: {} failed: {}", name_, request_name(req), st.error().describe());
            return false;
        }
        VLOG_WARN("{}: {} failed (reported to the frontend): {}", name_, request_name(req), st.error().describe());
    }
    if (has_reply || want_ack) {
        if (want_ack) put(reply.payload, le64{st.ok() ? 0u : 1u});
        MsgHeader h{m.hdr.request, kVersion | kFlagReply, static_cast<uint32_t>(reply.payload.size())};
        int fd = reply.fd;
        Status s = conn.send(h, reply.payload, fd >= 0 && st.ok() ? std::span<const int>(&fd, 1) : std::span<const int>());
        if (!s.ok()) {
            VLOG_ERROR("{}: cannot reply to {}: {}", name_, request_name(req), s.error().describe());
            return false;
        }
    }
    return true;
}

Result<uint32_t> Session::vring_index(uint64_t idx) const {
    if (idx >= vrings_.size())
        return make_error(Errc::kOutOfRange, "vring index {} out of range (device has {})", idx, vrings_.size());
    return static_cast<uint32_t>(idx);
}

// ---- features and ownership ----------------------------------------------------------------

Status Session::on_get_features(Message&, Reply& reply) {
    put(reply.payload, le64{dev_->features() | kFProtocolFeatures | kFLogAll});
    return ok_status();
}

Status Session::on_set_features(Message& m, Reply&) {
    const uint64_t f = payload_as<le64>(m);
    const uint64_t offered = dev_->features() | kFProtocolFeatures | kFLogAll;
    if (f & ~offered) return make_error(Errc::kInvalid, "features {:#x} include unoffered bits {:#x}", f, f & ~offered);
    if (features_set_ && (f ^ acked_features_) == kFLogAll) {
        // A migration starts or ends: the rings keep running and log (or stop logging) from the
        // next reactor pass on.
        acked_features_ = f;
        if ((f & kFLogAll) && !log_) VLOG_WARN("{}: LOG_ALL without a log (SET_LOG_BASE): nothing can be logged", name_);
        update_logging();
        VLOG_INFO("{}: dirty logging {}", name_, (f & kFLogAll) ? "on" : "off");
        return ok_status();
    }
    if (features_set_ && f != acked_features_) {
        // Features changed under running rings: restart them with the new set.
        for (uint32_t i = 0; i < vrings_.size(); ++i) stop_vring(i);
    }
    acked_features_ = f;
    features_set_ = true;
    dev_->set_features(f & ~kFLogAll);  // the vhost layer's, not the device's
    // Rings that were waiting for "enabled by default" may start now.
    for (uint32_t i = 0; i < vrings_.size(); ++i) VHOSTD_TRY(try_start(i));
    return ok_status();
}

Status Session::on_get_protocol_features(Message&, Reply& reply) {
    put(reply.payload, le64{offered_protocol_features()});
    return ok_status();
}

Status Session::on_set_protocol_features(Message& m, Reply&) {
    const uint64_t f = payload_as<le64>(m);
    if (f & ~offered_protocol_features())
        return make_error(Errc::kInvalid, "protocol features {:#x} include unoffered bits", f);
    acked_protocol_ = f;
    std::lock_guard lk(backend_mu_);
    if (backend_req_) backend_protocol_ = f;
    return ok_status();
}

uint64_t Session::offered_protocol_features() const {
    uint64_t f = kBaseProtocolFeatures | dev_->extra_protocol_features();
    if (dev_->supports_inflight()) f |= pf::kInflightShmfd;
    if (dev_->net_control()) f |= pf::kNetMtu | pf::kRarp;
    return f;
}

Status Session::on_set_owner(Message&, Reply&) { return ok_status(); }

Status Session::on_reset_owner(Message&, Reply&) {
    reset_features();
    return ok_status();
}

Status Session::on_reset_device(Message&, Reply&) {
    reset_features();
    return ok_status();
}

void Session::reset_features() {
    reset_vrings();
    acked_features_ = 0;
    features_set_ = false;
    status_ = 0;
    dev_->set_features(0);
}

Status Session::on_get_queue_num(Message&, Reply& reply) {
    put(reply.payload, le64{vrings_.size()});
    return ok_status();
}

Status Session::on_get_status(Message&, Reply& reply) {
    put(reply.payload, le64{status_});
    return ok_status();
}

Status Session::on_set_status(Message& m, Reply&) {
    const uint64_t s = payload_as<le64>(m);
    if (s > 0xff) return make_error(Errc::kInvalid, "status {:#x} out of range", s);
    if (s == 0) {
        // QEMU 7.2 stops a running device (VM stop, the end of a migration) with SET_STATUS 0
        // *before* GET_VRING_BASE, and saves the answer as the ring's position: the rings stop
        // (draining) and forget their setup, but each keeps its position for GET_VRING_BASE.
        // Forgetting it would restart the guest's rings at 0 after a pause or on the migration
        // destination.
        for (uint32_t i = 0; i < vrings_.size(); ++i) {
            stop_vring(i);
            const uint32_t base = vrings_[i].base;
            vrings_[i] = Vring{};
            vrings_[i].base = base;
        }
        status_ = 0;
        return ok_status();
    }
    status_ = static_cast<uint8_t>(s);
    if ((status_ & virtio::kStatusFeaturesOk) && !features_set_) status_ &= ~virtio::kStatusFeaturesOk;
    return ok_status();
}

Status Session::on_set_backend_req_fd(Message& m, Reply&) {
    std::lock_guard lk(backend_mu_);
    backend_req_ = std::make_unique<Connection>(std::move(m.fds[0]));
    backend_protocol_ = acked_protocol_;
    return ok_status();
}

Status Session::notify_config_change() {
    std::lock_guard lk(backend_mu_);
    constexpr uint64_t kNeeded = pf::kBackendReq | pf::kConfig;
    if (!backend_req_ || (backend_protocol_ & kNeeded) != kNeeded)
        return make_error(Errc::kState,
                          "{}: the frontend has no backend channel with CONFIG (not connected yet, or it did not "
                          "negotiate BACKEND_REQ and CONFIG): the guest sees the change when it next reads the config",
                          name_);
    const bool ack = (backend_protocol_ & pf::kReplyAck) != 0;
    const auto req = static_cast<uint32_t>(BackendRequest::kConfigChangeMsg);
    MsgHeader h{req, kVersion | (ack ? kFlagNeedReply : 0u), 0};
    Status st = backend_req_->send(h, {});
    if (st.ok() && ack) {
        auto r = backend_req_->recv_u64_reply(req);
        if (!r.ok()) st = std::move(r).take_error();
        else if (*r != 0) st = make_error(Errc::kState, "{}: the frontend failed to apply the config change ({})", name_, *r);
    }
    if (!st.ok() && st.error().code != Errc::kState) {
        // The channel is out of step (a half-read reply, a dead peer): drop it rather than read a
        // stale answer next time.
        VLOG_WARN("{}: backend channel: {}; closing it", name_, st.error().describe());
        backend_req_.reset();
    }
    return st;
}

// ---- memory --------------------------------------------------------------------------------

Status Session::on_get_max_mem_slots(Message&, Reply& reply) {
    put(reply.payload, le64{kMaxMemSlots});
    return ok_status();
}

Status Session::on_set_mem_table(Message& m, Reply&) {
    const auto h = payload_as<MemTableHeader>(m);  // nregions <= kMaxMemTableRegions, one fd each
    std::vector<shm::RegionDesc> regions;
    for (uint32_t i = 0; i < h.nregions; ++i) {
        MemRegion r;
        std::memcpy(&r, m.payload.data() + sizeof(h) + i * sizeof(MemRegion), sizeof(r));
        regions.push_back(to_region_desc(r));
    }
    VHOSTD_ASSIGN_OR_RETURN(auto map, mem_.set(regions, std::span<const UniqueFd>(m.fds.data(), h.nregions)));
    return apply_memory(std::move(map));
}

Status Session::on_add_mem_reg(Message& m, Reply&) {
    const auto r = payload_as<SingleMemRegion>(m);
    VHOSTD_ASSIGN_OR_RETURN(auto map, mem_.add(to_region_desc(r.region), m.fds[0].get()));
    return map ? apply_memory(std::move(map)) : ok_status();
}

Status Session::on_rem_mem_reg(Message& m, Reply&) {
    const auto r = payload_as<SingleMemRegion>(m);  // an fd, if attached, is not needed
    VHOSTD_ASSIGN_OR_RETURN(auto map, mem_.remove(to_region_desc(r.region)));
    return map ? apply_memory(std::move(map)) : ok_status();
}

Status Session::apply_memory(std::shared_ptr<const shm::MemoryMap> map) {
    // Running queues drain and re-translate their rings on the new map before the old one
    // can be unmapped (it is freed when the last reference goes).
    Status st = dev_->set_memory(std::move(map));
    if (!st.ok()) {
        for (uint32_t i = 0; i < vrings_.size(); ++i) {
            if (vrings_[i].started && !dev_->queue_running(i)) vrings_[i].started = false;
        }
        return st;
    }
    for (uint32_t i = 0; i < vrings_.size(); ++i) VHOSTD_TRY(try_start(i));
    return ok_status();
}

// ---- config and net control ------------------------------------------------------------------

Status Session::on_get_config(Message& m, Reply& reply) {
    const auto ch = payload_as<ConfigHeader>(m);  // size <= kMaxConfigSize and matches the payload
    if (!range_within(ch.offset, ch.size, 0, kMaxConfigSize))
        return make_error(Errc::kOutOfRange, "config range {}+{} outside config space", ch.offset, ch.size);
    // Answer exactly the size asked for; bytes past the device's config read as zero.
    reply.payload.assign(sizeof(ch) + ch.size, 0);
    std::memcpy(reply.payload.data(), &ch, sizeof(ch));
    const uint32_t cs = dev_->config_size();
    if (ch.offset < cs) {
        const uint32_t n = std::min<uint32_t>(ch.size, cs - ch.offset);
        dev_->read_config(ch.offset, {reply.payload.data() + sizeof(ch), n});
    }
    return ok_status();
}

Status Session::on_set_config(Message& m, Reply&) {
    const auto ch = payload_as<ConfigHeader>(m);  // size <= kMaxConfigSize and matches the payload
    if (!range_within(ch.offset, ch.size, 0, kMaxConfigSize))
        return make_error(Errc::kOutOfRange, "config range {}+{} outside config space", ch.offset, ch.size);
    if (!range_within(ch.offset, ch.size, 0, dev_->config_size()))
        return make_error(Errc::kOutOfRange, "SET_CONFIG beyond the device's config");
    return dev_->write_config(ch.offset, {m.payload.data() + sizeof(ch), ch.size});
}

Status Session::on_net_set_mtu(Message& m, Reply&) { return dev_->net_set_mtu(payload_as<le64>(m)); }

Status Session::on_send_rarp(Message& m, Reply&) {
    // The MAC is the first 6 bytes of the u64 payload, in wire order.
    return dev_->net_send_rarp(std::span<const uint8_t, 6>(m.payload.data(), 6));
}

// ---- inflight tracking -----------------------------------------------------------------------

Status Session::on_get_inflight_fd(Message& m, Reply& reply) {
    VHOSTD_ASSIGN_OR_RETURN(InflightDesc out, inflight_.create(payload_as<InflightDesc>(m), vrings_.size()));
    put(reply.payload, out);
    reply.fd = inflight_.created_fd();
    return ok_status();
}

Status Session::on_set_inflight_fd(Message& m, Reply&) {
    for (auto& v : vrings_) {
        if (v.started) return make_error(Errc::kState, "SET_INFLIGHT_FD while rings run");
    }
    const auto d = payload_as<InflightDesc>(m);
    VHOSTD_TRY(inflight_.set(d, m.fds[0].get(), vrings_.size()));
    VLOG_INFO("{}: inflight tracking on ({} queues of {})", name_, d.num_queues, d.queue_size);
    return ok_status();
}

// ---- live migration: the dirty log -------------------------------------------------------

Status Session::on_set_log_base(Message& m, Reply&) {
    const auto d = payload_as<LogDesc>(m);
    VHOSTD_ASSIGN_OR_RETURN(auto log, shm::DirtyLog::map(m.fds[0].get(), d.mmap_size, d.mmap_offset));
    // Every running ring switches before the reply: the frontend syncs and frees the previous
    // log once it has it, so nothing may be marked there afterwards.
    log_ = std::move(log);
    update_logging();
    VLOG_INFO("{}: dirty log of {} bytes (guest memory up to {} MiB)", name_, d.mmap_size,
              d.mmap_size * 8 * shm::DirtyLog::kPageBytes >> 20);
    return ok_status();
}

virtio::LogSettings Session::log_settings(uint32_t i) const {
    virtio::LogSettings s;
    if (!(acked_features_ & kFLogAll) || !log_) return s;
    s.log = log_;
    s.used = vrings_[i].log;
    s.used_gpa = vrings_[i].log_addr;
    return s;
}

void Session::update_logging() {
    for (uint32_t i = 0; i < vrings_.size(); ++i)
        if (vrings_[i].started) dev_->set_logging(i, log_settings(i));
}

}  // namespace vhostd::vhost
