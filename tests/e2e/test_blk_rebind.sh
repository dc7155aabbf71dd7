#!/usr/bin/env bash
# End-to-end test: guest driver resets under I/O. The guest (guest/blk_rebind.sh)
# unbinds and rebinds virtio_blk three times while fio runs, then runs fio
# verify on both queues. QEMU turns each unbind into a device reset (rings
# stopped with GET_VRING_BASE, SET_STATUS 0) and each bind into a fresh start:
# vhostd must drain in-flight requests before the ring state goes, and serve the
# device again afterwards. vhostd must stay up and exit 0 on SIGTERM.
#
# Usage:
#   tests/e2e/test_blk_rebind.sh --build-dir BUILD --guest-dir DIR [--timeout SECS] [--keep]
#
# Exit status 0 = PASS, 1 = FAIL.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib-host.sh
. "$SCRIPT_DIR/lib-host.sh"
lh_parse_common_args "$@"
lh_init test_blk_rebind blk-rebind
lh_build_guest

ROUNDS=3
IMG="$TMP/disk.img" SOCK="$TMP/blk.sock"
truncate -s 256M "$IMG"
lh_start_backend "$VHOSTD" --threads 1 --log-level debug --blk "socket=$SOCK,path=$IMG,queues=2"
lh_wait_listen "$SOCK"

# shellcheck disable=SC2054  # commas are part of QEMU option values
lh_run_guest blk_rebind "$TMP/guest.log" "$TIMEOUT" "vtest_rounds=$ROUNDS" \
  -chardev "socket,id=c0,path=$SOCK" -device "vhost-user-blk-pci,chardev=c0,num-queues=2"
lh_check_backend_alive "during/after the guest run"

starts=$(grep -c 'vring 0 started' "$BLOG" || true)
stops=$(grep -c 'vring 0 stopped' "$BLOG" || true)
log "vhostd: vring 0 started $starts times, stopped $stops times"
if [[ $starts -lt $((ROUNDS + 1)) ]]; then
  fail "expected at least $((ROUNDS + 1)) ring starts (one per bind), saw $starts"
fi
if grep -qE 'guest error|queue .* stopped until reset' "$BLOG"; then
  fail "vhostd saw a broken ring during the resets"
fi
lh_stop_backend 0
lh_finish
