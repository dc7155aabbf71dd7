#!/usr/bin/env bash
# A pool volume under load, on a real vhostd and io_uring: blkbench --verify (requests of 96 KiB
# over 64 KiB chunks, so most are cut in pieces) while snapshots are taken, a snapshot is cloned
# and snapshots are deleted (merged or hidden) under it; a full pool makes writes fail with an
# I/O error (not a hang, not a crash, a bounded log); kill -9 and --pool import; pool_check
# after each step, and vhostctl's pool commands.
#   tests/pool_io_test.sh BUILD_DIR
set -euo pipefail
build=$1
tmp=$(mktemp -d /tmp/vhostd-pool.XXXXXX)
pid="" failed=0
cleanup() { if [[ -n $pid ]]; then kill -9 "$pid" 2>/dev/null || true; fi; rm -rf "$tmp"; }
trap cleanup EXIT
export ASAN_OPTIONS=detect_leaks=0
export VHOSTD_RPC=$tmp/rpc.sock
fail() { echo "FAIL: $*"; failed=1; }
ctl() { "$build/vhostctl" "$@"; }
wait_sock() {
  for _ in $(seq 300); do
    [[ -S $1 ]] && return 0
    kill -0 "$pid" 2>/dev/null || { cat "$tmp/log"; echo "FAIL: vhostd died"; exit 1; }
    sleep 0.05
  done
  echo "FAIL: no $1"; exit 1
}
start() {
  rm -f "$tmp/rpc.sock" "$tmp/v.sock"
  "$build/vhostd" --threads 2 --rpc "$tmp/rpc.sock" "$@" >>"$tmp/log" 2>&1 &
  pid=$!
  wait_sock "$tmp/rpc.sock"
}
check() {
  local out
  out=$(ctl pool check p 2>&1) || fail "pool check ($1): $out"
}
bench() {  # bench SECONDS: randrw with verify; prints the verify line; non-zero on a failure (it also runs in the background)
  local rc=0
  "$build/blkbench" --socket "$tmp/v.sock" --rw randrw --verify --bs 98304 --qd 8 --queues 2 --size 12M --seconds "$1" >"$tmp/bench" 2>&1 ||
    { fail "blkbench: $(tail -3 "$tmp/bench")"; rc=1; }
  grep -q ' 0 mismatches' "$tmp/bench" || { fail "blkbench verify: $(grep verify "$tmp/bench")"; rc=1; }
  grep verify "$tmp/bench" || true
  return $rc
}

truncate -s 64M "$tmp/d0" "$tmp/d1"
start
ctl pool create p "$tmp/d0" "$tmp/d1" --chunk 64K >/dev/null
ctl volume create p/v 48M >/dev/null
ctl add blk "socket=$tmp/v.sock,volume=p/v,queues=2" --id v >/dev/null
wait_sock "$tmp/v.sock"
bench 2 &
bpid=$!
# Under the load: snapshots (each holds new requests and drains the ones in flight), a clone,
# then deletes that merge a snapshot into its only child and hide one that has two.
sleep 0.5
for i in 1 2 3; do ctl snapshot create p/v "s$i" >/dev/null || fail "snapshot s$i"; sleep 0.2; done
ctl clone create p/v@s2 c >/dev/null || fail "clone"
ctl volume delete p/v@s1 >/dev/null || fail "delete s1 (merged into s2)"
ctl volume delete p/v@s2 >/dev/null || fail "delete s2 (hidden: s3 and the clone read through it)"
wait "$bpid" || fail "blkbench under snapshots"
check "after the snapshots"
list=$(ctl --json call volume_list '{"pool":"p"}')
[[ $list == *'"p/v@s3"'* && $list == *'"p/c"'* && $list != *'"p/v@s1"'* ]] || fail "volume_list: $list"
hidden=$(ctl --json call pool_list '{}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["pools"][0]["hidden_snapshots"])')
[[ $hidden == 1 ]] || fail "hidden snapshots: $hidden"
# The attached volume cannot be deleted; the clone can (the hidden snapshot then merges).
ctl volume delete p/v >/dev/null 2>&1 && fail "an attached volume was deleted"
ctl volume delete p/c >/dev/null || fail "delete the clone"
check "after the deletes"
# Resizes of the attached volume go through its device (a shrink drains and frees chunks).
for sz in 64M 40M 48M; do
  out=$(ctl volume resize p/v $sz 2>&1) || fail "volume resize p/v $sz: $out"
done
got=$(ctl --json call volume_list '{"pool":"p"}' | python3 -c 'import json,sys; print([v["size"] for v in json.load(sys.stdin)["volumes"] if v["name"]=="p/v"][0])')
[[ $got == $((48 << 20)) ]] || fail "p/v is $got bytes after the resizes"
bench 1 >/dev/null || true
check "after the resizes"

# Full: a thin volume larger than what is left; its writes fail once no chunk is left.
ctl volume create p/big 256M >/dev/null
ctl add blk "socket=$tmp/big.sock,volume=p/big,queues=1" --id big >/dev/null
wait_sock "$tmp/big.sock"
if "$build/blkbench" --socket "$tmp/big.sock" --rw write --bs 1048576 --qd 4 --queues 1 --seconds 3 >"$tmp/full" 2>&1; then
  fail "writes past the pool's space did not fail: $(tail -2 "$tmp/full")"
fi
grep -q 'failed with status 1' "$tmp/full" || fail "the full pool's error: $(tail -2 "$tmp/full")"
n=$(grep -c 'allocation failed' "$tmp/log" || true)
[[ $n -ge 1 && $n -le 20 ]] || fail "$n log lines for the full pool (rate limited: 1..20)"
ctl remove big >/dev/null
ctl volume delete p/big >/dev/null || fail "delete big"
bench 1 >/dev/null || true
check "after the full pool"

# kill -9, then import with the drives in the other order.
kill -9 "$pid"
wait "$pid" 2>/dev/null || true
start --pool "drives=$tmp/d1:$tmp/d0" --blk "socket=$tmp/v.sock,volume=p/v,queues=2"
wait_sock "$tmp/v.sock"
check "after kill -9"
bench 1 >/dev/null || true
out=$(ctl volume list)
[[ $out == *p/v@s3* ]] || fail "vhostctl volume list: $out"
ctl pool list | grep -q 'p ' || fail "vhostctl pool list: $(ctl pool list)"
kill -TERM "$pid"
wait "$pid" || fail "vhostd exited with $?"
pid=""
grep -E 'ERROR|AddressSanitizer|runtime error' "$tmp/log" && fail "errors in the log"
[[ $failed == 0 ]] && echo "pool_io: PASS"
exit $failed
