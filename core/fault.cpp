#include "core/fault.hpp"

#include <signal.h>
#include <unistd.h>

#include <charconv>
#include <cstdlib>
#include <cstring>

#include "core/log.hpp"

namespace vhostd::fault {

void arm_kill_before_interrupt(uint64_t n) { g_interrupts_until_kill.store(n, std::memory_order_relaxed); }

Status arm_from_env() {
    const char* v = std::getenv(kKillBeforeInterruptEnv);
    if (v == nullptr) return ok_status();
    uint64_t n = 0;
    const char* end = v + std::strlen(v);
    auto [p, ec] = std::from_chars(v, end, n);
    if (ec != std::errc() || p != end || n == 0 || n > (1ull << 32))
        return make_error(Errc::kInvalid, "{}='{}': want a count 1..2^32", kKillBeforeInterruptEnv, v);
    arm_kill_before_interrupt(n);
    VLOG_WARN("fault injection armed: this process kills itself just before its used-buffer notification #{} ({})", n,
              kKillBeforeInterruptEnv);
    return ok_status();
}

void before_interrupt_slow() {
    // Several reactors may count down at once: exactly one of them sees 1 -> 0.
    uint64_t left = g_interrupts_until_kill.load(std::memory_order_relaxed);
    while (left != 0 && !g_interrupts_until_kill.compare_exchange_weak(left, left - 1, std::memory_order_relaxed)) {
    }
    if (left != 1) return;
    // The message is the test's evidence that the kill fell in the window; stderr is unbuffered.
    static constexpr char msg[] = "vhostd: fault injection: SIGKILL before a used-buffer notification\n";
    [[maybe_unused]] ssize_t w = ::write(STDERR_FILENO, msg, sizeof(msg) - 1);
    ::kill(::getpid(), SIGKILL);
    for (;;) ::pause();
}

}  // namespace vhostd::fault
