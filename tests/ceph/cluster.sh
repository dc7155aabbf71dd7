#!/usr/bin/env bash
# A throw-away one-node Ceph cluster for the rbd backend's tests: one monitor and one OSD
# (bluestore on a sparse file; CEPH_OBJECTSTORE=memstore for RAM), no authentication, pool size
# 1, on 127.0.0.1 only, everything
# (config, data, logs, sockets) under DIR. From Debian's ceph-mon, ceph-osd and ceph-common; no
# manager (I/O does not need one).
#
#   tests/ceph/cluster.sh start DIR [POOL]   start it (the pool, default "rbd", created for RBD);
#                                            prints the path of its ceph.conf
#   tests/ceph/cluster.sh stop DIR           stop its daemons (DIR stays)
#   tests/ceph/cluster.sh osd-stop DIR       stop the OSD (I/O to the cluster waits)
#   tests/ceph/cluster.sh osd-start DIR      start it again (with its data: bluestore)
#
# Ports: the monitor on 127.0.0.1:$CEPH_MON_PORT (default 46789, v1 protocol). Exit status
# non-zero when a step fails (its log is printed).
set -euo pipefail
cmd=${1:-} DIR=${2:-}
[[ -n $cmd && -n $DIR ]] || { sed -n '2,18p' "$0" >&2; exit 2; }
POOL=${3:-rbd}
PORT=${CEPH_MON_PORT:-46789}
# bluestore (default): objects in a sparse 2 GiB file under DIR, so a stopped and restarted OSD
# comes back with its data; memstore: in RAM, faster to start, gone when the OSD stops.
STORE=${CEPH_OBJECTSTORE:-bluestore}
CONF=$DIR/ceph.conf
C=(-c "$CONF")

die() { echo "ceph-cluster: $*" >&2; tail -n 20 "$DIR"/log/*.log >&2 2>/dev/null || true; exit 1; }
pid_of() { cat "$DIR/run/$1.pid" 2>/dev/null || true; }
# cli ARGS...: a ceph CLI call, tried up to 5 times (see "wrong fsid" in the config below).
cli() {
  local i out
  for ((i = 0; i < 5; i++)); do
    if out=$(timeout 20 ceph "${C[@]}" "$@" 2>/dev/null); then echo "$out"; return 0; fi
    sleep 0.5
  done
  return 1
}
stop_daemon() {  # NAME (mon.a, osd.0)
  local p i
  p=$(pid_of "$1")
  [[ -n $p ]] && kill -0 "$p" 2>/dev/null || return 0
  kill -TERM "$p"
  for ((i = 0; i < 100; i++)); do kill -0 "$p" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$p" 2>/dev/null || true
}
start_osd() {
  local p
  p=$(pid_of osd.0)
  if [[ -n $p ]] && kill -0 "$p" 2>/dev/null; then return 0; fi  # running already
  ceph-osd "${C[@]}" -i 0 || die "ceph-osd did not start"
  local i
  for ((i = 0; i < 150; i++)); do
    timeout 5 ceph "${C[@]}" osd dump 2>/dev/null | grep -q '^osd.0 up' && return 0
    sleep 0.2
  done
  die "osd.0 did not come up"
}

case $cmd in
  start)
    mkdir -p "$DIR"/{run,log,mon,osd}
    fsid=$(cat /proc/sys/kernel/random/uuid)
    cat >"$CONF" <<CONF
[global]
fsid = $fsid
mon host = v1:127.0.0.1:$PORT
mon initial members = a
public addr = 127.0.0.1
cluster addr = 127.0.0.1
public network = 127.0.0.0/8
cluster network = 127.0.0.0/8
ms bind ipv4 = true
ms bind ipv6 = false
ms bind msgr2 = false
auth cluster required = none
auth service required = none
auth client required = none
osd pool default size = 1
osd pool default min size = 1
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
run dir = $DIR/run
admin socket = $DIR/run/\$name.\$pid.asok
pid file = $DIR/run/\$name.pid
log file = $DIR/log/\$name.log
mon data = $DIR/mon/\$name
osd data = $DIR/osd/\$name
osd objectstore = $STORE
memstore device bytes = 1073741824
bluestore block create = true
bluestore block size = 2147483648
bluestore cache size = 134217728
osd memory target = 939524096
bluestore fsck on mkfs = false
osd max object name len = 256
osd max object namespace len = 64
# Without cephx a client can send a command before it has the monitor map, with a zero fsid that
# the monitor refuses ("wrong fsid"): the OSD must not send its own at start (crush placement is
# done here), and the CLI calls below are retried.
osd crush update on start = false
osd class update on start = false
CONF
    monmaptool --create --addv a "[v1:127.0.0.1:$PORT]" --fsid "$fsid" "$DIR/monmap" >/dev/null || die "monmaptool failed"
    ceph-mon "${C[@]}" --mkfs -i a --monmap "$DIR/monmap" || die "ceph-mon --mkfs failed"
    ceph-mon "${C[@]}" -i a || die "ceph-mon did not start"
    for ((i = 0; i < 100; i++)); do timeout 5 ceph "${C[@]}" mon stat >/dev/null 2>&1 && break; sleep 0.2; done
    timeout 10 ceph "${C[@]}" mon stat >/dev/null 2>&1 || die "the monitor does not answer"
    # The OSD's uuid chosen here and given to both the monitor and mkfs.
    osd_uuid=$(cat /proc/sys/kernel/random/uuid)
    id=$(cli osd new "$osd_uuid") || die "ceph osd new failed"
    [[ $id == 0 ]] || die "the new OSD got id $id, not 0"
    mkdir -p "$DIR/osd/osd.0"
    ceph-osd "${C[@]}" -i 0 --mkfs --osd-uuid "$osd_uuid" >/dev/null 2>&1 || die "ceph-osd --mkfs failed"
    cli osd crush add osd.0 1.0 root=default >/dev/null || die "crush add failed"
    start_osd
    cli osd pool create "$POOL" 8 8 >/dev/null || die "pool create failed"
    cli osd pool application enable "$POOL" rbd >/dev/null || die "application enable failed"
    # I/O works once the pool's placement groups are active: a write through rados says so.
    for ((i = 0; i < 150; i++)); do
      echo ok | timeout 5 rados "${C[@]}" -p "$POOL" put vhostd-probe - 2>/dev/null && break
      sleep 0.2
    done
    echo ok | timeout 5 rados "${C[@]}" -p "$POOL" put vhostd-probe - || die "the pool takes no writes"
    echo "$CONF"
    ;;
  stop)
    stop_daemon osd.0
    stop_daemon mon.a
    ;;
  osd-stop) stop_daemon osd.0 ;;
  osd-start) start_osd ;;
  *) sed -n '2,18p' "$0" >&2; exit 2 ;;
esac
