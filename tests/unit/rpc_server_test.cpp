// The management socket for real: folder and mode, stale and live sockets, pipelined and split
// requests, half-closed clients, over-long lines, the connection limit, unlink on stop.
#include <grp.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <thread>

#include "core/unique_fd.hpp"
#include "rpc/client.hpp"
#include "rpc/server.hpp"

using namespace vhostd;
using vhostd::rpc::Json;

namespace {

class RpcServer : public ::testing::Test {
protected:
    void SetUp() override {
        char tmpl[] = "/tmp/vhostd-rpc-test.XXXXXX";
        ASSERT_NE(mkdtemp(tmpl), nullptr);
        dir_ = tmpl;
        d_.add("echo", "returns its params", [](const Json& p) -> Result<Json> { return p; });
        d_.add("slow", "takes 50 ms", [](const Json&) -> Result<Json> {
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
            return Json("done");
        });
    }
    void TearDown() override { std::filesystem::remove_all(dir_); }

    rpc::ServerOptions opts(const std::string& rel = "run/vhostd/api.sock") {
        rpc::ServerOptions o;
        o.path = dir_ + "/" + rel;
        return o;
    }
    static UniqueFd raw_connect(const std::string& path) {
        UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
        sockaddr_un a{};
        a.sun_family = AF_UNIX;
        std::strncpy(a.sun_path, path.c_str(), sizeof(a.sun_path) - 1);
        timeval tv{10, 0};
        setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        EXPECT_EQ(connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0) << strerror(errno);
        return fd;
    }
    static void send_all(int fd, const std::string& s) {
        size_t off = 0;
        while (off < s.size()) {
            ssize_t n = send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL);
            if (n <= 0) return;
            off += static_cast<size_t>(n);
        }
    }
    // Reads until `lines` newlines arrived or EOF; returns what came.
    static std::string read_lines(int fd, int lines) {
        std::string out;
        char buf[4096];
        while (std::count(out.begin(), out.end(), '\n') < lines) {
            ssize_t n = recv(fd, buf, sizeof(buf), 0);
            if (n <= 0) break;
            out.append(buf, static_cast<size_t>(n));
        }
        return out;
    }
    std::string dir_;
    rpc::Dispatcher d_;
};

TEST_F(RpcServer, CreatesItsFolderAndASocketOnlyItsOwnerMayUse) {
    rpc::Server s(opts(), d_);
    ASSERT_TRUE(s.start().ok());
    struct stat st {};
    ASSERT_EQ(stat(s.path().c_str(), &st), 0);
    EXPECT_TRUE(S_ISSOCK(st.st_mode));
    EXPECT_EQ(st.st_mode & 0777, 0600u);
    ASSERT_EQ(stat((dir_ + "/run/vhostd").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0755u);
    auto c = rpc::Client::connect(s.path());
    ASSERT_TRUE(c.ok());
    auto r = c.value().call("echo", Json{{"x", 1}});
    ASSERT_TRUE(r.ok()) << r.error().describe();
    EXPECT_EQ(r.value()["x"], 1);
    auto e = c.value().call("no_such");
    ASSERT_FALSE(e.ok());
    EXPECT_EQ(e.error().context, "no method 'no_such'");
    s.stop();
    EXPECT_FALSE(std::filesystem::exists(s.path()));
    auto gone = rpc::Client::connect(s.path());
    ASSERT_FALSE(gone.ok());
    EXPECT_NE(gone.error().context.find("vhostd is not running at"), std::string::npos);
}

TEST_F(RpcServer, AGroupGetsReadAndWrite) {
    group* g = getgrgid(getgid());
    ASSERT_NE(g, nullptr);
    auto o = opts("api.sock");
    o.group = g->gr_name;
    rpc::Server s(o, d_);
    ASSERT_TRUE(s.start().ok());
    struct stat st {};
    ASSERT_EQ(stat(s.path().c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0660u);
    EXPECT_EQ(st.st_gid, getgid());
    auto bad = opts("b.sock");
    bad.group = "no-such-group-vhostd";
    rpc::Server s2(bad, d_);
    auto st2 = s2.start();
    ASSERT_FALSE(st2.ok());
    EXPECT_NE(st2.error().context.find("no-such-group-vhostd"), std::string::npos);
}

TEST_F(RpcServer, AStaleSocketIsReplacedALiveOneIsNot) {
    auto o = opts("api.sock");
    {
        // A socket file nobody listens on (a crashed vhostd's).
        UniqueFd fd(socket(AF_UNIX, SOCK_STREAM, 0));
        sockaddr_un a{};
        a.sun_family = AF_UNIX;
        std::strncpy(a.sun_path, o.path.c_str(), sizeof(a.sun_path) - 1);
        ASSERT_EQ(bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
    }
    rpc::Server s(o, d_);
    ASSERT_TRUE(s.start().ok());
    rpc::Server second(o, d_);
    auto st = second.start();
    ASSERT_FALSE(st.ok());
    EXPECT_NE(st.error().context.find("another vhostd"), std::string::npos);
    second.stop();
    EXPECT_TRUE(std::filesystem::exists(o.path)) << "the refused server removed the live socket";
    auto c = rpc::Client::connect(o.path);
    ASSERT_TRUE(c.ok());
    EXPECT_TRUE(c.value().call("echo").ok());
    // Not a socket: refused, left alone.
    auto f = opts("file");
    { std::ofstream(f.path) << "x"; }
    rpc::Server s3(f, d_);
    EXPECT_FALSE(s3.start().ok());
    EXPECT_TRUE(std::filesystem::exists(f.path));
}

TEST_F(RpcServer, PipelinedSplitAndHalfClosedRequestsAreAnsweredInOrder) {
    rpc::Server s(opts(), d_);
    ASSERT_TRUE(s.start().ok());
    UniqueFd fd = raw_connect(s.path());
    // Three requests in one write, the last one split across two writes.
    send_all(fd.get(), R"({"jsonrpc":"2.0","id":1,"method":"slow"})" "\n"
                       R"({"jsonrpc":"2.0","id":2,"method":"echo","params":{"n":2}})" "\n"
                       R"({"jsonrpc":"2.0","id":3,"me)");
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    send_all(fd.get(), "thod\":\"echo\"}\r\n\n");
    // Half-close: the answers still come.
    shutdown(fd.get(), SHUT_WR);
    std::string out = read_lines(fd.get(), 3);
    std::vector<int> ids;
    size_t pos = 0;
    while (true) {
        auto nl = out.find('\n', pos);
        if (nl == std::string::npos) break;
        ids.push_back(Json::parse(out.substr(pos, nl - pos))["id"].get<int>());
        pos = nl + 1;
    }
    EXPECT_EQ(ids, (std::vector<int>{1, 2, 3}));
    char b;
    EXPECT_EQ(recv(fd.get(), &b, 1, 0), 0) << "closed after the answers";
}

TEST_F(RpcServer, AnOverlongLineGetsAnErrorAndTheConnectionCloses) {
    auto o = opts();
    o.max_line = 4096;
    rpc::Server s(o, d_);
    ASSERT_TRUE(s.start().ok());
    UniqueFd fd = raw_connect(s.path());
    send_all(fd.get(), std::string(10000, 'x'));
    std::string out = read_lines(fd.get(), 1);
    Json r = Json::parse(out, nullptr, false);
    ASSERT_FALSE(r.is_discarded()) << out;
    EXPECT_EQ(r["error"]["code"], rpc::kInvalidRequest);
    EXPECT_NE(r["error"]["message"].get<std::string>().find("longer than 4096"), std::string::npos);
    char b;
    EXPECT_EQ(recv(fd.get(), &b, 1, 0), 0);
    // Others are served.
    auto c = rpc::Client::connect(s.path());
    ASSERT_TRUE(c.ok());
    EXPECT_TRUE(c.value().call("echo").ok());
}

TEST_F(RpcServer, ConnectionsBeyondTheLimitAreClosedAndTheRestServed) {
    auto o = opts();
    o.max_clients = 4;
    rpc::Server s(o, d_);
    ASSERT_TRUE(s.start().ok());
    std::vector<rpc::Client> clients;
    for (int i = 0; i < 4; ++i) {
        auto c = rpc::Client::connect(s.path());
        ASSERT_TRUE(c.ok());
        ASSERT_TRUE(c.value().call("echo").ok());  // accepted and registered
        clients.push_back(std::move(c).value());
    }
    auto fifth = rpc::Client::connect(s.path());
    ASSERT_TRUE(fifth.ok());  // the kernel accepts; vhostd closes it
    EXPECT_FALSE(fifth.value().call("echo").ok());
    for (auto& c : clients) EXPECT_TRUE(c.call("echo").ok());
    clients.pop_back();  // one leaves: room for a new one
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    auto sixth = rpc::Client::connect(s.path());
    ASSERT_TRUE(sixth.ok());
    EXPECT_TRUE(sixth.value().call("echo").ok());
}

TEST_F(RpcServer, AClientGoneMidRequestHurtsNobody) {
    rpc::Server s(opts(), d_);
    ASSERT_TRUE(s.start().ok());
    for (int i = 0; i < 50; ++i) {
        UniqueFd fd = raw_connect(s.path());
        send_all(fd.get(), R"({"jsonrpc":"2.0","id":1,"method":"echo","params":{"a":)");
        if (i % 2) send_all(fd.get(), "1}}\n");  // answered to a closed socket
    }
    auto c = rpc::Client::connect(s.path());
    ASSERT_TRUE(c.ok());
    auto r = c.value().call("echo", Json{{"ok", true}});
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r.value()["ok"], true);
}

}  // namespace
