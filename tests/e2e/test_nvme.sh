#!/usr/bin/env bash
# End-to-end test of NVMe passthrough (backend=nvme). This host has no NVMe, so the test runs
# inside a TCG guest with a QEMU-emulated NVMe controller and namespaces (512 B and 4 KiB LBAs,
# and a zoned one: 4 KiB LBAs, 1 MiB zones with 768 KiB writable, 4 open / 6 active at most;
# sparse files here):
# the e2e image plus an overlay archive with vhostd, vhostctl, blkbench and unit_tests and their shared
# libraries (under /opt/vhostd; the kernel unpacks concatenated archives in order). The guest
# side is guest/nvme.sh: the passthrough unit tests on the real namespace, then vhostd serving
# it to blkbench with --verify (also with guest memory as fixed buffers), then the block path
# for comparison, then the zoned namespace
# served as a zoned virtio-blk device to the unit tests' driver (ZonedNvme.*), then a pool on the
# two conventional namespaces (members driven with NVMe commands) with volumes, a snapshot, a
# clone, kill -9 and import.
#
# Usage:
#   tests/e2e/test_nvme.sh --build-dir BUILD --guest-dir DIR [--timeout SECS] [--keep]
#
# Exit status 0 = PASS, 1 = FAIL.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib-host.sh
. "$SCRIPT_DIR/lib-host.sh"
TIMEOUT=${TIMEOUT:-240}
lh_parse_common_args "$@"
lh_init test_nvme nvme
lh_build_guest

# The overlay: binaries stripped (the unit tests carry debug info), libraries at the paths ldd
# gives, so the guest's loader finds them.
OV="$TMP/overlay"
mkdir -p "$OV/opt/vhostd"
for b in vhostd vhostctl blkbench tests/unit_tests; do
  [[ -x $BUILD_DIR/$b ]] || lh_abort "$BUILD_DIR/$b is missing (build it first)"
  strip -o "$OV/opt/vhostd/$(basename "$b")" "$BUILD_DIR/$b"
  while read -r lib; do
    [[ -n $lib && -e $lib && ! -e $OV$lib ]] || continue
    mkdir -p "$OV$(dirname "$lib")"
    cp -L "$lib" "$OV$lib"
  done < <(ldd "$BUILD_DIR/$b" | awk '/=>/ && $3 ~ /^\// {print $3}')
done
(cd "$OV" && find . | cpio -o -H newc --quiet) >"$TMP/overlay.cpio"
cat "$GUEST_DIR/initramfs.cpio" "$TMP/overlay.cpio" >"$TMP/initrd"
log "overlay: $(du -h "$TMP/overlay.cpio" | cut -f1)"

truncate -s 256M "$TMP/nvme0.img"
truncate -s 128M "$TMP/nvme1.img"
truncate -s 16M "$TMP/nvme2.img"
# shellcheck disable=SC2054  # commas are part of QEMU option values
export VTEST_INITRD="$TMP/initrd" VTEST_RAM=1G
# NVME_AB_ROUNDS=N: N alternating rounds of the fixed-buffer A/B (randread 4k, fixed=off / on;
# default none) for bench/results.
lh_run_guest nvme "$TMP/guest.log" "$TIMEOUT" "${NVME_AB_ROUNDS:+ab_rounds=$NVME_AB_ROUNDS}" \
  -drive "file=$TMP/nvme0.img,if=none,id=nvm0,format=raw,cache=none,aio=io_uring" \
  -drive "file=$TMP/nvme1.img,if=none,id=nvm1,format=raw,cache=none,aio=io_uring" \
  -device "nvme,serial=vhostd0,id=nvme0" -device "nvme-ns,drive=nvm0,bus=nvme0,nsid=1" \
  -device "nvme-ns,drive=nvm1,bus=nvme0,nsid=2,logical_block_size=4096,physical_block_size=4096" \
  -drive "file=$TMP/nvme2.img,if=none,id=nvm2,format=raw,cache=none,aio=io_uring" \
  -device "nvme-ns,drive=nvm2,bus=nvme0,nsid=3,logical_block_size=4096,physical_block_size=4096,zoned=true,zoned.zone_size=1M,zoned.zone_capacity=768K,zoned.max_open=4,zoned.max_active=6"
lh_finish
