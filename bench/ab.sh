#!/usr/bin/env bash
# Two vhostd builds side by side: paired, alternating runs (A B, B A, ...) of blkbench cells on
# the same machine minutes, for a change that must not move the numbers (a refactor) or should
# (a data-path change). Prints a markdown table: per cell the median of A and of B, and the
# median (min-max) of the per-round paired ratios B/A, which is what to judge on this noisy VM.
#
#   bench/ab.sh --a OLD/vhostd --b NEW/vhostd [--rounds N] [--seconds S] [--blkbench PATH]
#               [--cell "null|file RW QD"]...   (only these cells; repeatable)
#               [--notify poll|call]            (blkbench's completion mode; default poll)
#               [--a-bb ARGS] [--b-bb ARGS]     (extra blkbench arguments for A or B, e.g. the
#                                                same vhostd twice with --b-bb --packed: split
#                                                vs packed rings)
#
# Backend on CPU 0 (one reactor, --poll always), blkbench on CPU 1, as bench/run.sh does. Cells:
# null randread/randwrite QD32 and QD1 (IOPS, p50), file randread QD32 and QD1 on an O_DIRECT
# file. Needs a build (blkbench) and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
A="" B="" ROUNDS=6 SECS=3 NOTIFY=poll BB=${BUILD:-build}/blkbench A_BB="" B_BB=""
CELLS=("null randread 32" "null randwrite 32" "null randread 1" "file randread 32" "file randread 1")
PICKED=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --a) A=$2; shift 2 ;;
    --b) B=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --seconds) SECS=$2; shift 2 ;;
    --blkbench) BB=$2; shift 2 ;;
    --cell) PICKED+=("$2"); shift 2 ;;
    --notify) NOTIFY=$2; shift 2 ;;
    --a-bb) A_BB=$2; shift 2 ;;
    --b-bb) B_BB=$2; shift 2 ;;
    *) echo "ab.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ -x $A && -x $B && -x $BB ]] || { echo "ab.sh: --a and --b name two vhostd binaries; blkbench at $BB" >&2; exit 2; }
TMP=$(mktemp -d /tmp/vhostd-ab.XXXXXX)
BPID=""
cleanup() { [[ -n $BPID ]] && kill "$BPID" 2>/dev/null; wait 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT
dd if=/dev/zero of="$TMP/disk.img" bs=1M count=512 status=none
(( ${#PICKED[@]} )) && CELLS=("${PICKED[@]}")
: >"$TMP/runs"
one() {  # bin label cell...
  local bin=$1 label=$2 target=$3 rw=$4 qd=$5 spec sock=$TMP/s.sock extra=()
  if [[ $label == B ]]; then read -ra extra <<<"$B_BB"; else read -ra extra <<<"$A_BB"; fi
  spec="socket=$sock,backend=null,size=1G"
  [[ $target == file ]] && spec="socket=$sock,path=$TMP/disk.img,direct=on"
  rm -f "$sock"
  taskset -c 0 "$bin" --blk "$spec" --threads 1 --cpus 0 --poll always --log-level warn >"$TMP/log" 2>&1 &
  BPID=$!
  for _ in $(seq 50); do [[ -S $sock ]] && break; sleep 0.1; done
  out=$(taskset -c 1 "$BB" --socket "$sock" --bs 4096 --seconds "$SECS" --ramp 1 --qd "$qd" --rw "$rw" \
        --notify "$NOTIFY" --json "${extra[@]}")
  kill "$BPID"; wait "$BPID" 2>/dev/null || true; BPID=""
  echo "$label|$target $rw QD$qd|$out" >>"$TMP/runs"
}
for r in $(seq "$ROUNDS"); do
  for cell in "${CELLS[@]}"; do
    # Alternate which build goes first, so drift within a round favours neither.
    if (( r % 2 )); then one "$A" A $cell; one "$B" B $cell; else one "$B" B $cell; one "$A" A $cell; fi
  done
  echo "ab.sh: round $r of $ROUNDS done" >&2
done
python3 - "$TMP/runs" "$ROUNDS" <<'PY'
import json, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    label, cell, js = line.rstrip("\n").split("|", 2)
    runs.setdefault(cell, {}).setdefault(label, []).append(json.loads(js))
print("| cell | A IOPS | B IOPS | B/A IOPS, paired | A p50 µs | B p50 µs | B/A p50, paired |")
print("| --- | ---: | ---: | --- | ---: | ---: | --- |")
for cell, by in runs.items():
    a, b = by["A"], by["B"]
    def med(xs, k): return statistics.median(x[k] for x in xs)
    def paired(k):
        r = [y[k] / x[k] for x, y in zip(a, b) if x[k] > 0]
        return f"{statistics.median(r):.3f} ({min(r):.3f}–{max(r):.3f})" if r else "-"
    print(f"| {cell} | {med(a,'iops'):,.0f} | {med(b,'iops'):,.0f} | {paired('iops')} | "
          f"{med(a,'lat_p50_us'):.2f} | {med(b,'lat_p50_us'):.2f} | {paired('lat_p50_us')} |")
print(f"\n{sys.argv[2]} rounds; A = --a, B = --b. Per round, IOPS A / B:")
for cell, by in runs.items():
    print(f"- {cell}: " + ", ".join(f"{x['iops']/1e3:,.0f}k / {y['iops']/1e3:,.0f}k" for x, y in zip(by["A"], by["B"])))
PY
