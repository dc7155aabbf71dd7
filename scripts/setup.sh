#!/usr/bin/env bash
# Installs every Debian package that building, testing and the demo need. Idempotent: it only
# calls apt-get when something is missing. Run as root (or with sudo available).
set -euo pipefail

PACKAGES=(
  # build
  g++ cmake ninja-build pkg-config git
  liburing-dev libfmt-dev libspdlog-dev libcli11-dev libgtest-dev nlohmann-json3-dev prometheus-cpp-dev
  libsystemd-dev libnbd-dev librbd-dev libseccomp-dev libcap-ng-dev
  # sanitizer + fuzz build
  clang libclang-rt-14-dev
  # end-to-end: QEMU guest, guest image, in-guest tools
  qemu-system-x86 qemu-system-common qemu-utils busybox-static fio e2fsprogs cpio kmod xz-utils zstd
  # remote block storage: NBD servers and a one-node Ceph cluster for the nbd and rbd backends' tests
  nbdkit ceph-mon ceph-osd ceph-common qemu-block-extra  # qemu-block-extra: qemu-storage-daemon's rbd driver (bench)
  # benchmarks / misc tools used by the scripts
  procps iproute2 util-linux python3 python3-jsonschema groff-base hostname gnuplot-nox curl
  systemd  # systemd-analyze verify checks the unit files
)

SUDO=""
[[ $(id -u) -eq 0 ]] || SUDO=sudo
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
updated=0
if [[ ${#missing[@]} -eq 0 ]]; then
  echo "setup: all ${#PACKAGES[@]} packages present"
else
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  updated=1
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# promtool (the metrics test validates the exposition format with it) comes from the package
# `prometheus`, whose install would also start a Prometheus server: take only the tool out of
# the package.
if ! command -v promtool >/dev/null; then
  echo "setup: promtool from package prometheus (the tool only, no server)"
  [[ $updated == 1 ]] || $SUDO apt-get update -qq
  tmp=$(mktemp -d)
  chmod 0777 "$tmp"  # apt downloads as its own user
  (cd "$tmp" && apt-get download prometheus >/dev/null)
  dpkg-deb --fsys-tarfile "$tmp"/prometheus_*.deb | tar -x -C "$tmp" ./usr/bin/promtool
  $SUDO install -m 0755 "$tmp/usr/bin/promtool" /usr/local/bin/promtool
  rm -rf "$tmp"
fi

# QEMU's vhost-user backend schema (the descriptor test validates against it), from the QEMU
# source package.
"$(dirname "$0")/qemu-schema.sh" >/dev/null
