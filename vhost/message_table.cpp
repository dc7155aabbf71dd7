#include "vhost/message_table.hpp"

#include <cstring>

namespace vhostd::vhost {

namespace {

template <typename T>
T read_prefix(std::span<const uint8_t> body) {  // callers checked body.size() >= sizeof(T)
    T v;
    std::memcpy(&v, body.data(), sizeof(T));
    return v;
}

const char* fd_rule_text(FdRule r) {
    switch (r) {
        case FdRule::kNone: return "none";
        case FdRule::kOne: return "exactly 1";
        case FdRule::kNoFdFlag: return "1 unless the no-fd flag is set";
        case FdRule::kPerRegion: return "1 per region";
        case FdRule::kAtMostOne: return "at most 1";
    }
    return "?";
}

Status check_payload(const MessageInfo& info, const Message& m) {
    const uint32_t size = m.hdr.size;
    switch (info.payload) {
        case PayloadRule::kIgnored:
            return ok_status();
        case PayloadRule::kExact:
            if (size != info.size)
                return make_error(Errc::kInvalid, "{}: payload is {} bytes, expected {}", info.name, size, info.size);
            return ok_status();
        case PayloadRule::kAtLeast:
            if (size < info.size)
                return make_error(Errc::kInvalid, "{}: payload is {} bytes, expected at least {}", info.name, size,
                                  info.size);
            if (Status st = info.check(m.body()); !st.ok()) {
                Error e = std::move(st).take_error();
                e.context = fmt::format("{}: {}", info.name, e.context);
                return e;
            }
            return ok_status();
    }
    return make_error(Errc::kInvalid, "{}: bad payload rule", info.name);
}

Status check_fds(const MessageInfo& info, const Message& m) {
    size_t want = 0;
    switch (info.fds) {
        case FdRule::kNone: want = 0; break;
        case FdRule::kOne: want = 1; break;
        case FdRule::kNoFdFlag:
            want = (read_prefix<le64>(m.body()) & kVringNoFdFlag) ? 0 : 1;  // payload is exactly a u64
            break;
        case FdRule::kPerRegion:
            want = read_prefix<MemTableHeader>(m.body()).nregions;  // check_mem_table bounded it
            break;
        case FdRule::kAtMostOne:
            if (m.nfds > 1)
                return make_error(Errc::kInvalid, "{}: {} fds attached, expected {}", info.name, m.nfds,
                                  fd_rule_text(info.fds));
            return ok_status();
    }
    if (m.nfds != want)
        return make_error(Errc::kInvalid, "{}: {} fds attached, expected {} ({})", info.name, m.nfds, want,
                          fd_rule_text(info.fds));
    return ok_status();
}

}  // namespace

Status check_mem_table(std::span<const uint8_t> body) {
    auto h = read_prefix<MemTableHeader>(body);
    if (h.nregions > kMaxMemTableRegions)
        return make_error(Errc::kInvalid, "{} regions (max {})", h.nregions, kMaxMemTableRegions);
    // nregions <= 8: no overflow.
    if (body.size() != sizeof(h) + h.nregions * sizeof(MemRegion))
        return make_error(Errc::kInvalid, "payload of {} bytes does not match {} regions", body.size(), h.nregions);
    return ok_status();
}

Status check_config(std::span<const uint8_t> body) {
    auto ch = read_prefix<ConfigHeader>(body);
    if (ch.size > kMaxConfigSize || body.size() != sizeof(ch) + ch.size)
        return make_error(Errc::kInvalid, "config size {} does not match payload {}", ch.size, body.size());
    return ok_status();
}

Status check_backend_req_fd(std::span<const uint8_t> body) {
    if (body.size() != 0 && body.size() != sizeof(uint64_t))
        return make_error(Errc::kInvalid, "payload is {} bytes, expected 0 or 8", body.size());
    return ok_status();
}

Result<const MessageInfo*> validate_message(const Message& m, uint64_t acked_protocol_features) {
    const MessageInfo* info = message_info(m.hdr.request);
    if (info == nullptr || !info->supported)
        return make_error(Errc::kUnsupported, "request {} ({}) is not supported", m.hdr.request,
                          request_name(m.request()));
    // Before the feature check: a message that never takes fds but carries some is malformed
    // whatever was negotiated.
    if (info->fds == FdRule::kNone && m.nfds != 0)
        return make_error(Errc::kInvalid, "{} carries {} unexpected fds", info->name, m.nfds);
    if (info->feature != 0 && !(acked_protocol_features & info->feature))
        return make_error(Errc::kState, "{} without the {} protocol feature", info->name, info->feature_name);
    VHOSTD_TRY(check_payload(*info, m));
    VHOSTD_TRY(check_fds(*info, m));
    return info;
}

const char* request_name(Request r) {
    const MessageInfo* info = message_info(static_cast<uint32_t>(r));
    return info != nullptr ? info->name : "UNKNOWN";
}

}  // namespace vhostd::vhost
