#!/usr/bin/env bash
# `cmake --install` into a staging root (DESTDIR) with prefix /usr: every file lands where a
# Debian system expects it; the installed vhostd runs; the unit's ExecStart and the descriptor's
# binary name the installed path (vhostd-net, the net descriptor's binary, links to vhostd); the staged unit passes systemd-analyze verify; the descriptor
# and its binary's --print-capabilities validate (python3-jsonschema) against QEMU's
# docs/interop/vhost-user.json from the QEMU source package (tests/descriptor_test.py).
# Usage: tests/install_test.sh BUILD_DIR
set -euo pipefail
BUILD=$(cd "$1" && pwd)
SRC=$(cd "$(dirname "$0")/.." && pwd)
TMP=$(mktemp -d /tmp/vhostd-install.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
fails=0
fail() { echo "install_test: FAIL: $*" >&2; fails=$((fails + 1)); }

# The build's own install, with prefix /usr as a distribution's: the files that name installed
# paths are made for the prefix of the install, not the one of the configure.
DESTDIR="$TMP/root" cmake --install "$BUILD" --prefix /usr >"$TMP/install.log" 2>&1 || { cat "$TMP/install.log" >&2; exit 1; }
R=$TMP/root
for f in usr/bin/vhostd usr/bin/vhostctl lib/systemd/system/vhostd.service usr/share/vhostd/systemd/vhostd-net.conf \
         etc/vhostd/vhostd.conf usr/share/qemu/vhost-user/50-vhostd-blk.json usr/share/qemu/vhost-user/50-vhostd-net.json \
         usr/libexec/vhostd/vhostd-net usr/share/man/man8/vhostd.8 usr/share/man/man8/vhostctl.8; do
  [[ -e $R/$f || -e $R/usr/$f ]] || fail "$f not installed"
done
unit=$(ls "$R"/lib/systemd/system/vhostd.service "$R"/usr/lib/systemd/system/vhostd.service 2>/dev/null | head -1 || true)
[[ -n $unit ]] || { echo "install_test: FAIL: no unit installed" >&2; exit 1; }
grep -q '^ExecStart=/usr/bin/vhostd ' "$unit" || fail "ExecStart: $(grep ExecStart "$unit")"
grep -q '^EnvironmentFile=-/etc/vhostd/vhostd.conf$' "$unit" || fail "EnvironmentFile: $(grep EnvironmentFile "$unit")"
# Another prefix: the unit and descriptors follow it (GNU rule: configuration in PREFIX/etc).
DESTDIR="$TMP/local" cmake --install "$BUILD" --prefix /opt/vhostd >/dev/null 2>&1 || fail "install with prefix /opt/vhostd"
grep -q '^ExecStart=/opt/vhostd/bin/vhostd ' "$TMP/local/opt/vhostd/lib/systemd/system/vhostd.service" &&
  grep -q '^EnvironmentFile=-/opt/vhostd/etc/vhostd/vhostd.conf$' "$TMP/local/opt/vhostd/lib/systemd/system/vhostd.service" &&
  [[ -f $TMP/local/opt/vhostd/etc/vhostd/vhostd.conf ]] &&
  grep -q '"binary": "/opt/vhostd/libexec/vhostd/vhostd-net"' "$TMP/local/opt/vhostd/share/qemu/vhost-user/50-vhostd-net.json" ||
  fail "an install with prefix /opt/vhostd names other paths"
"$R/usr/bin/vhostd" --version | grep -q '^vhostd ' || fail "the installed vhostd does not run"
python3 - "$R" <<'PY' || fail "descriptor"
import json, os, subprocess, sys
root = sys.argv[1]
d = json.load(open(os.path.join(root, "usr/share/qemu/vhost-user/50-vhostd-blk.json")))
assert set(d) == {"description", "type", "binary"}, d
assert d["type"] == "block" and d["binary"] == "/usr/bin/vhostd", d
caps = json.loads(subprocess.check_output([root + d["binary"], "--print-capabilities"]))
assert caps["type"] == d["type"], caps
n = json.load(open(os.path.join(root, "usr/share/qemu/vhost-user/50-vhostd-net.json")))
assert n["type"] == "net" and n["binary"] == "/usr/libexec/vhostd/vhostd-net", n
link = root + n["binary"]
assert os.path.islink(link) and os.path.realpath(link) == os.path.realpath(root + "/usr/bin/vhostd"), \
    (link, os.readlink(link))
caps = json.loads(subprocess.check_output([link, "--print-capabilities"]))
assert caps == {"type": "net"}, caps
PY
# The descriptor and its binary's capabilities against QEMU's own schema (scripts/setup.sh
# fetches it from the QEMU source package).
schema=$("$SRC/scripts/qemu-schema.sh") || fail "no QEMU vhost-user.json schema"
[[ -z ${schema:-} ]] || python3 "$SRC/tests/descriptor_test.py" "$schema" "$R"/usr/share/qemu/vhost-user/50-vhostd-{blk,net}.json \
  --root "$R" || fail "the descriptor does not validate against QEMU's schema"
# The man pages: they render without markup warnings, and they tell the whole truth about the
# command lines (every long option of vhostd --help, every vhostctl subcommand).
for page in vhostd vhostctl; do
  out=$(groff -man -Tutf8 -ww -z "$R/usr/share/man/man8/$page.8" 2>&1 | grep -v "adjust line\|break line" || true)
  [[ -z $out ]] || fail "$page.8: $out"
done
man8=$(sed 's/\\-/-/g' "$R/usr/share/man/man8/vhostd.8")
for opt in $("$R/usr/bin/vhostd" --help | grep -oE -- '--[a-z][a-z-]+' | sort -u); do
  grep -qE -- "$opt([^a-z-]|$)" <<<"$man8" || fail "vhostd.8 does not document $opt"
done
man8=$(sed -n '/^\.SH SUBCOMMANDS/,/^\.SH EXIT/p' "$R/usr/share/man/man8/vhostctl.8" | sed 's/\\-/-/g; s/\\f[BIR]//g')
for sub in $("$R/usr/bin/vhostctl" --help | sed -n '/^Subcommands:/,$p' | awk 'NR > 1 && NF {print $1}'); do
  grep -qE -- "^(\.BI? )?$sub( |$)" <<<"$man8" || fail "vhostctl.8 does not document the subcommand $sub"
done
if command -v systemd-analyze >/dev/null; then
  sed "s|^ExecStart=/usr/bin/vhostd|ExecStart=$R/usr/bin/vhostd|" "$unit" >"$TMP/vhostd.service"
  out=$(systemd-analyze verify --man=no "$TMP/vhostd.service" 2>&1 | grep -v "Cannot stat /tmp/systemd-temporary" || true)
  [[ -z $out ]] || fail "systemd-analyze verify on the installed unit: $out"
fi
[[ $fails == 0 ]] || exit 1
echo "install_test: PASS ($(cd "$R" && find . -type f | wc -l) files)"
