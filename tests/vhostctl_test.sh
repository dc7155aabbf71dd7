#!/usr/bin/env bash
# vhostctl's own behaviour, no daemon needed: usage errors exit 2 before anything is sent, an
# absent vhostd exits 1 with a message naming the socket, --help lists every command.
# (tests/rpc_daemon_test.sh drives it against a real vhostd.)
# Usage: tests/vhostctl_test.sh BUILD_DIR
set -uo pipefail
CTL=$1/vhostctl
fails=0
fail() { echo "vhostctl_test: FAIL: $*" >&2; fails=$((fails + 1)); }
expect() {  # expect STATUS PATTERN ARGS...: exit status and a pattern in stdout+stderr
  local want=$1 pat=$2; shift 2
  local out rc
  out=$("$CTL" "$@" 2>&1); rc=$?
  [[ $rc == "$want" ]] || fail "vhostctl $* exited $rc, expected $want: $out"
  [[ $out == *"$pat"* ]] || fail "vhostctl $* printed '$out', expected '$pat'"
}
nosock=/tmp/vhostctl-test-$$/none.sock
expect 1 "vhostd is not running at $nosock" --socket "$nosock" list
VHOSTD_RPC=$nosock expect 1 "vhostd is not running at $nosock" version
expect 2 "" --socket "$nosock"
expect 2 "'socket' is not KEY=VALUE" --socket "$nosock" add blk socket
expect 2 "" --socket "$nosock" add disk socket=/x
expect 2 "unknown limit 'bogus'" --socket "$nosock" qos d0 bogus=1
expect 2 "params must be a JSON object" --socket "$nosock" call device_list '[1]'
expect 2 "" --socket "$nosock" remove
help=$("$CTL" --help) || fail "--help failed"
for c in add remove list stats reactors resize qos save-config version methods call; do
  grep -qE "^  $c( |$)" <<<"$help" || fail "--help does not list '$c'"
done
[[ $fails == 0 ]] && echo "vhostctl_test: PASS"
exit $((fails > 0))
