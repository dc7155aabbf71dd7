// Logging: spdlog with a per-process level. A tiny wrapper so modules don't each configure spdlog.
#pragma once

#include <spdlog/spdlog.h>

namespace vhostd {

// Parses "trace|debug|info|warn|error|off"; returns false if unknown.
bool set_log_level(const std::string& level);

}  // namespace vhostd

#define VLOG_TRACE(...) SPDLOG_TRACE(__VA_ARGS__)
#define VLOG_DEBUG(...) spdlog::debug(__VA_ARGS__)
#define VLOG_INFO(...) spdlog::info(__VA_ARGS__)
#define VLOG_WARN(...) spdlog::warn(__VA_ARGS__)
#define VLOG_ERROR(...) spdlog::error(__VA_ARGS__)

namespace vhostd {

// Guest-triggerable log lines go through this so a hostile guest cannot flood the log:
// the first `burst` events are logged, then one in `every`.
class LogLimiter {
public:
    explicit LogLimiter(uint64_t burst = 10, uint64_t every = 10000) : burst_(burst), every_(every) {}
    bool allow() {
        uint64_t n = count_++;
        return n < burst_ || (n - burst_) % every_ == 0;
    }
    uint64_t count() const { return count_; }

private:
    uint64_t count_ = 0;
    uint64_t burst_;
    uint64_t every_;
};

}  // namespace vhostd
