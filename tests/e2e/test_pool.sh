#!/usr/bin/env bash
# End-to-end test of pools (the README's pool demo, checked): a pool of three files made through
# the management API, two thin volumes, a guest on one of them (guest/blk.sh: fio write+verify,
# discard, an ext4 filesystem with files and their MD5SUMS, a pattern region), a snapshot of it
# and a clone of the snapshot. Then vhostd is killed (kill -9) and started again with --pool
# (the drives in another order) and the clone on the command line: a second guest boots on the
# clone and finds the first guest's filesystem and pattern (guest/blk_readback.sh), then writes
# more. pool_check must pass after every step, thin volumes must only hold what was written,
# the snapshot must keep its size while the clone diverges, and a clean stop and another
# import must leave the pool consistent.
#
# Usage:
#   tests/e2e/test_pool.sh --build-dir BUILD --guest-dir DIR [--timeout SECS] [--keep]
#
# Exit status 0 = PASS, 1 = FAIL.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib-host.sh
. "$SCRIPT_DIR/lib-host.sh"
TIMEOUT=${TIMEOUT:-300}
lh_parse_common_args "$@"
lh_init test_pool pool
lh_build_guest

D0="$TMP/d0" D1="$TMP/d1" D2="$TMP/d2" RPC="$TMP/vhostd.sock" SOCK1="$TMP/vm1.sock" SOCK2="$TMP/clone.sock"
for d in "$D0" "$D1" "$D2"; do truncate -s 200M "$d"; done

ctl() { lh_vhostctl --json call "$@"; }
check() {
  local out
  if out=$(ctl pool_check '{"name":"tank"}' 2>&1); then
    log "pool_check $1: $out"
  else
    fail "pool_check $1: $out"
  fi
}
# field NAME KEY: a volume's member from volume_list.
field() {
  ctl volume_list '{"pool":"tank"}' |
    python3 -c 'import json,sys; v=[x for x in json.load(sys.stdin)["volumes"] if x["name"]==sys.argv[1]]; print(v[0][sys.argv[2]] if v else "missing")' "$1" "$2"
}

lh_start_backend "$VHOSTD" --threads 2 --rpc "$RPC"
lh_wait_listen "$RPC"
out=$(ctl pool_create "{\"name\":\"tank\",\"drives\":[\"$D0\",\"$D1\",\"$D2\"]}") || lh_abort "pool_create: $out"
log "pool_create: $out"
ctl volume_create '{"pool":"tank","name":"vm1","size":"256M"}' >/dev/null || lh_abort "volume_create vm1"
ctl volume_create '{"pool":"tank","name":"vm2","size":"128M"}' >/dev/null || lh_abort "volume_create vm2"
# Over-provisioned: 384 MiB of thin volumes on less than 600 MiB, nothing allocated yet.
[[ $(field tank/vm1 allocated) == 0 && $(field tank/vm2 allocated) == 0 ]] || fail "new thin volumes hold chunks"
lh_vhostctl add blk "socket=$SOCK1,volume=tank/vm1,queues=2" --id vm1 >/dev/null || lh_abort "device_add of tank/vm1"
lh_wait_listen "$SOCK1"
out=$(ctl volume_delete '{"name":"tank/vm1"}' 2>&1) && fail "an attached volume was deleted"
log "deleting the attached volume is refused: $out"

# shellcheck disable=SC2054  # commas are part of QEMU option values
lh_run_guest blk "$TMP/guest1.log" "$TIMEOUT" "vtest_queues=2 vtest_discard=1" \
  -chardev "socket,id=c0,path=$SOCK1" -device "vhost-user-blk-pci,chardev=c0,num-queues=2"
[[ $GUEST_OK == 1 ]] || lh_abort "the first guest failed"
check "after the first guest"
a1=$(field tank/vm1 allocated)
log "tank/vm1: $a1 bytes allocated of 256 MiB; tank/vm2: $(field tank/vm2 allocated)"
[[ $a1 -gt 0 && $(field tank/vm2 allocated) == 0 ]] || fail "allocation: vm1 $a1, vm2 $(field tank/vm2 allocated)"

out=$(ctl snapshot_create '{"volume":"tank/vm1","name":"s1"}') || lh_abort "snapshot_create: $out"
log "snapshot_create: $out"
out=$(ctl clone_create '{"snapshot":"tank/vm1@s1","name":"clone1"}') || lh_abort "clone_create: $out"
log "clone_create: $out"
[[ $(field tank/vm1@s1 allocated) == "$a1" ]] || fail "the snapshot holds $(field tank/vm1@s1 allocated), the volume held $a1"
[[ $(field tank/clone1 parent) == tank/vm1@s1 && $(field tank/clone1 allocated) == 0 ]] || fail "the clone: $(ctl volume_list '{}')"
check "after the snapshot and the clone"

# kill -9: everything acknowledged is in the journal.
kill -9 "$BACKEND_PID"
wait "$BACKEND_PID" 2>/dev/null || true
BACKEND_PID=""
log "vhostd killed (SIGKILL)"
lh_start_backend "$VHOSTD" --threads 2 --rpc "$RPC" --pool "drives=$D2:$D0:$D1" \
  --blk "id=clone,socket=$SOCK2,volume=tank/clone1,queues=2"
lh_wait_listen "$SOCK2" "$RPC"
check "after kill -9 and import"
for v in tank/vm1 tank/vm2 tank/vm1@s1 tank/clone1; do
  [[ $(field "$v" size) != missing ]] || fail "$v is gone after the restart"
done

# shellcheck disable=SC2054
lh_run_guest blk_readback "$TMP/guest2.log" "$TIMEOUT" "vtest_queues=2" \
  -chardev "socket,id=c0,path=$SOCK2" -device "vhost-user-blk-pci,chardev=c0,num-queues=2"
check "after the second guest"
c1=$(field tank/clone1 allocated)
log "tank/clone1: $c1 bytes allocated (its own writes); tank/vm1@s1: $(field tank/vm1@s1 allocated)"
[[ $c1 -gt 0 && $c1 -lt $a1 ]] || fail "the clone holds $c1 bytes (the first guest's volume held $a1)"
[[ $(field tank/vm1@s1 allocated) == "$a1" ]] || fail "the snapshot changed: $(field tank/vm1@s1 allocated)"

lh_check_backend_alive "after both guests"
lh_stop_backend 0
# A clean stop wrote a checkpoint: the next import replays nothing and finds the same pool.
lh_start_backend "$VHOSTD" --threads 1 --rpc "$RPC" --pool "drives=$D0:$D1:$D2"
lh_wait_listen "$RPC"
check "after a clean stop and import"
out=$(ctl pool_list '{}')
log "pool_list: $(echo "$out" | tr -d '\n' | head -c 400)"
[[ $(field tank/clone1 allocated) == "$c1" ]] || fail "the clone's allocation changed over a clean restart"
lh_stop_backend 0
lh_finish
