# Shared helpers for the guest test scripts (busybox sh). Source it with
#   . /tests/lib.sh
# It is not a test itself: running it as vtest=lib reports a failure.
#
# Result protocol: every test ends by printing exactly one line
#   VTEST-RESULT: PASS            or
#   VTEST-RESULT: FAIL <reason>
# to the console; the host (run-guest.sh) greps for it.

VT_DONE=0

vt_log() { echo "vtest: $*"; }

vt_fail() {
  VT_DONE=1
  echo "VTEST-RESULT: FAIL $*"
  exit 1
}

vt_pass() {
  VT_DONE=1
  echo "VTEST-RESULT: PASS"
  exit 0
}

# Any exit (including set -e aborts) without vt_pass/vt_fail is a failure.
vt_on_exit() {
  rc=$?
  if [ "$VT_DONE" != 1 ]; then
    echo "VTEST-RESULT: FAIL unexpected exit (status $rc) in ${VT_STEP:-?}"
  fi
}
trap vt_on_exit EXIT

# vt_step DESCRIPTION: name the current step (used in failure messages).
vt_step() { VT_STEP="$*"; vt_log "--- $*"; }

# vt_param NAME [DEFAULT]: value of NAME=VALUE on the kernel command line.
vt_param() {
  for _p in $(cat /proc/cmdline); do
    case "$_p" in "$1"=*) echo "${_p#*=}"; return 0 ;; esac
  done
  echo "${2:-}"
}

# vt_run CMD...: run a command, failing the test with its output if it fails.
vt_run() {
  vt_log "\$ $*"
  "$@" || vt_fail "command failed (status $?): $*"
}

# vt_pattern BYTES: the deterministic e2e pattern, i.e. the 16-byte ASCII
# string "vhostd-e2e-blk!\n" repeated and cut to BYTES bytes. The host side
# (test_blk.sh) generates exactly the same bytes with `yes | head -c`.
vt_pattern() { yes 'vhostd-e2e-blk!' | head -c "$1"; }

# vt_md5 < data: md5 hex of stdin.
vt_md5() { md5sum | cut -d' ' -f1; }

# vt_read_md5 DEV OFFSET_MIB LEN_MIB: md5 of a region read with O_DIRECT.
vt_read_md5() {
  dd if="$1" bs=1M skip="$2" count="$3" iflag=direct 2>/dev/null | vt_md5
}

# vt_disk_bytes DEV: size of /dev/DEV in bytes.
vt_disk_bytes() { echo $(( $(cat "/sys/block/$1/size") * 512 )); }

# vt_wait_dev DEV: wait (up to 10 s) for /dev/DEV to show up.
vt_wait_dev() {
  _i=0
  while [ ! -b "/dev/$1" ]; do
    _i=$((_i + 1))
    [ $_i -gt 100 ] && return 1
    sleep 0.1
  done
  return 0
}

# vt_check_queues DEV: print the number of blk-mq hardware queues and check it
# against vtest_queues=N from the kernel command line (if given).
vt_check_queues() {
  _nq=$(ls "/sys/block/$1/mq" | wc -l)
  vt_log "$1: $_nq blk-mq hardware queue(s)"
  _want=$(vt_param vtest_queues)
  if [ -n "$_want" ] && [ "$_nq" != "$_want" ]; then
    vt_fail "$1 has $_nq hardware queues, expected $_want"
  fi
}

# vt_vq_irqs DEV: print "req.N=<interrupts>" for each virtqueue of the
# virtio-blk device behind /dev/DEV (from /proc/interrupts, summed over CPUs).
# A virtqueue's interrupt count grows when the backend completes requests on
# it, so this shows which queues carried I/O.
vt_vq_irqs() {
  _vdev=$(basename "$(readlink "/sys/block/$1/device")")   # e.g. virtio0
  _ncpu=$(nproc)
  awk -v dev="$_vdev-" -v ncpu="$_ncpu" '
    { name = $NF
      if (index(name, dev) == 1) {
        sum = 0; for (i = 2; i <= ncpu + 1; i++) sum += $i
        print substr(name, length(dev) + 1) "=" sum
      } }' /proc/interrupts
}

# vt_fio ARGS...: run fio, fail the test if it fails or reports errors.
vt_fio() {
  vt_log "\$ fio $*"
  _rc=0
  fio --output-format=terse --terse-version=3 "$@" >/tmp/fio.out 2>/tmp/fio.err || _rc=$?
  if [ $_rc -ne 0 ]; then
    cat /tmp/fio.out /tmp/fio.err
    vt_fail "fio failed (status $_rc): $*"
  fi
  # terse v3: field 5 = error, then read bw(KiB/s) field 7, write bw field 48
  awk -F';' 'NF > 100 { printf "vtest:   fio job %s: err=%s read=%s KiB/s (%s IOPS) write=%s KiB/s (%s IOPS)\n", $3, $5, $7, $8, $48, $49 }' /tmp/fio.out
  if awk -F';' 'NF > 100 && $5 != 0 { bad = 1 } END { exit !bad }' /tmp/fio.out; then
    cat /tmp/fio.err
    vt_fail "fio reported an I/O error: $*"
  fi
}
