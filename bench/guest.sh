#!/usr/bin/env bash
# In-guest benchmarks, vhostd beside its peer in the same run, inside the same TCG guest:
#   blk: bench/fio/guest.fio on /dev/vda, vhostd (file, O_DIRECT) vs qemu-storage-daemon (same file,
#        aio=io_uring, cache.direct=on), alternating, N rounds, medians;
#   net: the TCP transfers of tests/e2e/test_net.sh (4x16 MiB each way, 2 queue pairs, TSO) through
#        vhostd's net device vs QEMU's own tap networking on the same namespace/tap setup.
# Writes bench/results/<date>-<host>-guest.md. Under TCG the guest's own CPU is the bottleneck, so the
# ratios say "no worse / how much better" at guest speed, not what a KVM guest would see.
#
#   bench/guest.sh [--rounds N]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=2
while [[ $# -gt 0 ]]; do
  case $1 in
    --rounds) ROUNDS=$2; shift 2 ;;
    *) echo "guest.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
BUILD=${BUILD:-build}
GUEST=${GUEST:-$BUILD/guest}
[[ -x $BUILD/vhostd ]] || { echo "guest.sh: build first (scripts/build.sh)" >&2; exit 1; }
tests/e2e/build-guest.sh "$GUEST" >&2
TMP=$(mktemp -d /tmp/vhostd-gbench.XXXXXX)
BPID=""
cleanup() { [[ -n $BPID ]] && kill "$BPID" 2>/dev/null; wait 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT
FILE=$TMP/disk.img
dd if=/dev/zero of="$FILE" bs=1M count=512 status=none

declare -A FIO NET
for round in $(seq "$ROUNDS"); do
  for kind in vhostd qsd; do
    SOCK=$TMP/$kind.sock
    rm -f "$SOCK"
    if [[ $kind == vhostd ]]; then
      "$BUILD/vhostd" --threads 1 --log-level warn --blk "socket=$SOCK,path=$FILE,direct=on,queues=2" >"$TMP/b.log" 2>&1 &
    else
      qemu-storage-daemon --blockdev "driver=file,node-name=d,filename=$FILE,cache.direct=on,aio=io_uring" \
        --export "type=vhost-user-blk,id=e,node-name=d,addr.type=unix,addr.path=$SOCK,writable=on,num-queues=2" \
        >"$TMP/b.log" 2>&1 &
    fi
    BPID=$!
    for _ in $(seq 100); do [[ -S $SOCK ]] && break; sleep 0.05; done
    tests/e2e/run-guest.sh --out-dir "$GUEST" --test bench_fio --timeout 300 --log "$TMP/g.log" -- \
      -chardev "socket,id=c0,path=$SOCK" -device "vhost-user-blk-pci,chardev=c0,num-queues=2" >&2 \
      || { echo "guest.sh: guest fio run failed ($kind)" >&2; tail -20 "$TMP/g.log" >&2; exit 1; }
    kill "$BPID"; wait "$BPID" 2>/dev/null || true; BPID=""
    while read -r _ job riops wiops rlat wlat; do
      FIO["$job|$kind|$round"]="$riops $wiops $rlat $wlat"
      echo "blk $kind round $round: $job read ${riops} IOPS write ${wiops} IOPS" >&2
    done < <(grep -a '^VTEST-FIO' "$TMP/g.log" | tr -d '\r')
  done
  for kind in vhostd qemu-tap; do
    out=$(tests/e2e/test_net.sh --backend "$kind" --vectors 0 --build-dir "$BUILD" --guest-dir "$GUEST" 2>&1) \
      || { echo "$out" | tail -30 >&2; echo "guest.sh: net run failed ($kind)" >&2; exit 1; }
    for dir in rx tx; do
      secs=$(echo "$out" | grep -a "vtest: $dir: done in" | head -1 | sed 's/.*done in \([0-9.]*\) s.*/\1/')
      NET["$dir|$kind|$round"]=$secs
      echo "net $kind round $round: $dir 64 MiB in ${secs} s" >&2
    done
  done
done

median() { python3 -c 'import statistics,sys; print(statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }
OUT=bench/results/$(date +%F)-$(hostname -s)-guest.md
mkdir -p bench/results
{
  echo "# In-guest benchmarks: vhostd vs its peer in the same TCG guest ($(date +%F))"
  echo
  echo "Machine: $(nproc) CPUs, kernel $(uname -r); QEMU 7.2 TCG guest (-smp 2, 512 MiB), Debian 6.1 kernel."
  echo "vhostd $(git rev-parse --short HEAD 2>/dev/null || echo '?'), 1 reactor, default adaptive polling. $ROUNDS round(s), alternating, medians."
  echo "Under TCG the guest CPU is the bottleneck: these are end-to-end ratios at guest speed."
  echo
  echo "## blk: bench/fio/guest.fio on a 512 MiB file (O_DIRECT both)"
  echo
  echo "| job | vhostd IOPS | qemu-storage-daemon IOPS | ratio | vhostd clat µs | qsd clat µs |"
  echo "| --- | --- | --- | --- | --- | --- |"
  for job in randread-qd32 randwrite-qd32 randread-qd1 randwrite-qd1; do
    col=1; latcol=3
    [[ $job == randwrite* ]] && col=2 latcol=4
    v=(); q=(); vl=(); ql=()
    for round in $(seq "$ROUNDS"); do
      read -r -a a <<<"${FIO["$job|vhostd|$round"]}"; read -r -a b <<<"${FIO["$job|qsd|$round"]}"
      v+=("${a[$((col - 1))]}"); q+=("${b[$((col - 1))]}"); vl+=("${a[$((latcol - 1))]}"); ql+=("${b[$((latcol - 1))]}")
    done
    mv=$(median "${v[@]}"); mq=$(median "${q[@]}")
    printf '| %s | %.0f | %.0f | %.2f | %.0f | %.0f |\n' "$job" "$mv" "$mq" "$(python3 -c "print($mv/$mq)")" \
      "$(median "${vl[@]}")" "$(median "${ql[@]}")"
  done
  echo
  echo "## net: 4 x 16 MiB TCP each way (busybox nc), 2 queue pairs, TSO, INTx (vectors=0) for both"
  echo
  echo "| direction | vhostd MB/s | QEMU tap MB/s | ratio |"
  echo "| --- | --- | --- | --- |"
  for dir in rx tx; do
    v=(); q=()
    for round in $(seq "$ROUNDS"); do v+=("${NET["$dir|vhostd|$round"]}"); q+=("${NET["$dir|qemu-tap|$round"]}"); done
    sv=$(median "${v[@]}"); sq=$(median "${q[@]}")
    printf '| %s (%s) | %.1f | %.1f | %.2f |\n' "$dir" "$([[ $dir == rx ]] && echo 'host to guest' || echo 'guest to host')" \
      "$(python3 -c "print(67.108864/$sv)")" "$(python3 -c "print(67.108864/$sq)")" "$(python3 -c "print($sq/$sv)")"
  done
} >"$OUT"
cat "$OUT"
