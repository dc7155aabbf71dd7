#!/usr/bin/env bash
# Issue 13's crash test: vhostd killed with SIGKILL at ROUNDS random points while a volume of its
# pool takes writes and the pool's metadata churns (bench/poolchurn.cpp: snapshots of the volume,
# clones, small volumes created, resized and deleted, snapshots deleted under the running volume).
# After every kill vhostd is started again on the same drives (--pool: import, journal replay),
# `pool check` must pass (every invariant, the metadata reloaded from the drives and compared), and
# every write vhostd acknowledged must read back (the next round's first step). At the end: a
# clean stop, another import, the check and a read-back once more.
#   bench/poolchurn.sh BUILD_DIR [ROUNDS (1000)]
# Exit 0 when every round held; 1 at the first that did not (its logs are printed).
set -euo pipefail
build=$(cd "$1" && pwd) rounds=${2:-1000}
tmp=$(mktemp -d /tmp/vhostd-churn.XXXXXX)
pid="" cpid=""
cleanup() {
  [[ -n $pid ]] && kill -9 "$pid" 2>/dev/null || true
  [[ -n $cpid ]] && kill -9 "$cpid" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
export ASAN_OPTIONS=detect_leaks=0
export VHOSTD_RPC=$tmp/api.sock
ctl() { "$build/vhostctl" "$@"; }
die() {
  echo "poolchurn: FAIL: $*"
  echo "--- vhostd (last 30 lines)"; tail -30 "$tmp/vhostd.log" || true
  echo "--- poolchurn"; cat "$tmp/churn.log" 2>/dev/null || true
  exit 1
}
wait_for() {  # wait_for PATH: a socket, while vhostd lives
  for _ in $(seq 400); do
    [[ -S $1 ]] && return 0
    kill -0 "$pid" 2>/dev/null || die "vhostd exited while starting"
    sleep 0.025
  done
  die "no $1"
}
start() {
  rm -f "$tmp/api.sock" "$tmp/vol.sock"
  : >"$tmp/vhostd.log"
  "$build/vhostd" --threads 2 --rpc "$tmp/api.sock" "$@" >>"$tmp/vhostd.log" 2>&1 &
  pid=$!
  wait_for "$tmp/api.sock"
}
drives="drives=$tmp/d0:$tmp/d1:$tmp/d2"
truncate -s 64M "$tmp/d0" "$tmp/d1" "$tmp/d2"
start
ctl pool create tank "$tmp/d0" "$tmp/d1" "$tmp/d2" --chunk 64K >/dev/null
ctl volume create tank/main 16M >/dev/null
kill -TERM "$pid"; wait "$pid"; pid=""

acked=0 changes=0 inflight=0
for ((i = 1; i <= rounds; i++)); do
  start --pool "$drives" --blk "socket=$tmp/vol.sock,volume=tank/main,queues=1"
  wait_for "$tmp/vol.sock"
  out=$(ctl pool check tank 2>&1) || die "round $i: pool check after the restart: $out"
  "$build/poolchurn" --socket "$tmp/vol.sock" --api "$tmp/api.sock" --state "$tmp/state" --volume tank/main \
    --seconds 30 --seed $((RANDOM * 32768 + RANDOM + i)) >"$tmp/churn.log" 2>&1 &
  cpid=$!
  # The read-back first (it must not be cut: a kill then proves nothing), then writes and churn
  # for a random 20..600 ms, then SIGKILL.
  for _ in $(seq 6000); do  # up to a minute: a busy machine slows the read-back, not the verdict
    grep -q 'blocks checked' "$tmp/churn.log" && break
    kill -0 "$cpid" 2>/dev/null || break
    sleep 0.01
  done
  grep -q 'blocks checked' "$tmp/churn.log" || { wait "$cpid" || true; cpid=""; die "round $i: no read-back"; }
  sleep "0.$(printf '%03d' $((20 + RANDOM % 580)))"
  kill -9 "$pid"
  wait "$pid" 2>/dev/null || true
  pid=""
  rc=0
  wait "$cpid" || rc=$?
  cpid=""
  [[ $rc == 0 ]] || die "round $i: poolchurn exit $rc"
  n=$(sed -n 's/.*: \([0-9]*\) writes acknowledged this run.*, \([0-9]*\) pool API calls/\1 \2/p' "$tmp/churn.log")
  f=$(sed -n 's/.*(\([0-9]*\) were in flight.*/\1/p' "$tmp/churn.log")
  acked=$((acked + ${n% *})) changes=$((changes + ${n#* })) inflight=$((inflight + f))
  if (( i % 100 == 0 )); then echo "poolchurn: $i rounds, $acked writes acknowledged, $changes pool API calls"; fi
done
# A clean stop and import, then everything once more.
start --pool "$drives" --blk "socket=$tmp/vol.sock,volume=tank/main,queues=1"
wait_for "$tmp/vol.sock"
"$build/poolchurn" --socket "$tmp/vol.sock" --state "$tmp/state" --verify-only >"$tmp/churn.log" 2>&1 || die "the last read-back"
kill -TERM "$pid"; wait "$pid" || die "vhostd exited with $? after SIGTERM"; pid=""
start --pool "$drives"
out=$(ctl pool check tank 2>&1) || die "pool check after the clean stop: $out"
ctl volume list >"$tmp/volumes"
kill -TERM "$pid"; wait "$pid" || true; pid=""
echo "poolchurn: PASS: $rounds kills; $acked writes acknowledged and read back, $inflight blocks in flight at a kill (either version accepted), $changes pool API calls beside them; pool check clean after every import"
