#!/usr/bin/env bash
# The leak soak (issue 18): a vhostd as an operator runs it (sandbox on, management API, two
# reactors, a null disk) takes CYCLES frontend sessions (connect, negotiate with the inflight
# buffer and a new memory table, a write done and a read in flight, disconnect) and ADD_REMOVE
# devices added through the API, used and removed under their frontend (bench/soak.cpp). Its open
# fds must end where they were after the warm-up and its RSS within 1 MiB. Then SIGTERM: it must
# stop cleanly. Exit 0 flat, 1 leak, 2 error.
#
#   bench/soak.sh [BUILD_DIR] [CYCLES (10000)] [ADD_REMOVE (1000)] [--user USER]
# The unit suite runs it short (tests/CMakeLists.txt: soak_short); the full counts are recorded in
# bench/results/.
set -euo pipefail
build=${1:-build}
cycles=${2:-10000}
add_remove=${3:-1000}
shift $(($# < 3 ? $# : 3))
extra=("$@")
if [[ ${#extra[@]} -gt 0 && $(id -u) != 0 ]]; then
  echo "soak: not root: running without ${extra[*]}"
  extra=()
fi
tmp=$(mktemp -d /tmp/vhostd-soak.XXXXXX)
pid=""
cleanup() { if [[ -n $pid ]]; then kill -9 "$pid" 2>/dev/null || true; fi; rm -rf "$tmp"; }
trap cleanup EXIT
[[ ${#extra[@]} -gt 0 ]] && chmod 0777 "$tmp"   # --user: its added devices' sockets go here
"$build/vhostd" --blk "socket=$tmp/a.sock,backend=null,size=64M,queues=2" --rpc "$tmp/api.sock" --threads 2 \
  "${extra[@]}" >"$tmp/log" 2>&1 &
pid=$!
for _ in $(seq 200); do
  [[ -S $tmp/api.sock ]] && grep -q "vhostd ready" "$tmp/log" && break
  kill -0 "$pid" 2>/dev/null || { echo "soak: vhostd died at start: $(tail -3 "$tmp/log")"; exit 2; }
  sleep 0.025
done
rc=0
"$build/soak" --pid "$pid" --socket "$tmp/a.sock" --cycles "$cycles" --api "$tmp/api.sock" --dir "$tmp" \
  --add-remove "$add_remove" --rss-slack-kib "${SOAK_RSS_SLACK_KIB:-1024}" || rc=$?
lines=$(wc -l <"$tmp/log")
kill -TERM "$pid"
st=0
wait "$pid" || st=$?
pid=""
if [[ $st != 0 ]]; then
  echo "soak: vhostd exited $st on SIGTERM: $(tail -5 "$tmp/log")"
  rc=2
fi
echo "soak: vhostd logged $lines lines ($(uname -r), $(nproc) CPUs, vhostd ${extra[*]:-as root})"
exit $rc
