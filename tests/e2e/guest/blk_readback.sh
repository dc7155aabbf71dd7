#!/bin/sh
# Guest side of the reconnect / client-mode tests (busybox sh): the second
# boot on a disk that a previous guest prepared with blk.sh. Verifies, on
# /dev/vda, what the first guest left behind:
#   - the pattern region (last MiB) holds the e2e pattern,
#   - the ext4 filesystem is clean and its files match their MD5SUMS,
# and that the device still takes writes: fio write + verify in the untouched
# gap [S-2M, S-1M) between the filesystem and the pattern region.
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
[ "$SIZE_MIB" -ge 128 ] || vt_fail "/dev/$DEV is too small ($SIZE_MIB MiB, need >= 128)"

vt_step "blk-mq hardware queues"
vt_check_queues $DEV

vt_step "pattern region written by the previous guest (offset $((SIZE_MIB - 1)) MiB)"
want=$(vt_pattern $MIB | vt_md5)
got=$(vt_read_md5 /dev/$DEV $((SIZE_MIB - 1)) 1)
if [ "$got" != "$want" ]; then
  vt_log "first bytes of the region:"
  dd if=/dev/$DEV bs=1M skip=$((SIZE_MIB - 1)) count=1 iflag=direct 2>/dev/null | head -c 32 | od -c | head -n 2
  vt_fail "pattern region md5 $got, expected $want (data of the previous guest lost?)"
fi
vt_log "pattern md5 $got OK"

vt_step "ext4 left by the previous guest: e2fsck + file checksums"
vt_run e2fsck -fn /dev/$DEV
vt_run mount -t ext4 -o ro /dev/$DEV /mnt
[ -s /mnt/MD5SUMS ] || vt_fail "/MD5SUMS missing from the previous guest's filesystem"
(cd /mnt && md5sum -c MD5SUMS) || vt_fail "files of the previous guest do not match their MD5SUMS"
vt_run umount /mnt

vt_step "writes still work: fio write + verify in the gap at $((SIZE_MIB - 2)) MiB"
vt_fio --name=gapw --filename=/dev/$DEV --direct=1 --ioengine=libaio \
  --rw=randwrite --bs=4k --iodepth=8 --offset=$(((SIZE_MIB - 2) * MIB)) --size=1M \
  --verify=crc32c --do_verify=1 --verify_fatal=1

vt_step "pattern region still intact"
got=$(vt_read_md5 /dev/$DEV $((SIZE_MIB - 1)) 1)
[ "$got" = "$want" ] || vt_fail "pattern region changed by the gap writes: md5 $got"

vt_pass
