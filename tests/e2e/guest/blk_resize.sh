#!/bin/sh
# Guest side of the online resize test (busybox sh). /dev/vda starts at 64 MiB.
#  1. fio write + verify runs on the first 32 MiB; meanwhile the host grows the disk to 128 MiB
#     (vhostctl resize). The new size must show in /sys/block/vda/size without a reboot, and the
#     fio run must pass.
#  2. A pattern written past the old end (at 96 MiB) reads back.
#  3. fio runs on [16 MiB, 48 MiB) while the host shrinks the disk to 32 MiB: the I/O past the
#     new end must fail with an I/O error (fio stops with an error), not hang; the first 16 MiB
#     still verify.
# Handshake lines (the host waits for them):
#   vtest: resize fio running       host: grow to 128M
#   vtest: resize shrink fio starting   host: shrink to 32M (while that fio runs)
set -e
. /tests/lib.sh

DEV=vda
vt_wait_dev $DEV || vt_fail "/dev/$DEV did not appear"
s0=$(cat /sys/block/$DEV/size)
[ "$s0" = $((64 * 2048)) ] || vt_fail "/dev/$DEV has $s0 sectors, expected 64 MiB"

# wait_size SECTORS SECONDS: until /sys/block/vda/size says SECTORS.
wait_size() {
  _n=0
  while [ "$(cat /sys/block/$DEV/size)" != "$1" ]; do
    _n=$((_n + 1))
    [ $_n -gt $(($2 * 10)) ] && return 1
    sleep 0.1
  done
}

vt_step "grow under fio"
# The reference pattern for step 3: the first 16 MiB.
vt_pattern $((16 << 20)) | dd of=/dev/$DEV bs=1M oflag=direct 2>/dev/null
want=$(vt_pattern $((16 << 20)) | vt_md5)
fio --name=grow --filename=/dev/$DEV --direct=1 --ioengine=libaio --rw=randwrite --bs=16k --iodepth=16 \
  --offset=16M --size=16M --time_based --runtime=12 --verify=crc32c --do_verify=1 --verify_fatal=1 \
  --output-format=terse --terse-version=3 >/tmp/grow.out 2>/tmp/grow.err &
fio_pid=$!
sleep 1
vt_log "resize fio running"
wait_size $((128 * 2048)) 60 || vt_fail "the size never became 128 MiB (now $(cat /sys/block/$DEV/size) sectors)"
vt_log "grew to $(cat /sys/block/$DEV/size) sectors while fio ran"
rc=0
wait $fio_pid || rc=$?
[ $rc = 0 ] || { cat /tmp/grow.out /tmp/grow.err; vt_fail "fio under the grow failed (status $rc)"; }
awk -F';' 'NF > 100 && $5 != 0 { bad = 1 } END { exit !bad }' /tmp/grow.out && vt_fail "fio under the grow reported errors"

vt_step "data past the old end"
vt_pattern $((4 << 20)) | dd of=/dev/$DEV bs=1M seek=96 oflag=direct 2>/dev/null || vt_fail "write past the old end failed"
got=$(vt_read_md5 /dev/$DEV 96 4)
[ "$got" = "$(vt_pattern $((4 << 20)) | vt_md5)" ] || vt_fail "data past the old end read back wrong"
vt_log "resize grow verified"

vt_step "shrink under fio"
vt_log "resize shrink fio starting"
t0=$(vt_uptime_cs)
rc=0
fio --name=shrink --filename=/dev/$DEV --direct=1 --ioengine=libaio --rw=randrw --bs=16k --iodepth=16 \
  --offset=16M --size=32M --time_based --runtime=60 \
  --output-format=terse --terse-version=3 >/tmp/shrink.out 2>/tmp/shrink.err || rc=$?
t1=$(vt_uptime_cs)
vt_log "fio over the shrink ended after $(( (t1 - t0) / 100 )) s with status $rc: $(head -c 300 /tmp/shrink.err | tr '\n' ' ')"
[ "$(cat /sys/block/$DEV/size)" = $((32 * 2048)) ] || wait_size $((32 * 2048)) 30 || vt_fail "the size never became 32 MiB"
[ $rc != 0 ] || vt_fail "fio across the new end did not see an I/O error"
[ $(( (t1 - t0) / 100 )) -lt 50 ] || vt_fail "fio across the new end ran its whole time: I/O past the end did not fail"
got=$(vt_read_md5 /dev/$DEV 0 16)
[ "$got" = "$want" ] || vt_fail "the first 16 MiB changed across the resizes"
n=$(dd if=/dev/$DEV bs=1M skip=40 count=1 iflag=direct 2>/dev/null | wc -c)
[ "$n" = 0 ] || vt_fail "read past the new end returned $n bytes"
if dmesg | grep -iE 'hung task|blocked for more than|virtio.*broken'; then
  vt_fail "kernel reported a hang or a broken virtqueue"
fi
dmesg | grep -iE 'capacity change|detected capacity' | tail -3 || true
vt_pass
