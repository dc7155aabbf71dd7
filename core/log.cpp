#include "core/log.hpp"

#include <spdlog/formatter.h>
#include <spdlog/pattern_formatter.h>
#include <time.h>

#include <chrono>
#include <nlohmann/json.hpp>

namespace vhostd {

bool set_log_level(const std::string& level) {
    auto lvl = spdlog::level::from_str(level);
    if (lvl == spdlog::level::off && level != "off") return false;
    spdlog::set_level(lvl);
    return true;
}

LogContext& log_context() {
    thread_local LogContext ctx;
    return ctx;
}

namespace {

// One JSON object per line. Strings go through nlohmann-json's serializer (escaping, invalid
// UTF-8 replaced: a guest-controlled byte in a message cannot break the line).
class JsonFormatter final : public spdlog::formatter {
public:
    void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
        using namespace std::chrono;
        auto t = msg.time;
        auto secs = time_point_cast<seconds>(t);
        auto us = duration_cast<microseconds>(t - secs).count();
        std::time_t tt = system_clock::to_time_t(secs);
        std::tm tm{};
        gmtime_r(&tt, &tm);
        char stamp[40];
        size_t n = std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
        std::snprintf(stamp + n, sizeof stamp - n, ".%06ldZ", static_cast<long>(us));
        nlohmann::ordered_json j;
        j["time"] = stamp;
        auto lv = spdlog::level::to_string_view(msg.level);
        j["level"] = std::string(lv.data(), lv.size());
        j["thread"] = msg.thread_id;
        const LogContext& ctx = log_context();  // formatting runs on the logging thread
        if (ctx.device != nullptr) j["device"] = ctx.device;
        if (ctx.queue >= 0) j["queue"] = ctx.queue;
        j["message"] = std::string(msg.payload.data(), msg.payload.size());
        if (ctx.nfields > 0 || ctx.suppressed > 0) {
            auto& f = j["fields"];
            f = nlohmann::ordered_json::object();
            for (size_t i = 0; i < ctx.nfields && i < ctx.fields.size(); ++i) f[ctx.fields[i].key] = ctx.fields[i].value;
            if (ctx.suppressed > 0) f["suppressed"] = ctx.suppressed;
        }
        std::string line = j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
        line += '\n';
        dest.append(line.data(), line.data() + line.size());
    }
    std::unique_ptr<spdlog::formatter> clone() const override { return std::make_unique<JsonFormatter>(); }
};

}  // namespace

bool set_log_format(const std::string& format) {
    if (format == "text") {
        spdlog::set_formatter(std::make_unique<spdlog::pattern_formatter>());
        return true;
    }
    if (format != "json") return false;
    spdlog::set_formatter(std::make_unique<JsonFormatter>());
    return true;
}

LogRateLimit::Verdict LogRateLimit::allow() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return allow(static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(ts.tv_nsec));
}

}  // namespace vhostd
