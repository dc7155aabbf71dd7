// The management API's pool methods. Names: a pool by its name, a volume as "POOL/VOLUME", a
// snapshot as "POOL/VOLUME@SNAP", in every parameter and listing.
#include <fmt/format.h>

#include "app/management.hpp"
#include "core/log.hpp"

namespace vhostd::app {

using rpc::Json;

namespace {

Status only(const Json& p, std::initializer_list<const char*> allowed) {
    if (!p.is_object()) return make_error(Errc::kInvalid, "params must be an object");
    for (auto it = p.begin(); it != p.end(); ++it) {
        bool ok = false;
        for (const char* a : allowed) ok |= it.key() == a;
        if (!ok) return make_error(Errc::kInvalid, "unknown parameter '{}'", it.key());
    }
    return ok_status();
}

Result<std::string> str(const Json& p, const char* key) {
    auto it = p.find(key);
    if (it == p.end()) return make_error(Errc::kInvalid, "'{}' is required", key);
    if (!it->is_string()) return make_error(Errc::kInvalid, "'{}' must be a string", key);
    return it->get<std::string>();
}

Result<uint64_t> size_of(const Json& p, const char* key) {
    auto it = p.find(key);
    if (it == p.end()) return make_error(Errc::kInvalid, "'{}' is required", key);
    if (it->is_number_unsigned()) return it->get<uint64_t>();
    if (it->is_string()) {
        auto r = parse_size(it->get<std::string>());
        if (!r.ok()) return make_error(Errc::kInvalid, "'{}': {}", key, r.error().context);
        return r;
    }
    return make_error(Errc::kInvalid, "'{}' must be a non-negative integer or a string like \"20G\"", key);
}

Result<bool> flag(const Json& p, const char* key, bool dflt) {
    auto it = p.find(key);
    if (it == p.end()) return dflt;
    if (!it->is_boolean()) return make_error(Errc::kInvalid, "'{}' must be true or false", key);
    return it->get<bool>();
}

Result<std::vector<std::string>> drives_of(const Json& p) {
    auto it = p.find("drives");
    if (it == p.end() || !it->is_array() || it->empty()) return make_error(Errc::kInvalid, "'drives' must be a non-empty array of paths");
    std::vector<std::string> out;
    for (const auto& d : *it) {
        if (!d.is_string() || d.get<std::string>().empty()) return make_error(Errc::kInvalid, "'drives' holds paths (strings)");
        out.push_back(d.get<std::string>());
    }
    return out;
}

// "POOL/REST" -> the pool's service and REST.
Result<std::pair<std::shared_ptr<backends::PoolService>, std::string>> split(Daemon& daemon, const std::string& full,
                                                                              const char* what) {
    auto slash = full.find('/');
    if (slash == std::string::npos || slash == 0 || slash + 1 == full.size())
        return make_error(Errc::kInvalid, "'{}': a {} is named POOL/{}", full, what, what == std::string("snapshot") ? "VOLUME@SNAP" : "NAME");
    auto svc = daemon.pool(full.substr(0, slash));
    if (!svc) return make_error(Errc::kInvalid, "no pool '{}'", full.substr(0, slash));
    return std::make_pair(svc, full.substr(slash + 1));
}

Json pool_json(const pool::PoolInfo& p) {
    Json members = Json::array();
    for (const auto& m : p.members) {
        members.push_back(Json{{"path", m.path}, {"uuid", m.uuid}, {"chunks", m.chunks}, {"chunks_used", m.used}});
    }
    Json j{{"name", p.name},
           {"uuid", p.uuid},
           {"layout", pool::layout_name(p.layout)},
           {"chunk", p.chunk_size},
           {"drives", members},
           {"size", p.chunks * p.chunk_size},
           {"allocated", p.chunks_used * p.chunk_size},
           {"available", p.chunks_available * p.chunk_size},
           {"reserved", p.chunks_reserved * p.chunk_size},
           {"virtual_size", p.virtual_bytes},
           {"volumes", p.volumes},
           {"snapshots", p.snapshots},
           {"hidden_snapshots", p.hidden_snapshots},
           {"checkpoints", p.generation},
           {"journal_blocks_used", p.journal_used},
           {"journal_blocks", p.journal_blocks},
           {"failed", p.failed}};
    if (!p.note.empty()) j["note"] = p.note;
    return j;
}

Json volume_json(Daemon& daemon, const std::string& pool, const pool::VolumeInfo& v) {
    std::string full = pool + "/" + v.name;
    Json j{{"name", full},
           {"kind", v.snapshot ? "snapshot" : "volume"},
           {"size", v.size},
           {"allocated", v.allocated},
           {"layout", pool::layout_name(v.layout)},
           {"parent", v.parent.empty() || v.parent[0] == '(' ? Json(v.parent.empty() ? nullptr : Json(v.parent)) : Json(pool + "/" + v.parent)}};
    if (!v.snapshot) {
        j["thin"] = !v.thick;
        auto dev = daemon.device_of_volume(full);
        j["device"] = dev ? Json(*dev) : Json(nullptr);
    } else {
        j["clones"] = v.clones;
    }
    return j;
}

Result<Json> pool_create(Daemon& daemon, const Json& p) {
    VHOSTD_TRY(only(p, {"name", "drives", "layout", "chunk", "force"}));
    pool::CreateOptions o;
    VHOSTD_ASSIGN_OR_RETURN(o.name, str(p, "name"));
    VHOSTD_ASSIGN_OR_RETURN(auto drives, drives_of(p));
    if (p.contains("layout")) {
        VHOSTD_ASSIGN_OR_RETURN(std::string l, str(p, "layout"));
        VHOSTD_ASSIGN_OR_RETURN(o.layout, pool::parse_layout(l));
    }
    if (p.contains("chunk")) { VHOSTD_ASSIGN_OR_RETURN(o.chunk_size, size_of(p, "chunk")); }
    VHOSTD_ASSIGN_OR_RETURN(o.force, flag(p, "force", false));
    VHOSTD_ASSIGN_OR_RETURN(auto info, daemon.create_pool(o, drives));
    return pool_json(info);
}

Result<Json> pool_import(Daemon& daemon, const Json& p) {
    VHOSTD_TRY(only(p, {"drives"}));
    VHOSTD_ASSIGN_OR_RETURN(auto drives, drives_of(p));
    VHOSTD_ASSIGN_OR_RETURN(auto info, daemon.import_pool(drives));
    return pool_json(info);
}

Result<Json> pool_list(Daemon& daemon, const Json& p) {
    VHOSTD_TRY(only(p, {}));
    Json out = Json::array();
    for (const auto& e : daemon.pools()) out.push_back(pool_json(e.svc->pool().info()));
    return Json{{"pools", out}};
}

Result<Json> pool_check(Daemon& daemon, const Json& p) {
    VHOSTD_TRY(only(p, {"name"}));
    VHOSTD_ASSIGN_OR_RETURN(std::string name, str(p, "name"));
    auto svc = daemon.pool(name);
    if (!svc) return make_error(Errc::kInvalid, "no pool '{}'", name);
    auto rep = svc->pool().check();
    if (!rep.problems.empty()) {
        std::string all;
        for (const auto& s : rep.problems) all += (all.empty() ? "" : "; ") + s;
        VLOG_WARN("pool '{}': check found {} problem(s): {}", name, rep.problems.size(), all);
        return make_error(Errc::kState, "pool '{}': {} problem(s): {}", name, rep.problems.size(), all);
    }
    return Json{{"name", name}, {"ok", true}, {"volumes", rep.volumes}, {"chunks_used", rep.chunks_used},
                {"journal_blocks_replayed", rep.journal_blocks_replayed}};
}

Result<Json> volume_create(Daemon& daemon, const Json& p) {
    VHOSTD_TRY(only(p, {"pool", "name", "size", "thin", "layout"}));
    VHOSTD_ASSIGN_OR_RETURN(std::string pool_name, str(p, "pool"));
    VHOSTD_ASSIGN_OR_RETURN(std::string name, str(p, "name"));
    VHOSTD_ASSIGN_OR_RETURN(uint64_t size, size_of(p, "size"));
    VHOSTD_ASSIGN_OR_RETURN(bool thin, flag(p, "thin", true));
    std::optional<pool::Layout> layout;
    if (p.contains("layout")) {
        VHOSTD_ASSIGN_OR_RETURN(std::string l, str(p, "layout"));
        VHOSTD_ASSIGN_OR_RETURN(layout, pool::parse_layout(l));
    }
    auto svc = daemon.pool(pool_name);
    if (!svc) return make_error(Errc::kInvalid, "no pool '{}'", pool_name);
    VHOSTD_ASSIGN_OR_RETURN(auto v, svc->pool().create_volume(name, size, !thin, layout));
    return volume_json(daemon, pool_name, v);
}

Result<Json> volume_delete(Daemon& daemon, const Json& p) {
    VHOSTD_TRY(only(p, {"name"}));
    VHOSTD_ASSIGN_OR_RETURN(std::string full, str(p, "name"));
    VHOSTD_ASSIGN_OR_RETURN(auto sv, split(daemon, full, "volume"));
    VHOSTD_TRY(sv.first->delete_volume(sv.second));
    return Json{{"name", full}};
}

Result<Json> volume_resize(Daemon& daemon, const Json& p) {
    VHOSTD_TRY(only(p, {"name", "size"}));
    VHOSTD_ASSIGN_OR_RETURN(std::string full, str(p, "name"));
    VHOSTD_ASSIGN_OR_RETURN(uint64_t size, size_of(p, "size"));
    VHOSTD_ASSIGN_OR_RETURN(auto sv, split(daemon, full, "volume"));
    if (auto dev = daemon.device_of_volume(full)) {
        // Attached: the device's resize path (a shrink drains first; the guest is told).
        VHOSTD_ASSIGN_OR_RETURN(auto r, daemon.resize_device(*dev, size));
        return Json{{"name", full}, {"old_size", r.old_size}, {"size", r.size}, {"device", *dev}, {"guest_notified", r.notified}};
    }
    VHOSTD_ASSIGN_OR_RETURN(auto before, sv.first->pool().volume(sv.second));
    VHOSTD_ASSIGN_OR_RETURN(auto v, sv.first->pool().resize_volume(sv.second, size));
    return Json{{"name", full}, {"old_size", before.size}, {"size", v.size}, {"device", nullptr}, {"guest_notified", false}};
}

Result<Json> volume_list(Daemon& daemon, const Json& p) {
    VHOSTD_TRY(only(p, {"pool"}));
    std::string only_pool;
    if (p.contains("pool")) { VHOSTD_ASSIGN_OR_RETURN(only_pool, str(p, "pool")); }
    if (!only_pool.empty() && !daemon.pool(only_pool)) return make_error(Errc::kInvalid, "no pool '{}'", only_pool);
    Json out = Json::array();
    for (const auto& e : daemon.pools()) {
        if (!only_pool.empty() && e.svc->name() != only_pool) continue;
        for (const auto& v : e.svc->pool().volumes()) out.push_back(volume_json(daemon, e.svc->name(), v));
    }
    return Json{{"volumes", out}};
}

Result<Json> snapshot_create(Daemon& daemon, const Json& p) {
    VHOSTD_TRY(only(p, {"volume", "name"}));
    VHOSTD_ASSIGN_OR_RETURN(std::string full, str(p, "volume"));
    VHOSTD_ASSIGN_OR_RETURN(std::string name, str(p, "name"));
    VHOSTD_ASSIGN_OR_RETURN(auto sv, split(daemon, full, "volume"));
    VHOSTD_ASSIGN_OR_RETURN(auto v, sv.first->snapshot(sv.second, name));
    return volume_json(daemon, sv.first->name(), v);
}

Result<Json> clone_create(Daemon& daemon, const Json& p) {
    VHOSTD_TRY(only(p, {"snapshot", "name"}));
    VHOSTD_ASSIGN_OR_RETURN(std::string full, str(p, "snapshot"));
    VHOSTD_ASSIGN_OR_RETURN(std::string name, str(p, "name"));
    VHOSTD_ASSIGN_OR_RETURN(auto sv, split(daemon, full, "snapshot"));
    if (sv.second.find('@') == std::string::npos) return make_error(Errc::kInvalid, "'{}': a snapshot is POOL/VOLUME@SNAP", full);
    VHOSTD_ASSIGN_OR_RETURN(auto v, sv.first->pool().clone(sv.second, name));
    return volume_json(daemon, sv.first->name(), v);
}

}  // namespace

void register_pool_methods(rpc::Dispatcher& d, Daemon& daemon) {
    auto bind = [&daemon](Result<Json> (*fn)(Daemon&, const Json&)) {
        return [&daemon, fn](const Json& p) { return fn(daemon, p); };
    };
    d.add("pool_create", "make a pool of drives (files or block devices): {name, drives:[paths], layout?: stripe|concat, "
          "chunk?: size (default 1M), force?}", bind(pool_create));
    d.add("pool_import", "assemble and serve a pool from all of its drives: {drives:[paths]}", bind(pool_import));
    d.add("pool_list", "every pool served: drives, size, allocated, available, volumes", bind(pool_list));
    d.add("pool_check", "a full consistency check of a pool (an error lists what is wrong): {name}", bind(pool_check));
    d.add("volume_create", "a volume in a pool: {pool, name, size, thin?: true, layout?}", bind(volume_create));
    d.add("volume_delete", "delete a volume or a snapshot: {name: POOL/VOLUME or POOL/VOLUME@SNAP}", bind(volume_delete));
    d.add("volume_resize", "grow or shrink a volume (an attached one through its device): {name, size}", bind(volume_resize));
    d.add("volume_list", "volumes and snapshots with virtual and allocated size: {pool?}", bind(volume_list));
    d.add("snapshot_create", "a read-only snapshot: {volume: POOL/VOLUME, name}", bind(snapshot_create));
    d.add("clone_create", "a writable clone of a snapshot: {snapshot: POOL/VOLUME@SNAP, name} (the clone is POOL/name)",
          bind(clone_create));
}

}  // namespace vhostd::app
