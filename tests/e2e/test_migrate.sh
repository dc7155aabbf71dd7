#!/usr/bin/env bash
# End-to-end test of live migration: a guest whose disk and NIC are served by
# vhostd moves between QEMUs while it runs verified I/O and a TCP stream, and
# one migration is cancelled half-way.
#
#   vhostd A, vhostd B   --threads 1 --blk socket=SA|SB,path=disk.img,queues=2
#                        --net socket=NA|NB,tap=vtapa|vtapb,queues=1
#                        (two processes, like two hosts sharing the disk: the
#                        same backing file, 64 MiB, page cache; and the same
#                        network: both taps are ports of bridge br0,
#                        10.77.0.1/24, in a network namespace of the test's
#                        own)
#   QEMU 1, 2, 3, ...    the same machine; QEMU 1 on vhostd A, each
#                        destination on the other vhostd than its source; a
#                        destination starts with -incoming, the source
#                        migrates to it over a unix socket (QMP migrate), then
#                        quits. vhost-user-blk-pci, num-queues=2, and
#                        virtio-net-pci (vectors=0, guest_announce=off: QEMU
#                        announces the guest with SEND_RARP after a migration)
#   guest                guest/blk_restart.sh: fio 4k random writes QD16 on
#                        both queues and 512k writes + fsync, crc32c-verified
#                        after every pass (vtest_runtime, 60 s); a read-verify
#                        pass over all 64 MiB; no I/O or virtio errors in the
#                        kernel log. Beside fio, 10.77.0.2 streams 256 KiB
#                        every 0.2 s over TCP to nc on 10.77.0.1 until fio
#                        ends (the md5 of what it sent is compared with what
#                        the host received).
#
# During the fio phase: first a pause (QMP stop, 1 s, cont), then a migration
# from QEMU 1 that is cancelled
# half-way (bandwidth limited to 1 MiB/s, migrate_cancel after 3 s): QEMU 1
# must keep running and vhostd A must turn dirty logging on and off again.
# Then MIGRATIONS (6) migrations: QEMU 1 -> 2 -> 3 ... (A -> B -> A ...:
# there and back three times). Each must complete; the destination waits
# paused (-S) while the guest's memory in both QEMUs is compared page by page
# (a page vhostd wrote without marking it in the dirty log would be stale on
# the destination). A difference in a virtqueue's ring or event area, or one
# of I/O-payload size (> 1 KiB of a page) while no scattered ones are seen,
# fails the test (payload-size ones among scattered ones: inconclusive, the
# run is made again); scattered bytes
# elsewhere are QEMU 7.2's own: its TCG loses a few guest-CPU writes from
# dirty tracking now and then, also with QEMU's own virtio-blk and no vhostd
# (migrate_memcmp_qemu_only.sh). vhostd's other writes (blk status bytes, net
# headers) are small too, and a split ring's used ring is marked dirty by
# QEMU itself when it stops the device (with vhostd's used-ring logging taken
# out this test still passes; without its read-data logging it fails at every
# migration): the unit tests check that each write path marks the log. Then the destination runs; the source's vhostd must have
# logged (dirty logging on), and the
# destination's vhostd must have announced the guest's MAC on its tap: a RARP
# from that MAC seen on the bridge (a raw-socket capture), the bridge's fdb
# pointing at the destination's tap.
#
# Checks: the guest passes on the last QEMU (fio verify, final read pass,
# clean kernel log); the TCP stream arrived whole (bytes and md5); every
# migration completed; the cancelled one left the
# source running; no vhostd logged an error; the backing file passes fio's
# crc32c verification on the host; both vhostds exit 0 on SIGTERM.
#
# Usage:
#   tests/e2e/test_migrate.sh --build-dir BUILD --guest-dir DIR
#                             [--packed] [--timeout SECS] [--keep]
#
#   --build-dir BUILD   CMake build dir containing the vhostd binary
#   --guest-dir DIR     guest image dir; built/refreshed with build-guest.sh
#   --packed            packed virtqueues on both devices (packed=on; the guest
#                       checks it negotiated them for the disk)
#   --timeout SECS      limit for the whole guest run (default 300)
#   --keep              keep the temp dir (logs, backing file) for debugging
#
# Environment:
#   VTEST_RUNTIME      fio phase seconds (default 60)
#   VTEST_MIGRATIONS   completed migrations (default 6)
#   VTEST_MEMCMP       1 (default): compare the guest's memory page by page at
#                      every switch-over (destinations start paused, RAM in
#                      /dev/shm); 0: skip it
#   VTEST_ATTEMPTS     runs before inconclusive ones count as a failure (3)
#   VTEST_LOG_LEVEL    vhostd's --log-level (default info)
#   VTEST_QEMU_ARGS    extra QEMU arguments (@K@ becomes the QEMU's number)
#   VTEST_GUEST_APPEND extra guest kernel command line
#   VTEST_CPU          QEMU CPU model (default qemu64; see CPU_MODEL below)
#
# Needs root (network namespaces, taps, bridges) and iproute2 on the host.
# Exit status 0 = PASS, 1 = FAIL. A run whose guest died after the comparison caught QEMU
# losing its writes, with nothing pointing at vhostd, is inconclusive and made again (up to
# VTEST_ATTEMPTS runs): QEMU's loss hits the guest's kernel often enough to matter in CI.
set -euo pipefail

# Exit status 3 of a run means inconclusive (above: the guest died of QEMU's TCG losing its
# writes); up to VTEST_ATTEMPTS (3) runs are made before that counts as a failure.
if [[ -z ${VTEST_ATTEMPT:-} ]]; then
  for ((attempt = 1; attempt <= ${VTEST_ATTEMPTS:-3}; attempt++)); do
    rc=0
    VTEST_ATTEMPT=$attempt "$0" "$@" || rc=$?
    [[ $rc == 3 ]] || exit "$rc"
    echo "test_migrate: run $attempt inconclusive (QEMU's TCG lost guest-CPU writes and the guest died of it): again" >&2
  done
  echo "test_migrate: FAIL: ${VTEST_ATTEMPTS:-3} inconclusive runs in a row" >&2
  exit 1
fi

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib-host.sh
. "$SCRIPT_DIR/lib-host.sh"
TIMEOUT=${TIMEOUT:-300}
lh_parse_common_args "$@"
PACKED_OPT=""
if [[ $PACKED == 1 ]]; then PACKED_OPT=",packed=on"; fi
lh_init "test_migrate$PACKED_OPT" migrate
lh_build_guest

DISK_MIB=64
QUEUES=2
RUNTIME=${VTEST_RUNTIME:-60}
MIGRATIONS=${VTEST_MIGRATIONS:-6}
MEMCMP=${VTEST_MEMCMP:-1}
TCG_PAGES=0   # differing pages of QEMU's own (see the comparison below)
# A named CPU model, as migration in production uses (one both hosts provide), not "max": QEMU
# 7.2 under TCG corrupts a guest migrated with -cpu max now and then (a process or the kernel
# jumps to a wild address or finds a list pointer of the past), also with QEMU's own virtio-blk
# and no vhostd at all; with qemu64, 12 of 12 runs of this test were clean against about one in
# four failing with max (2026-12-04).
CPU_MODEL=${VTEST_CPU:-qemu64}
MEM_BYTES=$((512 << 20))
MEMDIR=""
if ((MEMCMP)); then
  # The guests' RAM as files in memory (at most three QEMUs hold one at a time).
  if [[ -d /dev/shm ]] && (($(df --output=avail -k /dev/shm | tail -n1) > 3 * (MEM_BYTES >> 10))); then
    MEMDIR=$(mktemp -d /dev/shm/vtest-migrate.XXXXXX)
    LH_SCRATCH+=("$MEMDIR")
  else
    log "no room in /dev/shm for the guests' RAM: the memory comparison is skipped"
    MEMCMP=0
  fi
fi
IMG="$TMP/disk.img"
dd if=/dev/zero of="$IMG" bs=1M count=$DISK_MIB status=none
QEMU_BIN=${QEMU:-qemu-system-x86_64}

# --- the network ----------------------------------------------------------------
BR=br0 BR_IP=10.77.0.1 GUEST_IP=10.77.0.2 PORT=5500
MAC=52:54:00:12:34:0c
declare -A TAP=([A]=vtapa [B]=vtapb)
lh_netns_create "vhostd-e2e-mig-$$"
ip -n "$NETNS" link add "$BR" type bridge stp_state 0 forward_delay 0
ip -n "$NETNS" addr add "$BR_IP/24" dev "$BR"
ip -n "$NETNS" link set "$BR" up
# The stream's receiver, and every RARP frame the bridge sees (ethertype 0x8035).
# busybox nc ends the connection when its stdin reaches EOF: the receiver's
# stdin is a FIFO nobody writes to.
mkfifo "$TMP/hold"
ip netns exec "$NETNS" timeout $((TIMEOUT + 60)) busybox nc -l -p "$PORT" >"$TMP/stream.recv" 2>"$TMP/stream.err" \
  0<>"$TMP/hold" &
lh_track_pid $!
ip netns exec "$NETNS" timeout $((TIMEOUT + 60)) python3 -u -c '
import socket, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x8035))
s.bind((sys.argv[1], 0))
while True:
    f = s.recv(2048)
    print("rarp", f[6:12].hex(":"), f"{time.time():.3f}", flush=True)
' "$BR" >"$TMP/rarp.log" 2>&1 &
lh_track_pid $!
lh_netns_wait_tcp_listen 10 "$PORT" || lh_abort "the stream receiver did not listen on $PORT"
rarps() { { grep -c "^rarp $MAC " "$TMP/rarp.log" || true; } | head -n1; }
announced() { { grep -c "announced $MAC (RARP)" "${VLOG[$1]}" || true; } | head -n1; }
# The bridge's fdb read whole before it is searched: grep -q on the pipe could
# end it early, and the SIGPIPE that bridge then gets fails the pipeline.
fdb() { bridge -n "$NETNS" fdb show br "$BR" 2>/dev/null || true; }
on_tap() { local f; f=$(fdb); grep -q "^$MAC dev ${TAP[$1]} " <<<"$f"; }

# --- the two vhostds ------------------------------------------------------------
declare -A VPID=() VLOG=()
start_vhostd() {  # NAME
  local sock="$TMP/$1.sock" i
  VLOG[$1]="$TMP/vhostd-$1.log"
  ip netns exec "$NETNS" "$VHOSTD" --threads 1 --log-level "${VTEST_LOG_LEVEL:-info}" \
    --blk "socket=$sock,path=$IMG,queues=$QUEUES" --net "socket=$TMP/n$1.sock,tap=${TAP[$1]},queues=1" \
    </dev/null >"${VLOG[$1]}" 2>&1 &
  VPID[$1]=$!
  lh_track_pid "${VPID[$1]}"
  for ((i = 0; i < 100; i++)); do
    [[ -S $sock && -S $TMP/n$1.sock ]] && break
    kill -0 "${VPID[$1]}" 2>/dev/null || lh_abort "vhostd $1 exited before listening"
    sleep 0.1
  done
  [[ -S $sock && -S $TMP/n$1.sock ]] || lh_abort "vhostd $1 did not create its sockets within 10s"
  lh_netns_wait_link "${TAP[$1]}" 10 || lh_abort "vhostd $1 did not create ${TAP[$1]}"
  ip -n "$NETNS" link set "${TAP[$1]}" master "$BR"
  ip -n "$NETNS" link set "${TAP[$1]}" up
}
start_vhostd A
start_vhostd B
BLOG=${VLOG[A]}   # lh_finish shows this one on failure
log "vhostd A pid ${VPID[A]}, vhostd B pid ${VPID[B]}"

# --- QEMUs ----------------------------------------------------------------------
# QEMU k: serial log $TMP/guest.k.log, QMP $TMP/qmp.k.sock, incoming (k > 1) on
# $TMP/mig.k.sock; its vhostd is QSIDE[k].
declare -A QPID=() QSIDE=()
vhostd_of() { echo "${QSIDE[$1]}"; }
other() { if [[ $1 == A ]]; then echo B; else echo A; fi; }
start_qemu() {  # K SIDE
  local k=$1 side=$2
  QSIDE[$k]=$side
  # shellcheck disable=SC2054  # commas are part of QEMU option values
  local args=(
    "$QEMU_BIN" -accel tcg -machine q35 -cpu "$CPU_MODEL" -smp 2 -m 512M
    -object "$(ram_backend "$k")" -numa node,memdev=mem
    -nographic -monitor none -serial "file:$TMP/guest.$k.log" -no-reboot -nic none
    -kernel "$GUEST_DIR/vmlinuz" -initrd "$GUEST_DIR/initramfs.cpio"
    -append "console=ttyS0 quiet panic=-1 vtest=blk_restart vtest_queues=$QUEUES vtest_runtime=$RUNTIME vtest_net_addr=$GUEST_IP/24 vtest_net_sink=$BR_IP:$PORT vtest_net_mac=$MAC vtest_reader=1 vtest_packed=$PACKED${VTEST_GUEST_APPEND:+ $VTEST_GUEST_APPEND}"
    -qmp "unix:$TMP/qmp.$k.sock,server=on,wait=off"
    -chardev "socket,id=c0,path=$TMP/$side.sock"
    -device "vhost-user-blk-pci,chardev=c0,num-queues=$QUEUES$PACKED_OPT"
    -chardev "socket,id=c1,path=$TMP/n$side.sock" -netdev vhost-user,id=n0,chardev=c1
    -device "virtio-net-pci,netdev=n0,mac=$MAC,vectors=0,guest_announce=off$PACKED_OPT"
  )
  ((k > 1)) && args+=(-incoming "unix:$TMP/mig.$k.sock")
  if ((k > 2 && MEMCMP)); then args+=(-S); fi
  # shellcheck disable=SC2206  # extra QEMU arguments for debugging, split on spaces
  [[ -n ${VTEST_QEMU_ARGS:-} ]] && args+=(${VTEST_QEMU_ARGS//@K@/$k})
  timeout --kill-after=10 "$TIMEOUT" "${args[@]}" </dev/null >"$TMP/qemu.$k.out" 2>&1 &
  QPID[$k]=$!
  lh_track_pid "${QPID[$k]}"
  local i
  for ((i = 0; i < 100; i++)); do
    [[ -S $TMP/qmp.$k.sock ]] && return 0
    kill -0 "${QPID[$k]}" 2>/dev/null || { cat "$TMP/qemu.$k.out" >&2; lh_abort "QEMU $k exited at start"; }
    sleep 0.1
  done
  lh_abort "QEMU $k: no QMP socket within 10s"
}
# Guest RAM: a memfd; for the memory comparison a file in MEMDIR instead (shared the same way,
# and readable by this script while the QEMU holds it).
ram_backend() {
  if ((MEMCMP)); then
    echo "memory-backend-file,id=mem,size=$MEM_BYTES,mem-path=$MEMDIR/ram.$1,share=on"
  else
    echo "memory-backend-memfd,id=mem,size=$MEM_BYTES,share=on"
  fi
}
qmp() { local k=$1; shift; python3 "$SCRIPT_DIR/qmp.py" "$TMP/qmp.$k.sock" "$@"; }
qemu_running() { kill -0 "${QPID[$1]}" 2>/dev/null; }
vm_status() { qmp "$1" query-status 2>/dev/null | grep -o '"status": "[a-z-]*"' | head -n1 | cut -d'"' -f4; }
mig_status() { qmp "$1" query-migrate 2>/dev/null | grep -o '"status": "[a-z-]*"' | head -n1 | cut -d'"' -f4; }
# gmark K REGEX: the guest printed a line matching REGEX while on QEMU k or before.
gmark_any() { cat "$TMP"/guest.*.log 2>/dev/null | grep -aqE "^$1"; }
logging_events() { { grep -c "dirty logging $2" "${VLOG[$1]}" || true; } | head -n1; }

# wait_mig K SECS: wait until QEMU k's migration leaves the active states;
# prints the final status.
wait_mig() {
  local k=$1 i s
  for ((i = 0; i < $2 * 10; i++)); do
    s=$(mig_status "$k")
    case $s in
      completed|failed|cancelled) echo "$s"; return 0 ;;
    esac
    sleep 0.1
  done
  echo "timeout($s)"
}

# --- run ------------------------------------------------------------------------
start_qemu 1 A
CUR=1 NEXT=2
log "QEMU 1 pid ${QPID[1]} booting on vhostd A"
deadline=$((SECONDS + 180))
until gmark_any 'VTEST-PHASE: io-start'; do
  qemu_running 1 || lh_abort "QEMU 1 exited before the guest's fio phase"
  ((SECONDS < deadline)) || lh_abort "the guest did not start its fio phase within 180s"
  sleep 0.2
done
IO_T0=$SECONDS
log "guest fio phase started (${RUNTIME}s)"

# A pause: QMP stop / cont (QEMU stops the device: SET_STATUS 0, GET_VRING_BASE;
# then starts it again at that position).
sleep 2
qmp 1 stop >/dev/null || fail "QMP stop failed"
sleep 1
qmp 1 cont >/dev/null || fail "QMP cont failed"
[[ $(vm_status 1) == running ]] || fail "QEMU 1 does not run after stop/cont"
sleep 2
grep -q '\[error\]' "${VLOG[A]}" && fail "vhostd A reported errors after the guest was paused and resumed"

# A cancelled migration: the source goes on, vhostd A logs and stops logging.
start_qemu 2 B
NEXT=3
on0=$(logging_events A on) off0=$(logging_events A off)
qmp 1 'migrate-set-parameters {"max-bandwidth": 1048576}' >/dev/null
qmp 1 "migrate {\"uri\": \"unix:$TMP/mig.2.sock\"}" >/dev/null || fail "QMP migrate (to be cancelled) failed"
sleep 3
s=$(mig_status 1)
[[ $s == active ]] || fail "the migration to be cancelled is '$s' after 3s, not active"
qmp 1 migrate_cancel >/dev/null || fail "QMP migrate_cancel failed"
s=$(wait_mig 1 30)
[[ $s == cancelled ]] || fail "the cancelled migration ended '$s'"
st=$(vm_status 1)
if [[ $st == running ]]; then
  log "migration cancelled after 3s: QEMU 1 keeps running"
else
  fail "QEMU 1 is '$st' after the cancelled migration"
fi
for ((i = 0; i < 50; i++)); do
  [[ $(logging_events A off) -gt $off0 ]] && break
  sleep 0.1
done
[[ $(logging_events A on) -gt $on0 ]] || fail "vhostd A never turned dirty logging on for the cancelled migration"
[[ $(logging_events A off) -gt $off0 ]] || fail "vhostd A did not turn dirty logging off after the cancel"
qmp 2 quit >/dev/null 2>&1 || true   # the incoming QEMU that never got a VM
wait "${QPID[2]}" 2>/dev/null || true
if ((MEMCMP)); then rm -f "$MEMDIR/ram.2"; fi
qmp 1 'migrate-set-parameters {"max-bandwidth": 107374182400}' >/dev/null

# The migrations: k -> k+1, the source quits, the next destination starts on
# the source's vhostd (its socket is free again).
DONE=0
for ((m = 1; m <= MIGRATIONS; m++)); do
  src=$CUR dst=$NEXT
  NEXT=$((NEXT + 1))
  side=$(vhostd_of "$src")
  dside=$(other "$side")
  start_qemu "$dst" "$dside"
  on0=$(logging_events "$side" on) ann0=$(announced "$dside") rarp0=$(rarps)
  t0=$SECONDS
  qmp "$src" 'migrate-set-parameters {"max-bandwidth": 107374182400}' >/dev/null
  qmp "$src" "migrate {\"uri\": \"unix:$TMP/mig.$dst.sock\"}" >/dev/null || { fail "QMP migrate $src -> $dst failed"; break; }
  s=$(wait_mig "$src" 120)
  if [[ $s != completed ]]; then
    fail "migration $m (QEMU $src -> $dst) ended '$s'"
    qmp "$src" query-migrate >&2 || true
    break
  fi
  if ((MEMCMP)); then
    # The destination waits (-S) while both memories are compared. A page vhostd wrote without
    # marking it in the dirty log differs here (QEMU did not send it again); so do the few
    # guest-CPU writes QEMU 7.2's TCG loses on its own. memcmp_pages.py tells them apart: a
    # difference in a virtqueue's ring or event area (the source QEMU's addresses), or one of
    # I/O-payload size, fails the test; scattered bytes elsewhere are counted as QEMU's.
    # (RAM below 4 GiB: the file offset is the guest-physical address.)
    if cmp -s "$MEMDIR/ram.$src" "$MEMDIR/ram.$dst"; then
      cls="0 0 0 0"
    else
      python3 "$SCRIPT_DIR/vring_areas.py" "$TMP/qmp.$src.sock" >"$TMP/rings.m$m" 2>>"$TMP/memcmp.log" ||
        fail "migration $m: cannot read the virtqueues' addresses from QEMU $src (x-query-virtio)"
      cls=$(python3 "$SCRIPT_DIR/memcmp_pages.py" "$MEMDIR/ram.$src" "$MEMDIR/ram.$dst" "$TMP/page.m$m" \
            --areas "$TMP/rings.m$m" 2>>"$TMP/memcmp.log") || cls=error
    fi
    read -r nd nring nlarge nsmall <<<"$cls" || true
    if [[ $nd == error || -z ${nsmall:-} ]]; then
      fail "migration $m: the memory comparison failed (see memcmp.log)"
    elif ((nring > 0 || (nlarge > 0 && nsmall == 0))); then
      fail "migration $m: guest memory differs between source and destination: $nring page(s) in a virtqueue ring, $nlarge of payload size"
      tail -n 1 "$TMP/memcmp.log" >&2 || true
    elif ((nlarge > 0)); then
      # Payload-size differences among scattered ones: QEMU lost guest-CPU writes at this
      # switch-over (seen once with 25 such pages and 4 of fio's buffers), so it cannot be told
      # whose the large ones are. The run is inconclusive, not passed (see the end).
      TCG_PAGES=$((TCG_PAGES + nsmall))
      fail "migration $m: $nlarge payload-size page(s) differ among $nsmall scattered ones (QEMU lost guest-CPU writes: whose they are cannot be told)"
      tail -n 1 "$TMP/memcmp.log" >&2 || true
    elif ((nsmall > 0)); then
      TCG_PAGES=$((TCG_PAGES + nsmall))
      log "migration $m: $nsmall page(s) differ in a few scattered bytes, outside the rings: guest-CPU writes QEMU's TCG lost"
      tail -n 1 "$TMP/memcmp.log" | sed 's/^/  /' >&2 || true
    fi
    qmp "$dst" cont >/dev/null
  fi
  for ((i = 0; i < 50; i++)); do
    [[ $(vm_status "$dst") == running ]] && break
    sleep 0.1
  done
  st=$(vm_status "$dst")
  [[ $st == running ]] || { fail "QEMU $dst is '$st' after migration $m"; break; }
  [[ $(logging_events "$side" on) -gt $on0 ]] || fail "vhostd $side did not log dirty pages for migration $m"
  seen=0
  for ((i = 0; i < 50; i++)); do
    if [[ $(rarps) -gt $rarp0 ]] && on_tap "$dside"; then seen=1; break; fi
    sleep 0.1
  done
  [[ $(announced "$dside") -gt $ann0 ]] || fail "vhostd $dside did not announce $MAC after migration $m (SEND_RARP)"
  [[ $(rarps) -gt $rarp0 ]] || fail "no RARP from $MAC on the bridge after migration $m"
  if ((!seen)); then
    fail "the bridge never had $MAC on ${TAP[$dside]} in 5s after migration $m"
    fdb | grep -i "$MAC" | sed 's/^/  fdb| /' >&2 || true
  fi
  qmp "$src" quit >/dev/null 2>&1 || true
  wait "${QPID[$src]}" 2>/dev/null || true
  if ((MEMCMP)); then rm -f "$MEMDIR/ram.$src"; fi
  log "migration $m: QEMU $src (vhostd $side) -> QEMU $dst (vhostd $(vhostd_of "$dst")) in $((SECONDS - t0))s, t=+$((SECONDS - IO_T0))s"
  DONE=$((DONE + 1))
  CUR=$dst
  if gmark_any 'VTEST-PHASE: io-end' || gmark_any 'VTEST-RESULT:'; then
    fail "the guest's fio phase ended after $DONE migration(s): raise VTEST_RUNTIME"
    break
  fi
done
log "$DONE of $MIGRATIONS migrations completed; the guest now runs on QEMU $CUR"

# The guest finishes on the last QEMU and powers it off.
if [[ ${#FAILURES[@]} -eq 0 ]]; then
  for ((i = 0; i < (RUNTIME + 120) * 10; i++)); do
    qemu_running "$CUR" || break
    sleep 0.1
  done
  qemu_running "$CUR" && fail "the guest did not finish on QEMU $CUR"
fi
for k in "${!QPID[@]}"; do
  if qemu_running "$k"; then kill -TERM "${QPID[$k]}" 2>/dev/null || true; fi
  wait "${QPID[$k]}" 2>/dev/null || true
done
GLOG="$TMP/guest.$CUR.log"
if grep -aq '^VTEST-RESULT: PASS' "$GLOG"; then
  log "guest passed on QEMU $CUR"
else
  fail "guest test failed: $(grep -a -m1 '^VTEST-RESULT' "$GLOG" | tr -d '\r' || echo 'no result')"
  tail -n 30 "$GLOG" | tr -d '\r' | sed 's/^/  guest| /' >&2
fi
cat "$TMP"/guest.*.log | grep -aE '^(vtest|VTEST)' | tr -d '\r' | sed 's/^/  guest| /' >&2 || true

# --- checks ---------------------------------------------------------------------
lh_check_xfer "$GLOG" stream "$TMP/stream.recv"
sbytes=$(stat -c %s "$TMP/stream.recv" 2>/dev/null || echo 0)
((sbytes >= 8 * 1048576)) || fail "the TCP stream carried only $sbytes bytes"
log "RARPs from $MAC seen on the bridge: $(rarps)"
for side in A B; do
  if grep -q '\[error\]' "${VLOG[$side]}"; then
    fail "vhostd $side logged errors"
    grep '\[error\]' "${VLOG[$side]}" | head -n 5 | sed 's/^/  | /' >&2
  fi
done
lh_check_restart_layout "$IMG"
for side in A B; do
  BACKEND_PID=${VPID[$side]} BLOG=${VLOG[$side]}
  lh_stop_backend 0
done
# Inconclusive rather than failed: the comparison caught QEMU losing guest-CPU writes, and the
# failures are what follows from that: the guest died or hung (no result, no stream checksum:
# its kernel ran on memory QEMU had corrupted), or payload-size differences showed up among
# QEMU's scattered ones. Nothing points at vhostd: no difference in a ring, no payload-size one
# on its own, no verify error from the guest, no vhostd error. The caller runs the test again
# (see the top).
if ((${#FAILURES[@]} > 0 && TCG_PAGES > 0)); then
  soft=1
  for f in "${FAILURES[@]}"; do
    case $f in
      "the guest did not finish on QEMU "*|"guest test failed: no result"|"transfer stream: "*|"the TCP stream carried only "*) ;;
      "migration "*" payload-size page(s) differ among "*" scattered ones "*) ;;
      *) soft=0 ;;
    esac
  done
  if ((soft)); then
    log "INCONCLUSIVE: QEMU lost $TCG_PAGES page(s) of guest-CPU writes (TCG) and the run failed in a way that follows from it; nothing points at vhostd"
    lh_dump_backend_log 20
    for f in "${FAILURES[@]}"; do log "  - $f"; done
    exit 3
  fi
fi
lh_finish
