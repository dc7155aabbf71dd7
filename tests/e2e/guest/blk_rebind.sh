#!/bin/sh
# Guest side of the driver-reset test (busybox sh): the virtio-blk driver is
# unbound and bound again while I/O is in flight, three times; then the disk
# must work normally (fio write + crc32c verify on both queues).
#
# Unbinding resets the device (the frontend stops vhostd's rings with
# GET_VRING_BASE / SET_STATUS 0); the I/O running at that moment ends with
# errors in the guest (its disk went away), which is expected. What must not
# happen: a hang, a wedged device after rebind, or data corruption later.
set -e
. /tests/lib.sh

DEV=vda
ROUNDS=$(vt_param vtest_rounds 3)

vt_step "waiting for /dev/$DEV"
vt_wait_dev $DEV || vt_fail "/dev/$DEV did not appear"
VDEV=$(basename "$(readlink /sys/block/$DEV/device)")   # e.g. virtio0
DRV=/sys/bus/virtio/drivers/virtio_blk
[ -e "$DRV/$VDEV" ] || vt_fail "$VDEV is not bound to virtio_blk"
vt_log "device $VDEV"

r=1
while [ $r -le "$ROUNDS" ]; do
  vt_step "round $r: unbind $VDEV while fio runs"
  fio --name=bg --filename=/dev/$DEV --direct=1 --ioengine=libaio --rw=randrw --bs=4k \
    --iodepth=32 --numjobs=2 --size=32M --time_based --runtime=60 --cpus_allowed=0-1 \
    --cpus_allowed_policy=split >/tmp/bg.log 2>&1 &
  BG=$!
  sleep 3
  kill -0 $BG 2>/dev/null || { cat /tmp/bg.log; vt_fail "background fio ended before the unbind"; }
  vt_log "unbinding with I/O in flight (inflight: $(cat /sys/block/$DEV/inflight | tr -s ' '))"
  echo "$VDEV" >"$DRV/unbind"
  [ ! -e "/sys/block/$DEV" ] || vt_fail "$DEV still present after unbind"
  # fio sees its disk vanish: it must end (with errors), not hang.
  i=0
  while kill -0 $BG 2>/dev/null; do
    i=$((i + 1))
    [ $i -gt 300 ] && vt_fail "fio still running 30 s after the unbind (hung I/O?)"
    sleep 0.1
  done
  wait $BG || true
  vt_step "round $r: bind $VDEV again"
  echo "$VDEV" >"$DRV/bind"
  vt_wait_dev $DEV || vt_fail "/dev/$DEV did not come back after bind"
  vt_run dd if=/dev/$DEV of=/dev/null bs=1M count=4 iflag=direct
  r=$((r + 1))
done

vt_step "after $ROUNDS resets: fio random write + crc32c verify on both queues"
vt_vq_irqs $DEV >/tmp/irq.before
vt_fio --name=verify --filename=/dev/$DEV --direct=1 --ioengine=libaio --rw=randwrite --bs=4k \
  --iodepth=16 --numjobs=2 --offset=0 --offset_increment=16M --size=16M \
  --cpus_allowed=0-1 --cpus_allowed_policy=split \
  --verify=crc32c --do_verify=1 --verify_fatal=1
vt_vq_irqs $DEV >/tmp/irq.after
vt_log "interrupts before: $(tr '\n' ' ' </tmp/irq.before) after: $(tr '\n' ' ' </tmp/irq.after)"
if dmesg | grep -iE 'hung task|blocked for more than|virtio.*(error|broken)'; then
  vt_fail "kernel reported a hang or a broken virtqueue"
fi
vt_pass
