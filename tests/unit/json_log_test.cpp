// --log-format json: every line is one JSON object; a guest-triggered warning carries the
// device, the queue and its numeric fields; a hostile byte in a message cannot break the line.
#include <spdlog/sinks/ostream_sink.h>

#include <nlohmann/json.hpp>
#include <sstream>

#include "core/log.hpp"
#include "testing/blk_fixture.hpp"

namespace vhostd::testing {
namespace {

// Routes the default logger to a string in the JSON format for the test's lifetime.
class JsonLog : public BlkFixture {
protected:
    void SetUp() override {
        BlkFixture::SetUp();
        saved_ = spdlog::default_logger();
        auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out_, true);
        spdlog::set_default_logger(std::make_shared<spdlog::logger>("json-test", sink));
        ASSERT_TRUE(set_log_format("json"));
    }
    void TearDown() override {
        BlkFixture::TearDown();  // the daemon's last lines go to the test's sink too
        spdlog::set_default_logger(saved_);
        set_log_format("text");
    }
    std::vector<nlohmann::json> lines() {
        std::vector<nlohmann::json> v;
        std::istringstream in(out_.str());
        for (std::string l; std::getline(in, l);) {
            auto j = nlohmann::json::parse(l, nullptr, false);
            EXPECT_FALSE(j.is_discarded()) << "not JSON: " << l;
            if (!j.is_discarded()) v.push_back(std::move(j));
        }
        return v;
    }
    std::ostringstream out_;
    std::shared_ptr<spdlog::logger> saved_;
};

TEST_F(JsonLog, EveryLineParsesAndAGuestWarningNamesDeviceQueueAndHead) {
    start_daemon(1);
    auto disk = make_disk("d.img");
    auto sock = add_blk("id=jd,socket=" + path("s.sock") + ",path=" + disk + ",queues=2");
    Guest g;
    connect_guest(g, sock, 2);
    auto& q = *g.queues[1];
    auto buf = g.mem->alloc(4096, 16);
    ASSERT_OK(buf);
    uint64_t b = buf.value();
    // A header of 8 bytes: the device warns about the request and fails it.
    std::vector<DriverBuf> chain{{b, 8, false}, {b + 100, 1, true}};
    auto head = q.add_chain(chain);
    ASSERT_OK(head);
    ASSERT_OK(q.publish_and_kick(g.kicks[1].get()));
    ASSERT_TRUE(q.wait_used(g.calls[1].get(), std::chrono::seconds(5)));
    // A message with a byte that is not UTF-8 and a quote.
    VLOG_WARN("odd \xff byte \" and a newline\n here");

    auto v = lines();
    ASSERT_GE(v.size(), 3u);
    bool warned = false, listening = false, odd = false;
    for (const auto& j : v) {
        ASSERT_TRUE(j.contains("time") && j.contains("level") && j.contains("message")) << j.dump();
        const std::string msg = j["message"];
        if (msg.find("listening on") != std::string::npos) {
            listening = true;
            EXPECT_EQ(j.value("device", ""), "jd") << j.dump();  // a device's control thread
        }
        if (j["level"] == "warning" && msg.find("queue 1: head") != std::string::npos) {
            warned = true;
            EXPECT_EQ(j.value("device", ""), "jd") << j.dump();
            EXPECT_EQ(j.value("queue", -1), 1) << j.dump();
            ASSERT_TRUE(j.contains("fields")) << j.dump();
            EXPECT_EQ(j["fields"].value("head", -1), static_cast<int>(head.value())) << j.dump();
        }
        if (msg.rfind("odd ", 0) == 0) {
            odd = true;
            EXPECT_NE(msg.find("and a newline\n here"), std::string::npos);
            EXPECT_FALSE(j.contains("device")) << "the test thread is about no device: " << j.dump();
        }
    }
    EXPECT_TRUE(warned) << out_.str();
    EXPECT_TRUE(listening) << out_.str();
    EXPECT_TRUE(odd) << out_.str();
}

TEST(LogContextTest, ScopesNestAndRestore) {
    EXPECT_EQ(log_context().device, nullptr);
    {
        LogScope a("a");
        std::string dev = "b";
        {
            LogScope b(log_at(dev, 3, {{"x", 1}, {"y", -2}, {"z", 3}, {"w", 4}, {"v", 5}, {"dropped", 6}}));
            EXPECT_STREQ(log_context().device, "b");
            EXPECT_EQ(log_context().queue, 3);
            EXPECT_EQ(log_context().nfields, LogContext::kMaxFields);  // the sixth is ignored
            EXPECT_EQ(log_context().fields[1].value, -2);
        }
        EXPECT_STREQ(log_context().device, "a");
        EXPECT_EQ(log_context().queue, -1);
        EXPECT_EQ(log_context().nfields, 0u);
    }
    EXPECT_EQ(log_context().device, nullptr);
}

}  // namespace
}  // namespace vhostd::testing
