// Fuzzes what an NBD server sends: the nbd backend (libnbd underneath, vhostd's connection,
// reconnect and timeout handling on top) against an in-process server whose handshake answers and
// replies come from the input. The replies carry the cookies of the requests they answer (patched
// in, so the fuzzer need not guess them) unless the input asks for a wrong one; once the input is
// used up the server answers correctly, so a broken connection is followed by a reconnect that
// finishes the requests. The backend lives across inputs, as it does in vhostd: a hostile reply
// breaks the connection of the next input too, and every reconnect meets a fuzzed handshake.
//
// The check beyond the sanitizers: every request completes (with data or an error) within its
// timeout (1 s) plus a reconnect; one that does not is a lost request and aborts.
//
// VHOSTD_FUZZ_LOG=1 prints the backend's log and what the server does, for reading one input.
//
// Input: [u8 handshake flags][u64 export size][u16 transmission flags][u32 min][u32 pref][u32 max]
//        then reply ops, each [u8 op][operands...] (see reply()).
// handshake flags: 1 accept structured replies, 2 send NBD_INFO_BLOCK_SIZE (min/pref/max),
//                  4 the handshake ends with an error instead of the export.
// Only the input's first handshake (a reconnect after its replies broke the connection) is
// fuzzed; later ones are correct, so that a bad handshake costs a reconnect, not a timeout.
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <map>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include "backends/nbd_backend.hpp"
#include "core/log.hpp"

using namespace vhostd;

namespace {

constexpr uint64_t kNbdMagic = 0x4E42444D41474943ull, kIHaveOpt = 0x49484156454F5054ull;
constexpr uint64_t kRepMagic = 0x3E889045565A9ull;
constexpr uint32_t kReqMagic = 0x25609513, kSimpleMagic = 0x67446698, kStructMagic = 0x668E33EF;

// Big-endian writers into a byte vector.
void be(std::vector<uint8_t>& b, uint64_t v, int bytes) {
    for (int i = bytes - 1; i >= 0; --i) b.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
uint64_t get_be(const uint8_t* p, int bytes) {
    uint64_t v = 0;
    for (int i = 0; i < bytes; ++i) v = (v << 8) | p[i];
    return v;
}

// The input, read by the server thread (one connection at a time) while the fuzzer waits.
struct Script {
    std::mutex mu;
    std::vector<uint8_t> hs;   // handshake part (23 bytes): the input's first handshake
    std::vector<uint8_t> good; // a correct export: every later handshake of the input
    std::vector<uint8_t> ops;  // reply ops
    size_t pos = 0;
    int fuzzed_handshakes = 0;  // left for this input (1): later reconnects meet `good`
    bool take(void* out, size_t n) {
        if (pos + n > ops.size()) {
            pos = ops.size();
            return false;
        }
        std::memcpy(out, ops.data() + pos, n);
        pos += n;
        return true;
    }
};

class Server {
public:
    explicit Server(Script& s) : s_(s) {
        path_ = "/tmp/vhostd-fuzz-nbd." + std::to_string(getpid()) + ".sock";
        unlink(path_.c_str());
        lfd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_un a{};
        a.sun_family = AF_UNIX;
        std::strncpy(a.sun_path, path_.c_str(), sizeof(a.sun_path) - 1);
        if (lfd_ < 0 || bind(lfd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 || listen(lfd_, 4) != 0) abort();
        thread_ = std::thread([this] { run(); });
    }
    const std::string& path() const { return path_; }

private:
    bool send_all(int fd, const std::vector<uint8_t>& b) {
        size_t off = 0;
        while (off < b.size()) {
            ssize_t n = ::send(fd, b.data() + off, b.size() - off, MSG_NOSIGNAL);
            if (n <= 0) return false;
            off += static_cast<size_t>(n);
        }
        return true;
    }
    bool recv_all(int fd, void* p, size_t n) {
        auto* c = static_cast<uint8_t*>(p);
        while (n > 0) {
            ssize_t r = ::recv(fd, c, n, 0);
            if (r <= 0) return false;
            c += r;
            n -= static_cast<size_t>(r);
        }
        return true;
    }
    void run() {
        for (;;) {
            int fd = accept4(lfd_, nullptr, nullptr, SOCK_CLOEXEC);
            if (fd < 0) continue;
            serve(fd);
            close(fd);
        }
    }
    // The newstyle handshake, answers from the script's handshake part.
    bool handshake(int fd, bool& structured) {
        std::vector<uint8_t> hs;
        {
            std::lock_guard lk(s_.mu);
            hs = s_.fuzzed_handshakes > 0 ? s_.hs : s_.good;
            if (s_.fuzzed_handshakes > 0) --s_.fuzzed_handshakes;
        }
        const bool refuse = hs[0] & 4;
        const uint8_t flags = hs[0];
        std::vector<uint8_t> b;
        be(b, kNbdMagic, 8);
        be(b, kIHaveOpt, 8);
        be(b, 3, 2);  // FIXED_NEWSTYLE | NO_ZEROES
        if (!send_all(fd, b)) return false;
        uint8_t cflags[4];
        if (!recv_all(fd, cflags, 4)) return false;
        for (int i = 0; i < 16; ++i) {
            uint8_t h[16];
            if (!recv_all(fd, h, 16)) return false;
            const uint32_t opt = static_cast<uint32_t>(get_be(h + 8, 4)), len = static_cast<uint32_t>(get_be(h + 12, 4));
            if (get_be(h, 8) != kIHaveOpt || len > 4096) return false;
            std::vector<uint8_t> data(len);
            if (len && !recv_all(fd, data.data(), len)) return false;
            b.clear();
            auto rep = [&](uint32_t type, const std::vector<uint8_t>& payload) {
                be(b, kRepMagic, 8);
                be(b, opt, 4);
                be(b, type, 4);
                be(b, payload.size(), 4);
                b.insert(b.end(), payload.begin(), payload.end());
            };
            if (opt == 8) {  // STRUCTURED_REPLY
                structured = flags & 1;
                rep(structured ? 1 : 0x80000001u, {});
            } else if (opt == 7 || opt == 6) {  // GO, INFO
                if (refuse) {
                    rep(0x80000005u, {});  // ERR_UNKNOWN (no such export)
                    return send_all(fd, b) && false;
                }
                std::vector<uint8_t> info;
                be(info, 0, 2);                       // NBD_INFO_EXPORT
                info.insert(info.end(), hs.begin() + 1, hs.begin() + 11);  // size, transmission flags
                rep(3, info);
                if (flags & 2) {
                    std::vector<uint8_t> bs;
                    be(bs, 3, 2);                     // NBD_INFO_BLOCK_SIZE
                    bs.insert(bs.end(), hs.begin() + 11, hs.begin() + 23);
                    rep(3, bs);
                }
                rep(1, {});
                if (!send_all(fd, b)) return false;
                if (opt == 7) return true;
                continue;
            } else {
                rep(0x80000001u, {});  // ERR_UNSUP
            }
            if (!send_all(fd, b)) return false;
        }
        return false;
    }
    struct Req {
        uint16_t type;
        uint64_t offset;
        uint32_t length;
        bool chunked;  // a structured chunk without DONE went out for it
    };
    // The reply a correct server sends (for a request left with chunks: the closing one).
    static void correct(std::vector<uint8_t>& b, bool structured, uint64_t cookie, const Req& r) {
        const bool read = r.type == 0;
        if (r.chunked) {  // NONE, DONE
            be(b, kStructMagic, 4);
            be(b, 1, 2);
            be(b, 0, 2);
            be(b, cookie, 8);
            be(b, 0, 4);
            return;
        }
        if (read && structured) {  // OFFSET_DATA, DONE
            be(b, kStructMagic, 4);
            be(b, 1, 2);
            be(b, 1, 2);
            be(b, cookie, 8);
            be(b, 8 + r.length, 4);
            be(b, r.offset, 8);
        } else {
            be(b, kSimpleMagic, 4);
            be(b, 0, 4);
            be(b, cookie, 8);
        }
        if (read) b.resize(b.size() + r.length);
    }
    // Answers one request: from the script while it lasts, then correctly. Once the script is
    // used up, every request the script left unanswered (a wrong cookie, raw bytes, chunks
    // without DONE) gets its correct reply too: no request waits for its timeout.
    bool reply(int fd, bool structured, uint64_t cookie, std::map<uint64_t, Req>& open) {
        std::lock_guard lk(s_.mu);
        std::vector<uint8_t> b;
        uint8_t op = 0;
        const Req& req = open[cookie];
        const bool read = req.type == 0;
        const uint32_t length = req.length;
        if (getenv("VHOSTD_FUZZ_LOG") != nullptr)
            fprintf(stderr, "server: request type %u cookie %llu, script at %zu of %zu\n", req.type,
                    static_cast<unsigned long long>(cookie), s_.pos, s_.ops.size());
        if (!s_.take(&op, 1)) {
            for (auto& [c, r] : open) correct(b, structured, c, r);
            open.clear();
            return send_all(fd, b);
        }
        bool completed = false;
        uint8_t raw[16] = {};
        switch (op % 8) {
            case 0: {  // simple reply, error from the input, data for a read
                s_.take(raw, 4);
                be(b, kSimpleMagic, 4);
                b.insert(b.end(), raw, raw + 4);
                be(b, cookie, 8);
                if (read && get_be(raw, 4) == 0) b.resize(b.size() + length);
                completed = true;
                break;
            }
            case 1: {  // OFFSET_DATA chunk: flags, offset and size from the input
                s_.take(raw, 2 + 8 + 2);
                const uint64_t n = get_be(raw + 10, 2);
                be(b, kStructMagic, 4);
                b.insert(b.end(), raw, raw + 2);
                be(b, 1, 2);
                be(b, cookie, 8);
                be(b, 8 + n, 4);
                b.insert(b.end(), raw + 2, raw + 10);
                b.resize(b.size() + n);
                break;
            }
            case 2: {  // OFFSET_HOLE chunk
                s_.take(raw, 2 + 8 + 4);
                be(b, kStructMagic, 4);
                b.insert(b.end(), raw, raw + 2);
                be(b, 2, 2);
                be(b, cookie, 8);
                be(b, 12, 4);
                b.insert(b.end(), raw + 2, raw + 14);
                break;
            }
            case 3: {  // ERROR or ERROR_OFFSET chunk, with a message length from the input
                s_.take(raw, 2 + 2 + 4 + 1);
                const uint32_t msg = raw[8];
                be(b, kStructMagic, 4);
                b.insert(b.end(), raw, raw + 2);
                be(b, 0x8000 | (raw[2] & 1), 2);
                be(b, cookie, 8);
                be(b, 6 + msg + ((raw[2] & 1) ? 8 : 0), 4);
                b.insert(b.end(), raw + 4, raw + 8);  // error
                be(b, msg, 2);
                b.resize(b.size() + msg + ((raw[2] & 1) ? 8 : 0), 'x');
                break;
            }
            case 4: {  // NONE chunk with the input's flags (DONE or not)
                s_.take(raw, 2);
                be(b, kStructMagic, 4);
                b.insert(b.end(), raw, raw + 2);
                be(b, 0, 2);
                be(b, cookie, 8);
                be(b, 0, 4);
                break;
            }
            case 5: {  // raw bytes from the input
                uint8_t n = 0;
                s_.take(&n, 1);
                b.resize(n);
                if (n) s_.take(b.data(), n);
                break;
            }
            case 6: {  // a simple reply to a cookie from the input
                s_.take(raw, 8);
                be(b, kSimpleMagic, 4);
                be(b, 0, 4);
                b.insert(b.end(), raw, raw + 8);
                break;
            }
            case 7:  // hang up
                return false;
        }
        const uint8_t kind = op % 8;
        if (kind >= 1 && kind <= 4) {
            if (raw[1] & 1) completed = true;  // DONE
            else open[cookie].chunked = true;
        }
        if (completed) open.erase(cookie);
        if (s_.pos >= s_.ops.size()) {
            for (auto& [c, r] : open) correct(b, structured, c, r);
            open.clear();
        }
        return send_all(fd, b);
    }
    void serve(int fd) {
        bool structured = false;
        std::map<uint64_t, Req> open;  // requests of this connection not answered in full
        if (!handshake(fd, structured)) return;
        if (getenv("VHOSTD_FUZZ_LOG") != nullptr) fprintf(stderr, "server: connection ready, structured %d\n", structured);
        for (;;) {
            // No request for 5 ms while some are unanswered (the client sends no more until
            // those finish): the script is over; answer them correctly.
            pollfd p{fd, POLLIN, 0};
            if (!open.empty() && ::poll(&p, 1, 5) == 0) {
                std::vector<uint8_t> b;
                {
                    std::lock_guard lk(s_.mu);
                    s_.pos = s_.ops.size();
                }
                for (auto& [c, r] : open) correct(b, structured, c, r);
                open.clear();
                if (!send_all(fd, b)) return;
                continue;
            }
            uint8_t h[28];
            if (!recv_all(fd, h, 28)) return;
            if (get_be(h, 4) != kReqMagic) return;
            const auto type = static_cast<uint16_t>(get_be(h + 6, 2));
            const uint64_t cookie = get_be(h + 8, 8), offset = get_be(h + 16, 8);
            const auto length = static_cast<uint32_t>(get_be(h + 24, 4));
            if (type == 1) {  // WRITE: its payload
                if (length > (64u << 20)) return;
                std::vector<uint8_t> sink(length);
                if (!recv_all(fd, sink.data(), length)) return;
            }
            if (type == 2) return;  // DISC
            if (length > (64u << 20)) return;
            open[cookie] = Req{type, offset, length, false};
            if (!reply(fd, structured, cookie, open)) return;
        }
    }

    Script& s_;
    std::string path_;
    int lfd_ = -1;
    std::thread thread_;
};

struct Done final : Completion {
    std::atomic<bool> done{false};
    int32_t res = 0;
    void complete(int32_t r) override {
        res = r;
        done = true;
    }
};

struct Env {
    Script script;
    Server server{script};
    Reactor reactor{0, ReactorConfig{.mode = PollMode::kNever, .poll_budget = std::chrono::microseconds(0), .cpu = -1, .ring_entries = 256}};
    std::unique_ptr<backends::NbdBackend> backend;
    std::unique_ptr<backends::BlockChannel> channel;
    std::vector<uint8_t> buf = std::vector<uint8_t>(2 * 4096);
    Env() {
        spdlog::set_level(getenv("VHOSTD_FUZZ_LOG") != nullptr ? spdlog::level::debug : spdlog::level::off);
        if (!reactor.start().ok()) abort();
        // The first connection: a plain export (64 MiB, flush and FUA), structured replies.
        script.good.assign(23, 0);
        script.good[0] = 1;
        const uint64_t size = 64ull << 20;
        for (int i = 0; i < 8; ++i) script.good[1 + i] = static_cast<uint8_t>(size >> (56 - 8 * i));
        script.good[10] = 1 | 4 | 8;  // HAS_FLAGS | SEND_FLUSH | SEND_FUA
        backends::NbdOptions o;
        o.uri = "nbd+unix:///?socket=" + server.path();
        o.timeout_s = 1;
        o.connect_timeout_s = 5;
        o.tick_us = 1000;           // a broken connection is noticed and remade within milliseconds
        o.first_backoff_us = 1000;
        auto b = backends::NbdBackend::open(o);
        if (!b.ok()) abort();
        backend = std::move(b).value();
        auto c = backend->open_channel(reactor, 8);
        if (!c.ok()) abort();
        channel = std::move(c).value();
    }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static Env& env = *new Env;  // lives to the end: its server thread and reactor never stop
    if (size < 23) return 0;
    {
        std::lock_guard lk(env.script.mu);
        env.script.hs.assign(data, data + 23);
        env.script.ops.assign(data + 23, data + size);
        env.script.pos = 0;
        env.script.fuzzed_handshakes = 1;
    }
    iovec rd{env.buf.data(), 4096}, wr{env.buf.data() + 4096, 4096};
    backends::BlockRequest reqs[3];
    reqs[0] = backends::BlockRequest{backends::BlockOp::kRead, &rd, 1, 0, 4096, false};
    reqs[1] = backends::BlockRequest{backends::BlockOp::kWrite, &wr, 1, 4096, 4096, true};
    reqs[2] = backends::BlockRequest{backends::BlockOp::kFlush, nullptr, 0, 0, 0, false};
    Done done[3];
    bool submitted[3] = {};
    env.reactor.run_sync([&] {
        for (int i = 0; i < 3; ++i) submitted[i] = env.channel->submit(reqs[i], &done[i]).ok();
    });
    // Every submitted request completes: within its 1 s timeout, plus a reconnect's back-off
    // (up to 2 s after many failed attempts) and a tick.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(6);
    for (;;) {
        bool all = true;
        env.reactor.run_sync([&] { env.channel->poll(); });
        for (int i = 0; i < 3; ++i) all = all && (!submitted[i] || done[i].done);
        if (all) break;
        if (std::chrono::steady_clock::now() > deadline) {
            fprintf(stderr, "fuzz_nbd_replies: a request never completed\n");
            abort();
        }
        std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
    return 0;
}
