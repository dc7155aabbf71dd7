// Fuzzes the management API's request path: a line from a client goes through the JSON-RPC
// dispatcher, and device_add-shaped params through the same key parsing the daemon uses
// (app::keys_from_json, then the --blk / --net key parsers), without side effects (no device is
// created). Any crash, hang, leak, uncaught exception or sanitizer report is a bug.
#include <cstdint>
#include <string_view>

#include "app/device_spec.hpp"
#include "app/management.hpp"
#include "core/log.hpp"
#include "rpc/jsonrpc.hpp"

using namespace vhostd;
using vhostd::rpc::Json;

namespace {

rpc::Dispatcher& dispatcher() {
    static rpc::Dispatcher* d = [] {
        spdlog::set_level(spdlog::level::off);
        auto* d = new rpc::Dispatcher;
        d->add("echo", "", [](const Json& p) -> Result<Json> { return p; });
        d->add("fail", "", [](const Json&) -> Result<Json> { return sys_error_code(5, "failed"); });
        d->add("throw", "", [](const Json&) -> Result<Json> { throw std::runtime_error("thrown"); });
        d->add("parse_device", "", [](const Json& p) -> Result<Json> {
            VHOSTD_ASSIGN_OR_RETURN(app::KeyMap kv, app::keys_from_json(p));
            auto kind = p.find("kind");
            if (kind != p.end() && *kind == "net") {
                VHOSTD_ASSIGN_OR_RETURN(app::NetSpec s, app::parse_net_keys(kv));
                return Json(app::to_keys(s).size());
            }
            VHOSTD_ASSIGN_OR_RETURN(app::BlkSpec s, app::parse_blk_keys(kv));
            // The keys round-trip: what save_config writes parses back to the same spec.
            VHOSTD_ASSIGN_OR_RETURN(app::BlkSpec again, app::parse_blk_keys(app::to_keys(s)));
            if (app::to_keys(again) != app::to_keys(s)) abort();
            return Json(s.socket);
        });
        return d;
    }();
    return *d;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    auto r = dispatcher().handle_line(std::string_view(reinterpret_cast<const char*>(data), size));
    if (r && r->find('\n') != std::string::npos) abort();  // one response, one line
    return 0;
}
