// JSON-RPC 2.0 framing without a socket: requests, notifications, batches, every error code,
// handler errors mapped to codes, handlers that throw, hostile input (deep nesting, bad UTF-8).
#include <gtest/gtest.h>

#include <stdexcept>

#include "rpc/jsonrpc.hpp"

using namespace vhostd;
using vhostd::rpc::Json;

namespace {

class RpcDispatcher : public ::testing::Test {
protected:
    void SetUp() override {
        d_.add("echo", "returns its params", [](const Json& p) -> Result<Json> { return p; });
        d_.add("bad", "fails as a caller's mistake", [](const Json&) -> Result<Json> {
            return make_error(Errc::kInvalid, "no device 'x'");
        });
        d_.add("io", "fails with an errno", [](const Json&) -> Result<Json> {
            return sys_error_code(ENOSPC, "writing the file");
        });
        d_.add("throws", "throws", [](const Json&) -> Result<Json> { throw std::runtime_error("boom"); });
        d_.add("utf8", "returns invalid UTF-8", [](const Json&) -> Result<Json> { return Json(std::string("a\xff\xfe" "b")); });
    }
    Json call(const std::string& line) {
        auto r = d_.handle_line(line);
        EXPECT_TRUE(r.has_value()) << line;
        if (!r) return nullptr;
        EXPECT_EQ(r->find('\n'), std::string::npos);
        Json j = Json::parse(*r, nullptr, false);
        EXPECT_FALSE(j.is_discarded()) << *r;
        return j;
    }
    static int code(const Json& resp) { return resp.at("error").at("code").get<int>(); }
    rpc::Dispatcher d_;
};

TEST_F(RpcDispatcher, ACallGetsItsResultAndId) {
    Json r = call(R"({"jsonrpc":"2.0","id":7,"method":"echo","params":{"a":1}})");
    EXPECT_EQ(r["jsonrpc"], "2.0");
    EXPECT_EQ(r["id"], 7);
    EXPECT_EQ(r["result"], Json({{"a", 1}}));
    r = call(R"({"jsonrpc":"2.0","id":"x","method":"echo"})");
    EXPECT_EQ(r["id"], "x");
    EXPECT_EQ(r["result"], Json::object()) << "absent params are an empty object";
}

TEST_F(RpcDispatcher, NotificationsGetNoAnswer) {
    EXPECT_FALSE(d_.handle_line(R"({"jsonrpc":"2.0","method":"echo"})").has_value());
    EXPECT_FALSE(d_.handle_line(R"({"jsonrpc":"2.0","method":"no_such"})").has_value());
    EXPECT_FALSE(d_.handle_line(R"([{"jsonrpc":"2.0","method":"echo"},{"jsonrpc":"2.0","method":"bad"}])").has_value());
}

TEST_F(RpcDispatcher, MalformedRequestsGetTheirCodes) {
    Json r = call("{not json");
    EXPECT_EQ(code(r), rpc::kParseError);
    EXPECT_TRUE(r["id"].is_null());
    EXPECT_EQ(code(call(R"({"id":1,"method":"echo"})")), rpc::kInvalidRequest);
    EXPECT_EQ(code(call(R"({"jsonrpc":"1.0","id":1,"method":"echo"})")), rpc::kInvalidRequest);
    EXPECT_EQ(code(call(R"({"jsonrpc":"2.0","id":1,"method":5})")), rpc::kInvalidRequest);
    EXPECT_EQ(code(call(R"({"jsonrpc":"2.0","id":{},"method":"echo"})")), rpc::kInvalidRequest);
    EXPECT_EQ(code(call(R"(42)")), rpc::kInvalidRequest);
    r = call(R"({"jsonrpc":"2.0","id":3,"method":"no_such"})");
    EXPECT_EQ(code(r), rpc::kMethodNotFound);
    EXPECT_EQ(r["id"], 3);
    EXPECT_EQ(code(call(R"({"jsonrpc":"2.0","id":1,"method":"echo","params":[1,2]})")), rpc::kInvalidParams);
    EXPECT_EQ(code(call(R"({"jsonrpc":"2.0","id":1,"method":"echo","params":"x"})")), rpc::kInvalidParams);
}

TEST_F(RpcDispatcher, HandlerErrorsKeepTheirMessageVerbatim) {
    Json r = call(R"({"jsonrpc":"2.0","id":1,"method":"bad"})");
    EXPECT_EQ(code(r), rpc::kInvalidParams);
    EXPECT_EQ(r["error"]["message"], "no device 'x'");
    EXPECT_EQ(r["error"]["data"]["errc"], "invalid");
    r = call(R"({"jsonrpc":"2.0","id":1,"method":"io"})");
    EXPECT_EQ(code(r), rpc::kServerError);
    EXPECT_EQ(r["error"]["message"], "writing the file");
    EXPECT_EQ(r["error"]["data"]["errno"], ENOSPC);
    r = call(R"({"jsonrpc":"2.0","id":1,"method":"throws"})");
    EXPECT_EQ(code(r), rpc::kInternalError);
    EXPECT_NE(r["error"]["message"].get<std::string>().find("boom"), std::string::npos);
}

TEST_F(RpcDispatcher, BatchesAnswerEveryCallInOrder) {
    Json r = call(R"([{"jsonrpc":"2.0","id":1,"method":"echo","params":{"n":1}},
                      {"jsonrpc":"2.0","method":"echo"},
                      {"jsonrpc":"2.0","id":2,"method":"bad"},
                      5,
                      {"jsonrpc":"2.0","id":3,"method":"echo","params":{"n":3}}])");
    ASSERT_TRUE(r.is_array());
    ASSERT_EQ(r.size(), 4u);
    EXPECT_EQ(r[0]["result"]["n"], 1);
    EXPECT_EQ(r[1]["id"], 2);
    EXPECT_EQ(code(r[1]), rpc::kInvalidParams);
    EXPECT_EQ(code(r[2]), rpc::kInvalidRequest);
    EXPECT_EQ(r[3]["result"]["n"], 3);
    EXPECT_EQ(code(call("[]")), rpc::kInvalidRequest);
    std::string big = "[";
    for (size_t i = 0; i <= rpc::kMaxBatch; ++i) big += std::string(i ? "," : "") + R"({"jsonrpc":"2.0","id":1,"method":"echo"})";
    big += "]";
    EXPECT_EQ(code(call(big)), rpc::kInvalidRequest);
}

TEST_F(RpcDispatcher, HostileInputIsAnsweredNotCrashedOn) {
    // A megabyte of '[' would overflow the recursive parser's stack.
    EXPECT_EQ(code(call(std::string(1 << 20, '['))), rpc::kParseError);
    std::string deep = R"({"jsonrpc":"2.0","id":1,"method":"echo","params":{"a":)" + std::string(100, '[') +
                       std::string(100, ']') + "}}";
    EXPECT_EQ(code(call(deep)), rpc::kParseError);
    // Brackets inside strings do not count.
    Json r = call(R"({"jsonrpc":"2.0","id":1,"method":"echo","params":{"s":")" + std::string(200, '[') + R"("}})");
    EXPECT_EQ(r["result"]["s"].get<std::string>().size(), 200u);
    // Invalid UTF-8 in a result is replaced, not thrown on.
    r = call(R"({"jsonrpc":"2.0","id":1,"method":"utf8"})");
    EXPECT_TRUE(r["result"].is_string());
    EXPECT_EQ(code(call("\xff\xfe")), rpc::kParseError);
}

TEST_F(RpcDispatcher, RpcMethodsListsEveryMethod) {
    Json r = call(R"({"jsonrpc":"2.0","id":1,"method":"rpc_methods"})");
    std::vector<std::string> names;
    for (const auto& m : r["result"]) names.push_back(m["name"]);
    EXPECT_EQ(names, (std::vector<std::string>{"bad", "echo", "io", "rpc_methods", "throws", "utf8"}));
}

}  // namespace
