#!/usr/bin/env bash
# Prints the path of QEMU's docs/interop/vhost-user.json (the vhost-user backend descriptor and
# capabilities schema), taken from the source package of the installed QEMU (`apt-get source`)
# and cached in .cache/ of the repository. The descriptor test validates against it.
# Needs source package entries in apt's lists: if there are none, a deb-src twin of the system's
# own deb822 entries is added (same mirrors, same suites).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=$ROOT/.cache/qemu
OUT=$CACHE/vhost-user.json
if [[ -s $OUT ]]; then echo "$OUT"; exit 0; fi
SUDO=""
[[ $(id -u) -eq 0 ]] || SUDO=sudo
if [[ -z $(apt-cache showsrc qemu 2>/dev/null | head -1) ]]; then
  src=/etc/apt/sources.list.d/debian.sources
  [[ -f $src ]] || { echo "qemu-schema: no source package entries and no $src to derive them from" >&2; exit 1; }
  sed 's/^Types: deb$/Types: deb-src/' "$src" | $SUDO tee /etc/apt/sources.list.d/vhostd-deb-src.sources >/dev/null
  $SUDO apt-get update -qq
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
chmod 0777 "$tmp"  # apt downloads as its own user
(cd "$tmp" && apt-get source --download-only qemu >/dev/null 2>&1) || { echo "qemu-schema: apt-get source qemu failed" >&2; exit 1; }
tar -xJf "$tmp"/qemu_*.orig.tar.xz -C "$tmp" --wildcards '*/docs/interop/vhost-user.json'
mkdir -p "$CACHE"
cp "$tmp"/qemu-*/docs/interop/vhost-user.json "$OUT"
echo "$OUT"
