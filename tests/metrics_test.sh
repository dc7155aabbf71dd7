#!/usr/bin/env bash
# Prometheus metrics against a real vhostd, without a VM (seconds):
#  - vhostd --metrics 127.0.0.1:0 serves /metrics over HTTP (curl), on the port it logs;
#  - scraped while blkbench drives a device and afterwards: `promtool check metrics` accepts
#    every scrape; the request counters add up to exactly what blkbench sent, by type; the
#    latency histogram's count is the number of requests, its buckets rise to +Inf;
#  - the frontend shows as connected during the run and not after; a removed device's series
#    go; per-reactor and process series are there (open fds as /proc says);
#  - bad --metrics values are refused at start (exit 2), a port in use too (exit 1).
# Usage: tests/metrics_test.sh BUILD_DIR
set -euo pipefail
BUILD=$(cd "$1" && pwd)
VHOSTD=$BUILD/vhostd CTL=$BUILD/vhostctl BB=$BUILD/blkbench
TMP=$(mktemp -d /tmp/vhostd-metrics.XXXXXX)
PID=""
cleanup() { [[ -n $PID ]] && kill -9 "$PID" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
fails=0
fail() { echo "metrics_test: FAIL: $*" >&2; fails=$((fails + 1)); }
command -v promtool >/dev/null || { echo "metrics_test: promtool missing (scripts/setup.sh installs it)" >&2; exit 1; }
command -v curl >/dev/null || { echo "metrics_test: curl missing (scripts/setup.sh installs it)" >&2; exit 1; }

# metric NAME [LABEL=VALUE ...] [FILE]: the sum of the samples of NAME whose labels match.
metric() {
  python3 - "$@" <<'PY'
import re, sys
name, args = sys.argv[1], sys.argv[2:]
want = dict(a.split("=", 1) for a in args if "=" in a)
path = [a for a in args if "=" not in a]
text = open(path[0]).read() if path else sys.stdin.read()
total, seen = 0.0, False
for line in text.splitlines():
    if line.startswith("#") or not line.strip():
        continue
    m = re.match(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)', line)
    if not m or m.group(1) != name:
        continue
    labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
    if all(labels.get(k) == v for k, v in want.items()):
        total += float(m.group(4)); seen = True
print("none" if not seen else int(total) if total == int(total) else total)
PY
}

rc=0; "$VHOSTD" --metrics nonsense --blk "socket=$TMP/x.sock,backend=null,size=1M" >"$TMP/bad" 2>&1 || rc=$?
[[ $rc == 2 ]] || fail "--metrics nonsense: exit $rc"
grep -q "not a numeric IPv4 address\|not a port" "$TMP/bad" || fail "--metrics nonsense: $(cat "$TMP/bad")"
rc=0; "$VHOSTD" --metrics 127.0.0.1:70000 --blk "socket=$TMP/x.sock,backend=null,size=1M" >"$TMP/bad" 2>&1 || rc=$?
[[ $rc == 2 ]] || fail "--metrics 127.0.0.1:70000: exit $rc"

"$VHOSTD" --threads 2 --rpc "$TMP/rpc.sock" --metrics 127.0.0.1:0 \
  --blk "id=d0,socket=$TMP/d0.sock,backend=null,size=256M,queues=2" \
  --blk "id=d1,socket=$TMP/d1.sock,backend=null,size=64M" >"$TMP/log" 2>&1 &
PID=$!
url=""
for _ in $(seq 100); do
  url=$(grep -o 'metrics on http://[^ ]*/metrics' "$TMP/log" | sed 's/^metrics on //') && [[ -n $url ]] && break
  sleep 0.05
done
[[ -n $url ]] || { cat "$TMP/log" >&2; echo "metrics_test: vhostd did not say where metrics are" >&2; exit 1; }
echo "metrics_test: scraping $url"
port=${url#http://127.0.0.1:}; port=${port%/metrics}

# A second vhostd on the same port must fail to start, with the reason.
rc=0; "$VHOSTD" --metrics "127.0.0.1:$port" --blk "socket=$TMP/y.sock,backend=null,size=1M" >"$TMP/busy" 2>&1 || rc=$?
[[ $rc == 1 ]] && grep -q "cannot listen" "$TMP/busy" || fail "a busy port: exit $rc, $(cat "$TMP/busy")"
[[ ! -e $TMP/y.sock ]] || fail "the failed vhostd left its socket"

scrape() { curl -sf --max-time 10 "$url" >"$1" || fail "scrape $1 failed"; promtool check metrics <"$1" >"$1.lint" 2>&1 || fail "promtool check metrics on $1: $(cat "$1.lint")"; }
scrape "$TMP/s0"
[[ $(metric vhostd_devices "$TMP/s0") == 2 ]] || fail "vhostd_devices $(metric vhostd_devices "$TMP/s0")"
[[ $(metric vhostd_blk_requests_total device=d0 "$TMP/s0") == 0 ]] || fail "requests before any I/O"
[[ $(metric vhostd_device_frontend_connected device=d0 "$TMP/s0") == 0 ]] || fail "connected before any frontend"

# Scrapes while blkbench runs.
"$BB" --socket "$TMP/d0.sock" --queues 2 --qd 8 --rw randrw --rwmix-read 70 --seconds 2 --ramp 0 --json >"$TMP/bb" &
bb=$!
sleep 1
scrape "$TMP/s1"
[[ $(metric vhostd_device_frontend_connected device=d0 "$TMP/s1") == 1 ]] || fail "frontend not connected during the run"
mid=$(metric vhostd_blk_requests_total device=d0 "$TMP/s1")
[[ $mid != none && $mid -gt 0 ]] || fail "no requests counted during the run ($mid)"
for i in 1 2 3 4 5; do curl -sf --max-time 10 "$url" >/dev/null || fail "scrape $i during the run"; done
wait $bb || fail "blkbench failed"
read -r sent_r sent_w <<<"$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["sent_reads"], d["sent_writes"])' "$TMP/bb")"

scrape "$TMP/s2"
r=$(metric vhostd_blk_requests_total device=d0 type=read "$TMP/s2")
w=$(metric vhostd_blk_requests_total device=d0 type=write "$TMP/s2")
echo "metrics_test: blkbench sent $sent_r reads, $sent_w writes; metrics: $r reads, $w writes (during the run: $mid)"
[[ $r == "$sent_r" && $w == "$sent_w" ]] || fail "metrics count $r reads / $w writes, blkbench sent $sent_r / $sent_w"
[[ $(metric vhostd_blk_bytes_total device=d0 direction=read "$TMP/s2") == $((sent_r * 4096)) ]] || fail "read bytes"
[[ $(metric vhostd_blk_errors_total device=d0 "$TMP/s2") == 0 ]] || fail "errors counted"
[[ $(metric vhostd_blk_inflight_requests device=d0 "$TMP/s2") == 0 ]] || fail "requests left in flight"
[[ $(metric vhostd_blk_request_duration_seconds_count device=d0 "$TMP/s2") == $((sent_r + sent_w)) ]] ||
  fail "histogram count $(metric vhostd_blk_request_duration_seconds_count device=d0 "$TMP/s2")"
[[ $(metric vhostd_blk_request_duration_seconds_bucket device=d0 le=+Inf "$TMP/s2") == $((sent_r + sent_w)) ]] ||
  fail "the +Inf bucket is not the count"
python3 - "$TMP/s2" <<'PY' || fail "histogram buckets"
import re, sys
b = {}
for line in open(sys.argv[1]):
    m = re.match(r'vhostd_blk_request_duration_seconds_bucket\{(.*)\} (\S+)', line)
    if m:
        lab = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        b.setdefault((lab["device"], lab["queue"]), []).append((float(lab["le"]), float(m.group(2))))
assert b, "no buckets"
for k, v in b.items():
    counts = [c for _, c in sorted(v)]
    assert counts == sorted(counts), (k, counts)
    assert len(v) == 23, (k, len(v))
PY
[[ $(metric vhostd_queue_kicks_total device=d0 "$TMP/s2") -gt 0 ]] || fail "no kicks counted"
[[ $(metric vhostd_device_frontend_connected device=d0 "$TMP/s2") == 0 ]] || fail "still connected after the run"
[[ $(metric vhostd_blk_size_bytes device=d0 "$TMP/s2") == $((256 << 20)) ]] || fail "size"
[[ $(metric vhostd_reactor_passes_total reactor=1 "$TMP/s2") != none ]] || fail "no reactor 1 series"
[[ $(metric vhostd_reactor_hot_queues reactor=1 "$TMP/s2") != none ]] || fail "no hot-queue gauge"
[[ $(metric vhostd_reactor_parks_total reactor=0 "$TMP/s2") != none ]] || fail "no park counter"
busy=$(metric vhostd_reactor_busy_seconds_total "$TMP/s2")
python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) > 0 else 1)" "$busy" || fail "no busy time ($busy)"
fds=$(metric process_open_fds "$TMP/s2")
real=$(ls /proc/"$PID"/fd | wc -l)
# The scrape's own connection (and the directory walk) may come and go: within 3.
[[ $fds != none && $((fds - real)) -le 3 && $((real - fds)) -le 3 ]] || fail "process_open_fds $fds, /proc says $real"
[[ $(metric process_resident_memory_bytes "$TMP/s2") -gt 0 ]] || fail "no RSS"

# QoS limits show; a removed device's series go.
"$CTL" --socket "$TMP/rpc.sock" qos d1 iops=1234 >/dev/null || fail "vhostctl qos"
"$CTL" --socket "$TMP/rpc.sock" remove d0 || fail "remove d0"
scrape "$TMP/s3"
[[ $(metric vhostd_blk_qos_limit device=d1 limit=iops "$TMP/s3") == 1234 ]] || fail "qos limit not shown"
[[ $(metric vhostd_blk_requests_total device=d0 "$TMP/s3") == none ]] || fail "d0's series outlived it"
[[ $(metric vhostd_devices "$TMP/s3") == 1 ]] || fail "vhostd_devices after the remove"

kill -TERM "$PID"; wait "$PID" || fail "vhostd exited with status $? on SIGTERM"; PID=""
if [[ $fails -gt 0 ]]; then
  echo "metrics_test: $fails failure(s); vhostd log:" >&2; tail -n 30 "$TMP/log" >&2; exit 1
fi
echo "metrics_test: PASS"
