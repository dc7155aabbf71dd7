#!/usr/bin/env bash
# The main job, end to end on a fresh machine: install, build, then boot real Linux guests
# under QEMU on vhostd's devices, showing their consoles:
# 1. a disk (virtio-blk, 2 queues, io_uring file backend): the guest runs fio with verification,
#    discards, makes an ext4 filesystem and checks it; the host then checks that the backing file
#    holds what the guest wrote;
# 2. a NIC (virtio-net, 2 queue pairs, tap in a network namespace the demo creates): the guest
#    pings the host side and moves 80 MiB each way over TCP with md5 checks, with TSO on.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh release
tests/e2e/build-guest.sh build/guest
VTEST_VERBOSE=1 tests/e2e/test_blk.sh --build-dir build --guest-dir build/guest "$@"
VTEST_VERBOSE=1 exec tests/e2e/test_net.sh --backend vhostd --build-dir build --guest-dir build/guest
