#!/usr/bin/env bash
# End-to-end test: one vhostd process serves the same socket to two guests
# booted one after the other (QEMU 1 exits when its guest powers off, then
# QEMU 2 connects to the same vhostd).
#
#   boot 1  guest/blk.sh: fio verify, discard, ext4 with files, and the
#           pattern in the last MiB. Host-side checks of the image.
#   boot 2  guest/blk_readback.sh: the pattern and the ext4 files of boot 1
#           read back and verified, then a fio write + verify.
#
# Between and after the boots: vhostd stays alive; once a guest is gone,
# vhostd holds no connection socket and no guest memory mapping any more, and
# its fd count after the second disconnect equals the one after the first,
# which equals the one before any guest connected (no fd leak). Finally
# vhostd must exit 0 on SIGTERM.
#
# Usage:
#   tests/e2e/test_blk_reconnect.sh --build-dir BUILD --guest-dir DIR
#                                   [--timeout SECS] [--keep]
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
lh_init test_blk_reconnect blk-reconnect
lh_build_guest

DISK_MIB=256
QUEUES=2
SOCK="$TMP/blk.sock"
IMG="$TMP/disk.img"
truncate -s "${DISK_MIB}M" "$IMG"
# shellcheck disable=SC2054  # commas are part of QEMU option values
QEMU_DEV=(-chardev "socket,id=c0,path=$SOCK"
          -device "vhost-user-blk-pci,chardev=c0,num-queues=$QUEUES")

lh_start_backend "$VHOSTD" --blk "socket=$SOCK,path=$IMG,queues=$QUEUES"
lh_wait_listen "$SOCK"
LISTEN_SOCKS=$(lh_sock_count "$BACKEND_PID")
lh_fd_snapshot "$BACKEND_PID" "$TMP/fds.0"
log "before any guest: $(wc -l <"$TMP/fds.0") fds ($LISTEN_SOCKS socket(s))"

# after_guest N: checks once guest N has gone; leaves the fd listing in
# $TMP/fds.N.
after_guest() {
  lh_check_backend_alive "during/after guest $1"
  kill -0 "$BACKEND_PID" 2>/dev/null || lh_finish
  lh_wait_disconnect "$LISTEN_SOCKS"
  sleep 0.5   # let the reactor finish tearing the connection down
  lh_fd_snapshot "$BACKEND_PID" "$TMP/fds.$1"
  local maps
  maps=$(lh_memfd_maps "$BACKEND_PID")
  log "after guest $1: $(wc -l <"$TMP/fds.$1") fds, $maps guest memory (memfd) mapping(s)"
  if [[ $maps -ne 0 ]]; then
    fail "guest $1's memory is still mapped in vhostd after it disconnected ($maps memfd mapping(s))"
    grep '/memfd:' "/proc/$BACKEND_PID/maps" | head -n 5 | sed 's/^/  | /' >&2
  fi
}

log "=== boot 1: guest test blk"
lh_run_guest blk "$TMP/guest1.log" "$TIMEOUT" "vtest_queues=$QUEUES vtest_discard=1" "${QEMU_DEV[@]}"
after_guest 1
# Without the data of boot 1 boot 2 is pointless; other problems (e.g. a
# mapping still held) are recorded and the test goes on.
[[ $GUEST_OK == 1 ]] || lh_finish
nfail=${#FAILURES[@]}
lh_check_blk_image "$IMG"
[[ ${#FAILURES[@]} -eq $nfail ]] || lh_finish

log "=== boot 2: same vhostd, a new QEMU; guest test blk_readback"
lh_run_guest blk_readback "$TMP/guest2.log" "$TIMEOUT" "vtest_queues=$QUEUES" "${QEMU_DEV[@]}"
after_guest 2

# compare_fds A B WHAT: fd counts in $TMP/fds.A and $TMP/fds.B must be equal.
compare_fds() {
  local a b
  a=$(wc -l <"$TMP/fds.$1") b=$(wc -l <"$TMP/fds.$2")
  if [[ $a -ne $b ]]; then
    fail "fd leak: vhostd has $a fds $3 but $b after disconnect $2"
    log "fd listing ($1 vs $2):"
    diff "$TMP/fds.$1" "$TMP/fds.$2" | sed 's/^/  | /' >&2 || true
  else
    log "fd count $3 and after disconnect $2: $a (no leak)"
  fi
}
compare_fds 1 2 "after disconnect 1"
compare_fds 0 1 "before any guest"
[[ $GUEST_OK == 1 ]] && lh_check_blk_image "$IMG"
lh_stop_backend 0
lh_finish
