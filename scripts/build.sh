#!/usr/bin/env bash
# Builds vhostd. Usage: scripts/build.sh [release|asan]
#   release -> build/       (g++, RelWithDebInfo; vhostd, unit tests)
#   asan    -> build-asan/  (clang, ASan+UBSan; unit tests and libFuzzer targets)
set -euo pipefail
cd "$(dirname "$0")/.."
kind=${1:-release}
case $kind in
  release)
    cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    ninja -C build ;;
  asan)
    CXX=clang++ cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug \
      -DVHOSTD_SANITIZE=ON -DVHOSTD_FUZZ=ON >/dev/null
    ninja -C build-asan ;;
  *) echo "build.sh: unknown kind '$kind' (release|asan)" >&2; exit 2 ;;
esac
