#!/usr/bin/env bash
# The sandbox is live (core/sandbox.hpp): a running vhostd has seccomp filters on every thread
# (the process filter, plus its own on each reactor, device control thread and the management
# API's thread; a device added through the API runs under the API's and its own) and
# no_new_privs; a reactor, control or API thread that makes a call outside its list kills the
# process with SIGSYS and names the call on stderr; --sandbox=log lets the call run;
# --sandbox=off installs nothing.
#   tests/sandbox_test.sh VHOSTD
set -euo pipefail
bin=$1
ctl=$(dirname "$bin")/vhostctl
tmp=$(mktemp -d /tmp/vhostd-sandbox.XXXXXX)
pid=""
cleanup() { if [[ -n $pid ]]; then kill -9 "$pid" 2>/dev/null || true; fi; rm -rf "$tmp"; }
trap cleanup EXIT
failed=0
export ASAN_OPTIONS=detect_leaks=0  # (sanitizer builds: LeakSanitizer ptraces the process at exit)
# On by default, except in sanitizer builds (their runtimes exec and ptrace): say it there.
default=()
"$bin" --help | grep -qE -- '--sandbox [^ ]*=on' || default=(--sandbox=on)
fail() { echo "FAIL: $*"; failed=1; }
status_field() { awk -v k="$2:" '$1 == k { print $2 }' "$1"; }

# start ENV=VAL [vhostd args]: vhostd with one null blk device; waits for its socket (or its death).
start() {
  local e=$1
  shift
  rm -f "$tmp/a.sock"
  env "$e" "$bin" "$@" --blk "socket=$tmp/a.sock,backend=null,size=16M,queues=2" --threads 2 --rpc "$tmp/api.sock" >"$tmp/log" 2>&1 &
  pid=$!
  for _ in $(seq 200); do
    [[ -S $tmp/a.sock ]] && return 0
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.025
  done
}
# thread_filters NAME: Seccomp_filters of the first thread called NAME.
thread_filters() {
  local t
  for t in /proc/"$pid"/task/*; do
    [[ $(cat "$t/comm" 2>/dev/null) == "$1" ]] && { status_field "$t/status" Seccomp_filters; return; }
  done
  echo none
}

# 1. On by default: filter mode, no_new_privs, one filter on main, two on reactors and control.
start VHOSTD_SANDBOX_TEST=1 "${default[@]}"
sleep 0.3
kill -0 "$pid" 2>/dev/null || fail "vhostd died at start with the sandbox on: $(cat "$tmp/log")"
st=/proc/$pid/status
[[ $(status_field "$st" Seccomp) == 2 ]] || fail "Seccomp: $(status_field "$st" Seccomp), want 2 (filter)"
[[ $(status_field "$st" NoNewPrivs) == 1 ]] || fail "NoNewPrivs: $(status_field "$st" NoNewPrivs)"
[[ $(status_field "$st" Seccomp_filters) == 1 ]] || fail "main thread: $(status_field "$st" Seccomp_filters) filters, want 1"
[[ $(thread_filters vhostd-r0) == 2 ]] || fail "reactor: $(thread_filters vhostd-r0) filters, want 2"
[[ $(thread_filters vhostd-ctl) == 2 ]] || fail "control thread: $(thread_filters vhostd-ctl) filters, want 2"
[[ $(thread_filters vhostd-rpc) == 2 ]] || fail "API thread: $(thread_filters vhostd-rpc) filters, want 2"
# A device added through the API: its control thread stacks its list on the API's (3 filters),
# and it serves.
if [[ -x $ctl ]]; then
  n_before=$(cat /proc/"$pid"/task/*/status | awk '$1 == "Seccomp_filters:" && $2 == 3' | wc -l)
  out=$("$ctl" --socket "$tmp/api.sock" add blk "socket=$tmp/b.sock,backend=null,size=8M" 2>&1) || fail "device_add under the sandbox: $out"
  for _ in $(seq 100); do [[ -S $tmp/b.sock ]] && break; sleep 0.02; done
  [[ -S $tmp/b.sock ]] || fail "the device added through the API does not listen"
  n_after=$(cat /proc/"$pid"/task/*/status | awk '$1 == "Seccomp_filters:" && $2 == 3' | wc -l)
  ((n_after > n_before)) || fail "no thread with the API's and a control thread's filters after device_add ($n_before -> $n_after)"
  out=$("$ctl" --socket "$tmp/api.sock" list 2>&1) || fail "device_list under the sandbox: $out"
  kill -0 "$pid" 2>/dev/null || fail "vhostd died serving the API: $(tail -3 "$tmp/log")"
else
  fail "$ctl not found"
fi
kill -TERM "$pid"
rc=0; wait "$pid" || rc=$?
pid=""
[[ $rc == 0 ]] || fail "vhostd exited $rc on SIGTERM with the sandbox on: $(tail -5 "$tmp/log")"

# 2. A forbidden call on a reactor, a control thread, the API's thread: killed by SIGSYS, the
# call named.
for kind in reactor control api; do
  start VHOSTD_TEST_FORBIDDEN_SYSCALL=$kind --sandbox=on
  rc=0
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
  wait "$pid" || rc=$?
  pid=""
  [[ $rc == $((128 + 31)) ]] || fail "$kind: exit status $rc, want $((128 + 31)) (SIGSYS)"
  case $kind in
    reactor) thread=vhostd-r call=getcwd ;;
    control) thread=vhostd-ctl call=getcwd ;;
    api) thread=vhostd-rpc call=getitimer ;;
  esac
  grep -q "sandbox: thread $thread.* made a forbidden system call: $call" "$tmp/log" ||
    fail "$kind: the forbidden call is not named in the log: $(tail -3 "$tmp/log")"
done

# 3. --sandbox=log: the same call runs (the kernel logs it); vhostd lives on.
start VHOSTD_TEST_FORBIDDEN_SYSCALL=reactor --sandbox=log
sleep 0.5
kill -0 "$pid" 2>/dev/null || fail "--sandbox=log: vhostd died: $(tail -3 "$tmp/log")"
[[ $(status_field "/proc/$pid/status" Seccomp) == 2 ]] || fail "--sandbox=log: no filter"
kill -TERM "$pid"; wait "$pid" || true; pid=""

# 4. --sandbox=off: no filter at all.
start VHOSTD_SANDBOX_TEST=1 --sandbox=off
sleep 0.3
[[ $(status_field "/proc/$pid/status" Seccomp) == 0 ]] || fail "--sandbox=off: Seccomp $(status_field "/proc/$pid/status" Seccomp)"
kill -TERM "$pid"; wait "$pid" || true; pid=""

[[ $failed == 0 ]] && echo "sandbox: filters live on every thread kind (reactor, control, API; a device added at runtime under both), forbidden calls kill with SIGSYS, log and off modes"
exit $failed
