#!/usr/bin/env bash
# Pools against plain files, side by side (issue 13's speed cells), on tmpfs files (/dev/shm):
#  - steady state: 4 KiB randread and randwrite at QD32 on a pool volume striped over 3 files
#    (1 MiB chunks, every chunk allocated beforehand) vs a plain file device of the same size;
#    paired, alternating rounds, judged on the per-round ratio (this VM is noisy);
#  - first writes: a sequential 1 MiB write at QD4 over a fresh thin volume (each chunk zeroed,
#    flushed and journaled first) vs the same over the allocated volume and over a plain file; and
#    4 KiB random writes at QD32 on a fresh thin volume (a chunk fill per first write);
#  - native fio (io_uring, the same 3 files, QD32) as the ceiling of the 3 "drives".
# vhostd's reactor pinned to CPU 0 (one reactor, --poll always, --cpus 0); its other threads (the
# pool's committer, control threads) run where the scheduler puts them; blkbench and fio on
# CPU 1. The prefill repeats until every chunk of the volume is allocated. The plain file runs
# with submit-batch=32: tmpfs completes a read inside the submitting syscall, so the file
# backend's default (one io_uring_enter per request, right for real devices) would cost it 2.5x
# against the pool's channel, which hands its SQEs over once per pass.
#   bench/pool.sh [BUILD (build)] [ROUNDS (5)] [SECONDS (3)]
set -euo pipefail
cd "$(dirname "$0")/.."
B=${1:-build} ROUNDS=${2:-5} SECS=${3:-3}
VH=$B/vhostd CTL=$B/vhostctl BB=$B/blkbench
TMP=$(mktemp -d /dev/shm/vhostd-poolbench.XXXXXX)
PID=""
cleanup() { [[ -n $PID ]] && kill "$PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT
export VHOSTD_RPC=$TMP/api.sock
SIZE_MIB=2048
for i in 0 1 2; do truncate -s 1600M "$TMP/d$i"; done
# The plain file written end to end, as the pool volume will be (tmpfs reads of holes take
# another path in the kernel: io_uring hands them to its worker threads).
dd if=/dev/zero of="$TMP/file.img" bs=1M count=$SIZE_MIB status=none
start() {
  rm -f "$TMP/api.sock" "$TMP/v.sock"
  "$VH" --threads 1 --cpus 0 --poll always --log-level warn --rpc "$TMP/api.sock" "$@" >>"$TMP/log" 2>&1 &
  PID=$!
  for _ in $(seq 100); do [[ -S $TMP/api.sock ]] && break; sleep 0.05; done
}
stop() { kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""; }
bb() {  # bb LABEL ARGS...: one blkbench run on $TMP/v.sock, its JSON recorded under LABEL
  local label=$1; shift
  for _ in $(seq 100); do [[ -S $TMP/v.sock ]] && break; sleep 0.05; done
  echo "$label|$(taskset -c 1 "$BB" --socket "$TMP/v.sock" --json "$@")" >>"$TMP/runs"
}
: >"$TMP/runs"
# The pool, and a volume allocated end to end.
start
"$CTL" pool create tank "$TMP/d0" "$TMP/d1" "$TMP/d2" >/dev/null
"$CTL" volume create tank/full ${SIZE_MIB}M >/dev/null
"$CTL" add blk "socket=$TMP/v.sock,volume=tank/full,queues=1" >/dev/null
for _ in $(seq 20); do
  taskset -c 1 "$BB" --socket "$TMP/v.sock" --rw write --bs 1048576 --qd 8 --seconds 4 >/dev/null
  alloc=$("$CTL" --json call volume_list '{}' | python3 -c 'import json,sys; print([v["allocated"] for v in json.load(sys.stdin)["volumes"] if v["name"]=="tank/full"][0])')
  [[ $alloc == $((SIZE_MIB << 20)) ]] && break
done
stop
[[ $alloc == $((SIZE_MIB << 20)) ]] || { echo "pool.sh: only $alloc bytes of tank/full allocated after the prefill" >&2; exit 1; }
echo "pool.sh: tank/full allocated end to end" >&2
steady() {  # steady pool|file RW
  if [[ $1 == pool ]]; then
    start --pool "drives=$TMP/d0:$TMP/d1:$TMP/d2" --blk "socket=$TMP/v.sock,volume=tank/full,queues=1"
  else
    start --blk "socket=$TMP/v.sock,path=$TMP/file.img,queues=1,submit-batch=32"
  fi
  bb "$1 $2 4k QD32" --rw "$2" --bs 4096 --qd 32 --seconds "$SECS" --ramp 1
  stop
}
for r in $(seq "$ROUNDS"); do
  for rw in randread randwrite; do
    if (( r % 2 )); then steady file $rw; steady pool $rw; else steady pool $rw; steady file $rw; fi
  done
  echo "pool.sh: round $r of $ROUNDS" >&2
done
# First writes: each round a fresh thin volume.
for r in $(seq "$ROUNDS"); do
  start --pool "drives=$TMP/d0:$TMP/d1:$TMP/d2"
  "$CTL" volume create tank/fresh ${SIZE_MIB}M >/dev/null
  "$CTL" add blk "socket=$TMP/v.sock,volume=tank/fresh,queues=1" --id fresh >/dev/null
  bb "thin first write seq 1M QD4" --rw write --bs 1048576 --qd 4 --seconds 1
  "$CTL" remove fresh >/dev/null; "$CTL" volume delete tank/fresh >/dev/null
  "$CTL" volume create tank/fresh ${SIZE_MIB}M >/dev/null
  "$CTL" add blk "socket=$TMP/v.sock,volume=tank/fresh,queues=1" --id fresh >/dev/null
  bb "thin first write rand 4k QD32" --rw randwrite --bs 4096 --qd 32 --seconds "$SECS"
  "$CTL" remove fresh >/dev/null; "$CTL" volume delete tank/fresh >/dev/null
  "$CTL" add blk "socket=$TMP/v.sock,volume=tank/full,queues=1" --id full >/dev/null
  bb "allocated seq 1M QD4" --rw write --bs 1048576 --qd 4 --seconds 1
  stop
  start --blk "socket=$TMP/v.sock,path=$TMP/file.img,queues=1,submit-batch=32"
  bb "file seq 1M QD4" --rw write --bs 1048576 --qd 4 --seconds 1
  stop
done
# Native fio on the three files (the "drives"), on CPU 1.
fio_native() {
  taskset -c 1 fio --name=native --ioengine=io_uring --direct=0 --rw="$1" --bs=4k --iodepth=32 \
    --filename="$TMP/d0:$TMP/d1:$TMP/d2" --size=700M --runtime="$SECS" --time_based --ramp_time=1 \
    --output-format=json 2>/dev/null | python3 -c 'import json,sys; j=json.load(sys.stdin)["jobs"][0]; d=j["read"] if j["read"]["iops"] else j["write"]; print(json.dumps({"iops": d["iops"], "lat_p50_us": d["clat_ns"]["percentile"]["50.000000"]/1000, "lat_p99_us": d["clat_ns"]["percentile"]["99.000000"]/1000, "mbps": d["bw"]*1024/1e6}))'
}
for r in $(seq "$ROUNDS"); do
  echo "native $(echo randread) 4k QD32|$(fio_native randread)" >>"$TMP/runs"
  echo "native randwrite 4k QD32|$(fio_native randwrite)" >>"$TMP/runs"
done
python3 - "$TMP/runs" "$ROUNDS" <<'PY'
import json, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    cell, js = line.rstrip("\n").split("|", 1)
    runs.setdefault(cell, []).append(json.loads(js))
def med(cell, k):
    return statistics.median(x.get(k, 0) for x in runs[cell])
print("| cell | IOPS | MB/s | p50 µs | p99 µs |")
print("| --- | ---: | ---: | ---: | ---: |")
for cell, xs in runs.items():
    mbps = med(cell, "mbps") if "mbps" in xs[0] else med(cell, "iops") * (1048576 if "1M" in cell else 4096) / 1e6
    print(f"| {cell} | {med(cell,'iops'):,.0f} | {mbps:,.0f} | {med(cell,'lat_p50_us'):.1f} | {med(cell,'lat_p99_us'):.1f} |")
print()
for rw in ("randread", "randwrite"):
    a, b = runs[f"file {rw} 4k QD32"], runs[f"pool {rw} 4k QD32"]
    r = [y["iops"] / x["iops"] for x, y in zip(a, b)]
    print(f"- pool / file, {rw} 4k QD32, paired per round: median {statistics.median(r):.3f} (min {min(r):.3f}, max {max(r):.3f})")
    n = runs.get(f"native {rw} 4k QD32")
    if n:
        print(f"- pool / native fio on the 3 files, {rw}: {statistics.median(x['iops'] for x in b) / statistics.median(x['iops'] for x in n):.3f}")
print(f"\n{sys.argv[2]} rounds (medians).")
PY
