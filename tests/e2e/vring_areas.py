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
import socket
import sys


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    s.connect(sys.argv[1])
    f = s.makefile("rw")
    json.loads(f.readline())  # greeting

    def run(cmd, args=None):
        msg = {"execute": cmd}
        if args:
            msg["arguments"] = args
        f.write(json.dumps(msg) + "\n")
        f.flush()
        while True:
            r = json.loads(f.readline())
            if "error" in r:
                raise RuntimeError(f"{cmd}: {r['error']}")
            if "return" in r:
                return r["return"]

    run("qmp_capabilities")
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
