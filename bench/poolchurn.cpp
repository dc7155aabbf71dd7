// poolchurn: a pool volume's writes across kill -9 while the pool's metadata churns (issue 13's
// crash test; bench/poolchurn.sh kills and restarts vhostd around it).
//
//   poolchurn --socket VOL.sock --api API.sock --state FILE --volume POOL/NAME [--blocks 4096]
//             [--seconds 10] [--seed N] [--verify-only]
//
// First every block with a record in FILE is read back: it must hold the last write vhostd
// acknowledged, or the one that was in flight when the previous run ended (each 4 KiB block is
// stamped with its number and a sequence number, the rest a pattern of both). Then (unless
// --verify-only) it writes at QD 8 to random blocks, recording each acknowledgement in FILE (a
// shared mapping: it survives this process too), while a second thread changes the pool through
// the API: snapshots of the volume, clones of them, small volumes created, resized and deleted,
// snapshots deleted under the running volume (merged into it, or hidden while clones use them).
// It stops when vhostd goes away (the script's kill -9) or after --seconds.
// Exit 0: every block checked; 1: a block lost or wrong, or a write failed; 2: usage or set-up.
#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "rpc/client.hpp"
#include "testing/blk_driver.hpp"
#include "testing/driver_queue.hpp"
#include "testing/frontend.hpp"
#include "testing/guest_ram.hpp"
#include "vhost/protocol.hpp"
#include "virtio/blk_types.hpp"
#include "virtio/virtqueue.hpp"

using namespace vhostd;

namespace {

constexpr uint32_t kBlock = 4096;
constexpr unsigned kDepth = 8;

struct Header {
    uint64_t magic;
    uint64_t next_seq;
    uint64_t blocks;
    uint64_t writes_acked;
};
struct Entry {
    uint64_t acked;     // the last acknowledged write's sequence number (0: none)
    uint64_t inflight;  // a write sent and not acknowledged (0: none)
};
constexpr uint64_t kMagic = 0x6e7275686370'6c6fULL;

uint64_t mix(uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}
void stamp(uint8_t* p, uint64_t block, uint64_t seq) {
    auto* w = reinterpret_cast<uint64_t*>(p);
    w[0] = block;
    w[1] = seq;
    for (size_t i = 2; i < kBlock / 8; ++i) w[i] = mix(block * 1000003 + seq * 7 + i);
}
// The sequence number a block holds (0: zeroes), or -1 when it is neither zeroes nor a whole stamp.
int64_t stamped_seq(const uint8_t* p, uint64_t block) {
    auto* w = reinterpret_cast<const uint64_t*>(p);
    bool zero = true;
    for (size_t i = 0; i < kBlock / 8 && zero; ++i) zero = w[i] == 0;
    if (zero) return 0;
    if (w[0] != block) return -1;
    for (size_t i = 2; i < kBlock / 8; ++i) {
        if (w[i] != mix(block * 1000003 + w[1] * 7 + i)) return -1;
    }
    return static_cast<int64_t>(w[1]);
}

// The frontend's socket was closed by the other side (vhostd killed).
bool gone(int fd) {
    pollfd p{fd, POLLIN | POLLRDHUP, 0};
    return ::poll(&p, 1, 0) > 0 && (p.revents & (POLLHUP | POLLRDHUP | POLLERR)) != 0;
}

UniqueFd make_eventfd() { return UniqueFd(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)); }

struct Session {
    std::unique_ptr<testing::Frontend> fe;
    std::unique_ptr<testing::GuestRam> mem;
    std::unique_ptr<testing::DriverQueue> q;
    UniqueFd kick, call;
};

Result<Session> connect(const std::string& sock) {
    Session s;
    VHOSTD_ASSIGN_OR_RETURN(s.fe, testing::Frontend::connect(sock));
    VHOSTD_ASSIGN_OR_RETURN(uint64_t feats, s.fe->get_features());
    const uint64_t f = feats & (virtio::kFVersion1 | virtio::kFEventIdx | virtio::kFIndirectDesc | virtio::blk::kFFlush |
                                vhost::kFProtocolFeatures);
    VHOSTD_ASSIGN_OR_RETURN(uint64_t pf, s.fe->get_protocol_features());
    VHOSTD_TRY(s.fe->set_protocol_features(pf & (vhost::pf::kReplyAck | vhost::pf::kConfig)));
    VHOSTD_TRY(s.fe->set_owner());
    VHOSTD_TRY(s.fe->set_features(f));
    VHOSTD_ASSIGN_OR_RETURN(s.mem, testing::GuestRam::create({{0, 8ull << 20}}));
    VHOSTD_TRY(s.fe->set_mem_table(*s.mem));
    VHOSTD_ASSIGN_OR_RETURN(s.q, testing::DriverQueue::create(*s.mem, 64, (f & virtio::kFEventIdx) != 0));
    s.kick = make_eventfd();
    s.call = make_eventfd();
    VHOSTD_TRY(s.fe->setup_queue(0, *s.q, s.kick.get(), s.call.get(), true));
    return s;
}

// The API churn: until `stop`, or the API goes away.
void churn(const std::string& api, const std::string& volume, uint64_t seed, std::atomic<bool>& stop,
           std::atomic<unsigned>& ops) {
    auto c = rpc::Client::connect(api);
    if (!c.ok()) return;
    const std::string pool = volume.substr(0, volume.find('/'));
    std::mt19937_64 rng(seed);
    std::vector<std::string> snaps, clones, smalls;
    unsigned k = 0;
    auto tag = [&] { return std::to_string(seed % 100000) + "_" + std::to_string(k++); };
    // What earlier runs left: deleted first (snapshots of the running volume merge into it).
    auto list = c->call("volume_list", {{"pool", pool}});
    if (!list.ok()) return;
    for (const auto& v : (*list)["volumes"]) {
        std::string n = v["name"];
        if (n == volume) continue;
        if (v["kind"] == "snapshot") snaps.push_back(n);
        else if (n.find("/c") != std::string::npos) clones.push_back(n);
        else smalls.push_back(n);
    }
    while (!stop.load()) {
        int op = static_cast<int>(rng() % 8);
        Result<rpc::Json> r = rpc::Json();
        if (op == 0 || (op == 1 && snaps.size() < 2)) {
            std::string n = fmt::format("s{}", tag());
            r = c->call("snapshot_create", {{"volume", volume}, {"name", n}});
            if (r.ok()) snaps.push_back(volume + "@" + n);
        } else if (op == 1 || snaps.size() > 3) {
            size_t i = rng() % snaps.size();
            r = c->call("volume_delete", {{"name", snaps[i]}});
            if (r.ok()) snaps.erase(snaps.begin() + static_cast<long>(i));
        } else if (op == 2 && !snaps.empty()) {
            std::string n = fmt::format("c{}", tag());
            r = c->call("clone_create", {{"snapshot", snaps[rng() % snaps.size()]}, {"name", n}});
            if (r.ok()) clones.push_back(pool + "/" + n);
        } else if ((op == 3 || clones.size() > 2) && !clones.empty()) {
            size_t i = rng() % clones.size();
            r = c->call("volume_delete", {{"name", clones[i]}});
            if (r.ok()) clones.erase(clones.begin() + static_cast<long>(i));
        } else if (op == 4) {
            std::string n = fmt::format("t{}", tag());
            r = c->call("volume_create", {{"pool", pool}, {"name", n}, {"size", (1 + rng() % 8) << 20}, {"thin", rng() % 2 == 0}});
            if (r.ok()) smalls.push_back(pool + "/" + n);
        } else if (op == 5 && !smalls.empty()) {
            r = c->call("volume_resize", {{"name", smalls[rng() % smalls.size()]}, {"size", (1 + rng() % 8) << 20}});
        } else if ((op == 6 || smalls.size() > 3) && !smalls.empty()) {
            size_t i = rng() % smalls.size();
            r = c->call("volume_delete", {{"name", smalls[i]}});
            if (r.ok()) smalls.erase(smalls.begin() + static_cast<long>(i));
        } else {
            r = c->call("pool_list", rpc::Json::object());
        }
        if (!r.ok() && r.error().code == Errc::kClosed) return;  // vhostd is gone
        if (!r.ok() && r.error().context.find("not running") != std::string::npos) return;
        ++ops;
        std::this_thread::sleep_for(std::chrono::milliseconds(5 + rng() % 20));
    }
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"poolchurn: a pool volume's writes across kill -9, with the pool's metadata churning"};
    std::string sock, api, state_path, volume;
    uint64_t blocks = 4096, seed = 0;
    double seconds = 10;
    bool verify_only = false;
    app.add_option("--socket", sock, "the volume's vhost-user-blk socket")->required();
    app.add_option("--api", api, "vhostd's management socket (the churn)");
    app.add_option("--state", state_path, "what was written and acknowledged (created if missing)")->required();
    app.add_option("--volume", volume, "POOL/NAME of the volume (the churn snapshots it)");
    app.add_option("--blocks", blocks, "4 KiB blocks written, from block 0")->check(CLI::Range(16, 1 << 20));
    app.add_option("--seconds", seconds, "stop writing after this long (if vhostd lives)");
    app.add_option("--seed", seed, "random seed (default: from the clock)");
    app.add_flag("--verify-only", verify_only, "check the blocks, write nothing");
    CLI11_PARSE(app, argc, argv);
    if (seed == 0) seed = static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());

    int fd = ::open(state_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        std::perror("poolchurn: state");
        return 2;
    }
    const size_t bytes = sizeof(Header) + blocks * sizeof(Entry);
    if (::ftruncate(fd, static_cast<off_t>(bytes)) != 0) return 2;
    void* map = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) return 2;
    auto* hdr = static_cast<Header*>(map);
    auto* ent = reinterpret_cast<Entry*>(hdr + 1);
    if (hdr->magic != kMagic) {
        *hdr = Header{kMagic, 1, blocks, 0};
    } else if (hdr->blocks != blocks) {
        std::fprintf(stderr, "poolchurn: the state file is for %llu blocks\n", static_cast<unsigned long long>(hdr->blocks));
        return 2;
    }

    auto s = connect(sock);
    if (!s.ok()) {
        std::fprintf(stderr, "poolchurn: %s\n", s.error().describe().c_str());
        return 2;
    }
    Session& ss = s.value();

    // 1. Read back.
    auto rd = testing::make_blk_read(*ss.mem, 0, kBlock);
    if (!rd.ok()) return 2;
    uint64_t checked = 0, bad = 0, was_inflight = 0;
    for (uint64_t b = 0; b < blocks; ++b) {
        if (ent[b].acked == 0 && ent[b].inflight == 0) continue;
        rd->rearm(virtio::blk::kTIn, b * (kBlock / 512));
        if (!rd->submit(*ss.q).ok() || !ss.q->publish_and_kick(ss.kick.get()).ok()) return 2;
        auto u = ss.q->wait_used(ss.call.get(), std::chrono::seconds(10));
        if (!u || rd->status() != virtio::blk::kSOk) {
            std::fprintf(stderr, "poolchurn: reading block %llu failed\n", static_cast<unsigned long long>(b));
            return 1;
        }
        int64_t got = stamped_seq(rd->data().data(), b);
        ++checked;
        const bool ok = got >= 0 && (static_cast<uint64_t>(got) == ent[b].acked ||
                                     (ent[b].inflight != 0 && static_cast<uint64_t>(got) == ent[b].inflight));
        if (!ok) {
            if (bad++ < 10) {
                std::fprintf(stderr, "poolchurn: block %llu holds %lld, acknowledged %llu, in flight %llu\n",
                             static_cast<unsigned long long>(b), static_cast<long long>(got),
                             static_cast<unsigned long long>(ent[b].acked), static_cast<unsigned long long>(ent[b].inflight));
            }
            continue;
        }
        if (ent[b].inflight != 0) {
            ++was_inflight;
            // Whichever it holds is now what it holds.
            ent[b].acked = static_cast<uint64_t>(got);
            ent[b].inflight = 0;
        }
    }
    std::printf("poolchurn: %llu blocks checked (%llu were in flight at the end of the last run), %llu wrong\n",
                static_cast<unsigned long long>(checked), static_cast<unsigned long long>(was_inflight),
                static_cast<unsigned long long>(bad));
    std::fflush(stdout);  // the script waits for this line before it may kill vhostd
    if (bad > 0) return 1;
    if (verify_only) return 0;

    // 2. Write, with the churn beside it.
    std::atomic<bool> stop{false};
    std::atomic<unsigned> ops{0};
    std::thread churner;
    if (!api.empty() && !volume.empty()) churner = std::thread([&] { churn(api, volume, seed, stop, ops); });
    std::mt19937_64 rng(seed ^ 0x5eed);
    std::vector<testing::GuestBlkRequest> reqs;
    std::vector<uint8_t> zero(kBlock, 0);
    for (unsigned i = 0; i < kDepth; ++i) {
        auto w = testing::make_blk_write(*ss.mem, 0, zero);
        if (!w.ok()) return 2;
        reqs.push_back(std::move(w).value());
    }
    struct Slot {
        uint64_t block = 0, seq = 0;
        bool busy = false;
        uint16_t head = 0;
    };
    std::vector<Slot> slots(kDepth);
    std::vector<bool> busy_block(blocks, false);
    const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    uint64_t written = 0;
    int rc = 0;
    bool alive = true;
    while (alive && std::chrono::steady_clock::now() < end) {
        for (unsigned i = 0; i < kDepth; ++i) {
            if (slots[i].busy) continue;
            uint64_t b;
            do b = rng() % blocks; while (busy_block[b]);
            uint64_t seq = hdr->next_seq++;
            stamp(reqs[i].data().data(), b, seq);
            reqs[i].rearm(virtio::blk::kTOut, b * (kBlock / 512));
            ent[b].inflight = seq;  // before it is sent
            auto h = reqs[i].submit(*ss.q);
            if (!h.ok()) return 2;
            slots[i] = Slot{b, seq, true, *h};
            busy_block[b] = true;
        }
        if (!ss.q->publish_and_kick(ss.kick.get()).ok()) break;
        std::optional<virtio::UsedElem> u;
        for (int tries = 0; tries < 50 && !u; ++tries) {
            u = ss.q->wait_used(ss.call.get(), std::chrono::milliseconds(100));
            if (!u && gone(ss.fe->fd())) break;
        }
        if (!u) {
            alive = false;  // vhostd is gone (or stuck for 5 s: then the script's check fails)
            break;
        }
        for (std::optional<virtio::UsedElem> e = u; e; e = ss.q->pop_used()) {
            for (unsigned i = 0; i < kDepth; ++i) {
                if (!slots[i].busy || slots[i].head != e->id) continue;
                Slot& sl = slots[i];
                if (reqs[i].status() != virtio::blk::kSOk) {
                    std::fprintf(stderr, "poolchurn: write to block %llu failed (status %u)\n",
                                 static_cast<unsigned long long>(sl.block), reqs[i].status());
                    rc = 1;
                    alive = false;
                }
                ent[sl.block].acked = sl.seq;
                ent[sl.block].inflight = 0;
                busy_block[sl.block] = false;
                sl.busy = false;
                ++written;
                ++hdr->writes_acked;
            }
        }
    }
    stop.store(true);
    if (churner.joinable()) churner.join();
    std::printf("poolchurn: %llu writes acknowledged this run (%llu in all), %u pool API calls\n",
                static_cast<unsigned long long>(written), static_cast<unsigned long long>(hdr->writes_acked), ops.load());
    ::msync(map, bytes, MS_SYNC);
    return rc;
}
