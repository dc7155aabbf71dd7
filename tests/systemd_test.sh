#!/usr/bin/env bash
# vhostd under a service manager, without systemd as PID 1 (seconds):
#  - the unit file (dist/systemd/vhostd.service.in, ExecStart pointed at this build) passes
#    `systemd-analyze verify` without a warning, also with the net drop-in merged in, and its
#    hardening keeps `systemd-analyze security` exposure at or below 5.0;
#  - the notify protocol on a real NOTIFY_SOCKET datagram socket that this test reads: READY=1
#    arrives only once the device and management sockets exist, with a STATUS= naming the
#    devices; WATCHDOG=1 every half WATCHDOG_USEC; STATUS= follows a device added at runtime;
#    STOPPING=1 on SIGTERM, then exit 0; a WATCHDOG_PID that is not vhostd's means no pings.
# Usage: tests/systemd_test.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
BUILD=$(cd "$1" && pwd) SRC=$(cd "$2" && pwd)
VHOSTD=$BUILD/vhostd CTL=$BUILD/vhostctl
TMP=$(mktemp -d /tmp/vhostd-systemd.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
fails=0
fail() { echo "systemd_test: FAIL: $*" >&2; fails=$((fails + 1)); }
command -v systemd-analyze >/dev/null || { echo "systemd_test: systemd-analyze missing (scripts/setup.sh installs it)" >&2; exit 1; }

# --- the unit files ------------------------------------------------------------
sed "s|@VHOSTD_BINDIR@|$BUILD|; s|@VHOSTD_SYSCONFDIR@|/etc|" "$SRC/dist/systemd/vhostd.service.in" >"$TMP/vhostd.service"
check_unit() {  # FILE: verify must be silent
  local out
  out=$(systemd-analyze verify --man=no "$1" 2>&1) || fail "systemd-analyze verify $1 failed: $out"
  out=$(grep -v "Cannot stat /tmp/systemd-temporary" <<<"$out" || true)
  [[ -z $out ]] || fail "systemd-analyze verify $1 warns: $out"
}
check_unit "$TMP/vhostd.service"
mkdir -p "$TMP/net" && cp "$TMP/vhostd.service" "$TMP/net/vhostd.service"
cat "$SRC/dist/systemd/vhostd-net.conf" >>"$TMP/net/vhostd.service"
check_unit "$TMP/net/vhostd.service"
grep -q '^CapabilityBoundingSet=.*CAP_NET_ADMIN' "$TMP/vhostd.service" && fail "the block-only unit keeps CAP_NET_ADMIN"
# The check itself must be able to fail: a misspelt key is a warning.
sed 's/^ProtectClock=/ProtectClok=/' "$TMP/vhostd.service" >"$TMP/bad.service"
fails_before=$fails
check_unit "$TMP/bad.service" 2>/dev/null
[[ $fails == $((fails_before + 1)) ]] || { echo "systemd_test: FAIL: a misspelt key went unnoticed" >&2; exit 1; }
fails=$fails_before
out=$(systemd-analyze security --offline=yes --threshold=50 "$TMP/vhostd.service" 2>&1) ||
  fail "exposure above 5.0: $(tail -n 1 <<<"$out")"
echo "systemd_test: $(grep -o 'Overall exposure level.*' <<<"$out")"

# --- the notify protocol ----------------------------------------------------------
python3 - "$VHOSTD" "$CTL" "$TMP" <<'PY' || fail "notify protocol"
import os, socket, subprocess, sys, time, signal
vhostd, ctl, tmp = sys.argv[1:4]
path = os.path.join(tmp, "notify")
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
s.settimeout(10)

def run(extra_env):
    env = dict(os.environ, NOTIFY_SOCKET=path, **extra_env)
    return subprocess.Popen([vhostd, "--threads", "2", "--rpc", os.path.join(tmp, "rpc.sock"),
                             "--blk", f"id=d0,socket={tmp}/d0.sock,backend=null,size=64M"],
                            env=env, stdout=open(os.path.join(tmp, "log"), "a"), stderr=subprocess.STDOUT)

def recv(deadline):
    s.settimeout(max(0.01, deadline - time.time()))
    try:
        return s.recv(4096).decode()
    except socket.timeout:
        return None

# 1. Readiness, watchdog, status, stopping.
p = run({"WATCHDOG_USEC": "400000"})
t0 = time.time()
msgs = []
ready_at = None
while time.time() < t0 + 10:
    m = recv(t0 + 10)
    if m is None: break
    msgs.append((time.time(), m))
    if "READY=1" in m:
        ready_at = time.time()
        assert os.path.exists(f"{tmp}/d0.sock"), "READY=1 before the device socket exists"
        assert os.path.exists(f"{tmp}/rpc.sock"), "READY=1 before the management socket exists"
        assert "STATUS=1 device(s) (1 blk, 0 net)" in m, m
        break
assert ready_at, f"no READY=1: {msgs}"
assert not any("WATCHDOG=1" in m for _, m in msgs[:-1]), f"watchdog before ready: {msgs}"
pings = 0
end = time.time() + 1.5
while time.time() < end:
    m = recv(end)
    if m and "WATCHDOG=1" in m: pings += 1
print(f"notify: READY=1 {ready_at - t0:.2f} s after start, {pings} watchdog pings in 1.5 s (interval 0.4 s)")
assert 4 <= pings <= 12, pings
subprocess.run([ctl, "--socket", f"{tmp}/rpc.sock", "add", "blk", f"id=d1,socket={tmp}/d1.sock,backend=null,size=1M"],
               check=True, stdout=subprocess.DEVNULL)
end = time.time() + 3
status = None
while time.time() < end and status is None:
    m = recv(end)
    if m and "STATUS=2 device(s)" in m: status = m
assert status, "STATUS= did not follow the added device"
p.send_signal(signal.SIGTERM)
end = time.time() + 10
stopping = False
while time.time() < end and not stopping:
    m = recv(end)
    if m and "STOPPING=1" in m: stopping = True
assert stopping, "no STOPPING=1 on SIGTERM"
assert p.wait(20) == 0, "vhostd did not exit 0"

# 2. WATCHDOG_PID names another process: the watchdog is not ours.
p = run({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"})
end = time.time() + 10
got_ready = False
while time.time() < end and not got_ready:
    m = recv(end)
    got_ready = m is not None and "READY=1" in m
assert got_ready, "no READY=1 (second run)"
end = time.time() + 1
while time.time() < end:
    m = recv(end)
    assert m is None or "WATCHDOG=1" not in m, "pinged a watchdog that WATCHDOG_PID gives to another process"
p.send_signal(signal.SIGTERM)
assert p.wait(20) == 0
PY

if [[ $fails -gt 0 ]]; then
  echo "systemd_test: $fails failure(s); vhostd log:" >&2; tail -n 20 "$TMP/log" >&2 2>/dev/null; exit 1
fi
echo "systemd_test: PASS"
