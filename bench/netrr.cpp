// netrr: a TCP request/response benchmark (netperf TCP_RR style) small enough to live in the e2e
// guest's busybox initramfs: one statically linked binary, server and client.
//
//   netrr server [--bind 0.0.0.0] [--port 7700]
//   netrr client --host ADDR [--port 7700] [--size 1] [--seconds 10] [--conns 1]
//                [--connect-timeout 10] [--io-timeout 10]
//
// A transaction is one request of --size bytes from the client and a response of the same size
// from the server, on a TCP connection with TCP_NODELAY on both ends; each connection has at most
// one transaction outstanding (closed loop), --conns connections run in parallel, one thread each.
// The server echoes every request; the request carries the connection's sequence number (its low
// bytes first, then bytes derived from connection, sequence and offset), and the client checks
// every byte of every response against the request it sent: a lost, repeated, reordered or
// corrupted response is a mismatch. Connection setup (connect, a 16-byte hello that tells the server
// the size) is outside the measured window.
//
// Client output (stdout): a human-readable summary and one JSON line
//   {"tool":"netrr","mode":"client",...,"transactions":N,"tps":X,"lat_us":{"p50":..,"p99":..},
//    "mismatches":M,"errors":E,"per_conn":[...]}
// Exit status 0 iff no connection failed, no response mismatched and at least one transaction
// completed; 1 otherwise; 2 for bad arguments.
// Server output (stdout, one line per connection when it ends):
//   netrr server: connection K from A:P: S-byte requests, N transactions, closed by the client
//   netrr server: connection K from A:P: S-byte requests, N transactions, failed: REASON
// The server runs until it is killed.
//
// Addresses are numeric IPv4 or IPv6 (no name resolution: the binary is static and the guest has
// no resolver). Latencies are measured with CLOCK_MONOTONIC on the client, per transaction, into a
// log-linear histogram (16 sub-buckets per power of two: at most 6 % above the true value).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "bench/histogram.hpp"

namespace {

constexpr std::array<uint8_t, 8> kMagic{'n', 'e', 't', 'r', 'r', '/', '1', 0};
constexpr size_t kHelloSize = 16;  // magic, u32 size (LE), u32 connection index (LE)
constexpr uint32_t kMaxSize = 1u << 20;

std::mutex g_out_mu;

std::string vformat(const char* fmt, va_list ap) {
    va_list ap2;
    va_copy(ap2, ap);
    int n = std::vsnprintf(nullptr, 0, fmt, ap2);
    va_end(ap2);
    std::string s(n > 0 ? static_cast<size_t>(n) : 0, '\0');
    if (n > 0) std::vsnprintf(s.data(), s.size() + 1, fmt, ap);
    return s;
}

// printf to stdout as one line, flushed at once (the server's output goes to a log file that the
// scripts read while it runs, and it is ended with a signal).
__attribute__((format(printf, 1, 2))) void out(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    std::string line = vformat(fmt, ap);
    va_end(ap);
    std::lock_guard lock(g_out_mu);
    std::fputs(line.c_str(), stdout);
    std::fputc('\n', stdout);
    std::fflush(stdout);
}

__attribute__((format(printf, 1, 2))) void err(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    std::string line = vformat(fmt, ap);
    va_end(ap);
    std::lock_guard lock(g_out_mu);
    std::fprintf(stderr, "netrr: %s\n", line.c_str());
    std::fflush(stderr);
}

std::string errno_str(int e) { return std::strerror(e); }

// Seconds as the user would write them ("10", "0.5").
std::string secs_str(double s) {
    char b[32];
    std::snprintf(b, sizeof b, "%g s", s);
    return b;
}

uint64_t now_ns() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<uint64_t>(ts.tv_nsec);
}

using vhostd::bench::Histogram;

// --- I/O helpers -------------------------------------------------------------------------------

enum class Io { ok, eof, timeout, error };

// Reads exactly n bytes unless the peer closes first or an error/timeout happens. got: bytes read.
Io read_full(int fd, uint8_t* p, size_t n, size_t& got, int& e) {
    got = 0;
    while (got < n) {
        ssize_t r = ::read(fd, p + got, n - got);
        if (r > 0) {
            got += static_cast<size_t>(r);
        } else if (r == 0) {
            return Io::eof;
        } else if (errno == EINTR) {
            continue;
        } else {
            e = errno;
            return (e == EAGAIN || e == EWOULDBLOCK) ? Io::timeout : Io::error;
        }
    }
    return Io::ok;
}

Io write_full(int fd, const uint8_t* p, size_t n, int& e) {
    size_t done = 0;
    while (done < n) {
        ssize_t r = ::send(fd, p + done, n - done, MSG_NOSIGNAL);
        if (r >= 0) {
            done += static_cast<size_t>(r);
        } else if (errno == EINTR) {
            continue;
        } else {
            e = errno;
            return (e == EAGAIN || e == EWOULDBLOCK) ? Io::timeout : Io::error;
        }
    }
    return Io::ok;
}

void put_le32(uint8_t* p, uint32_t v) {
    for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
uint32_t get_le32(const uint8_t* p) {
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v |= uint32_t{p[i]} << (8 * i);
    return v;
}

// The request bytes of transaction seq on connection conn: the sequence number's low bytes
// (little endian, as many as fit in 8), then a splitmix64 stream of (conn, seq).
void fill_request(uint8_t* p, size_t size, uint32_t conn, uint64_t seq) {
    size_t i = 0;
    for (; i < size && i < 8; ++i) p[i] = static_cast<uint8_t>(seq >> (8 * i));
    uint64_t x = (uint64_t{conn} << 48) ^ seq;
    while (i < size) {
        x += 0x9e3779b97f4a7c15ull;
        uint64_t z = x;
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        z ^= z >> 31;
        for (int k = 0; k < 8 && i < size; ++k, ++i) p[i] = static_cast<uint8_t>(z >> (8 * k));
    }
}

struct Addr {
    sockaddr_storage ss{};
    socklen_t len = 0;
};

bool parse_addr(const std::string& host, uint16_t port, Addr& a) {
    auto* in4 = reinterpret_cast<sockaddr_in*>(&a.ss);
    if (inet_pton(AF_INET, host.c_str(), &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons(port);
        a.len = sizeof(sockaddr_in);
        return true;
    }
    auto* in6 = reinterpret_cast<sockaddr_in6*>(&a.ss);
    if (inet_pton(AF_INET6, host.c_str(), &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(port);
        a.len = sizeof(sockaddr_in6);
        return true;
    }
    return false;
}

std::string addr_str(const sockaddr_storage& ss) {
    char buf[INET6_ADDRSTRLEN] = "?";
    if (ss.ss_family == AF_INET) {
        auto* in4 = reinterpret_cast<const sockaddr_in*>(&ss);
        inet_ntop(AF_INET, &in4->sin_addr, buf, sizeof buf);
        return std::string(buf) + ":" + std::to_string(ntohs(in4->sin_port));
    }
    if (ss.ss_family == AF_INET6) {
        auto* in6 = reinterpret_cast<const sockaddr_in6*>(&ss);
        inet_ntop(AF_INET6, &in6->sin6_addr, buf, sizeof buf);
        return "[" + std::string(buf) + "]:" + std::to_string(ntohs(in6->sin6_port));
    }
    return "?";
}

bool set_nodelay(int fd) {
    int one = 1;
    return setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == 0;
}

bool set_timeouts(int fd, double secs) {
    timeval tv{};
    tv.tv_sec = static_cast<time_t>(secs);
    tv.tv_usec = static_cast<suseconds_t>((secs - static_cast<double>(tv.tv_sec)) * 1e6);
    return setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) == 0 &&
           setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) == 0;
}

// --- server ------------------------------------------------------------------------------------

void serve_connection(int fd, uint64_t id, std::string peer) {
    std::string what;
    uint64_t n = 0;
    uint32_t size = 0;
    int e = 0;
    size_t got = 0;
    std::array<uint8_t, kHelloSize> hello{};
    if (!set_nodelay(fd)) {
        what = "failed: setsockopt(TCP_NODELAY): " + errno_str(errno);
    } else if (Io r = read_full(fd, hello.data(), hello.size(), got, e); r != Io::ok) {
        what = r == Io::eof ? "failed: the client closed before its hello (" + std::to_string(got) + " of 16 bytes)"
                            : "failed: reading the hello: " + errno_str(e);
    } else if (!std::equal(kMagic.begin(), kMagic.end(), hello.begin())) {
        what = "failed: not a netrr client (bad hello magic)";
    } else if (size = get_le32(hello.data() + 8); size < 1 || size > kMaxSize) {
        what = "failed: bad request size " + std::to_string(size) + " in the hello";
    } else if (r = write_full(fd, hello.data(), hello.size(), e); r != Io::ok) {
        what = "failed: answering the hello: " + errno_str(e);
    } else {
        std::vector<uint8_t> buf(size);
        for (;;) {
            r = read_full(fd, buf.data(), size, got, e);
            if (r == Io::eof && got == 0) {
                what = "closed by the client";
                break;
            }
            if (r == Io::eof) {
                what = "failed: the client closed in the middle of a request (" + std::to_string(got) + " of " +
                       std::to_string(size) + " bytes)";
                break;
            }
            if (r != Io::ok) {
                what = "failed: reading a request: " + errno_str(e);
                break;
            }
            if (write_full(fd, buf.data(), size, e) != Io::ok) {
                what = "failed: writing a response: " + errno_str(e);
                break;
            }
            ++n;
        }
    }
    ::close(fd);
    out("netrr server: connection %llu from %s: %u-byte requests, %llu transactions, %s",
        static_cast<unsigned long long>(id), peer.c_str(), size, static_cast<unsigned long long>(n), what.c_str());
}

int run_server(const std::string& bind_addr, uint16_t port) {
    Addr a;
    if (!parse_addr(bind_addr, port, a)) {
        err("server: --bind '%s' is not a numeric IPv4 or IPv6 address", bind_addr.c_str());
        return 2;
    }
    int ls = ::socket(a.ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (ls < 0) {
        err("server: socket: %s", errno_str(errno).c_str());
        return 1;
    }
    int one = 1;
    if (setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0) {
        err("server: setsockopt(SO_REUSEADDR): %s", errno_str(errno).c_str());
        return 1;
    }
    if (::bind(ls, reinterpret_cast<sockaddr*>(&a.ss), a.len) != 0) {
        err("server: bind %s: %s", addr_str(a.ss).c_str(), errno_str(errno).c_str());
        return 1;
    }
    if (::listen(ls, 128) != 0) {
        err("server: listen on %s: %s", addr_str(a.ss).c_str(), errno_str(errno).c_str());
        return 1;
    }
    out("netrr server: listening on %s", addr_str(a.ss).c_str());
    for (uint64_t id = 1;; ) {
        sockaddr_storage peer{};
        socklen_t plen = sizeof peer;
        int fd = ::accept4(ls, reinterpret_cast<sockaddr*>(&peer), &plen, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO) continue;
            err("server: accept on %s: %s", addr_str(a.ss).c_str(), errno_str(errno).c_str());
            return 1;
        }
        std::thread(serve_connection, fd, id++, addr_str(peer)).detach();
    }
}

// --- client ------------------------------------------------------------------------------------

struct ClientOptions {
    std::string host;
    uint16_t port = 7700;
    uint32_t size = 1;
    double seconds = 10;
    uint32_t conns = 1;
    double connect_timeout = 10;
    double io_timeout = 10;
};

struct ConnResult {
    Histogram lat;
    uint64_t transactions = 0;
    uint64_t mismatches = 0;
    std::string error;           // empty: no error
    std::string first_mismatch;  // description of the first mismatch
    uint64_t end_ns = 0;
};

// Connects (retrying refusals and unreachable routes until the deadline) and exchanges the hello.
// Returns the fd, or -1 with *error set.
int client_connect(const ClientOptions& o, const Addr& a, uint32_t index, std::string& error) {
    uint64_t deadline = now_ns() + static_cast<uint64_t>(o.connect_timeout * 1e9);
    int fd = -1;
    for (;;) {
        fd = ::socket(a.ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            error = "socket: " + errno_str(errno);
            return -1;
        }
        // SO_SNDTIMEO bounds connect() too (it then fails with EINPROGRESS).
        if (!set_timeouts(fd, o.io_timeout)) {
            error = "setsockopt(SO_RCVTIMEO/SO_SNDTIMEO): " + errno_str(errno);
            ::close(fd);
            return -1;
        }
        int r;
        do {
            r = ::connect(fd, reinterpret_cast<const sockaddr*>(&a.ss), a.len);
        } while (r != 0 && errno == EINTR);
        if (r == 0) break;
        int e = errno;
        ::close(fd);
        bool retry = e == ECONNREFUSED || e == ENETUNREACH || e == EHOSTUNREACH || e == ETIMEDOUT ||
                     e == EINPROGRESS || e == EAGAIN;
        if (!retry || now_ns() >= deadline) {
            error = "connect to " + addr_str(a.ss) + ": " + (e == EINPROGRESS ? "timed out" : errno_str(e)) +
                    (retry ? " (gave up after " + secs_str(o.connect_timeout) + ")" : "");
            return -1;
        }
        usleep(100'000);
    }
    if (!set_nodelay(fd)) {
        error = "setsockopt(TCP_NODELAY): " + errno_str(errno);
        ::close(fd);
        return -1;
    }
    std::array<uint8_t, kHelloSize> hello{}, reply{};
    std::copy(kMagic.begin(), kMagic.end(), hello.begin());
    put_le32(hello.data() + 8, o.size);
    put_le32(hello.data() + 12, index);
    int e = 0;
    size_t got = 0;
    if (write_full(fd, hello.data(), hello.size(), e) != Io::ok) {
        error = "sending the hello: " + errno_str(e);
    } else if (Io r = read_full(fd, reply.data(), reply.size(), got, e); r != Io::ok) {
        error = r == Io::eof ? "the server closed the connection before answering the hello"
                : r == Io::timeout ? "no answer to the hello within " + secs_str(o.io_timeout)
                                   : "reading the hello answer: " + errno_str(e);
    } else if (reply != hello) {
        error = "the server's answer to the hello is wrong (not a netrr server?)";
    } else {
        return fd;
    }
    ::close(fd);
    return -1;
}

void client_loop(int fd, uint32_t conn, const ClientOptions& o, uint64_t deadline, ConnResult& res) {
    std::vector<uint8_t> req(o.size), resp(o.size);
    uint64_t t = now_ns();
    for (uint64_t seq = 0; t < deadline; ++seq) {
        fill_request(req.data(), o.size, conn, seq);
        int e = 0;
        size_t got = 0;
        if (Io r = write_full(fd, req.data(), o.size, e); r != Io::ok) {
            res.error = "transaction " + std::to_string(seq) + ": sending the request: " +
                        (r == Io::timeout ? "blocked for " + secs_str(o.io_timeout) : errno_str(e));
            break;
        }
        Io r = read_full(fd, resp.data(), o.size, got, e);
        uint64_t t2 = now_ns();
        if (r != Io::ok) {
            res.error = "transaction " + std::to_string(seq) + ": " +
                        (r == Io::eof       ? "the server closed the connection (" + std::to_string(got) + " of " +
                                                  std::to_string(o.size) + " response bytes read)"
                         : r == Io::timeout ? "no response within " + secs_str(o.io_timeout)
                                            : "reading the response: " + errno_str(e));
            break;
        }
        if (resp != req) {
            if (res.mismatches++ == 0) {
                size_t i = 0;
                while (resp[i] == req[i]) ++i;
                char b[160];
                std::snprintf(b, sizeof b, "transaction %llu: response byte %zu is 0x%02x, the request had 0x%02x",
                              static_cast<unsigned long long>(seq), i, resp[i], req[i]);
                res.first_mismatch = b;
            }
        }
        res.lat.add(t2 - t);
        ++res.transactions;
        t = t2;
    }
    res.end_ns = now_ns();
}

int run_client(const ClientOptions& o) {
    Addr a;
    if (!parse_addr(o.host, o.port, a)) {
        err("client: --host '%s' is not a numeric IPv4 or IPv6 address", o.host.c_str());
        return 2;
    }
    out("netrr client: %s, %u connection(s), %u-byte requests and responses, %g s", addr_str(a.ss).c_str(), o.conns,
        o.size, o.seconds);
    std::vector<int> fds;
    for (uint32_t c = 0; c < o.conns; ++c) {
        std::string error;
        int fd = client_connect(o, a, c, error);
        if (fd < 0) {
            err("client: connection %u: %s", c, error.c_str());
            for (int f : fds) ::close(f);
            return 1;
        }
        fds.push_back(fd);
    }
    std::vector<ConnResult> res(o.conns);
    uint64_t start = now_ns();
    uint64_t deadline = start + static_cast<uint64_t>(o.seconds * 1e9);
    std::vector<std::thread> threads;
    for (uint32_t c = 0; c < o.conns; ++c)
        threads.emplace_back(client_loop, fds[c], c, std::cref(o), deadline, std::ref(res[c]));
    for (auto& t : threads) t.join();
    for (int f : fds) ::close(f);

    Histogram lat;
    uint64_t total = 0, mismatches = 0, errors = 0, end = start;
    std::string per_conn;
    for (uint32_t c = 0; c < o.conns; ++c) {
        const auto& r = res[c];
        lat.merge(r.lat);
        total += r.transactions;
        mismatches += r.mismatches;
        end = std::max(end, r.end_ns);
        per_conn += (c ? "," : "") + std::to_string(r.transactions);
        if (!r.error.empty()) {
            ++errors;
            err("client: connection %u failed after %llu transactions: %s", c,
                static_cast<unsigned long long>(r.transactions), r.error.c_str());
        }
        if (r.mismatches)
            err("client: connection %u: %llu of %llu responses did not match their request; first: %s", c,
                static_cast<unsigned long long>(r.mismatches), static_cast<unsigned long long>(r.transactions),
                r.first_mismatch.c_str());
    }
    double secs = static_cast<double>(end - start) / 1e9;
    double tps = secs > 0 ? static_cast<double>(total) / secs : 0;
    auto us = [](double ns) { return ns / 1000.0; };
    double p50 = us(static_cast<double>(lat.percentile(50))), p90 = us(static_cast<double>(lat.percentile(90)));
    double p99 = us(static_cast<double>(lat.percentile(99))), avg = us(lat.avg());
    double mn = us(static_cast<double>(lat.min())), mx = us(static_cast<double>(lat.max()));
    out("netrr client: %llu transactions in %.2f s: %.1f transactions/s; latency us: p50 %.1f p90 %.1f p99 %.1f "
        "avg %.1f min %.1f max %.1f; mismatches %llu, failed connections %llu",
        static_cast<unsigned long long>(total), secs, tps, p50, p90, p99, avg, mn, mx,
        static_cast<unsigned long long>(mismatches), static_cast<unsigned long long>(errors));
    out("{\"tool\":\"netrr\",\"mode\":\"client\",\"server\":\"%s\",\"size\":%u,\"conns\":%u,\"seconds\":%.3f,"
        "\"transactions\":%llu,\"tps\":%.1f,\"lat_us\":{\"p50\":%.1f,\"p90\":%.1f,\"p99\":%.1f,\"avg\":%.1f,"
        "\"min\":%.1f,\"max\":%.1f},\"mismatches\":%llu,\"errors\":%llu,\"per_conn\":[%s]}",
        addr_str(a.ss).c_str(), o.size, o.conns, secs, static_cast<unsigned long long>(total), tps, p50, p90, p99, avg,
        mn, mx, static_cast<unsigned long long>(mismatches), static_cast<unsigned long long>(errors),
        per_conn.c_str());
    if (total == 0 && errors == 0) err("client: no transaction completed in %.2f s", secs);
    return (errors == 0 && mismatches == 0 && total > 0) ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App cli{"netrr - TCP request/response benchmark (netperf TCP_RR style), server and client"};
    cli.require_subcommand(1);
    std::string bind_addr = "0.0.0.0";
    uint16_t server_port = 7700;
    auto* server = cli.add_subcommand("server", "echo every request; runs until killed");
    server->add_option("--bind", bind_addr, "numeric address to listen on")->capture_default_str();
    server->add_option("--port", server_port, "TCP port")->capture_default_str();

    ClientOptions o;
    auto* client = cli.add_subcommand("client", "run transactions against a netrr server, verify every response");
    client->add_option("--host", o.host, "the server's numeric IPv4 or IPv6 address")->required();
    client->add_option("--port", o.port, "the server's TCP port")->capture_default_str();
    client->add_option("--size", o.size, "request and response size in bytes")
        ->check(CLI::Range(1u, kMaxSize))
        ->capture_default_str();
    client->add_option("--seconds", o.seconds, "measured time")->check(CLI::Range(0.01, 86400.0))->capture_default_str();
    client->add_option("--conns", o.conns, "parallel connections, one transaction outstanding each")
        ->check(CLI::Range(1u, 1024u))
        ->capture_default_str();
    client->add_option("--connect-timeout", o.connect_timeout, "keep retrying refused connections this long (s)")
        ->check(CLI::Range(0.0, 3600.0))
        ->capture_default_str();
    client->add_option("--io-timeout", o.io_timeout, "a request or response that takes longer is an error (s)")
        ->check(CLI::Range(0.01, 3600.0))
        ->capture_default_str();
    CLI11_PARSE(cli, argc, argv);

    signal(SIGPIPE, SIG_IGN);
    if (server->parsed()) return run_server(bind_addr, server_port);
    return run_client(o);
}
