#!/usr/bin/env python3
"""Compares two guest memory images (RAM backing files of two QEMUs) page by page.

Usage: memcmp_pages.py A B [DUMP_PREFIX]
Prints the number of 4 KiB pages that differ on stdout (0: identical) and the first few
addresses on stderr. The legacy VGA/BIOS hole 0xa0000-0xfffff is not compared (device memory
and ROM there is not guest RAM).
"""
import sys

PAGE = 4096
CHUNK = 1 << 20


def main():
    if len(sys.argv) not in (3, 4):
        print(__doc__, file=sys.stderr)
        return 2
    diff = []
    off = 0
    with open(sys.argv[1], "rb") as a, open(sys.argv[2], "rb") as b:
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
                    if x[p:p + PAGE] != y[p:p + PAGE] and not 0xA0000 <= addr < 0x100000:
                        diff.append(addr)
            off += len(x)
    print(len(diff))
    if diff:
        print("differing pages: " + " ".join(hex(d) for d in diff[:32]), file=sys.stderr)
    if diff and len(sys.argv) == 4:
        # Both sides of each differing page, for a look at what they hold.
        with open(sys.argv[1], "rb") as a, open(sys.argv[2], "rb") as b:
            for d in diff[:32]:
                for f, side in ((a, "src"), (b, "dst")):
                    f.seek(d)
                    with open(f"{sys.argv[3]}.{d:#x}.{side}", "wb") as o:
                        o.write(f.read(PAGE))
    return 0


if __name__ == "__main__":
    sys.exit(main())
