#!/usr/bin/env bash
# Boot the e2e test guest (built by build-guest.sh) under QEMU/TCG and run one
# guest test script.
#
# Usage:
#   tests/e2e/run-guest.sh --out-dir DIR --test NAME [--timeout SECS] [--log FILE]
#                          [--cmdline-extra "k=v ..."] [--] [extra qemu args...]
#
#   --out-dir DIR        directory with vmlinuz + initramfs.cpio
#   --test NAME          guest test to run (tests/e2e/guest/NAME.sh)
#   --timeout SECS       kill QEMU after SECS seconds (default 180)
#   --log FILE           guest console log (default: DIR/NAME.log)
#   --cmdline-extra STR  appended to the kernel command line
#   extra qemu args      typically the device under test, e.g.
#       -chardev socket,id=c0,path=/tmp/x.sock
#       -device vhost-user-blk-pci,chardev=c0,num-queues=2
#
# Exit status: 0 iff the guest log contains "VTEST-RESULT: PASS" and no
# "VTEST-RESULT: FAIL"; 1 otherwise (the tail of the log is printed).
#
# Environment: QEMU (default qemu-system-x86_64), VTEST_RAM (guest RAM, default 512M),
# VTEST_QEMU_MEM (the -m value, default VTEST_RAM; e.g. "512M,slots=4,maxmem=2G" for memory
# hotplug), VTEST_INITRD (another initramfs: the image's with more archives appended, see
# test_nvme.sh), VTEST_VERBOSE=1 to also stream the guest console to stderr while it runs.
set -euo pipefail

die() { echo "run-guest: ERROR: $*" >&2; exit 2; }

OUT_DIR="" TEST="" TIMEOUT=180 LOG="" CMDLINE_EXTRA=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --out-dir) OUT_DIR=$2; shift 2 ;;
    --test) TEST=$2; shift 2 ;;
    --timeout) TIMEOUT=$2; shift 2 ;;
    --log) LOG=$2; shift 2 ;;
    --cmdline-extra) CMDLINE_EXTRA=$2; shift 2 ;;
    --) shift; break ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
    *) break ;;   # first unknown arg starts the extra qemu args
  esac
done
EXTRA_QEMU=("$@")

[[ -n $OUT_DIR && -n $TEST ]] || die "--out-dir and --test are required (see --help)"
KERNEL="$OUT_DIR/vmlinuz"
INITRD="${VTEST_INITRD:-$OUT_DIR/initramfs.cpio}"
[[ -f $KERNEL && -f $INITRD ]] || die "$OUT_DIR has no vmlinuz/initramfs.cpio (run build-guest.sh $OUT_DIR)"
[[ $TIMEOUT =~ ^[0-9]+$ ]] || die "bad --timeout '$TIMEOUT'"
LOG=${LOG:-$OUT_DIR/$TEST.log}
mkdir -p "$(dirname "$LOG")"
: >"$LOG"
QEMU=${QEMU:-qemu-system-x86_64}

# KVM guests hang on the CI machines: always TCG. Guest RAM must be a shared
# memfd so the vhost-user backend can map it.
# shellcheck disable=SC2054  # commas are part of QEMU option values
QEMU_CMD=(
  "$QEMU" -accel tcg -machine q35 -cpu max -smp 2 -m "${VTEST_QEMU_MEM:-${VTEST_RAM:-512M}}"
  -object memory-backend-memfd,id=mem,size="${VTEST_RAM:-512M}",share=on -numa node,memdev=mem
  -nographic -monitor none -serial "file:$LOG" -no-reboot -nic none
  -kernel "$KERNEL" -initrd "$INITRD"
  -append "console=ttyS0 quiet panic=-1 vtest=$TEST${CMDLINE_EXTRA:+ $CMDLINE_EXTRA}"
  "${EXTRA_QEMU[@]}"
)

echo "run-guest: test=$TEST timeout=${TIMEOUT}s log=$LOG" >&2
echo "run-guest: ${QEMU_CMD[*]}" >&2

tail_pid=""
if [[ ${VTEST_VERBOSE:-0} == 1 ]]; then
  tail -n +1 -F "$LOG" >&2 2>/dev/null &
  tail_pid=$!
fi

start=$SECONDS
rc=0
# QEMU's own stdout/stderr (errors such as a refused vhost-user connection)
# go to the log as well, so that they show up in the failure tail.
# Run in the background and `wait`, so that a TERM/INT sent to this script is
# handled right away (and forwarded to QEMU) instead of after QEMU exits.
timeout --kill-after=10 "$TIMEOUT" "${QEMU_CMD[@]}" </dev/null >>"$LOG.qemu" 2>&1 &
qemu_pid=$!
# shellcheck disable=SC2317  # invoked via trap
on_signal() {
  kill -TERM "$qemu_pid" 2>/dev/null || true   # timeout(1) forwards it to QEMU
  wait "$qemu_pid" 2>/dev/null || true
  [[ -n $tail_pid ]] && kill "$tail_pid" 2>/dev/null
  echo "run-guest: interrupted, QEMU stopped" >&2
  exit 143
}
trap on_signal TERM INT
wait "$qemu_pid" || rc=$?
trap - TERM INT
elapsed=$((SECONDS - start))
[[ -n $tail_pid ]] && { sleep 0.2; kill "$tail_pid" 2>/dev/null || true; wait "$tail_pid" 2>/dev/null || true; }
if [[ -s $LOG.qemu ]]; then
  { echo "--- qemu output ---"; cat "$LOG.qemu"; } >>"$LOG"
fi
rm -f "$LOG.qemu"

status=FAIL reason=""
if [[ $rc -eq 124 || $rc -eq 137 ]]; then
  reason="timed out after ${TIMEOUT}s (QEMU killed)"
elif grep -q '^VTEST-RESULT: FAIL' "$LOG"; then
  reason=$(grep -m1 '^VTEST-RESULT: FAIL' "$LOG")
elif grep -q '^VTEST-RESULT: PASS' "$LOG"; then
  status=PASS
  [[ $rc -ne 0 ]] && echo "run-guest: note: QEMU exited with status $rc" >&2
else
  reason="no VTEST-RESULT line in the log (QEMU exit status $rc)"
fi

if [[ $status == PASS ]]; then
  echo "run-guest: $TEST PASS (${elapsed}s)" >&2
  exit 0
fi
echo "run-guest: $TEST FAIL (${elapsed}s): $reason" >&2
echo "run-guest: ---- last 60 lines of $LOG ----" >&2
tail -n 60 "$LOG" | tr -d '\r' >&2
echo "run-guest: ----" >&2
exit 1
