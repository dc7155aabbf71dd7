#!/usr/bin/env bash
# The command line tells the truth: --version prints a version, and --help names every device
# key that app/device_spec.cpp accepts (a key added there but not to the help text fails here).
set -euo pipefail
bin=$1
src=$2/app/device_spec.cpp
ver=$("$bin" --version)
[[ $ver =~ ^vhostd\ [0-9]+\.[0-9]+\.[0-9]+ ]] || { echo "--version printed '$ver'"; exit 1; }
help=$("$bin" --help)
keys=$(grep -oE 'k == "[a-z-]+"' "$src" | sed -E 's/k == "(.*)"/\1/' | sort -u)
[[ -n $keys ]] || { echo "no device keys found in $src"; exit 1; }
missing=0
for k in $keys; do
  grep -qE "(^|[^a-z-])$k=" <<<"$help" || { echo "--help does not mention device key '$k'"; missing=1; }
done
# The test-only fault hook refuses a value it cannot use instead of running unarmed.
for v in 0 abc 5x 99999999999; do
  rc=0
  out=$(VHOSTD_TEST_KILL_BEFORE_INTERRUPT=$v "$bin" --blk socket=/nonexistent/x.sock,null=1M 2>&1) || rc=$?
  if [[ $rc != 2 || $out != *VHOSTD_TEST_KILL_BEFORE_INTERRUPT* ]]; then
    echo "VHOSTD_TEST_KILL_BEFORE_INTERRUPT=$v: status $rc, output '$out'"; missing=1
  fi
done
[[ $missing == 0 ]] && echo "cli: version '$ver', all $(wc -w <<<"$keys") device keys in --help"
exit $missing
