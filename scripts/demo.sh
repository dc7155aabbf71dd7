#!/usr/bin/env bash
# The main job, end to end on a fresh machine: install, build, then boot a real Linux guest
# under QEMU whose disk is served by vhostd (2 queues, io_uring file backend). The guest runs
# fio with verification, discards, makes an ext4 filesystem and checks it; afterwards the host
# checks that the backing file holds what the guest wrote. Prints the guest's console.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh release
tests/e2e/build-guest.sh build/guest
VTEST_VERBOSE=1 exec tests/e2e/test_blk.sh --build-dir build --guest-dir build/guest "$@"
