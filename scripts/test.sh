#!/usr/bin/env bash
# The full test suite, exactly as CI runs it:
#   1. install packages, build (g++), check the layering, run the unit + protocol tests;
#   2. build with clang ASan+UBSan and run the unit + protocol tests and the fuzz smoke runs;
#   3. build the Release type too (g++ -O3 warns where -O2 does not; warnings are errors): the
#      daemon, tools and benchmarks; the tests are compiled by steps 1 and 2 (g++ -O2, clang),
#      and leaving them out here saves about 1.5 of CI's 30 minutes;
#   4. a seconds-long benchmark smoke run (bench/run.sh --quick);
#   5. the end-to-end tests: real QEMU guests driving vhostd's devices;
#   6. the Debian package: built, installed (apt-get), a guest on the installed binary, purged.
# Options: --quick skips the sanitizer and Release builds.
set -euo pipefail
cd "$(dirname "$0")/.."
quick=0
[[ ${1:-} == --quick ]] && quick=1

# Each phase's wall time, so a slow CI run says where the time went (the budget is 30 minutes).
phase_name="" phase_start=$SECONDS
phase() {
  [[ -n $phase_name ]] && printf '=== time: %s took %d s (total %d s)\n' "$phase_name" $((SECONDS - phase_start)) "$SECONDS"
  phase_name=$1 phase_start=$SECONDS
  [[ -n $1 ]] && echo "=== $1"
  return 0
}
trap 'phase ""' EXIT

phase "setup: packages"
scripts/setup.sh
phase "build (g++ RelWithDebInfo)"
scripts/build.sh release
export VHOSTD_FUZZ_SECONDS=${VHOSTD_FUZZ_SECONDS:-8}

phase "layering: includes run one way, the daemon carries no test tooling"
scripts/check-layering.sh build/vhostd

phase "unit and protocol tests"
ctest --test-dir build -L unit --output-on-failure -j2
phase "the rbd backend on a one-node Ceph cluster (started and removed by tests/ceph/with_cluster.sh)"
ctest --test-dir build -L ceph --output-on-failure

if [[ $quick == 0 ]]; then
  phase "ASan+UBSan build: unit/protocol tests and fuzz smoke runs"
  scripts/build.sh asan
  phase "ASan+UBSan: the tests"
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir build-asan -L 'unit|fuzz' --output-on-failure -j2
  phase "Release build (g++)"
  scripts/build.sh type Release g++ -DVHOSTD_BUILD_TESTS=OFF
fi

phase "benchmark smoke run (seconds; no speed assertions)"
bench/run.sh --quick >/dev/null

phase "end to end: QEMU guests on vhostd"
tests/e2e/build-guest.sh build/guest
phase "end to end: the tests"
ctest --test-dir build -L e2e --output-on-failure

phase "the .deb: build, install with its declared dependencies, a guest on the installed vhostd, purge"
tests/package_test.sh --guest-dir build/guest
