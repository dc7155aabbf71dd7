#include "rpc/jsonrpc.hpp"

#include <cstring>
#include <exception>

namespace vhostd::rpc {

namespace {

// The deepest nesting of [ and { outside strings; stops counting past the limit.
int nesting_depth(std::string_view s) {
    int depth = 0, max = 0;
    bool in_string = false, escaped = false;
    for (char c : s) {
        if (in_string) {
            if (escaped) escaped = false;
            else if (c == '\\') escaped = true;
            else if (c == '"') in_string = false;
            continue;
        }
        if (c == '"') in_string = true;
        else if (c == '[' || c == '{') {
            if (++depth > max) max = depth;
            if (max > kMaxDepth) return max;
        } else if (c == ']' || c == '}') {
            --depth;
        }
    }
    return max;
}

}  // namespace

std::string dump_line(const Json& j) { return j.dump(-1, ' ', false, Json::error_handler_t::replace); }

Dispatcher::Dispatcher() {
    add("rpc_methods", "every method with a one-line summary", [this](const Json&) -> Result<Json> {
        Json out = Json::array();
        for (const auto& [name, m] : methods_) out.push_back(Json{{"name", name}, {"summary", m.summary}});
        return out;
    });
}

void Dispatcher::add(std::string name, std::string summary, Handler h) {
    methods_[std::move(name)] = Method{std::move(summary), std::move(h)};
}

Json Dispatcher::error_response(const Json& id, int code, const std::string& message, Json data) {
    Json err{{"code", code}, {"message", message}};
    if (!data.is_null()) err["data"] = std::move(data);
    return Json{{"jsonrpc", "2.0"}, {"error", std::move(err)}, {"id", id}};
}

int Dispatcher::code_of(const Error& e) {
    switch (e.code) {
        case Errc::kInvalid:
        case Errc::kOutOfRange:
        case Errc::kUnsupported:
            return kInvalidParams;
        default:
            return kServerError;
    }
}

Json Dispatcher::handle_one(const Json& req) {
    if (!req.is_object()) return error_response(nullptr, kInvalidRequest, "a request must be a JSON object");
    // The id first: an invalid request is answered with its id when it has a usable one.
    Json id = nullptr;
    bool notification = true;
    if (auto it = req.find("id"); it != req.end()) {
        if (!it->is_string() && !it->is_number() && !it->is_null())
            return error_response(nullptr, kInvalidRequest, "'id' must be a string, a number or null");
        id = *it;
        notification = false;
    }
    auto ver = req.find("jsonrpc");
    if (ver == req.end() || !ver->is_string() || ver->get_ref<const std::string&>() != "2.0")
        return error_response(id, kInvalidRequest, "'jsonrpc' must be \"2.0\"");
    auto m = req.find("method");
    if (m == req.end() || !m->is_string()) return error_response(id, kInvalidRequest, "'method' must be a string");
    const std::string& name = m->get_ref<const std::string&>();
    auto method = methods_.find(name);
    Json response;
    if (method == methods_.end()) {
        response = error_response(id, kMethodNotFound, "no method '" + name + "'");
    } else {
        Json params = Json::object();
        auto p = req.find("params");
        if (p != req.end() && !p->is_object()) {
            response = error_response(id, kInvalidParams, "params must be an object");
        } else {
            if (p != req.end()) params = *p;
            try {
                Result<Json> r = method->second.handler(params);
                if (r.ok()) {
                    response = Json{{"jsonrpc", "2.0"}, {"result", std::move(r).value()}, {"id", id}};
                } else {
                    const Error& e = r.error();
                    Json data{{"errc", errc_name(e.code)}};
                    if (e.sys_errno != 0) {
                        data["errno"] = e.sys_errno;
                        data["strerror"] = std::strerror(e.sys_errno);
                    }
                    response = error_response(id, code_of(e), e.context, std::move(data));
                }
            } catch (const std::exception& ex) {
                response = error_response(id, kInternalError, std::string("internal error: ") + ex.what());
            } catch (...) {
                response = error_response(id, kInternalError, "internal error");
            }
        }
    }
    return notification ? Json(nullptr) : response;
}

std::optional<std::string> Dispatcher::handle_line(std::string_view line) {
    try {
        if (nesting_depth(line) > kMaxDepth)
            return dump_line(error_response(nullptr, kParseError, "JSON nested deeper than " + std::to_string(kMaxDepth)));
        Json req = Json::parse(line, nullptr, /*allow_exceptions=*/false);
        if (req.is_discarded()) return dump_line(error_response(nullptr, kParseError, "not valid JSON"));
        if (req.is_array()) {
            if (req.empty()) return dump_line(error_response(nullptr, kInvalidRequest, "an empty batch"));
            if (req.size() > kMaxBatch)
                return dump_line(error_response(nullptr, kInvalidRequest,
                                                "a batch of more than " + std::to_string(kMaxBatch) + " requests"));
            Json out = Json::array();
            for (const auto& r : req) {
                Json resp = handle_one(r);
                if (!resp.is_null()) out.push_back(std::move(resp));
            }
            if (out.empty()) return std::nullopt;
            return dump_line(out);
        }
        Json resp = handle_one(req);
        if (resp.is_null()) return std::nullopt;
        return dump_line(resp);
    } catch (const std::exception& ex) {
        return dump_line(error_response(nullptr, kInternalError, std::string("internal error: ") + ex.what()));
    } catch (...) {
        return dump_line(error_response(nullptr, kInternalError, "internal error"));
    }
}

}  // namespace vhostd::rpc
