#!/usr/bin/env python3
"""Minimal QMP client for the e2e tests: runs commands against a QEMU QMP unix socket.

Usage: qmp.py SOCKET 'command {"arg": ...}' ['command' ...]
Prints each reply; exits 1 if a command returns an error (or the socket fails).
"""
import json
import socket
import sys


def connect(path):
    """A QMP session on the unix socket `path`, capabilities negotiated. Returns run(cmd, args=None),
    which sends one command and returns its whole reply ({"return": ...} or {"error": ...})."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    s.connect(path)
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
            if "return" in r or "error" in r:
                return r

    run("qmp_capabilities")
    return run


def main():
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    run = connect(sys.argv[1])
    rc = 0
    for item in sys.argv[2:]:
        name, _, rest = item.partition(" ")
        reply = run(name, json.loads(rest) if rest.strip() else None)
        print(f"qmp: {name}: {json.dumps(reply)}")
        if "error" in reply:
            rc = 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
