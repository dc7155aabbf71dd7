#!/usr/bin/env bash
# QoS: does a limit hold, and does it leave the device next to it alone? One vhostd (two
# reactors) serves three null devices: "iops" limited with iops=, "bps" limited with bps=, and
# "free" without limits. blkbench measures, each run ROUNDS times:
#   free alone                 (the baseline)
#   iops-limited + free        (concurrently: the limited device's IOPS vs its limit; free's IOPS)
#   paced + free               (the control: the same device without a limit, driven open loop at
#                               the limit's rate by blkbench --rate; free's IOPS here vs with the
#                               limit is what QoS costs a neighbour: the two share a reactor)
#   bps-limited + free         (concurrently, 64 KiB requests: MB/s vs the limit; free's IOPS)
#   the iops limit changed at runtime (vhostctl qos) to half, then measured again
# and prints a markdown table of medians. Nothing is asserted: the numbers go to bench/results.
#
#   bench/qos.sh [--iops 20000] [--bps 50M] [--rounds 3] [--seconds 5] [--build build]
set -euo pipefail
cd "$(dirname "$0")/.."
IOPS=20000 BPS=50M ROUNDS=3 SECS=5 BUILD=build
while [[ $# -gt 0 ]]; do
  case $1 in
    --iops) IOPS=$2; shift 2 ;;
    --bps) BPS=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --seconds) SECS=$2; shift 2 ;;
    --build) BUILD=$2; shift 2 ;;
    *) echo "qos.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
BB=$BUILD/blkbench VHOSTD=$BUILD/vhostd CTL=$BUILD/vhostctl
[[ -x $BB && -x $VHOSTD && -x $CTL ]] || { echo "qos.sh: build $BUILD first (vhostd, vhostctl, blkbench)" >&2; exit 2; }
TMP=$(mktemp -d /tmp/vhostd-qos.XXXXXX)
BPID=""
cleanup() { [[ -n $BPID ]] && kill "$BPID" 2>/dev/null; wait 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT
"$VHOSTD" --threads 2 --poll adaptive --log-level warn --rpc "$TMP/rpc.sock" \
  --blk "id=iops,socket=$TMP/iops.sock,backend=null,size=1G,queues=1,iops=$IOPS" \
  --blk "id=bps,socket=$TMP/bps.sock,backend=null,size=1G,queues=1,bps=$BPS" \
  --blk "id=free,socket=$TMP/free.sock,backend=null,size=1G,queues=1" >"$TMP/log" 2>&1 &
BPID=$!
for _ in $(seq 50); do [[ -S $TMP/free.sock && -S $TMP/rpc.sock ]] && break; sleep 0.1; done
bench() {  # socket bs qd [blkbench args] -> json
  local sock=$1 bs=$2 qd=$3; shift 3
  "$BB" --socket "$TMP/$sock.sock" --bs "$bs" --qd "$qd" --rw randread --seconds "$SECS" --ramp 1 --notify call --json "$@"
}
: >"$TMP/runs"
for r in $(seq "$ROUNDS"); do
  echo "alone|free|$(bench free 4096 32)" >>"$TMP/runs"
  bench iops 4096 32 >"$TMP/a" & pa=$!
  bench free 4096 32 >"$TMP/b"; wait $pa
  echo "with-iops|iops|$(cat "$TMP/a")" >>"$TMP/runs"; echo "with-iops|free|$(cat "$TMP/b")" >>"$TMP/runs"
  "$CTL" --socket "$TMP/rpc.sock" qos iops iops=0 >/dev/null
  bench iops 4096 32 --rate "$IOPS" >"$TMP/a" & pa=$!
  bench free 4096 32 >"$TMP/b"; wait $pa
  echo "paced|paced|$(cat "$TMP/a")" >>"$TMP/runs"; echo "paced|free|$(cat "$TMP/b")" >>"$TMP/runs"
  "$CTL" --socket "$TMP/rpc.sock" qos iops "iops=$IOPS" >/dev/null
  bench bps 65536 32 >"$TMP/a" & pa=$!
  bench free 4096 32 >"$TMP/b"; wait $pa
  echo "with-bps|bps|$(cat "$TMP/a")" >>"$TMP/runs"; echo "with-bps|free|$(cat "$TMP/b")" >>"$TMP/runs"
  "$CTL" --socket "$TMP/rpc.sock" qos iops "iops=$((IOPS / 2))" >/dev/null
  echo "halved|iops|$(bench iops 4096 32)" >>"$TMP/runs"
  "$CTL" --socket "$TMP/rpc.sock" qos iops "iops=$IOPS" >/dev/null
  echo "qos.sh: round $r of $ROUNDS done" >&2
done
"$CTL" --socket "$TMP/rpc.sock" stats iops >&2 || true
python3 - "$TMP/runs" "$IOPS" "$BPS" "$ROUNDS" "$SECS" <<'PY'
import json, statistics, sys
runs, iops_limit, bps_text, rounds, secs = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
bps_limit = int(bps_text[:-1]) * mult[bps_text[-1].upper()] if bps_text[-1].upper() in mult else int(bps_text)
cells = {}
for line in open(runs):
    phase, dev, js = line.rstrip("\n").split("|", 2)
    cells.setdefault((phase, dev), []).append(json.loads(js))
def med(rs, k): return statistics.median(r[k] for r in rs)
print(f"QoS on null devices: {rounds} rounds of {secs} s, medians (randread, QD32, blkbench --notify call)\n")
print("| run | device | limit | measured | vs limit | p50 us | p99 us |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for (phase, dev), rs in cells.items():
    if dev == "iops":
        lim = iops_limit if phase != "halved" else iops_limit // 2
        got = med(rs, "iops")
        print(f"| {phase} | iops (4 KiB) | {lim} IOPS | {got:.0f} IOPS | {100 * (got / lim - 1):+.1f} % | {med(rs, 'lat_p50_us'):.1f} | {med(rs, 'lat_p99_us'):.1f} |")
    elif dev == "bps":
        got = med(rs, "iops") * 65536
        print(f"| {phase} | bps (64 KiB) | {bps_limit / 1e6:.1f} MB/s | {got / 1e6:.1f} MB/s | {100 * (got / bps_limit - 1):+.1f} % | {med(rs, 'lat_p50_us'):.1f} | {med(rs, 'lat_p99_us'):.1f} |")
    elif dev == "paced":
        print(f"| {phase} | unlimited, open loop at {iops_limit} IOPS (4 KiB) | none | {med(rs, 'iops'):.0f} IOPS | | {med(rs, 'lat_p50_us'):.1f} | {med(rs, 'lat_p99_us'):.1f} |")
    else:
        print(f"| {phase} | free (4 KiB) | none | {med(rs, 'iops'):.0f} IOPS | | {med(rs, 'lat_p50_us'):.1f} | {med(rs, 'lat_p99_us'):.1f} |")
PY
