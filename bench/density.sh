#!/usr/bin/env bash
# The density cell (issue 16): one hot device at QD32 next to N-1 light ones at 100 requests/s each,
# all on one reactor, vhostd and qemu-storage-daemon side by side in one run.
#
#   bench/density.sh [--quick] [--ns "1 16 64 256 1024"] [--rounds 3] [--seconds 5] [--ramp 1]
#                    [--poll always|adaptive] [--no-qsd] [--out FILE.md]
#
# Per run: a fresh backend with N null devices (1 GiB hot, 64 MiB light; one queue each) on CPU 0
# (vhostd --threads 1 --cpus 0; qemu-storage-daemon under taskset, its exports in its main loop);
# blkbench on CPU 1 drives the hot device at QD32 in poll mode and, from a second thread, the N-1
# light ones (4 KiB reads, open loop, call mode: the light thread sleeps in epoll on their call
# eventfds). Reported: the hot device's IOPS and its fraction of a solo run (N = 1) made right
# before or after it (the paired ratio: every N gets its own solo run, first in odd rounds and
# second in even ones; rounds also alternate the order of N), backend CPU, the light
# devices' p99 with the hot device and without it (the N-1 light devices alone on the backend,
# which keeps the hot generator's spinning off the light thread's CPU), against one light device
# alone (same round), and with the hot device but the light thread SCHED_FIFO (N <= 64: the
# "fair" cell, light p99 only). The "split" control (vhostd): the light devices on a second vhostd
# process on the same CPU, so the hot reactor serves nothing else; its hot fraction against the
# main cell's tells the reactor's share of the loss from the generator's.
# Then the idle cost: the largest N, every device connected and idle for --seconds (vhostd in its
# default adaptive mode): backend CPU, RSS and fds per device (RSS and fd deltas between the
# listening and the connected state).
# Medians over the rounds, min-max beside them. Targets (issue 16): hot >= 90 % of solo at N = 64,
# >= 80 % at N = 256; light p99 within 2x of solo; idle 1024 devices < 1 % CPU. Reported, not
# asserted: a missed target is a finding, not a failed run; a failed request or a dead backend
# fails the run.
#
# On a 2-CPU machine the generator's light thread shares CPU 1 with the hot thread: at N = 1024 it
# sends and reaps about 100 k requests/s, which takes CPU from the hot generator whatever the
# backend. The qemu-storage-daemon column pays the same, and the light thread's achieved rate is
# in the table. Next to the spinning hot thread the light thread waits for its CPU turn (CFS), so
# its p99 in the hot cell is mostly the generator's; the light-only cells measure the backend.
set -euo pipefail
cd "$(dirname "$0")/.."
NS="1 16 64 256 1024" ROUNDS=3 SECONDS_PER=5 RAMP=1 POLL=always QSD=1 OUT="" QUICK=0
while [[ $# -gt 0 ]]; do
  case $1 in
    --quick) QUICK=1 NS="1 16" ROUNDS=1 SECONDS_PER=1 RAMP=0.3; shift ;;
    --ns) NS=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --seconds) SECONDS_PER=$2; shift 2 ;;
    --ramp) RAMP=$2; shift 2 ;;
    --poll) POLL=$2; shift 2 ;;
    --no-qsd) QSD=0; shift ;;
    --out) OUT=$2; shift 2 ;;
    *) echo "density.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
BUILD=${BUILD:-build}
[[ -x $BUILD/vhostd && -x $BUILD/blkbench ]] || { echo "density.sh: build first (scripts/build.sh)" >&2; exit 1; }
((QSD)) && ! command -v qemu-storage-daemon >/dev/null && { echo "density.sh: qemu-storage-daemon missing" >&2; exit 1; }
if [[ -z $OUT ]]; then
  stem=bench/results/$(date +%F)-$(hostname -s)-density
  OUT=$stem.md
  n=2
  while [[ -e $OUT ]]; do OUT=$stem-$n.md; n=$((n + 1)); done
fi
TMP=$(mktemp -d /tmp/vhostd-density.XXXXXX)
BPID=""
cleanup() { kill $BPID $LPID 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
RUNS=$TMP/runs.jsonl
: >"$RUNS"
ulimit -n "$(ulimit -Hn)"

start_backend() {  # kind n [poll] -> BPID; hot socket $TMP/hot.sock, light $TMP/l{i}.sock (i < n-1)
  local kind=$1 n=$2 poll=${3:-$POLL} i
  rm -f "$TMP"/*.sock
  case $kind in
    split)  # the control: the hot device alone on its reactor, the light ones on a second vhostd
      taskset -c 0 "$BUILD/vhostd" --blk "socket=$TMP/hot.sock,backend=null,size=1G,queues=1" --threads 1 --cpus 0 \
        --poll "$poll" --log-level warn >"$TMP/backend.log" 2>&1 &
      BPID=$!
      local args=()
      for ((i = 0; i < n - 1; i++)); do args+=(--blk "socket=$TMP/l$i.sock,backend=null,size=64M,queues=1"); done
      taskset -c 0 "$BUILD/vhostd" "${args[@]}" --threads 1 --cpus 0 --poll never --log-level warn \
        >"$TMP/backend2.log" 2>&1 &
      LPID=$!
      wait_sockets "$n" && return 0
      ;;
    vhostd)
      local args=(--blk "socket=$TMP/hot.sock,backend=null,size=1G,queues=1")
      for ((i = 0; i < n - 1; i++)); do args+=(--blk "socket=$TMP/l$i.sock,backend=null,size=64M,queues=1"); done
      taskset -c 0 "$BUILD/vhostd" "${args[@]}" --threads 1 --cpus 0 --poll "$poll" --log-level warn \
        >"$TMP/backend.log" 2>&1 &
      ;;
    qsd)
      local args=(--blockdev "driver=null-co,node-name=hot,size=1073741824,read-zeroes=on"
        --export "type=vhost-user-blk,id=ehot,node-name=hot,addr.type=unix,addr.path=$TMP/hot.sock,writable=on")
      for ((i = 0; i < n - 1; i++)); do
        args+=(--blockdev "driver=null-co,node-name=l$i,size=67108864,read-zeroes=on"
          --export "type=vhost-user-blk,id=e$i,node-name=l$i,addr.type=unix,addr.path=$TMP/l$i.sock,writable=on")
      done
      taskset -c 0 qemu-storage-daemon "${args[@]}" >"$TMP/backend.log" 2>&1 &
      ;;
  esac
  BPID=$!
  wait_sockets "$n" && return 0
  echo "density.sh: $kind with $n devices did not create its sockets" >&2
  cat "$TMP"/backend*.log >&2
  exit 1
}
wait_sockets() {  # n: the hot socket and the last light one exist
  local last=$TMP/hot.sock
  (($1 > 1)) && last=$TMP/l$(($1 - 2)).sock
  for _ in $(seq 1200); do [[ -S $last && -S $TMP/hot.sock ]] && return 0; sleep 0.025; done
  return 1
}
LPID=""
stop_backend() {
  kill $BPID $LPID 2>/dev/null || true
  wait $BPID $LPID 2>/dev/null || true
  BPID="" LPID=""
}
alive() { [[ $(ps -o stat= -p "$BPID" 2>/dev/null) == [^Z]* ]]; }

run_cell() {  # kind n round [cell] [extra blkbench args]
  local kind=$1 n=$2 round=$3 cell=${4:-hot} out rc=0 light=()
  shift 4 || shift $#
  start_backend "$kind" "$n"
  ((n > 1)) && light=(--light-sockets "$TMP/l{}.sock" --light-count $((n - 1)) --light-rate 100 "$@")
  out=$(taskset -c 1 "$BUILD/blkbench" --socket "$TMP/hot.sock" --qd 32 --bs 4096 --notify poll \
        --seconds "$SECONDS_PER" --ramp "$RAMP" --backend-pid "$BPID" --json "${light[@]}") || rc=$?
  alive || rc=99
  stop_backend
  if [[ $rc != 0 ]]; then echo "density.sh: $kind n=$n failed ($rc)" >&2; cat "$TMP/backend.log" >&2; exit 1; fi
  echo "{\"cell\":\"$cell\",\"backend\":\"$kind\",\"n\":$n,\"round\":$round,\"pair\":${PAIR:-$n},${out:1}" >>"$RUNS"
  echo "$kind $cell n=$n round $round: $(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print("hot %.0f IOPS, light p99 %.1f us (%.0f/s, thread %.0f %%), backend cpu %.0f %%" % (d["iops"], d["light_p99_us"], d["light_iops"], d["light_cpu_pct"], d["backend_cpu_pct"]))' "$out")" >&2
}

light_only() {  # kind n round: the n-1 light devices without the hot one (n = 2: one alone)
  local kind=$1 n=$2 round=$3 out rc=0
  start_backend "$kind" "$n"
  out=$(taskset -c 1 "$BUILD/blkbench" --light-sockets "$TMP/l{}.sock" --light-count $((n - 1)) --light-rate 100 \
        --seconds "$SECONDS_PER" --ramp "$RAMP" --backend-pid "$BPID" --json) || rc=$?
  alive || rc=99
  stop_backend
  if [[ $rc != 0 ]]; then echo "density.sh: $kind light-only n=$n failed ($rc)" >&2; cat "$TMP/backend.log" >&2; exit 1; fi
  echo "{\"cell\":\"light_only\",\"backend\":\"$kind\",\"n\":$n,\"round\":$round,${out:1}" >>"$RUNS"
  echo "$kind light-only n=$n round $round: $out" >&2
}

rss_kb() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }
nfds() { ls "/proc/$1/fd" | wc -l; }

idle_cost() {  # kind n: every device connected, idle (vhostd in its default adaptive mode: an
  # always-polling reactor spins whatever it serves)
  local kind=$1 n=$2 out rc=0 rss0 fd0 rss1 fd1
  start_backend "$kind" "$((n + 1))" adaptive
  sleep 0.5
  rss0=$(rss_kb "$BPID") fd0=$(nfds "$BPID")
  taskset -c 1 "$BUILD/blkbench" --light-sockets "$TMP/l{}.sock" --light-count "$n" --light-rate 0 \
    --seconds "$SECONDS_PER" --ramp "$RAMP" --backend-pid "$BPID" --json >"$TMP/idle.json" &
  local gen=$!
  sleep "$(awk -v r="$RAMP" -v s="$SECONDS_PER" 'BEGIN { print r + s / 2 }')"
  rss1=$(rss_kb "$BPID") fd1=$(nfds "$BPID")
  wait $gen || rc=$?
  alive || rc=99
  stop_backend
  if [[ $rc != 0 ]]; then echo "density.sh: $kind idle failed ($rc)" >&2; cat "$TMP/backend.log" >&2; exit 1; fi
  out=$(cat "$TMP/idle.json")
  echo "{\"cell\":\"idle\",\"backend\":\"$kind\",\"n\":$n,\"rss0_kb\":$rss0,\"rss1_kb\":$rss1,\"fd0\":$fd0,\"fd1\":$fd1,${out:1}" >>"$RUNS"
  echo "$kind idle n=$n: rss $rss0 -> $rss1 kB, fds $fd0 -> $fd1: $out" >&2
}

KINDS=(vhostd)
((QSD)) && KINDS+=(qsd)
read -r -a NLIST <<<"$NS"
echo "density.sh: N = ${NLIST[*]}, $ROUNDS round(s), poll $POLL, backends ${KINDS[*]} -> $OUT" >&2
for ((round = 1; round <= ROUNDS; round++)); do
  order=("${NLIST[@]}")
  if ((round % 2 == 0)); then  # reverse order every other round
    order=()
    for ((i = ${#NLIST[@]} - 1; i >= 0; i--)); do order+=("${NLIST[i]}"); done
  fi
  for n in "${order[@]}"; do
    for kind in "${KINDS[@]}"; do
      if ((n == 1)); then
        PAIR=1 run_cell "$kind" 1 "$round"
      elif ((round % 2)); then  # each N next to its own solo run, which goes first every other round
        PAIR=$n run_cell "$kind" 1 "$round"
        PAIR=$n run_cell "$kind" "$n" "$round"
      else
        PAIR=$n run_cell "$kind" "$n" "$round"
        PAIR=$n run_cell "$kind" 1 "$round"
      fi
      # The light devices' latency without the hot generator spinning on their CPU (n = 1: one
      # light device alone, the "solo" the target compares with).
      if ((n == 1)); then light_only "$kind" 2 "$round"; else light_only "$kind" "$n" "$round"; fi
      # Fairness next to the busy device, measured: the light thread SCHED_FIFO, so its wake-ups
      # are not queued behind the spinning hot thread (which it slows down instead: the hot IOPS
      # of this cell are not the density figure). Up to 64 neighbours, where the light thread's
      # share of CPU 1 stays small.
      if ((n > 1 && n <= 64)); then run_cell "$kind" "$n" "$round" fair --light-rt; fi
      # The control for vhostd: the same load, but the light devices on a second vhostd (same
      # CPU, --poll never), so the hot device's reactor walks nothing else. If the hot device
      # loses as much here, the loss is the generator's and the CPU's, not the reactor's.
      if ((n > 1)) && [[ $kind == vhostd ]]; then PAIR=$n run_cell split "$n" "$round" split; fi
    done
  done
done
max=${NLIST[-1]}
for kind in "${KINDS[@]}"; do idle_cost "$kind" "$max"; done

cp "$RUNS" "${OUT%.md}-runs.jsonl"
python3 bench/density_report.py --runs "$RUNS" --out "$OUT" --poll "$POLL" --seconds "$SECONDS_PER" \
  --rounds "$ROUNDS" --host "$(hostname -s)" --cpus "$(nproc)"
echo "density.sh: wrote $OUT" >&2
