#!/usr/bin/env bash
# Builds vhostd. Usage: scripts/build.sh [release|asan|type TYPE [CXX]|all-types]
#   release   -> build/          (g++, RelWithDebInfo: vhostd, tests, bench; what the tests run)
#   asan      -> build-asan/     (clang, Debug, ASan+UBSan: unit tests and libFuzzer targets)
#   type T C [CMAKE ARGS] -> build-T-C/  (CMake build type T with compiler C, default g++; CI
#                                          builds Release without the tests: -DVHOSTD_BUILD_TESTS=OFF)
#   all-types -> every build type (Debug, Release, RelWithDebInfo, MinSizeRel) with g++ and clang++
# Warnings are errors here (VHOSTD_WERROR); a packager's plain cmake build does not force that.
set -euo pipefail
cd "$(dirname "$0")/.."
kind=${1:-release}
configure_and_build() {  # dir, compiler, then cmake arguments
  local dir=$1 cxx=$2
  shift 2
  CXX=$cxx cmake -S . -B "$dir" -G Ninja -DVHOSTD_WERROR=ON "$@" >/dev/null
  ninja -C "$dir"
}
case $kind in
  release) configure_and_build build g++ -DCMAKE_BUILD_TYPE=RelWithDebInfo ;;
  asan) configure_and_build build-asan clang++ -DCMAKE_BUILD_TYPE=Debug -DVHOSTD_SANITIZE=ON -DVHOSTD_FUZZ=ON ;;
  type)
    type=${2:?build type}
    cxx=${3:-g++}
    shift $(( $# < 3 ? $# : 3 ))
    configure_and_build "build-$type-$cxx" "$cxx" -DCMAKE_BUILD_TYPE="$type" "$@" ;;
  all-types)
    for cxx in g++ clang++; do
      for type in Debug Release RelWithDebInfo MinSizeRel; do
        echo "=== $type with $cxx"
        configure_and_build "build-$type-$cxx" "$cxx" -DCMAKE_BUILD_TYPE="$type"
      done
    done ;;
  *) echo "build.sh: unknown kind '$kind' (release|asan|type TYPE [CXX]|all-types)" >&2; exit 2 ;;
esac
