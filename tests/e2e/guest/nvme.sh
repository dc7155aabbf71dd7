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
#   2b. The same with guest memory registered as fixed buffers (fixed=on): verified, the log
#      says how many commands used them (some must), and randread 4k with fixed=off and =on
#      alternating (ab_rounds= on the kernel command line; none by default; TCG: not speed).
#   3. The block path on the same namespace (backend file, /dev/nvme0n1, O_DIRECT) for
#      comparison (TCG: correctness, not speed).
#   4. vhostd stops cleanly (SIGTERM).
#   5. The zoned namespace as a zoned virtio-blk device: unit_tests' ZonedNvme tests run vhostd
#      in-process on it and drive it through a vhost-user socket with their own virtio driver
#      (zone reports, writes at and off the write pointer, appends, open/close/finish/reset,
#      the open and active limits). Linux guests cannot be the driver here: QEMU 7.2's
#      vhost-user-blk hides VIRTIO_BLK_F_ZONED and this kernel (6.1) has no zoned virtio-blk.
#   6. A pool on /dev/ng0n1 and /dev/ng0n2 (members driven with NVMe commands: metadata through
#      NVME_IOCTL_IO_CMD, volumes' data on the command ring): unit_tests' NvmeDisk and NvmePool
#      tests (byte ranges, snapshot, clone, import, pool check), then vhostd with vhostctl: pool
#      create, a thin volume served to blkbench --verify with snapshots and a clone taken under
#      the load, kill -9, the pool imported again at start (--pool), pool check, verify again.
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
  if ! VHOSTD_TEST_NVME=$ns $B/unit_tests --gtest_filter='NvmeNamespace*:NvmeBackend*:NvmeDevice*' >/tmp/ut.log 2>&1; then
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

vt_step "guest memory as fixed buffers (fixed=on)"
serve "backend=nvme,path=$NG,queues=2,fixed=on"
bench "fixed verify bs=4096" --queues 2 --qd 4 --bs 4096 --rw randrw --verify --seconds 2 --size 48M
grep -q 'registered as' /tmp/vhostd.log || { cat /tmp/vhostd.log; vt_fail "fixed=on: no registration logged"; }
vt_log "$(grep -o 'guest memory registered.*' /tmp/vhostd.log | head -n1)"
bench "fixed verify bs=65536" --queues 2 --qd 4 --bs 65536 --rw randrw --verify --seconds 2 --size 48M
stop
used=$(grep -o '[0-9]* of [0-9]* data commands used registered buffers' /tmp/vhostd.log || true)
[ -n "$used" ] || { cat /tmp/vhostd.log; vt_fail "fixed=on: no count of registered-buffer commands"; }
vt_log "fixed=on: $(echo "$used" | tr '\n' ';')"
echo "$used" | grep -qv '^0 of' || { cat /tmp/vhostd.log; vt_fail "fixed=on: no command used a registered buffer"; }
if grep -qiE 'warn|error' /tmp/vhostd.log; then
  cat /tmp/vhostd.log
  vt_fail "fixed=on: vhostd logged a warning or error"
fi
rounds=$(vt_param ab_rounds 0)
r=0
while [ $r -lt "$rounds" ]; do
  for fx in off on; do
    serve "backend=nvme,path=$NG,queues=1,fixed=$fx"
    bench "A/B round $r randread 4k fixed=$fx" --queues 1 --qd 8 --bs 4096 --rw randread --seconds 2 --size 48M
    stop
  done
  r=$((r + 1))
done

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

vt_step "a pool on NVMe namespaces: the unit tests (NvmeDisk, NvmePool)"
if ! VHOSTD_TEST_NVME_POOL=/dev/ng0n1:/dev/ng0n2 VHOSTD_TEST_NVME_ZONED=$ZN $B/unit_tests --gtest_filter='NvmeDisk*:NvmePool*' >/tmp/ut.log 2>&1; then
  cat /tmp/ut.log
  vt_fail "the NVMe pool unit tests failed"
fi
grep -q 'SKIPPED' /tmp/ut.log && { cat /tmp/ut.log; vt_fail "NVMe pool unit tests were skipped in the guest"; }
vt_log "$(grep -E '^\[  PASSED' /tmp/ut.log)"

vt_step "a pool on NVMe namespaces: vhostd, vhostctl, blkbench --verify, kill -9, import"
export VHOSTD_RPC=/tmp/rpc.sock
ctl() { $B/vhostctl "$@"; }
pool_serve() {  # pool_serve VHOSTD-ARGS...: vhostd with the API; waits for its socket
  rm -f /tmp/rpc.sock /tmp/v.sock
  $B/vhostd --rpc /tmp/rpc.sock "$@" >>/tmp/vhostd.log 2>&1 &
  VPID=$!
  i=0
  while [ ! -S /tmp/rpc.sock ] && [ $i -lt 100 ]; do
    kill -0 $VPID 2>/dev/null || { cat /tmp/vhostd.log; vt_fail "vhostd exited: $*"; }
    sleep 0.1; i=$((i + 1))
  done
}
wait_v() {
  i=0
  while [ ! -S /tmp/v.sock ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
  [ -S /tmp/v.sock ] || { cat /tmp/vhostd.log; vt_fail "no volume socket"; }
}
pool_check() {
  out=$(ctl pool check np 2>&1) || { cat /tmp/vhostd.log; vt_fail "pool check ($1): $out"; }
}
: >/tmp/vhostd.log
pool_serve
out=$(ctl pool create np /dev/ng0n1 /dev/ng0n2 --chunk 256K --force 2>&1) || { cat /tmp/vhostd.log; vt_fail "pool create: $out"; }
ctl volume create np/v 64M >/dev/null || vt_fail "volume create"
ctl volume create np/w 32M >/dev/null || vt_fail "volume create w"
ctl add blk "socket=/tmp/v.sock,volume=np/v,queues=2" --id v >/dev/null || { cat /tmp/vhostd.log; vt_fail "add the volume"; }
wait_v
# Requests of 192 KiB over 256 KiB chunks (cut at chunks, members and command limits), 4 KiB
# blocks (the 4 KiB-LBA member sets the volume's block size); snapshots and a clone under load.
$B/blkbench --socket /tmp/v.sock --rw randrw --verify --bs 196608 --qd 8 --queues 2 --size 48M --seconds 6 >/tmp/bench.out 2>&1 &
BP=$!
sleep 1
for s in s1 s2; do ctl snapshot create np/v $s >/dev/null || vt_fail "snapshot $s"; sleep 1; done
ctl clone create np/v@s1 c >/dev/null || vt_fail "clone"
wait $BP || { cat /tmp/bench.out /tmp/vhostd.log; vt_fail "blkbench on the NVMe pool volume"; }
grep -q ' 0 mismatches' /tmp/bench.out || { cat /tmp/bench.out; vt_fail "verify on the NVMe pool volume"; }
vt_log "pool volume verify: $(grep verify /tmp/bench.out | head -n1)"
pool_check "after the load"
ctl volume list | sed 's/^/vtest:   /'
# kill -9 with writes in flight, then the pool imported at start, drives in the other order.
$B/blkbench --socket /tmp/v.sock --rw randrw --verify --bs 65536 --qd 8 --queues 2 --size 48M --seconds 8 >/dev/null 2>&1 &
BP=$!
sleep 2
kill -9 $VPID
wait $VPID 2>/dev/null || true
kill -9 $BP 2>/dev/null || true
wait $BP 2>/dev/null || true
pool_serve --pool drives=/dev/ng0n2:/dev/ng0n1 --blk "socket=/tmp/v.sock,volume=np/v,queues=2"
wait_v
vt_log "imported (at $(cut -d" " -f1 /proc/uptime) s)"
pool_check "after kill -9 and import"
$B/blkbench --socket /tmp/v.sock --rw randrw --verify --bs 16384 --qd 4 --queues 2 --size 48M --seconds 3 >/tmp/bench.out 2>&1 ||
  { cat /tmp/bench.out /tmp/vhostd.log; vt_fail "blkbench after the import"; }
grep -q ' 0 mismatches' /tmp/bench.out || { cat /tmp/bench.out; vt_fail "verify after the import"; }
vt_log "after import: $(grep verify /tmp/bench.out | head -n1)"
ctl volume list | grep -q 'np/c' || vt_fail "the clone is gone after the import: $(ctl volume list)"
stop
if grep -qE 'ERROR|\[error\]|AddressSanitizer' /tmp/vhostd.log; then
  cat /tmp/vhostd.log
  vt_fail "vhostd logged errors on the NVMe pool"
fi

vt_pass
