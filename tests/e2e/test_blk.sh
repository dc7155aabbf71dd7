#!/usr/bin/env bash
# End-to-end virtio-blk test: a vhost-user-blk backend on a unix socket, a
# QEMU/TCG guest running tests/e2e/guest/blk.sh (or blk_null.sh) against it,
# then host-side checks of the backing file and a clean backend shutdown.
#
# Usage:
#   tests/e2e/test_blk.sh --build-dir BUILD --guest-dir DIR [--backend vhostd|qsd]
#                         [--null] [--timeout SECS] [--keep]
#
#   --build-dir BUILD   CMake build dir containing the vhostd binary
#                       (not needed for --backend qsd)
#   --guest-dir DIR     guest image dir; built/refreshed with build-guest.sh
#   --backend B         vhostd (default) or qsd (qemu-storage-daemon, used as a
#                       reference implementation to validate this harness)
#   --null              null backend (reads zeroes, writes discarded) and the
#                       blk_null guest test instead of a file backend
#   --timeout SECS      guest timeout (default 240)
#   --keep              keep the temp dir (backing file, logs) for debugging
#
# Exit status 0 = PASS, 1 = FAIL.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BUILD_DIR="" GUEST_DIR="" BACKEND=vhostd NULL=0 TIMEOUT=240 KEEP=0
DISK_MIB=256
QUEUES=2
PATTERN_STR='vhostd-e2e-blk!'   # + "\n" from yes(1) = 16 bytes; see guest/blk.sh

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit "${1:-2}"; }
while [[ $# -gt 0 ]]; do
  case $1 in
    --build-dir) BUILD_DIR=$2; shift 2 ;;
    --guest-dir) GUEST_DIR=$2; shift 2 ;;
    --backend) BACKEND=$2; shift 2 ;;
    --null) NULL=1; shift ;;
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
T0=$SECONDS
log() { echo "test_blk[$NAME]: $*" >&2; }
FAILURES=()
fail() { log "FAIL: $*"; FAILURES+=("$*"); }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/vtest-blk.XXXXXX")
BACKEND_PID="" GUEST_PID=""
# shellcheck disable=SC2317  # invoked via trap
cleanup() {
  local rc=$?
  if [[ -n $GUEST_PID ]] && kill -0 "$GUEST_PID" 2>/dev/null; then
    kill -TERM "$GUEST_PID" 2>/dev/null || true   # run-guest.sh stops QEMU
    wait "$GUEST_PID" 2>/dev/null || true
  fi
  if [[ -n $BACKEND_PID ]] && kill -0 "$BACKEND_PID" 2>/dev/null; then
    kill -KILL "$BACKEND_PID" 2>/dev/null || true
    wait "$BACKEND_PID" 2>/dev/null || true
  fi
  if [[ $KEEP == 1 ]]; then log "kept $TMP"; else rm -rf "$TMP"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- guest image -------------------------------------------------------------
"$SCRIPT_DIR/build-guest.sh" "$GUEST_DIR"

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

log "starting backend: ${backend_cmd[*]}"
"${backend_cmd[@]}" </dev/null >"$BLOG" 2>&1 &
BACKEND_PID=$!

# Wait (bounded) for the listening socket.
for ((i = 0; i < 100; i++)); do
  [[ -S $SOCK ]] && break
  if ! kill -0 "$BACKEND_PID" 2>/dev/null; then
    rc=0; wait "$BACKEND_PID" || rc=$?
    BACKEND_PID=""
    log "backend exited (status $rc) before creating $SOCK; its log:"
    sed 's/^/  | /' "$BLOG" >&2
    log "RESULT: FAIL"
    exit 1
  fi
  sleep 0.1
done
if [[ ! -S $SOCK ]]; then
  log "backend did not create $SOCK within 10s; its log:"
  sed 's/^/  | /' "$BLOG" >&2
  log "RESULT: FAIL"
  exit 1
fi
log "backend pid $BACKEND_PID listening on $SOCK"

# --- guest -------------------------------------------------------------------
if [[ $NULL == 1 ]]; then
  gtest=blk_null; extra="vtest_queues=$QUEUES"
else
  gtest=blk; extra="vtest_queues=$QUEUES vtest_discard=1"
fi
GT0=$SECONDS
# Background + wait so that signals to this script are handled immediately.
"$SCRIPT_DIR/run-guest.sh" --out-dir "$GUEST_DIR" --test "$gtest" --timeout "$TIMEOUT" \
  --log "$GLOG" --cmdline-extra "$extra" -- \
  -chardev "socket,id=c0,path=$SOCK" \
  -device "vhost-user-blk-pci,chardev=c0,num-queues=$QUEUES" &
GUEST_PID=$!
grc=0; wait "$GUEST_PID" || grc=$?
GUEST_PID=""
if [[ $grc -eq 0 ]]; then
  log "guest test $gtest passed ($((SECONDS - GT0))s)"
else
  fail "guest test $gtest failed"
fi
grep -aE '^(vtest|VTEST)' "$GLOG" | tr -d '\r' | sed 's/^/  guest| /' >&2 || true

# The backend must survive the guest disconnecting.
if ! kill -0 "$BACKEND_PID" 2>/dev/null; then
  fail "backend died during/after the guest run"
fi

# --- host-side checks of the backing file -----------------------------------
if [[ $NULL == 0 && ${#FAILURES[@]} -eq 0 ]]; then
  # 1. pattern region = last MiB of the disk.
  want=$( (yes "$PATTERN_STR" || true) | head -c 1048576 | md5sum | cut -d' ' -f1)
  got=$(tail -c 1048576 "$IMG" | md5sum | cut -d' ' -f1)
  if [[ $got == "$want" ]]; then
    log "host check: pattern region OK ($got)"
  else
    fail "host check: pattern region md5 $got, expected $want"
    log "first bytes of the region:"; tail -c 1048576 "$IMG" | head -c 64 | od -c | head -n 4 >&2
  fi
  # 2. the ext4 filesystem the guest left behind is clean ...
  if e2fsck -fn "$IMG" >"$TMP/e2fsck.out" 2>&1; then
    log "host check: e2fsck -fn clean ($(tail -n1 "$TMP/e2fsck.out"))"
  else
    fail "host check: e2fsck -fn reported problems"
    sed 's/^/  | /' "$TMP/e2fsck.out" >&2
  fi
  # 3. ... and holds the guest's files with the checksums it recorded.
  mkdir -p "$TMP/files/dir"
  if debugfs -R "dump /MD5SUMS $TMP/files/MD5SUMS" "$IMG" >/dev/null 2>&1 \
      && [[ -s $TMP/files/MD5SUMS ]]; then
    ok=1
    while read -r _ f; do
      debugfs -R "dump /$f $TMP/files/$f" "$IMG" >/dev/null 2>&1 || ok=0
    done <"$TMP/files/MD5SUMS"
    if [[ $ok == 1 ]] && (cd "$TMP/files" && md5sum --quiet -c MD5SUMS) >&2; then
      log "host check: $(wc -l <"$TMP/files/MD5SUMS") guest files match their md5sums"
    else
      fail "host check: files extracted with debugfs do not match the guest's MD5SUMS"
    fi
  else
    fail "host check: /MD5SUMS not found in the guest filesystem"
  fi
fi

# --- backend shutdown --------------------------------------------------------
if kill -0 "$BACKEND_PID" 2>/dev/null; then
  kill -TERM "$BACKEND_PID"
  for ((i = 0; i < 100; i++)); do
    kill -0 "$BACKEND_PID" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$BACKEND_PID" 2>/dev/null; then
    fail "backend did not exit within 10s of SIGTERM"
  else
    rc=0; wait "$BACKEND_PID" || rc=$?
    if [[ $BACKEND == vhostd && $rc -ne 0 ]]; then
      fail "backend exited with status $rc after SIGTERM (expected 0)"
    else
      log "backend exited with status $rc after SIGTERM"
    fi
    BACKEND_PID=""
  fi
fi

if [[ ${#FAILURES[@]} -gt 0 ]]; then
  if [[ -s $BLOG ]]; then
    log "backend log (last 40 lines):"
    tail -n 40 "$BLOG" | sed 's/^/  | /' >&2
  fi
  log "RESULT: FAIL (${#FAILURES[@]} problem(s), $((SECONDS - T0))s)"
  for f in "${FAILURES[@]}"; do log "  - $f"; done
  exit 1
fi
log "RESULT: PASS ($((SECONDS - T0))s)"
exit 0
