#!/usr/bin/env python3
"""A hostile NBD server for the nbd backend's tests: a correct newstyle handshake, then replies
that break the protocol in one chosen way.

Usage: hostile_nbd.py SOCKET MODE [SIZE]
Listens on the unix socket SOCKET (accepting again after each connection) and serves an export
of SIZE bytes (default 64 MiB) whose reads return zeroes, except as MODE says:
  good            a correct server (simple and structured replies)
  wrong-handle    replies carry a handle that was never sent
  bad-magic       replies start with a wrong magic number
  short-close     half a reply header, then the connection closes
  huge-chunk      a structured read chunk claiming 4 GiB of payload
  outside-chunk   a structured read chunk for bytes outside the request
  extra-data      a simple read reply followed by more data than asked for (structured replies
                  refused): the read itself is answered, the rest is garbage
  error           every command fails with EIO (a valid reply)
  lie-size        the export claims SIZE bytes but reads past its first MiB fail with EIO
  silent          reads are never answered (writes and flushes are)
"""
import os
import socket
import struct
import sys
import threading

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
REPLY_MAGIC = 0x3E889045565A9
REQ_MAGIC = 0x25609513
SIMPLE_MAGIC = 0x67446698
STRUCT_MAGIC = 0x668E33EF
OPT_GO, OPT_INFO, OPT_STRUCTURED = 7, 6, 8
REP_ACK, REP_INFO, REP_ERR_UNSUP = 1, 3, 0x80000001
CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH = 0, 1, 2, 3
EIO = 5


def recv_all(c, n):
    b = b""
    while len(b) < n:
        chunk = c.recv(n - len(b))
        if not chunk:
            raise EOFError
        b += chunk
    return b


def serve(c, mode, size):
    c.sendall(struct.pack(">QQH", NBDMAGIC, IHAVEOPT, 3))  # FIXED_NEWSTYLE | NO_ZEROES
    recv_all(c, 4)
    structured = False
    while True:
        magic, opt, length = struct.unpack(">QII", recv_all(c, 16))
        data = recv_all(c, length) if length else b""
        if magic != IHAVEOPT:
            return
        if opt == OPT_STRUCTURED and mode != "extra-data":
            structured = True
            c.sendall(struct.pack(">QIII", REPLY_MAGIC, opt, REP_ACK, 0))
        elif opt in (OPT_GO, OPT_INFO):
            flags = 1 | 4 | 8 | 0x20  # HAS_FLAGS | SEND_FLUSH | SEND_FUA | SEND_TRIM
            info = struct.pack(">HQH", 0, size, flags)
            c.sendall(struct.pack(">QIII", REPLY_MAGIC, opt, REP_INFO, len(info)) + info)
            c.sendall(struct.pack(">QIII", REPLY_MAGIC, opt, REP_ACK, 0))
            if opt == OPT_GO:
                break
        else:
            c.sendall(struct.pack(">QIII", REPLY_MAGIC, opt, REP_ERR_UNSUP, 0))
    while True:
        magic, flags, typ, handle, offset, length = struct.unpack(">IHHQQI", recv_all(c, 28))
        if magic != REQ_MAGIC:
            return
        if typ == CMD_WRITE:
            recv_all(c, length)
        if typ == CMD_DISC:
            return
        read = typ == CMD_READ
        err = 0
        if mode == "error" or (mode == "lie-size" and read and offset + length > (1 << 20)):
            err = EIO
        if mode == "silent" and read:
            continue
        if mode == "wrong-handle":
            handle ^= 0x5A5A5A5A
        if mode == "bad-magic":
            c.sendall(struct.pack(">IIQ", 0xDEADBEEF, 0, handle))
            continue
        if mode == "short-close":
            c.sendall(struct.pack(">I", SIMPLE_MAGIC)[:3])
            return
        if read and structured and not err:
            if mode == "huge-chunk":
                c.sendall(struct.pack(">IHHQIQ", STRUCT_MAGIC, 1, 1, handle, 0xFFFFFFFF, offset))
                continue
            chunk_off = offset + length + 4096 if mode == "outside-chunk" else offset
            payload = struct.pack(">Q", chunk_off) + bytes(length)
            c.sendall(struct.pack(">IHHQI", STRUCT_MAGIC, 1, 1, handle, len(payload)) + payload)
            continue
        if structured and err:
            msg = b""
            payload = struct.pack(">IH", err, len(msg)) + msg
            c.sendall(struct.pack(">IHHQI", STRUCT_MAGIC, 1, 32769, handle, len(payload)) + payload)
            continue
        if structured:
            c.sendall(struct.pack(">IHHQI", STRUCT_MAGIC, 1, 0, handle, 0))
            continue
        out = struct.pack(">IIQ", SIMPLE_MAGIC, err, handle)
        if read and not err:
            out += bytes(length)
            if mode == "extra-data":
                out += b"\xff" * 4096
        c.sendall(out)


def main():
    if len(sys.argv) not in (3, 4):
        print(__doc__, file=sys.stderr)
        return 2
    path, mode = sys.argv[1], sys.argv[2]
    size = int(sys.argv[3]) if len(sys.argv) == 4 else 64 << 20
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(16)

    def one(c):
        try:
            serve(c, mode, size)
        except (EOFError, OSError):
            pass
        finally:
            c.close()

    while True:
        c, _ = srv.accept()
        threading.Thread(target=one, args=(c,), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
