#!/usr/bin/env bash
# End-to-end test: vhostd launched the way a management layer launches a vhost-user backend
# (QEMU docs/interop/vhost-user.rst, "Backend program conventions"): the launcher creates the
# socket and hands it over with --fd; the disk is --blk-file. vhostd must not daemonize and must
# exit on SIGTERM.
#  1. a listening socket handed over: QEMU connects to its path, the guest runs fio verify,
#     discard, mkfs + fsck (guest test blk); the image is checked on the host; SIGTERM -> exit 0;
#  2. a connected socket handed over (the launcher connects to QEMU's server=on chardev): the
#     guest reads back what boot 1 wrote (blk_readback); when QEMU quits, vhostd exits by itself
#     with status 0.
# --read-only (no guest): blkbench reads from a handed-over socket, and its writes fail.
# Also --print-capabilities prints the block capabilities the conventions define.
#
# Usage: tests/e2e/test_blk_fd.sh --build-dir BUILD --guest-dir DIR [--descriptor FILE] [--timeout SECS] [--keep]
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib-host.sh
. "$SCRIPT_DIR/lib-host.sh"
# --descriptor FILE: the vhostd to launch is the "binary" of this QEMU backend descriptor (as a
# management layer finds it: /usr/share/qemu/vhost-user/50-vhostd-blk.json of an installed package).
DESCRIPTOR="" args=()
while [[ $# -gt 0 ]]; do
  if [[ $1 == --descriptor ]]; then DESCRIPTOR=$2; shift 2; else args+=("$1"); shift; fi
done
lh_parse_common_args "${args[@]}"
if [[ -n $DESCRIPTOR ]]; then
  VHOSTD=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["type"] == "block", d; print(d["binary"])' \
    "$DESCRIPTOR") || { echo "test_blk_fd: bad descriptor $DESCRIPTOR" >&2; exit 1; }
  [[ -x $VHOSTD ]] || { echo "test_blk_fd: the descriptor's binary $VHOSTD is not executable" >&2; exit 1; }
fi
lh_init test_blk_fd blk-fd
log "backend binary: $VHOSTD${DESCRIPTOR:+ (from $DESCRIPTOR)}"
lh_build_guest

caps=$("$VHOSTD" --print-capabilities) || fail "--print-capabilities failed"
python3 -c 'import json,sys; d=json.loads(sys.argv[1]); assert d == {"type": "block", "features": ["read-only", "blk-file"]}, d' "$caps" ||
  fail "--print-capabilities printed: $caps"

QUEUES=2
SOCK="$TMP/blk.sock" IMG="$TMP/disk.img"
truncate -s 256M "$IMG"

log "=== boot 1: a listening socket handed over as --fd"
BLOG="$TMP/backend1.log"
lh_start_backend "$SCRIPT_DIR/launch_fd.py" listen "$SOCK" -- "$VHOSTD" --blk-file "$IMG"
lh_wait_listen "$SOCK"
lh_run_guest blk "$TMP/guest1.log" "$TIMEOUT" "vtest_queues=$QUEUES vtest_discard=1" \
  -chardev "socket,id=c0,path=$SOCK" -device "vhost-user-blk-pci,chardev=c0,num-queues=$QUEUES"
lh_check_backend_alive "during/after guest 1"
grep -q 'serving the listening socket handed over' "$BLOG" || fail "vhostd did not say it adopted a listening socket"
[[ ${#FAILURES[@]} -eq 0 ]] && lh_check_blk_image "$IMG"
lh_stop_backend 0
[[ ${#FAILURES[@]} -eq 0 ]] || lh_finish

log "=== --read-only: blkbench on a handed-over listening socket"
BB="$BUILD_DIR/blkbench" RO="$TMP/ro.sock"
BLOG="$TMP/backend-ro.log"
lh_start_backend "$SCRIPT_DIR/launch_fd.py" listen "$RO" -- "$VHOSTD" --blk-file "$IMG" --read-only
lh_wait_listen "$RO"
"$BB" --socket "$RO" --queues 1 --qd 4 --rw randread --seconds 1 --ramp 0 >/dev/null 2>"$TMP/bb-read.err" ||
  fail "reads from the --read-only disk failed: $(cat "$TMP/bb-read.err")"
if "$BB" --socket "$RO" --queues 1 --qd 4 --rw randwrite --seconds 1 --ramp 0 >/dev/null 2>"$TMP/bb-write.err"; then
  fail "writes to the --read-only disk succeeded"
else
  grep -q "write at lba .* failed" "$TMP/bb-write.err" || fail "writes to the --read-only disk: $(cat "$TMP/bb-write.err")"
fi
lh_stop_backend 0
[[ ${#FAILURES[@]} -eq 0 ]] || lh_finish

log "=== boot 2: a connected socket handed over as --fd"
rm -f "$SOCK"
BLOG="$TMP/backend2.log"
lh_start_backend "$SCRIPT_DIR/launch_fd.py" connect "$SOCK" -- "$VHOSTD" --blk-file "$IMG"
lh_run_guest blk_readback "$TMP/guest2.log" "$TIMEOUT" "vtest_queues=$QUEUES" \
  -chardev "socket,id=c0,path=$SOCK,server=on,wait=on" -device "vhost-user-blk-pci,chardev=c0,num-queues=$QUEUES"
grep -q 'serving the connected socket handed over' "$BLOG" || fail "vhostd did not say it adopted a connected socket"
for ((i = 0; i < 100; i++)); do kill -0 "$BACKEND_PID" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$BACKEND_PID" 2>/dev/null; then
  fail "vhostd still runs 10 s after the frontend of its handed-over connection left"
  lh_stop_backend any
else
  rc=0; wait "$BACKEND_PID" || rc=$?
  [[ $rc == 0 ]] || fail "vhostd exited with status $rc after its frontend left"
  log "vhostd exited by itself with status $rc after QEMU quit"
  BACKEND_PID=""
fi
lh_finish
