// Who may connect: a device's socket has socket-mode= (default 0600, 0660 with socket-group=) and
// that group from the moment it exists; a removed device unlinks only the socket it made. The
// management socket also checks the connection's credentials (SO_PEERCRED, SO_PEERGROUPS): a
// socket made wider by hand still serves only root, our user and --rpc-group's members.
#include <cerrno>
#include <grp.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <vector>

#include "app/device_spec.hpp"
#include "core/unique_fd.hpp"
#include "core/unix_group.hpp"
#include "rpc/server.hpp"
#include "vhost/server.hpp"
#include "testing/blk_fixture.hpp"

namespace vhostd::testing {
namespace {

struct stat stat_of(const std::string& p) {
    struct stat st {};
    EXPECT_EQ(lstat(p.c_str(), &st), 0) << p;
    return st;
}

TEST(SocketAccessSpec, KeysParseRoundTripAndRefuseNonsense) {
    auto s = app::parse_blk_spec("socket=/x.sock,backend=null,size=1M,socket-mode=0660,socket-group=kvm");
    ASSERT_TRUE(s.ok()) << s.error().describe();
    EXPECT_EQ(s.value().access.mode, 0660u);
    EXPECT_EQ(s.value().access.group, "kvm");
    auto back = app::parse_blk_keys(app::to_keys(s.value()));
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(back.value().access, s.value().access);
    EXPECT_EQ(app::parse_blk_spec("socket=/x.sock,backend=null,size=1M").value().access.effective_mode(), 0600u);
    EXPECT_EQ(app::parse_blk_spec("socket=/x.sock,backend=null,size=1M,socket-group=7").value().access.effective_mode(),
              0660u);
    auto n = app::parse_net_spec("socket=/n.sock,tap=t0,socket-mode=600");
    ASSERT_TRUE(n.ok()) << n.error().describe();
    EXPECT_EQ(n.value().access.mode, 0600u);
    for (const char* bad : {"socket-mode=0400", "socket-mode=0888", "socket-mode=01777", "socket-mode=", "socket-mode=rw",
                            "socket-group=", "socket-group=a/b", "socket-group=x y"}) {
        EXPECT_FALSE(app::parse_blk_spec(std::string("socket=/x.sock,backend=null,size=1M,") + bad).ok()) << bad;
    }
    auto client = app::parse_blk_spec("socket=/x.sock,backend=null,size=1M,client=on,socket-mode=0660");
    ASSERT_FALSE(client.ok());
    EXPECT_NE(client.error().context.find("client=on"), std::string::npos);
    EXPECT_FALSE(app::parse_net_spec("socket=/n.sock,tap=t0,client=on,socket-group=kvm").ok());
}

class SocketAccess : public BlkFixture {};

TEST_F(SocketAccess, ADeviceSocketHasItsModeAndGroupAndOnlyItsOwnIsUnlinked) {
    start_daemon(1);
    add_blk("id=a,socket=" + path("a.sock") + ",backend=null,size=1M,queues=1");
    add_blk("id=b,socket=" + path("b.sock") + ",backend=null,size=1M,queues=1,socket-mode=0660,socket-group=4242");
    add_blk("id=c,socket=" + path("c.sock") + ",backend=null,size=1M,queues=1,socket-mode=0666");
    struct stat a = stat_of(path("a.sock")), b = stat_of(path("b.sock")), c = stat_of(path("c.sock"));
    EXPECT_TRUE(S_ISSOCK(a.st_mode));
    EXPECT_EQ(a.st_mode & 07777, 0600u);
    EXPECT_EQ(b.st_mode & 07777, 0660u);
    EXPECT_EQ(b.st_gid, 4242u);
    EXPECT_EQ(c.st_mode & 07777, 0666u);
    EXPECT_EQ(c.st_gid, getegid());

    // Someone else's socket now at a's path (a's file was removed and the path taken): removing
    // device a must leave it alone; removing b removes b's own.
    ASSERT_EQ(unlink(path("a.sock").c_str()), 0);
    UniqueFd other(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::strncpy(sa.sun_path, path("a.sock").c_str(), sizeof(sa.sun_path) - 1);
    ASSERT_EQ(bind(other.get(), reinterpret_cast<sockaddr*>(&sa), sizeof(sa)), 0);
    ASSERT_OK(daemon_->remove_device("a"));
    EXPECT_TRUE(std::filesystem::exists(path("a.sock"))) << "another process's socket was unlinked";
    ASSERT_OK(daemon_->remove_device("b"));
    EXPECT_FALSE(std::filesystem::exists(path("b.sock")));
}

TEST_F(SocketAccess, AnUnknownGroupIsAnError) {
    start_daemon(1);
    auto s = app::parse_blk_spec("socket=" + path("g.sock") + ",backend=null,size=1M,socket-group=no-such-group-vhostd");
    ASSERT_TRUE(s.ok());
    auto id = daemon_->add_blk(s.value());
    ASSERT_FALSE(id.ok());
    EXPECT_NE(id.error().describe().find("no-such-group-vhostd"), std::string::npos);
    EXPECT_FALSE(std::filesystem::exists(path("g.sock")));
}

// A child process as uid 65534 with the given groups connects to `sock`, sends an echo request
// and reports what came back ("" when the server closed the connection unanswered).
std::string echo_as_nobody(const std::string& sock, gid_t primary, const std::vector<gid_t>& groups) {
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) return "pipe failed";
    pid_t pid = fork();
    if (pid == 0) {
        close(p[0]);
        if (setgroups(groups.size(), groups.data()) != 0 || setgid(primary) != 0 || setuid(65534) != 0) _exit(2);
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_un a{};
        a.sun_family = AF_UNIX;
        std::strncpy(a.sun_path, sock.c_str(), sizeof(a.sun_path) - 1);
        if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) _exit(3);
        static const char req[] = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"echo\",\"params\":{\"x\":1}}\n";
        // A refusing server may close before the request is sent (EPIPE/ECONNRESET): that is the
        // same answer as a close after it, nothing served.
        if (send(fd, req, sizeof(req) - 1, MSG_NOSIGNAL) < 0) _exit(errno == EPIPE || errno == ECONNRESET ? 0 : 4);
        timeval tv{5, 0};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        char buf[512];
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        if (n > 0 && write(p[1], buf, static_cast<size_t>(n)) < 0) _exit(5);
        _exit(0);
    }
    close(p[1]);
    std::string out;
    char buf[512];
    ssize_t n;
    while ((n = read(p[0], buf, sizeof(buf))) > 0) out.append(buf, static_cast<size_t>(n));
    close(p[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) return "child failed " + std::to_string(status);
    return out;
}

TEST(RpcPeerCredentials, OnlyRootOurUserAndTheGroupAreServed) {
    if (geteuid() != 0) GTEST_SKIP() << "needs root to connect as another user";
    char tmpl[] = "/tmp/vhostd-peer-test.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    std::string dir = tmpl;
    ASSERT_EQ(chmod(dir.c_str(), 0755), 0);
    rpc::Dispatcher d;
    d.add("echo", "returns its params", [](const rpc::Json& p) -> Result<rpc::Json> { return p; });
    rpc::ServerOptions o;
    o.path = dir + "/api.sock";
    o.group = "4242";
    rpc::Server s(o, d);
    ASSERT_TRUE(s.start().ok());
    ASSERT_EQ(chmod(o.path.c_str(), 0666), 0);  // made wider by hand: the credentials still count
    EXPECT_EQ(echo_as_nobody(o.path, 65534, {}), "") << "a stranger was served";
    EXPECT_NE(echo_as_nobody(o.path, 65534, {4242}).find("\"x\":1"), std::string::npos) << "a member was refused";
    EXPECT_NE(echo_as_nobody(o.path, 4242, {}).find("\"x\":1"), std::string::npos) << "the primary group was refused";
    s.stop();
    std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace vhostd::testing

// bind() then chgrp/chmod by path: in a folder others may write to, the path could be swapped for
// a link between the two. own_socket_file works on the file itself and refuses what is not the
// socket just made.
TEST(SocketFile, OwningItFollowsNoLink) {
    char dir[] = "/tmp/vhostd-own-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    const std::string d(dir), sock = d + "/s.sock", link = d + "/link.sock", plain = d + "/plain";
    auto fd = vhostd::vhost::listen_unix(sock, 0600, static_cast<gid_t>(-1));
    ASSERT_TRUE(fd.ok()) << fd.error().describe();
    struct stat st {};
    ASSERT_EQ(stat(sock.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0600u);
    // Ours: group and mode set.
    ASSERT_TRUE(vhostd::own_socket_file(sock, getgid(), 0660).ok());
    ASSERT_EQ(stat(sock.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0660u);
    // A link in its place: refused, and what it points at keeps its mode.
    ASSERT_EQ(symlink(sock.c_str(), link.c_str()), 0);
    auto r = vhostd::own_socket_file(link, static_cast<gid_t>(-1), 0666);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().context.find("replaced"), std::string::npos) << r.error().context;
    ASSERT_EQ(stat(sock.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0660u);
    // Another kind of file: refused.
    int f = open(plain.c_str(), O_CREAT | O_WRONLY, 0600);
    ASSERT_GE(f, 0);
    close(f);
    EXPECT_FALSE(vhostd::own_socket_file(plain, static_cast<gid_t>(-1), 0666).ok());
    ASSERT_EQ(stat(plain.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0600u);
    if (geteuid() == 0) {
        // A socket someone else made: refused.
        const std::string theirs = d + "/theirs.sock";
        auto t = vhostd::vhost::listen_unix(theirs, 0600, static_cast<gid_t>(-1));
        ASSERT_TRUE(t.ok());
        ASSERT_EQ(chown(theirs.c_str(), 65534, 65534), 0);
        EXPECT_FALSE(vhostd::own_socket_file(theirs, static_cast<gid_t>(-1), 0666).ok());
    }
    std::filesystem::remove_all(d);
}
