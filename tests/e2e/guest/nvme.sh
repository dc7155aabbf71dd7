#!/bin/sh
# Guest side of the NVMe passthrough test (tests/e2e/test_nvme.sh). The host appended vhostd,
# blkbench and unit_tests (with their libraries) to the initramfs under /opt/vhostd; QEMU
# emulates an NVMe controller with three namespaces: /dev/ng0n1 (512 B LBAs), /dev/ng0n2
# (4 KiB LBAs) and /dev/ng0n3 (zoned, host-managed: 4 KiB LBAs, 1 MiB zones of 768 KiB
# capacity, at most 4 open and 6 active).
#   1. The passthrough channel itself: unit_tests' NvmeDevice tests on both namespaces (every
#      command type, commands past the transfer limit, refused requests).
#   2. vhostd serves the namespace (backend=nvme); blkbench, a vhost-user frontend, writes and
#      verifies through it with 4 KiB, 64 KiB and 1 MiB requests (past one command's 512 KiB).
#   3. The block path on the same namespace (backend file, /dev/nvme0n1, O_DIRECT) for
#      comparison (TCG: correctness, not speed).
#   4. vhostd stops cleanly (SIGTERM).
#   5. The zoned namespace as a zoned virtio-blk device: unit_tests' ZonedNvme tests run vhostd
#      in-process on it and drive it through a vhost-user socket with their own virtio driver
#      (zone reports, writes at and off the write pointer, appends, open/close/finish/reset,
#      the open and active limits). Linux guests cannot be the driver here: QEMU 7.2's
#      vhost-user-blk hides VIRTIO_BLK_F_ZONED and this kernel (6.1) has no zoned virtio-blk.
set -e
. /tests/lib.sh

B=/opt/vhostd
NG=/dev/ng0n1

vt_step "waiting for $NG"
i=0
while [ ! -c $NG ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
[ -c $NG ] || vt_fail "no $NG (nvme driver not loaded, or no namespace): $(ls /dev | tr '\n' ' ')"
[ -x $B/vhostd ] || vt_fail "no $B/vhostd: the initramfs overlay is missing"
Q=/sys/block/nvme0n1/queue
vt_log "namespace: $(cat /sys/block/nvme0n1/size) sectors, $(cat $Q/logical_block_size) B LBAs, $(cat $Q/max_hw_sectors_kb) KiB and $(cat $Q/max_segments) segments per command, cache: $(cat $Q/write_cache)"

for ns in $NG /dev/ng0n2; do
  vt_step "passthrough commands on $ns (unit tests)"
  [ -c $ns ] || vt_fail "no $ns"
  if ! VHOSTD_TEST_NVME=$ns $B/unit_tests --gtest_filter='Nvme*' >/tmp/ut.log 2>&1; then
    cat /tmp/ut.log
    vt_fail "the NVMe unit tests failed on $ns"
  fi
  grep -q 'SKIPPED' /tmp/ut.log && { cat /tmp/ut.log; vt_fail "NVMe unit tests were skipped in the guest"; }
  vt_log "$(grep -E '^\[  PASSED' /tmp/ut.log)"
done

# serve ARGS...: start vhostd with one blk device on /tmp/d.sock; sets VPID.
serve() {
  rm -f /tmp/d.sock
  $B/vhostd --blk "socket=/tmp/d.sock,$1" >/tmp/vhostd.log 2>&1 &
  VPID=$!
  i=0
  while [ ! -S /tmp/d.sock ] && [ $i -lt 100 ]; do
    kill -0 $VPID 2>/dev/null || { cat /tmp/vhostd.log; vt_fail "vhostd exited: $1"; }
    sleep 0.1; i=$((i + 1))
  done
  [ -S /tmp/d.sock ] || { cat /tmp/vhostd.log; vt_fail "vhostd did not listen: $1"; }
}
stop() {
  kill -TERM $VPID
  rc=0
  wait $VPID || rc=$?
  [ $rc -eq 0 ] || { cat /tmp/vhostd.log; vt_fail "vhostd exited with status $rc on SIGTERM"; }
}
bench() {  # bench LABEL BLKBENCH-ARGS...
  label=$1
  shift
  if ! $B/blkbench --socket /tmp/d.sock "$@" >/tmp/bench.out 2>&1; then
    cat /tmp/bench.out /tmp/vhostd.log
    vt_fail "blkbench $label failed: $*"
  fi
  vt_log "$label: $(head -n1 /tmp/bench.out)"
  grep -E 'verify' /tmp/bench.out | sed 's/^ */vtest:   /' || true
}

vt_step "vhostd backend=nvme: blkbench write+verify through vhost-user"
serve "backend=nvme,path=$NG,queues=2"
grep -q 'nvme passthrough' /tmp/vhostd.log || { cat /tmp/vhostd.log; vt_fail "vhostd did not open the namespace for passthrough"; }
for bs in 4096 65536 1048576; do
  bench "nvme verify bs=$bs" --queues 2 --qd 4 --bs $bs --rw randrw --verify --seconds 2 --size 48M
done
bench "nvme randread 4k" --queues 1 --qd 8 --bs 4096 --rw randread --seconds 2 --size 48M
stop
if grep -qiE 'error|warn' /tmp/vhostd.log; then
  cat /tmp/vhostd.log
  vt_fail "vhostd logged a warning or error"
fi

vt_step "vhostd backend=nvme on the 4 KiB-LBA namespace"
serve "backend=nvme,path=/dev/ng0n2"
bench "nvme 4k-LBA verify bs=16384" --queues 1 --qd 4 --bs 16384 --rw randrw --verify --seconds 2 --size 32M
stop

vt_step "the block path on the same namespace, for comparison"
serve "path=/dev/nvme0n1,direct=on"
bench "block-layer randread 4k" --queues 1 --qd 8 --bs 4096 --rw randread --seconds 2 --size 48M
stop

vt_step "zoned namespace /dev/ng0n3 as a zoned virtio-blk device (unit tests' driver)"
ZN=/dev/ng0n3
[ -c $ZN ] || vt_fail "no $ZN: $(ls /dev | tr '\n' ' ')"
vt_log "zoned: $(cat /sys/block/nvme0n3/queue/zoned), $(cat /sys/block/nvme0n3/queue/nr_zones) zones of $(cat /sys/block/nvme0n3/queue/chunk_sectors) sectors, append $(cat /sys/block/nvme0n3/queue/zone_append_max_bytes) B"
if ! VHOSTD_TEST_NVME_ZONED=$ZN $B/unit_tests --gtest_filter='ZonedNvme*' >/tmp/ut.log 2>&1; then
  cat /tmp/ut.log
  vt_fail "the zoned NVMe unit tests failed on $ZN"
fi
grep -q 'SKIPPED' /tmp/ut.log && { cat /tmp/ut.log; vt_fail "zoned NVMe unit tests were skipped in the guest"; }
vt_log "$(grep -E '^\[  PASSED' /tmp/ut.log)"
serve "backend=nvme,path=$ZN"
grep -q 'zoned:' /tmp/vhostd.log || { cat /tmp/vhostd.log; vt_fail "vhostd did not describe the zoned namespace"; }
vt_log "$(grep -o 'nvme passthrough.*' /tmp/vhostd.log | head -n1)"
stop

vt_pass
