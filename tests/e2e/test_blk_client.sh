#!/usr/bin/env bash
# End-to-end test of vhostd's client mode (--blk ...,client=on): QEMU listens
# on the vhost-user socket (-chardev socket,server=on,wait=off; QEMU 7.2's
# vhost-user-blk still waits for the backend while realizing the device) and
# vhostd connects to it, retrying until QEMU listens.
#
#   boot 1  vhostd is started first, while nothing listens: it must keep
#           running (retrying) and must not create the socket; then QEMU
#           starts and the full guest/blk.sh runs. Host-side checks of the
#           image (pattern region, e2fsck, the guest's files).
#   boot 2  the same vhostd, after QEMU 1 has exited, reconnects to a second
#           QEMU: guest/blk_readback.sh verifies the data of boot 1.
#           vhostd then exits 0 on SIGTERM.
#   boot 3  the other order: QEMU starts first and waits; a fresh vhostd
#           connects to it; guest/blk_readback.sh again. SIGTERM -> exit 0.
#
# Usage:
#   tests/e2e/test_blk_client.sh --build-dir BUILD --guest-dir DIR
#                                [--timeout SECS] [--keep]
#
#   --build-dir BUILD   CMake build dir containing the vhostd binary
#   --guest-dir DIR     guest image dir; built/refreshed with build-guest.sh
#   --timeout SECS      per-boot guest timeout (default 150)
#   --keep              keep the temp dir (backing file, logs) for debugging
#
# Exit status 0 = PASS, 1 = FAIL.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib-host.sh
. "$SCRIPT_DIR/lib-host.sh"
lh_parse_common_args "$@"
lh_init test_blk_client blk-client
lh_build_guest

DISK_MIB=256
QUEUES=2
SOCK="$TMP/blk.sock"
IMG="$TMP/disk.img"
truncate -s "${DISK_MIB}M" "$IMG"
VHOSTD_CMD=("$VHOSTD" --blk "socket=$SOCK,path=$IMG,queues=$QUEUES,client=on")
# shellcheck disable=SC2054  # commas are part of QEMU option values
QEMU_DEV=(-chardev "socket,id=c0,path=$SOCK,server=on,wait=off"
          -device "vhost-user-blk-pci,chardev=c0,num-queues=$QUEUES")

# wait_no_listener SECS: vhostd runs with nobody listening on $SOCK for SECS
# seconds; it must stay alive and must not create the socket path itself.
wait_no_listener() {
  local i
  for ((i = 0; i < $1 * 10; i++)); do
    if lh_backend_exited; then
      lh_abort "vhostd (client mode) exited while no frontend was listening on $SOCK"
    fi
    sleep 0.1
  done
  if [[ -e $SOCK ]]; then
    fail "vhostd in client mode created $SOCK itself ($(stat -c %F "$SOCK"))"
  else
    log "vhostd pid $BACKEND_PID alive after ${1}s with nobody listening (retrying)"
  fi
}

# --- boot 1: vhostd first, then QEMU ------------------------------------------
log "=== boot 1: vhostd started before QEMU listens; guest test blk"
BLOG="$TMP/backend1.log"
lh_start_backend "${VHOSTD_CMD[@]}"
wait_no_listener 2
lh_run_guest blk "$TMP/guest1.log" "$TIMEOUT" "vtest_queues=$QUEUES vtest_discard=1" "${QEMU_DEV[@]}"
lh_check_backend_alive "during/after guest 1"
[[ ${#FAILURES[@]} -eq 0 ]] || lh_finish
lh_check_blk_image "$IMG"
[[ ${#FAILURES[@]} -eq 0 ]] || lh_finish

# --- boot 2: the same vhostd reconnects to a new QEMU -------------------------
log "=== boot 2: same vhostd, a new QEMU; guest test blk_readback"
rm -f "$SOCK"   # QEMU 1 may leave its socket file behind
wait_no_listener 1
lh_run_guest blk_readback "$TMP/guest2.log" "$TIMEOUT" "vtest_queues=$QUEUES" "${QEMU_DEV[@]}"
lh_check_backend_alive "during/after guest 2"
lh_stop_backend 0
[[ ${#FAILURES[@]} -eq 0 ]] || lh_finish

# --- boot 3: QEMU first, then a fresh vhostd ----------------------------------
log "=== boot 3: QEMU listens first, then a new vhostd connects; guest test blk_readback"
rm -f "$SOCK"
lh_start_guest blk_readback "$TMP/guest3.log" "$TIMEOUT" "vtest_queues=$QUEUES" "${QEMU_DEV[@]}"
for ((i = 0; i < 300; i++)); do
  [[ -S $SOCK ]] && break
  kill -0 "$GUEST_PID" 2>/dev/null || break
  sleep 0.1
done
if [[ ! -S $SOCK ]]; then
  lh_wait_guest
  lh_abort "QEMU did not create the listening socket $SOCK"
fi
sleep 1
kill -0 "$GUEST_PID" 2>/dev/null || log "warning: QEMU exited before vhostd was started"
BLOG="$TMP/backend3.log"
lh_start_backend "${VHOSTD_CMD[@]}"
lh_wait_guest
lh_check_backend_alive "during/after guest 3"
lh_check_blk_image "$IMG"
lh_stop_backend 0

lh_finish
