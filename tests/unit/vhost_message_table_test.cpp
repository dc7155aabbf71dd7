// The message table and its one validator (vhost/message_table.hpp), driven directly and then
// through a Session on a fake device. The expectations below are written out from the spec
// (and vhostd's choices), independently of kMessageTable: a row that drifts (a payload size,
// an fd rule, a missing feature requirement) fails here. Every refused message must name the
// request and what was wrong, and its fds must be closed.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "vhost/message_table.hpp"
#include "vhost/session.hpp"
#include "virtio/virtio_types.hpp"

namespace vhostd::vhost {
namespace {

// ---- expectations, from the spec ------------------------------------------------------------

enum class Fds { kNone, kOne, kNoFdFlag, kPerRegion, kAtMostOne };
enum class Size { kIgnored, kExact, kMemTable, kConfig, kZeroOrEight };

struct Expect {
    Request r;
    Size rule;
    uint32_t size;  // kExact
    Fds fds;
    uint64_t feature;  // must be acked first
    bool reply;
};

const std::vector<Expect> kSupported = {
    {Request::kGetFeatures, Size::kIgnored, 0, Fds::kNone, 0, true},
    {Request::kSetFeatures, Size::kExact, 8, Fds::kNone, 0, false},
    {Request::kSetOwner, Size::kIgnored, 0, Fds::kNone, 0, false},
    {Request::kResetOwner, Size::kIgnored, 0, Fds::kNone, 0, false},
    {Request::kSetMemTable, Size::kMemTable, 0, Fds::kPerRegion, 0, false},
    {Request::kSetVringNum, Size::kExact, 8, Fds::kNone, 0, false},
    {Request::kSetVringAddr, Size::kExact, 40, Fds::kNone, 0, false},
    {Request::kSetVringBase, Size::kExact, 8, Fds::kNone, 0, false},
    {Request::kGetVringBase, Size::kExact, 8, Fds::kNone, 0, true},
    {Request::kSetVringKick, Size::kExact, 8, Fds::kNoFdFlag, 0, false},
    {Request::kSetVringCall, Size::kExact, 8, Fds::kNoFdFlag, 0, false},
    {Request::kSetVringErr, Size::kExact, 8, Fds::kNoFdFlag, 0, false},
    {Request::kGetProtocolFeatures, Size::kIgnored, 0, Fds::kNone, 0, true},
    {Request::kSetProtocolFeatures, Size::kExact, 8, Fds::kNone, 0, false},
    {Request::kGetQueueNum, Size::kIgnored, 0, Fds::kNone, 0, true},
    {Request::kSetVringEnable, Size::kExact, 8, Fds::kNone, 0, false},
    {Request::kSendRarp, Size::kExact, 8, Fds::kNone, pf::kRarp, false},
    {Request::kNetSetMtu, Size::kExact, 8, Fds::kNone, pf::kNetMtu, false},
    {Request::kSetBackendReqFd, Size::kZeroOrEight, 0, Fds::kOne, 0, false},
    {Request::kGetConfig, Size::kConfig, 0, Fds::kNone, 0, true},
    {Request::kSetConfig, Size::kConfig, 0, Fds::kNone, 0, false},
    {Request::kGetInflightFd, Size::kExact, 24, Fds::kNone, pf::kInflightShmfd, true},
    {Request::kSetInflightFd, Size::kExact, 24, Fds::kOne, pf::kInflightShmfd, false},
    {Request::kResetDevice, Size::kIgnored, 0, Fds::kNone, 0, false},
    {Request::kGetMaxMemSlots, Size::kIgnored, 0, Fds::kNone, 0, true},
    {Request::kAddMemReg, Size::kExact, 40, Fds::kOne, 0, false},
    {Request::kRemMemReg, Size::kExact, 40, Fds::kAtMostOne, 0, false},
    {Request::kSetStatus, Size::kExact, 8, Fds::kNone, 0, false},
    {Request::kGetStatus, Size::kIgnored, 0, Fds::kNone, 0, true},
    {Request::kSetLogBase, Size::kExact, 16, Fds::kOne, pf::kLogShmfd, true},
};

const std::vector<uint32_t> kUnsupported = {0, 7, 22, 23, 26, 27, 28, 29, 30, 33, 35, 41, 1000, 0xffffffffu};

constexpr uint64_t kAllFeatures = ~0ull;

// ---- building messages ----------------------------------------------------------------------

UniqueFd any_fd() { return UniqueFd(::open("/dev/null", O_RDONLY | O_CLOEXEC)); }

std::unique_ptr<Message> make(Request r, std::vector<uint8_t> payload, size_t nfds, uint32_t flags = kVersion) {
    auto m = std::make_unique<Message>();
    m->hdr = MsgHeader{static_cast<uint32_t>(r), flags, static_cast<uint32_t>(payload.size())};
    if (!payload.empty()) std::memcpy(m->payload.data(), payload.data(), payload.size());
    for (size_t i = 0; i < nfds; ++i) m->fds[i] = any_fd();
    m->nfds = nfds;
    return m;
}

template <typename T>
std::vector<uint8_t> bytes(const T& v) {
    std::vector<uint8_t> b(sizeof(T));
    std::memcpy(b.data(), &v, sizeof(T));
    return b;
}

std::vector<uint8_t> mem_table(uint32_t nregions, size_t regions_present) {
    std::vector<uint8_t> p(sizeof(MemTableHeader) + regions_present * sizeof(MemRegion), 0);
    MemTableHeader h{nregions, 0};
    std::memcpy(p.data(), &h, sizeof(h));
    return p;
}

std::vector<uint8_t> config(uint32_t size, size_t data_present) {
    std::vector<uint8_t> p(sizeof(ConfigHeader) + data_present, 0);
    ConfigHeader h{0, size, 0};
    std::memcpy(p.data(), &h, sizeof(h));
    return p;
}

// A payload that satisfies the row, with the fd count that goes with it.
std::pair<std::vector<uint8_t>, size_t> valid(const Expect& e) {
    size_t fds = e.fds == Fds::kOne || e.fds == Fds::kNoFdFlag ? 1 : 0;
    switch (e.rule) {
        case Size::kIgnored: return {{}, fds};
        case Size::kExact: return {std::vector<uint8_t>(e.size, 0), fds};
        case Size::kMemTable: return {mem_table(2, 2), 2};
        case Size::kConfig: return {config(4, 4), fds};
        case Size::kZeroOrEight: return {{}, fds};
    }
    return {{}, 0};
}

// Refused with `code`, and the error names the request.
void expect_refused(const Message& m, uint64_t acked, Errc code, const std::string& what) {
    auto r = validate_message(m, acked);
    ASSERT_FALSE(r.ok()) << what << ": accepted";
    EXPECT_EQ(r.error().code, code) << what << ": " << r.error().describe();
    EXPECT_NE(r.error().context.find(request_name(m.request())), std::string::npos)
        << what << ": error does not name the request: " << r.error().context;
}

std::string label(Request r, const char* what) { return std::string(request_name(r)) + " " + what; }

// ---- the validator --------------------------------------------------------------------------

TEST(MessageTable, RowsDescribeWhatTheSpecSays) {
    for (const Expect& e : kSupported) {
        const MessageInfo* row = message_info(static_cast<uint32_t>(e.r));
        ASSERT_NE(row, nullptr);
        EXPECT_TRUE(row->supported) << row->name;
        EXPECT_EQ(row->reply, e.reply) << row->name;
        EXPECT_EQ(row->feature, e.feature) << row->name;
    }
    for (uint32_t r : kUnsupported) {
        const MessageInfo* row = message_info(r);
        if (row != nullptr) {
            EXPECT_FALSE(row->supported) << row->name;
        }
    }
    EXPECT_STREQ(request_name(Request::kSetVringAddr), "SET_VRING_ADDR");
    EXPECT_STREQ(request_name(Request::kGetStatus), "GET_STATUS");
    EXPECT_STREQ(request_name(static_cast<Request>(41)), "UNKNOWN");
}

TEST(MessageTable, ValidMessagesPass) {
    for (const Expect& e : kSupported) {
        auto [payload, nfds] = valid(e);
        auto m = make(e.r, payload, nfds);
        auto r = validate_message(*m, kAllFeatures);
        ASSERT_TRUE(r.ok()) << request_name(e.r) << ": " << r.error().describe();
        EXPECT_EQ(r.value()->request, e.r);
    }
}

TEST(MessageTable, WrongPayloadSizesAreRefused) {
    for (const Expect& e : kSupported) {
        auto [payload, nfds] = valid(e);
        std::vector<std::vector<uint8_t>> wrong;
        switch (e.rule) {
            case Size::kIgnored:
                // Any size is fine (GET_FEATURES with a stray u64 is served as it always was).
                for (uint32_t n : {1u, 8u, 100u}) {
                    auto m = make(e.r, std::vector<uint8_t>(n, 0), nfds);
                    EXPECT_TRUE(validate_message(*m, kAllFeatures).ok()) << label(e.r, "") << n;
                }
                continue;
            case Size::kExact:
                wrong = {std::vector<uint8_t>(e.size - 1, 0), std::vector<uint8_t>(e.size + 1, 0), {}};
                break;
            case Size::kMemTable:
                wrong = {std::vector<uint8_t>(7, 0),  // shorter than the header
                         mem_table(2, 1),             // count says 2, one present
                         mem_table(1, 2),             // count says 1, two present
                         mem_table(9, 9)};            // more regions than allowed
                break;
            case Size::kConfig:
                wrong = {std::vector<uint8_t>(11, 0), config(4, 3), config(4, 5), config(257, 257)};
                break;
            case Size::kZeroOrEight:
                wrong = {std::vector<uint8_t>(4, 0), std::vector<uint8_t>(16, 0)};
                break;
        }
        for (size_t i = 0; i < wrong.size(); ++i) {
            // The right fd count for the valid message (for the mem table, its claimed count).
            size_t fds = e.rule == Size::kMemTable ? 2 : nfds;
            auto m = make(e.r, wrong[i], fds);
            expect_refused(*m, kAllFeatures, Errc::kInvalid, label(e.r, "wrong payload #") + std::to_string(i));
        }
    }
}

TEST(MessageTable, WrongFdCountsAreRefused) {
    for (const Expect& e : kSupported) {
        auto [payload, nfds] = valid(e);
        std::vector<std::pair<std::vector<uint8_t>, size_t>> wrong;
        switch (e.fds) {
            case Fds::kNone: wrong = {{payload, 1}, {payload, 3}}; break;
            case Fds::kOne: wrong = {{payload, 0}, {payload, 2}}; break;
            case Fds::kNoFdFlag: {
                std::vector<uint8_t> nofd = bytes(le64{kVringNoFdFlag});
                wrong = {{payload, 0}, {payload, 2}, {nofd, 1}};
                auto ok = make(e.r, nofd, 0);
                EXPECT_TRUE(validate_message(*ok, 0).ok()) << label(e.r, "no-fd flag without an fd");
                break;
            }
            case Fds::kPerRegion: {
                wrong = {{payload, 1}, {payload, 3}, {mem_table(0, 0), 1}};
                auto none = make(e.r, mem_table(0, 0), 0);
                EXPECT_TRUE(validate_message(*none, 0).ok()) << label(e.r, "empty table");
                break;
            }
            case Fds::kAtMostOne: {
                wrong = {{payload, 2}};
                auto none = make(e.r, payload, 0);
                EXPECT_TRUE(validate_message(*none, 0).ok()) << label(e.r, "without an fd");
                break;
            }
        }
        for (auto& [p, n] : wrong) {
            auto m = make(e.r, p, n);
            expect_refused(*m, kAllFeatures, Errc::kInvalid, label(e.r, "with fds: ") + std::to_string(n));
        }
    }
}

TEST(MessageTable, ProtocolFeaturesAreRequired) {
    for (const Expect& e : kSupported) {
        auto [payload, nfds] = valid(e);
        auto m = make(e.r, payload, nfds);
        if (e.feature == 0) {
            EXPECT_TRUE(validate_message(*m, 0).ok()) << label(e.r, "needs no protocol feature");
            continue;
        }
        expect_refused(*m, kAllFeatures & ~e.feature, Errc::kState, label(e.r, "without its feature"));
        EXPECT_TRUE(validate_message(*m, e.feature).ok()) << label(e.r, "with its feature");
    }
}

TEST(MessageTable, UnknownAndUnsupportedRequestsAreRefused) {
    for (uint32_t r : kUnsupported) {
        for (size_t nfds : {0, 1}) {
            auto m = make(static_cast<Request>(r), {}, nfds);
            auto v = validate_message(*m, kAllFeatures);
            ASSERT_FALSE(v.ok()) << r;
            EXPECT_EQ(v.error().code, Errc::kUnsupported) << r;
            EXPECT_NE(v.error().context.find(std::to_string(r)), std::string::npos) << v.error().context;
        }
    }
}

// ---- through a session ----------------------------------------------------------------------

// Just enough device for the session to negotiate with; no queue ever runs.
class FakeDevice : public virtio::VirtioDevice {
public:
    const std::string& name() const override { return name_; }
    uint32_t device_id() const override { return 2; }
    uint64_t features() const override { return virtio::kFVersion1; }
    uint32_t num_queues() const override { return 2; }
    uint32_t config_size() const override { return 8; }
    void read_config(uint32_t, std::span<uint8_t> out) const override { std::memset(out.data(), 0x5a, out.size()); }
    Status write_config(uint32_t, std::span<const uint8_t>) override { return ok_status(); }
    void set_features(uint64_t) override {}
    Status start_queue(uint32_t, virtio::QueueStart&&) override { return ok_status(); }
    uint32_t stop_queue(uint32_t) override { return 0; }
    bool queue_running(uint32_t) const override { return false; }
    void set_call_fd(uint32_t, int) override {}
    void set_logging(uint32_t, virtio::LogSettings) override {}
    Status set_memory(std::shared_ptr<const shm::MemoryMap>) override { return ok_status(); }
    bool supports_inflight() const override { return true; }
    bool net_control() const override { return true; }
    Status net_set_mtu(uint64_t) override { return ok_status(); }
    Status net_send_rarp(std::span<const uint8_t, 6>) override { return ok_status(); }

private:
    std::string name_ = "fake";
};

class SessionMessages : public ::testing::Test {
protected:
    void SetUp() override {
        int sv[2];
        ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv), 0);
        conn_ = std::make_unique<Connection>(UniqueFd(sv[0]));
        peer_.reset(sv[1]);
    }

    // The message as the session's peer sent it, with a pipe's write end among its fds: after
    // handling, the pipe reads EOF only if the session closed every fd it was given.
    struct Sent {
        bool kept;
        bool fds_closed;
    };
    Sent send(Request r, std::vector<uint8_t> payload, size_t nfds, uint32_t flags = kVersion) {
        auto m = make(r, std::move(payload), 0, flags);
        int p[2];
        EXPECT_EQ(pipe2(p, O_CLOEXEC | O_NONBLOCK), 0);
        UniqueFd rd(p[0]);
        for (size_t i = 0; i < nfds; ++i) m->fds[i].reset(fcntl(p[1], F_DUPFD_CLOEXEC, 0));
        m->nfds = nfds;
        close(p[1]);
        bool kept = session_.handle_for_test(*conn_, *m);
        char c;
        bool closed = read(rd.get(), &c, 1) == 0;
        return {kept, closed};
    }

    // The u64 of a REPLY_ACK answer, if one came.
    std::optional<uint64_t> ack() {
        uint8_t buf[sizeof(MsgHeader) + 8];
        ssize_t n = read(peer_.get(), buf, sizeof(buf));
        if (n != static_cast<ssize_t>(sizeof(buf))) return std::nullopt;
        le64 v;
        std::memcpy(&v, buf + sizeof(MsgHeader), 8);
        return v.get();
    }

    Session session_{std::make_unique<FakeDevice>()};
    std::unique_ptr<Connection> conn_;
    UniqueFd peer_;
};

TEST_F(SessionMessages, RefusedMessagesCloseTheConnectionAndTheirFds) {
    struct Case {
        Request r;
        std::vector<uint8_t> payload;
        size_t nfds;
        const char* what;
    };
    std::vector<Case> cases = {
        {Request::kGetFeatures, {}, 1, "fd on GET_FEATURES"},
        {Request::kSetVringCall, bytes(le64{0}), 2, "two call fds"},
        {Request::kSetVringKick, bytes(le64{kVringNoFdFlag}), 1, "fd despite the no-fd flag"},
        {Request::kSetMemTable, mem_table(1, 1), 3, "three fds for one region"},
        {Request::kAddMemReg, std::vector<uint8_t>(32), 1, "short ADD_MEM_REG"},
        {Request::kRemMemReg, std::vector<uint8_t>(40), 2, "two fds on REM_MEM_REG"},
        {Request::kSetInflightFd, std::vector<uint8_t>(24), 1, "SET_INFLIGHT_FD without the feature"},
        {Request::kSetLogFd, {}, 1, "unsupported SET_LOG_FD"},
        {static_cast<Request>(77), {}, 2, "unknown request"},
    };
    for (auto& c : cases) {
        Sent s = send(c.r, c.payload, c.nfds);
        EXPECT_FALSE(s.kept) << c.what << ": connection kept";
        EXPECT_TRUE(s.fds_closed) << c.what << ": fds left open";
        session_.reset_for_test();
    }
}

TEST_F(SessionMessages, WithReplyAckRefusedMessagesAreNackedAndTheConnectionKept) {
    ASSERT_TRUE(send(Request::kSetProtocolFeatures, bytes(le64{pf::kReplyAck}), 0).kept);
    const uint32_t need = kVersion | kFlagNeedReply;
    Sent s = send(Request::kSetVringCall, bytes(le64{0}), 2, need);
    EXPECT_TRUE(s.kept);
    EXPECT_TRUE(s.fds_closed);
    EXPECT_EQ(ack(), 1u);
    s = send(Request::kSetVringNum, std::vector<uint8_t>(12), 0, need);
    EXPECT_TRUE(s.kept);
    EXPECT_EQ(ack(), 1u);
    s = send(static_cast<Request>(500), {}, 1, need);
    EXPECT_TRUE(s.kept);
    EXPECT_TRUE(s.fds_closed);
    EXPECT_EQ(ack(), 1u);
    // A valid message is acked with 0 and keeps the fd it took (the call fd of vring 1).
    s = send(Request::kSetVringCall, bytes(le64{1}), 1, need);
    EXPECT_TRUE(s.kept);
    EXPECT_FALSE(s.fds_closed);
    EXPECT_EQ(ack(), 0u);
    session_.reset_for_test();
}

TEST_F(SessionMessages, ValidMessagesWithReplyAckAreAckedZero) {
    ASSERT_TRUE(send(Request::kSetProtocolFeatures, bytes(le64{pf::kReplyAck | pf::kNetMtu}), 0).kept);
    const uint32_t need = kVersion | kFlagNeedReply;
    EXPECT_TRUE(send(Request::kNetSetMtu, bytes(le64{1500}), 0, need).kept);
    EXPECT_EQ(ack(), 0u);
    EXPECT_TRUE(send(Request::kSetBackendReqFd, {}, 1, need).kept);
    EXPECT_EQ(ack(), 0u);
    EXPECT_TRUE(send(Request::kSetVringNum, bytes(VringState{1, 64}), 0, need).kept);
    EXPECT_EQ(ack(), 0u);
    session_.reset_for_test();
}

}  // namespace
}  // namespace vhostd::vhost
