#!/usr/bin/env bash
# Runs a command next to a fresh one-node Ceph cluster (cluster.sh) with an RBD pool "rbd":
# VHOSTD_TEST_CEPH_CONF names its ceph.conf; the cluster is stopped and removed afterwards.
#
#   tests/ceph/with_cluster.sh COMMAND [ARGS...]
set -euo pipefail
[[ $# -gt 0 ]] || { sed -n '2,6p' "$0" >&2; exit 2; }
HERE=$(cd "$(dirname "$0")" && pwd)
DIR=$(mktemp -d /tmp/vhostd-ceph.XXXXXX)
cleanup() { "$HERE/cluster.sh" stop "$DIR" >/dev/null 2>&1 || true; rm -rf "$DIR"; }
trap cleanup EXIT
CONF=$("$HERE/cluster.sh" start "$DIR" rbd 2>"$DIR/start.log") || { cat "$DIR/start.log" >&2; exit 1; }
export VHOSTD_TEST_CEPH_CONF=$CONF VHOSTD_TEST_CEPH_DIR=$DIR
"$@"
