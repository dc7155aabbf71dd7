// The seccomp sandbox (libseccomp): allowlists of system calls, one per kind of thread.
//
// Layers, because seccomp filters stack (a thread runs under every filter it and its creators
// installed: the most restrictive answer wins) and are inherited by the threads it creates:
//   - kProcess, installed by main() before any thread exists: the union of what vhostd and the
//     libraries it runs (librados/librbd with their own threads, libnbd, gnutls, prometheus-cpp's
//     HTTP server, systemd's notify) need. It is what the main thread, the management API, the
//     metrics server and librados' threads run under. No exec, ptrace, mount, module or kexec
//     calls, no namespaces, no bpf, no process_vm_*.
//   - kReactor, stacked by each reactor thread on itself (reactor/reactor.cpp): the data path.
//     The guest's rings and requests are parsed here.
//   - kControl, stacked by each device's control thread (vhost/server.cpp): the vhost-user
//     messages, the frontend's input.
//   - kApi, stacked by the management API's thread (rpc/server.cpp): the process list without
//     what only the main thread does (signal waits, timers, children, scheduling, capabilities).
//     The threads it starts (device control threads, librados' threads of a disk added at
//     runtime) inherit it.
// Modes: kOn (a call outside the list: the thread's SIGSYS handler writes the call's name to
// stderr and the process dies of SIGSYS), kLog (the call runs and the kernel logs it: audit
// type=1326 in the kernel log; for finding what a new feature needs), kOff (nothing installed).
// The sandbox is process state, set once by main(); library users (the tests' in-process
// daemons) leave it off and every thread's enter() is then a no-op.
#pragma once

#include <cstdint>
#include <string>

#include "core/result.hpp"

namespace vhostd::sandbox {

enum class Mode : uint8_t { kOff, kLog, kOn };
enum class Kind : uint8_t { kProcess, kReactor, kControl, kApi };

// The one change of credentials every thread's filter lets through (--user: glibc makes the
// set*id calls on every thread): setgroups of `ngroups` groups, setresgid(gid, gid, gid),
// setresuid(uid, uid, uid). No other set*id call, no other ids.
struct IdChange {
    uint32_t uid = 0;
    uint32_t gid = 0;
    uint32_t ngroups = 0;
};

// main(), before any thread: builds every kind's filter, sets no_new_privs, installs the SIGSYS
// reporter and the process filter on the calling thread. kOff does nothing.
Status init(Mode mode, const IdChange* ids = nullptr);
Mode mode();
// The calling thread stacks `kind`'s filter (kReactor, kControl). A no-op with the sandbox off.
// No allocation: the filters are built by init().
Status enter(Kind kind);

const char* kind_name(Kind kind);

// Test hook: VHOSTD_TEST_FORBIDDEN_SYSCALL=reactor|control|api makes the first thread of that
// kind make a system call outside its list (getcwd on reactors and control threads, getitimer on
// the API's: in the process list, not in the kind's) right after enter(), proving that kind's
// own filter is live.
inline constexpr const char* kForbiddenSyscallEnv = "VHOSTD_TEST_FORBIDDEN_SYSCALL";

}  // namespace vhostd::sandbox
