#!/usr/bin/env bash
# End-to-end test: guest memory hotplug while I/O runs. The guest
# (guest/blk_hotplug.sh) runs fio write + crc32c verify in a loop; the host
# plugs two 256 MiB DIMMs into the VM and unplugs one of them again through
# QMP. QEMU tells vhostd about every change with ADD_MEM_REG / REM_MEM_REG
# while its rings run; vhostd must drain in-flight requests before it switches
# memory tables (no io_uring operation may point at unmapped memory), keep
# serving, and exit 0 on SIGTERM.
#
# Usage:
#   tests/e2e/test_blk_hotplug.sh --build-dir BUILD --guest-dir DIR [--timeout SECS] [--keep]
#
# Exit status 0 = PASS, 1 = FAIL.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib-host.sh
. "$SCRIPT_DIR/lib-host.sh"
lh_parse_common_args "$@"
lh_init test_blk_hotplug blk-hotplug
lh_build_guest

IMG="$TMP/disk.img" SOCK="$TMP/blk.sock" QMP="$TMP/qmp.sock"
truncate -s 256M "$IMG"
lh_start_backend "$VHOSTD" --threads 1 --blk "socket=$SOCK,path=$IMG,queues=2"
lh_wait_listen "$SOCK"

export VTEST_QEMU_MEM="512M,slots=4,maxmem=2G"
# shellcheck disable=SC2054  # commas are part of QEMU option values
lh_start_guest blk_hotplug "$TMP/guest.log" "$TIMEOUT" "vtest_secs=50" \
  -qmp "unix:$QMP,server=on,wait=off" \
  -chardev "socket,id=c0,path=$SOCK" -device "vhost-user-blk-pci,chardev=c0,num-queues=2"

for ((i = 0; i < 1200; i++)); do
  grep -q 'hotplug I/O running' "$TMP/guest.log" 2>/dev/null && break
  kill -0 "$GUEST_PID" 2>/dev/null || break
  sleep 0.1
done
qmp() { python3 "$SCRIPT_DIR/qmp.py" "$QMP" "$@" >&2; }
if grep -q 'hotplug I/O running' "$TMP/guest.log"; then
  sleep 3
  log "plugging dimm1 (256 MiB) while the guest's fio runs"
  qmp 'object-add {"qom-type": "memory-backend-memfd", "id": "hp1", "size": 268435456, "share": true}' \
      'device_add {"driver": "pc-dimm", "id": "dimm1", "memdev": "hp1"}' || fail "QMP: plugging dimm1 failed"
  sleep 6
  log "plugging dimm2 (256 MiB)"
  qmp 'object-add {"qom-type": "memory-backend-memfd", "id": "hp2", "size": 268435456, "share": true}' \
      'device_add {"driver": "pc-dimm", "id": "dimm2", "memdev": "hp2"}' || fail "QMP: plugging dimm2 failed"
  sleep 8
  log "unplugging dimm2"
  qmp 'device_del {"id": "dimm2"}' || fail "QMP: device_del dimm2 failed"
else
  fail "the guest never started its I/O loop"
fi
lh_wait_guest
lh_check_backend_alive "during/after the guest run"

added=$(grep -c 'added memory region' "$BLOG" || true)
removed=$(grep -c 'removed memory region' "$BLOG" || true)
log "vhostd: $added memory regions added, $removed removed while the guest ran"
[[ $added -ge 2 ]] || fail "vhostd saw $added ADD_MEM_REG (expected 2: one per DIMM)"
# Unplug needs the guest to give the memory back (it is onlined movable); report it either way.
[[ $removed -ge 1 ]] || log "note: the guest did not release dimm2 in time (no REM_MEM_REG); plug path still tested"
if grep -qE 'guest error|queue .* stopped until reset' "$BLOG"; then
  fail "vhostd saw a broken ring while memory changed"
fi
lh_stop_backend 0
lh_finish
