#include "app/device_spec.hpp"

#include <array>
#include <charconv>
#include <map>

#include "backends/file_backend.hpp"
#include "backends/nbd_backend.hpp"

namespace vhostd::app {

namespace {

Result<uint64_t> parse_uint(const std::string& key, const std::string& v) {
    uint64_t out = 0;
    auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
    if (ec != std::errc() || p != v.data() + v.size() || v.empty())
        return make_error(Errc::kInvalid, "{}={}: not a number", key, v);
    return out;
}

Result<bool> parse_bool(const std::string& key, const std::string& v) {
    if (v == "on" || v == "true" || v == "yes" || v == "1") return true;
    if (v == "off" || v == "false" || v == "no" || v == "0") return false;
    return make_error(Errc::kInvalid, "{}={}: expected on or off", key, v);
}

// socket-mode / socket-group; false: not one of them.
Result<bool> parse_socket_key(const std::string& k, const std::string& v, SocketAccess& a) {
    if (k == "socket-mode") {
        uint32_t m = 0;
        auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), m, 8);
        if (v.empty() || ec != std::errc() || p != v.data() + v.size() || m > 0777 || (m & 0600) != 0600)
            return make_error(Errc::kInvalid, "socket-mode={}: an octal mode of at most 0777 with the owner's rw (0600)", v);
        a.mode = m;
        return true;
    }
    if (k == "socket-group") {
        if (v.empty() || v.size() > 32 ||
            v.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") != std::string::npos)
            return make_error(Errc::kInvalid, "socket-group={}: a group name or number (1..32 of A-Z a-z 0-9 _ . -)", v);
        a.group = v;
        return true;
    }
    return false;
}

Status check_access(const SocketAccess& a, bool client) {
    if (client && (a.mode != 0 || !a.group.empty()))
        return make_error(Errc::kInvalid, "socket-mode= and socket-group= apply to a socket vhostd listens on, not client=on");
    return ok_status();
}

}  // namespace

Result<uint64_t> parse_size(const std::string& text) {
    if (text.empty()) return make_error(Errc::kInvalid, "empty size");
    uint64_t mult = 1;
    std::string num = text;
    switch (text.back()) {
        case 'k': case 'K': mult = 1ull << 10; break;
        case 'm': case 'M': mult = 1ull << 20; break;
        case 'g': case 'G': mult = 1ull << 30; break;
        case 't': case 'T': mult = 1ull << 40; break;
        default: break;
    }
    if (mult != 1) num.pop_back();
    VHOSTD_ASSIGN_OR_RETURN(uint64_t n, parse_uint("size", num));
    uint64_t r = 0;
    if (__builtin_mul_overflow(n, mult, &r)) return make_error(Errc::kInvalid, "size {} too large", text);
    return r;
}

Result<std::vector<int>> parse_cpu_list(const std::string& text) {
    std::vector<int> cpus;
    size_t pos = 0;
    while (pos <= text.size()) {
        size_t comma = text.find(',', pos);
        std::string part = text.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
        size_t dash = part.find('-');
        if (dash == std::string::npos) {
            VHOSTD_ASSIGN_OR_RETURN(uint64_t c, parse_uint("cpu", part));
            cpus.push_back(static_cast<int>(c));
        } else {
            VHOSTD_ASSIGN_OR_RETURN(uint64_t a, parse_uint("cpu", part.substr(0, dash)));
            VHOSTD_ASSIGN_OR_RETURN(uint64_t b, parse_uint("cpu", part.substr(dash + 1)));
            if (b < a || b - a > 1024) return make_error(Errc::kInvalid, "bad cpu range {}", part);
            for (uint64_t c = a; c <= b; ++c) cpus.push_back(static_cast<int>(c));
        }
        if (comma == std::string::npos) break;
        pos = comma + 1;
    }
    return cpus;
}

namespace {

// "k=v,k=v" into a map; duplicate keys and items without '=' are errors.
Result<std::map<std::string, std::string>> parse_kv(const std::string& text) {
    std::map<std::string, std::string> kv;
    size_t pos = 0;
    while (pos < text.size()) {
        size_t comma = text.find(',', pos);
        std::string item = text.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
        pos = comma == std::string::npos ? text.size() : comma + 1;
        if (item.empty()) continue;
        size_t eq = item.find('=');
        if (eq == std::string::npos) return make_error(Errc::kInvalid, "'{}': expected key=value", item);
        std::string k = item.substr(0, eq);
        if (kv.count(k)) return make_error(Errc::kInvalid, "'{}' given twice", k);
        kv[k] = item.substr(eq + 1);
    }
    return kv;
}

}  // namespace

Result<std::array<uint8_t, 6>> parse_mac(const std::string& text) {
    std::array<uint8_t, 6> mac{};
    auto bad = [&] { return make_error(Errc::kInvalid, "mac={}: expected six hex bytes like 52:54:00:12:34:56", text); };
    if (text.size() != 17) return bad();
    for (size_t i = 0; i < 6; ++i) {
        if (i > 0 && text[3 * i - 1] != ':') return bad();
        unsigned v = 0;
        auto [p, ec] = std::from_chars(text.data() + 3 * i, text.data() + 3 * i + 2, v, 16);
        if (ec != std::errc() || p != text.data() + 3 * i + 2) return bad();
        mac[i] = static_cast<uint8_t>(v);
    }
    if (mac[0] & 1) return make_error(Errc::kInvalid, "mac={} is a multicast address", text);
    if (mac == std::array<uint8_t, 6>{}) return make_error(Errc::kInvalid, "mac={} is all zeroes", text);
    return mac;
}

Status check_device_id(const std::string& id) {
    if (id.empty() || id.size() > 64 ||
        id.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") != std::string::npos)
        return make_error(Errc::kInvalid, "id '{}' must be 1..64 characters of A-Z a-z 0-9 _ . -", id);
    return ok_status();
}

Result<bool> parse_qos_key(const std::string& k, const std::string& v, QosSpec& q) {
    uint64_t* iops = k == "iops" ? &q.iops : k == "read-iops" ? &q.read_iops : k == "write-iops" ? &q.write_iops : nullptr;
    uint64_t* bps = k == "bps" ? &q.bps : k == "read-bps" ? &q.read_bps : k == "write-bps" ? &q.write_bps : nullptr;
    if (iops != nullptr) {
        VHOSTD_ASSIGN_OR_RETURN(*iops, parse_uint(k, v));
        if (*iops > kMaxQosIops) return make_error(Errc::kInvalid, "{}={} is above {}", k, v, kMaxQosIops);
        return true;
    }
    if (bps != nullptr) {
        auto b = parse_size(v);
        if (!b.ok()) return make_error(Errc::kInvalid, "{}={}: not a number of bytes per second", k, v);
        if (*b > kMaxQosBps) return make_error(Errc::kInvalid, "{}={} is above {}", k, v, kMaxQosBps);
        *bps = *b;
        return true;
    }
    if (k == "burst-ms") {
        VHOSTD_ASSIGN_OR_RETURN(uint64_t ms, parse_uint(k, v));
        if (ms > 60000) return make_error(Errc::kInvalid, "burst-ms={} must be 0..60000", ms);
        q.burst_ms = static_cast<uint32_t>(ms);
        return true;
    }
    return false;
}

Result<NetSpec> parse_net_spec(const std::string& text) {
    VHOSTD_ASSIGN_OR_RETURN(auto kv, parse_kv(text));
    return parse_net_keys(kv);
}

Result<NetSpec> parse_net_keys(const KeyMap& kv) {
    NetSpec s;
    for (auto& [k, v] : kv) {
        if (k == "id") {
            VHOSTD_TRY(check_device_id(v));
            s.id = v;
        } else if (k == "socket") s.socket = v;
        else if (k == "client") { VHOSTD_ASSIGN_OR_RETURN(s.client, parse_bool(k, v)); }
        else if (k == "tap") {
            if (v.empty() || v.size() > 15 || v.find_first_of("/ ") != std::string::npos)
                return make_error(Errc::kInvalid, "tap={}: an interface name of 1..15 characters", v);
            s.tap = v;
        } else if (k == "queues") {
            VHOSTD_ASSIGN_OR_RETURN(uint64_t q, parse_uint(k, v));
            if (q == 0 || q > kMaxNetQueuePairs)
                return make_error(Errc::kInvalid, "queues={} must be 1..{} (queue pairs)", q, kMaxNetQueuePairs);
            s.queue_pairs = static_cast<uint32_t>(q);
        } else if (k == "mac") {
            VHOSTD_ASSIGN_OR_RETURN(s.mac, parse_mac(v));
            s.mac_set = true;
        } else if (k == "mtu") {
            VHOSTD_ASSIGN_OR_RETURN(uint64_t m, parse_uint(k, v));
            if (m < 68 || m > 65517) return make_error(Errc::kInvalid, "mtu={} must be 68..65517", m);
            s.mtu = static_cast<uint32_t>(m);
        } else {
            VHOSTD_ASSIGN_OR_RETURN(bool socket_key, parse_socket_key(k, v, s.access));
            if (!socket_key) return make_error(Errc::kInvalid, "unknown key '{}'", k);
        }
    }
    if (s.socket.empty()) return make_error(Errc::kInvalid, "socket= is required");
    if (s.tap.empty()) return make_error(Errc::kInvalid, "tap= is required");
    VHOSTD_TRY(check_access(s.access, s.client));
    return s;
}

Result<BlkSpec> parse_blk_spec(const std::string& text) {
    VHOSTD_ASSIGN_OR_RETURN(auto kv, parse_kv(text));
    return parse_blk_keys(kv);
}

Result<BlkSpec> parse_blk_keys(const KeyMap& kv) {
    BlkSpec s;
    for (auto& [k, v] : kv) {
        if (k == "id") {
            VHOSTD_TRY(check_device_id(v));
            s.id = v;
        } else if (k == "socket") s.socket = v;
        else if (k == "client") { VHOSTD_ASSIGN_OR_RETURN(s.client, parse_bool(k, v)); }
        else if (k == "backend") s.backend = v;
        else if (k == "path") s.path = v;
        else if (k == "uri") s.uri = v;
        else if (k == "volume") s.volume = v;
        else if (k == "pool") s.pool = v;
        else if (k == "image") s.image = v;
        else if (k == "snap") s.snap = v;
        else if (k == "conf") s.conf = v;
        else if (k == "user") s.user = v;
        else if (k == "timeout") {
            VHOSTD_ASSIGN_OR_RETURN(uint64_t t, parse_uint(k, v));
            if (t > backends::NbdOptions::kMaxTimeout)
                return make_error(Errc::kInvalid, "timeout={} must be 0..{} seconds (0: wait forever)", t,
                                  backends::NbdOptions::kMaxTimeout);
            s.timeout = static_cast<uint32_t>(t);
            s.timeout_set = true;
        }
        else if (k == "size") { VHOSTD_ASSIGN_OR_RETURN(s.size, parse_size(v)); }
        else if (k == "queues") {
            VHOSTD_ASSIGN_OR_RETURN(uint64_t q, parse_uint(k, v));
            if (q == 0 || q > kMaxQueues) return make_error(Errc::kInvalid, "queues={} must be 1..{}", q, kMaxQueues);
            s.queues = static_cast<uint32_t>(q);
        } else if (k == "readonly") { VHOSTD_ASSIGN_OR_RETURN(s.readonly, parse_bool(k, v)); }
        else if (k == "direct") { VHOSTD_ASSIGN_OR_RETURN(s.direct, parse_bool(k, v)); }
        else if (k == "fixed") { VHOSTD_ASSIGN_OR_RETURN(s.fixed, parse_bool(k, v)); }
        else if (k == "block-size") {
            VHOSTD_ASSIGN_OR_RETURN(uint64_t b, parse_uint(k, v));
            if (b != 512 && b != 4096) return make_error(Errc::kInvalid, "block-size={} must be 512 or 4096", b);
            s.block_size = static_cast<uint32_t>(b);
        } else if (k == "submit-batch") {
            VHOSTD_ASSIGN_OR_RETURN(uint64_t n, parse_uint(k, v));
            if (n == 0 || n > backends::FileOptions::kMaxSubmitBatch)
                return make_error(Errc::kInvalid, "submit-batch={} must be 1..{}", n, backends::FileOptions::kMaxSubmitBatch);
            s.submit_batch = static_cast<uint32_t>(n);
        } else if (k == "serial") {
            if (v.size() > 20) return make_error(Errc::kInvalid, "serial '{}' is longer than 20 bytes", v);
            s.serial = v;
        } else {
            VHOSTD_ASSIGN_OR_RETURN(bool qos_key, parse_qos_key(k, v, s.qos));
            bool socket_key = false;
            if (!qos_key) { VHOSTD_ASSIGN_OR_RETURN(socket_key, parse_socket_key(k, v, s.access)); }
            if (!qos_key && !socket_key) return make_error(Errc::kInvalid, "unknown key '{}'", k);
        }
    }
    if (s.socket.empty()) return make_error(Errc::kInvalid, "socket= is required");
    VHOSTD_TRY(check_access(s.access, s.client));
    if (!s.volume.empty() && s.backend == "file" && kv.count("backend") == 0) s.backend = "volume";
    if (s.backend != "volume" && !s.volume.empty()) return make_error(Errc::kInvalid, "volume= only applies to backend=volume");
    if (s.backend != "nbd" && !s.uri.empty()) return make_error(Errc::kInvalid, "uri= only applies to backend=nbd");
    if (s.backend != "nvme" && s.fixed) return make_error(Errc::kInvalid, "fixed= only applies to backend=nvme");
    if (s.backend != "nbd" && s.backend != "rbd" && s.timeout_set)
        return make_error(Errc::kInvalid, "timeout= only applies to backend=nbd and backend=rbd");
    if (s.backend != "rbd" && !(s.pool.empty() && s.image.empty() && s.snap.empty() && s.conf.empty() && s.user.empty()))
        return make_error(Errc::kInvalid, "pool=, image=, snap=, conf= and user= only apply to backend=rbd");
    if (s.backend == "file") {
        if (s.path.empty()) return make_error(Errc::kInvalid, "path= is required for a file/block device backend");
        if (s.size != 0) return make_error(Errc::kInvalid, "size= only applies to backend=null");
    } else if (s.backend == "rbd") {
        if (s.pool.empty() || s.image.empty()) return make_error(Errc::kInvalid, "backend=rbd needs pool= and image=");
        for (const std::string* v : {&s.pool, &s.image, &s.snap, &s.user}) {
            if (v->find_first_of("/@ ") != std::string::npos)
                return make_error(Errc::kInvalid, "'{}': pool, image, snapshot and user names have no '/', '@' or ' '", *v);
        }
        if (!s.path.empty() || s.size != 0 || s.direct || s.submit_batch != 0)
            return make_error(Errc::kInvalid, "path=, size=, direct= and submit-batch= do not apply to backend=rbd");
    } else if (s.backend == "nbd") {
        if (s.uri.empty()) return make_error(Errc::kInvalid, "backend=nbd needs uri= (nbd://HOST[:PORT]/EXPORT, nbd+unix:///EXPORT?socket=PATH, nbds://...)");
        if (!s.path.empty() || s.size != 0 || s.direct || s.submit_batch != 0)
            return make_error(Errc::kInvalid, "path=, size=, direct= and submit-batch= do not apply to backend=nbd");
    } else if (s.backend == "volume") {
        auto slash = s.volume.find('/');
        if (slash == std::string::npos || slash == 0 || slash + 1 == s.volume.size() || s.volume.find('@') != std::string::npos ||
            s.volume.find('/', slash + 1) != std::string::npos)
            return make_error(Errc::kInvalid, "volume= takes POOL/NAME (a volume, not a snapshot: clone it first)");
        if (!s.path.empty() || s.size != 0 || s.direct || s.submit_batch != 0 || s.block_size != 0)
            return make_error(Errc::kInvalid, "path=, size=, direct=, submit-batch= and block-size= do not apply to a volume");
    } else if (s.backend == "nvme") {
        if (s.path.empty()) return make_error(Errc::kInvalid, "backend=nvme needs path=/dev/ngXnY (an NVMe namespace's generic device)");
        if (s.size != 0 || s.direct || s.submit_batch != 0 || s.block_size != 0)
            return make_error(Errc::kInvalid, "size=, direct=, submit-batch= and block-size= do not apply to backend=nvme (the namespace's LBA size is used)");
    } else if (s.backend == "null") {
        if (s.size == 0) return make_error(Errc::kInvalid, "backend=null needs size=");
        if (!s.path.empty()) return make_error(Errc::kInvalid, "path= does not apply to backend=null");
        if (s.direct) return make_error(Errc::kInvalid, "direct= does not apply to backend=null");
        if (s.submit_batch != 0) return make_error(Errc::kInvalid, "submit-batch= does not apply to backend=null");
    } else {
        return make_error(Errc::kInvalid, "unknown backend '{}' (file, nvme, null, nbd, rbd or volume)", s.backend);
    }
    if (s.queues == 0) s.queues = kDefaultQueues;
    return s;
}

namespace {
const char* on_off(bool b) { return b ? "on" : "off"; }
void put_access(KeyMap& kv, const SocketAccess& a) {
    if (a.mode != 0) kv["socket-mode"] = fmt::format("{:04o}", a.mode);
    if (!a.group.empty()) kv["socket-group"] = a.group;
}
}  // namespace

KeyMap to_keys(const BlkSpec& s) {
    KeyMap kv;
    if (!s.id.empty()) kv["id"] = s.id;
    kv["socket"] = s.socket;
    if (s.client) kv["client"] = on_off(true);
    put_access(kv, s.access);
    if (s.backend != "file" && s.backend != "volume") kv["backend"] = s.backend;
    if (!s.volume.empty()) kv["volume"] = s.volume;
    if (!s.path.empty()) kv["path"] = s.path;
    if (s.size != 0) kv["size"] = std::to_string(s.size);
    if (!s.uri.empty()) kv["uri"] = s.uri;
    for (auto [k, v] : {std::pair{"pool", &s.pool}, {"image", &s.image}, {"snap", &s.snap}, {"conf", &s.conf},
                        {"user", &s.user}}) {
        if (!v->empty()) kv[k] = *v;
    }
    if (s.timeout_set) kv["timeout"] = std::to_string(s.timeout);
    kv["queues"] = std::to_string(s.queues);
    if (s.readonly) kv["readonly"] = on_off(true);
    if (s.direct) kv["direct"] = on_off(true);
    if (s.fixed) kv["fixed"] = on_off(true);
    if (s.block_size != 0) kv["block-size"] = std::to_string(s.block_size);
    if (!s.serial.empty()) kv["serial"] = s.serial;
    if (s.submit_batch != 0) kv["submit-batch"] = std::to_string(s.submit_batch);
    auto put = [&](const char* k, uint64_t v) {
        if (v != 0) kv[k] = std::to_string(v);
    };
    put("iops", s.qos.iops);
    put("bps", s.qos.bps);
    put("read-iops", s.qos.read_iops);
    put("write-iops", s.qos.write_iops);
    put("read-bps", s.qos.read_bps);
    put("write-bps", s.qos.write_bps);
    put("burst-ms", s.qos.burst_ms);
    return kv;
}

KeyMap to_keys(const NetSpec& s) {
    KeyMap kv;
    if (!s.id.empty()) kv["id"] = s.id;
    kv["socket"] = s.socket;
    if (s.client) kv["client"] = on_off(true);
    put_access(kv, s.access);
    kv["tap"] = s.tap;
    kv["queues"] = std::to_string(s.queue_pairs);
    if (s.mac_set) {
        const auto& m = s.mac;
        kv["mac"] = fmt::format("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5]);
    }
    if (s.mtu != 0) kv["mtu"] = std::to_string(s.mtu);
    return kv;
}

}  // namespace vhostd::app
