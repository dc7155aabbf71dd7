#!/bin/sh
# Guest side of test_blk_lost_call.sh (busybox sh): single synchronous writes,
# one at a time, nothing else in flight on /dev/vda, while the host's vhostd
# instances kill themselves just before the interrupt of a completion they
# have already published. Only the next vhostd can wake this guest: Linux's
# virtio-blk has no request timeout, so a lost interrupt is a write that never
# returns.
#
# Kernel command line knobs:
#   vtest_writes=N   number of writes (default 60)
#   vtest_bound=S    seconds one write may take before the test fails
#                    (default 30; a restart takes ~1-2 s)
#
# Markers for the host:
#   VTEST-PHASE: io-start      the writes begin
#   VTEST-WRITE: I T           write I completed after T tenths of a second
#   VTEST-PHASE: io-end        all writes completed
# Then every block is read back (O_DIRECT) and checked, and the kernel log
# must be free of I/O errors.
set -e
# shellcheck source-path=SCRIPTDIR source=lib.sh
. /tests/lib.sh

DEV=vda
WRITES=$(vt_param vtest_writes 60)
BOUND=$(vt_param vtest_bound 30)

vt_step "waiting for /dev/$DEV"
vt_wait_dev $DEV || vt_fail "/dev/$DEV did not appear (is the vhost-user-blk device attached?)"
[ "$(vt_disk_bytes $DEV)" -ge $((WRITES * 4096)) ] || vt_fail "/dev/$DEV is too small"

# block I (4 KiB at offset I*4096): "lost-call block I" repeated.
block() { yes "lost-call block $1" | head -c 4096; }

vt_step "$WRITES single 4 KiB O_DIRECT writes, each bounded by ${BOUND}s"
echo "VTEST-PHASE: io-start"
i=0
while [ $i -lt "$WRITES" ]; do
  block $i >/tmp/blk
  dd if=/tmp/blk of=/dev/$DEV bs=4096 count=1 seek=$i oflag=direct conv=notrunc status=none &
  pid=$!
  t=0
  while kill -0 $pid 2>/dev/null; do
    [ $t -lt $((BOUND * 10)) ] || vt_fail "write $i has not completed after ${BOUND}s (a lost interrupt?)"
    sleep 0.1
    t=$((t + 1))
  done
  wait $pid || vt_fail "write $i failed"
  echo "VTEST-WRITE: $i $t"
  i=$((i + 1))
done
echo "VTEST-PHASE: io-end"

vt_step "read back and check the $WRITES blocks"
i=0
while [ $i -lt "$WRITES" ]; do
  want=$(block $i | vt_md5)
  got=$(dd if=/dev/$DEV bs=4096 count=1 skip=$i iflag=direct 2>/dev/null | vt_md5)
  [ "$got" = "$want" ] || vt_fail "block $i reads back wrong"
  i=$((i + 1))
done
vt_log "all $WRITES blocks read back intact"

vt_step "kernel log"
if dmesg | grep -E 'I/O error|blk_update_request|is not a head|id [0-9]+ out of range'; then
  vt_fail "the kernel reported block or virtio errors"
fi
vt_pass
