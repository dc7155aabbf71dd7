// Dropping root: --user USER[:GROUP].
//
// vhostd starts as root to make what only root may make (taps, sockets in /run, drives opened
// before the switch), then runs as USER. Credentials are per thread in Linux; glibc's set*id
// calls change every thread of the process (it signals each one to make the call itself), so
// the switch is made once, from the main thread, after the start-up threads exist. Every
// thread's seccomp filter allows exactly that change (sandbox::init's IdChange): the target
// ids, nothing else.
//
// Capabilities after the switch: none on any thread, except CAP_NET_ADMIN on one thread, the
// privileged helper (PrivilegedHelper below), when net devices may be added at runtime (the
// management API is on): a tap is created or attached there and nowhere else. Threads inherit
// their creator's capabilities, so the helper is started from the main thread while it still
// holds CAP_NET_ADMIN, then the main thread gives it up before it starts anything else: the
// management API and every thread it starts (device control threads, librados') have none.
#pragma once

#include <sys/types.h>

#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/result.hpp"

namespace vhostd::privileges {

struct Identity {
    std::string spec;  // as given: USER or USER:GROUP
    uid_t uid = 0;
    gid_t gid = 0;
    std::vector<gid_t> groups;  // supplementary: USER's groups (USER), or just GROUP (USER:GROUP)
};

// USER[:GROUP], names or numbers. USER alone: its passwd entry's primary group and its groups
// (as login would set them); USER:GROUP: that group and no other. A number that is not in the
// passwd database needs :GROUP. Reads the user and group databases: call before the sandbox.
Result<Identity> resolve(const std::string& spec);

// no_new_privs on the calling thread and every thread it creates from now on: nothing vhostd
// runs can gain privileges by exec (set-id binaries, file capabilities). main() calls it before
// the first thread when --user is given (the sandbox sets it too).
Status forbid_new_privileges();

// The calling thread (main) switches the whole process to `id` (supplementary groups, gid, uid:
// real, effective and saved). keep_net_admin: the calling thread keeps CAP_NET_ADMIN (permitted
// and effective) and nothing else; otherwise no capability survives. Checks the result (ids read
// back, capabilities read back) and fails when anything is off.
Status switch_to(const Identity& id, bool keep_net_admin);

// The calling thread gives up every capability it holds.
Status drop_thread_capabilities();

// The calling thread's capabilities, e.g. "effective=net_admin permitted=net_admin" or
// "effective=none permitted=none" (libcap-ng's names).
std::string describe_thread_capabilities();

// One thread that runs the jobs given to it, one at a time, with the capabilities its creator
// had; run() waits for the job. Start it from the thread whose capabilities it should hold.
class PrivilegedHelper {
public:
    static Result<std::unique_ptr<PrivilegedHelper>> start(std::string name);
    ~PrivilegedHelper();
    PrivilegedHelper(const PrivilegedHelper&) = delete;
    PrivilegedHelper& operator=(const PrivilegedHelper&) = delete;

    void run(const std::function<void()>& job);
    // What the helper's own thread holds (describe_thread_capabilities, run there).
    std::string capabilities();

private:
    PrivilegedHelper() = default;
    void loop();

    std::mutex mu_;
    std::condition_variable cv_;
    const std::function<void()>* job_ = nullptr;
    bool done_ = false;
    bool stop_ = false;
    std::mutex run_mu_;  // one caller at a time
    std::string name_;
    std::thread thread_;
};

}  // namespace vhostd::privileges
