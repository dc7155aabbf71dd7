#include "vhost/vhost_user_device.hpp"

#include <fcntl.h>

#include <cstring>

#include "core/checked.hpp"
#include "core/log.hpp"
#include "vhost/mem_table.hpp"

namespace vhostd::vhost {

namespace {

template <typename T>
Result<T> payload_as(const Message& m) {
    if (m.hdr.size != sizeof(T))
        return make_error(Errc::kInvalid, "{}: payload is {} bytes, expected {}", request_name(m.request()),
                          m.hdr.size, sizeof(T));
    T v;
    std::memcpy(&v, m.payload.data(), sizeof(T));
    return v;
}

Status expect_fds(const Message& m, size_t n) {
    if (m.nfds != n)
        return make_error(Errc::kInvalid, "{}: {} fds attached, expected {}", request_name(m.request()), m.nfds, n);
    return ok_status();
}

template <typename T>
void put(std::vector<uint8_t>& out, const T& v) {
    out.resize(sizeof(T));
    std::memcpy(out.data(), &v, sizeof(T));
}

UniqueFd dup_fd(int fd) { return UniqueFd(fd >= 0 ? fcntl(fd, F_DUPFD_CLOEXEC, 0) : -1); }

}  // namespace

VhostUserDevice::VhostUserDevice(std::unique_ptr<virtio::VirtioDevice> dev)
    : dev_(std::move(dev)), name_(dev_->name()), mem_(shm::MemoryMap::empty()), vrings_(dev_->num_queues()) {}

VhostUserDevice::~VhostUserDevice() { reset_session(); }

void VhostUserDevice::serve(UniqueFd fd, int stop_fd) {
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
        if (!dispatch(conn, *m)) break;
    }
    reset_session();
}

bool VhostUserDevice::dispatch(Connection& conn, Message& m) {
    Request req = m.request();
    VLOG_DEBUG("{}: {} size={} fds={} flags={:#x}", name_, request_name(req), uint32_t{m.hdr.size}, m.nfds,
               uint32_t{m.hdr.flags});
    std::vector<uint8_t> reply;
    bool has_reply = false;
    Status st = handle(m, reply, has_reply);
    m.drop_fds();  // whatever a handler did not take is closed now

    bool want_ack = (m.hdr.flags & kFlagNeedReply) && (acked_protocol_ & pf::kReplyAck) && !has_reply;
    if (!st.ok()) {
        if (!want_ack) {
            VLOG_ERROR("{}: closing connection: {} failed: {}", name_, request_name(req), st.error().describe());
            return false;
        }
        VLOG_WARN("{}: {} failed (reported to the frontend): {}", name_, request_name(req), st.error().describe());
    }
    if (has_reply || want_ack) {
        if (want_ack) put<uint64_t>(reply, st.ok() ? 0 : 1);
        MsgHeader h{m.hdr.request, kVersion | kFlagReply, static_cast<uint32_t>(reply.size())};
        int fd = reply_fd_;
        Status s = conn.send(h, reply, fd >= 0 && st.ok() ? std::span<const int>(&fd, 1) : std::span<const int>());
        reply_fd_ = -1;
        if (!s.ok()) {
            VLOG_ERROR("{}: cannot reply to {}: {}", name_, request_name(req), s.error().describe());
            return false;
        }
    }
    return true;
}

Result<uint32_t> VhostUserDevice::vring_index(uint64_t idx) const {
    if (idx >= vrings_.size())
        return make_error(Errc::kOutOfRange, "vring index {} out of range (device has {})", idx, vrings_.size());
    return static_cast<uint32_t>(idx);
}

Status VhostUserDevice::handle(Message& m, std::vector<uint8_t>& reply, bool& has_reply) {
    const Request req = m.request();
    // Only the handlers that take fds accept them.
    switch (req) {
        case Request::kSetMemTable:
        case Request::kAddMemReg:
        case Request::kRemMemReg:
        case Request::kSetVringKick:
        case Request::kSetVringCall:
        case Request::kSetVringErr:
        case Request::kSetBackendReqFd:
        case Request::kSetInflightFd:
            break;
        default:
            if (m.nfds != 0) return make_error(Errc::kInvalid, "{} carries {} unexpected fds", request_name(req), m.nfds);
    }

    switch (req) {
        case Request::kGetFeatures:
            has_reply = true;
            put<uint64_t>(reply, dev_->features() | kFProtocolFeatures);
            return ok_status();

        case Request::kSetFeatures: {
            VHOSTD_ASSIGN_OR_RETURN(uint64_t f, payload_as<uint64_t>(m));
            uint64_t offered = dev_->features() | kFProtocolFeatures;
            if (f & ~offered) return make_error(Errc::kInvalid, "features {:#x} include unoffered bits {:#x}", f, f & ~offered);
            if (features_set_ && f != acked_features_) {
                // Features changed under running rings: restart them with the new set.
                for (uint32_t i = 0; i < vrings_.size(); ++i) stop_vring(i);
            }
            acked_features_ = f;
            features_set_ = true;
            dev_->set_features(f);
            // Rings that were waiting for "enabled by default" may start now.
            for (uint32_t i = 0; i < vrings_.size(); ++i) VHOSTD_TRY(try_start(i));
            return ok_status();
        }

        case Request::kGetProtocolFeatures:
            has_reply = true;
            put<uint64_t>(reply, offered_protocol_features());
            return ok_status();

        case Request::kSetProtocolFeatures: {
            VHOSTD_ASSIGN_OR_RETURN(uint64_t f, payload_as<uint64_t>(m));
            uint64_t offered = offered_protocol_features();
            if (f & ~offered) return make_error(Errc::kInvalid, "protocol features {:#x} include unoffered bits", f);
            acked_protocol_ = f;
            return ok_status();
        }

        case Request::kSetOwner:
            return ok_status();

        case Request::kResetOwner:
        case Request::kResetDevice:
            reset_vrings();
            acked_features_ = 0;
            features_set_ = false;
            status_ = 0;
            dev_->set_features(0);
            return ok_status();

        case Request::kGetQueueNum:
            has_reply = true;
            put<uint64_t>(reply, vrings_.size());
            return ok_status();

        case Request::kGetMaxMemSlots:
            has_reply = true;
            put<uint64_t>(reply, kMaxMemSlots);
            return ok_status();

        case Request::kSetMemTable:
            return set_mem_table(m);
        case Request::kAddMemReg:
            return add_mem_reg(m);
        case Request::kRemMemReg:
            return rem_mem_reg(m);

        case Request::kSetVringNum: {
            VHOSTD_ASSIGN_OR_RETURN(VringState s, payload_as<VringState>(m));
            VHOSTD_ASSIGN_OR_RETURN(uint32_t i, vring_index(s.index));
            if (!is_pow2(s.num) || s.num > virtio::kMaxQueueSize)
                return make_error(Errc::kInvalid, "vring {} size {} is not a power of two <= {}", i, s.num,
                                  virtio::kMaxQueueSize);
            if (vrings_[i].started) return make_error(Errc::kState, "SET_VRING_NUM on running vring {}", i);
            vrings_[i].num = s.num;
            return ok_status();
        }

        case Request::kSetVringAddr: {
            VHOSTD_ASSIGN_OR_RETURN(VringAddr a, payload_as<VringAddr>(m));
            VHOSTD_ASSIGN_OR_RETURN(uint32_t i, vring_index(a.index));
            if (a.flags & ~kVringAddrFlagLog) return make_error(Errc::kInvalid, "vring {} addr flags {:#x}", i, a.flags);
            if (a.flags & kVringAddrFlagLog) return make_error(Errc::kUnsupported, "dirty logging is not supported");
            bool was = vrings_[i].started;
            if (was) stop_vring(i);  // re-translate on restart
            vrings_[i].addr = a;
            vrings_[i].addr_set = true;
            return try_start(i);
        }

        case Request::kSetVringBase: {
            VHOSTD_ASSIGN_OR_RETURN(VringState s, payload_as<VringState>(m));
            VHOSTD_ASSIGN_OR_RETURN(uint32_t i, vring_index(s.index));
            if (s.num > 0xffff) return make_error(Errc::kInvalid, "vring {} base {} too large for a split ring", i, s.num);
            if (vrings_[i].started) return make_error(Errc::kState, "SET_VRING_BASE on running vring {}", i);
            vrings_[i].base = static_cast<uint16_t>(s.num);
            return ok_status();
        }

        case Request::kGetVringBase: {
            VHOSTD_ASSIGN_OR_RETURN(VringState s, payload_as<VringState>(m));
            VHOSTD_ASSIGN_OR_RETURN(uint32_t i, vring_index(s.index));
            stop_vring(i);  // drains in-flight requests first
            Vring& v = vrings_[i];
            v.kick.reset();
            v.kick_set = false;
            v.call.reset();
            v.err.reset();
            has_reply = true;
            put(reply, VringState{i, v.base});
            return ok_status();
        }

        case Request::kSetVringKick:
        case Request::kSetVringCall:
        case Request::kSetVringErr:
            return set_vring_fd(m, req);

        case Request::kSetVringEnable: {
            VHOSTD_ASSIGN_OR_RETURN(VringState s, payload_as<VringState>(m));
            VHOSTD_ASSIGN_OR_RETURN(uint32_t i, vring_index(s.index));
            if (s.num > 1) return make_error(Errc::kInvalid, "SET_VRING_ENABLE value {}", s.num);
            vrings_[i].enabled = s.num == 1;
            if (!vrings_[i].enabled) {
                stop_vring(i);
                return ok_status();
            }
            return try_start(i);
        }

        case Request::kGetConfig:
        case Request::kSetConfig: {
            if (m.hdr.size < sizeof(ConfigHeader)) return make_error(Errc::kInvalid, "config message too short");
            ConfigHeader ch;
            std::memcpy(&ch, m.payload.data(), sizeof(ch));
            if (ch.size > kMaxConfigSize || m.hdr.size != sizeof(ch) + ch.size)
                return make_error(Errc::kInvalid, "config size {} does not match payload {}", ch.size, m.hdr.size);
            if (!range_within(ch.offset, ch.size, 0, kMaxConfigSize))
                return make_error(Errc::kOutOfRange, "config range {}+{} outside config space", ch.offset, ch.size);
            if (req == Request::kSetConfig) {
                if (!range_within(ch.offset, ch.size, 0, dev_->config_size()))
                    return make_error(Errc::kOutOfRange, "SET_CONFIG beyond the device's config");
                return dev_->write_config(ch.offset, {m.payload.data() + sizeof(ch), ch.size});
            }
            // Answer exactly the size asked for; bytes past the device's config read as zero.
            has_reply = true;
            reply.assign(sizeof(ch) + ch.size, 0);
            std::memcpy(reply.data(), &ch, sizeof(ch));
            uint32_t cs = dev_->config_size();
            if (ch.offset < cs) {
                uint32_t n = std::min(ch.size.get(), cs - ch.offset);
                dev_->read_config(ch.offset, {reply.data() + sizeof(ch), n});
            }
            return ok_status();
        }

        case Request::kSetBackendReqFd:
            VHOSTD_TRY(expect_fds(m, 1));
            if (m.hdr.size != 0 && m.hdr.size != 8) return make_error(Errc::kInvalid, "SET_BACKEND_REQ_FD payload size");
            backend_req_ = std::move(m.fds[0]);
            return ok_status();

        case Request::kGetStatus:
            has_reply = true;
            put<uint64_t>(reply, status_);
            return ok_status();

        case Request::kSetStatus: {
            VHOSTD_ASSIGN_OR_RETURN(uint64_t s, payload_as<uint64_t>(m));
            if (s > 0xff) return make_error(Errc::kInvalid, "status {:#x} out of range", s);
            if (s == 0) {
                reset_vrings();
                status_ = 0;
                return ok_status();
            }
            status_ = static_cast<uint8_t>(s);
            if ((status_ & virtio::kStatusFeaturesOk) && !features_set_) status_ &= ~virtio::kStatusFeaturesOk;
            return ok_status();
        }

        case Request::kGetInflightFd:
            return get_inflight_fd(m, reply, has_reply);
        case Request::kSetInflightFd:
            return set_inflight_fd(m);

        case Request::kNetSetMtu: {
            if (!(acked_protocol_ & pf::kNetMtu)) return make_error(Errc::kState, "NET_SET_MTU without the NET_MTU feature");
            VHOSTD_ASSIGN_OR_RETURN(uint64_t mtu, payload_as<uint64_t>(m));
            return dev_->net_set_mtu(mtu);
        }

        case Request::kSendRarp: {
            if (!(acked_protocol_ & pf::kRarp)) return make_error(Errc::kState, "SEND_RARP without the RARP feature");
            VHOSTD_ASSIGN_OR_RETURN(uint64_t v, payload_as<uint64_t>(m));
            uint8_t mac[8];
            std::memcpy(mac, &v, sizeof(mac));  // the MAC is the first 6 bytes of the payload
            return dev_->net_send_rarp(std::span<const uint8_t, 6>(mac, 6));
        }

        default:
            return make_error(Errc::kUnsupported, "request {} ({}) is not supported", m.hdr.request,
                              request_name(req));
    }
}

Status VhostUserDevice::set_vring_fd(Message& m, Request r) {
    VHOSTD_ASSIGN_OR_RETURN(uint64_t v, payload_as<uint64_t>(m));
    if (v & ~(kVringIndexMask | kVringNoFdFlag))
        return make_error(Errc::kInvalid, "{}: reserved bits set in {:#x}", request_name(r), v);
    VHOSTD_ASSIGN_OR_RETURN(uint32_t i, vring_index(v & kVringIndexMask));
    bool nofd = (v & kVringNoFdFlag) != 0;
    VHOSTD_TRY(expect_fds(m, nofd ? 0 : 1));
    UniqueFd fd = nofd ? UniqueFd() : std::move(m.fds[0]);
    Vring& vr = vrings_[i];
    switch (r) {
        case Request::kSetVringKick: {
            bool was = vr.started;
            if (was) stop_vring(i);
            vr.kick = std::move(fd);
            vr.kick_set = true;  // with no fd, the queue is polled
            // Per the spec, a ring starts when its kick fd arrives.
            return try_start(i);
        }
        case Request::kSetVringCall:
            // The running queue switches to the new fd before the old one is closed.
            if (vr.started) dev_->set_call_fd(i, fd.get());
            vr.call = std::move(fd);
            return ok_status();
        default: {
            bool was = vr.started;
            if (was) stop_vring(i);
            vr.err = std::move(fd);
            return was ? try_start(i) : ok_status();
        }
    }
}

Status VhostUserDevice::try_start(uint32_t i) {
    Vring& v = vrings_[i];
    if (v.started || v.num == 0 || !v.addr_set || !v.kick_set || mem_->region_count() == 0) return ok_status();
    if (!features_set_) return ok_status();  // SET_FEATURES starts waiting rings
    if (!v.enabled && !rings_enabled_by_default()) return ok_status();
    virtio::QueueStart s;
    s.layout = virtio::QueueLayout{static_cast<uint16_t>(v.num), v.addr.desc_user_addr, v.addr.avail_user_addr,
                                   v.addr.used_user_addr};
    s.last_avail = v.base;
    s.features = acked_features_;
    s.mem = mem_;
    if (v.kick.valid()) {
        s.kick = dup_fd(v.kick.get());
        if (!s.kick.valid()) return sys_error("dup kick fd");
    }
    s.call = v.call.get();
    s.err = v.err.get();
    if (inflight_ && i < inflight_desc_.num_queues) {
        if (v.num != inflight_desc_.queue_size)
            return make_error(Errc::kInvalid, "vring {} has {} entries, its inflight region {}", i, v.num,
                              inflight_desc_.queue_size);
        s.inflight = reinterpret_cast<virtio::InflightQueue*>(inflight_->data() +
                                                              i * virtio::inflight_queue_bytes(inflight_desc_.queue_size));
        s.inflight_owner = inflight_;
    }
    VHOSTD_TRY(dev_->start_queue(i, std::move(s)));
    v.started = true;
    VLOG_DEBUG("{}: vring {} started (size {}, base {})", name_, i, v.num, v.base);
    return ok_status();
}

void VhostUserDevice::stop_vring(uint32_t i) {
    Vring& v = vrings_[i];
    if (!v.started) return;
    v.base = dev_->stop_queue(i);
    v.started = false;
    VLOG_DEBUG("{}: vring {} stopped at {}", name_, i, v.base);
}

void VhostUserDevice::reset_vrings() {
    for (uint32_t i = 0; i < vrings_.size(); ++i) stop_vring(i);
    for (auto& v : vrings_) v = Vring{};
}

Status VhostUserDevice::check_inflight_desc(const InflightDesc& d) const {
    if (d.num_queues == 0 || d.num_queues > vrings_.size())
        return make_error(Errc::kInvalid, "inflight buffer for {} queues (device has {})", d.num_queues, vrings_.size());
    if (!is_pow2(d.queue_size) || d.queue_size > virtio::kMaxQueueSize)
        return make_error(Errc::kInvalid, "inflight queue size {} is not a power of two <= {}", d.queue_size,
                          virtio::kMaxQueueSize);
    return ok_status();
}

Status VhostUserDevice::get_inflight_fd(Message& m, std::vector<uint8_t>& reply, bool& has_reply) {
    if (!(acked_protocol_ & pf::kInflightShmfd)) return make_error(Errc::kState, "GET_INFLIGHT_FD without INFLIGHT_SHMFD");
    VHOSTD_ASSIGN_OR_RETURN(InflightDesc d, payload_as<InflightDesc>(m));
    VHOSTD_TRY(check_inflight_desc(d));
    uint64_t per_queue = virtio::inflight_queue_bytes(d.queue_size);
    VHOSTD_ASSIGN_OR_RETURN(auto buf, shm::SharedBuffer::create("vhostd-inflight", per_queue * d.num_queues));
    for (uint32_t q = 0; q < d.num_queues; ++q) {
        auto* r = reinterpret_cast<virtio::InflightQueue*>(buf->data() + q * per_queue);
        r->desc_num = d.queue_size;  // version 0: nothing in flight yet
    }
    InflightDesc out{buf->size(), 0, d.num_queues, d.queue_size, 0};
    // The frontend keeps the buffer and hands it back (SET_INFLIGHT_FD) on every start, also to
    // a restarted vhostd; the mapping we need then comes from that message.
    inflight_created_ = std::move(buf);
    reply_fd_ = inflight_created_->fd();
    has_reply = true;
    put(reply, out);
    return ok_status();
}

Status VhostUserDevice::set_inflight_fd(Message& m) {
    if (!(acked_protocol_ & pf::kInflightShmfd)) return make_error(Errc::kState, "SET_INFLIGHT_FD without INFLIGHT_SHMFD");
    VHOSTD_TRY(expect_fds(m, 1));
    VHOSTD_ASSIGN_OR_RETURN(InflightDesc d, payload_as<InflightDesc>(m));
    VHOSTD_TRY(check_inflight_desc(d));
    uint64_t need = virtio::inflight_queue_bytes(d.queue_size) * d.num_queues;
    if (d.mmap_size < need)
        return make_error(Errc::kInvalid, "inflight buffer of {} bytes, {} queues of {} need {}", d.mmap_size,
                          d.num_queues, d.queue_size, need);
    for (auto& v : vrings_) {
        if (v.started) return make_error(Errc::kState, "SET_INFLIGHT_FD while rings run");
    }
    VHOSTD_ASSIGN_OR_RETURN(inflight_, shm::SharedBuffer::map(m.fds[0].get(), d.mmap_offset, need));
    inflight_desc_ = d;
    VLOG_INFO("{}: inflight tracking on ({} queues of {})", name_, uint16_t{d.num_queues}, uint16_t{d.queue_size});
    return ok_status();
}

uint64_t VhostUserDevice::offered_protocol_features() const {
    uint64_t f = kBaseProtocolFeatures | dev_->extra_protocol_features();
    if (dev_->supports_inflight()) f |= pf::kInflightShmfd;
    if (dev_->net_control()) f |= pf::kNetMtu | pf::kRarp;
    return f;
}

void VhostUserDevice::reset_session() {
    reset_vrings();  // queues drained before memory goes
    dev_->session_ended();
    mem_ = shm::MemoryMap::empty();
    backend_req_.reset();
    inflight_.reset();
    inflight_created_.reset();
    region_refs_.clear();
    acked_features_ = 0;
    acked_protocol_ = 0;
    features_set_ = false;
    status_ = 0;
    dev_->set_features(0);
}

Status VhostUserDevice::apply_memory(std::shared_ptr<const shm::MemoryMap> map) {
    // Running queues drain and re-translate their rings on the new map before the old one
    // can be unmapped (it is freed when the last reference goes).
    Status st = dev_->set_memory(map);
    mem_ = std::move(map);
    if (!st.ok()) {
        for (uint32_t i = 0; i < vrings_.size(); ++i) {
            if (vrings_[i].started && !dev_->queue_running(i)) vrings_[i].started = false;
        }
        return st;
    }
    for (uint32_t i = 0; i < vrings_.size(); ++i) VHOSTD_TRY(try_start(i));
    return ok_status();
}

Status VhostUserDevice::set_mem_table(Message& m) {
    if (m.hdr.size < sizeof(MemTableHeader)) return make_error(Errc::kInvalid, "SET_MEM_TABLE too short");
    MemTableHeader h;
    std::memcpy(&h, m.payload.data(), sizeof(h));
    if (h.nregions > kMaxMemTableRegions)
        return make_error(Errc::kInvalid, "SET_MEM_TABLE with {} regions (max {})", h.nregions, kMaxMemTableRegions);
    if (m.hdr.size != sizeof(h) + h.nregions * sizeof(MemRegion))
        return make_error(Errc::kInvalid, "SET_MEM_TABLE size {} does not match {} regions", m.hdr.size, h.nregions);
    VHOSTD_TRY(expect_fds(m, h.nregions));
    std::vector<std::shared_ptr<const shm::Region>> regions;
    for (uint32_t i = 0; i < h.nregions; ++i) {
        MemRegion r;
        std::memcpy(&r, m.payload.data() + sizeof(h) + i * sizeof(MemRegion), sizeof(r));
        VHOSTD_ASSIGN_OR_RETURN(auto region, shm::Region::map(to_region_desc(r), m.fds[i].get()));
        regions.push_back(std::move(region));
    }
    VHOSTD_ASSIGN_OR_RETURN(auto map, shm::MemoryMap::build(std::move(regions)));
    VLOG_INFO("{}: memory table with {} regions", name_, uint32_t{h.nregions});
    region_refs_.clear();
    for (const auto& reg : map->regions()) region_refs_[reg->desc().guest_phys_addr] = 1;
    return apply_memory(std::move(map));
}

Status VhostUserDevice::add_mem_reg(Message& m) {
    VHOSTD_ASSIGN_OR_RETURN(SingleMemRegion r, payload_as<SingleMemRegion>(m));
    VHOSTD_TRY(expect_fds(m, 1));
    // QEMU (before 8.1) sends ADD/REM_MEM_REG once per vhost device, and a multi-queue net
    // device is one vhost device per queue pair on the same socket: the same region arrives
    // several times. An identical region is counted, not mapped again; REM_MEM_REG unmaps it
    // when the last reference goes.
    for (const auto& reg : mem_->regions()) {
        const auto& d = reg->desc();
        if (d.guest_phys_addr == r.region.guest_phys_addr && d.memory_size == r.region.memory_size &&
            d.userspace_addr == r.region.userspace_addr && d.mmap_offset == r.region.mmap_offset) {
            ++region_refs_[d.guest_phys_addr];
            VLOG_DEBUG("{}: memory region gpa={:#x} added again ({} references)", name_, uint64_t{d.guest_phys_addr},
                       region_refs_[d.guest_phys_addr]);
            return ok_status();
        }
    }
    if (mem_->region_count() >= kMaxMemSlots) return make_error(Errc::kOutOfRange, "all memory slots in use");
    VHOSTD_ASSIGN_OR_RETURN(auto region, shm::Region::map(to_region_desc(r.region), m.fds[0].get()));
    std::vector<std::shared_ptr<const shm::Region>> regions(mem_->regions().begin(), mem_->regions().end());
    regions.push_back(std::move(region));
    VHOSTD_ASSIGN_OR_RETURN(auto map, shm::MemoryMap::build(std::move(regions)));
    VLOG_INFO("{}: added memory region gpa={:#x} size={:#x}", name_,
               uint64_t{r.region.guest_phys_addr}, uint64_t{r.region.memory_size});
    region_refs_[r.region.guest_phys_addr] = 1;
    return apply_memory(std::move(map));
}

Status VhostUserDevice::rem_mem_reg(Message& m) {
    VHOSTD_ASSIGN_OR_RETURN(SingleMemRegion r, payload_as<SingleMemRegion>(m));
    if (m.nfds > 1) return make_error(Errc::kInvalid, "REM_MEM_REG with {} fds", m.nfds);
    std::vector<std::shared_ptr<const shm::Region>> regions;
    bool found = false;
    for (const auto& reg : mem_->regions()) {
        const auto& d = reg->desc();
        if (!found && d.guest_phys_addr == r.region.guest_phys_addr && d.memory_size == r.region.memory_size &&
            d.userspace_addr == r.region.userspace_addr) {
            found = true;
            continue;
        }
        regions.push_back(reg);
    }
    if (!found)
        return make_error(Errc::kInvalid, "REM_MEM_REG: no region at gpa {:#x} size {:#x}", r.region.guest_phys_addr,
                          r.region.memory_size);
    if (auto it = region_refs_.find(r.region.guest_phys_addr); it != region_refs_.end() && it->second > 1) {
        --it->second;  // another vhost device of this frontend still uses it
        return ok_status();
    }
    region_refs_.erase(r.region.guest_phys_addr);
    VHOSTD_ASSIGN_OR_RETURN(auto map, shm::MemoryMap::build(std::move(regions)));
    VLOG_INFO("{}: removed memory region gpa={:#x} size={:#x}", name_, uint64_t{r.region.guest_phys_addr},
              uint64_t{r.region.memory_size});
    return apply_memory(std::move(map));
}

}  // namespace vhostd::vhost
