// vhostctl: the management API's command line. One JSON-RPC call per invocation; human output
// by default, the raw result with --json. Exit status: 0 done, 1 vhostd said no (its message on
// stderr, verbatim) or is not running, 2 usage.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "rpc/client.hpp"

using vhostd::rpc::Json;

namespace {

struct Usage {
    std::string what;
};

// "a=1,b=2" -> {"a":"1","b":"2"} (split on ',' then on the first '=').
Json parse_keys(const std::string& list) {
    Json out = Json::object();
    size_t pos = 0;
    while (pos <= list.size()) {
        size_t comma = list.find(',', pos);
        std::string item = list.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
        if (!item.empty()) {
            auto eq = item.find('=');
            if (eq == std::string::npos || eq == 0) throw Usage{"'" + item + "' is not KEY=VALUE"};
            out[item.substr(0, eq)] = item.substr(eq + 1);
        }
        if (comma == std::string::npos) break;
        pos = comma + 1;
    }
    return out;
}

std::string human_size(const Json& v) {
    if (!v.is_number_unsigned()) return "-";
    auto b = v.get<uint64_t>();
    const char* units[] = {"", "K", "M", "G", "T", "P"};
    int u = 0;
    double x = static_cast<double>(b);
    while (x >= 1024 && u < 5 && (b % 1024 == 0 || x >= 10 * 1024)) {
        x /= 1024;
        b /= 1024;
        ++u;
    }
    char buf[32];
    if (x == static_cast<double>(static_cast<uint64_t>(x))) snprintf(buf, sizeof(buf), "%llu%s", static_cast<unsigned long long>(x), units[u]);
    else snprintf(buf, sizeof(buf), "%.1f%s", x, units[u]);
    return buf;
}

std::string str(const Json& j, const char* key) {
    if (!j.is_object()) return "-";
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return "-";
    if (it->is_string()) return it->get<std::string>();
    return it->dump();
}

const Json& member(const Json& j, const char* key) {
    static const Json null;
    if (!j.is_object()) return null;
    auto it = j.find(key);
    return it == j.end() ? null : *it;
}

void print_table(const std::vector<std::vector<std::string>>& rows) {
    std::vector<size_t> w;
    for (const auto& r : rows)
        for (size_t i = 0; i < r.size(); ++i) {
            if (w.size() <= i) w.push_back(0);
            w[i] = std::max(w[i], r[i].size());
        }
    for (const auto& r : rows) {
        std::string line;
        for (size_t i = 0; i < r.size(); ++i) {
            line += r[i];
            if (i + 1 < r.size()) line += std::string(w[i] - r[i].size() + 2, ' ');
        }
        std::puts(line.c_str());
    }
}

void print_list(const Json& r) {
    std::vector<std::vector<std::string>> rows{{"ID", "KIND", "STATE", "SIZE", "QUEUES", "SOCKET", "BACKEND", "TARGET", "FRONTEND"}};
    for (const auto& d : member(r, "devices")) {
        std::string target = d.contains("path") ? str(d, "path") : str(d, "tap");
        if (target.empty()) target = "-";
        const Json& fe = member(d, "frontend");
        rows.push_back({str(d, "id"), str(d, "kind"), str(d, "state"), human_size(member(d, "size")), str(d, "queues"),
                        str(d, "socket"), str(d, "backend"), target, fe.is_object() ? "pid " + str(fe, "pid") : "-"});
    }
    print_table(rows);
}

void print_blk_stats(const Json& r) {
    std::vector<std::vector<std::string>> rows{{"QUEUE", "READS", "WRITES", "FLUSH", "DISCARD", "WZEROES", "READ B", "WRITTEN B",
                                                "ERRORS", "INFLIGHT", "KICKS", "CALLS", "QOS WAITS", "P50 us", "P99 us",
                                                "P99.9 us", "MAX us"}};
    auto row = [&](const std::string& name, const Json& q) {
        const Json& rq = member(q, "requests");
        const Json& by = member(q, "bytes");
        const Json& er = member(q, "errors");
        const Json& l = member(q, "latency_us");
        uint64_t errors = 0;
        if (er.is_object())
            for (const auto& v : er)
                if (v.is_number_unsigned()) errors += v.get<uint64_t>();
        rows.push_back({name, str(rq, "read"), str(rq, "write"), str(rq, "flush"), str(rq, "discard"), str(rq, "write_zeroes"),
                        human_size(member(by, "read")), human_size(member(by, "write")), std::to_string(errors),
                        str(q, "inflight"), str(q, "kicks"), str(q, "calls"), str(q, "qos_delays"), str(l, "p50"),
                        str(l, "p99"), str(l, "p999"), str(l, "max")});
    };
    for (const auto& q : member(r, "queues")) row(str(q, "index"), q);
    row("total", member(r, "total"));
    print_table(rows);
}

void print_net_stats(const Json& r) {
    std::vector<std::vector<std::string>> rows{{"PAIR", "DIR", "PACKETS", "BYTES", "GSO", "DROPPED", "KICKS", "CALLS"}};
    auto row = [&](const std::string& name, const Json& p) {
        for (const char* dir : {"rx", "tx"}) {
            const Json& d = member(p, dir);
            rows.push_back({name, dir, str(d, "packets"), human_size(member(d, "bytes")), str(d, "gso"), str(d, "dropped"),
                            str(d, "kicks"), str(d, "calls")});
        }
    };
    for (const auto& q : member(r, "queues")) row(str(q, "pair"), q);
    row("total", member(r, "total"));
    print_table(rows);
}

void print_reactors(const Json& r) {
    std::vector<std::vector<std::string>> rows{
        {"REACTOR", "CPU", "QUEUES", "HOT", "BUSY %", "PASSES", "SLEEPS", "NAPS", "PARKS", "WAKES"}};
    for (const auto& x : member(r, "reactors"))
        rows.push_back({str(x, "index"), str(x, "cpu"), str(x, "queues"), str(x, "hot_queues"), str(x, "busy_percent"),
                        str(x, "passes"), str(x, "sleeps"), str(x, "naps"), str(x, "parks"), str(x, "wakes")});
    print_table(rows);
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"vhostctl: manage a running vhostd (its --rpc socket)", "vhostctl"};
    app.require_subcommand(1);
    const char* env = std::getenv("VHOSTD_RPC");
    std::string socket = env != nullptr && *env != '\0' ? env : "/run/vhostd/vhostd.sock";
    bool json = false;
    app.add_option("--socket", socket, "the management socket (default: $VHOSTD_RPC, else /run/vhostd/vhostd.sock)");
    app.add_flag("--json", json, "print the raw JSON result on one line");

    std::string kind, keys, id, size, method, params;
    auto* add = app.add_subcommand("add", "add a device: add blk|net KEY=VALUE,... [--id ID] (the keys of --blk/--net)");
    add->add_option("kind", kind, "blk or net")->required()->check(CLI::IsMember({"blk", "net"}));
    add->add_option("keys", keys, "device keys, e.g. socket=/run/d.sock,path=/var/lib/d.img,queues=4")->required();
    add->add_option("--id", id, "the device's id (default: the first free blkN / netN)");
    auto* remove = app.add_subcommand("remove", "drain and remove a device");
    remove->add_option("id", id)->required();
    auto* list = app.add_subcommand("list", "every device with its state and frontend");
    auto* stats = app.add_subcommand("stats", "a device's counters per queue and in total");
    stats->add_option("id", id)->required();
    auto* reactors = app.add_subcommand("reactors", "per reactor: busy %, passes, sleeps, naps, queues");
    auto* resize = app.add_subcommand("resize", "resize a blk device and tell the guest: resize ID [SIZE] (no SIZE: a block device re-reads its size)");
    resize->add_option("id", id)->required();
    resize->add_option("size", size, "bytes, or with a K/M/G/T suffix");
    auto* qos = app.add_subcommand("qos", "set a blk device's limits: qos ID iops=N,bps=50M,read_iops=..,write_iops=..,read_bps=..,write_bps=..,burst_ms=.. (0 removes a limit)");
    qos->add_option("id", id)->required();
    qos->add_option("limits", keys)->required();
    auto* save = app.add_subcommand("save-config", "print the devices as a config document (vhostd --config FILE)");
    auto* version = app.add_subcommand("version", "vhostd's version, pid, reactors and devices");
    auto* methods = app.add_subcommand("methods", "every method of the API");
    // Pools: pool create|import|list|check, volume create|delete|resize|list, snapshot create, clone create.
    auto* pool = app.add_subcommand("pool", "pools: create NAME DRIVE... | import DRIVE... | list | check NAME");
    pool->require_subcommand(1);
    std::string pname, layout, chunk, vname, vsize, target;
    std::vector<std::string> drives;
    bool force = false, thick = false;
    auto* pool_create = pool->add_subcommand("create", "make a pool of drives (files or block devices)");
    pool_create->add_option("name", pname)->required();
    pool_create->add_option("drives", drives)->required();
    pool_create->add_option("--layout", layout, "stripe (default) or concat: where a volume's chunks go");
    pool_create->add_option("--chunk", chunk, "chunk size (default 1M)");
    pool_create->add_flag("--force", force, "overwrite drives that hold another pool");
    auto* pool_import = pool->add_subcommand("import", "assemble and serve a pool from all of its drives");
    pool_import->add_option("drives", drives)->required();
    auto* pool_list = pool->add_subcommand("list", "every pool served");
    auto* pool_check = pool->add_subcommand("check", "a full consistency check (exit status 1 and the problems if any)");
    pool_check->add_option("name", pname)->required();
    auto* volume = app.add_subcommand("volume", "volumes: create POOL/NAME SIZE | delete POOL/NAME[@SNAP] | resize POOL/NAME SIZE | list [POOL]");
    volume->require_subcommand(1);
    auto* vol_create = volume->add_subcommand("create", "a thin volume (--thick: its space reserved)");
    vol_create->add_option("name", vname, "POOL/NAME")->required();
    vol_create->add_option("size", vsize)->required();
    vol_create->add_flag("--thick", thick, "reserve the volume's whole size now");
    vol_create->add_option("--layout", layout, "stripe or concat (default: the pool's)");
    auto* vol_delete = volume->add_subcommand("delete", "delete a volume or a snapshot");
    vol_delete->add_option("name", vname, "POOL/NAME or POOL/NAME@SNAP")->required();
    auto* vol_resize = volume->add_subcommand("resize", "grow or shrink a volume (an attached one: the guest is told)");
    vol_resize->add_option("name", vname)->required();
    vol_resize->add_option("size", vsize)->required();
    auto* vol_list = volume->add_subcommand("list", "volumes and snapshots: size, allocated, parent, device");
    vol_list->add_option("pool", pname);
    auto* snapshot = app.add_subcommand("snapshot", "snapshot create POOL/VOLUME NAME: a read-only snapshot");
    snapshot->require_subcommand(1);
    auto* snap_create = snapshot->add_subcommand("create", "a read-only snapshot of a volume");
    snap_create->add_option("volume", vname, "POOL/VOLUME")->required();
    snap_create->add_option("name", target)->required();
    auto* clone = app.add_subcommand("clone", "clone create POOL/VOLUME@SNAP NAME: a writable clone (POOL/NAME)");
    clone->require_subcommand(1);
    auto* clone_create = clone->add_subcommand("create", "a writable clone of a snapshot");
    clone_create->add_option("snapshot", vname, "POOL/VOLUME@SNAP")->required();
    clone_create->add_option("name", target)->required();

    auto* call = app.add_subcommand("call", "call any method: call METHOD ['{\"json\": \"params\"}']");
    call->add_option("method", method)->required();
    call->add_option("params", params, "a JSON object");

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e) == 0 ? 0 : 2;
    }

    std::string m;
    Json p = Json::object();
    try {
        if (*add) {
            m = "device_add";
            p = parse_keys(keys);
            p["kind"] = kind;
            if (!id.empty()) p["id"] = id;
        } else if (*remove) {
            m = "device_remove";
            p["id"] = id;
        } else if (*list) {
            m = "device_list";
        } else if (*stats) {
            m = "device_stats";
            p["id"] = id;
        } else if (*reactors) {
            m = "reactor_stats";
        } else if (*resize) {
            m = "device_resize";
            p["id"] = id;
            if (!size.empty()) p["size"] = size;
        } else if (*qos) {
            m = "device_set_qos";
            p["id"] = id;
            const Json limits = parse_keys(keys);
            for (auto& [k, v] : limits.items()) {
                std::string key = k;
                for (char& c : key)
                    if (c == '-') c = '_';
                static const char* known[] = {"iops", "bps", "read_iops", "write_iops", "read_bps", "write_bps", "burst_ms"};
                if (std::find(std::begin(known), std::end(known), key) == std::end(known))
                    throw Usage{"unknown limit '" + k + "' (iops, bps, read_iops, write_iops, read_bps, write_bps, burst_ms)"};
                const std::string& val = v.get_ref<const std::string&>();
                if (!val.empty() && val.find_first_not_of("0123456789") == std::string::npos && val.size() <= 19)
                    p[key] = std::stoull(val);
                else
                    p[key] = val;  // "50M": vhostd parses the suffix (bps members)
            }
        } else if (*save) {
            m = "save_config";
        } else if (*version) {
            m = "version";
        } else if (*methods) {
            m = "rpc_methods";
        } else if (*pool_create) {
            m = "pool_create";
            p = Json{{"name", pname}, {"drives", drives}};
            if (!layout.empty()) p["layout"] = layout;
            if (!chunk.empty()) p["chunk"] = chunk;
            if (force) p["force"] = true;
        } else if (*pool_import) {
            m = "pool_import";
            p = Json{{"drives", drives}};
        } else if (*pool_list) {
            m = "pool_list";
        } else if (*pool_check) {
            m = "pool_check";
            p = Json{{"name", pname}};
        } else if (*vol_create) {
            auto slash = vname.find('/');
            if (slash == std::string::npos) throw Usage{"a volume is POOL/NAME"};
            m = "volume_create";
            p = Json{{"pool", vname.substr(0, slash)}, {"name", vname.substr(slash + 1)}, {"size", vsize}, {"thin", !thick}};
            if (!layout.empty()) p["layout"] = layout;
        } else if (*vol_delete) {
            m = "volume_delete";
            p = Json{{"name", vname}};
        } else if (*vol_resize) {
            m = "volume_resize";
            p = Json{{"name", vname}, {"size", vsize}};
        } else if (*vol_list) {
            m = "volume_list";
            if (!pname.empty()) p["pool"] = pname;
        } else if (*snap_create) {
            m = "snapshot_create";
            p = Json{{"volume", vname}, {"name", target}};
        } else if (*clone_create) {
            m = "clone_create";
            p = Json{{"snapshot", vname}, {"name", target}};
        } else if (*call) {
            m = method;
            if (!params.empty()) {
                p = Json::parse(params, nullptr, false);
                if (p.is_discarded() || !p.is_object()) throw Usage{"params must be a JSON object"};
            }
        }
    } catch (const Usage& u) {
        std::fprintf(stderr, "vhostctl: %s\n", u.what.c_str());
        return 2;
    }

    auto client = vhostd::rpc::Client::connect(socket);
    if (!client.ok()) {
        std::fprintf(stderr, "vhostctl: %s\n", client.error().context.c_str());
        return 1;
    }
    auto r = client.value().call(m, p);
    if (!r.ok()) {
        std::fprintf(stderr, "vhostctl: %s\n", r.error().context.c_str());
        return 1;
    }
    const Json& res = r.value();
    if (json) {
        std::puts(vhostd::rpc::dump_line(res).c_str());
        return 0;
    }
    if (*add || *remove) {
        std::puts(str(res, "id").c_str());
    } else if (*list) {
        print_list(res);
    } else if (*stats) {
        if (str(res, "kind") == "net") print_net_stats(res);
        else print_blk_stats(res);
    } else if (*reactors) {
        print_reactors(res);
    } else if (*resize) {
        std::string note = member(res, "guest_notified").is_boolean() && member(res, "guest_notified").get<bool>()
                               ? "guest notified"
                               : "guest not notified: " + str(res, "note");
        std::printf("%s: %s -> %s bytes (%s)\n", str(res, "id").c_str(), str(res, "old_size").c_str(),
                    str(res, "size").c_str(), note.c_str());
    } else if (*qos) {
        std::puts(res.contains("qos") ? res["qos"].dump().c_str() : res.dump().c_str());
    } else if (*version) {
        std::printf("vhostd %s (pid %s, %s reactors, %s devices)\n", str(res, "version").c_str(), str(res, "pid").c_str(),
                    str(res, "reactors").c_str(), str(res, "devices").c_str());
    } else if (*pool_list) {
        std::vector<std::vector<std::string>> rows{{"POOL", "DRIVES", "LAYOUT", "CHUNK", "SIZE", "ALLOCATED", "AVAILABLE", "VOLUMES", "SNAPSHOTS"}};
        for (const auto& x : member(res, "pools")) {
            rows.push_back({str(x, "name"), std::to_string(member(x, "drives").size()), str(x, "layout"), human_size(member(x, "chunk")),
                            human_size(member(x, "size")), human_size(member(x, "allocated")), human_size(member(x, "available")),
                            str(x, "volumes"), str(x, "snapshots")});
        }
        print_table(rows);
    } else if (*vol_list) {
        std::vector<std::vector<std::string>> rows{{"NAME", "KIND", "SIZE", "ALLOCATED", "PARENT", "DEVICE"}};
        for (const auto& x : member(res, "volumes")) {
            rows.push_back({str(x, "name"), str(x, "kind"), human_size(member(x, "size")), human_size(member(x, "allocated")),
                            str(x, "parent"), str(x, "device")});
        }
        print_table(rows);
    } else if (*pool_check) {
        std::printf("pool %s: consistent (%s volumes and snapshots, %s chunks in use)\n", str(res, "name").c_str(),
                    str(res, "volumes").c_str(), str(res, "chunks_used").c_str());
    } else if (*pool_create || *pool_import || *vol_create || *vol_resize || *vol_delete || *snap_create || *clone_create) {
        std::puts(str(res, "name").c_str());
    } else if (*methods) {
        std::vector<std::vector<std::string>> rows;
        for (const auto& x : res) rows.push_back({str(x, "name"), str(x, "summary")});
        print_table(rows);
    } else {
        std::puts(res.dump(2, ' ', false, Json::error_handler_t::replace).c_str());
    }
    return 0;
}
