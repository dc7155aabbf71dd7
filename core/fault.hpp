// Fault injection for tests: makes the process die at a chosen point of the data path that a
// random kill almost never hits. Off unless armed; when off, a point costs one relaxed load.
//
// The one point today: just before a used-buffer notification (the call eventfd write), after
// the used entries it announces are published (and, with inflight tracking, marked done). A
// backend killed there leaves completions in the used ring that the guest was never told about;
// the next backend must signal them (QueueWorker::start). tests/e2e/test_blk_lost_call.sh and
// InflightRestart.* use it. Armed from the environment by vhostd's main():
//   VHOSTD_TEST_KILL_BEFORE_INTERRUPT=N   SIGKILL this process just before its Nth notification
//                                         (counted over all queues; 1 <= N <= 2^32)
#pragma once

#include <atomic>
#include <cstdint>

#include "core/result.hpp"

namespace vhostd::fault {

inline constexpr const char* kKillBeforeInterruptEnv = "VHOSTD_TEST_KILL_BEFORE_INTERRUPT";

// Notifications left before the kill; 0 = not armed.
inline std::atomic<uint64_t> g_interrupts_until_kill{0};

// Arms the kill before the nth notification from now (n = 0 disarms).
void arm_kill_before_interrupt(uint64_t n);
// Arms from VHOSTD_TEST_KILL_BEFORE_INTERRUPT if it is set; an invalid value is an error.
Status arm_from_env();

[[gnu::cold]] void before_interrupt_slow();

// Called right before a used-buffer notification is signalled.
inline void before_interrupt() {
    if (g_interrupts_until_kill.load(std::memory_order_relaxed) != 0) [[unlikely]]
        before_interrupt_slow();
}

}  // namespace vhostd::fault
