// The management API's methods (JSON-RPC over rpc/'s server) and the config document: the
// daemon's registry as JSON. Method names and parameter keys are an interface scripts rely on;
// README.md documents them.
#pragma once

#include "app/daemon.hpp"
#include "rpc/jsonrpc.hpp"

namespace vhostd::app {

// Registers device_add, device_remove, device_list, device_resize, device_set_qos,
// device_stats, reactor_stats, version and save_config on `d`, bound to `daemon`.
void register_methods(rpc::Dispatcher& d, Daemon& daemon);
// The pool methods (app/pool_methods.cpp): pool_create, pool_import, pool_list, pool_check,
// volume_create, volume_delete, volume_resize, volume_list, snapshot_create, clone_create.
void register_pool_methods(rpc::Dispatcher& d, Daemon& daemon);

// device_add's members (or one entry of a config document's "devices") as device keys: every
// member but "kind" becomes key=value; strings as they are, integers in decimal, booleans as
// on/off. Anything else is an error naming the member.
Result<KeyMap> keys_from_json(const rpc::Json& params);

// Adds one device described by JSON ({"kind": "blk"|"net", keys...}); returns its id.
Result<std::string> add_device_json(Daemon& daemon, const rpc::Json& params);

// The devices as a config document: {"vhostd": VERSION, "devices": [{"kind", keys...}, ...]}.
rpc::Json save_config(const Daemon& daemon);
// Adds every device of a config document (the same shape), in order. Stops at the first error.
Status load_config(Daemon& daemon, const rpc::Json& doc);
// Reads and parses a config file (errors name the file and the JSON error's position).
Result<rpc::Json> read_config_file(const std::string& path);

}  // namespace vhostd::app
