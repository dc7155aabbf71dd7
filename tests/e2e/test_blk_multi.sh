#!/usr/bin/env bash
# End-to-end test: one vhostd process with three virtio-blk devices, all in
# one guest (guest/blk_multi.sh):
#   rw    file disk, 2 queues, serial=rw-disk            (256 MiB, sparse)
#   ro    file disk, readonly=on,block-size=4096,serial=ro-disk
#         (64 MiB, pre-filled by the host with random data)
#   null  backend=null, 1 GiB
# The guest tells them apart by serial, checks ro/block size/queues/size,
# that writes to the ro disk fail and reads return the host's data, runs fio
# verify on the rw disk and reads zeroes from the null disk. Afterwards the
# host checks that the ro image is unchanged (md5) and that the rw image holds
# the pattern the guest wrote; vhostd must exit 0 on SIGTERM.
#
# Usage:
#   tests/e2e/test_blk_multi.sh --build-dir BUILD --guest-dir DIR
#                               [--timeout SECS] [--keep]
#
#   --build-dir BUILD   CMake build dir containing the vhostd binary
#   --guest-dir DIR     guest image dir; built/refreshed with build-guest.sh
#   --timeout SECS      guest timeout (default 150)
#   --keep              keep the temp dir (images, logs) for debugging
#
# Exit status 0 = PASS, 1 = FAIL.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib-host.sh
. "$SCRIPT_DIR/lib-host.sh"
lh_parse_common_args "$@"
lh_init test_blk_multi blk-multi
lh_build_guest

RW_MIB=256 RW_Q=2
RO_MIB=64 RO_Q=1
NULL_MIB=1024 NULL_Q=2
RW_IMG="$TMP/rw.img" RO_IMG="$TMP/ro.img"
RW_SOCK="$TMP/rw.sock" RO_SOCK="$TMP/ro.sock" NULL_SOCK="$TMP/null.sock"

truncate -s "${RW_MIB}M" "$RW_IMG"
head -c "$((RO_MIB * 1048576))" /dev/urandom >"$RO_IMG"
RO_MD5=$(md5sum "$RO_IMG" | cut -d' ' -f1)
log "ro image: $RO_MIB MiB of random data, md5 $RO_MD5"

lh_start_backend "$VHOSTD" \
  --blk "socket=$RW_SOCK,path=$RW_IMG,queues=$RW_Q,serial=rw-disk" \
  --blk "socket=$RO_SOCK,path=$RO_IMG,readonly=on,block-size=4096,serial=ro-disk" \
  --blk "socket=$NULL_SOCK,backend=null,size=${NULL_MIB}M"
lh_wait_listen "$RW_SOCK" "$RO_SOCK" "$NULL_SOCK"

# How vhostd opened the ro image (informational): O_RDONLY is expected.
for f in /proc/"$BACKEND_PID"/fd/*; do
  if [[ $(readlink "$f" 2>/dev/null) == "$RO_IMG" ]]; then
    flags=$(awk '/^flags:/ {print $2}' "/proc/$BACKEND_PID/fdinfo/${f##*/}")
    case $((8#$flags & 3)) in
      0) mode=O_RDONLY ;; 1) mode=O_WRONLY ;; *) mode=O_RDWR ;;
    esac
    log "vhostd has the ro image open as fd ${f##*/} with $mode (flags 0$flags)"
  fi
done

# shellcheck disable=SC2054  # commas are part of QEMU option values
lh_run_guest blk_multi "$TMP/guest.log" "$TIMEOUT" \
  "vtest_rw_queues=$RW_Q vtest_ro_queues=$RO_Q vtest_null_queues=$NULL_Q vtest_ro_mib=$RO_MIB vtest_null_mib=$NULL_MIB vtest_ro_md5=$RO_MD5" \
  -chardev "socket,id=c0,path=$RW_SOCK" -device "vhost-user-blk-pci,chardev=c0,num-queues=$RW_Q" \
  -chardev "socket,id=c1,path=$RO_SOCK" -device "vhost-user-blk-pci,chardev=c1,num-queues=$RO_Q" \
  -chardev "socket,id=c2,path=$NULL_SOCK" -device "vhost-user-blk-pci,chardev=c2,num-queues=$NULL_Q"
lh_check_backend_alive "during/after the guest run"

# --- host-side checks --------------------------------------------------------
got=$(md5sum "$RO_IMG" | cut -d' ' -f1)
if [[ $got == "$RO_MD5" ]]; then
  log "host check: ro image unchanged ($got)"
else
  fail "host check: ro image changed: md5 $got, expected $RO_MD5"
fi
if [[ $GUEST_OK == 1 ]]; then
  lh_check_pattern "$RW_IMG"
fi

lh_stop_backend 0
lh_finish
