#!/usr/bin/env python3
"""Writes seed inputs for the fuzz targets: a QEMU-like vhost-user session and a few valid
rings, so the fuzzers start from deep states instead of random bytes. Run from anywhere."""
import os
import struct

here = os.path.dirname(os.path.abspath(__file__))


def msg(req, payload=b"", nfds=0, flags=1):
    return bytes([nfds]) + struct.pack("<III", req, flags, len(payload)) + payload


def u64(v):
    return struct.pack("<Q", v)


UVA = 0x7F0000000000
session = b"".join([
    msg(1), msg(15), msg(16, u64((1 << 0) | (1 << 3) | (1 << 5) | (1 << 9) | (1 << 12) | (1 << 13) | (1 << 15) | (1 << 16))), msg(17), msg(36), msg(3),
    msg(24, struct.pack("<III", 0, 60, 0) + bytes(60)),
    msg(2, u64((1 << 32) | (1 << 29) | (1 << 28) | (1 << 30) | (1 << 9))),
    msg(31, struct.pack("<QQHHI", 0, 0, 2, 16, 0)),
    msg(32, struct.pack("<QQHHI", 640, 0, 2, 16, 0), nfds=0x81),
    msg(5, struct.pack("<II", 1, 0) + struct.pack("<QQQQ", 0, 0x10000, UVA, 0), nfds=1),
    msg(8, struct.pack("<II", 0, 16)),
    msg(10, struct.pack("<II", 0, 0)),
    msg(9, struct.pack("<IIQQQQ", 0, 0, UVA, UVA + 0x2000, UVA + 0x1000, 0)),
    msg(12, u64(0), nfds=1), msg(13, u64(0), nfds=1), msg(18, struct.pack("<II", 0, 1)),
    msg(37, u64(0) + struct.pack("<QQQQ", 0x100000, 0x10000, UVA + 0x100000, 0), nfds=1),
    msg(38, u64(0) + struct.pack("<QQQQ", 0x100000, 0x10000, UVA + 0x100000, 0)),
    msg(11, struct.pack("<II", 0, 0)), msg(39, u64(15)), msg(40), msg(34),
])
open(os.path.join(here, "corpus/vhost_messages/qemu_session"), "wb").write(session)

# virtqueue: [log2 size][flags][last_avail u16][memory image]; rings at 0x0 / 0x1000 / 0x2000.
def ring_image(chains, qsize=16, indirect=False):
    mem = bytearray(0x4000)
    desc = 0
    heads = []
    for chain in chains:
        head = desc
        for i, (addr, ln, fl) in enumerate(chain):
            nxt = desc + 1 if i + 1 < len(chain) else 0
            flags = fl | (1 if i + 1 < len(chain) else 0)
            struct.pack_into("<QIHH", mem, desc * 16, addr, ln, flags, nxt)
            desc += 1
        heads.append(head)
    for i, h in enumerate(heads):
        struct.pack_into("<H", mem, 0x1000 + 4 + 2 * i, h)
    struct.pack_into("<H", mem, 0x1000 + 2, len(heads))
    return bytes(mem)

blk_read = [(0x3000, 16, 0), (0x3100, 512, 2), (0x3400, 1, 2)]
blk_write = [(0x3010, 16, 0), (0x3200, 512, 0), (0x3401, 1, 2)]
struct_hdr = bytearray(0x4000)
img = bytearray(ring_image([blk_read, blk_write]))
struct.pack_into("<IIQ", img, 0x3000, 0, 0, 1)   # IN sector 1
struct.pack_into("<IIQ", img, 0x3010, 1, 0, 2)   # OUT sector 2
open(os.path.join(here, "corpus/virtqueue/read_write"), "wb").write(bytes([4, 1, 0, 0]) + bytes(img))

# The same requests, with an inflight region at 0x8000 that says a previous backend had heads 1
# and 0 in flight (in that order): recovery resubmits them (flags: event_idx | inflight | desc_num).
img2 = bytearray(img) + bytearray(0x8000 + 16 + 16 * 16 - len(img))
struct.pack_into("<QHHHH", img2, 0x8000, 1 << 32, 1, 16, 0, 0)
struct.pack_into("<B5sHQ", img2, 0x8000 + 16 + 16 * 1, 1, bytes(5), 0, 7)
struct.pack_into("<B5sHQ", img2, 0x8000 + 16 + 16 * 0, 1, bytes(5), 0, 9)
open(os.path.join(here, "corpus/virtqueue/inflight_recovery"), "wb").write(bytes([4, 1 | 4 | 8, 0, 0]) + bytes(img2))

# net_device: [log2 size][flags][feature bits][frames][rx base u16][tx base u16], RX frames
# ([u16 len][virtio-net header + frame]), then memory: RX ring at 0x0/0x1000/0x2000, TX ring at
# 0x3000/0x4000/0x5000 (qsize 16), buffers from 0x8000.
def ring_at(mem, base, chains):
    desc = 0
    for i, chain in enumerate(chains):
        head = desc
        for k, (addr, ln, fl) in enumerate(chain):
            nxt = desc + 1 if k + 1 < len(chain) else 0
            struct.pack_into("<QIHH", mem, base + desc * 16, addr, ln, fl | (1 if k + 1 < len(chain) else 0), nxt)
            desc += 1
        struct.pack_into("<H", mem, base + 0x1000 + 4 + 2 * i, head)
    struct.pack_into("<H", mem, base + 0x1000 + 2, len(chains))

eth = bytes(range(14)) + bytes([0x45, 0]) + bytes(44)   # a 60-byte frame, IPv4 ethertype area
net_mem = bytearray(0xA000)
ring_at(net_mem, 0x0, [[(0x8000, 2048, 2)], [(0x8800, 2048, 2)]])
ring_at(net_mem, 0x3000, [[(0x9000, 12, 0), (0x9100, len(eth), 0)], [(0x9200, 12 + len(eth), 0)]])
struct.pack_into("<BBHHHHH", net_mem, 0x9000, 0, 0, 0, 0, 0, 0, 0)           # plain
struct.pack_into("<BBHHHHH", net_mem, 0x9200, 1, 0, 0, 0, 34, 16, 0)         # NEEDS_CSUM
net_mem[0x9100:0x9100 + len(eth)] = eth
net_mem[0x9200 + 12:0x9200 + 12 + len(eth)] = eth
rx = struct.pack("<BBHHHHH", 0, 0, 0, 0, 0, 0, 0) + eth
rx_csum = struct.pack("<BBHHHHH", 1, 0, 0, 0, 34, 16, 0) + eth
frames = b"".join(struct.pack("<H", len(f)) + f for f in (rx, rx_csum))
os.makedirs(os.path.join(here, "corpus/net_device"), exist_ok=True)
for name, feats, flags in (("plain", 0, 1), ("offloads_mrg", 0b111, 1), ("tso_indirect", 0b11111011, 3)):
    seed = bytes([4, flags, feats, 2]) + struct.pack("<HH", 0, 0) + frames + bytes(net_mem)
    open(os.path.join(here, "corpus/net_device", name), "wb").write(seed)

# nbd_replies: [flags][size u64 BE][transmission flags u16 BE][min][pref][max u32 BE] + reply ops.
def nbd_hs(flags=1, size=64 << 20, tflags=1 | 4 | 8, bs=(512, 4096, 1 << 20)):
    return bytes([flags]) + struct.pack(">QH", size, tflags) + struct.pack(">III", *bs)
os.makedirs(os.path.join(here, "corpus/nbd_replies"), exist_ok=True)
nbd_seeds = {
    "good": nbd_hs(),
    "good_simple_blocksize": nbd_hs(flags=2),
    "errors": nbd_hs() + bytes([0]) + struct.pack(">I", 5) + bytes([0]) + struct.pack(">I", 28) + bytes([0, 0, 0, 0, 0]),
    "chunks": nbd_hs() + bytes([1]) + struct.pack(">HQH", 0, 0, 2048) + bytes([1]) + struct.pack(">HQH", 1, 2048, 2048)
              + bytes([4, 0, 1]) + bytes([4, 0, 1]),
    "hole_error": nbd_hs() + bytes([2]) + struct.pack(">HQI", 1, 0, 4096) + bytes([3]) + struct.pack(">HHIB", 1, 1, 5, 3)
                  + bytes([4, 0, 1]),
    "hangup_reconnect_refused": nbd_hs(flags=1 | 4) + bytes([7]),
    "wrong_cookie_then_raw": nbd_hs() + bytes([6]) + struct.pack(">Q", 99) + bytes([5, 4, 0x67, 0x44, 0x66, 0x98]),
}
for name, seed in nbd_seeds.items():
    open(os.path.join(here, "corpus/nbd_replies", name), "wb").write(seed)

# pool_metadata: [mode][...] (see fuzz_pool_metadata.cpp). Geometry there: 128 chunks of 64 KiB.
os.makedirs(os.path.join(here, "corpus/pool_metadata"), exist_ok=True)
CH = 64 * 1024
def pname(s):
    return bytes([len(s)]) + s.encode()
def volume(vid, parent, origin, flags, name, chunks, limit, entries):
    out = struct.pack("<IIIBB", vid, parent, origin, flags, 0) + pname(name)
    out += struct.pack("<QQQ", chunks * CH, limit, len(entries))
    for v, p in entries:
        out += struct.pack("<QQ", v, p)
    return out
payload = struct.pack("<II", 4, 3) + volume(1, 2, 0, 0, "a", 16, 16, [(3, 7)]) \
    + volume(2, 0, 1, 1, "s", 16, 0, [(0, 0), (1, 50)]) + volume(3, 2, 0, 2, "c", 16, 16, [(5, 100)])
def rec(b):
    return struct.pack("<H", len(b)) + b
records = b"".join([
    rec(struct.pack("<BIIQBB", 3, 7, 0, 4 * CH, 0, 0) + pname("x")),
    rec(struct.pack("<BIQ", 0xfe, 7, 1)),
    rec(struct.pack("<BIQQ", 1, 7, 1, 0)),
    rec(struct.pack("<BII", 6, 1, 8) + pname("q")),
    rec(struct.pack("<BI", 4, 4)),
    rec(struct.pack("<BIQ", 5, 1, 8 * CH)),
    rec(struct.pack("<BIQ", 2, 1, 2)),
    rec(struct.pack("<B", 0xff)),
])
def patch(region, off, data, fix):
    return struct.pack("<BHB", region, off, len(data)) + data + bytes([fix])
seeds = {
    "payload": bytes([0]) + payload,
    "records": bytes([1]) + records,
    "import_as_is": bytes([2]),
    "journal_block_fixed": bytes([2]) + patch(8, 50, b"\x05\x00\x00\x00", 1),
    "superblock_fixed": bytes([2]) + patch(0, 88, b"\x00\x00\x02\x00", 1),
    "checkpoint_body_fixed": bytes([2]) + patch(6, 8, b"\x02\x00\x00\x00", 1),
    "torn_slot": bytes([2]) + patch(5, 200, b"\xff" * 16, 0),
}
for name, seed in seeds.items():
    open(os.path.join(here, "corpus/pool_metadata", name), "wb").write(seed)
