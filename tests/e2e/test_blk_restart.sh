#!/usr/bin/env bash
# End-to-end test of crash-restart with in-flight tracking
# (VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD): vhostd is killed with SIGKILL again
# and again while a guest runs verified I/O on both queues of a virtio-blk
# disk, and started again on the same socket each time. QEMU (the client,
# reconnect=1) keeps the inflight buffer vhostd gave it and hands it to every
# new vhostd, which resubmits exactly the requests its predecessor left
# unfinished; the guest must see no error, no lost and no corrupted write.
#
#   vhostd  --threads 1 --blk socket=S,path=disk.img,queues=2
#           (a fully written 64 MiB file, page cache: see VTEST_DIRECT below)
#   QEMU    -chardev socket,path=S,reconnect=1 -device vhost-user-blk-pci,num-queues=2
#   guest   guest/blk_restart.sh: fio 4k random writes QD16 on two jobs pinned
#           to the two CPUs (so both virtqueues carry I/O) and beside them
#           512k writes each followed by a flush, time based (vtest_runtime,
#           75 s), crc32c-verified after every pass; then a read-verify pass
#           over the whole 64 MiB; then dmesg must be free of I/O errors and
#           virtio ring errors. The flushes (fdatasync on the host, slow) make
#           vhostd complete requests out of order, so that a kill leaves
#           finished requests behind unfinished ones: only exact inflight
#           tracking restarts that correctly.
#           To keep a flush in flight most of the time, vhostd runs in a
#           block-I/O cgroup that limits its writes to the disk (the writeback
#           of its fdatasyncs) to 32 MiB/s, where cgroups allow (see below).
#   host    while the fio phase runs: every 3-7 s (random) kill vhostd, start a
#           new one right away (it replaces the stale socket file). Each kill
#           is a SIGKILL except the 3rd restart, a graceful one: SIGTERM (vhostd
#           drains its in-flight I/O and must exit 0). A vhostd is killed only
#           once its frontend is connected and has handed it the inflight
#           buffer (SET_INFLIGHT_FD). All logs are kept, one per instance.
#           An error in a vhostd log or in the guest's kernel messages ends the
#           run at once.
#
# Checks: the guest passes; at least 5 SIGKILLs fell inside the fio phase;
# every vhostd instance got a frontend connection and the inflight buffer; the
# instance after the graceful restart resubmitted nothing (nothing was left in
# flight); no vhostd logged an error; the backing file passes fio's crc32c
# verification on the host too; the last vhostd exits 0 on SIGTERM after the
# guest powered off.
# The number of resubmitted requests (vhostd's "resubmitting K requests" lines)
# is printed: it shows whether the kills hit requests in flight (0 is allowed).
#
# Usage:
#   tests/e2e/test_blk_restart.sh --build-dir BUILD --guest-dir DIR
#                                 [--packed] [--timeout SECS] [--keep]
#
#   --build-dir BUILD   CMake build dir containing the vhostd binary
#   --guest-dir DIR     guest image dir; built/refreshed with build-guest.sh
#   --packed            packed virtqueues (vhost-user-blk-pci packed=on; the
#                       guest must negotiate them; inflight tracking in the
#                       packed layout)
#   --timeout SECS      guest timeout (default 300)
#   --keep              keep the temp dir (backing file, logs) for debugging
#
# Environment:
#   VTEST_RUNTIME     fio phase seconds (default 75)
#   VTEST_SEED        seed of the kill intervals (default the pid; printed)
#   VTEST_FLUSH_BPS   write limit (bytes/s, K/M/G suffixes) of the cgroup that
#                     makes flushes slow, see below (default 32M; 0 = none)
#   VTEST_DIRECT=1    vhostd opens the file with O_DIRECT (if the filesystem
#                     supports it). Off by default: through the page cache
#                     reads and writes finish at once and only flushes wait,
#                     which gives the most out-of-order completions; with
#                     O_DIRECT on a disk that completes in order (e.g. a VM's)
#                     a kill seldom finds finished requests behind unfinished
#                     ones.
#
# Exit status 0 = PASS, 1 = FAIL.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib-host.sh
. "$SCRIPT_DIR/lib-host.sh"
TIMEOUT=${TIMEOUT:-300}
lh_parse_common_args "$@"
PACKED_OPT=""
if [[ $PACKED == 1 ]]; then PACKED_OPT=",packed=on"; fi
lh_init "test_blk_restart$PACKED_OPT" blk-restart
lh_build_guest

DISK_MIB=64
QUEUES=2
RUNTIME=${VTEST_RUNTIME:-75}
MIN_KILLS=5
GRACEFUL_AT=3            # the 3rd restart is SIGTERM instead of SIGKILL
SEED=${VTEST_SEED:-$$}
RANDOM=$SEED
SOCK="$TMP/blk.sock"
IMG="$TMP/disk.img"
GLOG="$TMP/guest.log"

# A fully written backing file; with VTEST_DIRECT=1 the same dd tells whether
# O_DIRECT works here (it does not on tmpfs).
direct=""
if [[ ${VTEST_DIRECT:-0} == 1 ]]; then
  if dd if=/dev/zero of="$IMG" bs=1M count=$DISK_MIB oflag=direct status=none 2>/dev/null; then
    direct=",direct=on"
  else
    log "O_DIRECT not supported on $(dirname "$IMG"): page cache after all"
  fi
fi
[[ -s $IMG ]] || dd if=/dev/zero of="$IMG" bs=1M count=$DISK_MIB status=none
VHOSTD_CMD=("$VHOSTD" --threads 1 --blk "socket=$SOCK,path=$IMG,queues=$QUEUES$direct")
# shellcheck disable=SC2054  # commas are part of QEMU option values
QEMU_DEV=(-chardev "socket,id=c0,path=$SOCK,reconnect=1"
          -device "vhost-user-blk-pci,chardev=c0,num-queues=$QUEUES$PACKED_OPT")

# --- slow flushes ----------------------------------------------------------------
# With the page cache, vhostd's reads and writes finish at once; only a FLUSH
# (fdatasync: writeback of the dirty pages) takes time, and it is what leaves
# finished requests behind an unfinished one. To make a flush in flight the
# rule rather than luck, every vhostd runs in a block-I/O cgroup whose writes
# to the backing file's disk are limited to FLUSH_BPS: only the writeback of
# its flushes is slowed (cgroup v1 blkio or v2 io; without either the test runs
# unthrottled and says so).
FLUSH_BPS=${VTEST_FLUSH_BPS:-32M}
CGDIR="" CGPROCS=""

# cg_setup: create the cgroup; sets CGDIR, CGPROCS; returns 1 if impossible.
cg_setup() {
  local dev bps sysdev
  bps=$(numfmt --from=iec "$FLUSH_BPS" 2>/dev/null) || return 1
  [[ $bps -gt 0 ]] || return 1
  dev=$(stat -c '%Hd:%Ld' "$IMG") || return 1
  sysdev=/sys/dev/block/$dev
  [[ -e $sysdev ]] || return 1               # tmpfs, overlay, ...: no disk
  [[ -e $sysdev/partition ]] && dev=$(cat "$sysdev/../dev")   # limits apply to whole disks
  if [[ -w /sys/fs/cgroup/blkio/cgroup.procs ]]; then
    CGDIR=/sys/fs/cgroup/blkio/vtest-blk-restart.$$
    mkdir "$CGDIR" 2>/dev/null || { CGDIR=""; return 1; }
    echo "$dev $bps" >"$CGDIR/blkio.throttle.write_bps_device" 2>/dev/null || { cg_remove; return 1; }
  elif [[ -f /sys/fs/cgroup/cgroup.subtree_control ]] \
      && grep -qw io /sys/fs/cgroup/cgroup.subtree_control; then
    CGDIR=/sys/fs/cgroup/vtest-blk-restart.$$
    mkdir "$CGDIR" 2>/dev/null || { CGDIR=""; return 1; }
    echo "$dev wbps=$bps" >"$CGDIR/io.max" 2>/dev/null || { cg_remove; return 1; }
  else
    return 1
  fi
  CGPROCS=$CGDIR/cgroup.procs
  log "vhostd writes to disk $dev limited to $FLUSH_BPS/s (cgroup $CGDIR)"
}

# cg_remove: remove the cgroup (its processes must have exited).
cg_remove() {
  local i
  [[ -n $CGDIR ]] || return 0
  for ((i = 0; i < 50; i++)); do
    rmdir "$CGDIR" 2>/dev/null && break
    sleep 0.1
  done
  [[ -d $CGDIR ]] && log "warning: could not remove cgroup $CGDIR"
  CGDIR=""
}

# The EXIT trap: stop the vhostd first (lh_cleanup would), then remove the
# cgroup, then lh_cleanup with the script's exit status.
# shellcheck disable=SC2317  # invoked via trap
restart_cleanup() {
  local rc=$?
  set +e
  if [[ -n $BACKEND_PID ]] && kill -0 "$BACKEND_PID" 2>/dev/null; then
    kill -KILL "$BACKEND_PID" 2>/dev/null || true
    wait "$BACKEND_PID" 2>/dev/null || true
  fi
  cg_remove
  (exit "$rc")
  lh_cleanup
}
trap restart_cleanup EXIT
if [[ $FLUSH_BPS != 0 ]] && ! cg_setup; then
  log "note: no block-I/O cgroup for the backing file's disk: flushes are not slowed down"
fi

# --- vhostd instances -----------------------------------------------------------
# Instance N logs to $TMP/vhostd.N.log; BLOG is the current one's.
NINST=0 INST_T0=0

# start_instance: start the next vhostd, wait until it listens on $SOCK (its
# own log says so: the socket file of a killed predecessor is still there).
start_instance() {
  local i
  NINST=$((NINST + 1))
  BLOG="$TMP/vhostd.$NINST.log"
  INST_T0=$SECONDS
  if [[ -n $CGPROCS ]]; then
    # shellcheck disable=SC2016  # $0 and $$ belong to the inner shell
    sh -c 'echo $$ >"$0" && exec "$@"' "$CGPROCS" "${VHOSTD_CMD[@]}" </dev/null >>"$BLOG" 2>&1 &
  else
    "${VHOSTD_CMD[@]}" </dev/null >>"$BLOG" 2>&1 &
  fi
  BACKEND_PID=$!
  for ((i = 0; i < 100; i++)); do
    grep -q "listening on $SOCK" "$BLOG" 2>/dev/null && return 0
    if lh_backend_exited; then lh_abort "vhostd instance $NINST exited before listening"; fi
    sleep 0.1
  done
  lh_abort "vhostd instance $NINST did not listen on $SOCK within 10s"
}

# wait_ready SECS: wait until the current instance has a frontend that handed
# it the inflight buffer (SET_INFLIGHT_FD: "inflight tracking on"); records a
# failure and returns 1 on timeout.
wait_ready() {
  local i
  for ((i = 0; i < $1 * 10; i++)); do
    grep -q "inflight tracking on" "$BLOG" && return 0
    sleep 0.1
  done
  if grep -q "frontend connected" "$BLOG"; then
    fail "vhostd instance $NINST: a frontend connected but sent no inflight buffer within $1s"
  else
    fail "vhostd instance $NINST got no frontend connection within $1s"
  fi
  return 1
}

# resubmits FILE: total of vhostd's "resubmitting K requests" lines in FILE.
resubmits() {
  { grep -o 'resubmitting [0-9]* requests' "$1" || true; } | awk '{ n += $2 } END { print n + 0 }'
}

# --- guest markers --------------------------------------------------------------
gmark() { grep -aqs "^$1" "$GLOG"; }   # serial lines end in \r\n: prefix match
guest_running() { [[ -n $GUEST_PID ]] && kill -0 "$GUEST_PID" 2>/dev/null; }
phase_over() { gmark 'VTEST-PHASE: io-end' || gmark 'VTEST-RESULT:' || ! guest_running; }
# Kernel errors reach the console even with "quiet": a broken virtqueue or a
# failed request shows up there at once.
GUEST_KERNEL_ERRORS='I/O error|blk_update_request|is not a head|No more buffers|id [0-9]+ out of range'
guest_kernel_errors() { grep -aE "\] .*($GUEST_KERNEL_ERRORS)" "$GLOG" 2>/dev/null | tr -d '\r'; }

# broken_now: the run has already failed (vhostd reported an error or the
# guest kernel one): record it and return 0.
broken_now() {
  if grep -q '\[error\]' "$BLOG"; then
    fail "vhostd instance $NINST reported an error during the fio phase"
    return 0
  fi
  if [[ -n $(guest_kernel_errors) ]]; then
    fail "the guest kernel reported errors during the fio phase"
    return 0
  fi
  return 1
}

# --- run ------------------------------------------------------------------------
log "backing file ${DISK_MIB} MiB${direct:+ (direct=on)}; fio phase ${RUNTIME}s; kill interval seed $SEED"
start_instance
log "vhostd instance 1 pid $BACKEND_PID listening on $SOCK"
lh_start_guest blk_restart "$GLOG" "$TIMEOUT" "vtest_queues=$QUEUES vtest_runtime=$RUNTIME vtest_packed=$PACKED" "${QEMU_DEV[@]}"

deadline=$((SECONDS + 180))
until gmark 'VTEST-PHASE: io-start'; do
  if ! guest_running || gmark 'VTEST-RESULT:'; then break; fi
  if grep -q '\[error\]' "$BLOG"; then
    fail "vhostd reported an error while the guest booted:"
    grep '\[error\]' "$BLOG" | head -n 3 | sed 's/^/  | /' >&2
    break
  fi
  if ((SECONDS > deadline)); then fail "the guest did not start its fio phase within 180s"; break; fi
  sleep 0.2
done

KILLS=0 GRACEFUL=0 GRACEFUL_INST=""
if gmark 'VTEST-PHASE: io-start'; then
  IO_T0=$SECONDS
  log "guest fio phase started; killing vhostd every 3-7s until it ends"
  end_deadline=$((SECONDS + RUNTIME + 60))
  while :; do
    delay=$((30 + RANDOM % 41))   # tenths of a second
    for ((i = 0; i < delay; i++)); do
      phase_over && break 2
      sleep 0.1
    done
    broken_now && break
    if ((SECONDS > end_deadline)); then
      fail "the guest's fio phase did not end within $((RUNTIME + 60))s (I/O hung?)"
      break
    fi
    wait_ready 30 || break
    phase_over && break
    pid=$BACKEND_PID
    if (((KILLS + GRACEFUL + 1) == GRACEFUL_AT)); then
      GRACEFUL=$((GRACEFUL + 1))
      log "restart $((KILLS + GRACEFUL)): SIGTERM to instance $NINST (pid $pid, up $((SECONDS - INST_T0))s, t=+$((SECONDS - IO_T0))s)"
      lh_stop_backend 0
      grep -q "vhostd stopped" "$BLOG" || fail "instance $NINST did not log 'vhostd stopped' after SIGTERM"
      if [[ -n $BACKEND_PID ]]; then kill -KILL "$BACKEND_PID"; wait "$BACKEND_PID" || true; fi
      start_instance
      GRACEFUL_INST=$NINST
    else
      KILLS=$((KILLS + 1))
      log "restart $((KILLS + GRACEFUL)): SIGKILL #$KILLS to instance $NINST (pid $pid, up $((SECONDS - INST_T0))s, t=+$((SECONDS - IO_T0))s)"
      kill -KILL "$pid"
      wait "$pid" 2>/dev/null || true
      BACKEND_PID=""
      start_instance
    fi
  done
  log "kill loop over after $((SECONDS - IO_T0))s: $KILLS SIGKILL(s), $GRACEFUL SIGTERM restart(s), $NINST vhostd instances"
fi

if [[ ${#FAILURES[@]} -gt 0 ]] && guest_running; then
  # Failed already, or stuck (no fio phase, or one that does not end): stop it.
  log "stopping the guest; its last console lines:"
  tail -n 30 "$GLOG" | tr -d '\r' | sed 's/^/  | /' >&2
  kill -TERM "$GUEST_PID" 2>/dev/null || true   # run-guest.sh stops QEMU
fi
lh_wait_guest

# --- checks ---------------------------------------------------------------------
if gmark 'VTEST-PHASE: io-end' && ((KILLS < MIN_KILLS)); then
  fail "only $KILLS SIGKILL(s) during the guest's fio phase (need $MIN_KILLS): it ended too early"
fi
total=0 events=0
for ((n = 1; n <= NINST; n++)); do
  f="$TMP/vhostd.$n.log"
  if ! grep -q "frontend connected" "$f"; then
    fail "vhostd instance $n never got a frontend connection"
  elif ! grep -q "inflight tracking on" "$f"; then
    fail "vhostd instance $n: the frontend never handed it the inflight buffer"
  fi
  r=$(resubmits "$f")
  e=$(grep -c 'resubmitting' "$f" || true)
  total=$((total + r)) events=$((events + e))
  if [[ $r -gt 0 ]]; then
    log "instance $n resubmitted $r request(s):"
    grep 'resubmitting' "$f" | sed 's/^/  | /' >&2
  fi
  if grep -q '\[error\]' "$f"; then
    fail "vhostd instance $n logged errors"
    grep '\[error\]' "$f" | head -n 5 | sed 's/^/  | /' >&2
  fi
done
if [[ -n $(guest_kernel_errors) ]]; then
  fail "guest kernel errors on the console:"
  guest_kernel_errors | head -n 5 | sed 's/^/  | /' >&2
fi
if [[ -n $GRACEFUL_INST ]]; then
  r=$(resubmits "$TMP/vhostd.$GRACEFUL_INST.log")
  if [[ $r -ne 0 ]]; then
    fail "instance $GRACEFUL_INST (after the SIGTERM restart) resubmitted $r request(s): SIGTERM left I/O in flight"
  else
    log "instance $GRACEFUL_INST (after the SIGTERM restart) resubmitted nothing, as expected"
  fi
fi
log "RESUBMITTED: $total request(s) in $events queue restart(s) over $KILLS SIGKILL(s)"
[[ $total -gt 0 ]] || log "note: no kill caught a request in flight in this run"

# What the guest verified must verify on the host too (the data is in the file).
if [[ $GUEST_OK == 1 ]]; then
  lh_check_restart_layout "$IMG"
fi

# The guest has powered off: the last vhostd lost its frontend and must exit 0.
if [[ -n $BACKEND_PID ]] && kill -0 "$BACKEND_PID" 2>/dev/null; then
  lh_wait_disconnect 1
  lh_stop_backend 0
else
  fail "the last vhostd (instance $NINST) is not running at the end"
fi
lh_finish
