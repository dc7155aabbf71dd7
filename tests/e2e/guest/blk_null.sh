#!/bin/sh
# Guest side of the vhost-user-blk test against a null backend (reads return
# zeroes, writes are discarded). Expects the device as /dev/vda (>= 8 MiB).
# Kernel command line knobs: vtest_queues=N (expected hardware queues).
set -e
. /tests/lib.sh

DEV=vda
MIB=1048576

vt_step "waiting for /dev/$DEV"
vt_wait_dev $DEV || vt_fail "/dev/$DEV did not appear (is the vhost-user-blk device attached?)"
SIZE=$(vt_disk_bytes $DEV)
SIZE_MIB=$((SIZE / MIB))
vt_log "/dev/$DEV: $SIZE bytes ($SIZE_MIB MiB)"
[ "$SIZE_MIB" -ge 8 ] || vt_fail "/dev/$DEV is too small ($SIZE_MIB MiB)"

vt_step "blk-mq hardware queues"
vt_check_queues $DEV

ZERO_MD5=$(head -c $MIB /dev/zero | vt_md5)

check_zero() {  # check_zero OFFSET_MIB
  got=$(vt_read_md5 /dev/$DEV "$1" 1)
  [ "$got" = "$ZERO_MD5" ] || vt_fail "1 MiB at offset $1 MiB is not all zero (md5 $got)"
  vt_log "offset $1 MiB reads as zeroes"
}

vt_step "read 1 MiB at several offsets with O_DIRECT: must be zero"
for off in 0 1 $((SIZE_MIB / 2)) $((SIZE_MIB - 1)); do check_zero $off; done

vt_step "writes succeed (and are discarded)"
vt_run dd if=/dev/urandom of=/tmp/rand bs=1M count=1 2>/dev/null
vt_run dd if=/tmp/rand of=/dev/$DEV bs=1M seek=0 count=1 oflag=direct conv=notrunc
vt_run dd if=/tmp/rand of=/dev/$DEV bs=4k seek=$((SIZE / 4096 - 1)) count=1 oflag=direct conv=notrunc
vt_fio --name=nullw --filename=/dev/$DEV --direct=1 --ioengine=libaio \
  --rw=randwrite --bs=4k --iodepth=8 --size=8M
sync
check_zero 0      # writes must not have stuck
check_zero $((SIZE_MIB - 1))

vt_step "fio random read 4k QD8 x 2 jobs for 5 s"
vt_fio --name=nullr --filename=/dev/$DEV --direct=1 --ioengine=libaio \
  --rw=randread --bs=4k --iodepth=8 --numjobs=2 \
  --cpus_allowed=0-1 --cpus_allowed_policy=split \
  --time_based=1 --runtime=5
vt_log "virtqueue interrupts: $(vt_vq_irqs $DEV | tr '\n' ' ')"

vt_pass
