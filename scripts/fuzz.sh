#!/usr/bin/env bash
# The long form of the fuzz runs (CI runs each target for seconds): one target under ASan+UBSan
# for up to SECONDS or RUNS executions, whichever comes first, on a work corpus that persists
# between runs (build-asan/fuzz-work/TARGET, seeded from tests/fuzz/corpus/TARGET). Afterwards the
# inputs that add coverage are merged back into tests/fuzz/corpus/TARGET (commit them: the corpus
# grows from run to run) and a row goes to tests/fuzz/RESULTS.md.
#
#   scripts/fuzz.sh TARGET [SECONDS (3600)] [RUNS (10000000)] [-- libFuzzer options...]
#   TARGET: virtqueue | vhost_messages | rpc_request | net_device | nbd_replies | pool_metadata
# A finding (crash, leak, sanitizer report) stops the run; libFuzzer leaves the input as
# build-asan/fuzz-work/crash-* and this script exits 1.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $# -ge 1 ]] || { sed -n '2,11p' "$0" >&2; exit 2; }
target=$1 seconds=${2:-3600} runs=${3:-10000000}
shift $(($# < 3 ? $# : 3))
[[ ${1:-} == -- ]] && shift
bin=build-asan/tests/fuzz_$target
seeds=tests/fuzz/corpus/$target
[[ -x $bin ]] || { echo "fuzz.sh: $bin missing: scripts/build.sh asan" >&2; exit 1; }
[[ -d $seeds ]] || { echo "fuzz.sh: no seed corpus $seeds" >&2; exit 1; }
work=build-asan/fuzz-work/$target
mkdir -p "$work"
log=build-asan/fuzz-work/$target.log
start=$(date -u +%FT%TZ)
rc=0
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  "$bin" -max_total_time="$seconds" -runs="$runs" -print_final_stats=1 -artifact_prefix=build-asan/fuzz-work/ \
  "$@" "$work" "$seeds" >"$log" 2>&1 || rc=$?
execs=$(awk '/stat::number_of_executed_units/ { print $2 }' "$log")
rate=$(awk '/stat::average_exec_per_sec/ { print $2 }' "$log")
cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | cut -d' ' -f2)
before=$(ls "$seeds" | wc -l)
"$bin" -merge=1 "$seeds" "$work" >/dev/null 2>&1 || true
after=$(ls "$seeds" | wc -l)
verdict="no finding"
if [[ $rc != 0 ]]; then verdict="**FINDING** (exit $rc, see $log and build-asan/fuzz-work/crash-*)"; fi
row="| $start | $target | ${execs:-?} | ${rate:-?} | ${cov:-?} | $before → $after | $verdict |"
results=tests/fuzz/RESULTS.md
if [[ ! -f $results ]]; then
  cat >"$results" <<'HDR'
# Fuzzing results

`scripts/fuzz.sh TARGET [SECONDS] [RUNS]`: ASan+UBSan builds (`scripts/build.sh asan`), libFuzzer.
Goal per target (issue 18): no finding for 10 million executions or one hour, whichever comes
first; a run may stop early and the next one continues on the kept corpus (executions add up).
Machine: this project's 2-vCPU VM unless a row says otherwise.

| started (UTC) | target | executions | exec/s | coverage (edges) | seed corpus files before → after merge | result |
| --- | --- | ---: | ---: | ---: | --- | --- |
HDR
fi
echo "$row" >>"$results"
echo "$row"
exit $((rc != 0))
