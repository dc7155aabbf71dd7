#!/usr/bin/env python3
"""Compares two guest memory images (RAM backing files of two QEMUs) page by page.

Usage: memcmp_pages.py A B [DUMP_PREFIX] [--areas FILE]
Prints on stdout the number of 4 KiB pages that differ (0: identical) and, with --areas, three
more numbers: "DIFFER RING LARGE SMALL".
  RING   differing pages that overlap an area listed in FILE (lines "ADDR SIZE NAME", as
         vring_areas.py prints them: the virtqueues' used/descriptor rings and event areas);
  LARGE  other differing pages with more than LARGE_BYTES differing bytes (what a lost write of
         I/O payload looks like: a block read into a buffer replaces the whole page);
  SMALL  the rest: a few scattered bytes (counters, pointers, stack words), the signature of the
         guest-CPU writes that QEMU 7.2's TCG loses from its dirty tracking on its own (see
         migrate_memcmp_qemu_only.sh).
The first few addresses go to stderr, each with its class and number of differing bytes. The
legacy VGA/BIOS hole 0xa0000-0xfffff is not compared (device memory and ROM there is not guest
RAM). With DUMP_PREFIX, both sides of each differing page are written to PREFIX.ADDR.{src,dst}.
"""
import sys

PAGE = 4096
CHUNK = 1 << 20
# Up to ~250 differing bytes were seen in the pages QEMU's TCG loses (a stack frame written in a
# burst); a lost 4 KiB read of random data differs in ~4080.
LARGE_BYTES = 1024


def read_areas(path):
    areas = []
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2:
                areas.append((int(parts[0], 16), int(parts[1]), parts[2] if len(parts) > 2 else "?"))
    return areas


def ring_of(addr, areas):
    for start, size, name in areas:
        if start < addr + PAGE and addr < start + size:
            return name
    return None


def main():
    args = sys.argv[1:]
    areas = None
    if "--areas" in args:
        i = args.index("--areas")
        if i + 1 >= len(args):
            print(__doc__, file=sys.stderr)
            return 2
        areas = read_areas(args[i + 1])
        del args[i:i + 2]
    if len(args) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    diff = []  # (addr, differing bytes)
    off = 0
    with open(args[0], "rb") as a, open(args[1], "rb") as b:
        while True:
            x, y = a.read(CHUNK), b.read(CHUNK)
            if len(x) != len(y):
                print(f"dumps differ in length at {off:#x}", file=sys.stderr)
                return 1
            if not x:
                break
            if x != y:
                for p in range(0, len(x), PAGE):
                    addr = off + p
                    px, py = x[p:p + PAGE], y[p:p + PAGE]
                    if px != py and not 0xA0000 <= addr < 0x100000:
                        diff.append((addr, sum(1 for i in range(PAGE) if px[i] != py[i])))
            off += len(x)
    ring = large = small = 0
    notes = []
    for addr, nbytes in diff:
        name = ring_of(addr, areas) if areas is not None else None
        if name:
            ring += 1
            cls = f"ring {name}"
        elif nbytes > LARGE_BYTES:
            large += 1
            cls = "large"
        else:
            small += 1
            cls = "small"
        notes.append(f"{addr:#x} ({cls}, {nbytes} bytes)")
    if areas is None:
        print(len(diff))
    else:
        print(len(diff), ring, large, small)
    if diff:
        print("differing pages: " + ", ".join(notes[:32]), file=sys.stderr)
    if diff and len(args) == 3:
        # Both sides of each differing page, for a look at what they hold.
        with open(args[0], "rb") as a, open(args[1], "rb") as b:
            for d, _ in diff[:32]:
                for f, side in ((a, "src"), (b, "dst")):
                    f.seek(d)
                    with open(f"{args[2]}.{d:#x}.{side}", "wb") as o:
                        o.write(f.read(PAGE))
    return 0


if __name__ == "__main__":
    sys.exit(main())
