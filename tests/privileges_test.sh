#!/usr/bin/env bash
# --user USER[:GROUP] (core/privileges.hpp): vhostd started as root runs as USER once its start
# is done, on every thread; no thread keeps a capability, except the one helper that creates
# taps when the management API may add net devices (CAP_NET_ADMIN, nothing else); sockets made
# before the switch stay root's and the API serves root, not USER's other processes; afterwards
# the API still adds a net device (its tap made by the helper) and a disk USER may not open is
# refused; root is refused as USER. All of it with the sandbox on (its
# filters allow exactly this switch).
#   tests/privileges_test.sh BUILD_DIR
set -euo pipefail
build=$1
bin=$build/vhostd
ctl=$build/vhostctl
if [[ $(id -u) != 0 ]]; then echo "privileges: needs root (skipped)"; exit 0; fi
tmp=$(mktemp -d /tmp/vhostd-priv.XXXXXX)
tap=vhpriv$$
tap=${tap:0:15}
pid=""
tun_mode=$(stat -c %a /dev/net/tun)
cleanup() {
  if [[ -n $pid ]]; then kill -9 "$pid" 2>/dev/null || true; fi
  chmod "$tun_mode" /dev/net/tun
  ip link del "$tap" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
failed=0
fail() { echo "FAIL: $*"; failed=1; }
export ASAN_OPTIONS=detect_leaks=0
sandbox=(--sandbox=on)
help=$("$bin" --help)
grep -q -- '--user' <<<"$help" || { echo "FAIL: vhostd has no --user"; exit 1; }
# Sanitizer builds cannot run the sandbox (their runtimes exec and ptrace): switch without it.
if grep -qE -- '--sandbox [^ ]*=off' <<<"$help"; then sandbox=(--sandbox=off); fi
# Opening /dev/net/tun is a file permission, not a capability: udev makes it 0666; some
# containers make it 0600 (vhostd warns then). Stock mode for the test, put back after.
chmod 0666 /dev/net/tun
nobody_uid=$(id -u nobody)
nobody_gid=$(id -g nobody)
chown nobody "$tmp"   # USER makes the sockets of devices added after the switch here
truncate -s 16M "$tmp/disk.img"   # root's, 0644: opened before the switch, read-write
chmod 0600 "$tmp/disk.img"
truncate -s 16M "$tmp/secret.img" && chmod 0600 "$tmp/secret.img"   # root's only: refused after

field() { awk -v k="$2:" '$1 == k { print $2, $3, $4, $5 }' "$1"; }
cap_bits() { awk -v k="$2:" '$1 == k { print $2 }' "$1"; }
start() {
  "$bin" "$@" --blk "socket=$tmp/a.sock,path=$tmp/disk.img,queues=2" --threads 2 --log-level debug \
    >"$tmp/log" 2>&1 &
  pid=$!
  for _ in $(seq 200); do
    grep -q "vhostd ready" "$tmp/log" && return 0
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.025
  done
}
stop() {
  kill -TERM "$pid"
  local rc=0
  wait "$pid" || rc=$?
  pid=""
  [[ $rc == 0 ]] || fail "$1: exit status $rc on SIGTERM: $(tail -5 "$tmp/log")"
}
# check_threads WHAT HELPER_CAPS: every thread runs as nobody; the thread vhostd-priv has
# HELPER_CAPS (hex CapEff and CapPrm), every other none.
check_threads() {
  local what=$1 want_helper=$2 t name n=0 helper=none
  for t in /proc/"$pid"/task/*; do
    name=$(cat "$t/comm" 2>/dev/null) || continue
    n=$((n + 1))
    [[ $(field "$t/status" Uid) == "$nobody_uid $nobody_uid $nobody_uid $nobody_uid" ]] ||
      fail "$what: thread $name: Uid $(field "$t/status" Uid)"
    [[ $(field "$t/status" Gid) == "$nobody_gid $nobody_gid $nobody_gid $nobody_gid" ]] ||
      fail "$what: thread $name: Gid $(field "$t/status" Gid)"
    local eff prm
    eff=$(cap_bits "$t/status" CapEff)
    prm=$(cap_bits "$t/status" CapPrm)
    if [[ $name == vhostd-priv ]]; then
      helper=$eff
      [[ $prm == "$eff" ]] || fail "$what: the helper's CapPrm $prm differs from its CapEff $eff"
    else
      [[ $eff == 0000000000000000 && $prm == 0000000000000000 ]] ||
        fail "$what: thread $name has capabilities: CapEff $eff CapPrm $prm"
    fi
    [[ $(cap_bits "$t/status" NoNewPrivs) == 1 ]] || fail "$what: thread $name: NoNewPrivs off"
  done
  [[ $helper == "$want_helper" ]] || fail "$what: the helper's CapEff is $helper, want $want_helper"
  ((n >= 5)) || fail "$what: only $n threads"
}

# 1. With the management API: the switch, the helper with CAP_NET_ADMIN (bit 12) only.
start --user nobody --rpc "$tmp/api.sock" "${sandbox[@]}"
kill -0 "$pid" 2>/dev/null || { echo "FAIL: vhostd died at start: $(cat "$tmp/log")"; exit 1; }
check_threads "--user nobody --rpc" 0000000000001000
# Sockets made before the switch stay root's (0600: root and socket-group connect), and the API
# serves root, not other processes of the account vhostd switched to, even through a socket
# someone widened.
[[ $(stat -c %U "$tmp/a.sock") == root ]] || fail "the device socket belongs to $(stat -c %U "$tmp/a.sock")"
[[ $(stat -c %U "$tmp/api.sock") == root ]] || fail "the API socket belongs to $(stat -c %U "$tmp/api.sock")"
chmod 0666 "$tmp/api.sock"
setpriv --reuid=nobody --regid="$nobody_gid" --clear-groups "$ctl" --socket "$tmp/api.sock" list >"$tmp/stranger" 2>&1 &&
  fail "a process running as nobody (vhostd's --user) was served: $(cat "$tmp/stranger")"
chmod 0600 "$tmp/api.sock"
grep -q "running as nobody" "$tmp/log" || fail "no 'running as' line: $(tail -3 "$tmp/log")"
grep -q "capabilities: main thread effective=none permitted=none; tap helper effective=net_admin" "$tmp/log" ||
  fail "the capability sets are not logged: $(grep capabilities "$tmp/log")"
# A net device after the switch: its tap is made by the helper.
"$ctl" --socket "$tmp/api.sock" add net "id=n0,socket=$tmp/n0.sock,tap=$tap,queues=2" >/dev/null ||
  fail "adding a net device after the switch failed: $(tail -3 "$tmp/log")"
ip link show "$tap" >/dev/null 2>&1 || fail "the tap $tap was not made"
[[ $(stat -c %U "$tmp/n0.sock" 2>/dev/null) == nobody ]] || fail "n0's socket, made after the switch, is not nobody's"
check_threads "with a net device added after the switch" 0000000000001000
# A disk nobody may not open is refused, one it may is served.
out=$("$ctl" --socket "$tmp/api.sock" add blk "socket=$tmp/s.sock,path=$tmp/secret.img" 2>&1) &&
  fail "root's 0600 disk was opened after the switch"
grep -qi "permission denied" <<<"$out" || fail "refusing root's disk: $out"
"$ctl" --socket "$tmp/api.sock" remove n0 >/dev/null || fail "removing n0 failed"
check_threads "after adding and removing a net device" 0000000000001000
stop "--user nobody --rpc"

# 2. Without the management API nothing can add a net device: no helper, no capability at all.
start --user nobody "${sandbox[@]}"
kill -0 "$pid" 2>/dev/null || fail "--user without --rpc: vhostd died: $(tail -3 "$tmp/log")"
check_threads "--user nobody" none
stop "--user nobody"

# 2b. A /dev/net/tun that USER cannot open (some containers' 0600): said at start.
chmod 0600 /dev/net/tun
start --user nobody --rpc "$tmp/api.sock" "${sandbox[@]}"
grep -q "/dev/net/tun is not open to this user" "$tmp/log" || fail "no warning about a 0600 /dev/net/tun"
stop "--user nobody with a 0600 /dev/net/tun"
chmod 0666 /dev/net/tun

# 3. USER:GROUP: that group, and no supplementary group but it.
grp=$(getent group 4243 >/dev/null && echo 4244 || echo 4243)
start --user "nobody:$grp" "${sandbox[@]}"
kill -0 "$pid" 2>/dev/null || fail "--user nobody:$grp: vhostd died: $(tail -3 "$tmp/log")"
[[ $(field "/proc/$pid/status" Gid) == "$grp $grp $grp $grp" ]] || fail "nobody:$grp: Gid $(field "/proc/$pid/status" Gid)"
[[ $(awk '$1 == "Groups:" { $1 = ""; print }' "/proc/$pid/status" | xargs) == "$grp" ]] ||
  fail "nobody:$grp: Groups $(grep Groups: "/proc/$pid/status")"
stop "--user nobody:$grp"

# 4. Nonsense is refused before anything starts.
for bad in no-such-user-vhostd nobody:no-such-group-vhostd 4294967295 4000000000 root 0:0 ":x"; do
  rc=0
  "$bin" --user "$bad" --blk "socket=$tmp/b.sock,backend=null,size=1M" >"$tmp/bad" 2>&1 || rc=$?
  [[ $rc == 2 ]] || fail "--user $bad: exit status $rc, want 2: $(cat "$tmp/bad")"
  [[ ! -e $tmp/b.sock ]] || fail "--user $bad: a socket was made"
done

[[ $failed == 0 ]] && echo "privileges: --user switches every thread; only the tap helper keeps CAP_NET_ADMIN, and only with --rpc"
exit $failed
