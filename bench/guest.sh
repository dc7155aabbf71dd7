#!/usr/bin/env bash
# In-guest benchmarks, vhostd beside its peer in the same run, inside the same TCG guest:
#   blk: bench/fio/guest.fio on /dev/vda, vhostd (file, O_DIRECT) vs qemu-storage-daemon (same file,
#        aio=io_uring, cache.direct=on), alternating, N rounds, medians;
#   net: the TCP transfers of tests/e2e/test_net.sh (4x16 MiB each way, 2 queue pairs, TSO) through
#        vhostd's net device vs QEMU's own tap networking on the same namespace/tap setup, and in the
#        same runs its TCP request/response phase: bench/netrr.cpp, client in the guest, server on the
#        host end of the tap (in the test's namespace), 1-byte requests and responses, 1 and 4
#        connections, --rr-seconds each.
# Writes bench/results/<date>-<host>-guest.md (or --out FILE). Under TCG the guest's own CPU is the
# bottleneck, so the ratios say "no worse / how much better" at guest speed, not what a KVM guest
# would see.
#
#   bench/guest.sh [--rounds N] [--only blk|net] [--rr-seconds T] [--out FILE]
#   (environment: BUILD, the build dir, default build; GUEST, the guest image dir, default BUILD/guest)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=2 ONLY="" RR_SECS=10 RR_CONNS=(1 4) OUT=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --rounds) ROUNDS=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    --rr-seconds) RR_SECS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    *) echo "guest.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
case $ONLY in ""|blk|net) ;; *) echo "guest.sh: --only blk or net" >&2; exit 2 ;; esac
[[ $RR_SECS =~ ^[1-9][0-9]*$ ]] || { echo "guest.sh: bad --rr-seconds '$RR_SECS'" >&2; exit 2; }
BUILD=${BUILD:-build}
GUEST=${GUEST:-$BUILD/guest}
[[ -x $BUILD/vhostd && -x $BUILD/netrr ]] || { echo "guest.sh: build first (scripts/build.sh)" >&2; exit 1; }
tests/e2e/build-guest.sh "$GUEST" "$BUILD" >&2
TMP=$(mktemp -d /tmp/vhostd-gbench.XXXXXX)
BPID=""
cleanup() { [[ -n $BPID ]] && kill "$BPID" 2>/dev/null; wait 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT
FILE=$TMP/disk.img
dd if=/dev/zero of="$FILE" bs=1M count=512 status=none

declare -A FIO NET RR
for round in $(seq "$ROUNDS"); do
  for kind in vhostd qsd; do
    [[ $ONLY == net ]] && break
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
    [[ $ONLY == blk ]] && break
    out=$(tests/e2e/test_net.sh --backend "$kind" --vectors 0 --build-dir "$BUILD" --guest-dir "$GUEST" \
            --rr-seconds "$RR_SECS" --rr-conns "$(IFS=,; echo "${RR_CONNS[*]}")" --rr-size 1 2>&1) \
      || { echo "$out" | tail -30 >&2; echo "guest.sh: net run failed ($kind)" >&2; exit 1; }
    for dir in rx tx; do
      secs=$(echo "$out" | grep -a "vtest: $dir: done in" | head -1 | sed 's/.*done in \([0-9.]*\) s.*/\1/')
      NET["$dir|$kind|$round"]=$secs
      echo "net $kind round $round: $dir 64 MiB in ${secs} s" >&2
    done
    # "VTEST-NETRR {json}" per connection count (tests/e2e/guest/net.sh): "conns tps p50 p99".
    while read -r conns tps p50 p99; do
      RR["$conns|$kind|$round"]="$tps $p50 $p99"
      echo "net $kind round $round: rr 1 byte, $conns connection(s): $tps transactions/s, p50 $p50 us, p99 $p99 us" >&2
    done < <(echo "$out" | tr -d '\r' | grep -a 'VTEST-NETRR {' | sed 's/.*VTEST-NETRR //' | python3 -c '
import json, sys
for line in sys.stdin:
    r = json.loads(line)
    print(r["conns"], r["tps"], r["lat_us"]["p50"], r["lat_us"]["p99"])')
    for c in "${RR_CONNS[@]}"; do
      [[ -n ${RR["$c|$kind|$round"]:-} ]] || { echo "guest.sh: no rr result for $c connection(s) ($kind)" >&2; exit 1; }
    done
  done
done

median() { python3 -c 'import statistics,sys; print(statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }
# medrange V...: "median (min–max)", rounded to integers.
medrange() {
  python3 -c 'import statistics,sys; v=[float(x) for x in sys.argv[1:]]; print("%.0f (%.0f–%.0f)" % (statistics.median(v), min(v), max(v)))' "$@"
}
if [[ -z $OUT ]]; then
  OUT=bench/results/$(date +%F)-$(hostname -s)-guest.md
  # Never overwrite a recorded result (it may carry hand-written notes): -2, -3, ...
  n=2
  while [[ -e $OUT ]]; do OUT=bench/results/$(date +%F)-$(hostname -s)-guest-$n.md; n=$((n + 1)); done
  mkdir -p bench/results
fi
{
  echo "# In-guest benchmarks: vhostd vs its peer in the same TCG guest ($(date +%F))"
  echo
  echo "Machine: $(nproc) CPUs, kernel $(uname -r); QEMU 7.2 TCG guest (-smp 2, 512 MiB), Debian 6.1 kernel."
  echo "vhostd $(git rev-parse --short HEAD 2>/dev/null || echo '?'), 1 reactor, default adaptive polling. $ROUNDS round(s), alternating, medians."
  echo "Under TCG the guest CPU is the bottleneck: these are end-to-end ratios at guest speed."
  echo
  for job in randread-qd32 randwrite-qd32 randread-qd1 randwrite-qd1; do
    [[ $ONLY == net ]] && break
    if [[ $job == randread-qd32 ]]; then
      echo "## blk: bench/fio/guest.fio on a 512 MiB file (O_DIRECT both)"
      echo
      echo "| job | vhostd IOPS | qemu-storage-daemon IOPS | ratio | vhostd clat µs | qsd clat µs |"
      echo "| --- | --- | --- | --- | --- | --- |"
    fi
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
  [[ $ONLY == net ]] || echo
  for dir in rx tx; do
    [[ $ONLY == blk ]] && break
    if [[ $dir == rx ]]; then
      echo "## net: 4 x 16 MiB TCP each way (busybox nc), 2 queue pairs, TSO, INTx (vectors=0) for both"
      echo
      echo "| direction | vhostd MB/s | QEMU tap MB/s | ratio |"
      echo "| --- | --- | --- | --- |"
    fi
    v=(); q=()
    for round in $(seq "$ROUNDS"); do v+=("${NET["$dir|vhostd|$round"]}"); q+=("${NET["$dir|qemu-tap|$round"]}"); done
    sv=$(median "${v[@]}"); sq=$(median "${q[@]}")
    printf '| %s (%s) | %.1f | %.1f | %.2f |\n' "$dir" "$([[ $dir == rx ]] && echo 'host to guest' || echo 'guest to host')" \
      "$(python3 -c "print(67.108864/$sv)")" "$(python3 -c "print(67.108864/$sq)")" "$(python3 -c "print($sq/$sv)")"
  done
  for c in "${RR_CONNS[@]}"; do
    [[ $ONLY == blk ]] && break
    if [[ $c == "${RR_CONNS[0]}" ]]; then
      echo
      echo "## net: TCP request/response, 1-byte requests and responses (bench/netrr.cpp), ${RR_SECS} s per run"
      echo
      echo "Client in the guest, server on the host end of the tap (in the test's namespace), TCP_NODELAY,"
      echo "one transaction outstanding per connection; same guests as the transfers above."
      echo "Medians with min–max over the rounds; latency is the client's per-transaction p50 / p99."
      echo
      echo "| connections | vhostd transactions/s | QEMU tap transactions/s | ratio | vhostd p50 / p99 µs | QEMU tap p50 / p99 µs |"
      echo "| --- | --- | --- | --- | --- | --- |"
    fi
    vt=(); qt=(); v50=(); q50=(); v99=(); q99=()
    for round in $(seq "$ROUNDS"); do
      read -r -a a <<<"${RR["$c|vhostd|$round"]}"; read -r -a b <<<"${RR["$c|qemu-tap|$round"]}"
      vt+=("${a[0]}"); v50+=("${a[1]}"); v99+=("${a[2]}"); qt+=("${b[0]}"); q50+=("${b[1]}"); q99+=("${b[2]}")
    done
    printf '| %s | %s | %s | %.2f | %s / %s | %s / %s |\n' "$c" "$(medrange "${vt[@]}")" "$(medrange "${qt[@]}")" \
      "$(python3 -c "print($(median "${vt[@]}")/$(median "${qt[@]}"))")" \
      "$(medrange "${v50[@]}")" "$(medrange "${v99[@]}")" "$(medrange "${q50[@]}")" "$(medrange "${q99[@]}")"
  done
} >"$OUT"
cat "$OUT"
