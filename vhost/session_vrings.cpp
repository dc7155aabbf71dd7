// Session: the per-vring messages, and starting and stopping queues on the device. A ring
// starts once it has a size, addresses, a kick (fd or "poll"), memory and features, and is
// enabled (or enabled by default without PROTOCOL_FEATURES); any change to those stops it first.
#include <fcntl.h>

#include "core/checked.hpp"
#include "core/log.hpp"
#include "vhost/session.hpp"
#include "virtio/packed_queue.hpp"

namespace vhostd::vhost {

namespace {

UniqueFd dup_fd(int fd) { return UniqueFd(fd >= 0 ? fcntl(fd, F_DUPFD_CLOEXEC, 0) : -1); }

}  // namespace

Status Session::on_set_vring_num(Message& m, Reply&) {
    const auto s = payload_as<VringState>(m);
    VHOSTD_ASSIGN_OR_RETURN(uint32_t i, vring_index(s.index));
    if (!is_pow2(s.num) || s.num > virtio::kMaxQueueSize)
        return make_error(Errc::kInvalid, "vring {} size {} is not a power of two <= {}", i, s.num, virtio::kMaxQueueSize);
    if (vrings_[i].started) return make_error(Errc::kState, "SET_VRING_NUM on running vring {}", i);
    vrings_[i].num = s.num;
    return ok_status();
}

Status Session::on_set_vring_addr(Message& m, Reply&) {
    const auto a = payload_as<VringAddr>(m);
    VHOSTD_ASSIGN_OR_RETURN(uint32_t i, vring_index(a.index));
    if (a.flags & ~kVringAddrFlagLog) return make_error(Errc::kInvalid, "vring {} addr flags {:#x}", i, a.flags);
    const bool log = (a.flags & kVringAddrFlagLog) != 0;
    Vring& v = vrings_[i];
    // The used ring is logged at log_guest_addr onward: the whole ring must fit below 2^64 (the
    // size is checked against the log when a page is marked).
    const uint64_t log_addr = a.log_guest_addr;
    if (log && !checked_add<uint64_t>(log_addr, virtio::used_ring_bytes(virtio::kMaxQueueSize)))
        return make_error(Errc::kInvalid, "vring {} log address {:#x} runs past the address space", i, log_addr);
    if (v.started && v.addr_set && v.desc_addr == a.desc_user_addr && v.avail_addr == a.avail_user_addr &&
        v.used_addr == a.used_user_addr) {
        // Only the log flag or address changes (QEMU turning logging on or off for a migration):
        // the ring keeps running.
        v.log = log;
        v.log_addr = log_addr;
        dev_->set_logging(i, log_settings(i));
        return ok_status();
    }
    if (v.started) stop_vring(i);  // re-translate on restart
    v.desc_addr = a.desc_user_addr;
    v.avail_addr = a.avail_user_addr;
    v.used_addr = a.used_user_addr;
    v.log = log;
    v.log_addr = log_addr;
    v.addr_set = true;
    return try_start(i);
}

Status Session::on_set_vring_base(Message& m, Reply&) {
    const auto s = payload_as<VringState>(m);
    VHOSTD_ASSIGN_OR_RETURN(uint32_t i, vring_index(s.index));
    // A packed ring's base carries both positions (checked against the ring size at start).
    if (s.num > 0xffff && !(acked_features_ & virtio::kFRingPacked))
        return make_error(Errc::kInvalid, "vring {} base {} too large for a split ring", i, s.num);
    if (vrings_[i].started) return make_error(Errc::kState, "SET_VRING_BASE on running vring {}", i);
    vrings_[i].base = s.num;
    return ok_status();
}

Status Session::on_get_vring_base(Message& m, Reply& reply) {
    const auto s = payload_as<VringState>(m);
    VHOSTD_ASSIGN_OR_RETURN(uint32_t i, vring_index(s.index));
    stop_vring(i);  // drains in-flight requests first
    Vring& v = vrings_[i];
    v.kick.reset();
    v.kick_set = false;
    v.call.reset();
    v.err.reset();
    put(reply.payload, VringState{i, v.base});
    return ok_status();
}

Status Session::on_set_vring_enable(Message& m, Reply&) {
    const auto s = payload_as<VringState>(m);
    VHOSTD_ASSIGN_OR_RETURN(uint32_t i, vring_index(s.index));
    if (s.num > 1) return make_error(Errc::kInvalid, "SET_VRING_ENABLE value {}", s.num);
    vrings_[i].enabled = s.num == 1;
    if (!vrings_[i].enabled) {
        stop_vring(i);
        return ok_status();
    }
    return try_start(i);
}

Result<Session::VringFd> Session::take_vring_fd(Message& m) {
    const uint64_t v = payload_as<le64>(m);
    if (v & ~(kVringIndexMask | kVringNoFdFlag))
        return make_error(Errc::kInvalid, "{}: reserved bits set in {:#x}", request_name(m.request()), v);
    VHOSTD_ASSIGN_OR_RETURN(uint32_t i, vring_index(v & kVringIndexMask));
    // The fd count matches the no-fd flag (validate_message).
    return VringFd{i, (v & kVringNoFdFlag) ? UniqueFd() : std::move(m.fds[0])};
}

Status Session::on_set_vring_kick(Message& m, Reply&) {
    VHOSTD_ASSIGN_OR_RETURN(VringFd f, take_vring_fd(m));
    Vring& vr = vrings_[f.index];
    if (vr.started) stop_vring(f.index);
    vr.kick = std::move(f.fd);
    vr.kick_set = true;  // with no fd, the queue is polled
    // Per the spec, a ring starts when its kick fd arrives.
    return try_start(f.index);
}

Status Session::on_set_vring_call(Message& m, Reply&) {
    VHOSTD_ASSIGN_OR_RETURN(VringFd f, take_vring_fd(m));
    Vring& vr = vrings_[f.index];
    // The running queue switches to the new fd before the old one is closed.
    if (vr.started) dev_->set_call_fd(f.index, f.fd.get());
    vr.call = std::move(f.fd);
    return ok_status();
}

Status Session::on_set_vring_err(Message& m, Reply&) {
    VHOSTD_ASSIGN_OR_RETURN(VringFd f, take_vring_fd(m));
    Vring& vr = vrings_[f.index];
    const bool was = vr.started;
    if (was) stop_vring(f.index);
    vr.err = std::move(f.fd);
    return was ? try_start(f.index) : ok_status();
}

Status Session::try_start(uint32_t i) {
    Vring& v = vrings_[i];
    if (v.started || v.num == 0 || !v.addr_set || !v.kick_set || mem_.map()->region_count() == 0) return ok_status();
    if (!features_set_) return ok_status();  // SET_FEATURES starts waiting rings
    if (!v.enabled && !rings_enabled_by_default()) return ok_status();
    virtio::QueueStart s;
    s.layout = virtio::QueueLayout{static_cast<uint16_t>(v.num), v.desc_addr, v.avail_addr, v.used_addr};
    s.base = v.base;
    s.features = acked_features_ & ~kFLogAll;
    s.mem = mem_.map();
    s.log = log_settings(i);
    if (v.kick.valid()) {
        s.kick = dup_fd(v.kick.get());
        if (!s.kick.valid()) return sys_error("dup kick fd");
    }
    s.call = v.call.get();
    s.err = v.err.get();
    VHOSTD_ASSIGN_OR_RETURN(s.inflight, inflight_.queue(i, v.num, (acked_features_ & virtio::kFRingPacked) != 0));
    if (s.inflight != nullptr) s.inflight_owner = inflight_.owner();
    VHOSTD_TRY(dev_->start_queue(i, std::move(s)));
    v.started = true;
    VLOG_DEBUG("{}: vring {} started (size {}, base {})", name_, i, v.num, v.base);
    return ok_status();
}

void Session::stop_vring(uint32_t i) {
    Vring& v = vrings_[i];
    if (!v.started) return;
    v.base = dev_->stop_queue(i);
    v.started = false;
    VLOG_DEBUG("{}: vring {} stopped at {}", name_, i, v.base);
}

void Session::reset_vrings() {
    for (uint32_t i = 0; i < vrings_.size(); ++i) stop_vring(i);
    for (auto& v : vrings_) v = Vring{};
}

void Session::reset_session() {
    reset_vrings();  // queues drained before memory goes
    dev_->session_ended();
    mem_.reset();
    {
        std::lock_guard lk(backend_mu_);
        backend_req_.reset();
        backend_protocol_ = 0;
    }
    inflight_.reset();
    log_.reset();
    acked_features_ = 0;
    acked_protocol_ = 0;
    features_set_ = false;
    status_ = 0;
    dev_->set_features(0);
}

}  // namespace vhostd::vhost
