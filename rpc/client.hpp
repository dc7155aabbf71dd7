// A blocking JSON-RPC client for the management socket (vhostctl, tests).
#pragma once

#include <string>

#include "core/result.hpp"
#include "core/unique_fd.hpp"
#include "rpc/jsonrpc.hpp"

namespace vhostd::rpc {

class Client {
public:
    // Errc::kClosed "vhostd is not running at PATH" when nobody listens there.
    static Result<Client> connect(const std::string& path);

    // The result, or the server's error: its message as the context, kInvalid for the
    // caller's mistakes (-32600..-32700) and kState for a failed operation (-32000, -32603).
    Result<Json> call(const std::string& method, const Json& params = Json::object());
    // Sends one request object as it is and returns the whole response object.
    Result<Json> call_raw(const Json& request);

private:
    explicit Client(UniqueFd fd) : fd_(std::move(fd)) {}
    Result<Json> read_response();

    UniqueFd fd_;
    std::string buf_;
    uint64_t next_id_ = 1;
};

}  // namespace vhostd::rpc
