#!/usr/bin/env bash
# The .deb on this machine, as an operator uses it (root; changes the system, then undoes it):
#  1. scripts/package.sh builds it; apt-get installs it with its declared dependencies;
#  2. every shared library the binaries link (ELF NEEDED) belongs to a package the .deb declares
#     (so it installs and runs on a fresh Debian 12 with only those);
#  3. the installed files: binaries, unit (systemd-analyze verify), options file as a conffile,
#     descriptors naming installed binaries, man pages readable by man;
#  4. a guest: tests/e2e/test_blk_fd.sh launches the binary that the installed blk descriptor
#     names, the way a management layer does (socket handed over with --fd), and the guest's
#     disk test passes; the installed vhostd also serves blkbench and its metrics;
#  5. apt-get purge removes every file.
# Usage: tests/package_test.sh [--guest-dir DIR]   (default build/guest; no guest without it)
set -euo pipefail
cd "$(dirname "$0")/.."
GUEST_DIR=build/guest
[[ ${1:-} == --guest-dir ]] && GUEST_DIR=$2
fails=0
fail() { echo "package_test: FAIL: $*" >&2; fails=$((fails + 1)); }
TMP=$(mktemp -d /tmp/vhostd-pkg.XXXXXX)
PID="" INSTALLED=0
cleanup() {
  [[ -n $PID ]] && kill -9 "$PID" 2>/dev/null
  wait 2>/dev/null || true
  # A failed run leaves the system as it found it too.
  [[ $INSTALLED == 1 ]] && DEBIAN_FRONTEND=noninteractive apt-get purge -y -q vhostd >/dev/null 2>&1
  rm -rf "$TMP"
}
trap cleanup EXIT

deb=$(scripts/package.sh)
echo "package_test: $deb"
depends=$(dpkg-deb -f "$deb" Depends)
echo "package_test: Depends: $depends"
DEBIAN_FRONTEND=noninteractive apt-get install -y -q "./$deb" >"$TMP/apt.log" 2>&1 ||
  { cat "$TMP/apt.log" >&2; echo "package_test: apt-get install failed" >&2; exit 1; }
INSTALLED=1
grep -q '^Status: install ok installed' <<<"$(dpkg -s vhostd)" || fail "dpkg does not list vhostd as installed"

for bin in /usr/bin/vhostd /usr/bin/vhostctl; do
  for lib in $(readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
    path=$(ldconfig -p | awk -v l="$lib" '$1 == l && !p {print $NF; p = 1}')
    [[ -n $path ]] || { fail "$bin needs $lib, which is not installed"; continue; }
    owner=""
    real=$(readlink -f "$path")
    for cand in "$path" "$real" "${real#/usr}" "/usr$path"; do  # dpkg knows one side of /usr-merge
      owner=$(dpkg -S "$cand" 2>/dev/null | sed -n '1s/:.*//p') && [[ -n $owner ]] && break
    done
    [[ -n $owner ]] || { fail "no package owns $path ($lib)"; continue; }
    # Declared by name, or by a name the owner provides (libspdlog1.10 provides libspdlog1.10-fmt9).
    provides=$(dpkg-query -W -f='${Provides}' "$owner" 2>/dev/null || true)
    python3 - "$depends" "$owner" "$provides" <<'PY' || fail "$bin needs $lib from $owner, which the package does not declare"
import re, sys
names = lambda text: {re.split(r"[\s(:]", alt.strip())[0] for dep in text.split(",") for alt in dep.split("|") if alt.strip()}
sys.exit(0 if ({sys.argv[2]} | names(sys.argv[3])) & names(sys.argv[1]) else 1)
PY
  done
done

grep -q '^vhostd ' <<<"$(/usr/bin/vhostd --version)" || fail "the installed vhostd does not run"
grep -q '/etc/vhostd/vhostd.conf' <<<"$(dpkg-query -W -f='${Conffiles}\n' vhostd)" || fail "vhostd.conf is not a conffile"
[[ -f /lib/systemd/system/vhostd.service ]] || fail "no unit at /lib/systemd/system/vhostd.service"
out=$(systemd-analyze verify --man=no vhostd.service 2>&1 | grep -v "Cannot stat /tmp/systemd-temporary" || true)
[[ -z $out ]] || fail "systemd-analyze verify vhostd.service: $out"
for d in /usr/share/qemu/vhost-user/50-vhostd-blk.json /usr/share/qemu/vhost-user/50-vhostd-net.json; do
  b=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["binary"])' "$d")
  t=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["type"])' "$d")
  got=$("$b" --print-capabilities | python3 -c 'import json,sys; print(json.load(sys.stdin)["type"])') || got=""
  [[ $got == "$t" ]] || fail "$d: $b says type '$got', the descriptor '$t'"
done
# (grep reads a here-string: an early exit of grep -q in a pipe would fail the writer with SIGPIPE)
page=$(MANPAGER=cat man vhostd 2>/dev/null || true)
grep -q 'vhost-user' <<<"$page" || fail "man vhostd shows nothing"
page=$(MANPAGER=cat man vhostctl 2>/dev/null || true)
grep -q 'SUBCOMMANDS' <<<"$page" || fail "man vhostctl shows nothing"

# The installed daemon serves a device; blkbench's requests show in its metrics.
/usr/bin/vhostd --metrics 127.0.0.1:0 --blk "id=p0,socket=$TMP/p0.sock,backend=null,size=64M" >"$TMP/log" 2>&1 &
PID=$!
url=""
for _ in $(seq 100); do
  url=$(grep -o 'metrics on http://[^ ]*/metrics' "$TMP/log" | sed 's/^metrics on //') && [[ -n $url ]] && break
  sleep 0.05
done
if [[ -z $url ]]; then
  fail "the installed vhostd did not start: $(cat "$TMP/log")"
else
  sent=$(build/blkbench --socket "$TMP/p0.sock" --queues 1 --qd 4 --rw randread --seconds 0.5 --ramp 0 --json |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["sent_reads"])')
  got=$(curl -sf "$url" | awk '/^vhostd_blk_requests_total\{.*device="p0".*type="read"/ {s += $2} END {print s + 0}')
  [[ $sent -gt 0 && $got == "$sent" ]] || fail "blkbench sent $sent reads, the installed vhostd's metrics count $got"
  kill -TERM "$PID"; wait "$PID" || fail "the installed vhostd exited with $? on SIGTERM"
  PID=""
fi

if [[ -d $GUEST_DIR ]]; then
  tests/e2e/test_blk_fd.sh --build-dir build --guest-dir "$GUEST_DIR" \
    --descriptor /usr/share/qemu/vhost-user/50-vhostd-blk.json || fail "a guest on the installed vhostd"
fi

DEBIAN_FRONTEND=noninteractive apt-get purge -y -q vhostd >"$TMP/purge.log" 2>&1 || fail "apt-get purge: $(cat "$TMP/purge.log")"
INSTALLED=0
for f in /usr/bin/vhostd /usr/bin/vhostctl /usr/libexec/vhostd/vhostd-net /lib/systemd/system/vhostd.service \
         /etc/vhostd/vhostd.conf /usr/share/qemu/vhost-user/50-vhostd-blk.json; do
  [[ ! -e $f ]] || fail "$f is still there after the purge"
done
[[ $fails == 0 ]] || { echo "package_test: $fails failure(s)" >&2; exit 1; }
echo "package_test: PASS"
