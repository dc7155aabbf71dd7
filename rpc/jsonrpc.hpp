// JSON-RPC 2.0 (https://www.jsonrpc.org/specification) without a transport: a table of methods
// and the request -> response step for one line of input. JSON is nlohmann-json's.
//
// Methods are added before serving starts; handle_line() runs on the server's one thread, so
// handlers run one at a time (the management API's serialization: ARCHITECTURE.md).
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "core/result.hpp"

namespace vhostd::rpc {

using Json = nlohmann::json;

inline constexpr int kParseError = -32700;
inline constexpr int kInvalidRequest = -32600;
inline constexpr int kMethodNotFound = -32601;
inline constexpr int kInvalidParams = -32602;
inline constexpr int kInternalError = -32603;
inline constexpr int kServerError = -32000;  // the method ran and failed

// Gets the request's params (an object; {} when absent). An Error becomes a JSON-RPC error:
// kInvalid / kOutOfRange / kUnsupported -> -32602 (the caller asked for something wrong), any
// other code -> -32000; the message is the error's context, verbatim.
using Handler = std::function<Result<Json>(const Json& params)>;

inline constexpr size_t kMaxBatch = 128;
// Deeper JSON is refused before parsing (the parser recurses).
inline constexpr int kMaxDepth = 64;

class Dispatcher {
public:
    Dispatcher();
    // Before serving starts.
    void add(std::string name, std::string summary, Handler h);

    // One request or batch in, the response out (compact JSON, no newline); nullopt when nothing
    // is to be answered (notifications). Never throws.
    std::optional<std::string> handle_line(std::string_view line);

    struct Method {
        std::string summary;
        Handler handler;
    };
    const std::map<std::string, Method>& methods() const { return methods_; }

    // An error response object.
    static Json error_response(const Json& id, int code, const std::string& message, Json data = nullptr);
    // The JSON-RPC code an Error maps to.
    static int code_of(const Error& e);

private:
    // A response object, or null for a notification.
    Json handle_one(const Json& req);

    std::map<std::string, Method> methods_;
};

// Compact, one line; invalid UTF-8 in strings is replaced rather than thrown on.
std::string dump_line(const Json& j);

}  // namespace vhostd::rpc
