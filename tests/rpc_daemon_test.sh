#!/usr/bin/env bash
# The management API against a real vhostd, without a VM (seconds):
#  - vhostd --rpc with no devices starts; device_add / device_list / device_remove through
#    vhostctl; flag-parser errors come back verbatim as JSON-RPC errors;
#  - stats: blkbench drives a device over its vhost-user socket; device_stats must count exactly
#    the reads and writes blkbench sent (by type), with no errors and nothing left in flight;
#  - QoS: device_set_qos changes the limits, device_list shows them, save_config keeps them;
#  - save_config -> vhostd --config FILE brings the same devices back;
#  - with --log-format json every line is a JSON object, and a line about a device names it;
#  - hostile clients (garbage, wrong types, a 100 MB line, 1000 idle connections, clients gone
#    mid-request) do not hurt the daemon, and its fd count is back where it was afterwards.
# Usage: tests/rpc_daemon_test.sh BUILD_DIR
set -euo pipefail
BUILD=$(cd "$1" && pwd)
VHOSTD=$BUILD/vhostd CTL=$BUILD/vhostctl BB=$BUILD/blkbench
TMP=$(mktemp -d /tmp/vhostd-rpc.XXXXXX)
PID=""
cleanup() { [[ -n $PID ]] && kill -9 "$PID" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
fails=0
fail() { echo "rpc_daemon_test: FAIL: $*" >&2; fails=$((fails + 1)); }
ctl() { "$CTL" --socket "$TMP/rpc/vhostd.sock" "$@"; }
jq_py() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
start() {
  "$VHOSTD" --threads 2 --log-format json --rpc "$TMP/rpc/vhostd.sock" "$@" >>"$TMP/log" 2>&1 &
  PID=$!
  for _ in $(seq 100); do [[ -S $TMP/rpc/vhostd.sock ]] && return 0; sleep 0.05; done
  cat "$TMP/log" >&2; echo "rpc_daemon_test: vhostd did not create its socket" >&2; exit 1
}
stop() { kill -TERM "$PID"; wait "$PID" || fail "vhostd exited with status $? on SIGTERM"; PID=""; }

start
[[ $(stat -c %a "$TMP/rpc/vhostd.sock") == 600 ]] || fail "socket mode $(stat -c %a "$TMP/rpc/vhostd.sock")"
[[ $(ctl --json list | jq_py 'len(d["devices"])') == 0 ]] || fail "devices at start"
truncate -s 64M "$TMP/disk.img"

# Errors: the flag parser's message, verbatim.
want=$("$VHOSTD" --blk "socket=$TMP/x.sock,path=$TMP/disk.img,bogus=1" 2>&1 || true)
got=$(ctl add blk "socket=$TMP/x.sock,path=$TMP/disk.img,bogus=1" 2>&1) && fail "a bogus key was accepted"
[[ $want == *"unknown key 'bogus'"* && $got == *"unknown key 'bogus'"* ]] || fail "errors differ: flag '$want' rpc '$got'"
ctl remove nosuch 2>/dev/null && fail "removing a missing device succeeded"

# Stats: exact request counts by type.
id=$(ctl add blk "id=d0,socket=$TMP/d0.sock,path=$TMP/disk.img,queues=2")
[[ $id == d0 ]] || fail "add printed '$id'"
[[ -S $TMP/d0.sock ]] || fail "no socket after device_add"
sent_r=0 sent_w=0
for run in 1 2; do
  out=$("$BB" --socket "$TMP/d0.sock" --queues 2 --qd 8 --rw randrw --rwmix-read 70 --seconds 1 --ramp 0 --json)
  sent_r=$((sent_r + $(jq_py 'd["sent_reads"]' <<<"$out")))
  sent_w=$((sent_w + $(jq_py 'd["sent_writes"]' <<<"$out")))
done
stats=$(ctl --json stats d0)
read -r r w f e inflight latn nq <<<"$(jq_py '" ".join(str(x) for x in [d["total"]["requests"]["read"], d["total"]["requests"]["write"], d["total"]["requests"]["flush"], d["total"]["errors"]["ioerr"] + d["total"]["errors"]["unsupp"], d["total"]["inflight"], d["total"]["latency_us"]["count"], len(d["queues"])])' <<<"$stats")"
echo "rpc_daemon_test: blkbench sent $sent_r reads, $sent_w writes; device_stats: $r reads, $w writes, $f flushes, $e errors, $inflight in flight, $latn latencies, $nq queues"
[[ $r == "$sent_r" && $w == "$sent_w" ]] || fail "stats count $r reads / $w writes, blkbench sent $sent_r / $sent_w"
[[ $f == 0 && $e == 0 && $inflight == 0 ]] || fail "flushes $f errors $e inflight $inflight"
[[ $latn == $((sent_r + sent_w)) ]] || fail "latency histogram holds $latn samples"
[[ $nq == 2 ]] || fail "stats has $nq queues"
ctl stats d0 >/dev/null || fail "the stats table failed"
ctl reactors >/dev/null || fail "reactor_stats failed"
[[ $(ctl --json reactors | jq_py 'len(d["reactors"])') == 2 ]] || fail "reactor_stats does not list 2 reactors"
[[ $(ctl --json reactors | jq_py 'sum(r["hot_queues"] + r["parks"] * 0 + r["wakes"] * 0 for r in d["reactors"])') == 0 ]] ||
  fail "reactor_stats: queues hot with no frontend connected"

# QoS at runtime, in the listing and in save_config.
ctl qos d0 iops=5000,bps=50M >/dev/null || fail "vhostctl qos failed"
[[ $(ctl --json list | jq_py 'd["devices"][0]["qos"]["iops"]') == 5000 ]] || fail "device_list does not show iops=5000"
ctl qos d0 bogus=1 2>/dev/null && fail "an unknown qos key was accepted"

# A second device, then save_config -> --config brings both back.
ctl add blk "socket=$TMP/n0.sock,backend=null,size=1G,queues=1" >/dev/null || fail "adding a null device failed"
ctl save-config >"$TMP/config.json" || fail "save-config failed"
ctl resize d0 128M >/dev/null || fail "resize failed"
[[ $(stat -c %s "$TMP/disk.img") == $((128 << 20)) ]] || fail "the file did not grow"
ctl remove blk0 || fail "removing blk0 failed"
[[ ! -e $TMP/n0.sock ]] || fail "n0.sock still there after the remove"

# Hostile clients: the daemon answers or closes, and keeps serving; no fd stays behind.
fds0=$(ls /proc/"$PID"/fd | wc -l)
python3 - "$TMP/rpc/vhostd.sock" <<'PY' || fail "hostile clients"
import socket, sys, json, time
path = sys.argv[1]
def conn():
    for _ in range(100):  # a full listen backlog says EAGAIN on a unix socket: try again
        s = socket.socket(socket.AF_UNIX); s.settimeout(10)
        try:
            s.connect(path); return s
        except BlockingIOError:
            s.close(); time.sleep(0.01)
    raise RuntimeError("cannot connect")
def ask(line):
    s = conn(); s.sendall(line); f = s.makefile("rb"); r = f.readline(); s.close(); return r
assert b'"error"' in ask(b'{not json\n'), "garbage"
assert b'-32601' in ask(b'{"jsonrpc":"2.0","id":1,"method":"no_such"}\n'), "unknown method"
assert b'"error"' in ask(b'{"jsonrpc":"2.0","id":1,"method":"device_add","params":{"kind":"blk","socket":1.5}}\n'), "wrong type"
import resource
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(soft, 4096), hard), hard))
# Clients that go away in the middle of a request (while there is room for them: the
# daemon must see the half request, then the hang-up).
for i in range(50):
    s = conn()
    try:
        s.sendall(b'{"jsonrpc":"2.0","id":1,"method":"device_list","par')
    except OSError:
        pass
    s.close()
# A 100 MB line: the daemon stops reading at its line limit and closes.
s = conn()
try:
    chunk = b"x" * (1 << 20)
    for _ in range(100): s.sendall(chunk)
except OSError:
    pass
reply = s.makefile("rb").readline()
assert b"longer than" in reply, reply
s.close()
idle = [conn() for _ in range(1000)]  # vhostd keeps 64 and closes the rest
for c in idle: c.close()
# The daemon may not have seen the 64 hang-ups yet: while it is full it closes a new
# client at once. It must take clients again shortly.
for _ in range(100):
    try:
        line = ask(b'{"jsonrpc":"2.0","id":7,"method":"version"}\n')
        if line: break
    except ConnectionError:
        pass
    time.sleep(0.05)
r = json.loads(line)
assert r["id"] == 7 and "version" in r["result"], r
PY
kill -0 "$PID" || fail "vhostd died"
for _ in $(seq 50); do [[ $(ls /proc/"$PID"/fd | wc -l) == "$fds0" ]] && break; sleep 0.1; done
fds=$(ls /proc/"$PID"/fd | wc -l)
[[ $fds == "$fds0" ]] || fail "vhostd has $fds fds after the hostile clients, $fds0 before"
stop

start --config "$TMP/config.json"
ids=$(ctl --json list | jq_py '" ".join(sorted(x["id"] + ":" + str(x["qos"]["iops"]) for x in d["devices"]))')
[[ $ids == "blk0:0 d0:5000" ]] || fail "--config brought back '$ids'"
stop

# --log-format json: every line of both runs is one JSON object; what a management call did to
# a device names the device.
python3 - "$TMP/log" <<'PY' || fail "the JSON log"
import json, sys
lines = open(sys.argv[1], encoding="utf-8").read().splitlines()
objs = [json.loads(l) for l in lines]  # raises on a line that is not JSON
assert len(objs) > 10, len(objs)
for o in objs:
    assert {"time", "level", "message"} <= o.keys(), o
resized = [o for o in objs if "resized from" in o["message"]]
assert resized and all(o.get("device") == "d0" for o in resized), resized
listening = [o for o in objs if "listening on" in o["message"]]
assert listening and all("device" in o for o in listening), listening
PY

if [[ $fails -gt 0 ]]; then
  echo "rpc_daemon_test: $fails failure(s); vhostd log:" >&2; tail -n 30 "$TMP/log" >&2; exit 1
fi
echo "rpc_daemon_test: PASS"
