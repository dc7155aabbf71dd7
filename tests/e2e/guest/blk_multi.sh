#!/bin/sh
# Guest side of the multi-device test (busybox sh): three vhost-user-blk
# devices served by one vhostd process. The disks are told apart by their
# virtio-blk serial (/sys/block/vdX/serial) and size, not by probe order:
#   rw    serial "rw-disk": writable file disk, 512-byte blocks
#   ro    serial "ro-disk": read-only file disk, 4096-byte logical blocks,
#         pre-filled by the host with random data of known md5
#   null  the remaining one: null backend, reads return zeroes
# Kernel command line knobs (all required):
#   vtest_rw_queues=N vtest_ro_queues=N vtest_null_queues=N  hardware queues
#   vtest_ro_mib=N vtest_null_mib=N    sizes of the ro and null disks
#   vtest_ro_md5=HEX                   md5 of the whole ro disk
# The rw disk gets the e2e pattern in its last MiB (checked by the host).
set -e
. /tests/lib.sh

MIB=1048576

need() { _v=$(vt_param "$1"); [ -n "$_v" ] || vt_fail "missing kernel parameter $1"; echo "$_v"; }
RW_Q=$(need vtest_rw_queues); RO_Q=$(need vtest_ro_queues); NULL_Q=$(need vtest_null_queues)
RO_MIB=$(need vtest_ro_mib); NULL_MIB=$(need vtest_null_mib); RO_MD5=$(need vtest_ro_md5)

vt_step "waiting for three virtio-blk disks"
for d in vda vdb vdc; do
  vt_wait_dev $d || vt_fail "/dev/$d did not appear (expected 3 vhost-user-blk disks)"
done
n=$(ls -d /sys/block/vd* | wc -l)
[ "$n" -eq 3 ] || vt_fail "expected 3 virtio-blk disks, found $n: $(ls /sys/block)"

# serial DEV: the disk's virtio-blk serial ("" if the device has none).
serial() { cat "/sys/block/$1/serial" 2>/dev/null || true; }
# lbs DEV: logical block size.
lbs() { cat "/sys/block/$1/queue/logical_block_size"; }
# nq DEV: number of blk-mq hardware queues.
nq() { ls "/sys/block/$1/mq" | wc -l; }

RW="" RO="" NULLD=""
for d in vda vdb vdc; do
  s=$(serial $d)
  vt_log "$d: serial '$s', $(vt_disk_bytes $d) bytes, ro=$(cat /sys/block/$d/ro)," \
    "logical_block_size=$(lbs $d), physical_block_size=$(cat /sys/block/$d/queue/physical_block_size)," \
    "$(nq $d) queue(s)"
  case "$s" in
    rw-disk) [ -z "$RW" ] || vt_fail "two disks with serial rw-disk"; RW=$d ;;
    ro-disk) [ -z "$RO" ] || vt_fail "two disks with serial ro-disk"; RO=$d ;;
    *) [ -z "$NULLD" ] || vt_fail "two disks without a known serial ($NULLD, $d)"; NULLD=$d ;;
  esac
done
[ -n "$RW" ] || vt_fail "no disk has serial 'rw-disk'"
[ -n "$RO" ] || vt_fail "no disk has serial 'ro-disk'"
[ -n "$NULLD" ] || vt_fail "no null disk found"
vt_log "rw=$RW ro=$RO null=$NULLD"

# --- read-only 4096-byte-block disk -------------------------------------------
vt_step "ro disk $RO: attributes"
[ "$(cat /sys/block/$RO/ro)" = 1 ] || vt_fail "$RO: /sys/block/$RO/ro is $(cat /sys/block/$RO/ro), expected 1"
[ "$(lbs $RO)" = 4096 ] || vt_fail "$RO: logical_block_size $(lbs $RO), expected 4096"
[ "$(vt_disk_bytes $RO)" = $((RO_MIB * MIB)) ] || vt_fail "$RO: size $(vt_disk_bytes $RO), expected $((RO_MIB * MIB))"
[ "$(nq $RO)" = "$RO_Q" ] || vt_fail "$RO: $(nq $RO) hardware queues, expected $RO_Q"

vt_step "ro disk $RO: content matches the host's image"
got=$(vt_read_md5 /dev/$RO 0 "$RO_MIB")
[ "$got" = "$RO_MD5" ] || vt_fail "$RO: md5 of the whole disk $got, expected $RO_MD5"
vt_log "$RO: whole-disk md5 $got OK"
# The same region read with 4 KiB requests, and one single 4 KiB block at an
# odd block offset, must match the 1 MiB reads.
a=$(dd if=/dev/$RO bs=4k skip=$((5 * 256)) count=256 iflag=direct 2>/dev/null | vt_md5)
b=$(vt_read_md5 /dev/$RO 5 1)
[ "$a" = "$b" ] || vt_fail "$RO: 4 KiB reads of MiB 5 ($a) differ from a 1 MiB read ($b)"
a=$(dd if=/dev/$RO bs=4k skip=4099 count=1 iflag=direct 2>/dev/null | vt_md5)
b=$(dd if=/dev/$RO bs=1M skip=16 count=1 iflag=direct 2>/dev/null | tail -c +$((3 * 4096 + 1)) | head -c 4096 | vt_md5)
[ "$a" = "$b" ] || vt_fail "$RO: 4 KiB block 4099 reads differently alone ($a) and within MiB 16 ($b)"

vt_step "ro disk $RO: writes must fail"
head -c 4096 /dev/urandom >/tmp/blk4k
if dd if=/tmp/blk4k of=/dev/$RO bs=4k seek=0 count=1 oflag=direct conv=notrunc 2>/tmp/dd.err; then
  vt_fail "$RO: a 4 KiB O_DIRECT write to the read-only disk succeeded"
fi
vt_log "$RO: write refused as expected: $(tr '\n' ' ' </tmp/dd.err)"
if fio --name=rowrite --filename=/dev/$RO --direct=1 --ioengine=libaio --rw=write \
     --bs=4k --size=64k --output-format=terse >/tmp/fio.out 2>&1; then
  vt_fail "$RO: fio write to the read-only disk succeeded"
fi
echo 3 >/proc/sys/vm/drop_caches
got=$(vt_read_md5 /dev/$RO 0 "$RO_MIB")
[ "$got" = "$RO_MD5" ] || vt_fail "$RO: content changed after the refused writes (md5 $got)"

# --- writable disk -----------------------------------------------------------
vt_step "rw disk $RW: attributes"
[ "$(cat /sys/block/$RW/ro)" = 0 ] || vt_fail "$RW: /sys/block/$RW/ro is $(cat /sys/block/$RW/ro), expected 0"
[ "$(lbs $RW)" = 512 ] || vt_fail "$RW: logical_block_size $(lbs $RW), expected 512"
[ "$(nq $RW)" = "$RW_Q" ] || vt_fail "$RW: $(nq $RW) hardware queues, expected $RW_Q"
RW_MIB=$(($(vt_disk_bytes $RW) / MIB))
[ "$RW_MIB" -ge 64 ] || vt_fail "$RW: too small ($RW_MIB MiB)"

vt_step "rw disk $RW: fio random write 4k QD8 x 2 jobs + crc32c verify"
vt_fio --name=randw --filename=/dev/$RW --direct=1 --ioengine=libaio \
  --rw=randwrite --bs=4k --iodepth=8 --numjobs=2 \
  --offset=0 --offset_increment=16M --size=16M \
  --cpus_allowed=0-1 --cpus_allowed_policy=split \
  --verify=crc32c --do_verify=1 --verify_fatal=1
vt_fio --name=seqw --filename=/dev/$RW --direct=1 --ioengine=libaio \
  --rw=write --bs=128k --iodepth=4 --offset=32M --size=16M --end_fsync=1 \
  --verify=crc32c --do_verify=1 --verify_fatal=1

vt_step "rw disk $RW: pattern to the last MiB for the host"
vt_pattern $MIB >/tmp/pattern
vt_run dd if=/tmp/pattern of=/dev/$RW bs=1M seek=$((RW_MIB - 1)) count=1 oflag=direct conv=notrunc
sync
got=$(vt_read_md5 /dev/$RW $((RW_MIB - 1)) 1)
[ "$got" = "$(vt_md5 </tmp/pattern)" ] || vt_fail "$RW: pattern read back as md5 $got"

# --- null disk ---------------------------------------------------------------
vt_step "null disk $NULLD: attributes"
[ "$(vt_disk_bytes $NULLD)" = $((NULL_MIB * MIB)) ] || vt_fail "$NULLD: size $(vt_disk_bytes $NULLD), expected $((NULL_MIB * MIB))"
[ "$(cat /sys/block/$NULLD/ro)" = 0 ] || vt_fail "$NULLD: unexpectedly read-only"
[ "$(lbs $NULLD)" = 512 ] || vt_fail "$NULLD: logical_block_size $(lbs $NULLD), expected 512"
[ "$(nq $NULLD)" = "$NULL_Q" ] || vt_fail "$NULLD: $(nq $NULLD) hardware queues, expected $NULL_Q"

vt_step "null disk $NULLD: reads return zeroes, also after writes"
ZERO_MD5=$(head -c $MIB /dev/zero | vt_md5)
vt_run dd if=/tmp/pattern of=/dev/$NULLD bs=1M seek=1 count=1 oflag=direct conv=notrunc
for off in 0 1 $((NULL_MIB / 2)) $((NULL_MIB - 1)); do
  got=$(vt_read_md5 /dev/$NULLD $off 1)
  [ "$got" = "$ZERO_MD5" ] || vt_fail "$NULLD: 1 MiB at offset $off MiB is not all zero (md5 $got)"
done
vt_fio --name=nullr --filename=/dev/$NULLD --direct=1 --ioengine=libaio \
  --rw=randread --bs=4k --iodepth=8 --size=64M --time_based=1 --runtime=2

# --- all three at once ---------------------------------------------------------
vt_step "concurrent I/O on all three disks"
vt_fio --name=rw --filename=/dev/$RW --direct=1 --ioengine=libaio --rw=randwrite --bs=4k \
  --iodepth=8 --offset=16M --size=8M --verify=crc32c --do_verify=1 --verify_fatal=1 \
  --name=ro --filename=/dev/$RO --direct=1 --ioengine=libaio --rw=randread --bs=4k \
  --iodepth=8 --size=32M --time_based=1 --runtime=3 \
  --name=null --filename=/dev/$NULLD --direct=1 --ioengine=libaio --rw=randread --bs=4k \
  --iodepth=8 --size=64M --time_based=1 --runtime=3
got=$(vt_read_md5 /dev/$RO 0 "$RO_MIB")
[ "$got" = "$RO_MD5" ] || vt_fail "$RO: content changed (md5 $got)"
got=$(vt_read_md5 /dev/$RW $((RW_MIB - 1)) 1)
[ "$got" = "$(vt_md5 </tmp/pattern)" ] || vt_fail "$RW: pattern region changed (md5 $got)"

vt_pass
