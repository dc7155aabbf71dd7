#!/usr/bin/env bash
# Runs blkbench against vhostd and qemu-storage-daemon, side by side in one run, and writes a
# markdown table to bench/results/<date>-<host>.md.
#
#   bench/run.sh [--quick] [--rounds N] [--seconds S]
#
# Each cell: a fresh backend process per run, backends alternating A B A B, N rounds, median
# with min-max. Backend pinned to CPU 0 (vhostd: 1 reactor), blkbench pinned to CPU 1.
# --quick: one round of 1 s per cell (a smoke run; CI uses it so the benchmark can't rot).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=3 SECONDS_PER=5 RAMP=1 QUICK=0
while [[ $# -gt 0 ]]; do
  case $1 in
    --quick) QUICK=1 ROUNDS=1 SECONDS_PER=1 RAMP=0.3; shift ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --seconds) SECONDS_PER=$2; shift 2 ;;
    *) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
BUILD=${BUILD:-build}
[[ -x $BUILD/vhostd && -x $BUILD/blkbench ]] || { echo "run.sh: build first (scripts/build.sh)" >&2; exit 1; }
TMP=$(mktemp -d /tmp/vhostd-bench.XXXXXX)
BPID=""
cleanup() { [[ -n $BPID ]] && kill "$BPID" 2>/dev/null; wait 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT
FILE=$TMP/disk.img
# A fully written file, so reads hit allocated blocks.
dd if=/dev/zero of="$FILE" bs=1M count=1024 status=none

start_backend() {  # kind target(null|file) [vhostd poll mode] -> sets BPID, SOCK
  SOCK=$TMP/$1-$2.sock
  rm -f "$SOCK"
  case $1 in
    vhostd)
      local spec="socket=$SOCK,backend=null,size=1G,queues=2"
      [[ $2 == file ]] && spec="socket=$SOCK,path=$FILE,direct=on,queues=2"
      taskset -c 0 "$BUILD/vhostd" --blk "$spec" --threads 1 --cpus 0 --poll "${3:-always}" --log-level warn \
        >"$TMP/backend.log" 2>&1 &
      ;;
    qsd)
      local bd="driver=null-co,node-name=d,size=1073741824,read-zeroes=on"
      [[ $2 == file ]] && bd="driver=file,node-name=d,filename=$FILE,cache.direct=on,aio=io_uring"
      taskset -c 0 qemu-storage-daemon --blockdev "$bd" \
        --export type=vhost-user-blk,id=e,node-name=d,addr.type=unix,addr.path="$SOCK",writable=on,num-queues=2 \
        >"$TMP/backend.log" 2>&1 &
      ;;
  esac
  BPID=$!
  for _ in $(seq 100); do [[ -S $SOCK ]] && return 0; sleep 0.05; done
  echo "run.sh: $1 did not create its socket" >&2; cat "$TMP/backend.log" >&2; exit 1
}
stop_backend() { kill "$BPID" 2>/dev/null || true; wait "$BPID" 2>/dev/null || true; BPID=""; }

# cell: target rw qd notify [rate vhostd-poll-mode]. A rate makes blkbench open-loop at that many
# requests/s: the efficiency cell (backend CPU per request at a fixed load; vhostd adaptive).
CELLS=("null randread 32 poll" "null randread 1 poll" "null randread 32 call" "null randread 1 call"
       "file randread 32 poll" "file randread 1 poll" "file randwrite 32 poll"
       "null randread 32 call 100000 adaptive")
[[ $QUICK == 1 ]] && CELLS=("null randread 32 poll" "file randread 1 call" "null randread 32 call 20000 adaptive")
declare -A RES
for cell in "${CELLS[@]}"; do
  read -r target rw qd notify rate pollmode <<<"$cell"
  for round in $(seq "$ROUNDS"); do
    for kind in vhostd qsd; do
      start_backend "$kind" "$target" "${pollmode:-always}"
      out=$(taskset -c 1 "$BUILD/blkbench" --socket "$SOCK" --rw "$rw" --qd "$qd" --notify "$notify" --bs 4096 \
            --rate "${rate:-0}" --seconds "$SECONDS_PER" --ramp "$RAMP" --cpus 1 --backend-pid "$BPID" --json)
      stop_backend
      RES["$cell|$kind|$round"]=$out
      echo "$kind $cell round $round: $out" >&2
    done
  done
done

# Native ceiling for the file cells: fio with io_uring, O_DIRECT, same file, same CPU.
declare -A FIO
if command -v fio >/dev/null; then
  for qd in 1 32; do
    for rw in randread randwrite; do
      FIO["$rw|$qd"]=$(taskset -c 1 fio --name=n --filename="$FILE" --ioengine=io_uring --direct=1 --rw="$rw" \
        --bs=4k --iodepth="$qd" --time_based --runtime="$SECONDS_PER" --ramp_time="$RAMP" --output-format=json \
        2>/dev/null | python3 -c 'import json,sys; j=json.load(sys.stdin)["jobs"][0]; k="read" if j["read"]["io_bytes"] else "write"; print(int(j[k]["iops"]), round(j[k]["clat_ns"]["percentile"]["50.000000"]/1000,1))')
    done
  done
fi

# The generator's own ceiling: blkbench against an in-process responder (CPU 1 generator, CPU 0
# responder). A backend cannot be measured above this.
declare -A SELF
for qd in 32 1; do
  SELF[$qd]=$("$BUILD/blkbench" --self --qd "$qd" --notify poll --seconds "$SECONDS_PER" --ramp "$RAMP" --cpus 1,0 --json \
    | python3 -c 'import json,sys; j=json.load(sys.stdin); print("{:,.0f} IOPS, p50 {:.2f} us".format(j["iops"], j["lat_p50_us"]))')
done

cellstat() {  # cell kind field -> "median (min-max)"
  local vals=()
  for round in $(seq "$ROUNDS"); do
    vals+=("$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "${RES["$1|$2|$round"]}" "$3")")
  done
  python3 - "$3" "${vals[@]}" <<'PY'
import statistics, sys
f = sys.argv[1]; v = sorted(float(x) for x in sys.argv[2:])
fmt = (lambda x: f"{x:,.0f}") if f in ("iops", "iops_per_backend_cpu_s") else (lambda x: f"{x:.2f}")
print(fmt(statistics.median(v)) + (f" ({fmt(v[0])}–{fmt(v[-1])})" if len(v) > 1 else ""))
PY
}

mkdir -p bench/results
OUT=bench/results/$(date +%F)-$(hostname -s).md
[[ $QUICK == 1 ]] && OUT=$BUILD/bench-smoke.md  # a smoke run is no result worth keeping
{
  echo "# blkbench: vhostd vs qemu-storage-daemon ($(date +%F))"
  echo
  echo "Machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(free -g | awk '/Mem/{print $2}') GiB, kernel $(uname -r)."
  echo "vhostd $(git rev-parse --short HEAD 2>/dev/null || echo '?'): 1 reactor pinned to CPU 0, --poll always."
  echo "qemu-storage-daemon $(qemu-storage-daemon --version | head -1 | awk '{print $3}'): pinned to CPU 0. blkbench pinned to CPU 1."
  echo "4 KiB requests, 1 queue, ${SECONDS_PER} s measured after ${RAMP} s ramp, ${ROUNDS} round(s), fresh backend per run,"
  echo "backends alternating; median (min–max). Backend CPU is the backend process's user+system time over the window."
  echo
  echo "Generator ceiling (blkbench --self, 4 KiB randread, poll): QD32 ${SELF[32]}; QD1 ${SELF[1]}."
  echo "blkbench negotiates INFLIGHT_SHMFD when the backend offers it (as QEMU does): vhostd tracks every request."
  echo
  echo "| target | rw | QD | notify | backend | IOPS | p50 µs | p99 µs | kicks/IO | calls/IO | backend CPU s | IOPS per backend CPU-s |"
  echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
  for cell in "${CELLS[@]}"; do
    read -r target rw qd notify rate pollmode <<<"$cell"
    [[ -n ${rate:-} ]] && notify="$notify, ${rate}/s fixed, vhostd --poll $pollmode"
    for kind in vhostd qsd; do
      echo "| $target | $rw | $qd | $notify | $kind | $(cellstat "$cell" $kind iops) | $(cellstat "$cell" $kind lat_p50_us) | $(cellstat "$cell" $kind lat_p99_us) | $(cellstat "$cell" $kind kicks_per_io) | $(cellstat "$cell" $kind calls_per_io) | $(cellstat "$cell" $kind backend_cpu_s) | $(cellstat "$cell" $kind iops_per_backend_cpu_s) |"
    done
  done
  if [[ ${#FIO[@]} -gt 0 ]]; then
    echo
    echo "Native ceiling (fio, io_uring, O_DIRECT, same file, CPU 1): IOPS and p50 µs"
    echo
    for k in "${!FIO[@]}"; do echo "- $k: ${FIO[$k]}"; done | sort
  fi
} >"$OUT"
cat "$OUT"
