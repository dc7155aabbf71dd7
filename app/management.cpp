#include "app/management.hpp"

#include <unistd.h>

#include <cmath>
#include <fstream>
#include <sstream>

#include "core/log.hpp"
#include "virtio/blk_device.hpp"
#include "virtio/net_device.hpp"

namespace vhostd::app {

using rpc::Json;

namespace {

Result<std::string> get_string(const Json& p, const char* key) {
    auto it = p.find(key);
    if (it == p.end()) return make_error(Errc::kInvalid, "'{}' is required", key);
    if (!it->is_string()) return make_error(Errc::kInvalid, "'{}' must be a string", key);
    return it->get<std::string>();
}

Status no_other_members(const Json& p, std::initializer_list<const char*> allowed) {
    for (auto it = p.begin(); it != p.end(); ++it) {
        bool ok = false;
        for (const char* a : allowed) ok |= it.key() == a;
        if (!ok) return make_error(Errc::kInvalid, "unknown parameter '{}'", it.key());
    }
    return ok_status();
}

// A size: a non-negative integer (bytes) or a string with a K/M/G/T suffix.
Result<uint64_t> get_size(const Json& v, const char* key) {
    if (v.is_number_unsigned()) return v.get<uint64_t>();
    if (v.is_string()) {
        auto r = parse_size(v.get<std::string>());
        if (!r.ok()) return make_error(Errc::kInvalid, "'{}': {}", key, r.error().context);
        return r;
    }
    return make_error(Errc::kInvalid, "'{}' must be a non-negative integer or a string like \"20G\"", key);
}

Json qos_json(const QosSpec& q) {
    return Json{{"iops", q.iops},           {"bps", q.bps},         {"read_iops", q.read_iops},
                {"write_iops", q.write_iops}, {"read_bps", q.read_bps}, {"write_bps", q.write_bps},
                {"burst_ms", q.burst_ms}};
}

Json device_json(const DeviceInfo& d) {
    Json j{{"id", d.id},         {"kind", d.kind},         {"socket", d.socket}, {"client", d.client},
           {"backend", d.backend}, {"queues", d.queues},   {"queues_running", d.queues_running},
           {"state", d.state}};
    if (d.kind == "blk") {
        j[d.backend == "nbd" ? "uri" : d.backend == "rbd" ? "image" : d.backend == "volume" ? "volume" : "path"] = d.target;
        j["size"] = d.size;
        j["block_size"] = d.block_size;
        j["readonly"] = d.readonly;
        j["qos"] = qos_json(d.qos);
    } else {
        j["tap"] = d.target;
    }
    j["frontend"] = d.frontend.connected ? Json{{"pid", d.frontend.pid}, {"uid", d.frontend.uid}} : Json(nullptr);
    Json keys = Json::object();
    for (auto& [k, v] : d.keys) keys[k] = v;
    j["spec"] = keys;
    return j;
}

Result<Json> device_add(Daemon& daemon, const Json& p) {
    VHOSTD_ASSIGN_OR_RETURN(std::string id, add_device_json(daemon, p));
    return Json{{"id", id}};
}

Result<Json> device_remove(Daemon& daemon, const Json& p) {
    VHOSTD_TRY(no_other_members(p, {"id"}));
    VHOSTD_ASSIGN_OR_RETURN(std::string id, get_string(p, "id"));
    VHOSTD_TRY(daemon.remove_device(id));
    return Json{{"id", id}};
}

Result<Json> device_list(Daemon& daemon, const Json& p) {
    VHOSTD_TRY(no_other_members(p, {}));
    Json devs = Json::array();
    for (const auto& d : daemon.list()) devs.push_back(device_json(d));
    return Json{{"devices", devs}};
}

Result<Json> device_resize(Daemon& daemon, const Json& p) {
    VHOSTD_TRY(no_other_members(p, {"id", "size"}));
    VHOSTD_ASSIGN_OR_RETURN(std::string id, get_string(p, "id"));
    uint64_t size = 0;  // a block device re-reads its size
    if (auto it = p.find("size"); it != p.end()) {
        VHOSTD_ASSIGN_OR_RETURN(size, get_size(*it, "size"));
        if (size == 0) return make_error(Errc::kInvalid, "'size' must not be 0");
    }
    VHOSTD_ASSIGN_OR_RETURN(auto r, daemon.resize_device(id, size));
    Json out{{"id", id}, {"old_size", r.old_size}, {"size", r.size}, {"guest_notified", r.notified}};
    if (!r.notified) out["note"] = r.note;
    return out;
}

Result<Json> device_set_qos(Daemon& daemon, const Json& p) {
    VHOSTD_TRY(no_other_members(p, {"id", "iops", "bps", "read_iops", "write_iops", "read_bps", "write_bps", "burst_ms"}));
    VHOSTD_ASSIGN_OR_RETURN(std::string id, get_string(p, "id"));
    VHOSTD_ASSIGN_OR_RETURN(DeviceInfo d, daemon.info(id));
    QosSpec q = d.qos;  // members not given keep their value
    for (auto it = p.begin(); it != p.end(); ++it) {
        if (it.key() == "id") continue;
        std::string key = it.key();
        std::replace(key.begin(), key.end(), '_', '-');  // the --blk key
        std::string text;
        if (it->is_number_unsigned()) text = std::to_string(it->get<uint64_t>());
        else if (it->is_string() && key.ends_with("bps")) text = it->get<std::string>();
        else return make_error(Errc::kInvalid, "'{}' must be a non-negative integer", it.key());
        VHOSTD_TRY(parse_qos_key(key, text, q));
    }
    VHOSTD_TRY(daemon.set_qos(id, q));
    return Json{{"id", id}, {"qos", qos_json(q)}};
}

Json latency_json(const LatencySummary& l) {
    auto us = [](uint64_t ns) { return static_cast<double>(ns) / 1000.0; };
    return Json{{"p50", us(l.p50_ns)}, {"p99", us(l.p99_ns)}, {"p999", us(l.p999_ns)}, {"max", us(l.max_ns)},
                {"count", l.count}};
}

Json blk_queue_json(const virtio::BlkQueueStats& s) {
    return Json{{"requests",
                 {{"read", s.reads},
                  {"write", s.writes},
                  {"flush", s.flushes},
                  {"discard", s.discards},
                  {"write_zeroes", s.write_zeroes},
                  {"get_id", s.get_ids},
                  {"other", s.others}}},
                {"bytes", {{"read", s.bytes_read}, {"write", s.bytes_written}}},
                {"errors", {{"ioerr", s.err_ioerr}, {"unsupp", s.err_unsupp}, {"bad_chain", s.bad_chains}}},
                {"inflight", s.inflight},
                {"kicks", s.kicks},
                {"calls", s.calls},
                {"qos_delays", s.qos_delays},
                {"qos_delay_us", s.qos_delay_ns / 1000},
                {"latency_us", latency_json(s.latency)}};
}

Json net_dir_json(const virtio::NetDirStats& s) {
    return Json{{"packets", s.packets}, {"bytes", s.bytes}, {"gso", s.gso},
                {"dropped", s.dropped}, {"kicks", s.kicks}, {"calls", s.calls}};
}

Result<Json> device_stats(Daemon& daemon, const Json& p) {
    VHOSTD_TRY(no_other_members(p, {"id"}));
    VHOSTD_ASSIGN_OR_RETURN(std::string id, get_string(p, "id"));
    VHOSTD_ASSIGN_OR_RETURN(DeviceInfo d, daemon.info(id));
    Json out{{"id", id}, {"kind", d.kind}};
    if (d.kind == "blk") {
        virtio::BlkDeviceStats st;
        VHOSTD_TRY(daemon.with_blk(id, [&](virtio::BlkDevice& dev) { st = dev.stats(); }));
        out["total"] = blk_queue_json(st.total);
        Json qs = Json::array();
        for (const auto& q : st.queues) {
            Json j = blk_queue_json(q);
            j["index"] = q.index;
            qs.push_back(std::move(j));
        }
        out["queues"] = std::move(qs);
        return out;
    }
    std::vector<virtio::NetPairStats> pairs;
    VHOSTD_TRY(daemon.with_net(id, [&](virtio::NetDevice& dev) {
        for (uint32_t i = 0; i < dev.pairs(); ++i) pairs.push_back(dev.stats(i));
    }));
    virtio::NetPairStats total;
    Json qs = Json::array();
    for (size_t i = 0; i < pairs.size(); ++i) {
        const auto& s = pairs[i];
        for (auto [t, v] : {std::pair{&total.rx, &s.rx}, std::pair{&total.tx, &s.tx}}) {
            t->packets += v->packets;
            t->bytes += v->bytes;
            t->gso += v->gso;
            t->dropped += v->dropped;
            t->kicks += v->kicks;
            t->calls += v->calls;
        }
        qs.push_back(Json{{"pair", i}, {"rx", net_dir_json(s.rx)}, {"tx", net_dir_json(s.tx)}});
    }
    out["total"] = Json{{"rx", net_dir_json(total.rx)}, {"tx", net_dir_json(total.tx)}};
    out["queues"] = std::move(qs);
    return out;
}

Result<Json> reactor_stats(Daemon& daemon, const Json& p) {
    VHOSTD_TRY(no_other_members(p, {}));
    Json rs = Json::array();
    for (const auto& r : daemon.reactor_stats()) {
        double busy = r.total_ns ? 100.0 * static_cast<double>(r.busy_ns) / static_cast<double>(r.total_ns) : 0.0;
        rs.push_back(Json{{"index", r.index},
                          {"cpu", r.cpu},
                          {"passes", r.passes},
                          {"sleeps", r.sleeps},
                          {"naps", r.naps},
                          {"busy_percent", std::round(busy * 10) / 10},
                          {"busy_ms", r.busy_ns / 1'000'000},
                          {"uptime_ms", r.total_ns / 1'000'000},
                          {"queues", r.pollers},
                          {"hot_queues", r.hot},
                          {"parks", r.parks},
                          {"wakes", r.wakes}});
    }
    return Json{{"reactors", rs}};
}

Result<Json> version(Daemon& daemon, const Json&) {
    return Json{{"version", VHOSTD_VERSION},
                {"pid", ::getpid()},
                {"reactors", daemon.reactor_count()},
                {"devices", daemon.device_count()}};
}

}  // namespace

Result<KeyMap> keys_from_json(const Json& params) {
    if (!params.is_object()) return make_error(Errc::kInvalid, "a device must be a JSON object");
    KeyMap kv;
    for (auto it = params.begin(); it != params.end(); ++it) {
        if (it.key() == "kind") continue;
        const Json& v = *it;
        if (v.is_string()) kv[it.key()] = v.get<std::string>();
        else if (v.is_boolean()) kv[it.key()] = v.get<bool>() ? "on" : "off";
        else if (v.is_number_unsigned()) kv[it.key()] = std::to_string(v.get<uint64_t>());
        else if (v.is_number_integer()) kv[it.key()] = std::to_string(v.get<int64_t>());  // the parser refuses it
        else return make_error(Errc::kInvalid, "'{}' must be a string, an integer or a boolean", it.key());
    }
    return kv;
}

Result<std::string> add_device_json(Daemon& daemon, const Json& params) {
    if (!params.is_object()) return make_error(Errc::kInvalid, "a device must be a JSON object");
    VHOSTD_ASSIGN_OR_RETURN(std::string kind, get_string(params, "kind"));
    VHOSTD_ASSIGN_OR_RETURN(KeyMap kv, keys_from_json(params));
    if (kind == "blk") {
        VHOSTD_ASSIGN_OR_RETURN(BlkSpec s, parse_blk_keys(kv));
        return daemon.add_blk(std::move(s));
    }
    if (kind == "net") {
        VHOSTD_ASSIGN_OR_RETURN(NetSpec s, parse_net_keys(kv));
        return daemon.add_net(std::move(s));
    }
    return make_error(Errc::kInvalid, "unknown kind '{}' (blk or net)", kind);
}

Json save_config(const Daemon& daemon) {
    Json devs = Json::array();
    for (const auto& d : daemon.list()) {
        Json j{{"kind", d.kind}};
        for (auto& [k, v] : d.keys) j[k] = v;
        devs.push_back(j);
    }
    Json pools = Json::array();
    for (const auto& p : daemon.pools()) pools.push_back(Json{{"drives", p.drives}});
    Json doc{{"vhostd", VHOSTD_VERSION}, {"devices", devs}};
    if (!pools.empty()) doc["pools"] = pools;
    return doc;
}

Status load_config(Daemon& daemon, const Json& doc) {
    if (!doc.is_object()) return make_error(Errc::kInvalid, "a config document is a JSON object");
    for (auto it = doc.begin(); it != doc.end(); ++it) {
        if (it.key() != "vhostd" && it.key() != "devices" && it.key() != "pools")
            return make_error(Errc::kInvalid, "unknown member '{}' (expected \"pools\" and \"devices\")", it.key());
    }
    // Pools first: their volumes are devices.
    if (auto pools = doc.find("pools"); pools != doc.end()) {
        if (!pools->is_array()) return make_error(Errc::kInvalid, "\"pools\" must be an array");
        size_t i = 0;
        for (const auto& p : *pools) {
            auto drives = p.is_object() ? p.find("drives") : p.end();
            if (!p.is_object() || drives == p.end() || !drives->is_array() || p.size() != 1)
                return make_error(Errc::kInvalid, "pools[{}]: {{\"drives\": [paths]}}", i);
            std::vector<std::string> paths;
            for (const auto& d : *drives) {
                if (!d.is_string()) return make_error(Errc::kInvalid, "pools[{}]: drives are strings", i);
                paths.push_back(d.get<std::string>());
            }
            auto r = daemon.import_pool(paths);
            if (!r.ok()) return make_error(Errc::kInvalid, "pools[{}]: {}", i, r.error().describe());
            ++i;
        }
    }
    auto devs = doc.find("devices");
    if (devs == doc.end()) return ok_status();
    if (!devs->is_array()) return make_error(Errc::kInvalid, "\"devices\" must be an array");
    size_t i = 0;
    for (const auto& d : *devs) {
        auto id = add_device_json(daemon, d);
        if (!id.ok()) return make_error(Errc::kInvalid, "devices[{}]: {}", i, id.error().context);
        ++i;
    }
    return ok_status();
}

Result<Json> read_config_file(const std::string& path) {
    std::ifstream in(path);
    if (!in) return sys_error("cannot open config file '{}'", path);
    std::stringstream ss;
    ss << in.rdbuf();
    Json doc = Json::parse(ss.str(), nullptr, /*allow_exceptions=*/false);
    if (doc.is_discarded()) return make_error(Errc::kInvalid, "config file '{}' is not valid JSON", path);
    return doc;
}

void register_methods(rpc::Dispatcher& d, Daemon& daemon) {
    auto bind = [&daemon](Result<Json> (*fn)(Daemon&, const Json&)) {
        return [&daemon, fn](const Json& p) { return fn(daemon, p); };
    };
    d.add("device_add", "add a device: {kind: blk|net, id?, device keys...} -> {id}", bind(device_add));
    d.add("device_remove", "drain and remove a device: {id}", bind(device_remove));
    d.add("device_list", "every device: kind, socket, backend, size, queues, frontend, state", bind(device_list));
    d.add("device_resize", "resize a blk device and tell the guest: {id, size?}", bind(device_resize));
    d.add("device_set_qos", "set a blk device's limits: {id, iops?, bps?, read_iops?, write_iops?, read_bps?, "
          "write_bps?, burst_ms?} (0 removes a limit)", bind(device_set_qos));
    d.add("device_stats", "a device's counters per queue and in total: requests, bytes, errors, latency, kicks, "
          "calls, QoS delays: {id}", bind(device_stats));
    d.add("reactor_stats", "per reactor: passes, sleeps, naps, busy %, queues", bind(reactor_stats));
    d.add("version", "the daemon's version, pid, reactor and device counts", bind(version));
    register_pool_methods(d, daemon);
    d.add("save_config", "the pools and devices as a config document (vhostd --config FILE)",
          [&daemon](const Json& p) -> Result<Json> {
              VHOSTD_TRY(no_other_members(p, {}));
              return save_config(daemon);
          });
}

}  // namespace vhostd::app
