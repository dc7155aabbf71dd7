// Fuzzes the vhost-user message layer: a sequence of frontend messages (header + payload,
// optionally with memfds attached) is fed to a blk device with a null backend. Replies go to
// a socketpair that is drained after every message. Any crash, leak, hang or sanitizer report
// is a bug.
//
// Input: repeated records of [u8 nfds][MsgHeader][payload of hdr.size bytes (truncated at EOF)].
// nfds: low 2 bits = number of memfds attached; bit 7 = seal them against resizing (so that
// SET_INFLIGHT_FD can get past its seal check).
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

#include "backends/null_backend.hpp"
#include "core/log.hpp"
#include "vhost/session.hpp"
#include "virtio/blk_device.hpp"

using namespace vhostd;

namespace {

struct Env {
    Reactor reactor{0, ReactorConfig{.mode = PollMode::kNever, .poll_budget = std::chrono::microseconds(0), .cpu = -1, .ring_entries = 256}};
    std::unique_ptr<vhost::Session> dev;
    Env() {
        spdlog::set_level(spdlog::level::off);
        if (!reactor.start().ok()) abort();
        auto backend = std::make_shared<backends::NullBackend>(1 << 20, 512, false);
        std::vector<Reactor*> rs(2, &reactor);
        dev = std::make_unique<vhost::Session>(
            std::make_unique<virtio::BlkDevice>("fuzz", backend, virtio::BlkOptions{2, "fuzz"}, rs));
    }
};

int make_memfd(size_t size, bool seal) {
    int fd = memfd_create("fuzz", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd >= 0 && ftruncate(fd, static_cast<off_t>(size)) != 0) {
        close(fd);
        return -1;
    }
    if (fd >= 0 && seal) fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW);
    return fd;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static Env env;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) != 0) return 0;
    vhost::Connection conn{UniqueFd(sv[0])};
    UniqueFd peer(sv[1]);
    auto m = std::make_unique<vhost::Message>();
    size_t pos = 0;
    for (int iter = 0; iter < 64 && pos + 1 + sizeof(vhost::MsgHeader) <= size; ++iter) {
        bool seal = (data[pos] & 0x80) != 0;
        uint8_t nfds = data[pos++] % 4;
        m->drop_fds();
        std::memcpy(&m->hdr, data + pos, sizeof(m->hdr));
        pos += sizeof(m->hdr);
        m->hdr.flags = (m->hdr.flags & ~vhost::kVersionMask & ~vhost::kFlagReply) | vhost::kVersion;
        uint32_t len = std::min<uint32_t>(m->hdr.size, vhost::kMaxPayload);
        len = static_cast<uint32_t>(std::min<size_t>(len, size - pos));
        m->hdr.size = len;
        std::memcpy(m->payload.data(), data + pos, len);
        pos += len;
        for (uint8_t i = 0; i < nfds; ++i) {
            // Kick/call fds must be eventfd-like for the reactor; memfds for memory. A memfd
            // works for both (reads of it never block).
            m->fds[i].reset(make_memfd(1 << 16, seal));
            m->nfds = i + 1;
        }
        bool keep = env.dev->handle_for_test(conn, *m);
        char buf[4096];
        while (read(peer.get(), buf, sizeof(buf)) > 0) {
        }
        if (!keep) break;
    }
    env.dev->reset_for_test();
    return 0;
}
