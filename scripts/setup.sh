#!/usr/bin/env bash
# Installs every Debian package that building, testing and the demo need. Idempotent: it only
# calls apt-get when something is missing. Run as root (or with sudo available).
set -euo pipefail

PACKAGES=(
  # build
  g++ cmake ninja-build pkg-config git
  liburing-dev libfmt-dev libspdlog-dev libcli11-dev libgtest-dev nlohmann-json3-dev
  # sanitizer + fuzz build
  clang libclang-rt-14-dev
  # end-to-end: QEMU guest, guest image, in-guest tools
  qemu-system-x86 qemu-system-common qemu-utils busybox-static fio e2fsprogs cpio kmod xz-utils zstd
  # benchmarks / misc tools used by the scripts
  procps iproute2 util-linux python3 hostname gnuplot-nox
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [[ ${#missing[@]} -eq 0 ]]; then
  echo "setup: all ${#PACKAGES[@]} packages present"
  exit 0
fi
SUDO=""
[[ $(id -u) -eq 0 ]] || SUDO=sudo
echo "setup: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
