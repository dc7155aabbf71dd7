#!/usr/bin/env bash
# End-to-end virtio-net test: a QEMU/TCG guest (tests/e2e/guest/net.sh) with
# a 2-queue-pair virtio-net device whose other end is a tap in a network
# namespace of this test's own (vhostd-e2e-net-PID; nothing touches the host's
# network). The host end of the tap is 10.77.0.1/24, the guest 10.77.0.2/24.
# The guest pings the host, then runs TCP transfers against busybox nc
# listeners in the namespace, 4 x 16 MiB host -> guest, 4 x 16 MiB
# guest -> host, then 2 x 8 MiB each way at the same time, flows pinned to
# both vCPUs so that both queue pairs carry traffic; the host compares the
# md5 of every transfer on both ends. Then TCP request/response: a netrr
# server (bench/netrr.cpp, BUILD/netrr) in the namespace, the guest's netrr
# client against it for --rr-seconds with each connection count of
# --rr-conns (the client checks every response); the guest reports each run
# as a "VTEST-NETRR {json}" line, and the host checks that every run has
# transactions, that the server saw exactly those connections end cleanly,
# and that the server's transaction count equals the client's.
#
#   --backend vhostd    vhostd --net socket=S,tap=vtap0,queues=2 runs in the
#                       namespace, QEMU attaches with -netdev vhost-user.
#                       Also checked: vhostd creates vtap0 (multi-queue,
#                       vnet_hdr) and brings it up; after the guest left it
#                       still runs, the tap still exists, and its log has a
#                       counter line for each queue pair:
#                         net0: queue pair N: rx P packets B bytes G gso D dropped; tx ...
#                       with rx and tx packets > 0 on every pair, rx and tx
#                       gso > 0 (summed over pairs: TSO both ways), rx/tx
#                       bytes >= what the transfers moved; SIGTERM: exit 0 and
#                       the tap is gone.
#                       With --launch fd, vhostd runs as a management layer
#                       launches it (QEMU's backend program conventions):
#                       launch_fd.py makes the listening socket and execs
#                       vhostd-net --fd N --tap vtap0 --queues 2, whose
#                       --print-capabilities must say {"type": "net"}.
#   --backend qemu-tap  QEMU's own tap backend (vhost=off) with QEMU inside
#                       the namespace: validates the guest side and this
#                       harness without vhostd.
#
# MSI-X: QEMU 7.2 under TCG segfaults in vhost_net_start when the guest starts
# a vhost-user net device that has MSI-X vectors, before it sends the backend
# anything (virtio_pci_set_guest_notifiers -> msix_set_vector_notifiers ->
# virtio_pci_vector_unmask: vhost_net_start turns use_guest_notifier_mask off
# for vhost-user, so the unmask takes the KVM irqfd path, whose table does not
# exist without KVM; QEMU 8.0 no longer sets the vector notifiers then). So
# with --backend vhostd the device has no MSI-X (vectors=0, one shared INTx
# line) unless --vectors says otherwise; the guest then cannot tell the queues
# apart by their interrupts and leaves that check to vhostd's counters.
#
# Usage:
#   tests/e2e/test_net.sh --build-dir BUILD --guest-dir DIR
#                         [--backend vhostd|qemu-tap] [--launch flag|fd] [--vectors N]
#                         [--timeout SECS] [--keep]
#                         [--rr-seconds T] [--rr-conns LIST] [--rr-size N]
#
#   --build-dir BUILD   CMake build dir containing the vhostd and netrr
#                       binaries (netrr: also with --backend qemu-tap)
#   --guest-dir DIR     guest image dir; built/refreshed with build-guest.sh
#   --backend B         vhostd (default) or qemu-tap
#   --launch L          vhostd: flag (--net socket=...; default) or fd (above)
#   --packed            packed virtqueues (virtio-net-pci packed=on; the guest
#                       must negotiate ring_packed)
#   --vectors N         virtio-net-pci MSI-X vectors (default: 0 for vhostd,
#                       see above; 2 x queue pairs + 2 = 6 for qemu-tap)
#   --timeout SECS      guest timeout (default 420)
#   --rr-seconds T      seconds per request/response run (default 2)
#   --rr-conns LIST     comma-separated connection counts, one run each
#                       (default 1,4)
#   --rr-size N         request and response size in bytes (default 1)
#   --keep              keep the temp dir (transferred files, logs)
#
# Needs root (network namespaces, taps), iproute2 and busybox (nc) on the host.
# Exit status 0 = PASS, 1 = FAIL.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BUILD_DIR="" GUEST_DIR="" BACKEND=vhostd LAUNCH=flag TIMEOUT=420 KEEP=0 VECTORS="" PACKED=0
RR_SECS=2 RR_CONNS=1,4 RR_SIZE=1

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit "${1:-2}"; }
while [[ $# -gt 0 ]]; do
  case $1 in
    --build-dir) BUILD_DIR=$2; shift 2 ;;
    --guest-dir) GUEST_DIR=$2; shift 2 ;;
    --backend) BACKEND=$2; shift 2 ;;
    --launch) LAUNCH=$2; shift 2 ;;
    --vectors) VECTORS=$2; shift 2 ;;
    --packed) PACKED=1; shift ;;
    --timeout) TIMEOUT=$2; shift 2 ;;
    --rr-seconds) RR_SECS=$2; shift 2 ;;
    --rr-conns) RR_CONNS=$2; shift 2 ;;
    --rr-size) RR_SIZE=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h|--help) usage 0 ;;
    *) echo "test_net: unknown argument '$1'" >&2; usage ;;
  esac
done
[[ -n $GUEST_DIR ]] || { echo "test_net: --guest-dir is required" >&2; usage; }
[[ $TIMEOUT =~ ^[0-9]+$ ]] || { echo "test_net: bad --timeout '$TIMEOUT'" >&2; usage; }
case $BACKEND in vhostd|qemu-tap) ;; *) echo "test_net: bad --backend '$BACKEND'" >&2; usage ;; esac
case $LAUNCH in flag|fd) ;; *) echo "test_net: bad --launch '$LAUNCH'" >&2; usage ;; esac
[[ -z $VECTORS || $VECTORS =~ ^[0-9]+$ ]] || { echo "test_net: bad --vectors '$VECTORS'" >&2; usage; }
[[ $RR_SECS =~ ^[1-9][0-9]*$ ]] || { echo "test_net: bad --rr-seconds '$RR_SECS'" >&2; usage; }
[[ $RR_CONNS =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] || { echo "test_net: bad --rr-conns '$RR_CONNS'" >&2; usage; }
[[ $RR_SIZE =~ ^[1-9][0-9]*$ ]] || { echo "test_net: bad --rr-size '$RR_SIZE'" >&2; usage; }
[[ -n $BUILD_DIR ]] || { echo "test_net: --build-dir is required" >&2; usage; }
NETRR="$BUILD_DIR/netrr"
[[ -x $NETRR ]] || { echo "test_net: $NETRR not found or not executable (ninja -C $BUILD_DIR netrr)" >&2; exit 1; }
if [[ $BACKEND == vhostd ]]; then
  VHOSTD="$BUILD_DIR/vhostd"
  [[ -x $VHOSTD ]] || { echo "test_net: $VHOSTD not found or not executable" >&2; exit 1; }
fi
command -v busybox >/dev/null || { echo "test_net: busybox not found (apt-get install busybox-static)" >&2; exit 1; }

QUEUES=2
if [[ -z $VECTORS ]]; then
  if [[ $BACKEND == vhostd ]]; then VECTORS=0; else VECTORS=$((2 * QUEUES + 2)); fi
fi
FLOWS=4 MIB=16             # phase 1 (host -> guest) and 2 (guest -> host)
BIDI_FLOWS=2 BIDI_MIB=8    # phase 3: both directions at once
PORT=5000                  # rx K: PORT+K, tx K: +100+K, brx K: +200+K, btx K: +300+K
RR_PORT=$((PORT + 400))    # the netrr server
TAP=vtap0 DEV=net0         # DEV: vhostd's name of the device in its log
HOST_IP=10.77.0.1 GUEST_IP=10.77.0.2 PREFIX=24
MAC=52:54:00:12:34:56
FEATURES=version_1,mq,csum,guest_csum,host_tso4,guest_tso4
if [[ $PACKED == 1 ]]; then FEATURES+=,ring_packed; fi
MIB_BYTES=1048576

# shellcheck source-path=SCRIPTDIR source=lib-host.sh
. "$SCRIPT_DIR/lib-host.sh"
lh_init "test_net[$BACKEND]" net
lh_build_guest
GLOG="$TMP/guest.log"

lh_netns_create "vhostd-e2e-net-$$"
lh_netns_qemu     # QEMU runs in the namespace too (it must, to open a tap)

# --- host end: nc listeners --------------------------------------------------
# Transfers: NAME PORT DIR (DIR "rx": host -> guest, the host sends $TMP/NAME;
# "tx": guest -> host, the host stores what arrives in $TMP/NAME).
XFERS=()
for ((k = 0; k < FLOWS; k++)); do XFERS+=("rx$k $((PORT + k)) rx" "tx$k $((PORT + 100 + k)) tx"); done
for ((k = 0; k < BIDI_FLOWS; k++)); do
  XFERS+=("brx$k $((PORT + 200 + k)) rx" "btx$k $((PORT + 300 + k)) tx")
done
RX_BYTES=$(((FLOWS * MIB + BIDI_FLOWS * BIDI_MIB) * MIB_BYTES))   # each direction

# busybox nc shuts down its sending side when its stdin reaches EOF, and exits
# as soon as the peer does that, even with data left to send: a receiver's
# stdin is therefore a FIFO nobody writes to (never EOF), and a transfer ends
# when the receiver has seen the sender's EOF and closes.
mkfifo "$TMP/hold"
LISTENER_PIDS=() ports=()
for x in "${XFERS[@]}"; do
  read -r name port dir <<<"$x"
  ports+=("$port")
  if [[ $dir == rx ]]; then
    size=$MIB; [[ $name == b* ]] && size=$BIDI_MIB
    head -c $((size * MIB_BYTES)) /dev/urandom >"$TMP/$name"
    ip netns exec "$NETNS" timeout $((TIMEOUT + 60)) busybox nc -l -p "$port" \
      <"$TMP/$name" >/dev/null 2>"$TMP/$name.nc.err" &
  else
    ip netns exec "$NETNS" timeout $((TIMEOUT + 60)) busybox nc -l -p "$port" \
      >"$TMP/$name" 2>"$TMP/$name.nc.err" 0<>"$TMP/hold" &
  fi
  LISTENER_PIDS+=($!)
  lh_track_pid $!
done
# The request/response server: one line per connection when it ends (bench/netrr.cpp).
RR_LOG="$TMP/netrr-server.log"
ip netns exec "$NETNS" timeout $((TIMEOUT + 60)) "$NETRR" server --port "$RR_PORT" >"$RR_LOG" 2>&1 &
RR_PID=$!
lh_track_pid $RR_PID
lh_netns_wait_tcp_listen 10 "${ports[@]}" "$RR_PORT" \
  || lh_abort "the nc listeners or the netrr server did not start (ports ${ports[*]} $RR_PORT): $(cat "$RR_LOG")"
log "nc listeners on ports ${ports[*]} (${#XFERS[@]} transfers, $((RX_BYTES / MIB_BYTES)) MiB each way), netrr server on $RR_PORT"

# --- backend -------------------------------------------------------------------
# config_tap: give the host end its address, bring it up, show what it is.
config_tap() {
  local info
  ip -n "$NETNS" addr add "$HOST_IP/$PREFIX" dev "$TAP"
  ip -n "$NETNS" link set "$TAP" up
  info=$(ip -d -n "$NETNS" link show "$TAP")
  log "host end: $(tr -s ' \n' ' ' <<<"$info")"
  [[ $info == *"vnet_hdr on"* ]] || fail "$TAP has no vnet_hdr: $info"
  if [[ $QUEUES -gt 1 && $info != *multi_queue* ]]; then fail "$TAP is not a multi-queue tap"; fi
}

QEMU_NET=()
if [[ $BACKEND == vhostd ]]; then
  SOCK="$TMP/net.sock"
  if [[ $LAUNCH == fd ]]; then
    caps=$("$VHOSTD-net" --print-capabilities) || fail "vhostd-net --print-capabilities failed"
    python3 -c 'import json,sys; d=json.loads(sys.argv[1]); assert d == {"type": "net"}, d' "$caps" ||
      fail "vhostd-net --print-capabilities printed: $caps"
    lh_start_backend ip netns exec "$NETNS" "$SCRIPT_DIR/launch_fd.py" listen "$SOCK" -- "$VHOSTD-net" --threads 1 \
      --tap "$TAP" --queues "$QUEUES" --log-level info
  else
    lh_start_backend ip netns exec "$NETNS" "$VHOSTD" --threads 1 \
      --net "socket=$SOCK,tap=$TAP,queues=$QUEUES" --log-level info
  fi
  lh_wait_listen "$SOCK"
  lh_netns_wait_link "$TAP" 10 || lh_abort "vhostd did not create $TAP in $NETNS within 10 s"
  if [[ $LAUNCH == fd ]] && ! grep -q 'serving the listening socket handed over' "$BLOG"; then
    fail "vhostd-net did not say it adopted the listening socket"
  fi
  if ! ip -n "$NETNS" link show "$TAP" | head -n1 | grep -q '[<,]UP[,>]'; then
    fail "vhostd did not bring $TAP up: $(ip -n "$NETNS" link show "$TAP" | head -n1)"
  fi
  config_tap
  # shellcheck disable=SC2054  # commas are part of QEMU option values
  QEMU_NET=(-chardev "socket,id=c0,path=$SOCK" -netdev "vhost-user,id=n0,chardev=c0,queues=$QUEUES")
else
  # shellcheck disable=SC2054
  QEMU_NET=(-netdev "tap,id=n0,ifname=$TAP,script=no,downscript=no,queues=$QUEUES,vhost=off")
fi
# shellcheck disable=SC2054
PACKED_OPT=""
if [[ $PACKED == 1 ]]; then PACKED_OPT=",packed=on"; fi
QEMU_NET+=(-device "virtio-net-pci,netdev=n0,mq=on,vectors=$VECTORS,mac=$MAC$PACKED_OPT")

# --- guest ----------------------------------------------------------------------
lh_start_guest net "$GLOG" "$TIMEOUT" \
  "vtest_net_addr=$GUEST_IP/$PREFIX vtest_net_peer=$HOST_IP vtest_net_mac=$MAC vtest_net_queues=$QUEUES vtest_net_features=$FEATURES vtest_net_flows=$FLOWS vtest_net_mib=$MIB vtest_net_bidi_flows=$BIDI_FLOWS vtest_net_bidi_mib=$BIDI_MIB vtest_net_port=$PORT vtest_net_xfer_secs=$((TIMEOUT / 2)) vtest_net_rr_port=$RR_PORT vtest_net_rr_secs=$RR_SECS vtest_net_rr_conns=$RR_CONNS vtest_net_rr_size=$RR_SIZE" \
  "${QEMU_NET[@]}"
if [[ $BACKEND == qemu-tap ]]; then
  # QEMU creates the tap when it starts; the guest retries its pings meanwhile.
  if ! lh_netns_wait_link "$TAP" 30; then
    lh_wait_guest
    lh_abort "QEMU did not create $TAP in $NETNS within 30 s"
  fi
  config_tap
fi
lh_wait_guest

# --- host-side checks ---------------------------------------------------------------
# The listeners end when their transfer has ended: give them a few seconds.
for ((i = 0; i < 50; i++)); do
  live=0
  for p in "${LISTENER_PIDS[@]}"; do kill -0 "$p" 2>/dev/null && live=1; done
  [[ $live == 0 ]] && break
  sleep 0.1
done
unfinished=()
for j in "${!XFERS[@]}"; do
  read -r name port dir <<<"${XFERS[$j]}"
  p=${LISTENER_PIDS[$j]}
  if kill -0 "$p" 2>/dev/null; then
    kill -TERM "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
    unfinished+=("$name:$port")
    continue
  fi
  rc=0; wait "$p" || rc=$?
  if [[ $rc -ne 0 ]]; then
    fail "transfer $name: the host's nc on port $port exited with status $rc: $(cat "$TMP/$name.nc.err")"
  elif [[ $GUEST_OK == 1 ]]; then
    lh_check_xfer "$GLOG" "$name" "$TMP/$name"
  fi
done
if [[ ${#unfinished[@]} -gt 0 ]]; then
  fail "${#unfinished[@]} transfer(s) never finished on the host (no or unfinished connection): ${unfinished[*]}"
fi

# Request/response: one VTEST-NETRR line per connection count; the server
# must have seen exactly that many connections, all closed cleanly by the
# client, and served exactly the transactions the client counted.
check_rr() {
  local lines want_runs want_conns=0 c json n conns client_total=0 server_conns server_total i
  lines=$(tr -d '\r' <"$GLOG" | grep -a '^VTEST-NETRR ' || true)
  IFS=, read -r -a want_runs <<<"$RR_CONNS"
  for c in "${want_runs[@]}"; do want_conns=$((want_conns + c)); done
  if [[ $(grep -c . <<<"$lines") -ne ${#want_runs[@]} ]]; then
    fail "rr: the guest reported $(grep -c . <<<"$lines") netrr run(s), expected ${#want_runs[@]} (connections $RR_CONNS)"
    return 0
  fi
  while read -r _ json; do
    n=$(sed -n 's/.*"transactions":\([0-9]*\).*/\1/p' <<<"$json")
    conns=$(sed -n 's/.*"conns":\([0-9]*\).*/\1/p' <<<"$json")
    log "rr: $conns connection(s): $n transactions, $(sed -n 's/.*"tps":\([0-9.]*\).*/\1/p' <<<"$json")/s," \
      "latency us $(sed -n 's/.*"lat_us":{\([^}]*\)}.*/\1/p' <<<"$json" | tr -d '"')"
    [[ -n $n && $n -gt 0 ]] || fail "rr: the guest's netrr run with $conns connection(s) has no transactions: $json"
    client_total=$((client_total + ${n:-0}))
  done <<<"$lines"
  # The server logs a connection when it ends; the client has closed them all.
  for ((i = 0; i < 50; i++)); do
    [[ $(grep -c '^netrr server: connection ' "$RR_LOG") -ge $want_conns ]] && break
    sleep 0.1
  done
  server_conns=$(grep -c ', closed by the client$' "$RR_LOG" || true)
  server_total=$(awk '/^netrr server: connection .*, closed by the client$/ { n += $(NF - 5) } END { print n + 0 }' "$RR_LOG")
  if grep -q '^netrr server: connection .*failed' "$RR_LOG"; then
    fail "rr: the netrr server reports failed connections: $(grep '^netrr server: connection .*failed' "$RR_LOG")"
  fi
  [[ $server_conns -eq $want_conns ]] \
    || fail "rr: the netrr server saw $server_conns connection(s) end cleanly, expected $want_conns"
  if [[ $server_total -eq $client_total ]]; then
    log "rr: the server answered $server_total transactions on $server_conns connections, as the client counted"
  else
    fail "rr: the netrr server answered $server_total transactions, the guest's client counted $client_total"
  fi
}
if [[ $GUEST_OK == 1 ]]; then check_rr; fi

if [[ $BACKEND == vhostd ]]; then
  lh_check_backend_alive "during/after the guest run"
  ip -n "$NETNS" link show "$TAP" >/dev/null 2>&1 || fail "$TAP disappeared while vhostd still runs"
  # vhostd logs the counters of every queue pair when the frontend leaves.
  for ((i = 0; i < 100; i++)); do
    [[ $(lh_net_stats "$DEV" | wc -l) -ge $QUEUES ]] && break
    sleep 0.1
  done
  stats=$(lh_net_stats "$DEV")
  sum=(0 0 0 0 0 0 0 0 0)
  for ((q = 0; q < QUEUES; q++)); do
    line=$(awk -v q="$q" '$1 == q' <<<"$stats")
    if [[ -z $line ]]; then
      fail "vhostd logged no counters for $DEV queue pair $q"
      continue
    fi
    read -r -a c <<<"$line"
    log "vhostd $DEV queue pair $q: rx ${c[1]} packets ${c[2]} bytes ${c[3]} gso ${c[4]} dropped;" \
      "tx ${c[5]} packets ${c[6]} bytes ${c[7]} gso ${c[8]} dropped"
    [[ ${c[1]} -gt 0 ]] || fail "vhostd $DEV queue pair $q received no packets for the guest (rx 0)"
    [[ ${c[5]} -gt 0 ]] || fail "vhostd $DEV queue pair $q transmitted no packets from the guest (tx 0)"
    for f in 1 2 3 4 5 6 7 8; do sum[f]=$((sum[f] + c[f])); done
  done
  if [[ -n $stats ]]; then
    [[ ${sum[3]} -gt 0 ]] || fail "vhostd $DEV: no rx gso packets (host TSO -> guest not used)"
    [[ ${sum[7]} -gt 0 ]] || fail "vhostd $DEV: no tx gso packets (guest TSO not used)"
    [[ ${sum[2]} -ge $RX_BYTES ]] || fail "vhostd $DEV: rx ${sum[2]} bytes < $RX_BYTES bytes transferred to the guest"
    [[ ${sum[6]} -ge $RX_BYTES ]] || fail "vhostd $DEV: tx ${sum[6]} bytes < $RX_BYTES bytes transferred from the guest"
    [[ $((sum[4] + sum[8])) -eq 0 ]] || log "note: vhostd dropped ${sum[4]} rx and ${sum[8]} tx packets"
  fi
  lh_stop_backend 0
  lh_netns_wait_link_gone "$TAP" 3 || fail "$TAP still exists after vhostd exited"
else
  lh_netns_wait_link_gone "$TAP" 3 || fail "$TAP still exists after QEMU exited"
fi

lh_finish
