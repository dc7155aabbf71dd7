#!/usr/bin/env bash
# End-to-end test: online resize through the management API under guest I/O. vhostd serves a
# 64 MiB file; while fio runs in the guest, `vhostctl resize disk 128M` grows the file and tells
# QEMU (VHOST_USER_BACKEND_CONFIG_CHANGE_MSG), which tells the guest: /sys/block/vda/size must
# change without a reboot and data past the old end must read back (guest/blk_resize.sh). Then,
# under fio across the 32 MiB mark, `vhostctl resize disk 32M`: the I/O past the new end must
# fail with an I/O error, not hang, and the data before it stays.
#
# Usage:
#   tests/e2e/test_blk_resize.sh --build-dir BUILD --guest-dir DIR [--timeout SECS] [--keep]
#
# Exit status 0 = PASS, 1 = FAIL.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib-host.sh
. "$SCRIPT_DIR/lib-host.sh"
TIMEOUT=${TIMEOUT:-300}
lh_parse_common_args "$@"
lh_init test_blk_resize blk-resize
lh_build_guest

IMG="$TMP/disk.img" SOCK="$TMP/blk.sock" RPC="$TMP/vhostd.sock"
truncate -s 64M "$IMG"
lh_start_backend "$VHOSTD" --threads 1 --rpc "$RPC" --blk "id=disk,socket=$SOCK,path=$IMG,queues=2"
lh_wait_listen "$SOCK" "$RPC"

# shellcheck disable=SC2054  # commas are part of QEMU option values
lh_start_guest blk_resize "$TMP/guest.log" "$TIMEOUT" "" \
  -chardev "socket,id=c0,path=$SOCK" -device "vhost-user-blk-pci,chardev=c0,num-queues=2"

size_of() { stat -c %s "$IMG"; }
if lh_wait_guest_line 'resize fio running' 120; then
  sleep 2
  out=$(lh_vhostctl --json resize disk 128M) || fail "vhostctl resize disk 128M failed"
  log "grow: $out"
  [[ $out == *'"guest_notified":true'* ]] || fail "the grow did not reach the guest: $out"
  [[ $(size_of) == $((128 << 20)) ]] || fail "the file is $(size_of) bytes after the grow"
  if lh_wait_guest_line 'resize shrink fio starting' 120; then
    sleep 3
    out=$(lh_vhostctl --json resize disk 32M) || fail "vhostctl resize disk 32M failed"
    log "shrink: $out"
    [[ $out == *'"guest_notified":true'* ]] || fail "the shrink did not reach the guest: $out"
    [[ $(size_of) == $((32 << 20)) ]] || fail "the file is $(size_of) bytes after the shrink"
  else
    fail "the guest never started the shrink phase"
  fi
else
  fail "the guest never started fio"
fi
lh_wait_guest
lh_check_backend_alive "after the resizes"
size=$(lh_vhostctl --json list | python3 -c 'import json,sys; print(json.load(sys.stdin)["devices"][0]["size"])')
[[ $size == $((32 << 20)) ]] || fail "device_list says size $size"
grep -q 'guest error\|queue .* stopped until reset' "$BLOG" && fail "vhostd saw a broken ring"
lh_stop_backend 0
lh_finish
