#!/usr/bin/env bash
# End-to-end test: an interrupt that died with the previous vhostd does not
# hang the guest.
#
# Between publishing a used entry and writing the call eventfd there is a
# window. A vhostd killed inside it leaves a completion in the used ring (with
# inflight tracking marked done, so no one redoes it) that the guest was never
# told about; a guest with nothing else in flight would wait for it forever.
# A random kill almost never hits that window, so every vhostd instance here
# is armed with the fault hook VHOSTD_TEST_KILL_BEFORE_INTERRUPT=K (K random
# in 2..8): it SIGKILLs itself just before its Kth used-buffer notification,
# after the completion is published. The next vhostd must signal it.
#
#   vhostd  --threads 1 --blk socket=S,path=disk.img (8 MiB), hook armed
#   QEMU    -chardev socket,path=S,reconnect=1 -device vhost-user-blk-pci
#   guest   guest/blk_lost_call.sh: vtest_writes (60) single 4 KiB O_DIRECT
#           writes, one at a time, each bounded by 30 s in the guest; then
#           every block read back and checked; no kernel I/O errors.
#   host    whenever an instance has killed itself, start the next one (at
#           most MAX_KILLS armed instances, then one without the hook).
#
# Checks: the guest passes; at least MIN_KILLS instances killed themselves in
# the hook during the write phase (each logged the hook's message and died of
# SIGKILL); after every kill the guest's writes go on within STALL seconds
# (host-side bound: a hang fails in STALL s, not at the guest timeout); no
# vhostd started after a kill in the write phase resubmitted anything (the
# killed one had finished its only request: the kill fell after the publish);
# no vhostd logged an error; the host's file holds every block; the last
# vhostd exits 0 on SIGTERM.
#
# Usage:
#   tests/e2e/test_blk_lost_call.sh --build-dir BUILD --guest-dir DIR
#                                   [--timeout SECS] [--keep]
#
#   --build-dir BUILD   CMake build dir containing the vhostd binary
#   --guest-dir DIR     guest image dir; built/refreshed with build-guest.sh
#   --timeout SECS      guest timeout (default 240)
#   --keep              keep the temp dir (backing file, logs) for debugging
#
# Environment:
#   VTEST_SEED   seed of the kill points (default the pid; printed)
#
# Exit status 0 = PASS, 1 = FAIL.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib-host.sh
. "$SCRIPT_DIR/lib-host.sh"
TIMEOUT=${TIMEOUT:-240}
lh_parse_common_args "$@"
lh_init test_blk_lost_call blk-lost-call
lh_build_guest

WRITES=60
MIN_KILLS=5
MAX_KILLS=12
STALL=20
SEED=${VTEST_SEED:-$$}
RANDOM=$SEED
SOCK="$TMP/blk.sock"
IMG="$TMP/disk.img"
GLOG="$TMP/guest.log"
truncate -s 8M "$IMG"
# shellcheck disable=SC2054  # commas are part of QEMU option values
QEMU_DEV=(-chardev "socket,id=c0,path=$SOCK,reconnect=1"
          -device "vhost-user-blk-pci,chardev=c0,num-queues=1")

# --- vhostd instances -----------------------------------------------------------
# Instance N logs to $TMP/vhostd.N.log; BLOG is the current one's. ARMED[N] is
# its K (0: no hook); IN_IO[N]=1 if it was started during the write phase.
NINST=0 KILLS=0 IO_KILLS=0
declare -a ARMED=() IN_IO=()

# start_instance K: start the next vhostd (hook armed at K unless 0) and wait
# until it listens on $SOCK (the socket file of a killed predecessor is still
# there, so its log says when).
start_instance() {
  local i
  NINST=$((NINST + 1))
  BLOG="$TMP/vhostd.$NINST.log"
  ARMED[NINST]=$1
  IN_IO[NINST]=0
  gmark 'VTEST-PHASE: io-start' && ! gmark 'VTEST-PHASE: io-end' && IN_IO[NINST]=1
  if [[ $1 -gt 0 ]]; then
    VHOSTD_TEST_KILL_BEFORE_INTERRUPT=$1 "$VHOSTD" --threads 1 --blk "socket=$SOCK,path=$IMG" \
      </dev/null >>"$BLOG" 2>&1 &
  else
    "$VHOSTD" --threads 1 --blk "socket=$SOCK,path=$IMG" </dev/null >>"$BLOG" 2>&1 &
  fi
  BACKEND_PID=$!
  for ((i = 0; i < 100; i++)); do
    grep -q "listening on $SOCK" "$BLOG" 2>/dev/null && return 0
    if ! kill -0 "$BACKEND_PID" 2>/dev/null; then lh_abort "vhostd instance $NINST exited before listening"; fi
    sleep 0.1
  done
  lh_abort "vhostd instance $NINST did not listen on $SOCK within 10s"
}

# next_k: the kill point of the next instance (0 once MAX_KILLS were armed).
next_k() { if ((KILLS < MAX_KILLS)); then echo $((2 + RANDOM % 7)); else echo 0; fi; }

# --- guest markers --------------------------------------------------------------
gmark() { grep -aqs "^$1" "$GLOG"; }   # serial lines end in \r\n: prefix match
guest_running() { [[ -n $GUEST_PID ]] && kill -0 "$GUEST_PID" 2>/dev/null; }
writes_done() { { grep -ac '^VTEST-WRITE:' "$GLOG" 2>/dev/null || true; } | head -n1; }

# --- run ------------------------------------------------------------------------
log "$WRITES single writes; instances armed at a random notification 2..8 (seed $SEED), at most $MAX_KILLS"
start_instance "$(next_k)"
log "vhostd instance 1 pid $BACKEND_PID listening on $SOCK (hook at notification ${ARMED[1]})"
lh_start_guest blk_lost_call "$GLOG" "$TIMEOUT" "vtest_writes=$WRITES" "${QEMU_DEV[@]}"

last_n=-1 last_t=$SECONDS kill_t="" kill_n=""
while guest_running; do
  if gmark 'VTEST-RESULT:'; then break; fi
  if ! kill -0 "$BACKEND_PID" 2>/dev/null; then
    rc=0; wait "$BACKEND_PID" || rc=$?
    if [[ $rc -eq 137 ]] && grep -q 'fault injection: SIGKILL before a used-buffer notification' "$BLOG"; then
      KILLS=$((KILLS + 1))
      if gmark 'VTEST-PHASE: io-start' && ! gmark 'VTEST-PHASE: io-end'; then IO_KILLS=$((IO_KILLS + 1)); fi
      kill_t=$SECONDS kill_n=$(writes_done)
      log "instance $NINST killed itself before notification ${ARMED[NINST]} (after $kill_n writes)"
    else
      fail "vhostd instance $NINST exited with status $rc outside the hook"
      lh_dump_backend_log 20
      break
    fi
    start_instance "$(next_k)"
  fi
  n=$(writes_done)
  [[ $n == "$last_n" ]] || last_n=$n last_t=$SECONDS
  if [[ -n $kill_t ]] && [[ $n == "$kill_n" ]] && ! gmark 'VTEST-PHASE: io-end' && ((SECONDS - kill_t > STALL)); then
    fail "the guest's write $n has not completed ${STALL}s after instance $((NINST - 1)) was killed before its interrupt (a lost interrupt hangs the guest)"
    break
  fi
  if gmark 'VTEST-PHASE: io-start' && ! gmark 'VTEST-PHASE: io-end' && ((SECONDS - last_t > 60)); then
    fail "the guest's writes made no progress for 60s"
    break
  fi
  sleep 0.1
done
log "$KILLS instance(s) killed themselves before an interrupt, $IO_KILLS during the write phase; $NINST instances"

# A guest that failed may not power off (a write stuck in the kernel): give it
# 15 s after its verdict, then stop it.
for ((i = 0; i < 150; i++)); do
  if ! gmark 'VTEST-RESULT:' || ! guest_running; then break; fi
  sleep 0.1
done
if { [[ ${#FAILURES[@]} -gt 0 ]] || gmark 'VTEST-RESULT:'; } && guest_running; then
  log "stopping the guest; its last console lines:"
  tail -n 15 "$GLOG" | tr -d '\r' | sed 's/^/  | /' >&2
  kill -TERM "$GUEST_PID" 2>/dev/null || true   # run-guest.sh stops QEMU
fi
lh_wait_guest

# --- checks ---------------------------------------------------------------------
if [[ $GUEST_OK == 1 ]] && ((IO_KILLS < MIN_KILLS)); then
  fail "only $IO_KILLS kill(s) in the hook during the write phase (need $MIN_KILLS)"
fi
for ((n = 1; n <= NINST; n++)); do
  f="$TMP/vhostd.$n.log"
  if grep -q '\[error\]' "$f"; then
    fail "vhostd instance $n logged errors"
    grep '\[error\]' "$f" | head -n 5 | sed 's/^/  | /' >&2
  fi
  if [[ ${IN_IO[n]} == 1 ]] && grep -q 'resubmitting' "$f"; then
    fail "vhostd instance $n resubmitted requests: its predecessor died with a request unfinished, not in the window after the publish"
    grep 'resubmitting' "$f" | sed 's/^/  | /' >&2
  fi
done
if [[ $GUEST_OK == 1 ]]; then
  for ((i = 0; i < WRITES; i++)); do
    if ! cmp -s <(yes "lost-call block $i" | head -c 4096) <(dd if="$IMG" bs=4096 skip="$i" count=1 status=none); then
      fail "host check: block $i of the backing file is wrong"
      break
    fi
  done
  ((i == WRITES)) && log "host check: all $WRITES blocks are in the backing file"
fi

if [[ -n $BACKEND_PID ]] && kill -0 "$BACKEND_PID" 2>/dev/null; then
  lh_wait_disconnect 1
  lh_stop_backend 0
fi
lh_finish
