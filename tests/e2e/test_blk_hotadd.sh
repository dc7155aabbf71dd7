#!/usr/bin/env bash
# End-to-end test: devices come and go while vhostd and the VM keep running. vhostd starts with
# only its management socket (--rpc, no devices); the guest boots with no vhostd disk. Each
# round: `vhostctl add blk` adds a device, QMP chardev-add + device_add plug a
# vhost-user-blk-pci on it into a PCIe root port, the guest finds the disk and runs fio write +
# verify on it; then QMP device_del unplugs it, `vhostctl remove` drains and removes it: its
# socket must be gone and vhostd's open fds back to where they were before the first add.
# Twenty rounds in one guest: fds, threads and memory must not grow.
#
# Usage:
#   tests/e2e/test_blk_hotadd.sh --build-dir BUILD --guest-dir DIR [--timeout SECS] [--keep]
# ROUNDS=N in the environment changes the number of rounds (default 20).
#
# Exit status 0 = PASS, 1 = FAIL.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib-host.sh
. "$SCRIPT_DIR/lib-host.sh"
TIMEOUT=${TIMEOUT:-600}
lh_parse_common_args "$@"
lh_init test_blk_hotadd blk-hotadd
lh_build_guest
ROUNDS=${ROUNDS:-20}

IMG="$TMP/disk.img" SOCK="$TMP/hot.sock" QMP="$TMP/qmp.sock" RPC="$TMP/rpc/vhostd.sock"
truncate -s 64M "$IMG"
lh_start_backend "$VHOSTD" --threads 1 --rpc "$RPC"
lh_wait_listen "$RPC"
[[ $(stat -c %a "$RPC") == 600 ]] || fail "the management socket has mode $(stat -c %a "$RPC"), expected 600"
[[ $(lh_vhostctl --json list) == *'"devices":[]'* ]] || fail "vhostd started with devices: $(lh_vhostctl --json list)"
fd0=$(lh_fd_count "$BACKEND_PID")
thr0=$(lh_thread_count "$BACKEND_PID")
log "vhostd with no devices: $fd0 fds, $thr0 threads, $(lh_rss_kb "$BACKEND_PID") KiB RSS"

# shellcheck disable=SC2054  # commas are part of QEMU option values
lh_start_guest blk_hotadd "$TMP/guest.log" "$TIMEOUT" "vtest_rounds=$ROUNDS" \
  -qmp "unix:$QMP,server=on,wait=off" -device pcie-root-port,id=rp1,bus=pcie.0,chassis=1,slot=1

qmp() { python3 "$SCRIPT_DIR/qmp.py" "$QMP" "$@" >>"$TMP/qmp.log" 2>&1; }
rss_at=()
for ((i = 1; i <= ROUNDS; i++)); do
  lh_wait_guest_line "hotadd waiting for round $i\\." 120 || { fail "round $i: the guest is not waiting"; break; }
  id=$(lh_vhostctl add blk "socket=$SOCK,path=$IMG,queues=2" --id "hot$i") || { fail "round $i: vhostctl add failed"; break; }
  [[ $id == "hot$i" ]] || fail "round $i: vhostctl add printed '$id'"
  [[ -S $SOCK ]] || fail "round $i: no socket after the add"
  qmp "chardev-add {\"id\": \"hc$i\", \"backend\": {\"type\": \"socket\", \"data\": {\"addr\": {\"type\": \"unix\", \"data\": {\"path\": \"$SOCK\"}}, \"server\": false}}}" \
      "device_add {\"driver\": \"vhost-user-blk-pci\", \"id\": \"hd$i\", \"chardev\": \"hc$i\", \"bus\": \"rp1\", \"num-queues\": 2}" \
    || { fail "round $i: QMP plug failed"; break; }
  lh_wait_guest_line "hotadd round $i\\. verified" 120 || { fail "round $i: the guest did not verify the disk"; break; }
  state=$(lh_vhostctl --json list | python3 -c 'import json,sys; d=json.load(sys.stdin)["devices"]; print(d[0]["state"], (d[0]["frontend"] or {}).get("pid"))')
  qpid=$(pgrep -f "^qemu-system-x86_64 .*$QMP" | head -n1)
  [[ $state == "running $qpid" ]] || fail "round $i: device_list says '$state', QEMU is pid $qpid"
  qmp "device_del {\"id\": \"hd$i\"}" || { fail "round $i: QMP device_del failed"; break; }
  lh_wait_guest_line "hotadd round $i\\. gone" 120 || { fail "round $i: the guest did not release the disk"; break; }
  # The chardev goes once QEMU has finalized the device (after the guest ejected it).
  for ((t = 0; t < 100; t++)); do qmp "chardev-remove {\"id\": \"hc$i\"}" && break; sleep 0.2; done
  lh_vhostctl remove "hot$i" >/dev/null || fail "round $i: vhostctl remove failed"
  [[ ! -e $SOCK ]] || fail "round $i: the socket is still there after the remove"
  for ((t = 0; t < 50; t++)); do [[ $(lh_fd_count "$BACKEND_PID") == "$fd0" ]] && break; sleep 0.1; done
  fds=$(lh_fd_count "$BACKEND_PID")
  [[ $fds == "$fd0" ]] || { fail "round $i: vhostd has $fds fds after the remove, $fd0 before the first add"; ls -l "/proc/$BACKEND_PID/fd" >&2; }
  thr=$(lh_thread_count "$BACKEND_PID")
  [[ $thr == "$thr0" ]] || fail "round $i: vhostd has $thr threads, $thr0 at the start"
  rss_at[i]=$(lh_rss_kb "$BACKEND_PID")
  log "round $i: added, verified by the guest, removed; $fds fds, $thr threads, ${rss_at[i]} KiB RSS"
done
lh_wait_guest
lh_check_backend_alive "after the rounds"
if [[ ${#FAILURES[@]} == 0 && $ROUNDS -ge 6 ]]; then
  # Memory: what the later rounds hold beyond round 3 (allocator warm-up) must stay small.
  growth=$(( rss_at[ROUNDS] - rss_at[3] ))
  log "RSS round 3: ${rss_at[3]} KiB, round $ROUNDS: ${rss_at[ROUNDS]} KiB (growth $growth KiB)"
  [[ $growth -lt 4096 ]] || fail "vhostd's RSS grew by $growth KiB over rounds 3..$ROUNDS"
fi
grep -q 'guest error\|queue .* stopped until reset' "$BLOG" && fail "vhostd saw a broken ring"
lh_stop_backend 0
lh_finish
