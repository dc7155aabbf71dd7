// virtio-net over a real tap: the daemon's net device in-process, a driver-side guest over memfd
// memory on one side, and the kernel's view of the tap on the other (an AF_PACKET socket bound
// to it, with virtio-net headers, so it can send and see GSO frames). Each test process moves
// into a network namespace of its own first: no traffic leaves it.
#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <map>
#include <thread>
#include <optional>

#include "backends/tap.hpp"
#include "testing/blk_fixture.hpp"
#include "virtio/net_device.hpp"
#include "virtio/net_types.hpp"

namespace vhostd::testing {
namespace {

namespace net = virtio::net;

constexpr uint16_t kEtherTest = 0x88b5;  // IEEE "local experimental"
constexpr uint8_t kGuestMac[6] = {0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc};

constexpr uint64_t kNetGuestFeatures = virtio::kFVersion1 | virtio::kFEventIdx | virtio::kFIndirectDesc | net::kFMac |
                                       net::kFMtu | net::kFMrgRxbuf | net::kFCsum | net::kFGuestCsum |
                                       net::kFHostTso4 | net::kFHostTso6 | net::kFGuestTso4 | net::kFGuestTso6 |
                                       net::kFHostEcn | net::kFGuestEcn | net::kFHostUfo | net::kFGuestUfo | net::kFStatus |
                                       net::kFMq | net::kFCtrlVq | vhost::kFProtocolFeatures;

// Moves this test process into a fresh network namespace (once) with IPv6 off, so that the
// kernel sends nothing of its own through our taps.
bool enter_private_netns() {
    static int state = 0;  // 0: not tried, 1: ok, 2: failed
    if (state == 0) {
        state = ::unshare(CLONE_NEWNET) == 0 ? 1 : 2;
        if (state == 1) {
            for (const char* p : {"/proc/sys/net/ipv6/conf/all/disable_ipv6", "/proc/sys/net/ipv6/conf/default/disable_ipv6"}) {
                if (FILE* f = fopen(p, "w")) {
                    fputs("1", f);
                    fclose(f);
                }
            }
        }
    }
    return state == 1;
}

std::vector<uint8_t> test_frame(size_t len, uint8_t seed, const uint8_t* dst = kGuestMac) {
    std::vector<uint8_t> f(len);
    std::memcpy(f.data(), dst, 6);
    const uint8_t src[6] = {0x02, 0, 0, 0, 0, 0x01};
    std::memcpy(f.data() + 6, src, 6);
    f[12] = kEtherTest >> 8;
    f[13] = kEtherTest & 0xff;
    for (size_t i = 14; i < len; ++i) f[i] = static_cast<uint8_t>(seed + i * 13);
    return f;
}

uint16_t ethertype(const uint8_t* f) { return static_cast<uint16_t>(f[12] << 8 | f[13]); }

// The kernel side of the tap: frames sent here go out of the tap (to the guest); frames the
// guest sends arrive here. Uses the legacy 10-byte virtio_net_hdr in front of each frame.
class PacketSocket {
public:
    explicit PacketSocket(const std::string& ifname) {
        fd_.reset(::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ALL)));
        EXPECT_TRUE(fd_.valid()) << strerror(errno);
        int on = 1;
        EXPECT_EQ(::setsockopt(fd_.get(), SOL_PACKET, PACKET_VNET_HDR, &on, sizeof(on)), 0) << strerror(errno);
        sockaddr_ll a{};
        a.sll_family = AF_PACKET;
        a.sll_protocol = htons(ETH_P_ALL);
        a.sll_ifindex = static_cast<int>(if_nametoindex(ifname.c_str()));
        EXPECT_NE(a.sll_ifindex, 0);
        EXPECT_EQ(::bind(fd_.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0) << strerror(errno);
    }
    bool send(const std::vector<uint8_t>& frame, const net::Hdr& hdr = {}) {
        iovec iov[2] = {{const_cast<net::Hdr*>(&hdr), net::kHdrLegacyBytes},
                        {const_cast<uint8_t*>(frame.data()), frame.size()}};
        msghdr m{};
        m.msg_iov = iov;
        m.msg_iovlen = 2;
        ssize_t n = ::sendmsg(fd_.get(), &m, 0);
        EXPECT_EQ(n, static_cast<ssize_t>(net::kHdrLegacyBytes + frame.size())) << strerror(errno);
        return n > 0;
    }
    // Next incoming frame (from the guest) with our test ethertype or `type`, within timeout.
    std::optional<std::pair<net::Hdr, std::vector<uint8_t>>> recv(int timeout_ms = 3000, uint16_t type = kEtherTest) {
        auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
        std::vector<uint8_t> buf(70000);
        while (std::chrono::steady_clock::now() < deadline) {
            pollfd p{fd_.get(), POLLIN, 0};
            if (::poll(&p, 1, 50) <= 0) continue;
            sockaddr_ll from{};
            socklen_t fl = sizeof(from);
            ssize_t n = ::recvfrom(fd_.get(), buf.data(), buf.size(), 0, reinterpret_cast<sockaddr*>(&from), &fl);
            if (n < static_cast<ssize_t>(net::kHdrLegacyBytes + 14)) continue;
            if (from.sll_pkttype == PACKET_OUTGOING) continue;
            const uint8_t* f = buf.data() + net::kHdrLegacyBytes;
            if (ethertype(f) != type) continue;
            net::Hdr h{};
            std::memcpy(&h, buf.data(), net::kHdrLegacyBytes);
            return std::make_pair(h, std::vector<uint8_t>(f, static_cast<const uint8_t*>(buf.data()) + n));
        }
        return std::nullopt;
    }

private:
    UniqueFd fd_;
};

class NetTest : public BlkFixture {
protected:
    void SetUp() override {
        BlkFixture::SetUp();
        if (!enter_private_netns()) GTEST_SKIP() << "needs CAP_SYS_ADMIN for a private network namespace";
    }

    // Adds a net device from a --net spec; returns its socket path.
    std::string add_net(const std::string& spec) {
        auto s = app::parse_net_spec(spec);
        EXPECT_TRUE(s.ok()) << s.error().describe();
        auto id = daemon_->add_net(s.value());
        EXPECT_TRUE(id.ok()) << id.error().describe();
        return s.value().socket;
    }

    void connect_net(Guest& g, const std::string& sock, uint32_t pairs, uint64_t want = kNetGuestFeatures,
                     uint16_t qsize = 256) {
        connect_guest(g, sock, 2 * pairs, want, qsize);
        hdr_ = net::hdr_size(g.features);
    }

    // RX: posts n buffers of `size` bytes (one descriptor each) on queue qi.
    void post_rx(Guest& g, uint32_t qi, int n, uint32_t size = 1536, bool kick = true) {
        for (int i = 0; i < n; ++i) {
            auto gpa = g.mem->alloc(size, 64);
            ASSERT_OK(gpa);
            testing::DriverBuf b{gpa.value(), size, true};
            auto head = g.queues[qi]->add_chain({&b, 1});
            ASSERT_OK(head);
            rx_bufs_[{qi, head.value()}] = b;
        }
        if (kick) ASSERT_OK(g.queues[qi]->publish_and_kick(g.kicks[qi].get()));
    }

    struct RxFrame {
        net::Hdr hdr{};
        uint16_t num_buffers = 0;
        std::vector<uint8_t> frame;
    };
    // Receives one frame on RX queue qi (all of its merged buffers).
    std::optional<RxFrame> recv_rx(Guest& g, uint32_t qi, int timeout_ms = 3000) {
        auto u = g.queues[qi]->wait_used(g.calls[qi].get(), std::chrono::milliseconds(timeout_ms));
        if (!u) return std::nullopt;
        auto take = [&](const virtio::UsedElem& e) {
            auto it = rx_bufs_.find({qi, static_cast<uint16_t>(e.id)});
            EXPECT_NE(it, rx_bufs_.end());
            EXPECT_LE(e.len, it->second.len);
            std::vector<uint8_t> d(g.mem->host(it->second.gpa, e.len), g.mem->host(it->second.gpa, e.len) + e.len);
            rx_bufs_.erase(it);
            return d;
        };
        std::vector<uint8_t> first = take(*u);
        RxFrame r;
        if (first.size() < hdr_) {
            r.num_buffers = 0;  // an empty (returned) buffer
            return r;
        }
        std::memcpy(&r.hdr, first.data(), hdr_);
        r.num_buffers = hdr_ == sizeof(net::Hdr) ? r.hdr.num_buffers : 1;
        r.frame.assign(first.begin() + hdr_, first.end());
        for (uint16_t i = 1; i < r.num_buffers; ++i) {
            auto more = g.queues[qi]->wait_used(g.calls[qi].get(), std::chrono::milliseconds(timeout_ms));
            EXPECT_TRUE(more.has_value()) << "merged buffer " << i << " of " << r.num_buffers << " missing";
            if (!more) break;
            auto d = take(*more);
            r.frame.insert(r.frame.end(), d.begin(), d.end());
        }
        return r;
    }

    // TX: sends header + frame as one chain (split over `split` descriptors), waits for the used entry.
    uint32_t send_tx(Guest& g, uint32_t qi, const std::vector<uint8_t>& frame, net::Hdr h = {}, int split = 1,
                     bool extra_writable = false) {
        std::vector<uint8_t> bytes(hdr_ + frame.size());
        std::memcpy(bytes.data(), &h, hdr_);
        if (!frame.empty()) std::memcpy(bytes.data() + hdr_, frame.data(), frame.size());
        return send_tx_raw(g, qi, bytes, split, extra_writable);
    }
    // TX chain of exactly these bytes (header included, or not even a whole header).
    uint32_t send_tx_raw(Guest& g, uint32_t qi, const std::vector<uint8_t>& bytes, int split = 1,
                         bool extra_writable = false) {
        auto gpa = g.mem->alloc(bytes.size(), 64);
        EXPECT_TRUE(gpa.ok());
        std::memcpy(g.mem->host(gpa.value(), bytes.size()), bytes.data(), bytes.size());
        std::vector<testing::DriverBuf> bufs;
        uint64_t off = 0;
        for (int i = 0; i < split; ++i) {
            uint64_t len = i == split - 1 ? bytes.size() - off : std::min<uint64_t>(bytes.size() - off, i == 0 ? 5 : 100);
            bufs.push_back({gpa.value() + off, static_cast<uint32_t>(len), false});
            off += len;
        }
        if (extra_writable) {
            auto w = g.mem->alloc(64, 64);
            bufs.push_back({w.value(), 64, true});
        }
        auto head = g.queues[qi]->add_chain(bufs);
        EXPECT_TRUE(head.ok());
        EXPECT_TRUE(g.queues[qi]->publish_and_kick(g.kicks[qi].get()).ok());
        auto u = g.queues[qi]->wait_used(g.calls[qi].get(), std::chrono::seconds(5));
        EXPECT_TRUE(u.has_value()) << "TX chain not returned";
        if (!u) return UINT32_MAX;
        EXPECT_EQ(u->id, head.value());
        return u->len;
    }

    uint32_t hdr_ = sizeof(net::Hdr);
    std::map<std::pair<uint32_t, uint16_t>, testing::DriverBuf> rx_bufs_;
};

// An Ethernet + IPv4 + TCP frame of `payload` bytes for kernel GSO tests; checksums partial.
std::vector<uint8_t> tcp_frame(size_t payload, const uint8_t* dst = kGuestMac) {
    std::vector<uint8_t> f(14 + 20 + 20 + payload);
    std::memcpy(f.data(), dst, 6);
    const uint8_t src[6] = {0x02, 0, 0, 0, 0, 0x01};
    std::memcpy(f.data() + 6, src, 6);
    f[12] = 0x08;
    f[13] = 0x00;
    uint8_t* ip = f.data() + 14;
    ip[0] = 0x45;
    uint16_t tot = htons(static_cast<uint16_t>(20 + 20 + payload));
    std::memcpy(ip + 2, &tot, 2);
    ip[8] = 64;
    ip[9] = 6;  // TCP
    const uint8_t sa[4] = {10, 99, 0, 1}, da[4] = {10, 99, 0, 2};
    std::memcpy(ip + 12, sa, 4);
    std::memcpy(ip + 16, da, 4);
    uint32_t sum = 0;
    for (int i = 0; i < 20; i += 2) sum += static_cast<uint32_t>(ip[i] << 8 | ip[i + 1]);
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    uint16_t cs = htons(static_cast<uint16_t>(~sum));
    std::memcpy(ip + 10, &cs, 2);
    uint8_t* tcp = ip + 20;
    tcp[0] = 0x30;
    tcp[1] = 0x39;  // sport 12345
    tcp[2] = 0x00;
    tcp[3] = 0x50;  // dport 80
    tcp[12] = 5 << 4;
    tcp[13] = 0x18;  // PSH|ACK
    tcp[14] = 0xff;
    tcp[15] = 0xff;
    for (size_t i = 0; i < payload; ++i) tcp[20 + i] = static_cast<uint8_t>(i * 7 + 3);
    return f;
}

net::Hdr tso4_hdr(uint16_t mss) {
    net::Hdr h{};
    h.flags = net::kHdrFNeedsCsum;
    h.gso_type = net::kGsoTcpv4;
    h.hdr_len = 14 + 20 + 20;
    h.gso_size = mss;
    h.csum_start = 14 + 20;
    h.csum_offset = 16;
    return h;
}

// The guest's features -> backend-neutral offloads -> TUN_F_* flags, end to end (what the tap
// is configured with when a queue starts).
unsigned tap_offload_flags(uint64_t guest_features) {
    return backends::tun_offload_flags(virtio::guest_offloads(guest_features));
}

TEST(NetPure, TapOffloadFlagsFollowGuestFeatures) {
    EXPECT_EQ(tap_offload_flags(0), 0u);
    // GSO without checksum offload is impossible: nothing is enabled.
    EXPECT_EQ(tap_offload_flags(net::kFGuestTso4 | net::kFGuestTso6), 0u);
    EXPECT_EQ(tap_offload_flags(net::kFGuestCsum), static_cast<unsigned>(TUN_F_CSUM));
    EXPECT_EQ(tap_offload_flags(net::kFGuestCsum | net::kFGuestTso4), static_cast<unsigned>(TUN_F_CSUM | TUN_F_TSO4));
    EXPECT_EQ(tap_offload_flags(net::kFGuestCsum | net::kFGuestTso4 | net::kFGuestTso6 | net::kFGuestEcn | net::kFGuestUfo),
              static_cast<unsigned>(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN | TUN_F_UFO));
    // ECN alone means nothing without TSO.
    EXPECT_EQ(tap_offload_flags(net::kFGuestCsum | net::kFGuestEcn), static_cast<unsigned>(TUN_F_CSUM));
    // HOST_* bits are about what the guest sends: they do not change what the tap may send.
    EXPECT_EQ(tap_offload_flags(net::kFCsum | net::kFHostTso4 | net::kFHostUfo), 0u);
}

// The device's half: which GUEST_* bits allow which offloads.
TEST(NetPure, GuestOffloadsFollowGuestFeatures) {
    using backends::NetOffloads;
    EXPECT_EQ(virtio::guest_offloads(0), NetOffloads{});
    // Without GUEST_CSUM nothing, whatever else was negotiated.
    EXPECT_EQ(virtio::guest_offloads(net::kFGuestTso4 | net::kFGuestTso6 | net::kFGuestEcn | net::kFGuestUfo),
              NetOffloads{});
    EXPECT_EQ(virtio::guest_offloads(net::kFGuestCsum), (NetOffloads{.csum = true}));
    EXPECT_EQ(virtio::guest_offloads(net::kFGuestCsum | net::kFGuestTso6), (NetOffloads{.csum = true, .tso6 = true}));
    EXPECT_EQ(virtio::guest_offloads(net::kFGuestCsum | net::kFGuestTso4 | net::kFGuestTso6 | net::kFGuestEcn |
                                     net::kFGuestUfo),
              (NetOffloads{.csum = true, .tso4 = true, .tso6 = true, .tso_ecn = true, .ufo = true}));
    EXPECT_EQ(virtio::guest_offloads(net::kFGuestCsum | net::kFGuestEcn), (NetOffloads{.csum = true}));
    EXPECT_EQ(virtio::guest_offloads(net::kFGuestCsum | net::kFGuestUfo), (NetOffloads{.csum = true, .ufo = true}));
    EXPECT_EQ(virtio::guest_offloads(net::kFCsum | net::kFHostTso4 | net::kFHostTso6 | net::kFHostEcn | net::kFHostUfo),
              NetOffloads{});
}

// The tap's half: NetOffloads -> TUN_F_*, safe on its own (nothing without csum).
TEST(NetPure, TunOffloadFlagsFollowOffloads) {
    using backends::NetOffloads;
    EXPECT_EQ(backends::tun_offload_flags({}), 0u);
    EXPECT_EQ(backends::tun_offload_flags({.tso4 = true, .tso6 = true, .tso_ecn = true, .ufo = true}), 0u);
    EXPECT_EQ(backends::tun_offload_flags({.csum = true}), static_cast<unsigned>(TUN_F_CSUM));
    EXPECT_EQ(backends::tun_offload_flags({.csum = true, .tso4 = true}), static_cast<unsigned>(TUN_F_CSUM | TUN_F_TSO4));
    EXPECT_EQ(backends::tun_offload_flags({.csum = true, .tso6 = true}), static_cast<unsigned>(TUN_F_CSUM | TUN_F_TSO6));
    EXPECT_EQ(backends::tun_offload_flags({.csum = true, .ufo = true}), static_cast<unsigned>(TUN_F_CSUM | TUN_F_UFO));
    EXPECT_EQ(backends::tun_offload_flags({.csum = true, .tso4 = true, .tso6 = true, .tso_ecn = true, .ufo = true}),
              static_cast<unsigned>(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN | TUN_F_UFO));
    // TSO_ECN needs TSO.
    EXPECT_EQ(backends::tun_offload_flags({.csum = true, .tso_ecn = true}), static_cast<unsigned>(TUN_F_CSUM));
}

TEST(NetPure, TxHeaderChecks) {
    const uint64_t all = net::kFCsum | net::kFHostTso4 | net::kFHostTso6 | net::kFHostEcn | net::kFHostUfo;
    net::Hdr h{};
    EXPECT_EQ(virtio::check_tx_header(h, 12, 60, 0), nullptr);
    h = tso4_hdr(1448);
    EXPECT_EQ(virtio::check_tx_header(h, 12, 20000, all), nullptr);
    h = tso4_hdr(1448);
    EXPECT_NE(virtio::check_tx_header(h, 12, 20000, net::kFCsum), nullptr) << "TSO4 not negotiated";
    h = tso4_hdr(1448);
    EXPECT_NE(virtio::check_tx_header(h, 12, 20000, net::kFHostTso4), nullptr) << "partial csum without CSUM";
    h = tso4_hdr(0);
    EXPECT_NE(virtio::check_tx_header(h, 12, 20000, all), nullptr) << "gso_size 0";
    h = tso4_hdr(1448);
    h.gso_type |= net::kGsoEcn;
    EXPECT_EQ(virtio::check_tx_header(h, 12, 20000, all), nullptr);
    h = tso4_hdr(1448);
    h.gso_type |= net::kGsoEcn;
    EXPECT_NE(virtio::check_tx_header(h, 12, 20000, all & ~net::kFHostEcn), nullptr) << "ECN not negotiated";
    h = tso4_hdr(1448);
    h.gso_type = 7;
    EXPECT_NE(virtio::check_tx_header(h, 12, 20000, all), nullptr) << "unknown GSO type";
    h = tso4_hdr(1448);
    h.flags = 0;
    EXPECT_NE(virtio::check_tx_header(h, 12, 20000, all), nullptr) << "GSO without partial checksum";
    // Checksum field must lie inside the frame (no 16-bit overflow either).
    h = net::Hdr{};
    h.flags = net::kHdrFNeedsCsum;
    h.csum_start = 50;
    h.csum_offset = 10;
    EXPECT_NE(virtio::check_tx_header(h, 12, 61, net::kFCsum), nullptr);
    h.flags = net::kHdrFNeedsCsum;
    EXPECT_EQ(virtio::check_tx_header(h, 12, 62, net::kFCsum), nullptr);
    h.csum_start = 0xffff;
    h.csum_offset = 0xffff;
    EXPECT_NE(virtio::check_tx_header(h, 12, 70000, net::kFCsum), nullptr);
    // DATA_VALID and unknown flag bits are not passed on; num_buffers is cleared.
    h = net::Hdr{};
    h.flags = 0xfe;
    h.num_buffers = 9;
    EXPECT_EQ(virtio::check_tx_header(h, 12, 60, 0), nullptr);
    EXPECT_EQ(h.flags, 0);
    EXPECT_EQ(h.num_buffers, 0);
}

TEST_F(NetTest, TapCreatedUpAndRemovedOnExit) {
    start_daemon(1);
    add_net("socket=" + path("n.sock") + ",tap=vtx0,queues=2,mtu=1400");
    ASSERT_NE(if_nametoindex("vtx0"), 0u);
    ifreq ifr{};
    std::strcpy(ifr.ifr_name, "vtx0");
    UniqueFd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    ASSERT_EQ(::ioctl(s.get(), SIOCGIFFLAGS, &ifr), 0);
    EXPECT_TRUE(ifr.ifr_flags & IFF_UP) << "a tap vhostd creates is brought up";
    ASSERT_EQ(::ioctl(s.get(), SIOCGIFMTU, &ifr), 0);
    EXPECT_EQ(ifr.ifr_mtu, 1400);
    daemon_.reset();
    EXPECT_EQ(if_nametoindex("vtx0"), 0u) << "the tap vhostd created must go away with it";
}

TEST_F(NetTest, ConfigAndFeatures) {
    start_daemon(1);
    std::string sock = add_net("socket=" + path("n.sock") + ",tap=vtc0,queues=3,mac=52:54:00:aa:bb:cc,mtu=1400");
    auto fe = Frontend::connect(sock);
    ASSERT_OK(fe);
    auto f = fe.value()->get_features();
    ASSERT_OK(f);
    for (uint64_t bit : {virtio::kFVersion1, virtio::kFEventIdx, virtio::kFIndirectDesc, net::kFMac, net::kFMtu,
                         net::kFMrgRxbuf, net::kFCsum, net::kFGuestCsum, net::kFHostTso4, net::kFHostTso6,
                         net::kFGuestTso4, net::kFGuestTso6, net::kFHostEcn, net::kFGuestEcn, net::kFHostUfo,
                         net::kFGuestUfo, net::kFStatus, net::kFMq, net::kFCtrlVq})
        EXPECT_TRUE(f.value() & bit) << "feature bit " << __builtin_ctzll(bit) << " not offered";
    auto pf = fe.value()->get_protocol_features();
    ASSERT_OK(pf);
    EXPECT_TRUE(pf.value() & vhost::pf::kNetMtu);
    EXPECT_TRUE(pf.value() & vhost::pf::kRarp);
    ASSERT_OK(fe.value()->set_protocol_features(pf.value()));
    auto qn = fe.value()->get_queue_num();
    ASSERT_OK(qn);
    EXPECT_EQ(qn.value(), 6u);  // 3 pairs
    auto cfg = fe.value()->get_config(0, sizeof(net::Config));
    ASSERT_OK(cfg);
    net::Config c;
    std::memcpy(&c, cfg.value().data(), sizeof(c));
    EXPECT_EQ(0, std::memcmp(c.mac, kGuestMac, 6));
    EXPECT_EQ(c.status, net::kStatusLinkUp);
    EXPECT_EQ(c.max_virtqueue_pairs, 3);
    EXPECT_EQ(c.mtu, 1400);
    // NET_SET_MTU changes the tap and the config.
    ASSERT_OK(fe.value()->net_set_mtu(9000));
    cfg = fe.value()->get_config(0, sizeof(net::Config));
    ASSERT_OK(cfg);
    std::memcpy(&c, cfg.value().data(), sizeof(c));
    EXPECT_EQ(c.mtu, 9000);
    auto tap_mtu = [] {
        ifreq ifr{};
        std::strcpy(ifr.ifr_name, "vtc0");
        UniqueFd s(::socket(AF_INET, SOCK_DGRAM, 0));
        ::ioctl(s.get(), SIOCGIFMTU, &ifr);
        return ifr.ifr_mtu;
    };
    EXPECT_EQ(tap_mtu(), 9000);
    // Out of range: refused (error ack, connection closed), MTU unchanged.
    EXPECT_FALSE(fe.value()->net_set_mtu(20).ok());
    EXPECT_EQ(tap_mtu(), 9000);
}

TEST_F(NetTest, TxFramesReachTheTap) {
    start_daemon(1);
    std::string sock = add_net("socket=" + path("n.sock") + ",tap=vtt0");
    Guest g;
    connect_net(g, sock, 1);
    PacketSocket ps("vtt0");
    for (int split : {1, 2, 3}) {
        auto frame = test_frame(200 + split, static_cast<uint8_t>(split));
        EXPECT_EQ(send_tx(g, 1, frame, {}, split), 0u);
        auto got = ps.recv();
        ASSERT_TRUE(got.has_value()) << "split " << split;
        EXPECT_EQ(got->second, frame);
    }
}

TEST_F(NetTest, TxGsoFrameGoesOutUnsegmented) {
    start_daemon(1);
    std::string sock = add_net("socket=" + path("n.sock") + ",tap=vtg0");
    Guest g;
    connect_net(g, sock, 1);
    PacketSocket ps("vtg0");
    // A 30000-byte TSO frame from the guest: the kernel receives it as one GSO packet with its
    // header intact (the tap passes the virtio header through).
    auto frame = tcp_frame(30000);
    EXPECT_EQ(send_tx(g, 1, frame, tso4_hdr(1448), 3), 0u);
    auto got = ps.recv(3000, 0x0800);
    ASSERT_TRUE(got.has_value());
    EXPECT_EQ(got->second.size(), frame.size());
    EXPECT_EQ(got->first.gso_type, net::kGsoTcpv4);
    EXPECT_EQ(got->first.gso_size, 1448);
}

TEST_F(NetTest, MalformedTxChainsAreDroppedNotFatal) {
    start_daemon(1);
    std::string sock = add_net("socket=" + path("n.sock") + ",tap=vtm0");
    Guest g;
    connect_net(g, sock, 1);
    PacketSocket ps("vtm0");
    auto good = test_frame(100, 1);
    // A writable descriptor in a TX chain, a chain shorter than the header, a runt frame,
    // GSO without the feature (legacy-free guest without HOST_TSO6), a bad GSO type.
    EXPECT_EQ(send_tx(g, 1, test_frame(100, 2), {}, 1, true), 0u);
    EXPECT_EQ(send_tx_raw(g, 1, std::vector<uint8_t>(6, 0)), 0u);
    EXPECT_EQ(send_tx(g, 1, std::vector<uint8_t>{}, {}, 1), 0u);
    EXPECT_EQ(send_tx(g, 1, std::vector<uint8_t>(8, 1), {}, 1), 0u);
    net::Hdr bad = tso4_hdr(1448);
    bad.gso_type = 9;
    EXPECT_EQ(send_tx(g, 1, tcp_frame(3000), bad, 1), 0u);
    bad = tso4_hdr(0);
    EXPECT_EQ(send_tx(g, 1, tcp_frame(3000), bad, 1), 0u);
    // None of them reached the tap, and the queue still works.
    EXPECT_EQ(send_tx(g, 1, good, {}, 1), 0u);
    auto got = ps.recv();
    ASSERT_TRUE(got.has_value());
    EXPECT_EQ(got->second, good);
    EXPECT_FALSE(ps.recv(300).has_value());
    EXPECT_FALSE(ps.recv(100, 0x0800).has_value());
}

TEST_F(NetTest, RxFramesLandInGuestBuffers) {
    start_daemon(1);
    std::string sock = add_net("socket=" + path("n.sock") + ",tap=vtr0");
    Guest g;
    connect_net(g, sock, 1);
    PacketSocket ps("vtr0");
    post_rx(g, 0, 16);
    for (size_t len : {60u, 1000u, 1514u}) {
        auto frame = test_frame(len, static_cast<uint8_t>(len));
        ASSERT_TRUE(ps.send(frame));
        auto r = recv_rx(g, 0);
        ASSERT_TRUE(r.has_value()) << len;
        EXPECT_EQ(r->num_buffers, 1);
        EXPECT_EQ(r->frame, frame);
    }
}

TEST_F(NetTest, RxGsoFrameMergesBuffers) {
    start_daemon(1);
    std::string sock = add_net("socket=" + path("n.sock") + ",tap=vtb0");
    Guest g;
    connect_net(g, sock, 1);
    PacketSocket ps("vtb0");
    post_rx(g, 0, 128);  // 128 x 1536 bytes: room for a 64 KiB frame
    auto frame = tcp_frame(20000);
    ASSERT_TRUE(ps.send(frame, tso4_hdr(1448)));
    auto r = recv_rx(g, 0);
    ASSERT_TRUE(r.has_value());
    // The guest negotiated GUEST_TSO4: one frame, not 14 segments, over several buffers.
    EXPECT_EQ(r->hdr.gso_type, net::kGsoTcpv4);
    EXPECT_EQ(r->hdr.gso_size, 1448);
    EXPECT_EQ(r->num_buffers, (12 + frame.size() + 1535) / 1536);
    ASSERT_EQ(r->frame.size(), frame.size());
    // Checksum is partial (NEEDS_CSUM): compare everything but the TCP checksum field.
    auto a = r->frame, b = frame;
    a[14 + 20 + 16] = a[14 + 20 + 17] = b[14 + 20 + 16] = b[14 + 20 + 17] = 0;
    EXPECT_EQ(a, b);
    EXPECT_TRUE(r->hdr.flags & net::kHdrFNeedsCsum);
}

TEST_F(NetTest, RxWithoutGuestTsoIsSegmentedByTheKernel) {
    start_daemon(1);
    std::string sock = add_net("socket=" + path("n.sock") + ",tap=vts0");
    Guest g;
    connect_net(g, sock, 1, kNetGuestFeatures & ~(net::kFGuestTso4 | net::kFGuestTso6 | net::kFGuestCsum));
    PacketSocket ps("vts0");
    post_rx(g, 0, 64);
    ASSERT_TRUE(ps.send(tcp_frame(4000), tso4_hdr(1000)));
    size_t payload = 0;
    for (int i = 0; i < 4; ++i) {
        auto r = recv_rx(g, 0);
        ASSERT_TRUE(r.has_value()) << "segment " << i;
        EXPECT_EQ(r->hdr.gso_type, net::kGsoNone);
        EXPECT_EQ(r->hdr.flags, 0) << "no GUEST_CSUM: no checksum flags";
        EXPECT_EQ(r->num_buffers, 1);
        EXPECT_LE(r->frame.size(), 14u + 20 + 20 + 1000);
        payload += r->frame.size() - 54;
    }
    EXPECT_EQ(payload, 4000u);
}

TEST_F(NetTest, RxBackPressureHoldsFramesUntilBuffersArrive) {
    start_daemon(1);
    std::string sock = add_net("socket=" + path("n.sock") + ",tap=vtp0");
    Guest g;
    connect_net(g, sock, 1);
    PacketSocket ps("vtp0");
    // No buffers: frames wait in the tap queue, and the reactor goes to sleep (no busy loop).
    for (int i = 0; i < 20; ++i) ASSERT_TRUE(ps.send(test_frame(100, static_cast<uint8_t>(i))));
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    uint64_t passes = daemon_->reactor(0).passes.get();
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    EXPECT_LT(daemon_->reactor(0).passes.get() - passes, 50u) << "the reactor spins while the guest has no buffers";
    post_rx(g, 0, 32);
    for (int i = 0; i < 20; ++i) {
        auto r = recv_rx(g, 0);
        ASSERT_TRUE(r.has_value()) << "frame " << i << " lost";
        EXPECT_EQ(r->frame, test_frame(100, static_cast<uint8_t>(i))) << "frame " << i << " out of order or corrupt";
    }
}

TEST_F(NetTest, RxMergeableWaitsForRoomForTheLargestFrame) {
    start_daemon(1);
    std::string sock = add_net("socket=" + path("n.sock") + ",tap=vtw0");
    Guest g;
    connect_net(g, sock, 1);
    PacketSocket ps("vtw0");
    // 8 x 1536 bytes cannot hold a 64 KiB GSO frame: nothing is read yet (no drop)...
    post_rx(g, 0, 8);
    auto frame = tcp_frame(30000);
    ASSERT_TRUE(ps.send(frame, tso4_hdr(1448)));
    EXPECT_FALSE(recv_rx(g, 0, 300).has_value());
    // ...until there is room; then the frame arrives whole.
    post_rx(g, 0, 40);
    auto r = recv_rx(g, 0);
    ASSERT_TRUE(r.has_value());
    EXPECT_EQ(r->frame.size(), frame.size());
    EXPECT_EQ(r->hdr.gso_type, net::kGsoTcpv4);
}

TEST_F(NetTest, RxWithoutMergeableUsesOneChainPerFrame) {
    start_daemon(1);
    std::string sock = add_net("socket=" + path("n.sock") + ",tap=vtn0");
    Guest g;
    connect_net(g, sock, 1, kNetGuestFeatures & ~net::kFMrgRxbuf);
    PacketSocket ps("vtn0");
    post_rx(g, 0, 4, 2048);
    auto frame = test_frame(1500, 9);
    ASSERT_TRUE(ps.send(frame));
    auto r = recv_rx(g, 0);
    ASSERT_TRUE(r.has_value());
    EXPECT_EQ(r->num_buffers, 1) << "VERSION_1 without MRG_RXBUF: num_buffers is 1";
    EXPECT_EQ(r->frame, frame);
    // A frame larger than a buffer cannot be delivered: dropped, the buffer stays posted.
    ASSERT_TRUE(ps.send(test_frame(1514, 1)));  // fits
    ASSERT_TRUE(recv_rx(g, 0).has_value());
}

TEST_F(NetTest, LegacyHeaderWithoutVersion1) {
    start_daemon(1);
    std::string sock = add_net("socket=" + path("n.sock") + ",tap=vtl0");
    Guest g;
    connect_net(g, sock, 1, kNetGuestFeatures & ~(virtio::kFVersion1 | net::kFMrgRxbuf));
    ASSERT_EQ(hdr_, net::kHdrLegacyBytes);
    PacketSocket ps("vtl0");
    auto tx = test_frame(300, 4);
    EXPECT_EQ(send_tx(g, 1, tx), 0u);
    auto got = ps.recv();
    ASSERT_TRUE(got.has_value());
    EXPECT_EQ(got->second, tx);
    post_rx(g, 0, 4);
    auto rx = test_frame(400, 5);
    ASSERT_TRUE(ps.send(rx));
    auto r = recv_rx(g, 0);
    ASSERT_TRUE(r.has_value());
    EXPECT_EQ(r->frame, rx);
}

TEST_F(NetTest, MalformedRxChainIsReturnedEmpty) {
    start_daemon(1);
    std::string sock = add_net("socket=" + path("n.sock") + ",tap=vtq0");
    Guest g;
    connect_net(g, sock, 1);
    PacketSocket ps("vtq0");
    // First buffer is device-readable (wrong for RX), second one is too short for the header.
    auto gpa = g.mem->alloc(1536, 64);
    testing::DriverBuf ro{gpa.value(), 1536, false};
    auto h1 = g.queues[0]->add_chain({&ro, 1});
    ASSERT_OK(h1);
    rx_bufs_[{0, h1.value()}] = ro;
    auto gpa2 = g.mem->alloc(64, 64);
    testing::DriverBuf tiny{gpa2.value(), 4, true};
    auto h2 = g.queues[0]->add_chain({&tiny, 1});
    ASSERT_OK(h2);
    rx_bufs_[{0, h2.value()}] = tiny;
    post_rx(g, 0, 60);
    auto frame = test_frame(500, 7);
    ASSERT_TRUE(ps.send(frame));
    int empties = 0;
    for (;;) {
        auto r = recv_rx(g, 0);
        ASSERT_TRUE(r.has_value());
        if (r->frame.empty() && r->num_buffers == 0) {
            ++empties;
            continue;
        }
        EXPECT_EQ(r->frame, frame);
        break;
    }
    EXPECT_EQ(empties, 2);
}

TEST_F(NetTest, SendRarpAnnouncesTheGuestMac) {
    start_daemon(1);
    std::string sock = add_net("socket=" + path("n.sock") + ",tap=vta0");
    Guest g;
    connect_net(g, sock, 1);
    PacketSocket ps("vta0");
    const uint8_t mac[6] = {0x52, 0x54, 0x00, 0x01, 0x02, 0x03};
    ASSERT_OK(g.fe->send_rarp(mac));
    auto got = ps.recv(3000, 0x8035);
    ASSERT_TRUE(got.has_value());
    const auto& f = got->second;
    ASSERT_GE(f.size(), 42u);
    EXPECT_EQ(0, std::memcmp(f.data() + 6, mac, 6)) << "source is the guest";
    EXPECT_EQ(f[0], 0xff) << "broadcast";
    EXPECT_EQ(f[21], 3) << "reverse request";
    EXPECT_EQ(0, std::memcmp(f.data() + 22, mac, 6));
}

TEST_F(NetTest, TwoQueuePairsAndDisablingOne) {
    start_daemon(2);
    std::string sock = add_net("socket=" + path("n.sock") + ",tap=vtd0,queues=2");
    Guest g;
    connect_net(g, sock, 2);
    PacketSocket ps("vtd0");
    // Both TX queues carry frames to the tap.
    for (uint32_t q : {1u, 3u}) {
        auto f = test_frame(100, static_cast<uint8_t>(q));
        EXPECT_EQ(send_tx(g, q, f), 0u);
        auto got = ps.recv();
        ASSERT_TRUE(got.has_value()) << "tx queue " << q;
        EXPECT_EQ(got->second, f);
    }
    // The guest switches to one pair (the frontend disables pair 1): every frame then arrives
    // on RX queue 0 (the tap queue of pair 1 is detached and takes no traffic).
    ASSERT_OK(g.fe->set_vring_enable(2, false));
    ASSERT_OK(g.fe->set_vring_enable(3, false));
    post_rx(g, 0, 64);
    post_rx(g, 2, 64);
    for (int i = 0; i < 16; ++i) {
        auto f = tcp_frame(100);
        f[14 + 20 + 0] = static_cast<uint8_t>(i);  // distinct flows (source port)
        ASSERT_TRUE(ps.send(f));
        auto r = recv_rx(g, 0);
        ASSERT_TRUE(r.has_value()) << "flow " << i;
    }
    EXPECT_FALSE(g.queues[2]->has_used());
    // Re-enabled, pair 1 works again where it stopped.
    ASSERT_OK(g.fe->set_vring_enable(2, true));
    ASSERT_OK(g.fe->set_vring_enable(3, true));
    auto f = test_frame(120, 3);
    EXPECT_EQ(send_tx(g, 3, f), 0u);
    auto got = ps.recv();
    ASSERT_TRUE(got.has_value());
    EXPECT_EQ(got->second, f);
}

TEST_F(NetTest, AttachesToAnExistingTapAndLeavesIt) {
    // A persistent multi-queue tap made by someone else (as `ip tuntap add ... multi_queue vnet_hdr`).
    {
        UniqueFd fd(::open("/dev/net/tun", O_RDWR | O_CLOEXEC));
        ASSERT_TRUE(fd.valid());
        ifreq ifr{};
        std::strcpy(ifr.ifr_name, "vte0");
        ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | IFF_MULTI_QUEUE;
        ASSERT_EQ(::ioctl(fd.get(), TUNSETIFF, &ifr), 0) << strerror(errno);
        ASSERT_EQ(::ioctl(fd.get(), TUNSETPERSIST, 1), 0);
    }
    // Not created by vhostd: it stays as the admin left it (down), so writes fail until it is up.
    ASSERT_OK(backends::Tap::open({"vte0", 1, 0}).value()->set_up());
    start_daemon(1);
    std::string sock = add_net("socket=" + path("n.sock") + ",tap=vte0");
    {
        Guest g;
        connect_net(g, sock, 1);
        PacketSocket ps("vte0");
        auto f = test_frame(100, 1);
        EXPECT_EQ(send_tx(g, 1, f), 0u);
        EXPECT_TRUE(ps.recv().has_value());
    }
    daemon_.reset();
    EXPECT_NE(if_nametoindex("vte0"), 0u) << "a tap vhostd did not create must stay";
    // A tap without multi_queue is refused with a clear error.
    {
        UniqueFd fd(::open("/dev/net/tun", O_RDWR | O_CLOEXEC));
        ifreq ifr{};
        std::strcpy(ifr.ifr_name, "vte1");
        ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
        ASSERT_EQ(::ioctl(fd.get(), TUNSETIFF, &ifr), 0);
        ASSERT_EQ(::ioctl(fd.get(), TUNSETPERSIST, 1), 0);
    }
    auto t = backends::Tap::open({"vte1", 1, 0});
    ASSERT_FALSE(t.ok());
    EXPECT_NE(t.error().context.find("multi_queue"), std::string::npos) << t.error().describe();
}

TEST_F(NetTest, ReconnectCyclesLeakNothing) {
    start_daemon(1);
    std::string sock = add_net("socket=" + path("n.sock") + ",tap=vtz0,queues=2");
    size_t fds0 = 0, maps0 = 0;
    for (int i = 0; i < 20; ++i) {
        {
            Guest g;
            connect_net(g, sock, 2);
            PacketSocket ps("vtz0");
            auto f = test_frame(100, static_cast<uint8_t>(i));
            EXPECT_EQ(send_tx(g, 1, f), 0u);
            ASSERT_TRUE(ps.recv().has_value());
        }
        // The session ends asynchronously on the device's control thread.
        for (int w = 0; w < 200 && count_memfd_mappings() != 0; ++w) std::this_thread::sleep_for(std::chrono::milliseconds(5));
        if (i == 1) {
            fds0 = count_fds();
            maps0 = count_memfd_mappings();
        }
    }
    EXPECT_EQ(count_fds(), fds0);
    EXPECT_EQ(count_memfd_mappings(), maps0);
    EXPECT_EQ(maps0, 0u);
}

}  // namespace
}  // namespace vhostd::testing
