#!/usr/bin/env python3
"""Turns bench/run.sh's raw runs (JSON lines) into the results markdown: machine notes, the issue-4
targets with PASS/MISS, ceilings, one table per (target, rw), fixed rate, idle, and PNG plots drawn
by gnuplot (bench/plot.gp) next to the markdown. Run by bench/run.sh; can be re-run on a kept
<stem>-runs.jsonl to regenerate the report (the machine notes then describe the machine it runs on).

  bench/report.py --runs X-runs.jsonl --out X.md [--rounds N --seconds S --ramp S --vhostd-poll M
                  --file-mb MB --build DIR --quick]
"""
import argparse
import datetime
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=30).stdout.strip()
    except Exception:
        return ""


class Stat:
    """Median and min-max of one field over the rounds of one (backend, cell)."""

    def __init__(self, values):
        self.v = sorted(values)

    @property
    def med(self):
        return statistics.median(self.v) if self.v else None

    def fmt(self, f):
        if not self.v:
            return "–"
        s, lo, hi = f(self.med), f(self.v[0]), f(self.v[-1])
        return s if lo == hi else f"{s} ({lo}–{hi})"

    def fmt_med(self, f):
        return f(self.med) if self.v else "–"


def f_int(x):
    return f"{x:,.0f}"


def f_us(x):
    return f"{x:.2f}" if x < 10 else f"{x:.1f}" if x < 1000 else f"{x:,.0f}"


def f_2(x):
    return f"{x:.2f}"


def f_pct(x):
    return f"{x:.2f}" if x < 10 else f"{x:.1f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--rounds", default="?")
    ap.add_argument("--target-rounds", default=None)
    ap.add_argument("--seconds", default="?")
    ap.add_argument("--ramp", default="?")
    ap.add_argument("--vhostd-poll", default="always")
    ap.add_argument("--file-mb", default="1024")
    ap.add_argument("--build", default="build")
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()

    runs = [json.loads(line) for line in open(a.runs) if line.strip()]
    groups = {}
    for r in runs:
        groups.setdefault((r["backend"], r.get("cell", "")), []).append(r)

    def stat(backend, cell, field):
        return Stat([r[field] for r in groups.get((backend, cell), []) if field in r])

    def med(backend, cell, field):
        return stat(backend, cell, field).med

    def paired(backend, cell, ref_backend, ref_cell, field):
        """Per-round ratios backend/ref: the runs of one round are back to back, so a slow drift of
        the machine (the VM's disk moves by 20 % between minutes) cancels out of each ratio."""
        ref = {r["round"]: r[field] for r in groups.get((ref_backend, ref_cell), []) if r.get(field)}
        return Stat([r[field] / ref[r["round"]] for r in groups.get((backend, cell), [])
                     if field in r and r["round"] in ref])

    closed = []  # closed-loop cells in run order
    for r in runs:
        if r["backend"] in ("vhostd", "qsd") and r.get("mode") == "closed" and r["cell"] not in closed:
            closed.append(r["cell"])
    rate_cells = sorted({r["cell"] for r in runs if r.get("mode") == "rate"})

    def native_cell(cell):
        target, rw, qd, queues, _ = cell.split()
        return f"native {rw} {qd} {queues}" if target == "file" else None

    stem = a.out[:-3] if a.out.endswith(".md") else a.out
    base = os.path.basename(stem)
    out = []
    w = out.append

    # ---- header: machine notes
    today = datetime.date.today().isoformat()
    model = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip()
    mem_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30)
    rev = sh("git -C '%s' describe --always --dirty 2>/dev/null" % HERE) or "?"
    qsd = (sh("qemu-storage-daemon --version").split() + ["?"] * 3)[2]
    fio = sh("fio --version") or "?"
    title = "blkbench smoke run" if a.quick else "blkbench"
    w(f"# {title}: vhostd vs qemu-storage-daemon ({today}, {socket.gethostname().split('.')[0]})")
    w("")
    if a.quick:
        w("**Smoke run** (`bench/run.sh --quick`): a subset of the matrix, 1 round, seconds per cell. "
          "Not a result: the numbers only show that every part of the benchmark still runs.")
        w("")
    w(f"Machine: {os.cpu_count()} CPUs ({model}), {mem_gib} GiB, kernel {platform.release()}.  ")
    w(f"vhostd {rev}: 1 reactor pinned to CPU 0 (`--threads 1 --cpus 0`, whole process under `taskset -c 0`); "
      f"closed-loop cells with `--poll {a.vhostd_poll}`, the fixed-rate and idle cells in its default adaptive "
      "polling mode.  ")
    w(f"qemu-storage-daemon {qsd}: pinned to CPU 0 (taskset); null-co with read-zeroes=on; "
      "the file with aio=io_uring, cache.direct=on.  ")
    w("blkbench pinned to CPU 1; with 2 queues, two blkbench threads, both on CPU 1. Both backends offer 2 queues.  ")
    w(f"File: {a.file_mb} MiB, fully written, O_DIRECT in both backends. Native: {fio}, io_uring, direct=1, same file, "
      "CPU 1, numjobs = queues (job *i* on the *i*-th slice, like blkbench's queues); its latency is fio's total "
      "latency (`lat`, submission to completion), the comparator of blkbench's.  ")
    tr = f" ({a.target_rounds} for the file randread target cells, QD32 and QD1, 1 queue, poll, and the fixed-rate cell)" \
        if a.target_rounds and a.target_rounds != a.rounds else ""
    w(f"4 KiB requests, {a.seconds} s measured after {a.ramp} s ramp, {a.rounds} round(s){tr}, a fresh backend "
      "process per run, backends alternating (vhostd, qsd, native) within each round; median (min–max). "
      "Backend CPU: the backend process's CPU clock (all threads) over the measured window, as % of one CPU.")
    w("blkbench negotiates INFLIGHT_SHMFD when the backend offers it (as QEMU does): vhostd tracks every request.")
    w("")

    # ---- targets
    w("## Targets (issue 4)")
    w("")
    w("Computed by `bench/report.py` from the runs below; PASS/MISS is reported, not enforced (the run does not fail "
      "on a MISS). Ratios (a, c, e) are the median of per-round paired ratios (each round's runs are back to back), "
      "with their min–max; the ratio of the medians is shown next to it.")
    w("")
    w("| # | target | cell | vhostd | comparator | measured | result |")
    w("| --- | --- | --- | --- | --- | --- | --- |")

    def verdict(ok):
        return "n/a (not measured)" if ok is None else ("**PASS**" if ok else "**MISS**")

    def target_row(n, what, cell, vh, comp, measured, ok):
        w(f"| {n} | {what} | {cell} | {vh} | {comp} | {measured} | {verdict(ok)} |")

    def ratio(x, y):
        return x / y if x is not None and y not in (None, 0) else None

    def paired_txt(p, x, y):
        """A paired-ratio Stat as 'median× (min×–max×) (of medians x/y×)'."""
        return p.fmt(lambda z: f"{z:.2f}×") + f" (of medians {ratio(x, y):.2f}×)"

    # (a) null randread 1 queue QD32 poll: IOPS >= 2.5x qsd; and against the generator ceiling
    c = "null randread 32 1 poll"
    v, q, g = med("vhostd", c, "iops"), med("qsd", c, "iops"), med("self", "self 32", "iops")
    p = paired("vhostd", c, "qsd", c, "iops")
    r = p.med
    extra = f"; {ratio(v, g):.0%} of the generator's ceiling ({f_int(g)})" if ratio(v, g) is not None else ""
    target_row("a", "IOPS ≥ 2.5× qsd", "null randread QD32, 1 queue, poll",
               f"{f_int(v)} IOPS" if v else "–", f"qsd {f_int(q)} IOPS" if q else "–",
               (paired_txt(p, v, q) + extra) if r is not None else "–", None if r is None else r >= 2.5)
    # (b) null QD1 poll: p50 <= 0.5x qsd
    c = "null randread 1 1 poll"
    v, q = med("vhostd", c, "lat_p50_us"), med("qsd", c, "lat_p50_us")
    r = ratio(v, q)
    target_row("b", "p50 ≤ 0.5× qsd", "null randread QD1, 1 queue, poll", f"p50 {f_us(v)} µs" if v else "–",
               f"qsd p50 {f_us(q)} µs" if q else "–", f"{r:.2f}×" if r is not None else "–",
               None if r is None else r <= 0.5)
    # (c) file QD32 randread: IOPS >= 0.95x native fio (qsd's ratio shown too)
    c = "file randread 32 1 poll"
    v, q, n = med("vhostd", c, "iops"), med("qsd", c, "iops"), med("native", native_cell(c), "iops")
    p, pq = paired("vhostd", c, "native", native_cell(c), "iops"), paired("qsd", c, "native", native_cell(c), "iops")
    r = p.med
    measured = "–"
    if r is not None:
        measured = paired_txt(p, v, n)
        if pq.med is not None:
            measured += f"; qsd {paired_txt(pq, q, n)}"
    target_row("c", "IOPS ≥ 0.95× native fio", "file randread QD32, 1 queue, poll",
               f"{f_int(v)} IOPS" if v else "–", f"native {f_int(n)} IOPS" if n else "–", measured,
               None if r is None else r >= 0.95)
    # (d) file QD1 randread: p50 within 5 us of native
    c = "file randread 1 1 poll"
    v, q, n = med("vhostd", c, "lat_p50_us"), med("qsd", c, "lat_p50_us"), med("native", native_cell(c), "lat_p50_us")
    d = v - n if v is not None and n is not None else None
    dq = q - n if q is not None and n is not None else None
    target_row("d", "p50 ≤ native + 5 µs", "file randread QD1, 1 queue, poll", f"p50 {f_us(v)} µs" if v else "–",
               f"native p50 {f_us(n)} µs" if n else "–",
               (f"{d:+.1f} µs" + (f" (qsd {dq:+.1f} µs)" if dq is not None else "")) if d is not None else "–",
               None if d is None else d <= 5.0)
    # (e) fixed rate, call: backend CPU per request <= 0.5x qsd
    c = rate_cells[0] if rate_cells else "rate"
    v, q = med("vhostd", c, "backend_cpu_us_per_io"), med("qsd", c, "backend_cpu_us_per_io")
    p = paired("vhostd", c, "qsd", c, "backend_cpu_us_per_io")
    r = p.med
    rate_txt = c.split()[1] + "/s" if rate_cells else "100000/s"
    target_row("e", "backend CPU per request ≤ 0.5× qsd", f"null randread, fixed {rate_txt}, call, vhostd adaptive",
               f"{f_2(v)} µs CPU/req" if v is not None else "–", f"qsd {f_2(q)} µs CPU/req" if q is not None else "–",
               paired_txt(p, v, q) if r is not None else "–", None if r is None else r <= 0.5)
    # (f) idle vhostd < 1% CPU
    v, q = med("vhostd", "idle", "backend_cpu_pct"), med("qsd", "idle", "backend_cpu_pct")
    target_row("f", "idle < 1 % of a CPU", "2 queues started, no I/O, vhostd adaptive",
               f"{v:.3f} %" if v is not None else "–", f"qsd {q:.3f} %" if q is not None else "–",
               f"{v:.3f} %" if v is not None else "–", None if v is None else v < 1.0)
    w("")

    # ---- verify checks
    ver = [r for r in runs if r["backend"] == "verify"]
    if ver:
        w("## Verify checks")
        w("")
        w("`blkbench --rw randrw --verify --size 4M --queues 2` (1 s; the generator: 1 queue): every read of a block "
          "the run wrote must return the last pattern written. Run before the measurements; a wrong outcome fails the run.")
        w("")
        w("| device | expected | exit | reads checked | mismatches |")
        w("| --- | --- | --- | --- | --- |")
        for r in ver:
            w(f"| {r['cell']} | {r['expect']} | {r['exit']} | {r.get('verify_checked', 0):,} | "
              f"{r.get('verify_errors', 0):,} |")
        w("")

    # ---- ceilings
    w("## Ceilings")
    w("")
    for qd in ("32", "1"):
        s = f"self {qd}"
        if (("self", s)) in groups:
            w(f"- Generator (blkbench `--self`, in-process responder on CPU 0, 1 queue, randread, poll) QD{qd}: "
              f"{stat('self', s, 'iops').fmt(f_int)} IOPS, p50 {stat('self', s, 'lat_p50_us').fmt(f_us)} µs")
    nat = [cell for (b, cell) in groups if b == "native"]
    if nat:
        w("")
        w("Native (fio on the file):")
        w("")
        w("| rw | QD | jobs | IOPS | p50 µs | p99 µs |")
        w("| --- | --- | --- | --- | --- | --- |")
        for cell in sorted(nat, key=lambda c: (c.split()[1], -int(c.split()[2]), c.split()[3])):
            _, rw, qd, jobs = cell.split()
            w(f"| {rw} | {qd} | {jobs} | {stat('native', cell, 'iops').fmt(f_int)} | "
              f"{stat('native', cell, 'lat_p50_us').fmt(f_us)} | {stat('native', cell, 'lat_p99_us').fmt(f_us)} |")
    w("")

    # ---- one table per (target, rw)
    order = []
    for cell in closed:
        k = tuple(cell.split()[:2])
        if k not in order:
            order.append(k)
    for target, rw in order:
        w(f"## {target} {rw}")
        w("")
        w("| QD | queues | notify | backend | IOPS | × qsd | × native | p50 µs | p99 µs | kicks/IO | calls/IO | "
          "backend CPU % | IOPS per backend CPU-s |")
        w("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for cell in closed:
            t, r_, qd, queues, notify = cell.split()
            if (t, r_) != (target, rw):
                continue
            nc = native_cell(cell)
            n_iops = med("native", nc, "iops") if nc else None
            q_iops = med("qsd", cell, "iops")
            for kind in ("vhostd", "qsd"):
                iops = med(kind, cell, "iops")
                xq = f"{ratio(iops, q_iops):.2f}" if kind == "vhostd" and ratio(iops, q_iops) is not None else ""
                xn = f"{ratio(iops, n_iops):.2f}" if ratio(iops, n_iops) is not None else ""
                w(f"| {qd} | {queues} | {notify} | {kind} | {stat(kind, cell, 'iops').fmt(f_int)} | {xq} | {xn} | "
                  f"{stat(kind, cell, 'lat_p50_us').fmt(f_us)} | {stat(kind, cell, 'lat_p99_us').fmt(f_us)} | "
                  f"{stat(kind, cell, 'kicks_per_io').fmt_med(f_2)} | {stat(kind, cell, 'calls_per_io').fmt_med(f_2)} | "
                  f"{stat(kind, cell, 'backend_cpu_pct').fmt_med(f_pct)} | "
                  f"{stat(kind, cell, 'iops_per_backend_cpu_s').fmt_med(f_int)} |")
            if nc and (notify == "poll" or f"{t} {r_} {qd} {queues} poll" not in closed):
                w(f"| {qd} | {queues} | – | native fio | {stat('native', nc, 'iops').fmt(f_int)} | | | "
                  f"{stat('native', nc, 'lat_p50_us').fmt(f_us)} | {stat('native', nc, 'lat_p99_us').fmt(f_us)} | "
                  "| | | |")
        w("")

    # ---- fixed rate and idle
    for c in rate_cells:
        w(f"## Fixed rate: {c.split()[1]} requests/s, null randread, 1 queue, up to QD128, call")
        w("")
        w("Open loop: latency from each request's scheduled time. vhostd in its default adaptive polling mode.")
        w("")
        w("| backend | IOPS | p50 µs | p99 µs | kicks/IO | calls/IO | backend CPU % | backend CPU µs per request |")
        w("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for kind in ("vhostd", "qsd"):
            w(f"| {kind} | {stat(kind, c, 'iops').fmt(f_int)} | {stat(kind, c, 'lat_p50_us').fmt(f_us)} | "
              f"{stat(kind, c, 'lat_p99_us').fmt(f_us)} | {stat(kind, c, 'kicks_per_io').fmt_med(f_2)} | "
              f"{stat(kind, c, 'calls_per_io').fmt_med(f_2)} | {stat(kind, c, 'backend_cpu_pct').fmt(f_pct)} | "
              f"{stat(kind, c, 'backend_cpu_us_per_io').fmt(f_2)} |")
        w("")
    if ("vhostd", "idle") in groups or ("qsd", "idle") in groups:
        w("## Idle")
        w("")
        w("A null device with 2 queues, both started by a connected `blkbench --idle` that sends nothing; "
          "vhostd in its default adaptive mode. Backend CPU as % of one CPU over the window.")
        w("")
        w("| backend | backend CPU % |")
        w("| --- | --- |")
        for kind in ("vhostd", "qsd"):
            w(f"| {kind} | {stat(kind, 'idle', 'backend_cpu_pct').fmt(lambda x: f'{x:.3f}')} |")
        w("")

    # ---- plots
    w("## Plots")
    w("")
    plot_note = plots(a, closed, stat, native_cell, stem)
    if plot_note is None:
        w(f"IOPS per cell (bars: median, whiskers: min–max; log scale):")
        w("")
        w(f"![IOPS per cell]({base}-iops.png)")
        w("")
        w(f"Latency per cell (bars: p50 median, whiskers up to the p99 median; log scale):")
        w("")
        w(f"![p50 and p99 latency per cell]({base}-latency.png)")
    else:
        w(plot_note)
    w("")
    w(f"Raw runs (one JSON object per run, blkbench's and fio's numbers): `{base}-runs.jsonl`.")
    w(f"Command: `bench/run.sh{' --quick' if a.quick else ''} --rounds {a.rounds} --seconds {a.seconds} "
      f"--ramp {a.ramp} --vhostd-poll {a.vhostd_poll}`.")
    with open(a.out, "w") as f:
        f.write("\n".join(out) + "\n")


def plots(a, closed, stat, native_cell, stem):
    """Writes <stem>-iops.png and <stem>-latency.png; returns None, or a note why there are none."""
    gp = shutil.which("gnuplot")
    if not gp:
        return "Plots skipped: gnuplot is not installed (`scripts/setup.sh` installs gnuplot-nox)."
    if not closed:
        return "Plots skipped: no closed-loop cells."
    dat = stem + "-plot.dat"

    def cols(kind, cell, field):
        s = stat(kind, cell, field) if cell else None
        if not s or s.med is None:
            return ["?", "?", "?"]
        return [f"{s.med:.3f}", f"{s.v[0]:.3f}", f"{s.v[-1]:.3f}"]

    with open(dat, "w") as f:
        f.write("# label  iops(vhostd med min max, qsd med min max, native med min max)  "
                "p50/p99 medians(vhostd, qsd, native)\n")
        for cell in closed:
            t, rw, qd, queues, notify = cell.split()
            label = f"{t} {rw} QD{qd} {queues}q {notify}"
            nc = native_cell(cell)
            row = [f'"{label}"']
            for kind, c in (("vhostd", cell), ("qsd", cell), ("native", nc)):
                row += cols(kind, c, "iops")
            for kind, c in (("vhostd", cell), ("qsd", cell), ("native", nc)):
                p50, p99 = cols(kind, c, "lat_p50_us")[0], cols(kind, c, "lat_p99_us")[0]
                row += [p50, p99]
            f.write(" ".join(row) + "\n")
    title = os.path.basename(stem) + (" (smoke run)" if a.quick else "")
    r = subprocess.run([gp, "-c", os.path.join(HERE, "plot.gp"), dat, stem, title], capture_output=True, text=True)
    os.unlink(dat)
    bad = [p for p in (stem + "-iops.png", stem + "-latency.png") if not os.path.isfile(p) or os.path.getsize(p) == 0]
    if r.returncode != 0 or bad:
        sys.stderr.write(f"report.py: gnuplot failed (exit {r.returncode}):\n{r.stderr}")
        sys.exit(1)
    return None


if __name__ == "__main__":
    main()
