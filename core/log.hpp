// Logging: spdlog with a per-process level. A tiny wrapper so modules don't each configure spdlog.
#pragma once

#include <spdlog/spdlog.h>

#include <array>
#include <atomic>
#include <initializer_list>
#include <cstdint>

namespace vhostd {

// Parses "trace|debug|info|warn|error|off"; returns false if unknown.
bool set_log_level(const std::string& level);

// "text" (spdlog's default lines) or "json": one JSON object per line for log shippers,
// {"time", "level", "thread", "device"?, "queue"?, "message", "fields"?}. Returns false if
// unknown.
bool set_log_format(const std::string& format);

// A numeric detail of a line (a descriptor head, an offset, an errno) that the JSON format
// carries as a field; the text format has it in the message already.
struct LogField {
    const char* key = nullptr;  // a string literal
    int64_t value = 0;
};

// What a line is about, for the JSON format's "device", "queue" and "fields": set for the
// lifetime of a LogScope on this thread (a device's control thread, a management call on a
// device, a queue's warning). The device name must outlive the scope.
struct LogContext {
    static constexpr size_t kMaxFields = 5;
    const char* device = nullptr;
    int queue = -1;
    uint64_t suppressed = 0;  // similar lines suppressed before this one (a rate-limited line)
    size_t nfields = 0;
    std::array<LogField, kMaxFields> fields{};
};
LogContext& log_context();  // this thread's

// A context for a line about `device`'s queue `queue` (-1: the device) with up to kMaxFields
// fields (more are ignored).
inline LogContext log_at(const std::string& device, int queue = -1, std::initializer_list<LogField> fields = {}) {
    LogContext c;
    c.device = device.c_str();
    c.queue = queue;
    for (const LogField& f : fields) {
        if (c.nfields == c.fields.size()) break;
        c.fields[c.nfields++] = f;
    }
    return c;
}

// The context points into `device`: a temporary would dangle.
LogContext log_at(std::string&& device, int queue = -1, std::initializer_list<LogField> fields = {}) = delete;

class LogScope {
public:
    explicit LogScope(const LogContext& ctx) : saved_(log_context()) { log_context() = ctx; }
    explicit LogScope(const char* device, int queue = -1) : saved_(log_context()) {
        LogContext c;
        c.device = device;
        c.queue = queue;
        log_context() = c;
    }
    ~LogScope() { log_context() = saved_; }
    LogScope(const LogScope&) = delete;
    LogScope& operator=(const LogScope&) = delete;

private:
    LogContext saved_;
};

}  // namespace vhostd

#define VLOG_TRACE(...) SPDLOG_TRACE(__VA_ARGS__)
#define VLOG_DEBUG(...) spdlog::debug(__VA_ARGS__)
#define VLOG_INFO(...) spdlog::info(__VA_ARGS__)
#define VLOG_WARN(...) spdlog::warn(__VA_ARGS__)
#define VLOG_ERROR(...) spdlog::error(__VA_ARGS__)

namespace vhostd {

// Guest-triggerable log lines go through a LogRateLimit so that a hostile guest cannot flood
// the log: at most `burst` lines per `interval`, shared by every thread that logs for one
// device (lock-free; used on error paths only). The first line let through after a quiet spell
// says how many were suppressed.
class LogRateLimit {
public:
    struct Verdict {
        bool log = false;
        uint64_t suppressed = 0;  // lines suppressed since the last one logged
    };
    explicit LogRateLimit(uint32_t burst = 10, uint64_t interval_ns = 5'000'000'000ull)
        : burst_(burst), interval_ns_(interval_ns) {}

    Verdict allow(uint64_t now_ns) {
        // One word: the window's number (high 32 bits) and the lines logged in it (low 32), so
        // that starting a new window and counting in it cannot race.
        const uint64_t win = (now_ns / interval_ns_) & 0xffffffffu;
        uint64_t cur = state_.load(std::memory_order_relaxed);
        for (;;) {
            uint64_t next;
            if ((cur >> 32) != win) next = (win << 32) | 1u;
            else if ((cur & 0xffffffffu) < burst_) next = cur + 1;
            else break;
            if (state_.compare_exchange_weak(cur, next, std::memory_order_relaxed))
                return {true, suppressed_.exchange(0, std::memory_order_relaxed)};
        }
        suppressed_.fetch_add(1, std::memory_order_relaxed);
        total_suppressed_.fetch_add(1, std::memory_order_relaxed);
        return {};
    }
    Verdict allow();  // at CLOCK_MONOTONIC now
    uint64_t total_suppressed() const { return total_suppressed_.load(std::memory_order_relaxed); }

private:
    std::atomic<uint64_t> state_{~0ull};  // no window yet
    std::atomic<uint64_t> suppressed_{0};
    std::atomic<uint64_t> total_suppressed_{0};
    const uint32_t burst_;
    const uint64_t interval_ns_;
};

}  // namespace vhostd

// VLOG_LIMITED(limit, where, level, FMT, args...): logs through `limit` (a LogRateLimit) with
// `where` (a LogContext, see log_at) as the line's context; `level` is warn, error, info...
// FMT must be a string literal.
#define VLOG_LIMITED(limit, where, level, FMT, ...)                                                  \
    do {                                                                                             \
        auto vlog_v_ = (limit).allow();                                                              \
        if (vlog_v_.log) {                                                                           \
            ::vhostd::LogContext vlog_c_ = (where);                                                  \
            vlog_c_.suppressed = vlog_v_.suppressed;                                                 \
            ::vhostd::LogScope vlog_scope_(vlog_c_);                                                 \
            if (vlog_v_.suppressed)                                                                  \
                spdlog::level(FMT " ({} similar line(s) suppressed)", __VA_ARGS__, vlog_v_.suppressed); \
            else                                                                                     \
                spdlog::level(FMT, __VA_ARGS__);                                                     \
        }                                                                                            \
    } while (0)
