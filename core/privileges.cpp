#include "core/privileges.hpp"

#include <cap-ng.h>
#include <grp.h>
#include <linux/capability.h>
#include <pthread.h>
#include <pwd.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <charconv>
#include <cstdlib>
#include <optional>

#include "core/unix_group.hpp"

namespace vhostd::privileges {

namespace {

std::optional<unsigned long> number(const std::string& s) {
    unsigned long n = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
    if (ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
    return n;
}

struct Caps {
    uint64_t effective = 0, permitted = 0, inheritable = 0;
};

// The calling thread's sets, straight from the kernel (capget with pid 0: this thread).
Result<Caps> thread_caps() {
    __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {};
    if (syscall(SYS_capget, &hdr, data) != 0) return sys_error("capget");
    Caps c;
    c.effective = data[0].effective | (static_cast<uint64_t>(data[1].effective) << 32);
    c.permitted = data[0].permitted | (static_cast<uint64_t>(data[1].permitted) << 32);
    c.inheritable = data[0].inheritable | (static_cast<uint64_t>(data[1].inheritable) << 32);
    return c;
}

Status set_thread_caps(bool net_admin) {
    capng_clear(CAPNG_SELECT_CAPS);
    if (net_admin &&
        capng_update(CAPNG_ADD, static_cast<capng_type_t>(CAPNG_EFFECTIVE | CAPNG_PERMITTED), CAP_NET_ADMIN) != 0)
        return make_error(Errc::kSystem, "capng_update(CAP_NET_ADMIN) failed");
    if (capng_apply(CAPNG_SELECT_CAPS) != 0) return sys_error("setting the thread's capabilities (capset)");
    VHOSTD_ASSIGN_OR_RETURN(Caps c, thread_caps());
    const uint64_t want = net_admin ? (uint64_t{1} << CAP_NET_ADMIN) : 0;
    if (c.effective != want || c.permitted != want || c.inheritable != 0)
        return make_error(Errc::kSystem, "capabilities after the change: effective {:#x} permitted {:#x} inheritable "
                                         "{:#x}, want {:#x}",
                          c.effective, c.permitted, c.inheritable, want);
    return ok_status();
}

}  // namespace

Result<Identity> resolve(const std::string& spec) {
    Identity id;
    id.spec = spec;
    std::string user = spec, group;
    if (auto colon = spec.find(':'); colon != std::string::npos) {
        user = spec.substr(0, colon);
        group = spec.substr(colon + 1);
        if (group.empty()) return make_error(Errc::kInvalid, "--user {}: empty group after ':'", spec);
    }
    if (user.empty()) return make_error(Errc::kInvalid, "--user {}: no user", spec);
    std::vector<char> buf(16384);
    passwd pw{};
    passwd* found = nullptr;
    std::optional<unsigned long> num = number(user);
    int rc = num ? getpwuid_r(static_cast<uid_t>(*num), &pw, buf.data(), buf.size(), &found)
                 : getpwnam_r(user.c_str(), &pw, buf.data(), buf.size(), &found);
    if (rc != 0) return sys_error_code(rc, "--user {}: looking up the user", spec);
    if (found == nullptr && !num) return make_error(Errc::kInvalid, "--user {}: no user '{}'", spec, user);
    if (num && *num >= static_cast<unsigned long>(static_cast<uid_t>(-1)))
        return make_error(Errc::kInvalid, "--user {}: user id out of range", spec);
    id.uid = found != nullptr ? pw.pw_uid : static_cast<uid_t>(*num);
    if (id.uid == 0) return make_error(Errc::kInvalid, "--user {}: that is root: give the user to run as", spec);
    if (!group.empty()) {
        VHOSTD_ASSIGN_OR_RETURN(id.gid, lookup_group(group));
        id.groups = {id.gid};
        return id;
    }
    if (found == nullptr)
        return make_error(Errc::kInvalid, "--user {}: user id {} has no passwd entry: give its group too (USER:GROUP)",
                          spec, id.uid);
    id.gid = pw.pw_gid;
    int n = 64;
    for (int tries = 0; tries < 4; ++tries) {
        id.groups.assign(static_cast<size_t>(n), 0);
        int want = n;
        if (getgrouplist(pw.pw_name, pw.pw_gid, id.groups.data(), &want) >= 0) {
            id.groups.resize(static_cast<size_t>(want));
            return id;
        }
        if (want <= n || want > 65536) break;
        n = want;
    }
    return make_error(Errc::kSystem, "--user {}: reading the groups of '{}' failed", spec, pw.pw_name);
}

Status switch_to(const Identity& id, bool keep_net_admin) {
    VHOSTD_ASSIGN_OR_RETURN(Caps before, thread_caps());
    // Keep only what there is: a vhostd started without CAP_NET_ADMIN cannot keep it.
    const bool keep = keep_net_admin && (before.permitted & (uint64_t{1} << CAP_NET_ADMIN)) != 0;
    uid_t ru = 0, eu = 0, su = 0;
    gid_t rg = 0, eg = 0, sg = 0;
    getresuid(&ru, &eu, &su);
    getresgid(&rg, &eg, &sg);
    const bool already = ru == id.uid && eu == id.uid && su == id.uid && rg == id.gid && eg == id.gid && sg == id.gid;
    // Already USER, but with capabilities (file capabilities, ambient ones): every thread holds
    // them and only this one could drop its own. Refuse rather than pretend.
    if (already && (before.permitted | before.effective) != 0)
        return make_error(Errc::kState,
                          "--user {}: vhostd already runs as it, with capabilities (permitted {:#x}) that only a "
                          "switch from root clears on every thread: start it as root, or without them",
                          id.spec, before.permitted);
    if (!already) {
        if (keep && prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0) return sys_error("prctl(PR_SET_KEEPCAPS)");
        // glibc makes each call on every thread of the process (the set*id broadcast).
        if (setgroups(id.groups.size(), id.groups.data()) != 0) return sys_error("--user {}: setgroups", id.spec);
        if (setresgid(id.gid, id.gid, id.gid) != 0) return sys_error("--user {}: setresgid({})", id.spec, id.gid);
        if (setresuid(id.uid, id.uid, id.uid) != 0) return sys_error("--user {}: setresuid({})", id.spec, id.uid);
        if (keep && prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) != 0) return sys_error("prctl(PR_SET_KEEPCAPS, 0)");
    }
    VHOSTD_TRY(set_thread_caps(keep));
    getresuid(&ru, &eu, &su);
    getresgid(&rg, &eg, &sg);
    if (ru != id.uid || eu != id.uid || su != id.uid || rg != id.gid || eg != id.gid || sg != id.gid)
        return make_error(Errc::kSystem, "--user {}: ids after the switch: uid {}/{}/{} gid {}/{}/{}", id.spec, ru, eu,
                          su, rg, eg, sg);
    return ok_status();
}

Status forbid_new_privileges() {
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return sys_error("prctl(PR_SET_NO_NEW_PRIVS)");
    return ok_status();
}

Status drop_thread_capabilities() { return set_thread_caps(false); }

std::string describe_thread_capabilities() {
    auto c = thread_caps();
    if (!c.ok()) return c.error().describe();
    std::string out;
    for (auto [label, bits] : {std::pair{"effective", c.value().effective}, std::pair{"permitted", c.value().permitted}}) {
        std::string names;
        for (unsigned cap = 0; cap < 64; ++cap) {
            if ((bits & (uint64_t{1} << cap)) == 0) continue;
            const char* nm = capng_capability_to_name(static_cast<unsigned>(cap));
            if (!names.empty()) names += ',';
            names += nm != nullptr ? nm : std::to_string(cap);
        }
        if (!out.empty()) out += ' ';
        out += std::string(label) + '=' + (names.empty() ? "none" : names);
    }
    return out;
}

Result<std::unique_ptr<PrivilegedHelper>> PrivilegedHelper::start(std::string name) {
    std::unique_ptr<PrivilegedHelper> h(new PrivilegedHelper());
    h->name_ = std::move(name);
    try {
        h->thread_ = std::thread([p = h.get()] { p->loop(); });
    } catch (const std::system_error& e) {
        return make_error(Errc::kSystem, "starting the {} thread: {}", h->name_, e.what());
    }
    return h;
}

PrivilegedHelper::~PrivilegedHelper() {
    {
        std::lock_guard lk(mu_);
        stop_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
}

void PrivilegedHelper::loop() {
    pthread_setname_np(pthread_self(), name_.substr(0, 15).c_str());
    std::unique_lock lk(mu_);
    while (true) {
        cv_.wait(lk, [&] { return stop_ || job_ != nullptr; });
        if (job_ == nullptr) return;  // stopping, and no caller is waiting
        const std::function<void()>* job = job_;
        lk.unlock();
        try {
            (*job)();
        } catch (...) {
            // The job reports through what it captured; its caller must not wait forever.
        }
        lk.lock();
        job_ = nullptr;
        done_ = true;
        cv_.notify_all();
    }
}

void PrivilegedHelper::run(const std::function<void()>& job) {
    std::lock_guard one(run_mu_);
    std::unique_lock lk(mu_);
    if (stop_) return;  // the helper is going: the job does not run (its result says so)
    done_ = false;
    job_ = &job;
    cv_.notify_all();
    cv_.wait(lk, [&] { return done_; });
}

std::string PrivilegedHelper::capabilities() {
    std::string out;
    run([&] { out = describe_thread_capabilities(); });
    return out;
}

}  // namespace vhostd::privileges
