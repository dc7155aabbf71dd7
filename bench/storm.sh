#!/usr/bin/env bash
# A guest's error storm (issue 18): one device's guest sends nothing but bad requests (every one
# aimed past the device's end: vhostd answers each with an I/O error and logs it rate-limited)
# as fast as it can, QD32, while a neighbour device on the same reactor serves a probe of 1,000
# 4 KiB reads/s. Against the same storm made of good requests, and the probe alone. Reported: the
# storm's request rate, the probe's p50/p99, the backend's CPU and how much the log grew.
#
#   bench/storm.sh [BUILD_DIR] [--rounds 3] [--seconds 5] [--out FILE.md]
#
# vhostd: --threads 1 --cpus 0, both devices null (no storage in the way); blkbench on CPU 1, its
# probe thread SCHED_FIFO (--light-rt) so that the storm generator's spinning does not decide the
# probe's latency. Rounds alternate the order of the three cells. Each bad cell must send at least
# one million bad requests; the run fails if vhostd dies, a bad request gets anything but an I/O
# error, or a probe read fails.
set -euo pipefail
build=build
rounds=3
seconds=5
out=""
if [[ $# -gt 0 && $1 != --* ]]; then build=$1; shift; fi
while [[ $# -gt 0 ]]; do
  case $1 in
    --rounds) rounds=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "storm: unknown argument $1" >&2; exit 2 ;;
  esac
done
tmp=$(mktemp -d /tmp/vhostd-storm.XXXXXX)
pid=""
cleanup() { if [[ -n $pid ]]; then kill -9 "$pid" 2>/dev/null || true; fi; rm -rf "$tmp"; }
trap cleanup EXIT
"$build/vhostd" --threads 1 --cpus 0 --blk "socket=$tmp/storm.sock,backend=null,size=1G" \
  --blk "socket=$tmp/p0.sock,backend=null,size=64M" >"$tmp/log" 2>&1 &
pid=$!
for _ in $(seq 200); do grep -q "vhostd ready" "$tmp/log" && break; sleep 0.025; done
kill -0 "$pid" || { echo "storm: vhostd died: $(tail -3 "$tmp/log")"; exit 1; }

probe=(--light-sockets "$tmp/p{}.sock" --light-count 1 --light-rate 1000 --light-rt)
cell() {  # cell alone|good|bad -> one JSON line (plus log_bytes) on stdout
  local mode=$1 before after j
  before=$(stat -c %s "$tmp/log")
  case $mode in
    alone) j=$("$build/blkbench" "${probe[@]}" --seconds "$seconds" --ramp 1 --backend-pid "$pid" --json) ;;
    good) j=$("$build/blkbench" --socket "$tmp/storm.sock" --qd 32 --cpus 1 "${probe[@]}" --seconds "$seconds" \
            --ramp 1 --backend-pid "$pid" --json) ;;
    bad) j=$("$build/blkbench" --socket "$tmp/storm.sock" --qd 32 --cpus 1 --bad "${probe[@]}" --seconds "$seconds" \
           --ramp 1 --backend-pid "$pid" --json) ;;
  esac
  after=$(stat -c %s "$tmp/log")
  kill -0 "$pid" || { echo "storm: vhostd died in the $mode cell" >&2; exit 1; }
  python3 -c 'import json,sys; d=json.loads(sys.argv[1]); d["cell"]=sys.argv[2]; d["log_bytes"]=int(sys.argv[3]); print(json.dumps(d))' \
    "$j" "$mode" $((after - before))
}
results=$tmp/results.jsonl
for ((r = 0; r < rounds; r++)); do
  if ((r % 2 == 0)); then order="alone good bad"; else order="bad good alone"; fi
  for c in $order; do cell "$c" >>"$results"; done
done
kill -TERM "$pid"
st=0
wait "$pid" || st=$?
pid=""
[[ $st == 0 ]] || { echo "storm: vhostd exited $st on SIGTERM"; exit 1; }
total_log=$(stat -c %s "$tmp/log")
report=$(python3 - "$results" "$rounds" "$seconds" "$total_log" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
rounds, seconds, total_log = sys.argv[2], sys.argv[3], int(sys.argv[4])
def med(xs):
    return statistics.median(xs) if xs else 0
def rng(xs, f="{:.1f}"):
    return (f + " ({}-{})").format(med(xs), f.format(min(xs)), f.format(max(xs))) if xs else "-"
print(f"{rounds} rounds of {seconds} s per cell; medians (min-max)\n")
print("| cell | storm requests/s | bad requests in the cell | probe p50 (us) | probe p99 (us) | probe errors | backend CPU % | log growth (bytes) |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for cell in ("alone", "good", "bad"):
    rs = [r for r in rows if r["cell"] == cell]
    iops = [r.get("iops", 0) for r in rs]
    bad = [int(r.get("iops", 0) * r["seconds"]) if cell == "bad" else 0 for r in rs]
    print(f"| {cell} | {rng(iops, '{:.0f}') if cell != 'alone' else '-'} | {rng(bad, '{:.0f}') if cell == 'bad' else '-'} "
          f"| {rng([r['light_p50_us'] for r in rs])} | {rng([r['light_p99_us'] for r in rs])} "
          f"| {sum(r['light_errors'] for r in rs)} | {rng([r['backend_cpu_pct'] for r in rs])} "
          f"| {rng([r['log_bytes'] for r in rs], '{:.0f}')} |")
bad_total = sum(int(r.get("iops", 0) * r["seconds"]) for r in rows if r["cell"] == "bad")
print(f"\nbad requests in all: {bad_total} (measured windows only; ramps add more); vhostd's whole log: {total_log} bytes")
low = [r for r in rows if r["cell"] == "bad" and r.get("iops", 0) * r["seconds"] < 1e6]
if low:
    print(f"FAIL: {len(low)} bad cell(s) sent fewer than one million bad requests")
    sys.exit(1)
EOF
) || { echo "$report"; exit 1; }
echo "$report"
if [[ -n $out ]]; then
  {
    echo "# Error storm: $(date -u +%Y-%m-%dT%H:%MZ), $(uname -r), $(nproc) CPUs"
    echo
    echo '`bench/storm.sh`'
    echo
    echo "$report"
    echo
    echo "Raw cells:"
    echo
    echo '```'
    cat "$results"
    echo '```'
  } >"$out"
fi
