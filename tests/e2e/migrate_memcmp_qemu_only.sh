#!/usr/bin/env bash
# The control for test_migrate.sh's memory comparison: the same guest workload (fio verify on two
# queues plus an O_DIRECT dd reader, the blk_restart guest script) migrated six times between
# QEMUs, the source and destination RAM compared page by page at every switch-over, but on
# QEMU's own virtio-blk (no vhostd, no network). Pages that differ here were lost by QEMU itself.
#
#   tests/e2e/migrate_memcmp_qemu_only.sh --guest-dir build/guest [--runs N] [--accel ACCEL]
#
# ACCEL defaults to "tcg,thread=single", where QEMU 7.2 loses pages most often (2026-12-04: 2
# pages in one of three runs; test_migrate.sh on vhostd: differences in two of three runs, of the
# same kind: single bytes of guest-kernel counters and stack words, never I/O payload). Prints
# one line per migration and the directories holding both sides of every differing page
# (page.m<N>.<addr>.{src,dst}). Exit status 0 when every comparison was clean, 1 otherwise.
# A diagnostic run by hand (about 80 s per run), not part of the suite.
set -euo pipefail
SCRIPT_DIR=$(cd "$(dirname "$0")" && pwd)
GUEST_DIR="" RUNS=1 ACCEL="tcg,thread=single"
while [[ $# -gt 0 ]]; do
  case $1 in
    --guest-dir) GUEST_DIR=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --accel) ACCEL=$2; shift 2 ;;
    *) echo "usage: $0 --guest-dir DIR [--runs N] [--accel ACCEL]" >&2; exit 2 ;;
  esac
done
[[ -f $GUEST_DIR/vmlinuz ]] || { echo "$0: no guest in '$GUEST_DIR' (tests/e2e/build-guest.sh)" >&2; exit 2; }

one_run() {
  local T M cur=1 total=0 m d s i
  T=$(mktemp -d /tmp/vtest-memcmp-qemu.XXXXXX)
  M=$(mktemp -d /dev/shm/vtest-memcmp-qemu.XXXXXX)
  declare -A QP=()
  dd if=/dev/zero of="$T/disk.img" bs=1M count=64 status=none
  start() {
    local k=$1
    # shellcheck disable=SC2054  # commas are part of QEMU option values
    local a=(qemu-system-x86_64 -accel "$ACCEL" -machine q35 -cpu qemu64 -smp 2 -m 512M
      -object "memory-backend-file,id=mem,size=512M,mem-path=$M/ram.$k,share=on" -numa node,memdev=mem
      -nographic -monitor none -serial "file:$T/guest.$k.log" -no-reboot -nic none
      -kernel "$GUEST_DIR/vmlinuz" -initrd "$GUEST_DIR/initramfs.cpio"
      -append "console=ttyS0 quiet panic=-1 vtest=blk_restart vtest_queues=2 vtest_runtime=60 vtest_reader=1"
      -qmp "unix:$T/qmp.$k.sock,server=on,wait=off"
      -drive "file=$T/disk.img,if=none,id=d0,format=raw,cache=none,aio=threads,file.locking=off"
      -device virtio-blk-pci,drive=d0,num-queues=2)
    ((k > 1)) && a+=(-incoming "unix:$T/mig.$k.sock" -S)
    "${a[@]}" </dev/null >"$T/qemu.$k.out" 2>&1 &
    QP[$k]=$!
    for ((i = 0; i < 100; i++)); do [[ -S $T/qmp.$k.sock ]] && return; sleep 0.1; done
    echo "QEMU $k did not start" >&2
    return 1
  }
  qmp() { local k=$1; shift; python3 "$SCRIPT_DIR/qmp.py" "$T/qmp.$k.sock" "$@"; }
  mst() { qmp "$1" query-migrate 2>/dev/null | grep -o '"status": "[a-z-]*"' | head -n1 | cut -d'"' -f4; }
  start 1
  for ((i = 0; i < 900; i++)); do grep -aq 'VTEST-PHASE: io-start' "$T/guest.1.log" 2>/dev/null && break; sleep 0.2; done
  sleep 3
  for m in 1 2 3 4 5 6; do
    d=$((cur + 1))
    start "$d"
    qmp "$cur" 'migrate-set-parameters {"max-bandwidth": 107374182400}' >/dev/null
    qmp "$cur" "migrate {\"uri\": \"unix:$T/mig.$d.sock\"}" >/dev/null
    for ((i = 0; i < 1200; i++)); do s=$(mst "$cur"); [[ $s == completed || $s == failed ]] && break; sleep 0.1; done
    local nd
    nd=$(python3 "$SCRIPT_DIR/memcmp_pages.py" "$M/ram.$cur" "$M/ram.$d" "$T/page.m$m" 2>>"$T/memcmp.log") || nd=1
    echo "migration $m: $s, $nd page(s) differ"
    total=$((total + nd))
    qmp "$d" cont >/dev/null
    qmp "$cur" quit >/dev/null 2>&1 || true
    wait "${QP[$cur]}" 2>/dev/null || true
    rm -f "$M/ram.$cur"
    cur=$d
    sleep 3
  done
  qmp "$cur" quit >/dev/null 2>&1 || true
  wait "${QP[$cur]}" 2>/dev/null || true
  rm -rf "$M"
  if ((total > 0)); then echo "run: $total page(s) differed; both sides kept in $T"; return 1; fi
  rm -rf "$T"
  echo "run: clean"
}

rc=0
for ((r = 1; r <= RUNS; r++)); do one_run || rc=1; done
exit $rc
