// Driving a BlockChannel straight from a test thread, without a device: a request is submitted
// on the channel's reactor and waited for here. For backend tests on real drives (NVMe in the e2e
// guest), where the device's queues are not the point.
#pragma once

#include <sys/uio.h>

#include <atomic>
#include <chrono>
#include <climits>
#include <random>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "backends/block_backend.hpp"
#include "reactor/reactor.hpp"

namespace vhostd::testing {

struct ChannelOp final : Completion {
    std::atomic<int32_t> res{INT32_MIN};
    void complete(int32_t r) override { res.store(r); }
};

// One submission on `ch` (owned by reactor `r`); its result, or -1000 - Errc when submit()
// refused it (INT32_MIN, and a test failure, when nothing came within `wait`).
inline int32_t run_request(Reactor& r, backends::BlockChannel& ch, const backends::BlockRequest& q,
                           std::chrono::seconds wait = std::chrono::seconds(30)) {
    ChannelOp op;
    r.run_sync([&] {
        Status st = ch.submit(q, &op);
        if (!st.ok()) op.res = -1000 - static_cast<int32_t>(st.error().code);
    });
    auto deadline = std::chrono::steady_clock::now() + wait;
    while (op.res.load() == INT32_MIN && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(std::chrono::microseconds(200));
    EXPECT_NE(op.res.load(), INT32_MIN) << "no completion in " << wait.count() << " s";
    return op.res.load();
}

// `buf` cut into iovecs of the given sizes (they must add up to its size).
inline std::vector<iovec> iovecs_of(std::vector<uint8_t>& buf, const std::vector<size_t>& pieces) {
    std::vector<iovec> iov;
    size_t at = 0;
    for (size_t p : pieces) {
        iov.push_back({buf.data() + at, p});
        at += p;
    }
    EXPECT_EQ(at, buf.size());
    return iov;
}

inline std::vector<uint8_t> random_bytes(size_t n, uint32_t seed) {
    std::vector<uint8_t> v(n);
    std::mt19937 g(seed);
    for (auto& b : v) b = static_cast<uint8_t>(g());
    return v;
}

}  // namespace vhostd::testing
