#!/usr/bin/env bash
# Builds the Debian package (CPack, prefix /usr) from the main build (RelWithDebInfo, stripped in
# the package) and prints its path: build/vhostd_VERSION_ARCH.deb.
# Install it with: apt-get install ./build/vhostd_*.deb (pulls in its declared dependencies).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null
scripts/build.sh release >/dev/null
rm -f build/vhostd_*.deb
(cd build && cpack >cpack.log 2>&1) || { cat build/cpack.log >&2; exit 1; }
ls build/vhostd_*.deb
