#include "core/sandbox.hpp"

#include <fcntl.h>
#include <liburing.h>
#include <linux/filter.h>
#include <linux/fs.h>
#include <linux/if_tun.h>
#include <linux/sockios.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <seccomp.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <initializer_list>
#include <vector>

#include "core/unique_fd.hpp"

namespace vhostd::sandbox {

namespace {

// ---- the lists --------------------------------------------------------------------------------
// By name (libseccomp resolves them for the native architecture; a name the architecture does
// not have is skipped). Calls with argument conditions are added in build() below.

// Every thread: memory, locks, time, signals, its own exit, logging to stderr.
constexpr const char* kCommon[] = {
    "read", "write", "readv", "writev", "close", "futex", "mmap", "munmap", "mremap", "madvise", "brk",
    "mprotect", "rt_sigprocmask", "rt_sigreturn", "sigaltstack", "clock_gettime", "clock_nanosleep",
    "nanosleep", "gettimeofday", "gettid", "getpid", "sched_yield", "sched_getaffinity", "exit",
    "exit_group", "restart_syscall", "getrandom", "set_robust_list", "rseq", "fcntl", "fstat",
    "newfstatat", "lseek", "poll", "ppoll", "membarrier", "eventfd2",
};

#ifdef VHOSTD_SANITIZED
// AddressSanitizer's runtime checks memory with a pipe (IsAccessibleMemoryRange) and reads its
// maps on any thread: a sanitizer build's threads may make these too.
constexpr const char* kSanitizer[] = {"pipe", "pipe2", "readlink", "readlinkat", "getrlimit", "prlimit64", "prctl"};
#endif

// Reactors: io_uring, and what the remote backends do on them: libnbd's sockets (a reconnect
// creates and connects one; a host name is resolved there) and gnutls (certificate and key
// files read at a TLS handshake: openat read-only, add_read_only_open).
constexpr const char* kReactor[] = {
    "io_uring_enter", "socket", "connect", "sendto", "recvfrom", "sendmsg", "recvmsg", "getsockopt",
    "setsockopt", "getsockname", "getpeername", "shutdown", "uname",
};

// Device control threads: the vhost-user connection (messages with fds), guest memory and the
// inflight region, eventfds, the tap's offload ioctls, client mode's connect.
constexpr const char* kControl[] = {
    "recvmsg", "sendmsg", "recvfrom", "sendto", "accept4", "socket", "connect", "getsockopt", "setsockopt",
    "shutdown", "memfd_create", "ftruncate", "fallocate", "dup",
};

// ioctl requests a control thread makes (by number, below): the tap's queue attach/detach and
// offloads when the guest's features are set, its MTU for the config space and the frontend's
// NET_SET_MTU; a block device's size.
constexpr unsigned long kControlIoctls[] = {
    TUNSETQUEUE, TUNSETVNETHDRSZ, TUNSETOFFLOAD, SIOCGIFMTU, SIOCSIFMTU, SIOCGIFFLAGS, BLKGETSIZE64,
};

// The process (main, the management API, the metrics server, librados' threads, start-up and
// shutdown), on top of the three lists above.
constexpr const char* kProcess[] = {
    // files and directories (disks, sockets, config, /proc for the metrics, ceph.conf, keyrings)
    "openat", "open", "stat", "lstat", "statx", "statfs", "fstatfs", "access", "faccessat", "faccessat2",
    "readlink", "readlinkat", "getdents64", "unlink", "unlinkat", "mkdir", "mkdirat", "rename", "renameat",
    "renameat2", "chmod", "fchmod", "fchmodat", "fchown", "fchownat", "chown", "lchown", "umask", "getcwd",
    "truncate", "fsync", "fdatasync", "sync_file_range", "flock", "pread64", "pwrite64", "preadv",
    "pwritev", "dup2", "dup3", "pipe", "pipe2", "utimensat", "msync", "mincore", "mlock", "munlock",
    // sockets (the API, metrics, NBD and Ceph connections, systemd's notify socket)
    "bind", "listen", "accept", "socketpair", "sendmmsg", "recvmmsg",
    // waiting
    "epoll_create", "epoll_create1", "epoll_ctl", "epoll_wait", "epoll_pwait", "epoll_pwait2", "select",
    "pselect6", "timerfd_create", "timerfd_settime", "timerfd_gettime", "signalfd4", "rt_sigtimedwait",
    "rt_sigpending", "rt_sigsuspend", "pause", "alarm", "setitimer", "getitimer",
    // threads and the process
    "clone", "clone3", "set_tid_address", "wait4", "sched_setaffinity", "sched_getparam",
    "sched_setscheduler", "sched_getscheduler", "sched_get_priority_min", "sched_get_priority_max",
    "getpriority", "setpriority", "getcpu", "getrlimit", "setrlimit", "prlimit64", "getrusage", "times",
    "sysinfo", "uname", "getuid", "geteuid", "getgid", "getegid", "getresuid", "getresgid", "getgroups",
    "getppid", "getpgrp", "getsid", "capget", "io_uring_setup", "io_uring_register", "get_mempolicy",
    "arch_prctl", "ioprio_get", "ioprio_set",
    // capabilities: --user's switch keeps CAP_NET_ADMIN on one thread and none on the others
    // (capset can only lower what a thread may have: the permitted set never grows)
    "capset",
};

// The management API's thread (and what it starts: device control threads, librados' threads of
// an RBD disk added at runtime) runs the process list without these: signal waiting, timers and
// child processes are the main thread's (its signal wait, the watchdog), scheduling and
// capabilities are set before the API thread exists (--cpus, --user), and nothing it starts
// locks memory.
constexpr const char* kNotApi[] = {
    "wait4", "pause", "alarm", "setitimer", "getitimer", "rt_sigsuspend", "rt_sigtimedwait", "rt_sigpending",
    "signalfd4", "sched_setscheduler", "sched_getscheduler", "sched_get_priority_min", "sched_get_priority_max",
    "setpriority", "ioprio_set", "capset", "setrlimit", "mlock", "munlock",
};

// Outside the lists on purpose (they stay forbidden in every mode but off): execve/execveat,
// ptrace, process_vm_readv/writev, mount/umount2/pivot_root/chroot, unshare/setns, bpf,
// perf_event_open, init_module/finit_module/delete_module, kexec_*, reboot, swapon/off,
// keyctl/add_key/request_key, userfaultfd, open_by_handle_at, personality, iopl/ioperm,
// settimeofday/clock_settime/adjtimex, acct, quotactl, setuid and friends (except --user's own
// switch: IdChange).

constexpr int kMaxNr = 512;
// Names by number, for the SIGSYS report (no allocation in the handler).
char g_names[kMaxNr][24];
std::atomic<Mode> g_mode{Mode::kOff};
std::vector<sock_filter> g_prog[4];  // by Kind
Kind g_hook_kind = Kind::kProcess;   // kProcess: the test hook is not armed
std::atomic<bool> g_hook_fired{false};
thread_local char t_name[16];

// The SIGSYS reporter (kOn's default action is SCMP_ACT_TRAP). Async-signal-safe: write(2) of a
// line built on the stack, then the signal again with its default action (SA_RESETHAND put it
// back; SA_NODEFER lets it through), which kills the process with SIGSYS.
void on_sigsys(int sig, siginfo_t* si, void*) {
    char line[200];
    size_t n = 0;
    auto put = [&](const char* s) {
        while (*s != '\0' && n < sizeof(line) - 1) line[n++] = *s++;
    };
    char name[17] = {};
    if (t_name[0] != '\0') std::memcpy(name, t_name, sizeof(t_name));
    else prctl(PR_GET_NAME, name, 0, 0, 0);
    int nr = si->si_syscall;
    char num[12];
    int k = sizeof(num) - 1;
    num[k] = '\0';
    unsigned u = nr < 0 ? 0u : static_cast<unsigned>(nr);
    do {
        num[--k] = static_cast<char>('0' + u % 10);
        u /= 10;
    } while (u != 0 && k > 0);
    put("vhostd: sandbox: thread ");
    put(name);
    put(" made a forbidden system call: ");
    put(nr >= 0 && nr < kMaxNr && g_names[nr][0] != '\0' ? g_names[nr] : "?");
    put(" (");
    put(num + k);
    put("); killing the process (--sandbox=log runs it and logs it instead)\n");
    [[maybe_unused]] ssize_t w = ::write(STDERR_FILENO, line, n);
    raise(sig);
}

Status add_names(scmp_filter_ctx ctx, std::initializer_list<const char*> names) {
    for (const char* nm : names) {
        int nr = seccomp_syscall_resolve_name(nm);
        if (nr == __NR_SCMP_ERROR) continue;  // not on this architecture
        int rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0);
        if (rc < 0) return make_error(Errc::kSystem, "seccomp: allowing {}: {}", nm, std::strerror(-rc));
    }
    return ok_status();
}

template <size_t N>
Status add_list(scmp_filter_ctx ctx, const char* const (&names)[N]) {
    for (const char* nm : names) VHOSTD_TRY(add_names(ctx, {nm}));
    return ok_status();
}

// `names` without those in `except`.
template <size_t N, size_t M>
Status add_list_except(scmp_filter_ctx ctx, const char* const (&names)[N], const char* const (&except)[M]) {
    for (const char* nm : names) {
        bool skip = false;
        for (const char* x : except) skip |= std::strcmp(nm, x) == 0;
        if (!skip) VHOSTD_TRY(add_names(ctx, {nm}));
    }
    return ok_status();
}

Status add_rule(scmp_filter_ctx ctx, uint32_t action, const char* nm, std::initializer_list<scmp_arg_cmp> args) {
    int nr = seccomp_syscall_resolve_name(nm);
    if (nr == __NR_SCMP_ERROR) return ok_status();
    int rc = seccomp_rule_add_array(ctx, action, nr, static_cast<unsigned>(args.size()), args.begin());
    if (rc < 0) return make_error(Errc::kSystem, "seccomp: rule for {}: {}", nm, std::strerror(-rc));
    return ok_status();
}

// Read-only opens (no O_WRONLY, O_RDWR, O_CREAT or O_TRUNC), on reactors and control threads:
// glibc reads /sys/devices/system/cpu/online when a thread's first allocation makes a new malloc
// arena (seen on a control thread among librados' many threads), gnutls its certificates at a
// TLS handshake and the resolver its files on a reactor's NBD reconnect.
Status add_read_only_open(scmp_filter_ctx ctx) {
    return add_rule(ctx, SCMP_ACT_ALLOW, "openat", {SCMP_A2(SCMP_CMP_MASKED_EQ, O_ACCMODE | O_CREAT | O_TRUNC, O_RDONLY)});
}

Result<std::vector<sock_filter>> build(Kind kind, Mode mode, const IdChange* ids) {
    const uint32_t deny = mode == Mode::kLog ? SCMP_ACT_LOG : SCMP_ACT_TRAP;
    scmp_filter_ctx ctx = seccomp_init(deny);
    if (ctx == nullptr) return make_error(Errc::kSystem, "seccomp_init failed");
    struct Release {
        scmp_filter_ctx c;
        ~Release() { seccomp_release(c); }
    } release{ctx};
    // no_new_privs is set once by init(); the filter does not set it again.
    seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0);
    // A binary search over the call numbers, not a linear walk: every system call of every
    // thread runs the filter (a reactor's io_uring_enter once per pass).
    seccomp_attr_set(ctx, SCMP_FLTATR_CTL_OPTIMIZE, 2);
    VHOSTD_TRY(add_list(ctx, kCommon));
#ifdef VHOSTD_SANITIZED
    VHOSTD_TRY(add_list(ctx, kSanitizer));
#endif
    const auto pid = static_cast<scmp_datum_t>(getpid());
    // Signals: to this process only; the SIGSYS disposition is the reporter's and stays so.
    VHOSTD_TRY(add_rule(ctx, SCMP_ACT_ALLOW, "tgkill", {SCMP_A0(SCMP_CMP_EQ, pid)}));
    VHOSTD_TRY(add_rule(ctx, SCMP_ACT_ALLOW, "kill", {SCMP_A0(SCMP_CMP_EQ, pid)}));
    VHOSTD_TRY(add_rule(ctx, SCMP_ACT_ALLOW, "rt_sigaction", {SCMP_A0(SCMP_CMP_NE, SIGSYS)}));
    // Thread names (pthread_setname_np on ourselves, the SIGSYS report); the process list allows
    // every prctl.
    VHOSTD_TRY(add_rule(ctx, SCMP_ACT_ALLOW, "prctl", {SCMP_A0(SCMP_CMP_EQ, PR_GET_NAME)}));
    VHOSTD_TRY(add_rule(ctx, SCMP_ACT_ALLOW, "prctl", {SCMP_A0(SCMP_CMP_EQ, PR_SET_NAME)}));
    // More filters only ever narrow what a thread may do.
    VHOSTD_TRY(add_rule(ctx, SCMP_ACT_ALLOW, "seccomp", {SCMP_A0(SCMP_CMP_EQ, SECCOMP_SET_MODE_FILTER)}));
    if (ids != nullptr) {
        // --user: every thread makes the switch (glibc's set*id broadcast), to these ids only.
        const auto u = static_cast<scmp_datum_t>(ids->uid), g = static_cast<scmp_datum_t>(ids->gid);
        VHOSTD_TRY(add_rule(ctx, SCMP_ACT_ALLOW, "setresuid",
                            {SCMP_A0(SCMP_CMP_EQ, u), SCMP_A1(SCMP_CMP_EQ, u), SCMP_A2(SCMP_CMP_EQ, u)}));
        VHOSTD_TRY(add_rule(ctx, SCMP_ACT_ALLOW, "setresgid",
                            {SCMP_A0(SCMP_CMP_EQ, g), SCMP_A1(SCMP_CMP_EQ, g), SCMP_A2(SCMP_CMP_EQ, g)}));
        VHOSTD_TRY(add_rule(ctx, SCMP_ACT_ALLOW, "setgroups", {SCMP_A0(SCMP_CMP_EQ, ids->ngroups)}));
    }
    switch (kind) {
        case Kind::kReactor:
            VHOSTD_TRY(add_list(ctx, kReactor));
            VHOSTD_TRY(add_read_only_open(ctx));
            // Filling the command ring's buffer table with guest memory (fixed=on): that register
            // operation only (the ring itself takes no other; the main ring takes none at all).
            VHOSTD_TRY(add_rule(ctx, SCMP_ACT_ALLOW, "io_uring_register",
                                {SCMP_A1(SCMP_CMP_EQ, static_cast<scmp_datum_t>(IORING_REGISTER_BUFFERS_UPDATE))}));
            break;
        case Kind::kControl:
            VHOSTD_TRY(add_list(ctx, kControl));
            VHOSTD_TRY(add_read_only_open(ctx));
            for (unsigned long req : kControlIoctls)
                VHOSTD_TRY(add_rule(ctx, SCMP_ACT_ALLOW, "ioctl", {SCMP_A1(SCMP_CMP_EQ, static_cast<scmp_datum_t>(req))}));
            break;
        case Kind::kProcess:
        case Kind::kApi:
            VHOSTD_TRY(add_list(ctx, kReactor));
            VHOSTD_TRY(add_list(ctx, kControl));  // (control threads the API starts stack theirs)
            if (kind == Kind::kApi) VHOSTD_TRY(add_list_except(ctx, kProcess, kNotApi));
            else VHOSTD_TRY(add_list(ctx, kProcess));
            VHOSTD_TRY(add_names(ctx, {"ioctl"}));  // taps, block devices, NVMe ids, sockets, terminals
            VHOSTD_TRY(add_names(ctx, {"prctl"}));  // (librados names its threads)
            break;
    }
    // Out through a memfd: libseccomp 2.5 has no in-memory export.
    UniqueFd fd(memfd_create("vhostd-seccomp", MFD_CLOEXEC));
    if (!fd) return sys_error("memfd_create");
    int rc = seccomp_export_bpf(ctx, fd.get());
    if (rc < 0) return make_error(Errc::kSystem, "seccomp_export_bpf: {}", std::strerror(-rc));
    off_t len = lseek(fd.get(), 0, SEEK_END);
    if (len <= 0 || len % static_cast<off_t>(sizeof(sock_filter)) != 0)
        return make_error(Errc::kSystem, "seccomp: exported {} bytes", static_cast<long long>(len));
    std::vector<sock_filter> prog(static_cast<size_t>(len) / sizeof(sock_filter));
    if (pread(fd.get(), prog.data(), static_cast<size_t>(len), 0) != len) return sys_error("reading the filter back");
    return prog;
}

Status install(const std::vector<sock_filter>& prog) {
    sock_fprog fp{static_cast<unsigned short>(prog.size()), const_cast<sock_filter*>(prog.data())};
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &fp) != 0) return sys_error("seccomp(SET_MODE_FILTER)");
    return ok_status();
}

}  // namespace

const char* kind_name(Kind kind) {
    switch (kind) {
        case Kind::kProcess: return "process";
        case Kind::kReactor: return "reactor";
        case Kind::kControl: return "control";
        case Kind::kApi: return "api";
    }
    return "?";
}

Mode mode() { return g_mode.load(std::memory_order_relaxed); }

Status init(Mode m, const IdChange* ids) {
    if (m == Mode::kOff) return ok_status();
    // The time zone, read now: the first localtime_r (a log line's time stamp, on whichever thread
    // logs first) would open /etc/localtime, and a control thread may not open files.
    tzset();
    if (g_mode.load() != Mode::kOff) return make_error(Errc::kState, "the sandbox is already on");
    if (const char* h = std::getenv(kForbiddenSyscallEnv); h != nullptr) {
        if (std::strcmp(h, "reactor") == 0) g_hook_kind = Kind::kReactor;
        else if (std::strcmp(h, "control") == 0) g_hook_kind = Kind::kControl;
        else if (std::strcmp(h, "api") == 0) g_hook_kind = Kind::kApi;
        else return make_error(Errc::kInvalid, "{}={}: must be reactor, control or api", kForbiddenSyscallEnv, h);
    }
    for (int nr = 0; nr < kMaxNr; ++nr) {
        char* nm = seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, nr);
        if (nm == nullptr) continue;
        std::strncpy(g_names[nr], nm, sizeof(g_names[nr]) - 1);
        std::free(nm);
    }
    for (Kind k : {Kind::kProcess, Kind::kReactor, Kind::kControl, Kind::kApi}) {
        auto p = build(k, m, ids);
        if (!p.ok()) return std::move(p).take_error();
        g_prog[static_cast<int>(k)] = std::move(p).value();
    }
    struct sigaction sa {};
    sa.sa_sigaction = on_sigsys;
    sa.sa_flags = SA_SIGINFO | SA_RESETHAND | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGSYS, &sa, nullptr) != 0) return sys_error("sigaction(SIGSYS)");
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return sys_error("prctl(PR_SET_NO_NEW_PRIVS)");
    VHOSTD_TRY(install(g_prog[static_cast<int>(Kind::kProcess)]));
    g_mode.store(m);
    return ok_status();
}

Status enter(Kind kind) {
    if (mode() == Mode::kOff || kind == Kind::kProcess) return ok_status();
    pthread_getname_np(pthread_self(), t_name, sizeof(t_name));
    VHOSTD_TRY(install(g_prog[static_cast<int>(kind)]));
    if (g_hook_kind == kind && !g_hook_fired.exchange(true)) {
        // In the process list, not in the kind's: the thread's own filter must refuse it.
        if (kind == Kind::kApi) {
            itimerval v{};
            syscall(SYS_getitimer, ITIMER_REAL, &v);
        } else {
            syscall(SYS_getcwd, t_name, 1);
        }
    }
    return ok_status();
}

}  // namespace vhostd::sandbox
