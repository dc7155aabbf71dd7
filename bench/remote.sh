#!/usr/bin/env bash
# Remote block storage (issue 17): vhostd's nbd and rbd backends against qemu-storage-daemon's nbd
# and rbd drivers, both reaching the same server, side by side in one run.
#
#   bench/remote.sh [--quick] [--rounds 5] [--seconds 5] [--ramp 1]
#                   [--server nbdkit|qemu-nbd|rbd] [--out FILE.md]
#
# The server: nbdkit's memory plugin (1 GiB, multi-threaded, no disk under it: what is measured is
# the client side and the protocol), qemu-nbd on a 1 GiB file in /dev/shm, or a one-node Ceph
# cluster (tests/ceph/cluster.sh, memstore: objects in RAM, so the VM disk's stalls of many seconds under bluestore stay out of it) with a 512 MiB image; started once (NBD:
# on a unix socket) and used by every run. Per run: a fresh backend with one device of 1 queue on
# CPU 0 (vhostd --threads 1 --cpus 0 --poll adaptive; qemu-storage-daemon under taskset),
# blkbench on CPU 1 in call mode (it sleeps on the call eventfd: a spinning generator would take
# the CPU the server needs on a 2-CPU machine); the server's threads float. Cells: 4 KiB random
# reads and writes at QD32 and QD1, 64 KiB random reads at QD8. Backends alternate per round
# (the order flips every round); medians with min-max, and the per-round paired ratio's median.
# Target (issue 17): vhostd >= 1.2x qemu-storage-daemon's IOPS at QD32 with one reactor, and less
# backend CPU per I/O (for rbd the backend's CPU includes librbd's own threads, in both columns).
# Reported, not asserted.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=5 SECONDS_PER=5 RAMP=1 SERVER=nbdkit OUT="" QUICK=0 IMAGE_MB=512
while [[ $# -gt 0 ]]; do
  case $1 in
    --quick) QUICK=1 ROUNDS=1 SECONDS_PER=1 RAMP=0.3 IMAGE_MB=64; shift ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --seconds) SECONDS_PER=$2; shift 2 ;;
    --ramp) RAMP=$2; shift 2 ;;
    --server) SERVER=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    *) echo "remote.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
case $SERVER in nbdkit|qemu-nbd|rbd) ;; *) echo "remote.sh: --server nbdkit|qemu-nbd|rbd" >&2; exit 2 ;; esac
BUILD=${BUILD:-build}
[[ -x $BUILD/vhostd && -x $BUILD/blkbench ]] || { echo "remote.sh: build first (scripts/build.sh)" >&2; exit 1; }
for t in qemu-storage-daemon nbdkit qemu-nbd; do
  command -v "$t" >/dev/null || { echo "remote.sh: $t missing (scripts/setup.sh)" >&2; exit 1; }
done
TMP=$(mktemp -d /tmp/vhostd-nbdbench.XXXXXX)
BPID=""
cleanup() {
  if [[ -n $BPID ]]; then kill "$BPID" 2>/dev/null || true; fi
  if [[ -s $TMP/server.pid ]]; then kill "$(cat "$TMP/server.pid")" 2>/dev/null || true; fi
  if [[ -d $TMP/ceph ]]; then tests/ceph/cluster.sh stop "$TMP/ceph" >/dev/null 2>&1 || true; fi
  wait 2>/dev/null || true
  rm -rf "$TMP" "${SHM_FILE:-}"
}
trap cleanup EXIT
NSOCK=$TMP/nbd.sock VSOCK=$TMP/v.sock RUNS=$TMP/runs.jsonl
: >"$RUNS"

SHM_FILE="" CEPH_CONF=""
if [[ $SERVER == nbdkit ]]; then
  nbdkit --unix "$NSOCK" --pidfile "$TMP/server.pid" memory size=1G
elif [[ $SERVER == qemu-nbd ]]; then
  SHM_FILE=$(mktemp /dev/shm/vhostd-nbdbench.XXXXXX)
  truncate -s 1G "$SHM_FILE"
  qemu-nbd --fork --persistent --shared=4 --pid-file="$TMP/server.pid" --format=raw --cache=writeback \
    --socket="$NSOCK" "$SHM_FILE"
else
  CEPH_CONF=$(CEPH_OBJECTSTORE=memstore CEPH_MON_PORT=46791 tests/ceph/cluster.sh start "$TMP/ceph" rbd 2>"$TMP/ceph-start.log") ||
    { cat "$TMP/ceph-start.log" >&2; echo "remote.sh: the Ceph cluster did not start" >&2; exit 1; }
  timeout 60 rbd -c "$CEPH_CONF" create --size "${IMAGE_MB}M" rbd/bench
  # Written once, so reads hit objects that exist.
  timeout 300 rbd -c "$CEPH_CONF" bench --io-type write --io-size 4M --io-total "${IMAGE_MB}M" --io-pattern seq rbd/bench \
    >/dev/null
fi
if [[ $SERVER != rbd ]]; then
  for ((i = 0; i < 100; i++)); do [[ -S $NSOCK && -s $TMP/server.pid ]] && break; sleep 0.1; done
  [[ -S $NSOCK ]] || { echo "remote.sh: the $SERVER server did not start" >&2; exit 1; }
fi
URI="nbd+unix:///?socket=$NSOCK"

start_backend() {  # vhostd|qsd
  rm -f "$VSOCK"
  local vdev="backend=nbd,uri=$URI" qdev="driver=nbd,node-name=n,server.type=unix,server.path=$NSOCK"
  if [[ $SERVER == rbd ]]; then
    vdev="backend=rbd,pool=rbd,image=bench,conf=$CEPH_CONF"
    qdev="driver=rbd,node-name=n,pool=rbd,image=bench,conf=$CEPH_CONF"
  fi
  if [[ $1 == vhostd ]]; then
    "$BUILD/vhostd" --threads 1 --cpus 0 --poll adaptive --blk "socket=$VSOCK,$vdev,queues=1" \
      >"$TMP/backend.log" 2>&1 &
  else
    taskset -c 0 qemu-storage-daemon --blockdev "$qdev" \
      --export "type=vhost-user-blk,id=e,node-name=n,addr.type=unix,addr.path=$VSOCK,writable=on,num-queues=1" \
      >"$TMP/backend.log" 2>&1 &
  fi
  BPID=$!
  for ((i = 0; i < 100; i++)); do
    [[ -S $VSOCK ]] && return 0
    kill -0 "$BPID" 2>/dev/null || { cat "$TMP/backend.log" >&2; echo "remote.sh: $1 exited" >&2; exit 1; }
    sleep 0.1
  done
  echo "remote.sh: $1 did not listen" >&2
  exit 1
}
stop_backend() { kill "$BPID" 2>/dev/null || true; wait "$BPID" 2>/dev/null || true; BPID=""; }

# Both backends must pass a verified mixed run first (the numbers are worth nothing otherwise).
for b in vhostd qsd; do
  start_backend "$b"
  "$BUILD/blkbench" --socket "$VSOCK" --queues 1 --qd 16 --bs 4096 --rw randrw --verify --size 64M \
    --seconds 1 --cpus 1 --notify call --json >"$TMP/verify.json" ||
    { echo "remote.sh: blkbench --verify failed on $b" >&2; exit 1; }
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); sys.exit(0 if r["verify_errors"]==0 and r["verify_checked"]>0 else 1)' \
    "$TMP/verify.json" || { echo "remote.sh: verify errors on $b" >&2; exit 1; }
  stop_backend
done

CELLS=("randread 4096 32" "randwrite 4096 32" "randread 4096 1" "randwrite 4096 1" "randread 65536 8")
[[ $QUICK == 1 ]] && CELLS=("randread 4096 32" "randwrite 4096 1")
for ((r = 1; r <= ROUNDS; r++)); do
  order=(vhostd qsd)
  ((r % 2 == 0)) && order=(qsd vhostd)
  for cell in "${CELLS[@]}"; do
    read -r rw bs qd <<<"$cell"
    for b in "${order[@]}"; do
      start_backend "$b"
      out=$("$BUILD/blkbench" --socket "$VSOCK" --queues 1 --qd "$qd" --bs "$bs" --rw "$rw" \
        --seconds "$SECONDS_PER" --ramp "$RAMP" --cpus 1 --notify call --backend-pid "$BPID" --json) ||
        { echo "remote.sh: blkbench failed on $b ($cell)" >&2; exit 1; }
      stop_backend
      echo "{\"round\":$r,\"backend\":\"$b\",\"server\":\"$SERVER\",\"result\":$out}" >>"$RUNS"
    done
  done
  echo "remote.sh: round $r of $ROUNDS done" >&2
done

if [[ -z $OUT ]]; then
  mkdir -p bench/results
  OUT=bench/results/$(date +%F)-$(hostname -s)-$SERVER.md
fi
cp "$RUNS" "${OUT%.md}-runs.jsonl"
python3 - "$RUNS" "$OUT" "$SERVER" "$ROUNDS" "$SECONDS_PER" <<'EOF'
import json, statistics, sys, datetime
runs = [json.loads(l) for l in open(sys.argv[1])]
out, server, rounds, secs = sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
cells = []
for r in runs:
    k = (r["result"]["rw"], r["result"]["bs"], r["result"]["qd"])
    if k not in cells:
        cells.append(k)
def pick(b, k, f):
    return [r["result"][f] for r in runs if r["backend"] == b and (r["result"]["rw"], r["result"]["bs"], r["result"]["qd"]) == k]
def med(v):
    return statistics.median(v) if v else 0
kind = "rbd" if server == "rbd" else "nbd"
lines = [f"# {kind.upper()}: vhostd backend={kind} vs qemu-storage-daemon driver={kind} ({datetime.date.today()})", "",
         f"Server: {server} (the same for both; NBD on a unix socket, RBD a one-node cluster, one memstore OSD). One device, 1 queue, backend on CPU 0 "
         f"(vhostd --poll adaptive), blkbench on CPU 1 in call mode. {rounds} round(s) x {secs} s per cell, "
         "backends alternating. Medians (min-max); ratio = median of the per-round vhostd/qsd ratios.", "",
         "| cell | vhostd IOPS | qsd IOPS | ratio | vhostd p99 us | qsd p99 us | vhostd CPU us/IO | qsd CPU us/IO |",
         "| --- | --- | --- | --- | --- | --- | --- | --- |"]
verdict = []
for k in cells:
    v, q = pick("vhostd", k, "iops"), pick("qsd", k, "iops")
    ratios = []
    for rnd in range(1, rounds + 1):
        a = [r["result"]["iops"] for r in runs if r["round"] == rnd and r["backend"] == "vhostd" and (r["result"]["rw"], r["result"]["bs"], r["result"]["qd"]) == k]
        b = [r["result"]["iops"] for r in runs if r["round"] == rnd and r["backend"] == "qsd" and (r["result"]["rw"], r["result"]["bs"], r["result"]["qd"]) == k]
        if a and b and b[0] > 0:
            ratios.append(a[0] / b[0])
    rt = med(ratios)
    cv, cq = med(pick("vhostd", k, "backend_cpu_us_per_io")), med(pick("qsd", k, "backend_cpu_us_per_io"))
    name = f"{k[0]} {k[1] // 1024}k QD{k[2]}"
    lines.append(f"| {name} | {med(v):.0f} ({min(v):.0f}-{max(v):.0f}) | {med(q):.0f} ({min(q):.0f}-{max(q):.0f}) | "
                 f"{rt:.2f}x | {med(pick('vhostd', k, 'lat_p99_us')):.0f} | {med(pick('qsd', k, 'lat_p99_us')):.0f} | "
                 f"{cv:.1f} | {cq:.1f} |")
    if k[2] == 32:
        verdict.append(f"- {name}: {rt:.2f}x qemu-storage-daemon's IOPS (target >= 1.2x: {'PASS' if rt >= 1.2 else 'MISS'}); "
                       f"CPU per I/O {cv:.1f} vs {cq:.1f} us ({'lower' if cv < cq else 'NOT lower'})")
lines += ["", "## Targets (issue 17, reported, not asserted)", ""] + verdict + [""]
open(out, "w").write("\n".join(lines))
EOF
cat "$OUT"
