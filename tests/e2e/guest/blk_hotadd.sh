#!/bin/sh
# Guest side of the hot-add test (busybox sh). The VM boots with no vhostd disk. In each round
# the host adds a device to the running vhostd (vhostctl add) and plugs a vhost-user-blk-pci on
# it into the VM (QMP chardev-add + device_add); the guest waits for the disk, runs fio write +
# crc32c verify on it, and says so; the host unplugs it (device_del) and removes it from
# vhostd; the guest waits until the disk is gone, and says so.
#
#   vtest: hotadd waiting for round N.     host: add and plug
#   vtest: hotadd round N. verified        host: unplug and remove
#   vtest: hotadd round N. gone
set -e
. /tests/lib.sh

ROUNDS=$(vt_param vtest_rounds 20)
DEV=vda

# wait_for COND_CMD SECONDS
wait_for() {
  _n=0
  while ! eval "$1"; do
    _n=$((_n + 1))
    [ $_n -gt $(($2 * 10)) ] && return 1
    sleep 0.1
  done
}

[ ! -b /dev/$DEV ] || vt_fail "/dev/$DEV exists before anything was plugged"
i=1
while [ $i -le "$ROUNDS" ]; do
  vt_step "round $i: waiting for the hot-added disk"
  vt_log "hotadd waiting for round $i."
  wait_for "[ -b /dev/$DEV ]" 90 || vt_fail "round $i: /dev/$DEV did not appear"
  bytes=$(vt_disk_bytes $DEV)
  [ "$bytes" -gt 0 ] || vt_fail "round $i: /dev/$DEV has no capacity"
  vt_fio --name=hot$i --filename=/dev/$DEV --direct=1 --ioengine=libaio --rw=randwrite --bs=16k \
    --iodepth=8 --size=4M --offset=$(( (i % 4) * 4 ))M \
    --verify=crc32c --do_verify=1 --verify_fatal=1
  vt_log "hotadd round $i. verified ($bytes bytes)"
  vt_step "round $i: waiting for the unplug"
  wait_for "[ ! -b /dev/$DEV ]" 90 || vt_fail "round $i: /dev/$DEV was not removed"
  vt_log "hotadd round $i. gone"
  i=$((i + 1))
done
if dmesg | grep -iE 'hung task|blocked for more than|virtio.*(error|broken)'; then
  vt_fail "kernel reported a hang or a broken virtqueue"
fi
vt_pass
