// LogRateLimit: at most `burst` lines per interval, shared by threads, and the count of what it
// suppressed reported with the next line it lets through.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "core/log.hpp"

using vhostd::LogRateLimit;

TEST(LogRateLimit, BurstThenSilenceThenSuppressedCount) {
    LogRateLimit lim(10, 1'000'000'000);  // 10 per second
    uint64_t t = 5'000'000'000;  // a window starts here (fixed windows: now / interval)
    int logged = 0;
    for (int i = 0; i < 1000; ++i) {
        auto v = lim.allow(t + static_cast<uint64_t>(i));
        if (v.log) {
            ++logged;
            EXPECT_EQ(v.suppressed, 0u);
        }
    }
    EXPECT_EQ(logged, 10);
    EXPECT_EQ(lim.total_suppressed(), 990u);
    // Still inside the window: nothing.
    EXPECT_FALSE(lim.allow(t + 999'999'999).log);
    // The next window: logged, and it says how many were dropped meanwhile.
    auto v = lim.allow(t + 1'000'000'000);
    EXPECT_TRUE(v.log);
    EXPECT_EQ(v.suppressed, 991u);
    v = lim.allow(t + 1'000'000'001);
    EXPECT_TRUE(v.log);
    EXPECT_EQ(v.suppressed, 0u);
}

TEST(LogRateLimit, ThreadsShareOneBudget) {
    LogRateLimit lim(10, 1'000'000'000'000ull);  // one window for the whole test
    std::atomic<int> logged{0};
    std::vector<std::thread> ts;
    for (int k = 0; k < 4; ++k)
        ts.emplace_back([&] {
            for (int i = 0; i < 100000; ++i)
                if (lim.allow(1'000'000'000'000ull + static_cast<uint64_t>(i)).log) logged.fetch_add(1);
        });
    for (auto& t : ts) t.join();
    EXPECT_EQ(logged.load(), 10);
    EXPECT_EQ(lim.total_suppressed(), 400000u - 10u);
}
