# shellcheck shell=bash disable=SC2034  # globals are used by the sourcing scripts
# Shared host-side helpers for the e2e test drivers (test_blk*.sh), bash.
# Source it, then call lh_init:
#
#   . "$SCRIPT_DIR/lib-host.sh"
#   lh_init TAG TMPNAME      # log prefix "TAG:", temp dir vtest-TMPNAME.XXXXXX
#
# State (globals): TMP (temp dir), KEEP (1 = keep TMP), GUEST_DIR, BACKEND_PID,
# BLOG (backend log), GUEST_PID, FAILURES (array), T0; for the network tests
# NETNS (network namespace made by lh_netns_create) and LH_PIDS (more
# background processes, see lh_track_pid).
# Failure model: `fail MSG` records a problem and carries on (so that one run
# reports everything it can); `lh_abort MSG` stops right away. `lh_finish`
# prints the verdict and exits 0 (PASS) or 1 (FAIL). The EXIT trap stops any
# guest/backend still running and removes TMP (unless KEEP=1).

LH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# The 16-byte pattern string: yes(1) adds "\n". Same bytes as vt_pattern in
# guest/lib.sh.
LH_PATTERN_STR='vhostd-e2e-blk!'

KEEP=${KEEP:-0}
GUEST_DIR=${GUEST_DIR:-}
TMP="" BACKEND_PID="" GUEST_PID="" BLOG="" NETNS=""
FAILURES=() LH_PIDS=()

log() { echo "$LH_TAG: $*" >&2; }
fail() { log "FAIL: $*"; FAILURES+=("$*"); }

# lh_usage [STATUS]: print the calling script's header comment, exit STATUS.
lh_usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit "${1:-2}"; }

# lh_parse_common_args "$@": the options shared by the vhostd-only drivers:
#   --build-dir BUILD --guest-dir DIR [--timeout SECS] [--keep]
# Sets BUILD_DIR, GUEST_DIR, TIMEOUT (default: $TIMEOUT if set, else 150),
# KEEP, and VHOSTD (BUILD/vhostd, which must exist).
lh_parse_common_args() {
  local me
  me=$(basename "$0" .sh)
  BUILD_DIR="" TIMEOUT=${TIMEOUT:-150} PACKED=0
  while [[ $# -gt 0 ]]; do
    case $1 in
      --build-dir) BUILD_DIR=$2; shift 2 ;;
      --packed) PACKED=1; shift ;;  # for the tests that say they take it
      --guest-dir) GUEST_DIR=$2; shift 2 ;;
      --timeout) TIMEOUT=$2; shift 2 ;;
      --keep) KEEP=1; shift ;;
      -h|--help) lh_usage 0 ;;
      *) echo "$me: unknown argument '$1'" >&2; lh_usage ;;
    esac
  done
  [[ -n $GUEST_DIR ]] || { echo "$me: --guest-dir is required" >&2; lh_usage; }
  [[ -n $BUILD_DIR ]] || { echo "$me: --build-dir is required" >&2; lh_usage; }
  [[ $TIMEOUT =~ ^[0-9]+$ ]] || { echo "$me: bad --timeout '$TIMEOUT'" >&2; lh_usage; }
  VHOSTD="$BUILD_DIR/vhostd"
  [[ -x $VHOSTD ]] || { echo "$me: $VHOSTD not found or not executable" >&2; exit 1; }
}

# lh_init TAG TMPNAME
lh_init() {
  LH_TAG=$1
  T0=$SECONDS
  TMP=$(mktemp -d "${TMPDIR:-/tmp}/vtest-$2.XXXXXX")
  trap lh_cleanup EXIT
  trap 'exit 130' INT TERM
}

# shellcheck disable=SC2317  # invoked via trap
lh_cleanup() {
  local rc=$?
  if [[ -n $GUEST_PID ]] && kill -0 "$GUEST_PID" 2>/dev/null; then
    kill -TERM "$GUEST_PID" 2>/dev/null || true   # run-guest.sh stops QEMU
    wait "$GUEST_PID" 2>/dev/null || true
  fi
  lh_stop_tracked
  local pf
  for pf in "${LH_PIDFILES[@]}"; do
    if [[ -s $pf ]]; then kill -KILL "$(cat "$pf")" 2>/dev/null || true; fi
  done
  if [[ -n $BACKEND_PID ]] && kill -0 "$BACKEND_PID" 2>/dev/null; then
    kill -KILL "$BACKEND_PID" 2>/dev/null || true
    wait "$BACKEND_PID" 2>/dev/null || true
  fi
  [[ -z $NETNS ]] || lh_netns_delete
  # Scratch space outside TMP (e.g. big files in /dev/shm): never kept.
  [[ -z ${LH_SCRATCH[*]+x} ]] || rm -rf "${LH_SCRATCH[@]}"
  if [[ -n $TMP ]]; then
    if [[ $KEEP == 1 ]]; then log "kept $TMP"; else rm -rf "$TMP"; fi
  fi
  exit "$rc"
}

# lh_track_pid PID...: background processes of the test (more guests, helper
# processes) that the EXIT trap stops: SIGTERM (run-guest.sh then stops its
# QEMU), SIGKILL after 15 s.
lh_track_pid() { LH_PIDS+=("$@"); }
# lh_track_pidfile FILE: a helper that subshells restart writes its pid to FILE; the EXIT trap
# kills whatever pid FILE holds then (SIGKILL).
LH_PIDFILES=()
lh_track_pidfile() { LH_PIDFILES+=("$1"); }

# lh_stop_tracked: stop the processes of lh_track_pid that are still running.
lh_stop_tracked() {
  local p i live
  [[ ${#LH_PIDS[@]} -gt 0 ]] || return 0
  for p in "${LH_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for ((i = 0; i < 150; i++)); do
    live=0
    for p in "${LH_PIDS[@]}"; do kill -0 "$p" 2>/dev/null && live=1; done
    [[ $live == 1 ]] || break
    sleep 0.1
  done
  for p in "${LH_PIDS[@]}"; do
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  LH_PIDS=()
}

# lh_build_guest: build/refresh the guest image in $GUEST_DIR, with the netrr
# of $BUILD_DIR (build-guest.sh's default build dir if BUILD_DIR is unset).
lh_build_guest() { "$LH_DIR/build-guest.sh" "$GUEST_DIR" ${BUILD_DIR:+"$BUILD_DIR"}; }

# lh_dump_backend_log [LINES]: print the backend log (last LINES lines).
lh_dump_backend_log() {
  [[ -n $BLOG && -s $BLOG ]] || return 0
  if [[ -n ${1:-} ]]; then
    log "backend log (last $1 lines):"
    tail -n "$1" "$BLOG" | sed 's/^/  | /' >&2
  else
    log "backend log:"
    sed 's/^/  | /' "$BLOG" >&2
  fi
}

# lh_abort MSG: fatal problem: print MSG and the backend log, FAIL now.
lh_abort() {
  log "$*"
  lh_dump_backend_log 40
  log "RESULT: FAIL ($((SECONDS - T0))s)"
  exit 1
}

# lh_start_backend CMD...: start the backend in the background, output to
# $BLOG (default $TMP/backend.log); sets BACKEND_PID.
lh_start_backend() {
  BLOG=${BLOG:-$TMP/backend.log}
  log "starting backend: $*"
  "$@" </dev/null >>"$BLOG" 2>&1 &
  BACKEND_PID=$!
}

# lh_backend_exited: if the backend has exited, reap it, print its status and
# log, and return 0; else return 1.
lh_backend_exited() {
  kill -0 "$BACKEND_PID" 2>/dev/null && return 1
  local rc=0
  wait "$BACKEND_PID" || rc=$?
  log "backend exited (status $rc); its log:"
  BACKEND_PID=""
  lh_dump_backend_log
  return 0
}

# lh_wait_listen SOCK...: wait (bounded, 10 s) until the backend has created
# every listening socket SOCK; abort if it exits first or times out.
lh_wait_listen() {
  local s i
  for s in "$@"; do
    for ((i = 0; i < 100; i++)); do
      [[ -S $s ]] && break
      if lh_backend_exited; then
        log "backend exited before creating $s"
        log "RESULT: FAIL ($((SECONDS - T0))s)"
        exit 1
      fi
      sleep 0.1
    done
    if [[ ! -S $s ]]; then
      log "backend did not create $s within 10s; its log:"
      lh_dump_backend_log
      log "RESULT: FAIL ($((SECONDS - T0))s)"
      exit 1
    fi
  done
  log "backend pid $BACKEND_PID listening on $*"
}

# lh_start_guest GTEST LOG TIMEOUT CMDLINE_EXTRA QEMU_ARGS...: boot the guest
# (run-guest.sh) in the background running guest/GTEST.sh; sets GUEST_PID.
lh_start_guest() {
  LH_GTEST=$1 LH_GLOG=$2
  local timeout=$3 extra=$4
  shift 4
  LH_GT0=$SECONDS
  # Background + wait so that signals to this script are handled immediately.
  "$LH_DIR/run-guest.sh" --out-dir "$GUEST_DIR" --test "$LH_GTEST" --timeout "$timeout" \
    --log "$LH_GLOG" --cmdline-extra "$extra" -- "$@" &
  GUEST_PID=$!
}

# lh_wait_guest: wait for the guest started by lh_start_guest; records a
# failure unless it passed, prints the guest's vtest lines. Sets GUEST_OK to
# 1 iff the guest test passed (always returns 0, for set -e callers).
lh_wait_guest() {
  local grc=0
  wait "$GUEST_PID" || grc=$?
  GUEST_PID=""
  if [[ $grc -eq 0 ]]; then
    GUEST_OK=1
    log "guest test $LH_GTEST passed ($((SECONDS - LH_GT0))s)"
  else
    GUEST_OK=0
    fail "guest test $LH_GTEST failed"
  fi
  grep -aE '^(vtest|VTEST)' "$LH_GLOG" | tr -d '\r' | sed 's/^/  guest| /' >&2 || true
}

# lh_run_guest ARGS...: lh_start_guest ARGS... && lh_wait_guest.
lh_run_guest() { lh_start_guest "$@"; lh_wait_guest; }

# lh_wait_guest_line REGEX SECS: wait until the guest's log has a line matching
# REGEX (grep -E); returns 1 if the guest exits first or SECS pass.
lh_wait_guest_line() {
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    grep -aqE "$1" "$LH_GLOG" 2>/dev/null && return 0
    kill -0 "$GUEST_PID" 2>/dev/null || { grep -aqE "$1" "$LH_GLOG" 2>/dev/null; return; }
    sleep 0.1
  done
  return 1
}

# lh_vhostctl ARGS...: build/vhostctl against $RPC (the test's vhostd --rpc
# socket); output to stdout, errors to stderr.
lh_vhostctl() { "$BUILD_DIR/vhostctl" --socket "$RPC" "$@"; }

# lh_fd_count PID: open fds of PID.
lh_fd_count() { ls "/proc/$1/fd" | wc -l; }

# lh_thread_count PID: PID's own threads, without the kernel's io_uring workers (iou-wrk-*,
# iou-sqp-*: the kernel starts and retires them as it likes).
lh_thread_count() { cat /proc/"$1"/task/*/comm 2>/dev/null | grep -vc '^iou-' || true; }

# lh_rss_kb PID: resident set of PID in KiB.
lh_rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

# lh_check_backend_alive WHEN: record a failure if the backend has died.
lh_check_backend_alive() {
  if [[ -z $BACKEND_PID ]] || ! kill -0 "$BACKEND_PID" 2>/dev/null; then
    fail "backend died $1"
  fi
  return 0
}

# lh_pattern_md5 BYTES: md5 of the first BYTES bytes of the e2e pattern.
lh_pattern_md5() { (yes "$LH_PATTERN_STR" || true) | head -c "$1" | md5sum | cut -d' ' -f1; }

# lh_check_pattern IMG: the last MiB of IMG holds the pattern (guest/blk.sh).
lh_check_pattern() {
  local img=$1 want got
  want=$(lh_pattern_md5 1048576)
  got=$(tail -c 1048576 "$img" | md5sum | cut -d' ' -f1)
  if [[ $got == "$want" ]]; then
    log "host check: pattern region of $(basename "$img") OK ($got)"
  else
    fail "host check: pattern region of $(basename "$img") md5 $got, expected $want"
    log "first bytes of the region:"; tail -c 1048576 "$img" | head -c 64 | od -c | head -n 4 >&2
  fi
}

# lh_check_blk_image IMG: host-side checks of a disk image left behind by
# guest/blk.sh: pattern region, clean ext4 (e2fsck -fn), and the guest's files
# (extracted with debugfs) match the MD5SUMS manifest the guest wrote.
lh_check_blk_image() {
  local img=$1 out ok f
  out="$TMP/check.$(basename "$img")"
  lh_check_pattern "$img"
  mkdir -p "$out"
  if e2fsck -fn "$img" >"$out/e2fsck.out" 2>&1; then
    log "host check: e2fsck -fn clean ($(tail -n1 "$out/e2fsck.out"))"
  else
    fail "host check: e2fsck -fn reported problems"
    sed 's/^/  | /' "$out/e2fsck.out" >&2
  fi
  mkdir -p "$out/files/dir"
  if debugfs -R "dump /MD5SUMS $out/files/MD5SUMS" "$img" >/dev/null 2>&1 \
      && [[ -s $out/files/MD5SUMS ]]; then
    ok=1
    while read -r _ f; do
      debugfs -R "dump /$f $out/files/$f" "$img" >/dev/null 2>&1 || ok=0
    done <"$out/files/MD5SUMS"
    if [[ $ok == 1 ]] && (cd "$out/files" && md5sum --quiet -c MD5SUMS) >&2; then
      log "host check: $(wc -l <"$out/files/MD5SUMS") guest files match their md5sums"
    else
      fail "host check: files extracted with debugfs do not match the guest's MD5SUMS"
    fi
  else
    fail "host check: /MD5SUMS not found in the guest filesystem"
  fi
}

# lh_check_restart_layout IMG: host-side fio crc32c verification of the 64 MiB
# backing file written by guest/blk_restart.sh (two 16 MiB 4k jobs from 0, two
# 16 MiB 512k jobs from 32M): what the guest verified must verify on the host.
lh_check_restart_layout() {
  if fio --filename="$1" --rw=read --numjobs=2 --offset_increment=16M --size=16M \
       --verify=crc32c --verify_fatal=1 --name=check4k --offset=0 --bs=4k \
       --name=checkflush --offset=32M --bs=512k \
       --output="$TMP/hostcheck.out" >/dev/null 2>"$TMP/hostcheck.err"; then
    log "host check: fio crc32c verification of the backing file (64 MiB) OK"
  else
    fail "host check: fio verification of the backing file failed"
    head -n 10 "$TMP/hostcheck.err" | sed 's/^/  | /' >&2
  fi
}

# lh_stop_backend WANT: SIGTERM the backend, wait up to 10 s; its exit status
# must be WANT (a number) unless WANT is "any".
lh_stop_backend() {
  local i rc
  [[ -n $BACKEND_PID ]] && kill -0 "$BACKEND_PID" 2>/dev/null || return 0
  kill -TERM "$BACKEND_PID"
  for ((i = 0; i < 100; i++)); do
    kill -0 "$BACKEND_PID" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$BACKEND_PID" 2>/dev/null; then
    fail "backend did not exit within 10s of SIGTERM"
    return 0
  fi
  rc=0; wait "$BACKEND_PID" || rc=$?
  BACKEND_PID=""
  if [[ $1 != any && $rc -ne $1 ]]; then
    fail "backend exited with status $rc after SIGTERM (expected $1)"
  else
    log "backend exited with status $rc after SIGTERM"
  fi
}

# lh_wait_disconnect N [SECS]: wait (default 10 s) until the backend holds at
# most N socket fds (its listening sockets): the frontend's connection is gone.
# Records a failure on timeout.
lh_wait_disconnect() {
  local i n lim=$((${2:-10} * 10))
  for ((i = 0; i < lim; i++)); do
    n=$(lh_sock_count "$BACKEND_PID")
    [[ $n -le $1 ]] && return 0
    sleep 0.1
  done
  fail "backend still holds $n socket fd(s) (expected $1) ${2:-10}s after the guest exited"
}

# lh_fd_snapshot PID FILE: "fd -> target" listing of PID's fds into FILE.
lh_fd_snapshot() {
  local f
  for f in /proc/"$1"/fd/*; do
    printf '%s -> %s\n' "${f##*/}" "$(readlink "$f" 2>/dev/null || echo '?')"
  done | sort -n >"$2"
}

# lh_fd_count PID: number of open file descriptors of PID.
lh_fd_count() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }

# lh_sock_count PID: number of open socket file descriptors of PID.
lh_sock_count() {
  find "/proc/$1/fd" -mindepth 1 -maxdepth 1 -lname 'socket:*' 2>/dev/null | wc -l
}

# lh_memfd_maps PID: number of mappings of PID backed by a memfd (guest RAM).
lh_memfd_maps() { { grep -c '/memfd:' "/proc/$1/maps" 2>/dev/null || true; } | head -n1; }

# lh_finish: print the verdict (with the backend log on failure) and exit.
lh_finish() {
  local f
  if [[ ${#FAILURES[@]} -gt 0 ]]; then
    lh_dump_backend_log 40
    log "RESULT: FAIL (${#FAILURES[@]} problem(s), $((SECONDS - T0))s)"
    for f in "${FAILURES[@]}"; do log "  - $f"; done
    exit 1
  fi
  log "RESULT: PASS ($((SECONDS - T0))s)"
  exit 0
}

# --- network namespaces (test_net*.sh) ---------------------------------------
# Every network interface, address and connection of the network tests lives
# in a namespace of their own: nothing touches the host's network.

# lh_netns_create NAME: create the network namespace NAME with lo up and IPv6
# off (no neighbour discovery or MLD chatter: only the tests' own packets
# cross the devices); sets NETNS. The EXIT trap kills whatever still runs in
# it and deletes it.
lh_netns_create() {
  ip netns add "$1" || lh_abort "cannot create network namespace $1"
  NETNS=$1
  ip -n "$NETNS" link set lo up
  ip netns exec "$NETNS" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 \
    net.ipv6.conf.default.disable_ipv6=1 >/dev/null 2>&1 || true
  log "network namespace $NETNS"
}

# lh_netns_delete: kill the processes left in $NETNS (all started by this
# test), delete it.
lh_netns_delete() {
  local pids i
  for ((i = 0; i < 20; i++)); do
    pids=$(ip netns pids "$NETNS" 2>/dev/null || true)
    [[ -n $pids ]] || break
    # shellcheck disable=SC2086  # one pid per word
    kill -KILL $pids 2>/dev/null || true
    sleep 0.1
  done
  ip netns del "$NETNS" 2>/dev/null || log "warning: could not delete network namespace $NETNS"
  NETNS=""
}

# lh_netns_qemu: make run-guest.sh start QEMU inside $NETNS (QEMU then opens
# its taps there): exports QEMU as a wrapper script in $TMP.
lh_netns_qemu() {
  local q=${QEMU:-qemu-system-x86_64}
  printf '#!/bin/sh\nexec ip netns exec %q %q "$@"\n' "$NETNS" "$q" >"$TMP/qemu-in-netns"
  chmod +x "$TMP/qemu-in-netns"
  export QEMU="$TMP/qemu-in-netns"
}

# lh_netns_wait_link DEV SECS: wait until interface DEV exists in $NETNS.
lh_netns_wait_link() {
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    ip -n "$NETNS" link show "$1" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  return 1
}

# lh_netns_wait_link_gone DEV SECS: wait until interface DEV no longer exists.
lh_netns_wait_link_gone() {
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    ip -n "$NETNS" link show "$1" >/dev/null 2>&1 || return 0
    sleep 0.1
  done
  return 1
}

# lh_netns_wait_tcp_listen SECS PORT...: wait until something listens on
# every TCP PORT in $NETNS; returns 1 on timeout.
lh_netns_wait_tcp_listen() {
  local secs=$1 i p ok listening
  shift
  for ((i = 0; i < secs * 10; i++)); do
    listening=" $(ip netns exec "$NETNS" ss -Htln | awk '{ sub(/.*:/, "", $4); print $4 }' | tr '\n' ' ') "
    ok=1
    for p in "$@"; do [[ $listening == *" $p "* ]] || { ok=0; break; }; done
    [[ $ok == 1 ]] && return 0
    sleep 0.1
  done
  return 1
}

# lh_check_xfer GLOG NAME FILE: the guest's line "VTEST-MD5 NAME BYTES MD5"
# (guest/lib.sh vt_md5_line) must match the size and md5 of the host's FILE.
lh_check_xfer() {
  local line want_bytes want_md5 got_bytes got_md5
  line=$(tr -d '\r' <"$1" | grep -a -m1 "^VTEST-MD5 $2 " || true)
  if [[ -z $line ]]; then
    fail "transfer $2: no VTEST-MD5 line from the guest"
    return 0
  fi
  read -r _ _ want_bytes want_md5 <<<"$line"
  got_bytes=$(stat -c %s "$3" 2>/dev/null || echo 0)
  got_md5=$(md5sum <"$3" 2>/dev/null | cut -d' ' -f1)
  if [[ $got_bytes == "$want_bytes" && $got_md5 == "$want_md5" ]]; then
    log "transfer $2: $got_bytes bytes, md5 $got_md5 on both ends"
  else
    fail "transfer $2: guest has $want_bytes bytes md5 $want_md5, host $got_bytes bytes md5 $got_md5"
  fi
}

# lh_net_stats DEV: vhostd's per-queue-pair counters of net device DEV (e.g.
# net0) from the last line it logged for each pair when the frontend left:
#   DEV: queue pair N: rx P packets B bytes G gso D dropped; tx P packets B bytes G gso D dropped
# printed as "N rxP rxB rxG rxD txP txB txG txD", one line per pair, by pair.
lh_net_stats() {
  awk -v dev="$1" '
    match($0, "(^|[^A-Za-z0-9_])" dev ": queue pair [0-9]+: rx [0-9]+ packets [0-9]+ bytes [0-9]+ gso [0-9]+ dropped; tx [0-9]+ packets [0-9]+ bytes [0-9]+ gso [0-9]+ dropped") {
      n = split(substr($0, RSTART, RLENGTH), f, " ")
      q = f[n - 18] + 0
      last[q] = q " " f[n - 16] " " f[n - 14] " " f[n - 12] " " f[n - 10] " " f[n - 7] " " f[n - 5] " " f[n - 3] " " f[n - 1]
    }
    END { for (q in last) print last[q] }' "$BLOG" | sort -n
}
