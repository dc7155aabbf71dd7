#!/usr/bin/env bash
# End-to-end test: online resize through the management API under guest I/O. vhostd serves a
# 64 MiB file; while fio runs in the guest, `vhostctl resize disk 128M` grows the file and tells
# QEMU (VHOST_USER_BACKEND_CONFIG_CHANGE_MSG), which tells the guest: /sys/block/vda/size must
# change without a reboot and data past the old end must read back (guest/blk_resize.sh). Then,
# under fio across the 32 MiB mark, `vhostctl resize disk 32M`: the I/O past the new end must
# fail with an I/O error, not hang, and the data before it stays.
# Prometheus metrics are scraped (curl) while the guest's fio runs: promtool accepts them, the
# guest's requests show up and grow between two scrapes, and the size gauge follows the resizes.
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
lh_start_backend "$VHOSTD" --threads 1 --rpc "$RPC" --metrics 127.0.0.1:0 --blk "id=disk,socket=$SOCK,path=$IMG,queues=2"
lh_wait_listen "$SOCK" "$RPC"
METRICS=""
for _ in $(seq 100); do
  METRICS=$(grep -o 'metrics on http://[^ ]*/metrics' "$BLOG" | sed 's/^metrics on //') && [[ -n $METRICS ]] && break
  sleep 0.05
done
# scrape FILE: one scrape, checked by promtool. metric NAME FILE: the sum of NAME{device="disk"}.
scrape() {
  curl -sf --max-time 10 "$METRICS" >"$1" || { fail "scrape of '$METRICS' failed"; return 0; }
  promtool check metrics <"$1" >"$1.lint" 2>&1 || fail "promtool check metrics: $(cat "$1.lint")"
}
metric() {
  awk -v n="$1" '$1 ~ "^"n"\\{" && $1 ~ /device="disk"/ { s += $2 } END { printf "%d\n", s }' "$2"
}

# shellcheck disable=SC2054  # commas are part of QEMU option values
lh_start_guest blk_resize "$TMP/guest.log" "$TIMEOUT" "" \
  -chardev "socket,id=c0,path=$SOCK" -device "vhost-user-blk-pci,chardev=c0,num-queues=2"

size_of() { stat -c %s "$IMG"; }
if lh_wait_guest_line 'resize fio running' 120; then
  scrape "$TMP/m1"
  sleep 2
  scrape "$TMP/m2"
  r1=$(metric vhostd_blk_requests_total "$TMP/m1") r2=$(metric vhostd_blk_requests_total "$TMP/m2")
  log "metrics during guest fio: $r1 then $r2 requests, $(metric vhostd_blk_bytes_total "$TMP/m2") bytes"
  [[ $r2 -gt $r1 && $r1 -gt 0 ]] || fail "the guest's I/O does not show in the metrics ($r1 then $r2 requests)"
  [[ $(metric vhostd_device_frontend_connected "$TMP/m2") == 1 ]] || fail "metrics: the frontend is not connected"
  [[ $(metric vhostd_blk_size_bytes "$TMP/m2") == $((64 << 20)) ]] || fail "metrics: size before the grow"
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
    scrape "$TMP/m3"
    [[ $(metric vhostd_blk_size_bytes "$TMP/m3") == $((32 << 20)) ]] || fail "metrics: size after the shrink"
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
