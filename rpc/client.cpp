#include "rpc/client.hpp"

#include <sys/socket.h>
#include <sys/un.h>

#include <cerrno>
#include <cstring>

namespace vhostd::rpc {

namespace {
constexpr size_t kMaxResponse = 64 << 20;
}

Result<Client> Client::connect(const std::string& path) {
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    if (path.empty() || path.size() >= sizeof(a.sun_path)) return make_error(Errc::kInvalid, "bad socket path '{}'", path);
    std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
    UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) return sys_error("socket");
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
        if (errno == ENOENT || errno == ECONNREFUSED) return make_error(Errc::kClosed, "vhostd is not running at {}", path);
        return sys_error("connect {}", path);
    }
    return Client(std::move(fd));
}

Result<Json> Client::read_response() {
    while (true) {
        auto nl = buf_.find('\n');
        if (nl != std::string::npos) {
            std::string line = buf_.substr(0, nl);
            buf_.erase(0, nl + 1);
            Json j = Json::parse(line, nullptr, false);
            if (j.is_discarded()) return make_error(Errc::kInvalid, "vhostd sent a response that is not JSON");
            return j;
        }
        if (buf_.size() > kMaxResponse) return make_error(Errc::kInvalid, "response longer than {} bytes", kMaxResponse);
        char tmp[65536];
        ssize_t n = recv(fd_.get(), tmp, sizeof(tmp), 0);
        if (n == 0) return make_error(Errc::kClosed, "vhostd closed the connection");
        if (n < 0) {
            if (errno == EINTR) continue;
            return sys_error("reading from vhostd");
        }
        buf_.append(tmp, static_cast<size_t>(n));
    }
}

Result<Json> Client::call_raw(const Json& request) {
    std::string line = dump_line(request) + "\n";
    size_t off = 0;
    while (off < line.size()) {
        ssize_t n = send(fd_.get(), line.data() + off, line.size() - off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            return sys_error("writing to vhostd");
        }
        off += static_cast<size_t>(n);
    }
    return read_response();
}

Result<Json> Client::call(const std::string& method, const Json& params) {
    uint64_t id = next_id_++;
    VHOSTD_ASSIGN_OR_RETURN(Json resp, call_raw(Json{{"jsonrpc", "2.0"}, {"id", id}, {"method", method}, {"params", params}}));
    if (!resp.is_object()) return make_error(Errc::kInvalid, "vhostd sent a response that is not an object");
    if (auto e = resp.find("error"); e != resp.end()) {
        int code = e->is_object() && e->contains("code") && (*e)["code"].is_number_integer() ? (*e)["code"].get<int>() : 0;
        std::string msg = e->is_object() && e->contains("message") && (*e)["message"].is_string()
                              ? (*e)["message"].get<std::string>()
                              : "error without a message";
        // A system error's message is its context; the errno's text travels in data.strerror.
        if (e->is_object()) {
            auto d = e->find("data");
            if (d != e->end() && d->is_object() && d->contains("strerror") && (*d)["strerror"].is_string())
                msg += ": " + (*d)["strerror"].get<std::string>();
        }
        return make_error(code <= -32600 && code >= -32700 && code != kInternalError ? Errc::kInvalid : Errc::kState,
                          "{}", msg);
    }
    auto r = resp.find("result");
    if (r == resp.end()) return make_error(Errc::kInvalid, "vhostd sent a response without a result");
    return *r;
}

}  // namespace vhostd::rpc
