#!/bin/sh
# Guest side of test_blk_restart.sh and test_migrate.sh (busybox sh): verified
# I/O on both queues of /dev/vda while the host kills and restarts the
# vhost-user backend, or migrates the VM between QEMUs (and vhostds).
#
# Kernel command line knobs:
#   vtest_queues=N     expect N blk-mq hardware queues
#   vtest_runtime=S    seconds of the main fio phase (default 75)
#   vtest_net_addr=A/N with a virtio-net device (the migration test): bring
#                      it up with this address and, all through the fio
#                      phase, stream paced data over TCP to
#   vtest_net_sink=H:P (a listener on the host side); printed at the end as
#                      "VTEST-MD5 stream BYTES MD5" for the host to compare
#   vtest_net_mac=MAC  the interface's MAC
#   vtest_reader=1     beside fio, read the whole disk over and over with
#                      O_DIRECT into one buffer nothing else writes (dd): the
#                      migration test's memory comparison then sees any read
#                      whose data vhostd did not mark in the dirty log
#
# Markers for the host (it kills the backend or migrates only between them):
#   VTEST-PHASE: io-start        the main fio phase begins
#   VTEST-PHASE: io-end          it has ended (fio exited 0, no errors)
#
# Disk layout (>= 64 MiB; the host uses 64 MiB). Main phase, time based:
#   [0, 32M)    two fio jobs "rand4k" of 16 MiB, one per CPU (and so one per
#               virtqueue): 4k random writes at QD16 with crc32c verification,
#               reads all through the phase: every 64 blocks written are read
#               back and checked (verify_backlog), so reads are in flight when
#               the backend dies or the VM migrates (read data must reach the
#               guest, and be marked in the migration's dirty log)
#   [32M, 64M)  at the same time two jobs "flush", one per CPU: 512k random
#               writes, each followed by an fsync (a virtio-blk FLUSH), also
#               verified (every 8 blocks). A flush is slow on the host (fdatasync) while the
#               small requests behind it finish at once: the backend completes
#               requests out of order, the case a restart cannot get right
#               without the inflight buffer (resuming at the used index would
#               redo finished requests and skip unfinished ones).
# Afterwards a read-only pass checks the crc32c header of every block of
# [0, 64M) (right offset, intact data). Then the kernel log must show no I/O
# errors and no virtio ring complaints.
set -e
# shellcheck source-path=SCRIPTDIR source=lib.sh
. /tests/lib.sh

DEV=vda
MIB=1048576
JOB_MIB=16
RUNTIME=$(vt_param vtest_runtime 75)

vt_step "waiting for /dev/$DEV"
vt_wait_dev $DEV || vt_fail "/dev/$DEV did not appear (is the vhost-user-blk device attached?)"
SIZE_MIB=$(($(vt_disk_bytes $DEV) / MIB))
vt_log "/dev/$DEV: $SIZE_MIB MiB, logical block $(cat /sys/block/$DEV/queue/logical_block_size)"
[ "$SIZE_MIB" -ge $((4 * JOB_MIB)) ] || vt_fail "/dev/$DEV is too small ($SIZE_MIB MiB)"
vt_check_queues $DEV
NQ=$(ls /sys/block/$DEV/mq | wc -l)

NET_ADDR=$(vt_param vtest_net_addr)
if [ -n "$NET_ADDR" ]; then
  SINK=$(vt_need vtest_net_sink)
  SINK_HOST=${SINK%:*} SINK_PORT=${SINK#*:}
  vt_step "network: $NET_ADDR, a paced TCP stream to $SINK beside the fio phase"
  IF=$(vt_net_find_if "$(vt_param vtest_net_mac)") || vt_fail "no virtio-net interface"
  for f in all default "$IF"; do echo 1 >"/proc/sys/net/ipv6/conf/$f/disable_ipv6" 2>/dev/null || true; done
  vt_run ip link set lo up
  vt_run ip link set "$IF" up
  vt_run ip addr add "$NET_ADDR" dev "$IF"
  vt_ping "$SINK_HOST" 60 || vt_fail "$SINK_HOST does not answer pings"
  # 256 KiB chunks ("stream N" repeated) every 0.2 s until fio is done; what
  # was sent is kept for its md5.
  rm -f /tmp/fio.done
  (
    i=0
    while [ ! -e /tmp/fio.done ]; do
      yes "stream $i" | head -c 262144
      i=$((i + 1))
      sleep 0.2
    done
  ) | tee /tmp/stream.sent | nc "$SINK_HOST" "$SINK_PORT" >/dev/null 2>/tmp/stream.err &
  STREAM_PID=$!
fi

if [ "$(vt_param vtest_reader)" = 1 ]; then
  vt_step "a reader beside fio: dd of the whole disk, O_DIRECT, over and over"
  rm -f /tmp/reader.done
  (
    while [ ! -e /tmp/reader.done ]; do
      dd if=/dev/$DEV of=/dev/null bs=64k iflag=direct 2>/dev/null || { echo "reader: dd failed" >&2; exit 1; }
    done
  ) &
  READER_PID=$!
fi

# FIO_REGION, FIO_FLUSH_REGION: the regions, block sizes, depths and the CPU
# pinning of the jobs, shared by both phases: job i of each runs on CPU i, so
# with one hardware queue per CPU each job uses its own virtqueue.
FIO_PIN="--filename=/dev/$DEV --direct=1 --ioengine=libaio --numjobs=2
  --cpus_allowed=0-1 --cpus_allowed_policy=split --offset_increment=${JOB_MIB}M --size=${JOB_MIB}M"
FIO_REGION="$FIO_PIN --offset=0 --bs=4k --iodepth=16"
FIO_FLUSH_REGION="$FIO_PIN --offset=$((2 * JOB_MIB))M --bs=512k --iodepth=1"

# fio_kib JOB FIELD: KiB read (FIELD 6) or written (47) by the jobs named JOB
# of the last vt_fio run (terse v3).
fio_kib() { awk -F';' -v j="$1" -v f="$2" 'NF > 100 && $3 == j { n += $f } END { print n + 0 }' /tmp/fio.out; }

vt_step "main phase: ${RUNTIME}s of verified 4k random writes QD16 and 512k writes + fsync, backend restarts"
vt_vq_irqs $DEV >/tmp/irq.before
echo "VTEST-PHASE: io-start runtime=$RUNTIME"
# shellcheck disable=SC2086  # FIO_*REGION are lists of options
vt_fio --name=rand4k $FIO_REGION --rw=randwrite --time_based --runtime="$RUNTIME" \
  --verify=crc32c --do_verify=1 --verify_fatal=1 --verify_backlog=64 \
  --name=flush $FIO_FLUSH_REGION --rw=randwrite --fsync=1 --time_based --runtime="$RUNTIME" \
  --verify=crc32c --do_verify=1 --verify_fatal=1 --verify_backlog=8
echo "VTEST-PHASE: io-end"
if [ -n "${READER_PID:-}" ]; then
  touch /tmp/reader.done
  wait "$READER_PID" || vt_fail "the reader beside fio failed"
fi
if [ -n "$NET_ADDR" ]; then
  touch /tmp/fio.done
  wait "$STREAM_PID" || vt_fail "the TCP stream to $SINK failed: $(cat /tmp/stream.err)"
  echo "VTEST-MD5 stream $(wc -c </tmp/stream.sent) $(vt_md5 </tmp/stream.sent)"
fi
vt_vq_irqs $DEV >/tmp/irq.after
RKIB=$(fio_kib rand4k 6) WKIB=$(fio_kib rand4k 47)
vt_log "main phase: 4k jobs wrote $WKIB KiB, verified $RKIB KiB;" \
  "flush jobs wrote $(fio_kib flush 47) KiB, verified $(fio_kib flush 6) KiB"
[ "$RKIB" -gt 0 ] && [ "$(fio_kib flush 6)" -gt 0 ] \
  || vt_fail "fio verified nothing in the main phase (runtime too short?)"
vt_log "virtqueue interrupts before: $(tr '\n' ' ' </tmp/irq.before)"
vt_log "virtqueue interrupts after:  $(tr '\n' ' ' </tmp/irq.after)"
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

vt_step "final pass: read and verify every block of [0, $((4 * JOB_MIB))M)"
# shellcheck disable=SC2086
vt_fio --name=final4k $FIO_REGION --rw=read --verify=crc32c --verify_fatal=1 \
  --name=finalflush $FIO_FLUSH_REGION --rw=read --verify=crc32c --verify_fatal=1
RKIB=$(($(fio_kib final4k 6) + $(fio_kib finalflush 6)))
[ "$RKIB" -eq $((4 * JOB_MIB * 1024)) ] || vt_fail "final pass read $RKIB KiB, expected $((4 * JOB_MIB * 1024))"
vt_log "final pass: $RKIB KiB read and verified"

vt_step "kernel log: no I/O errors, no virtio ring errors, no hung tasks"
if dmesg | grep -iE 'I/O error|blk_update_request|critical (medium|target) error|is not a head|No more buffers|id [0-9]+ out of range|blocked for more than' >/tmp/dmesg.bad; then
  cat /tmp/dmesg.bad
  vt_fail "kernel log shows I/O or virtio errors ($(wc -l </tmp/dmesg.bad) line(s))"
fi
vt_log "kernel log clean"

vt_pass
