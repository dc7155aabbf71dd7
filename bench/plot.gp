# Plots of one bench/run.sh result; called by bench/report.py:
#   gnuplot -c bench/plot.gp DATA STEM TITLE   ->  STEM-iops.png, STEM-latency.png
# DATA: one row per closed-loop cell: "label", then IOPS median/min/max for vhostd, qsd and native
# fio (columns 2-10), then p50/p99 medians for vhostd, qsd and native (columns 11-16); "?" where a
# backend has no such cell (native on the null device).
data = ARG1
stem = ARG2
title = ARG3

set datafile missing "?"
stats data using 2 nooutput
width = STATS_records * 60 + 400
width = width < 1000 ? 1000 : width
if (strstrt(GPVAL_TERMINALS, "pngcairo") > 0) {
    set terminal pngcairo size width,760 font "sans,10"
} else {
    set terminal png size width,760
}
set style data histograms
set style histogram errorbars gap 1 lw 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set logscale y
set grid ytics mytics
set offsets 0, 0, graph 0.05, 0
set key top right
set xtics rotate by -90 left nomirror
set bmargin 13
set linetype 1 lc rgb "#1f77b4"
set linetype 2 lc rgb "#ff7f0e"
set linetype 3 lc rgb "#2ca02c"

set output stem . "-iops.png"
set title title . ": IOPS per cell (median, whiskers min–max)"
set ylabel "IOPS (log scale)"
set format y "%.0s%c"
plot data using 2:3:4:xtic(1) title "vhostd", \
     ""   using 5:6:7 title "qemu-storage-daemon", \
     ""   using 8:9:10 title "native fio (file)"

set output stem . "-latency.png"
set title title . ": latency per cell (bar: p50 median, whisker up to the p99 median)"
set ylabel "latency, µs (log scale)"
set format y "%g"
plot data using 11:11:12:xtic(1) title "vhostd", \
     ""   using 13:13:14 title "qemu-storage-daemon", \
     ""   using 15:15:16 title "native fio (file)"
