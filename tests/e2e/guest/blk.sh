#!/bin/sh
# Guest side of the vhost-user-blk end-to-end test (busybox sh).
#
# Expects the device under test as /dev/vda (>= 128 MiB; the host uses
# 256 MiB). Kernel command line knobs:
#   vtest_queues=N    expect N blk-mq hardware queues
#   vtest_discard=1   the device must support discard
#
# Disk layout (S = disk size, everything 1 MiB aligned):
#   [0, 32M)        fio random write + crc32c verify, 2 jobs x 16 MiB
#   [32M, 64M)      fio sequential 128 KiB write + verify (multi-segment)
#   [64M, 72M)      blkdiscard
#   [0, S-2M)       afterwards: ext4 filesystem (mkfs overwrites the above)
#   [S-2M, S-1M)    untouched gap
#   [S-1M, S)       pattern region, checked by the host after poweroff:
#                   the 16 byte string "vhostd-e2e-blk!\n" repeated 65536 times
#
# The ext4 filesystem is left behind with the files below and a MD5SUMS
# manifest in its root directory; the host runs e2fsck on the image and
# compares the files against the manifest.
set -e
. /tests/lib.sh

DEV=vda
MIB=1048576

vt_step "waiting for /dev/$DEV"
vt_wait_dev $DEV || vt_fail "/dev/$DEV did not appear (is the vhost-user-blk device attached?)"
SIZE=$(vt_disk_bytes $DEV)
SIZE_MIB=$((SIZE / MIB))
vt_log "/dev/$DEV: $SIZE bytes ($SIZE_MIB MiB), logical block $(cat /sys/block/$DEV/queue/logical_block_size)," \
  "max_segments $(cat /sys/block/$DEV/queue/max_segments)," \
  "max_hw_sectors_kb $(cat /sys/block/$DEV/queue/max_hw_sectors_kb)," \
  "write_cache '$(cat /sys/block/$DEV/queue/write_cache)'"
[ "$SIZE_MIB" -ge 128 ] || vt_fail "/dev/$DEV is too small ($SIZE_MIB MiB, need >= 128)"
PAT_MIB=$((SIZE_MIB - 1))          # pattern region: last MiB
FS_BLOCKS=$(((SIZE - 2 * MIB) / 4096))

# a. hardware queues ---------------------------------------------------------
vt_step "a. blk-mq hardware queues"
vt_check_queues $DEV
NQ=$(ls /sys/block/$DEV/mq | wc -l)

# b. pattern for the host ------------------------------------------------------
vt_step "b. write pattern to the last MiB (offset $PAT_MIB MiB)"
vt_pattern $MIB >/tmp/pattern
PAT_MD5=$(vt_md5 </tmp/pattern)
vt_run dd if=/tmp/pattern of=/dev/$DEV bs=1M seek=$PAT_MIB count=1 oflag=direct conv=notrunc
sync
got=$(vt_read_md5 /dev/$DEV $PAT_MIB 1)
[ "$got" = "$PAT_MD5" ] || vt_fail "pattern read back right after writing: md5 $got != $PAT_MD5"
vt_log "pattern md5 $PAT_MD5"

# c. fio with verification ---------------------------------------------------
vt_step "c1. fio random write 4k QD8 x 2 jobs (one per CPU) + crc32c verify"
vt_vq_irqs $DEV >/tmp/irq.before
vt_fio --name=randw --filename=/dev/$DEV --direct=1 --ioengine=libaio \
  --rw=randwrite --bs=4k --iodepth=8 --numjobs=2 \
  --offset=0 --offset_increment=16M --size=16M \
  --cpus_allowed=0-1 --cpus_allowed_policy=split \
  --verify=crc32c --do_verify=1 --verify_fatal=1
vt_vq_irqs $DEV >/tmp/irq.after
vt_log "virtqueue interrupts before: $(tr '\n' ' ' </tmp/irq.before)"
vt_log "virtqueue interrupts after:  $(tr '\n' ' ' </tmp/irq.after)"
# With one queue per CPU and one fio job pinned to each CPU, every request
# virtqueue must have completed requests.
if [ "$NQ" -ge 2 ]; then
  used=0
  for q in $(grep '^req\.' /tmp/irq.after | cut -d= -f1); do
    b=$(grep "^$q=" /tmp/irq.before | cut -d= -f2)
    a=$(grep "^$q=" /tmp/irq.after | cut -d= -f2)
    if [ "${a:-0}" -gt "${b:-0}" ]; then used=$((used + 1)); fi
  done
  [ $used -ge 2 ] || vt_fail "fio I/O completed on only $used of $NQ virtqueues"
  vt_log "$used request virtqueues completed I/O"
fi

vt_step "c2. fio sequential write 128k QD4 + crc32c verify (multi-segment), fsync at end"
vt_fio --name=seqw --filename=/dev/$DEV --direct=1 --ioengine=libaio \
  --rw=write --bs=128k --iodepth=4 --offset=32M --size=32M --end_fsync=1 \
  --verify=crc32c --do_verify=1 --verify_fatal=1

vt_step "c3. fio random write with mixed block sizes 4k-256k QD16 + verify"
vt_fio --name=mixbs --filename=/dev/$DEV --direct=1 --ioengine=libaio \
  --rw=randwrite --bsrange=4k-256k --iodepth=16 --offset=32M --size=32M \
  --verify=crc32c --do_verify=1 --verify_fatal=1

# d. discard -----------------------------------------------------------------
vt_step "d. discard"
DMAX=$(cat /sys/block/$DEV/queue/discard_max_bytes)
vt_log "discard_max_bytes=$DMAX discard_granularity=$(cat /sys/block/$DEV/queue/discard_granularity)"
if [ "$DMAX" -gt 0 ]; then
  vt_run blkdiscard -o $((64 * MIB)) -l $((8 * MIB)) /dev/$DEV
  vt_run blkdiscard -o $((72 * MIB)) -l 4096 /dev/$DEV
  # The neighbourhood must be unaffected: the pattern is still intact.
  got=$(vt_read_md5 /dev/$DEV $PAT_MIB 1)
  [ "$got" = "$PAT_MD5" ] || vt_fail "pattern damaged after discard"
elif [ "$(vt_param vtest_discard)" = 1 ]; then
  vt_fail "device does not support discard (discard_max_bytes=0) but vtest_discard=1"
else
  vt_log "discard not supported by the device, skipped"
fi

# e. ext4 --------------------------------------------------------------------
vt_step "e. mkfs.ext4 ($FS_BLOCKS 4k blocks) + file I/O + e2fsck"
vt_run mkfs.ext4 -q -F -b 4096 -L e2etest /dev/$DEV $FS_BLOCKS
vt_run mount -t ext4 /dev/$DEV /mnt
mkdir -p /mnt/dir
vt_run dd if=/dev/urandom of=/mnt/small.bin bs=4096 count=1 2>/dev/null
vt_run dd if=/dev/urandom of=/mnt/a.bin bs=1M count=1 2>/dev/null
vt_run dd if=/dev/urandom of=/mnt/b.bin bs=1M count=8 2>/dev/null
# odd size: 3 MiB + 17 bytes
vt_run dd if=/dev/urandom of=/mnt/dir/c.bin bs=1M count=3 2>/dev/null
head -c 17 /dev/urandom >>/mnt/dir/c.bin
for i in $(seq 1 50); do echo "file $i" >/mnt/dir/f$i.txt; done
(cd /mnt && md5sum small.bin a.bin b.bin dir/c.bin dir/f1.txt dir/f50.txt >MD5SUMS)
cat /mnt/MD5SUMS
vt_run umount /mnt
sync
echo 3 >/proc/sys/vm/drop_caches
vt_run e2fsck -fn /dev/$DEV
vt_run mount -t ext4 /dev/$DEV /mnt
(cd /mnt && md5sum -c MD5SUMS) || vt_fail "file checksums differ after remount"
if fstrim -v /mnt; then :; else vt_log "fstrim failed/unsupported (not required)"; fi
vt_run umount /mnt
sync

# f. pattern intact --------------------------------------------------------------
vt_step "f. re-read pattern region"
echo 3 >/proc/sys/vm/drop_caches
got=$(vt_read_md5 /dev/$DEV $PAT_MIB 1)
[ "$got" = "$PAT_MD5" ] || vt_fail "pattern region changed: md5 $got != $PAT_MD5"

vt_pass
