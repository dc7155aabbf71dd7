#!/bin/sh
# Guest side of the two-guest bridge test (busybox sh), driven by
# tests/e2e/test_net_bridge.sh: two guests whose virtio-net devices end in
# taps on one bridge. Both run this script, with different roles:
#   a: ping the bridge's address (if given) and B, then send
#      vtest_net_mib MiB of random data to B over TCP (retrying the
#      connection until B listens)
#   b: ping the bridge's address (if given) and A, then listen and receive
#      A's data
# A prints "VTEST-MD5 peer-tx BYTES MD5" of what it sent, B
# "VTEST-MD5 peer-rx BYTES MD5" of what it received; the host compares them.
#
# Kernel command line knobs:
#   vtest_net_role=a|b       (required)
#   vtest_net_addr=A/N       address of this guest (required)
#   vtest_net_peer=A         address of the other guest (required)
#   vtest_net_bridge=A       address of the bridge (optional: pinged first)
#   vtest_net_mac=MAC        MAC of the interface under test
#   vtest_net_mib=N          MiB to send (default 8)
#   vtest_net_port=P         TCP port B listens on (default 5400)
#   vtest_net_wait_secs=S    how long to wait for the other guest (default 240)
set -e
# shellcheck source-path=SCRIPTDIR source=lib.sh
. /tests/lib.sh

ROLE=$(vt_need vtest_net_role)
ADDR=$(vt_need vtest_net_addr)
PEER=$(vt_need vtest_net_peer)
BRIDGE=$(vt_param vtest_net_bridge)
MAC=$(vt_param vtest_net_mac)
MIB=$(vt_param vtest_net_mib 8)
PORT=$(vt_param vtest_net_port 5400)
WAIT=$(vt_param vtest_net_wait_secs 240)
case $ROLE in a|b) ;; *) vt_fail "bad vtest_net_role '$ROLE'" ;; esac

vt_step "find the virtio-net interface${MAC:+ with MAC $MAC}"
IF=$(vt_net_find_if "$MAC") \
  || vt_fail "no virtio-net interface${MAC:+ with MAC $MAC} (have: $(cd /sys/class/net && echo *))"
vt_log "role $ROLE: $IF is $(vt_net_vdev "$IF"), MAC $(cat "/sys/class/net/$IF/address")"
vt_log "negotiated features: $(vt_net_features "$IF")"

vt_step "bring $IF up with $ADDR"
# IPv4 only: no IPv6 neighbour discovery/MLD packets besides the test's own.
for f in all default "$IF"; do
  echo 1 >"/proc/sys/net/ipv6/conf/$f/disable_ipv6" 2>/dev/null || true
done
vt_run ip link set lo up
vt_run ip link set "$IF" up
vt_run ip addr add "$ADDR" dev "$IF"

if [ -n "$BRIDGE" ]; then
  vt_step "ping the bridge $BRIDGE"
  vt_ping "$BRIDGE" 60 || vt_fail "the bridge $BRIDGE does not answer pings (60 s)"
fi

vt_step "ping the other guest $PEER"
t0=$(vt_uptime_cs)
vt_ping "$PEER" "$WAIT" || vt_fail "$PEER does not answer pings ($WAIT s)"
vt_log "$PEER answers after $(( ($(vt_uptime_cs) - t0) / 100 )) s"
ping -c 3 -W 5 -s 8000 "$PEER" || vt_fail "8000-byte pings to $PEER failed"

t0=$(vt_uptime_cs)
if [ "$ROLE" = a ]; then
  vt_step "send $MIB MiB to $PEER:$PORT"
  dd if=/dev/urandom of=/tmp/peer-tx bs=1M count="$MIB" 2>/dev/null
  vt_md5_line peer-tx /tmp/peer-tx
  t0=$(vt_uptime_cs)
  vt_nc_send 3 "$PEER" "$PORT" /tmp/peer-tx "$WAIT" || vt_fail "sending to $PEER:$PORT failed"
else
  vt_step "receive from $PEER on port $PORT"
  vt_nc_listen 3 "$PORT" /tmp/peer-rx "$WAIT" || vt_fail "receiving on port $PORT failed"
  vt_md5_line peer-rx /tmp/peer-rx
fi
cs=$(( $(vt_uptime_cs) - t0 ))
vt_log "transfer done in $((cs / 100)).$((cs % 100 / 10)) s"
vt_log "$IF: $(vt_net_stats "$IF")"
s=/sys/class/net/$IF/statistics
for c in rx_errors tx_errors; do
  [ "$(cat "$s/$c")" -eq 0 ] || vt_fail "$IF: $c = $(cat "$s/$c")"
done

vt_pass
