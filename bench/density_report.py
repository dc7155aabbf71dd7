#!/usr/bin/env python3
"""Writes the density cell's markdown report (and a gnuplot PNG next to it) from bench/density.sh's
runs (JSON lines). Usage: density_report.py --runs FILE --out FILE.md [--poll P] [--seconds S]
[--rounds R] [--host H] [--cpus N]"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
from collections import defaultdict


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def rng(xs, fmt):
    return f"{fmt.format(min(xs))}–{fmt.format(max(xs))}" if xs else "–"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--poll", default="always")
    ap.add_argument("--seconds", default="5")
    ap.add_argument("--rounds", default="3")
    ap.add_argument("--host", default="")
    ap.add_argument("--cpus", default="")
    a = ap.parse_args()
    runs = [json.loads(line) for line in open(a.runs) if line.strip()]
    hot = [r for r in runs if r["cell"] == "hot"]
    kinds = [k for k in ("vhostd", "qsd") if any(r["backend"] == k for r in hot)]
    ns = sorted({r["n"] for r in hot})
    # Every N > 1 run has its own solo run next to it (same "pair"); the N = 1 row shows them all.
    solo = {(r["backend"], r["round"], r.get("pair", 1)): r["iops"] for r in hot if r["n"] == 1}
    by = defaultdict(list)
    for r in hot:
        by[(r["backend"], r["n"])].append(r)
    light_solo = defaultdict(list)
    light_only = defaultdict(list)
    for r in runs:
        if r["cell"] == "light_only":
            if r["n"] == 2:
                light_solo[r["backend"]].append(r["light_p99_us"])
            else:
                light_only[(r["backend"], r["n"])].append(r)

    out = []
    out.append(f"# Density: one hot device and N-1 light ones on one reactor ({a.host})\n")
    out.append(f"`bench/density.sh`, poll `{a.poll}`, {a.rounds} round(s) of {a.seconds} s per cell; "
               f"{a.cpus} CPUs. Backend on CPU 0 (one reactor / qemu-storage-daemon's main loop), "
               "blkbench on CPU 1: the hot device at QD32 (poll), the light devices at 100 requests/s each "
               "(4 KiB reads, call mode, one epoll thread). Hot fraction: the hot device's IOPS over the "
               "solo run (N = 1) made right before or after it, median of the rounds (min–max). Light p99 from the kick to the "
               "completion seen.\n")
    out.append("| backend | N | hot IOPS | hot / solo | backend CPU % | light IOPS | light thread CPU % | light p99 µs (with hot) | light late | light p99 µs (light only) | light p99 µs (with hot, light thread RT) |")
    out.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    frac = {}

    fair = defaultdict(list)
    for r in runs:
        if r["cell"] == "fair":
            fair[(r["backend"], r["n"])].append(r["light_p99_us"])

    def fair_cell(k, n):
        v = fair.get((k, n), [])
        return f"{med(v):.1f} ({rng(v, '{:.1f}')})" if v else "–"

    def lo_cell(k, n):
        v = [r["light_p99_us"] for r in light_only.get((k, n), [])]
        return f"{med(v):.1f} ({rng(v, '{:.1f}')})" if v else "–"

    for k in kinds:
        for n in ns:
            rs = by[(k, n)]
            if not rs:
                continue
            def solo_of(r):
                return solo.get((k, r["round"], r.get("pair", 1))) or solo.get((k, r["round"], 1))
            ratios = [r["iops"] / solo_of(r) for r in rs if solo_of(r)]
            frac[(k, n)] = med(ratios)
            lp = [r["light_p99_us"] for r in rs if n > 1]
            out.append(
                f"| {k} | {n} | {med([r['iops'] for r in rs]) / 1e6:.2f} M ({rng([r['iops'] / 1e6 for r in rs], '{:.2f}')}) "
                f"| {med(ratios):.2f} ({rng(ratios, '{:.2f}')}) "
                f"| {med([r['backend_cpu_pct'] for r in rs]):.0f} "
                f"| {med([r['light_iops'] for r in rs]):.0f} "
                f"| {med([r.get('light_cpu_pct', 0) for r in rs]):.0f} "
                f"| {(f'{med(lp):.1f} (' + rng(lp, '{:.1f}') + ')') if lp else '–'} "
                f"| {med([r['light_late'] for r in rs]):.0f} "
                f"| {lo_cell(k, n)} | {fair_cell(k, n)} |")
    split = [r for r in runs if r["cell"] == "split"]
    if split:
        out.append("")
        out.append("**Control (split):** the same load with the light devices on a second vhostd (same CPU, "
                   "`--poll never`), so the hot device's reactor serves it alone; hot / solo against the "
                   "same round's solo run of that N. Equal fractions: the loss is the generator's and the "
                   "CPU's, not the reactor's.\n")
        out.append("| N | hot / solo, one reactor for all | hot / solo, light devices on another vhostd |")
        out.append("| ---: | ---: | ---: |")
        for n in ns:
            if n == 1:
                continue
            sr = [r["iops"] / solo[("vhostd", r["round"], r.get("pair", 1))] for r in split
                  if r["n"] == n and solo.get(("vhostd", r["round"], r.get("pair", 1)))]
            if sr:
                out.append(f"| {n} | {frac.get(('vhostd', n), float('nan')):.2f} | {med(sr):.2f} ({rng(sr, '{:.2f}')}) |")
    out.append("")
    out.append("Light device alone (no hot device, no neighbours), p99 µs: " +
               ", ".join(f"{k} {med(v):.1f} ({rng(v, '{:.1f}')})" for k, v in light_solo.items()) + "\n")

    idle = [r for r in runs if r["cell"] == "idle"]
    if idle:
        out.append("## Idle cost: every device connected, no I/O\n")
        out.append("| backend | devices | backend CPU % of one CPU | RSS listening → connected | RSS per connected device | fds listening → connected | fds per device |")
        out.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for r in idle:
            n = r["n"]
            out.append(f"| {r['backend']} | {n} | {r['backend_cpu_pct']:.3f} | {r['rss0_kb'] / 1024:.1f} → "
                       f"{r['rss1_kb'] / 1024:.1f} MiB | {(r['rss1_kb'] - r['rss0_kb']) / n:.0f} KiB | "
                       f"{r['fd0']} → {r['fd1']} | {(r['fd1'] - r['fd0']) / n:.1f} |")
        out.append("")

    out.append("## Targets (issue 16)\n")
    def tgt(label, ok, detail):
        out.append(f"- {label}: **{'PASS' if ok else 'MISS'}** ({detail})")
    if ("vhostd", 64) in frac:
        tgt("N = 64: hot device keeps >= 90 % of its solo IOPS", frac[("vhostd", 64)] >= 0.9, f"{frac[('vhostd', 64)]:.2f}")
    if ("vhostd", 256) in frac:
        tgt("N = 256: >= 80 %", frac[("vhostd", 256)] >= 0.8, f"{frac[('vhostd', 256)]:.2f}")
    if light_solo.get("vhostd"):
        s = med(light_solo["vhostd"])
        for label, src in (("with the hot device", lambda n: [r["light_p99_us"] for r in by[("vhostd", n)]]),
                           ("with the hot device, light thread RT", lambda n: fair.get(("vhostd", n), [])),
                           ("light devices only", lambda n: [r["light_p99_us"] for r in light_only.get(("vhostd", n), [])])):
            meds = [(n, med(src(n))) for n in ns if n > 1 and src(n)]
            if meds:
                n, worst = max(meds, key=lambda x: x[1])
                tgt(f"light devices' p99 within 2x of one light device alone, {label} (worst N = {n})",
                    worst <= 2 * s, f"{worst:.1f} µs vs {s:.1f} µs alone")
    for r in idle:
        if r["backend"] == "vhostd":
            tgt(f"{r['n']} idle connected devices: < 1 % CPU", r["backend_cpu_pct"] < 1.0, f"{r['backend_cpu_pct']:.3f} %")
    out.append("")

    png = os.path.splitext(a.out)[0] + ".png"
    if shutil.which("gnuplot") and frac:
        data = os.path.splitext(a.out)[0] + ".dat.tmp"
        with open(data, "w") as f:
            for k in kinds:
                for n in ns:
                    if (k, n) in frac:
                        f.write(f"{n} {frac[(k, n)]}\n")
                f.write("\n\n")
        plots = ", ".join(f"'{data}' index {i} with linespoints title '{k}'" for i, k in enumerate(kinds))
        script = (f"set terminal png size 800,480; set output '{png}'; set logscale x 2; set yrange [0:1.1]; "
                  "set xlabel 'devices on the reactor (1 hot + N-1 at 100 IOPS)'; "
                  "set ylabel 'hot device IOPS / alone'; set key bottom left; set grid; "
                  f"plot {plots}")
        subprocess.run(["gnuplot", "-e", script], check=False)
        os.remove(data)
        if os.path.exists(png):
            out.insert(2, f"![hot device IOPS as a fraction of alone]({os.path.basename(png)})\n")
    with open(a.out, "w") as f:
        f.write("\n".join(out))


if __name__ == "__main__":
    main()
