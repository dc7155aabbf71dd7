#!/usr/bin/env python3
"""Starts a vhost-user backend the way a management layer does (QEMU's backend program
conventions): the launcher makes the socket and hands it over as --fd, then execs the backend
(same pid, so the caller's process handling applies).

  launch_fd.py listen PATH -- BACKEND ARGS...   bind+listen on PATH, pass the listening socket
  launch_fd.py connect PATH -- BACKEND ARGS...  connect to a frontend listening on PATH (QEMU
                                                server=on; retried up to 60 s), pass the connection
"""
import os
import socket
import sys
import time

mode, path, sep, *cmd = sys.argv[1:]
if mode not in ("listen", "connect") or sep != "--" or not cmd:
    sys.exit(__doc__)
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
if mode == "listen":
    if os.path.exists(path):
        os.unlink(path)
    s.bind(path)
    s.listen(4)
else:
    deadline = time.time() + 60
    while True:
        try:
            s.connect(path)
            break
        except (FileNotFoundError, ConnectionRefusedError):
            if time.time() > deadline:
                sys.exit(f"launch_fd: nothing listens on {path}")
            time.sleep(0.1)
fd = s.detach()
os.set_inheritable(fd, True)
os.execv(cmd[0], cmd + ["--fd", str(fd)])
