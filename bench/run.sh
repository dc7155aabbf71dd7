#!/usr/bin/env bash
# vhostd vs qemu-storage-daemon, side by side in one run, with fio's native ceiling on the same
# file and blkbench's own ceiling; writes bench/results/<date>-<host>.md (+ PNG plots and the raw
# runs as JSON lines next to it). See bench/README.md for the matrix and the targets section.
#
#   bench/run.sh [--quick] [--rounds N] [--target-rounds N] [--seconds S] [--ramp S]
#                [--vhostd-poll always|adaptive]
#
# Every cell: a fresh backend process per run, backends alternating A B (C = native fio on the
# file cells) per round, N rounds, median with min-max. The two file target cells (randread QD32
# and QD1, 1 queue, poll) and the fixed-rate cell get --target-rounds (default 8): the VM's disk
# drifts by 20 % between minutes, wakeup costs vary from run to run, and the targets are judged
# on per-round paired ratios, which need more than 3 pairs. Backend pinned to CPU 0 (vhostd: one
# reactor, --threads 1 --cpus 0; qemu-storage-daemon: taskset), blkbench (and fio) on CPU 1; two
# queues are two blkbench threads, both on CPU 1.
# Before any measurement: verify checks (blkbench --verify must pass on vhostd's and
# qemu-storage-daemon's file device and on the generator's own responder, and must fail on
# vhostd's null device, which drops writes). A wrong expectation fails the run.
# --quick: a representative subset, one round of 1 s per cell, written to $BUILD/bench-smoke.md:
# the smoke run CI executes so the benchmark cannot rot. Exit status non-zero on any failure;
# no speed is asserted (the targets section reports PASS/MISS, it does not fail the run).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=3 TARGET_ROUNDS=8 SECONDS_PER=5 RAMP=1 QUICK=0 VPOLL=always RATE=100000 FILE_MB=1024
while [[ $# -gt 0 ]]; do
  case $1 in
    --quick) QUICK=1 ROUNDS=1 TARGET_ROUNDS=1 SECONDS_PER=1 RAMP=0.3 RATE=20000 FILE_MB=256; shift ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --target-rounds) TARGET_ROUNDS=$2; shift 2 ;;
    --seconds) SECONDS_PER=$2; shift 2 ;;
    --ramp) RAMP=$2; shift 2 ;;
    --vhostd-poll)
      VPOLL=$2; shift 2
      [[ $VPOLL == always || $VPOLL == adaptive ]] || { echo "run.sh: --vhostd-poll always|adaptive" >&2; exit 2; } ;;
    *) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
BUILD=${BUILD:-build}
[[ -x $BUILD/vhostd && -x $BUILD/blkbench ]] || { echo "run.sh: build first (scripts/build.sh)" >&2; exit 1; }
command -v qemu-storage-daemon >/dev/null || { echo "run.sh: qemu-storage-daemon missing (scripts/setup.sh)" >&2; exit 1; }
command -v fio >/dev/null || { echo "run.sh: fio missing (scripts/setup.sh)" >&2; exit 1; }
TMP=$(mktemp -d /tmp/vhostd-bench.XXXXXX)
BPID=""
cleanup() { [[ -n $BPID ]] && kill "$BPID" 2>/dev/null; wait 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT
RUNS=$TMP/runs.jsonl
: >"$RUNS"
FILE=$TMP/disk.img
# A fully written file, so reads hit allocated blocks.
dd if=/dev/zero of="$FILE" bs=1M count="$FILE_MB" status=none
ms() { awk -v s="$1" 'BEGIN { printf "%d", s * 1000 }'; }

# Cells. Closed loop: "target rw qd queues notify". The 2-queue devices: both backends offer 2.
CELLS=()
for target in null file; do
  for rw in randread randwrite; do
    for qd in 32 1; do
      for queues in 1 2; do
        for notify in poll call; do CELLS+=("$target $rw $qd $queues $notify"); done
      done
    done
  done
done
[[ $QUICK == 1 ]] && CELLS=("null randread 32 1 poll" "null randread 1 1 poll" "file randread 1 1 poll"
                            "file randwrite 32 2 call")
SELF_QDS=(32 1)
N_CLOSED=${#CELLS[@]}
N_NATIVE=$(printf '%s\n' "${CELLS[@]}" | awk '$1 == "file" { print $2, $3, $4 }' | sort -u | wc -l)
# The target cells never get fewer rounds than the rest.
(( TARGET_ROUNDS < ROUNDS )) && TARGET_ROUNDS=$ROUNDS
TARGET_CELLS=("file randread 32 1 poll" "file randread 1 1 poll")
rounds_of() {  # cell -> its number of rounds
  local t
  for t in "${TARGET_CELLS[@]}"; do [[ $1 == "$t" ]] && { echo "$TARGET_ROUNDS"; return; }; done
  echo "$ROUNDS"
}
N_EXTRA=0
for cell in "${CELLS[@]}"; do N_EXTRA=$(( N_EXTRA + 3 * ($(rounds_of "$cell") - ROUNDS) )); done
N_EXTRA=$(( N_EXTRA + 2 * (TARGET_ROUNDS - ROUNDS) ))  # the fixed-rate cell
N_RUNS=$(( ROUNDS * (2 * N_CLOSED + N_NATIVE + ${#SELF_QDS[@]} + 2 + 2) + N_EXTRA + 4 ))
echo "run.sh: $N_CLOSED closed-loop cells x 2 backends, $N_NATIVE native, ${#SELF_QDS[@]} generator, fixed rate, idle;" \
     "$ROUNDS round(s) of ${SECONDS_PER} s + ${RAMP} s ramp: $N_RUNS runs," \
     "about $(awk -v n="$N_RUNS" -v s="$SECONDS_PER" -v r="$RAMP" 'BEGIN { printf "%.0f", n * (s + r + 0.4) / 60 + 0.5 }') min" >&2

start_backend() {  # kind target pollmode(always|adaptive|default) -> sets BPID, SOCK
  SOCK=$TMP/$1-$2.sock
  rm -f "$SOCK"
  case $1 in
    vhostd)
      local spec="socket=$SOCK,backend=null,size=1G,queues=2" poll=()
      [[ $2 == file ]] && spec="socket=$SOCK,path=$FILE,direct=on,queues=2"
      [[ $3 == default ]] || poll=(--poll "$3")
      taskset -c 0 "$BUILD/vhostd" --blk "$spec" --threads 1 --cpus 0 "${poll[@]}" --log-level warn \
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
  for _ in $(seq 200); do [[ -S $SOCK ]] && return 0; sleep 0.025; done
  echo "run.sh: $1 did not create its socket" >&2; cat "$TMP/backend.log" >&2; exit 1
}
stop_backend() { kill "$BPID" 2>/dev/null || true; wait "$BPID" 2>/dev/null || true; BPID=""; }

record() {  # "json prefix fields" blkbench-or-fio-json -> one line in $RUNS
  echo "{$1,${2:1}" >>"$RUNS"
}

bench() {  # kind target pollmode label round -- blkbench args... : one fresh-backend run, recorded
  local kind=$1 target=$2 pollmode=$3 label=$4 round=$5 out rc=0 dead=0
  shift 6
  start_backend "$kind" "$target" "$pollmode"
  out=$(taskset -c 1 "$BUILD/blkbench" --socket "$SOCK" --bs 4096 --seconds "$SECONDS_PER" --ramp "$RAMP" \
        --cpus 1 --backend-pid "$BPID" --json "$@") || rc=$?
  if [[ $(ps -o stat= -p "$BPID" 2>/dev/null) != [^Z]* ]]; then  # gone, or a zombie not yet waited for
    dead=1
  fi
  stop_backend
  if [[ $rc != 0 || $dead == 1 ]]; then
    echo "run.sh: $kind $label failed (blkbench exit $rc$([[ $dead == 1 ]] && echo ", $kind exited during the run")): blkbench $*" >&2
    cat "$TMP/backend.log" >&2
    exit 1
  fi
  record "\"backend\":\"$kind\",\"target\":\"$target\",\"cell\":\"$label\",\"round\":$round,\"poll\":\"$pollmode\"" "$out"
  echo "$kind $label round $round: $out" >&2
}

native() {  # rw qd jobs round: fio on the same file, io_uring, O_DIRECT, CPU 1; job i owns slice i
  local rw=$1 qd=$2 jobs=$3 round=$4 out
  out=$(taskset -c 1 fio --name=native --filename="$FILE" --ioengine=io_uring --direct=1 --rw="$rw" --bs=4k \
        --iodepth="$qd" --numjobs="$jobs" --group_reporting --size=$(( FILE_MB / jobs ))M \
        --offset_increment=$(( FILE_MB / jobs ))M --time_based --runtime="$(ms "$SECONDS_PER")ms" \
        --ramp_time="$(ms "$RAMP")ms" --lat_percentiles=1 --output-format=json 2>"$TMP/fio.err" \
        | python3 -c '
import json, sys
j = json.load(sys.stdin)["jobs"][0]
d = j["read"] if j["read"]["io_bytes"] else j["write"]
p, c = d["lat_ns"]["percentile"], d["clat_ns"]["percentile"]
print(json.dumps({"iops": round(d["iops"]), "lat_p50_us": p["50.000000"] / 1e3, "lat_p99_us": p["99.000000"] / 1e3,
                  "clat_p50_us": c["50.000000"] / 1e3, "seconds": j["job_runtime"] / 1e3}))') \
    || { echo "run.sh: fio failed ($rw QD$qd x$jobs)" >&2; cat "$TMP/fio.err" >&2; exit 1; }
  record "\"backend\":\"native\",\"target\":\"file\",\"cell\":\"native $rw $qd $jobs\",\"round\":$round,\"rw\":\"$rw\",\"qd\":$qd,\"queues\":$jobs" "$out"
  echo "native $rw QD$qd x$jobs round $round: $out" >&2
}

jget() {  # json key -> value, 0 if the JSON is missing or has no such key
  python3 -c 'import json, sys
try: print(int(json.loads(sys.argv[1])[sys.argv[2]]))
except Exception: print(0)' "$1" "$2"
}

# ---- verify checks first: a wrong answer here makes every number below meaningless.
verify_run() {  # expect(pass|fail) label -- blkbench args... ; records the result
  local expect=$1 label=$2 out rc=0
  shift 3
  out=$("$BUILD/blkbench" --rw randrw --verify --size 4M --seconds 1 --ramp 0.2 --json "$@" 2>"$TMP/verify.err") || rc=$?
  local checked errors
  checked=$(jget "$out" verify_checked) errors=$(jget "$out" verify_errors)
  echo "verify $label: exit $rc, $checked reads checked, $errors mismatches (expected: $expect)" >&2
  if [[ $expect == pass && ! ( $rc == 0 && $checked -gt 0 && $errors == 0 ) ]] ||
     [[ $expect == fail && ! ( $rc == 3 && $errors -gt 0 ) ]]; then
    echo "run.sh: verify check '$label' did not $expect" >&2
    cat "$TMP/verify.err" >&2
    [[ -s $TMP/backend.log ]] && cat "$TMP/backend.log" >&2
    exit 1
  fi
  record "\"backend\":\"verify\",\"cell\":\"$label\",\"expect\":\"$expect\",\"exit\":$rc" "$out"
}
verify_run pass "generator (--self)" -- --self --cpus 1,0
for kind in vhostd qsd; do
  start_backend "$kind" file default
  verify_run pass "$kind file, 2 queues" -- --socket "$SOCK" --queues 2 --cpus 1
  stop_backend
done
start_backend vhostd null default
verify_run fail "vhostd null (drops writes: must fail)" -- --socket "$SOCK" --queues 2 --cpus 1
stop_backend

# ---- the closed-loop matrix, with fio's native run in each round of the file poll cells.
for cell in "${CELLS[@]}"; do
  read -r target rw qd queues notify <<<"$cell"
  for round in $(seq "$(rounds_of "$cell")"); do
    for kind in vhostd qsd; do
      bench "$kind" "$target" "$VPOLL" "$cell" "$round" -- --rw "$rw" --qd "$qd" --queues "$queues" --notify "$notify"
    done
    # One native comparator per (rw, qd, queues): measured with the poll cell (the call cell
    # reuses it), or with the call cell when the matrix has no poll cell for it.
    if [[ $target == file ]] && { [[ $notify == poll ]] ||
         ! printf '%s\n' "${CELLS[@]}" | grep -qx "file $rw $qd $queues poll"; }; then
      native "$rw" "$qd" "$queues" "$round"
    fi
  done
done

# ---- fixed rate (open loop, call mode): backend CPU per request; vhostd in its default adaptive mode.
# Up to 128 outstanding, so the generator stays open loop: at 100 k/s a QD32 cap is hit as soon as
# requests take 320 us (generator wakeup + backend batching on this VM), and a capped client is a
# closed loop, which vhostd's adaptive mode rightly refuses to nap on (reactor/nap_policy.hpp).
for round in $(seq "$TARGET_ROUNDS"); do
  for kind in vhostd qsd; do
    bench "$kind" null default "rate $RATE" "$round" -- --rw randread --qd 128 --queues 1 --notify call --rate "$RATE"
  done
done

# ---- idle: rings started by a connected blkbench that sends nothing; vhostd in its default mode.
for round in $(seq "$ROUNDS"); do
  for kind in vhostd qsd; do
    bench "$kind" null default "idle" "$round" -- --idle --queues 2
  done
done

# ---- the generator's own ceiling: an in-process responder on CPU 0, generator on CPU 1.
for round in $(seq "$ROUNDS"); do
  for qd in "${SELF_QDS[@]}"; do
    out=$("$BUILD/blkbench" --self --qd "$qd" --notify poll --seconds "$SECONDS_PER" --ramp "$RAMP" --cpus 1,0 --json)
    record "\"backend\":\"self\",\"target\":\"null\",\"cell\":\"self $qd\",\"round\":$round" "$out"
    echo "self QD$qd round $round: $out" >&2
  done
done

# ---- the report: markdown with the targets section, plots next to it, raw runs as JSON lines.
if [[ $QUICK == 1 ]]; then
  OUT=$BUILD/bench-smoke.md  # a smoke run is no result worth keeping
else
  mkdir -p bench/results
  stem=bench/results/$(date +%F)-$(hostname -s)
  OUT=$stem.md n=2
  while [[ -e $OUT ]]; do OUT=$stem-$n.md; n=$((n + 1)); done
fi
# ---- density (bench/density.sh): one hot device next to N-1 light ones on one reactor, vhostd
# and qemu-storage-daemon; its own report next to this one (smoke: N = 1 and 16, one round).
if [[ $QUICK == 1 ]]; then
  BUILD=$BUILD bench/density.sh --quick --poll "$VPOLL" --out "${OUT%.md}-density.md" >&2
else
  BUILD=$BUILD bench/density.sh --rounds "$ROUNDS" --seconds "$SECONDS_PER" --ramp "$RAMP" --poll "$VPOLL" \
    --out "${OUT%.md}-density.md" >&2
fi

# ---- remote storage (bench/remote.sh): vhostd's nbd and rbd backends vs qemu-storage-daemon's
# drivers on the same server; their own reports next to this one (smoke: nbdkit only, one round:
# a Ceph cluster's start and fill would add most of a minute to CI, and the rbd backend has its
# tests).
servers=(nbdkit rbd)
[[ $QUICK == 1 ]] && servers=(nbdkit)
for server in "${servers[@]}"; do
  if [[ $QUICK == 1 ]]; then
    BUILD=$BUILD bench/remote.sh --quick --server "$server" --out "${OUT%.md}-$server.md" >&2
  else
    BUILD=$BUILD bench/remote.sh --rounds "$ROUNDS" --seconds "$SECONDS_PER" --ramp "$RAMP" --server "$server" \
      --out "${OUT%.md}-$server.md" >&2
  fi
done

cp "$RUNS" "${OUT%.md}-runs.jsonl"
python3 bench/report.py --runs "${OUT%.md}-runs.jsonl" --out "$OUT" --rounds "$ROUNDS" \
  --target-rounds "$TARGET_ROUNDS" --seconds "$SECONDS_PER" \
  --ramp "$RAMP" --vhostd-poll "$VPOLL" --file-mb "$FILE_MB" --build "$BUILD" $([[ $QUICK == 1 ]] && echo --quick)
cat "$OUT"
