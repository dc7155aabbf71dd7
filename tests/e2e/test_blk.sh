#!/usr/bin/env bash
# End-to-end virtio-blk test: a vhost-user-blk backend on a unix socket, a
# QEMU/TCG guest running tests/e2e/guest/blk.sh (or blk_null.sh) against it,
# then host-side checks of the backing file and a clean backend shutdown.
#
# Usage:
#   tests/e2e/test_blk.sh --build-dir BUILD --guest-dir DIR [--backend vhostd|qsd]
#                         [--null] [--packed] [--nbd nbdkit|qemu-nbd [--nbd-restart]]
#                         [--rbd [--rbd-restart]]
#                         [--timeout SECS] [--keep]
#
#   --build-dir BUILD   CMake build dir containing the vhostd binary
#                       (not needed for --backend qsd)
#   --guest-dir DIR     guest image dir; built/refreshed with build-guest.sh
#   --backend B         vhostd (default) or qsd (qemu-storage-daemon, used as a
#                       reference implementation to validate this harness)
#   --null              null backend (reads zeroes, writes discarded) and the
#                       blk_null guest test instead of a file backend
#   --packed            packed virtqueues (vhost-user-blk-pci packed=on; the
#                       guest must negotiate them)
#   --nbd SERVER        the backing file is served by an NBD server on a unix
#                       socket (nbdkit's file plugin, or qemu-nbd: one client,
#                       no multi-conn), and vhostd (two reactors) reaches it
#                       with backend=nbd; qsd with its nbd driver
#   --nbd-restart       kill -9 the NBD server while the guest's fio writes and
#                       verifies, start it again 2 s later: the guest must see
#                       no error (vhostd reconnects and sends the requests again)
#   --rbd               the disk is an RBD image on a one-node Ceph cluster the
#                       test starts (tests/ceph/cluster.sh: bluestore on a file,
#                       127.0.0.1 only); vhostd with backend=rbd, qsd with its rbd
#                       driver. Afterwards the image is exported with the rbd CLI
#                       and checked on the host like the backing file
#   --rbd-restart       stop the OSD while the guest's fio writes and verifies,
#                       start it again 3 s later: I/O waits, the guest sees no error
#   --timeout SECS      guest timeout (default 240)
#   --keep              keep the temp dir (backing file, logs) for debugging
#
# Exit status 0 = PASS, 1 = FAIL.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BUILD_DIR="" GUEST_DIR="" BACKEND=vhostd NULL=0 PACKED=0 TIMEOUT=240 KEEP=0 NBD="" NBD_RESTART=0 RBD=0 RBD_RESTART=0
DISK_MIB=256
QUEUES=2

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit "${1:-2}"; }
while [[ $# -gt 0 ]]; do
  case $1 in
    --build-dir) BUILD_DIR=$2; shift 2 ;;
    --guest-dir) GUEST_DIR=$2; shift 2 ;;
    --backend) BACKEND=$2; shift 2 ;;
    --null) NULL=1; shift ;;
    --packed) PACKED=1; shift ;;
    --nbd) NBD=$2; shift 2 ;;
    --nbd-restart) NBD_RESTART=1; shift ;;
    --rbd) RBD=1; shift ;;
    --rbd-restart) RBD_RESTART=1; shift ;;
    --timeout) TIMEOUT=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h|--help) usage 0 ;;
    *) echo "test_blk: unknown argument '$1'" >&2; usage ;;
  esac
done
[[ -n $GUEST_DIR ]] || { echo "test_blk: --guest-dir is required" >&2; usage; }
case $BACKEND in vhostd|qsd) ;; *) echo "test_blk: bad --backend '$BACKEND'" >&2; usage ;; esac
case $NBD in ""|nbdkit|qemu-nbd) ;; *) echo "test_blk: bad --nbd '$NBD'" >&2; usage ;; esac
if [[ -n $NBD && $NULL == 1 ]]; then echo "test_blk: --nbd and --null exclude each other" >&2; usage; fi
if [[ $NBD_RESTART == 1 && -z $NBD ]]; then echo "test_blk: --nbd-restart needs --nbd" >&2; usage; fi
if [[ $RBD == 1 && ( -n $NBD || $NULL == 1 ) ]]; then echo "test_blk: --rbd excludes --nbd and --null" >&2; usage; fi
if [[ $RBD_RESTART == 1 && $RBD == 0 ]]; then echo "test_blk: --rbd-restart needs --rbd" >&2; usage; fi
if [[ $BACKEND == vhostd ]]; then
  [[ -n $BUILD_DIR ]] || { echo "test_blk: --build-dir is required for --backend vhostd" >&2; usage; }
  VHOSTD="$BUILD_DIR/vhostd"
  [[ -x $VHOSTD ]] || { echo "test_blk: $VHOSTD not found or not executable" >&2; exit 1; }
fi

if [[ $NULL == 1 ]]; then NAME="blk_null/$BACKEND"; else NAME="blk/$BACKEND"; fi
PACKED_OPT=""
if [[ $PACKED == 1 ]]; then NAME+="/packed"; PACKED_OPT=",packed=on"; fi
if [[ -n $NBD ]]; then NAME+="/nbd-$NBD"; fi
if [[ $NBD_RESTART == 1 ]]; then NAME+="+restart"; fi
if [[ $RBD == 1 ]]; then NAME+="/rbd"; fi
if [[ $RBD_RESTART == 1 ]]; then NAME+="+osd-restart"; fi
# shellcheck source-path=SCRIPTDIR source=lib-host.sh
. "$SCRIPT_DIR/lib-host.sh"
lh_init "test_blk[$NAME]" blk

# --- guest image -------------------------------------------------------------
lh_build_guest

# --- backend -----------------------------------------------------------------
SOCK="$TMP/blk.sock"
IMG="$TMP/disk.img"
BLOG="$TMP/backend.log"
GLOG="$TMP/guest.log"

if [[ $NULL == 0 && $RBD == 0 ]]; then
  truncate -s "${DISK_MIB}M" "$IMG"     # sparse backing file
fi

# --- NBD server (--nbd) -------------------------------------------------------
NBD_SOCK="$TMP/nbd.sock" NBD_PID="" NBD_LOG="$TMP/nbd.log"   # the server's pid: $TMP/nbd.pid
start_nbd() {
  # Daemonized (the server forks once it listens and writes its pid file): a server started in
  # the foreground from the restarter's subshell was seen to quit at once.
  rm -f "$NBD_SOCK" "$TMP/nbd.pid"
  if [[ $NBD == nbdkit ]]; then
    nbdkit --unix "$NBD_SOCK" --pidfile "$TMP/nbd.pid" file "$IMG" </dev/null >>"$NBD_LOG" 2>&1 ||
      { cat "$NBD_LOG" >&2; lh_abort "nbdkit did not start"; }
  else
    # --persistent: a client that goes away (vhostd reconnecting) does not end the server.
    qemu-nbd --fork --persistent --pid-file="$TMP/nbd.pid" --format=raw --discard=unmap --cache=writeback \
      --socket="$NBD_SOCK" "$IMG" </dev/null >>"$NBD_LOG" 2>&1 ||
      { cat "$NBD_LOG" >&2; lh_abort "qemu-nbd did not start"; }
  fi
  local i
  for ((i = 0; i < 100; i++)); do
    [[ -S $NBD_SOCK && -s $TMP/nbd.pid ]] && break
    sleep 0.1
  done
  [[ -S $NBD_SOCK && -s $TMP/nbd.pid ]] || lh_abort "the NBD server ($NBD) did not create $NBD_SOCK within 10s"
  NBD_PID=$(cat "$TMP/nbd.pid")
}
if [[ -n $NBD ]]; then
  lh_track_pidfile "$TMP/nbd.pid"
  start_nbd
  log "NBD server: $NBD pid $NBD_PID on $NBD_SOCK"
fi

# --- Ceph cluster (--rbd) -----------------------------------------------------
CEPH_DIR="$TMP/ceph" CEPH_CONF=""
if [[ $RBD == 1 ]]; then
  lh_track_pidfile "$CEPH_DIR/run/osd.0.pid"
  lh_track_pidfile "$CEPH_DIR/run/mon.a.pid"
  CEPH_CONF=$("$SCRIPT_DIR/../ceph/cluster.sh" start "$CEPH_DIR" rbd 2>"$TMP/ceph-start.log") ||
    { cat "$TMP/ceph-start.log" >&2; lh_abort "the Ceph cluster did not start"; }
  timeout 60 rbd -c "$CEPH_CONF" create --size "${DISK_MIB}M" rbd/disk || lh_abort "rbd create failed"
  log "Ceph cluster up ($CEPH_CONF), image rbd/disk of ${DISK_MIB} MiB"
fi

backend_cmd=()
if [[ $RBD == 1 && $BACKEND == qsd ]]; then
  backend_cmd=(qemu-storage-daemon --blockdev "driver=rbd,node-name=f,pool=rbd,image=disk,conf=$CEPH_CONF"
    --export "type=vhost-user-blk,id=e,node-name=f,addr.type=unix,addr.path=$SOCK,writable=on,num-queues=$QUEUES")
elif [[ $RBD == 1 ]]; then
  backend_cmd=("$VHOSTD" --threads 2 --blk "socket=$SOCK,backend=rbd,pool=rbd,image=disk,conf=$CEPH_CONF,queues=$QUEUES,timeout=120")
elif [[ $BACKEND == qsd && -n $NBD ]]; then
  backend_cmd=(qemu-storage-daemon --blockdev "driver=nbd,node-name=f,server.type=unix,server.path=$NBD_SOCK"
    --export "type=vhost-user-blk,id=e,node-name=f,addr.type=unix,addr.path=$SOCK,writable=on,num-queues=$QUEUES")
elif [[ -n $NBD ]]; then
  backend_cmd=("$VHOSTD" --threads 2 --blk "socket=$SOCK,backend=nbd,uri=nbd+unix:///?socket=$NBD_SOCK,queues=$QUEUES,timeout=60")
elif [[ $BACKEND == qsd ]]; then
  if [[ $NULL == 1 ]]; then
    blockdev="driver=null-co,node-name=f,size=$((DISK_MIB * 1048576)),read-zeroes=on"
  else
    # Prefer O_DIRECT + io_uring; fall back to what the host supports (tmpfs
    # has no O_DIRECT, some kernels/sandboxes no io_uring). Probed with
    # qemu-io, which uses the same block layer as qemu-storage-daemon.
    direct=on aio=io_uring
    probe() { qemu-io --image-opts "driver=file,filename=$IMG,cache.direct=$1,aio=$2" \
                -c "read 0 4096" >/dev/null 2>&1; }
    if ! probe on io_uring; then
      if probe on threads; then aio=threads
      elif probe off io_uring; then direct=off
      else direct=off aio=threads; fi
    fi
    blockdev="driver=file,node-name=f,filename=$IMG,cache.direct=$direct,aio=$aio,discard=unmap"
  fi
  backend_cmd=(qemu-storage-daemon --blockdev "$blockdev"
    --export "type=vhost-user-blk,id=e,node-name=f,addr.type=unix,addr.path=$SOCK,writable=on,num-queues=$QUEUES")
else
  if [[ $NULL == 1 ]]; then
    backend_cmd=("$VHOSTD" --blk "socket=$SOCK,backend=null,size=${DISK_MIB}M,queues=$QUEUES")
  else
    # As nobody once started (--user): the guest's I/O is served with no root and no capability.
    backend_cmd=("$VHOSTD" --user nobody --blk "socket=$SOCK,path=$IMG,queues=$QUEUES")
  fi
fi

lh_start_backend "${backend_cmd[@]}"
lh_wait_listen "$SOCK"

# --- guest -------------------------------------------------------------------
if [[ $NULL == 1 ]]; then
  gtest=blk_null; extra="vtest_queues=$QUEUES"
else
  gtest=blk; extra="vtest_queues=$QUEUES vtest_discard=1"
fi
extra+=" vtest_packed=$PACKED"
# wait_for_fio: until the guest's fio writes and verifies (bounded by the guest's timeout).
wait_for_fio() {
  local i
  for ((i = 0; i < TIMEOUT * 10; i++)); do
    grep -aq "c1. fio random write" "$GLOG" 2>/dev/null && return 0
    sleep 0.1
  done
}
if [[ $RBD_RESTART == 1 ]]; then
  # Once the guest's fio is writing and verifying: the OSD stops (requests wait in librbd) and
  # starts again 3 s later.
  (
    wait_for_fio
    sleep 1
    "$SCRIPT_DIR/../ceph/cluster.sh" osd-stop "$CEPH_DIR" && echo "osd-restart: stopped" >>"$TMP/ceph-restart.log"
    sleep 3
    "$SCRIPT_DIR/../ceph/cluster.sh" osd-start "$CEPH_DIR" >>"$TMP/ceph-restart.log" 2>&1 &&
      echo "osd-restart: started" >>"$TMP/ceph-restart.log"
  ) &
  RESTARTER=$!
  lh_track_pid "$RESTARTER"
fi
if [[ $NBD_RESTART == 1 ]]; then
  # Once the guest's fio is writing and verifying: the server dies (kill -9, requests in flight)
  # and comes back 2 s later.
  (
    wait_for_fio
    sleep 1
    NBD_PID=$(cat "$TMP/nbd.pid")
    kill -9 "$NBD_PID" 2>/dev/null || true
    echo "nbd-restart: killed $NBD_PID" >>"$NBD_LOG"
    sleep 2
    start_nbd
    echo "nbd-restart: started $NBD_PID" >>"$NBD_LOG"
  ) &
  RESTARTER=$!
  lh_track_pid "$RESTARTER"
fi
lh_run_guest "$gtest" "$GLOG" "$TIMEOUT" "$extra" \
  -chardev "socket,id=c0,path=$SOCK" \
  -device "vhost-user-blk-pci,chardev=c0,num-queues=$QUEUES$PACKED_OPT"

# The backend must survive the guest disconnecting.
lh_check_backend_alive "during/after the guest run"
if [[ $NBD == qemu-nbd && $BACKEND == vhostd ]]; then
  # qemu-nbd (one client) offers no multi-conn: vhostd must have seen that (one connection, the
  # device's queues on one reactor).
  if grep -q "nbd '.*multi-conn" "$BLOG"; then fail "vhostd took qemu-nbd for a multi-conn server"; fi
fi
if [[ $NBD_RESTART == 1 ]]; then
  wait "$RESTARTER" 2>/dev/null || true
  if grep -q "^nbd-restart: started" "$NBD_LOG"; then
    log "the NBD server was killed and started again during the guest's fio"
    grep -q "connected again" "$BLOG" || fail "vhostd did not report reconnecting to the NBD server"
  else
    fail "the NBD server was not restarted during the guest run (the guest never reached fio?)"
  fi
fi

if [[ $RBD_RESTART == 1 ]]; then
  wait "$RESTARTER" 2>/dev/null || true
  if grep -q "^osd-restart: started" "$TMP/ceph-restart.log" 2>/dev/null; then
    log "the OSD was stopped for 3 s and started again during the guest's fio"
  else
    fail "the OSD was not stopped and restarted during the guest run"
    cat "$TMP/ceph-restart.log" >&2 2>/dev/null || true
  fi
fi
if [[ $RBD == 1 && ${#FAILURES[@]} -eq 0 ]]; then
  # What the guest wrote, read back through the rbd CLI (not vhostd), checked like a file.
  timeout 120 rbd -c "$CEPH_CONF" export --no-progress rbd/disk "$IMG" || fail "rbd export of the image failed"
fi

# --- host-side checks of the backing file -----------------------------------
if [[ $NULL == 0 && ${#FAILURES[@]} -eq 0 ]]; then
  lh_check_blk_image "$IMG"
fi

# --user nobody: the whole run was served by a vhostd without root on any thread.
if [[ $BACKEND == vhostd && $NULL == 0 && $RBD == 0 && -z $NBD ]]; then
  for t in /proc/"$BACKEND_PID"/task/*; do
    uids=$(awk '$1 == "Uid:" { print $2, $3, $4, $5 }' "$t/status" 2>/dev/null) || continue
    [[ -z $uids || $uids == "65534 65534 65534 65534" ]] || fail "thread $(cat "$t/comm") runs as uid $uids, not nobody"
  done
  grep -q "running as nobody" "$BLOG" || fail "vhostd did not say it runs as nobody"
fi

# --- backend shutdown --------------------------------------------------------
# vhostd must exit 0 on SIGTERM; qemu-storage-daemon's status is not checked.
if [[ $BACKEND == vhostd ]]; then lh_stop_backend 0; else lh_stop_backend any; fi
if [[ $RBD == 1 ]]; then "$SCRIPT_DIR/../ceph/cluster.sh" stop "$CEPH_DIR" || true; fi

lh_finish
