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
# With --rbd the disk is a 64 MiB RBD image on a one-node Ceph cluster (tests/ceph/cluster.sh,
# 127.0.0.1 only) and the resizes are made by another client, `rbd resize`: vhostd must notice
# them (librbd's update watch) and tell the guest the same way, with nobody calling its API.
#
# Usage:
#   tests/e2e/test_blk_resize.sh --build-dir BUILD --guest-dir DIR [--rbd] [--timeout SECS] [--keep]
#
# Exit status 0 = PASS, 1 = FAIL.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib-host.sh
. "$SCRIPT_DIR/lib-host.sh"
TIMEOUT=${TIMEOUT:-300}
RBD=0 args=()
for a in "$@"; do if [[ $a == --rbd ]]; then RBD=1; else args+=("$a"); fi; done
lh_parse_common_args "${args[@]}"
if [[ $RBD == 1 ]]; then lh_init test_blk_resize/rbd blk-resize-rbd; else lh_init test_blk_resize blk-resize; fi
lh_build_guest

IMG="$TMP/disk.img" SOCK="$TMP/blk.sock" RPC="$TMP/vhostd.sock"
if [[ $RBD == 1 ]]; then
  CEPH_DIR="$TMP/ceph"
  lh_track_pidfile "$CEPH_DIR/run/osd.0.pid"
  lh_track_pidfile "$CEPH_DIR/run/mon.a.pid"
  CEPH_CONF=$("$SCRIPT_DIR/../ceph/cluster.sh" start "$CEPH_DIR" rbd 2>"$TMP/ceph-start.log") ||
    { cat "$TMP/ceph-start.log" >&2; lh_abort "the Ceph cluster did not start"; }
  timeout 60 rbd -c "$CEPH_CONF" create --size 64M rbd/disk || lh_abort "rbd create failed"
  target="backend=rbd,pool=rbd,image=disk,conf=$CEPH_CONF"
else
  truncate -s 64M "$IMG"
  target="path=$IMG"
fi
lh_start_backend "$VHOSTD" --threads 1 --rpc "$RPC" --metrics 127.0.0.1:0 --blk "id=disk,socket=$SOCK,$target,queues=2"
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

size_of() {
  if [[ $RBD == 1 ]]; then
    timeout 60 rbd -c "$CEPH_CONF" info --format json rbd/disk | python3 -c 'import json,sys; print(json.load(sys.stdin)["size"])'
  else
    stat -c %s "$IMG"
  fi
}
# resize SIZE WHAT: vhostctl (a file) or another client (rbd resize), then the guest must have
# been told: vhostctl's answer, or vhostd's log line for a change made from outside.
resize() {
  local out n
  if [[ $RBD == 1 ]]; then
    n=$(grep -c 'changed from outside' "$BLOG" || true)
    timeout 60 rbd -c "$CEPH_CONF" resize --no-progress --allow-shrink --size "$1" rbd/disk || { fail "rbd resize to $1 failed"; return 0; }
    for _ in $(seq 200); do
      [[ $(grep -c 'changed from outside' "$BLOG" || true) -gt $n ]] && break
      sleep 0.05
    done
    out=$(grep 'changed from outside' "$BLOG" | tail -1)
    log "$2 (rbd resize): $out"
    [[ $out == *'the guest was told'* && $(grep -c 'changed from outside' "$BLOG") -gt $n ]] ||
      fail "vhostd did not tell the guest of the $2 made by rbd resize"
  else
    out=$(lh_vhostctl --json resize disk "$1") || { fail "vhostctl resize disk $1 failed"; return 0; }
    log "$2: $out"
    [[ $out == *'"guest_notified":true'* ]] || fail "the $2 did not reach the guest: $out"
  fi
}
if lh_wait_guest_line 'resize fio running' 120; then
  scrape "$TMP/m1"
  sleep 2
  scrape "$TMP/m2"
  r1=$(metric vhostd_blk_requests_total "$TMP/m1") r2=$(metric vhostd_blk_requests_total "$TMP/m2")
  log "metrics during guest fio: $r1 then $r2 requests, $(metric vhostd_blk_bytes_total "$TMP/m2") bytes"
  [[ $r2 -gt $r1 && $r1 -gt 0 ]] || fail "the guest's I/O does not show in the metrics ($r1 then $r2 requests)"
  [[ $(metric vhostd_device_frontend_connected "$TMP/m2") == 1 ]] || fail "metrics: the frontend is not connected"
  [[ $(metric vhostd_blk_size_bytes "$TMP/m2") == $((64 << 20)) ]] || fail "metrics: size before the grow"
  resize 128M grow
  [[ $(size_of) == $((128 << 20)) ]] || fail "the disk is $(size_of) bytes after the grow"
  if lh_wait_guest_line 'resize shrink fio starting' 120; then
    sleep 3
    resize 32M shrink
    [[ $(size_of) == $((32 << 20)) ]] || fail "the disk is $(size_of) bytes after the shrink"
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
if [[ $RBD == 1 ]]; then "$SCRIPT_DIR/../ceph/cluster.sh" stop "$CEPH_DIR" || true; fi
lh_finish
