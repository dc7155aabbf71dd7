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
vt_step() { VT_STEP="$*"; vt_log "--- $* (at $(cut -d" " -f1 /proc/uptime) s)"; }

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
  vt_check_ring "$1"
}

# vt_check_ring DEV: log which virtqueue layout the virtio device behind
# /dev/DEV negotiated; with vtest_packed=1 it must be packed
# (VIRTIO_F_RING_PACKED, feature bit 34: character 35 of sysfs "features").
vt_check_ring() {
  _p=$(cut -c35 "/sys/block/$1/device/features")
  if [ "$_p" = 1 ]; then vt_log "$1: packed virtqueues"; else vt_log "$1: split virtqueues"; fi
  if [ "$(vt_param vtest_packed)" = 1 ] && [ "$_p" != 1 ]; then
    vt_fail "$1: packed virtqueues were not negotiated"
  fi
}

# vt_vq_irqs DEV: print "req.N=<interrupts>" for each virtqueue of the
# virtio-blk device behind /dev/DEV (from /proc/interrupts, summed over CPUs).
# A virtqueue's interrupt count grows when the backend completes requests on
# it, so this shows which queues carried I/O.
vt_vq_irqs() { vt_virtio_irqs "$(basename "$(readlink "/sys/block/$1/device")")"; }

# vt_virtio_irqs VDEV: the same for the virtio device VDEV (e.g. virtio0):
# "QUEUE=<interrupts>" per virtqueue vector, e.g. req.0=12 or input.1=345.
vt_virtio_irqs() {
  _ncpu=$(nproc)
  awk -v dev="$1-" -v ncpu="$_ncpu" '
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

# vt_need NAME: value of NAME=VALUE on the kernel command line; fails the
# test if it is missing.
vt_need() {
  _v=$(vt_param "$1")
  [ -n "$_v" ] || vt_fail "missing kernel parameter $1"
  echo "$_v"
}

# --- networking (net.sh, net_peer.sh) ----------------------------------------

# vt_uptime_cs: time since boot in centiseconds (for durations).
vt_uptime_cs() { awk '{ printf "%d\n", $1 * 100 }' /proc/uptime; }

# vt_net_find_if [MAC]: print the name of the virtio-net interface (with
# MAC, if given); waits up to 10 s for it to appear. Returns 1 if none.
vt_net_find_if() {
  _i=0
  while [ $_i -lt 100 ]; do
    for _d in /sys/class/net/*; do
      [ -e "$_d/device/driver" ] || continue
      [ "$(basename "$(readlink "$_d/device/driver")")" = virtio_net ] || continue
      if [ -z "${1:-}" ] || [ "$(cat "$_d/address")" = "$1" ]; then
        basename "$_d"
        return 0
      fi
    done
    _i=$((_i + 1))
    sleep 0.1
  done
  return 1
}

# vt_net_vdev IF: the virtio device behind interface IF, e.g. virtio0.
vt_net_vdev() { basename "$(readlink "/sys/class/net/$1/device")"; }

# vt_net_features IF: the virtio-net feature bits negotiated for IF, as
# lowercase names without the VIRTIO_NET_F_/VIRTIO_F_ prefix (one line).
vt_net_features() {
  awk '
    BEGIN {
      split("csum guest_csum ctrl_guest_offloads mtu - mac gso guest_tso4 guest_tso6 " \
            "guest_ecn guest_ufo host_tso4 host_tso6 host_ecn host_ufo mrg_rxbuf status " \
            "ctrl_vq ctrl_rx ctrl_vlan ctrl_rx_extra guest_announce mq ctrl_mac_addr " \
            "notify_on_empty - - any_layout indirect_desc event_idx - - version_1 " \
            "access_platform ring_packed in_order order_platform sr_iov notification_data",
            n, " ")
      for (i in n) name[i - 1] = n[i]
      name[39] = "notif_config_data"; name[40] = "ring_reset"
      name[51] = "host_uso"; name[52] = "hash_tunnel"; name[53] = "notf_coal"
      name[61] = "rss"; name[62] = "rsc_ext"; name[63] = "standby"
    }
    { out = ""
      for (b = 0; b < length($0); b++)
        if (substr($0, b + 1, 1) == "1")
          out = out " " ((b in name && name[b] != "-") ? name[b] : "bit" b)
      print substr(out, 2) }' "/sys/bus/virtio/devices/$(vt_net_vdev "$1")/features"
}

# vt_net_require_features IF LIST: fail unless every feature of the
# comma-separated LIST (names as printed by vt_net_features) was negotiated.
vt_net_require_features() {
  _have=" $(vt_net_features "$1") "
  for _f in $(echo "$2" | tr ',' ' '); do
    case $_have in *" $_f "*) ;; *) vt_fail "$1: feature $_f not negotiated (have:$_have)" ;; esac
  done
}

# vt_net_stats IF: the interface's packet/error counters, one line.
vt_net_stats() {
  _s=/sys/class/net/$1/statistics
  echo "rx $(cat "$_s/rx_packets") pkts $(cat "$_s/rx_bytes") bytes $(cat "$_s/rx_errors") err" \
    "$(cat "$_s/rx_dropped") drop; tx $(cat "$_s/tx_packets") pkts $(cat "$_s/tx_bytes") bytes" \
    "$(cat "$_s/tx_errors") err $(cat "$_s/tx_dropped") drop"
}

# vt_ping HOST SECS: wait until HOST answers a ping (tries for SECS seconds).
vt_ping() {
  _end=$(($(vt_uptime_cs) + $2 * 100))
  while :; do
    ping -c 1 -W 1 "$1" >/tmp/ping.out 2>&1 && return 0
    [ "$(vt_uptime_cs)" -lt $_end ] || { cat /tmp/ping.out; return 1; }
    sleep 0.5
  done
}

# vt_cpu_mask K: taskset hex mask of CPU (K mod number of CPUs).
vt_cpu_mask() { printf '%x' $((1 << ($1 % $(nproc)))); }

# vt_nc_hold: create /tmp/vt-hold, the FIFO the receiving nc's read (safe
# when several transfers start at once).
vt_nc_hold() { [ -p /tmp/vt-hold ] || mkfifo /tmp/vt-hold 2>/dev/null || [ -p /tmp/vt-hold ]; }

# vt_nc_recv MASK HOST PORT OUT SECS: connect to HOST:PORT on the CPUs of
# MASK and store what arrives in OUT until the peer closes. Connecting is
# retried (for up to ~SECS/2 s) while the peer refuses; the whole transfer is
# limited to SECS. stdin is a FIFO nobody writes to: busybox nc shuts down its
# sending side at stdin EOF, which makes the peer stop early.
vt_nc_recv() {
  vt_nc_hold
  _end=$(($(vt_uptime_cs) + $5 * 50))
  while :; do
    _rc=0
    timeout "$5" taskset "$1" nc "$2" "$3" >"$4" 2>"$4.err" 0<>/tmp/vt-hold || _rc=$?
    [ $_rc -eq 0 ] && return 0
    if ! grep -q "can't connect" "$4.err" || [ "$(vt_uptime_cs)" -ge $_end ]; then break; fi
    sleep 1
  done
  echo "vtest: nc $2 $3 (receive) failed with status $_rc: $(cat "$4.err")"
  return 1
}

# vt_nc_send MASK HOST PORT IN SECS: connect to HOST:PORT on the CPUs of MASK
# and send file IN; returns when the peer has received everything and closed.
# Retries and limits as vt_nc_recv.
vt_nc_send() {
  _end=$(($(vt_uptime_cs) + $5 * 50))
  while :; do
    _rc=0
    timeout "$5" taskset "$1" nc "$2" "$3" <"$4" >/dev/null 2>"$4.err" || _rc=$?
    [ $_rc -eq 0 ] && return 0
    if ! grep -q "can't connect" "$4.err" || [ "$(vt_uptime_cs)" -ge $_end ]; then break; fi
    sleep 1
  done
  echo "vtest: nc $2 $3 (send $4) failed with status $_rc: $(cat "$4.err")"
  return 1
}

# vt_nc_listen MASK PORT OUT SECS: listen on PORT (CPUs of MASK), store what
# the first peer sends in OUT until it closes.
vt_nc_listen() {
  vt_nc_hold
  _rc=0
  timeout "$4" taskset "$1" nc -l -p "$2" >"$3" 2>"$3.err" 0<>/tmp/vt-hold || _rc=$?
  [ $_rc -eq 0 ] && return 0
  echo "vtest: nc -l -p $2 failed with status $_rc: $(cat "$3.err")"
  return 1
}

# vt_md5_line NAME FILE: print the machine-readable line the host compares:
#   VTEST-MD5 NAME BYTES MD5
vt_md5_line() { echo "VTEST-MD5 $1 $(wc -c <"$2") $(vt_md5 <"$2")"; }
