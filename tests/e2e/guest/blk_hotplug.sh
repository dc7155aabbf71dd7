#!/bin/sh
# Guest side of the memory hotplug test (busybox sh): fio write + crc32c verify
# runs in a loop on /dev/vda while the host plugs DIMMs into the VM (QMP
# object-add + device_add pc-dimm) and unplugs one; the frontend tells vhostd
# about each change (ADD_MEM_REG / REM_MEM_REG) while its rings run. New memory
# is onlined movable as it appears, so buffers can land in it and it can go
# away again.
#
# The host waits for "vtest: hotplug I/O running" before it starts plugging.
set -e
. /tests/lib.sh

DEV=vda
SECS=$(vt_param vtest_secs 60)

online_new_memory() {
  for s in /sys/devices/system/memory/memory*/state; do
    if [ "$(cat "$s")" = offline ]; then echo online_movable >"$s" 2>/dev/null || true; fi
  done
}

vt_step "waiting for /dev/$DEV"
vt_wait_dev $DEV || vt_fail "/dev/$DEV did not appear"
MEM0=$(awk '/MemTotal/ {print $2}' /proc/meminfo)
vt_log "MemTotal at start: $MEM0 kB"
vt_log "hotplug I/O running"
START=$(awk '{ printf "%d\n", $1 }' /proc/uptime)
n=0
while :; do
  now=$(awk '{ printf "%d\n", $1 }' /proc/uptime)
  [ $((now - START)) -ge "$SECS" ] && break
  online_new_memory
  n=$((n + 1))
  vt_fio --name=hp$n --filename=/dev/$DEV --direct=1 --ioengine=libaio --rw=randwrite --bs=16k \
    --iodepth=16 --numjobs=2 --offset=0 --offset_increment=16M --size=8M \
    --cpus_allowed=0-1 --cpus_allowed_policy=split \
    --verify=crc32c --do_verify=1 --verify_fatal=1
done
MEM1=$(awk '/MemTotal/ {print $2}' /proc/meminfo)
vt_log "MemTotal at the end: $MEM1 kB after $n fio verify runs"
if dmesg | grep -iE 'hung task|blocked for more than|virtio.*(error|broken)'; then
  vt_fail "kernel reported a hang or a broken virtqueue"
fi
vt_pass
