#!/usr/bin/env bash
# End-to-end virtio-blk test: a vhost-user-blk backend on a unix socket, a
# QEMU/TCG guest running tests/e2e/guest/blk.sh (or blk_null.sh) against it,
# then host-side checks of the backing file and a clean backend shutdown.
#
# Usage:
#   tests/e2e/test_blk.sh --build-dir BUILD --guest-dir DIR [--backend vhostd|qsd]
#                         [--null] [--packed] [--timeout SECS] [--keep]
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
#   --timeout SECS      guest timeout (default 240)
#   --keep              keep the temp dir (backing file, logs) for debugging
#
# Exit status 0 = PASS, 1 = FAIL.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BUILD_DIR="" GUEST_DIR="" BACKEND=vhostd NULL=0 PACKED=0 TIMEOUT=240 KEEP=0
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
    --timeout) TIMEOUT=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h|--help) usage 0 ;;
    *) echo "test_blk: unknown argument '$1'" >&2; usage ;;
  esac
done
[[ -n $GUEST_DIR ]] || { echo "test_blk: --guest-dir is required" >&2; usage; }
case $BACKEND in vhostd|qsd) ;; *) echo "test_blk: bad --backend '$BACKEND'" >&2; usage ;; esac
if [[ $BACKEND == vhostd ]]; then
  [[ -n $BUILD_DIR ]] || { echo "test_blk: --build-dir is required for --backend vhostd" >&2; usage; }
  VHOSTD="$BUILD_DIR/vhostd"
  [[ -x $VHOSTD ]] || { echo "test_blk: $VHOSTD not found or not executable" >&2; exit 1; }
fi

if [[ $NULL == 1 ]]; then NAME="blk_null/$BACKEND"; else NAME="blk/$BACKEND"; fi
PACKED_OPT=""
if [[ $PACKED == 1 ]]; then NAME+="/packed"; PACKED_OPT=",packed=on"; fi
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

if [[ $NULL == 0 ]]; then
  truncate -s "${DISK_MIB}M" "$IMG"     # sparse backing file
fi

backend_cmd=()
if [[ $BACKEND == qsd ]]; then
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
    backend_cmd=("$VHOSTD" --blk "socket=$SOCK,path=$IMG,queues=$QUEUES")
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
lh_run_guest "$gtest" "$GLOG" "$TIMEOUT" "$extra" \
  -chardev "socket,id=c0,path=$SOCK" \
  -device "vhost-user-blk-pci,chardev=c0,num-queues=$QUEUES$PACKED_OPT"

# The backend must survive the guest disconnecting.
lh_check_backend_alive "during/after the guest run"

# --- host-side checks of the backing file -----------------------------------
if [[ $NULL == 0 && ${#FAILURES[@]} -eq 0 ]]; then
  lh_check_blk_image "$IMG"
fi

# --- backend shutdown --------------------------------------------------------
# vhostd must exit 0 on SIGTERM; qemu-storage-daemon's status is not checked.
if [[ $BACKEND == vhostd ]]; then lh_stop_backend 0; else lh_stop_backend any; fi

lh_finish
