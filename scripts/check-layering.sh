#!/usr/bin/env bash
# Fails when an #include runs against the layering (ARCHITECTURE.md), or when the daemon binary
# carries code from the tooling room. Rooms, lowest first, and what each may include:
#   core      core
#   shm       core shm
#   reactor   core reactor
#   nvme      core nvme (NVMe namespaces: sysfs, the generic device, commands)
#   pool      core nvme pool (pool metadata: the on-disk format, volumes, the journal)
#   backends  core shm reactor nvme pool backends
#   virtio    core shm reactor backends virtio
#   vhost     core shm reactor backends virtio vhost
#   rpc       core rpc (the management API's transport)
#   app       everything above, rpc, and app
#   tools     core rpc tools (vhostctl: a client of the API, nothing of the daemon)
#   testing   the product rooms (the tooling sits on top; the product never includes it)
#   tests, bench: anything
# Usage: scripts/check-layering.sh [path/to/vhostd]
set -euo pipefail
cd "$(dirname "$0")/.."
declare -A allowed=(
  [core]="core"
  [shm]="core shm"
  [reactor]="core reactor"
  [nvme]="core nvme"
  [pool]="core nvme pool"
  [backends]="core shm reactor nvme pool backends"
  [virtio]="core shm reactor backends virtio"
  [vhost]="core shm reactor backends virtio vhost"
  [rpc]="core rpc"
  [app]="core shm reactor nvme pool backends virtio vhost rpc app"
  [tools]="core rpc tools"
  [testing]="core shm reactor nvme pool backends virtio vhost rpc app testing"
)
rooms="core shm reactor nvme pool backends virtio vhost rpc app tools testing"
bad=0
for room in ${!allowed[@]}; do
  [[ -d $room ]] || continue
  # Every quoted include of a project room: file:line:room it includes.
  while IFS= read -r hit; do
    file=${hit%%:*}
    target=$(sed -E 's/.*#include "([a-z_]+)\/.*/\1/' <<<"$hit")
    [[ " $rooms " == *" $target "* ]] || continue
    if [[ " ${allowed[$room]} " != *" $target "* ]]; then
      echo "layering: $file includes $target/ (a $room file may include: ${allowed[$room]})" >&2
      bad=1
    fi
  done < <(grep -rnE '^[[:space:]]*#[[:space:]]*include[[:space:]]+"[a-z_]+/' "$room" --include='*.hpp' --include='*.cpp' --include='*.h' || true)
done
# The daemon links nothing from the tooling room: no symbol of namespace vhostd::testing.
bin=${1:-build/vhostd}
if [[ -x $bin ]]; then
  n=$(nm -C "$bin" | grep -c 'vhostd::testing::' || true)  # not grep -q: nm would die of SIGPIPE
  if [[ $n != 0 ]]; then
    echo "layering: $bin contains $n symbols from the tooling room (vhostd::testing)" >&2
    bad=1
  fi
fi
if [[ $bad == 0 ]]; then echo "layering: ok"; fi
exit $bad
