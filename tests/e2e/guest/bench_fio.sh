#!/bin/sh
# Guest side of bench/guest.sh (busybox sh): runs bench/fio/guest.fio (copied into the image as
# /bench/guest.fio) on /dev/vda and prints one machine-readable line per job:
#   VTEST-FIO <job> <read IOPS> <write IOPS> <read clat mean us> <write clat mean us>
set -e
. /tests/lib.sh

vt_step "waiting for /dev/vda"
vt_wait_dev vda || vt_fail "/dev/vda did not appear"
[ -f /bench/guest.fio ] || vt_fail "/bench/guest.fio is missing from the image"
vt_step "fio /bench/guest.fio"
fio --output-format=terse --terse-version=3 /bench/guest.fio >/tmp/fio.out 2>/tmp/fio.err \
  || { cat /tmp/fio.err; vt_fail "fio failed"; }
# terse v3: 3 job, 5 error, 8 read IOPS, 16 read clat mean (us), 49 write IOPS, 57 write clat mean
awk -F';' 'NF > 100 { if ($5 != 0) bad = 1; printf "VTEST-FIO %s %s %s %s %s\n", $3, $8, $49, $16, $57 } END { exit bad }' \
  /tmp/fio.out || vt_fail "fio reported an error"
vt_pass
