#!/usr/bin/env bash
# End-to-end virtio-net test with two guests on one bridge: guest A
# (10.77.0.2, MAC ..:0a) and guest B (10.77.0.3, MAC ..:0b) each have one
# virtio-net device (one queue pair) whose tap (vtapa, vtapb) is a port of
# bridge br0 (10.77.0.1/24), all in a network namespace of this test's own
# (vhostd-e2e-netbr-PID; nothing touches the host's network). Both guests run
# tests/e2e/guest/net_peer.sh: each pings the bridge and the other guest, then
# A sends 8 MiB of random data to B over TCP; the host compares the md5 A
# sent with the md5 B received, and checks that the bridge learned each MAC on
# its own port.
#
#   --backend vhostd    one vhostd serves both devices:
#                         --net socket=a.sock,tap=vtapa,queues=1 --net socket=b.sock,tap=vtapb,queues=1
#                       (devices net0 = A, net1 = B in its log). Also checked:
#                       vhostd survives both guests, its taps too; its
#                       counter lines show rx and tx packets on both devices,
#                       tx gso > 0 on A (guest TSO) and rx gso > 0 on B (the
#                       bridge forwarded A's GSO packets to B unsegmented),
#                       A's tx bytes and B's rx bytes >= the transfer;
#                       SIGTERM: exit 0, both taps gone.
#   --backend qemu-tap  each QEMU (in the namespace) creates its own tap with
#                       QEMU's tap backend (vhost=off): validates the guest
#                       side and this harness without vhostd.
#
# With --backend vhostd the devices have no MSI-X (vectors=0) unless --vectors
# says otherwise: QEMU 7.2 under TCG segfaults in vhost_net_start for a
# vhost-user net device with MSI-X (see test_net.sh).
#
# Usage:
#   tests/e2e/test_net_bridge.sh --build-dir BUILD --guest-dir DIR
#                                [--backend vhostd|qemu-tap] [--vectors N] [--timeout SECS] [--keep]
#
#   --build-dir BUILD   CMake build dir containing the vhostd binary
#                       (not needed for --backend qemu-tap)
#   --guest-dir DIR     guest image dir; built/refreshed with build-guest.sh
#   --backend B         vhostd (default) or qemu-tap
#   --vectors N         virtio-net-pci MSI-X vectors (default: 0 for vhostd,
#                       QEMU's default, 3, for qemu-tap)
#   --timeout SECS      timeout of each guest (default 480: two TCG guests
#                       share the CPUs)
#   --keep              keep the temp dir (logs)
#
# Needs root (network namespaces, taps, bridges) and iproute2 on the host.
# Exit status 0 = PASS, 1 = FAIL.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BUILD_DIR="" GUEST_DIR="" BACKEND=vhostd TIMEOUT=480 KEEP=0 VECTORS=""

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit "${1:-2}"; }
while [[ $# -gt 0 ]]; do
  case $1 in
    --build-dir) BUILD_DIR=$2; shift 2 ;;
    --guest-dir) GUEST_DIR=$2; shift 2 ;;
    --backend) BACKEND=$2; shift 2 ;;
    --vectors) VECTORS=$2; shift 2 ;;
    --timeout) TIMEOUT=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h|--help) usage 0 ;;
    *) echo "test_net_bridge: unknown argument '$1'" >&2; usage ;;
  esac
done
[[ -n $GUEST_DIR ]] || { echo "test_net_bridge: --guest-dir is required" >&2; usage; }
[[ $TIMEOUT =~ ^[0-9]+$ ]] || { echo "test_net_bridge: bad --timeout '$TIMEOUT'" >&2; usage; }
case $BACKEND in vhostd|qemu-tap) ;; *) echo "test_net_bridge: bad --backend '$BACKEND'" >&2; usage ;; esac
[[ -z $VECTORS || $VECTORS =~ ^[0-9]+$ ]] || { echo "test_net_bridge: bad --vectors '$VECTORS'" >&2; usage; }
[[ -n $VECTORS || $BACKEND == qemu-tap ]] || VECTORS=0
if [[ $BACKEND == vhostd ]]; then
  [[ -n $BUILD_DIR ]] || { echo "test_net_bridge: --build-dir is required for --backend vhostd" >&2; usage; }
  VHOSTD="$BUILD_DIR/vhostd"
  [[ -x $VHOSTD ]] || { echo "test_net_bridge: $VHOSTD not found or not executable" >&2; exit 1; }
fi

MIB=8 PORT=5400
BR=br0 BR_IP=10.77.0.1 PREFIX=24
ROLES=(a b)
declare -A IP=([a]=10.77.0.2 [b]=10.77.0.3)
declare -A MAC=([a]=52:54:00:12:34:0a [b]=52:54:00:12:34:0b)
declare -A TAP=([a]=vtapa [b]=vtapb)
declare -A DEV=([a]=net0 [b]=net1)      # vhostd's device names: order of --net
declare -A PEER=([a]=b [b]=a)
declare -A GPID=() GLOGS=()

# shellcheck source-path=SCRIPTDIR source=lib-host.sh
. "$SCRIPT_DIR/lib-host.sh"
lh_init "test_net_bridge[$BACKEND]" net-bridge
lh_build_guest

lh_netns_create "vhostd-e2e-netbr-$$"
lh_netns_qemu
ip -n "$NETNS" link add "$BR" type bridge stp_state 0 forward_delay 0
ip -n "$NETNS" addr add "$BR_IP/$PREFIX" dev "$BR"
ip -n "$NETNS" link set "$BR" up

# enslave ROLE: make the guest's tap a port of the bridge.
enslave() {
  local t=${TAP[$1]} info
  ip -n "$NETNS" link set "$t" master "$BR"
  ip -n "$NETNS" link set "$t" up
  info=$(ip -d -n "$NETNS" link show "$t")
  log "guest ${1^^}'s tap: $(tr -s ' \n' ' ' <<<"$info" | cut -c1-400)"
  [[ $info == *"vnet_hdr on"* ]] || fail "$t has no vnet_hdr"
}

declare -A QEMU_NET=()
if [[ $BACKEND == vhostd ]]; then
  lh_start_backend ip netns exec "$NETNS" "$VHOSTD" --threads 1 \
    --net "socket=$TMP/a.sock,tap=${TAP[a]},queues=1" \
    --net "socket=$TMP/b.sock,tap=${TAP[b]},queues=1" --log-level info
  lh_wait_listen "$TMP/a.sock" "$TMP/b.sock"
  for r in "${ROLES[@]}"; do
    lh_netns_wait_link "${TAP[$r]}" 10 || lh_abort "vhostd did not create ${TAP[$r]} within 10 s"
    if ! ip -n "$NETNS" link show "${TAP[$r]}" | head -n1 | grep -q '[<,]UP[,>]'; then
      fail "vhostd did not bring ${TAP[$r]} up: $(ip -n "$NETNS" link show "${TAP[$r]}" | head -n1)"
    fi
    enslave "$r"
    QEMU_NET[$r]="-chardev socket,id=c0,path=$TMP/$r.sock -netdev vhost-user,id=n0,chardev=c0"
  done
else
  for r in "${ROLES[@]}"; do
    QEMU_NET[$r]="-netdev tap,id=n0,ifname=${TAP[$r]},script=no,downscript=no,vhost=off"
  done
fi

# --- guests ---------------------------------------------------------------------
for r in "${ROLES[@]}"; do
  GLOGS[$r]="$TMP/guest-$r.log"
  # shellcheck disable=SC2086  # QEMU_NET[r] is a list of words without spaces
  "$LH_DIR/run-guest.sh" --out-dir "$GUEST_DIR" --test net_peer --timeout "$TIMEOUT" \
    --log "${GLOGS[$r]}" \
    --cmdline-extra "vtest_net_role=$r vtest_net_addr=${IP[$r]}/$PREFIX vtest_net_peer=${IP[${PEER[$r]}]} vtest_net_bridge=$BR_IP vtest_net_mac=${MAC[$r]} vtest_net_mib=$MIB vtest_net_port=$PORT vtest_net_wait_secs=$((TIMEOUT / 2))" \
    -- ${QEMU_NET[$r]} -device "virtio-net-pci,netdev=n0,mac=${MAC[$r]}${VECTORS:+,vectors=$VECTORS}" &
  GPID[$r]=$!
  lh_track_pid $!
done
GT0=$SECONDS
if [[ $BACKEND == qemu-tap ]]; then
  for r in "${ROLES[@]}"; do
    lh_netns_wait_link "${TAP[$r]}" 30 || lh_abort "QEMU of guest ${r^^} did not create ${TAP[$r]} within 30 s"
    enslave "$r"
  done
fi

# While the guests run, watch the bridge learn their MACs (in qemu-tap mode the
# taps and their entries go away with QEMU).
FDB_OK=0
while kill -0 "${GPID[a]}" 2>/dev/null || kill -0 "${GPID[b]}" 2>/dev/null; do
  if [[ $FDB_OK == 0 ]]; then
    fdb=$(bridge -n "$NETNS" fdb show br "$BR" 2>/dev/null || true)
    if grep -q "^${MAC[a]} dev ${TAP[a]} " <<<"$fdb" && grep -q "^${MAC[b]} dev ${TAP[b]} " <<<"$fdb"; then
      FDB_OK=1
      log "bridge $BR learned ${MAC[a]} on ${TAP[a]} and ${MAC[b]} on ${TAP[b]} ($((SECONDS - GT0)) s)"
    fi
  fi
  sleep 1
done
for r in "${ROLES[@]}"; do
  rc=0; wait "${GPID[$r]}" || rc=$?
  if [[ $rc -eq 0 ]]; then log "guest ${r^^} passed"; else fail "guest ${r^^} failed"; fi
  grep -aE '^(vtest|VTEST)' "${GLOGS[$r]}" | tr -d '\r' | sed "s/^/  guest ${r^^}| /" >&2 || true
done
log "both guests done after $((SECONDS - GT0)) s"
[[ $FDB_OK == 1 ]] || fail "the bridge never had ${MAC[a]} on ${TAP[a]} and ${MAC[b]} on ${TAP[b]} in its fdb"

# --- checks -------------------------------------------------------------------------
tx=$(tr -d '\r' <"${GLOGS[a]}" | grep -a -m1 '^VTEST-MD5 peer-tx ' || true)
rx=$(tr -d '\r' <"${GLOGS[b]}" | grep -a -m1 '^VTEST-MD5 peer-rx ' || true)
if [[ -z $tx || -z $rx ]]; then
  fail "missing VTEST-MD5 line(s): A sent '${tx#VTEST-MD5 }', B received '${rx#VTEST-MD5 }'"
else
  read -r _ _ tx_bytes tx_md5 <<<"$tx"
  read -r _ _ rx_bytes rx_md5 <<<"$rx"
  if [[ $tx_bytes == "$rx_bytes" && $tx_md5 == "$rx_md5" && $tx_bytes -eq $((MIB * 1048576)) ]]; then
    log "A -> B: $tx_bytes bytes, md5 $tx_md5 on both guests"
  else
    fail "A sent $tx_bytes bytes md5 $tx_md5, B received $rx_bytes bytes md5 $rx_md5 (expected $((MIB * 1048576)) bytes)"
  fi
fi

if [[ $BACKEND == vhostd ]]; then
  lh_check_backend_alive "during/after the guest runs"
  for r in "${ROLES[@]}"; do
    ip -n "$NETNS" link show "${TAP[$r]}" >/dev/null 2>&1 || fail "${TAP[$r]} disappeared while vhostd still runs"
  done
  for ((i = 0; i < 100; i++)); do
    [[ -n $(lh_net_stats "${DEV[a]}") && -n $(lh_net_stats "${DEV[b]}") ]] && break
    sleep 0.1
  done
  declare -A ST=()
  for r in "${ROLES[@]}"; do
    ST[$r]=$(lh_net_stats "${DEV[$r]}" | awk '$1 == 0')
    if [[ -z ${ST[$r]} ]]; then
      fail "vhostd logged no counters for ${DEV[$r]} (guest ${r^^}) queue pair 0"
      continue
    fi
    read -r -a c <<<"${ST[$r]}"
    log "vhostd ${DEV[$r]} (guest ${r^^}): rx ${c[1]} packets ${c[2]} bytes ${c[3]} gso ${c[4]} dropped;" \
      "tx ${c[5]} packets ${c[6]} bytes ${c[7]} gso ${c[8]} dropped"
    [[ ${c[1]} -gt 0 && ${c[5]} -gt 0 ]] || fail "vhostd ${DEV[$r]}: rx ${c[1]} / tx ${c[5]} packets, expected both > 0"
    if [[ $r == a ]]; then
      [[ ${c[7]} -gt 0 ]] || fail "vhostd ${DEV[a]}: no tx gso packets from guest A (guest TSO not used)"
      [[ ${c[6]} -ge $((MIB * 1048576)) ]] || fail "vhostd ${DEV[a]}: tx ${c[6]} bytes < the $MIB MiB A sent"
    else
      [[ ${c[3]} -gt 0 ]] || fail "vhostd ${DEV[b]}: no rx gso packets to guest B (A's TSO packets were segmented on the way)"
      [[ ${c[2]} -ge $((MIB * 1048576)) ]] || fail "vhostd ${DEV[b]}: rx ${c[2]} bytes < the $MIB MiB B received"
    fi
  done
  lh_stop_backend 0
fi
for r in "${ROLES[@]}"; do
  lh_netns_wait_link_gone "${TAP[$r]}" 3 || fail "${TAP[$r]} still exists after its backend exited"
done

lh_finish
