#!/usr/bin/env python3
"""Prints the guest-physical areas of every virtqueue of a QEMU's virtio devices.

Usage: vring_areas.py QMP_SOCKET
One line per area: "ADDR SIZE DEVICE/QUEUE/PART" (hex address, decimal size). The areas are
where a vhost-user backend writes into guest memory besides the I/O buffers themselves: the used
ring (split) or the descriptor ring (packed: used descriptors are written back in place), and
the event areas. Queues that the driver never set up (address 0) are left out. Uses QEMU's
x-query-virtio and x-query-virtio-queue-status (QEMU 7.0 and later).
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import qmp as qmp_client  # noqa: E402  (the e2e directory's QMP helper)


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    qmp = qmp_client.connect(sys.argv[1])

    def run(cmd, args=None):
        r = qmp(cmd, args)
        if "error" in r:
            raise RuntimeError(f"{cmd}: {r['error']}")
        return r["return"]

    for dev in run("x-query-virtio"):
        path = dev["path"]
        st = run("x-query-virtio-status", {"path": path})
        packed = "packed" in json.dumps(st.get("guest-features", {}))
        for q in range(int(st.get("num-vqs", 0))):
            qs = run("x-query-virtio-queue-status", {"path": path, "queue": q})
            num = int(qs["vring-num"])
            if num == 0 or qs["vring-desc"] == 0:
                continue
            name = f"{dev['name']}/{q}"
            if packed:
                parts = (("desc", qs["vring-desc"], 16 * num), ("driver-event", qs["vring-avail"], 4),
                         ("device-event", qs["vring-used"], 4))
            else:
                parts = (("desc", qs["vring-desc"], 16 * num), ("avail", qs["vring-avail"], 6 + 2 * num),
                         ("used", qs["vring-used"], 6 + 8 * num))
            for part, addr, size in parts:
                if addr:
                    print(f"{addr:#x} {size} {name}/{part}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
