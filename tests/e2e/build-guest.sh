#!/usr/bin/env bash
# Build the e2e test guest: a Debian 6.1 kernel plus a busybox initramfs that
# runs one of the guest test scripts (tests/e2e/guest/NAME.sh) selected with
# the kernel command line parameter vtest=NAME, then powers off.
#
# Usage: tests/e2e/build-guest.sh OUT_DIR [BUILD_DIR]
#
#   BUILD_DIR   the CMake build dir whose netrr (bench/netrr.cpp, static) goes
#               into the image as /usr/bin/netrr (default: build/ of this
#               repository); the build must have made it.
#
# Produces:
#   OUT_DIR/vmlinuz              guest kernel
#   OUT_DIR/initramfs.cpio       busybox + virtio/ext4/nvme modules + fio/e2fsprogs + netrr,
#                                uncompressed: a TCG guest spends over a second of every boot
#                                on gunzip, and the suite boots some 35 guests
#   OUT_DIR/kernel-version       e.g. 6.1.0-56-amd64
#   OUT_DIR/stamp                content hash of all inputs (for idempotency)
#   OUT_DIR/cache/*.deb          downloaded kernel package (kept)
#
# Idempotent: if OUT_DIR/stamp matches the hash of the current inputs (this
# script, tests/e2e/guest/*, the kernel .deb, the host binaries copied into the
# image, netrr) nothing is rebuilt.
#
# Environment overrides:
#   VTEST_KERNEL_PKG   kernel package to use (default: newest
#                      linux-image-6.1.0-N-amd64 known to apt-cache, falling
#                      back to the newest .deb already in OUT_DIR/cache)
#
# Host packages needed: busybox-static fio e2fsprogs cpio kmod gzip binutils
#                       (plus xz-utils / zstd only if modules are compressed)
set -euo pipefail

die() { echo "build-guest: ERROR: $*" >&2; exit 1; }
log() { echo "build-guest: $*" >&2; }

[[ $# -eq 1 || $# -eq 2 ]] || die "usage: $0 OUT_DIR [BUILD_DIR]"
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
NETRR="${2:-$SCRIPT_DIR/../../build}/netrr"
GUEST_SRC="$SCRIPT_DIR/guest"
mkdir -p "$1"
OUT=$(cd "$1" && pwd)
CACHE="$OUT/cache"
mkdir -p "$CACHE"

# Modules to load in the guest, in this order (dependencies are resolved and
# inserted automatically with modprobe --show-depends, so the final order is a
# dependency-respecting superset of this list). Modules that are built into
# the kernel are skipped.
MODULES=(
  virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci
  virtio_blk
  failover net_failover virtio_net
  crc32c_generic crc32c_intel libcrc32c crc16 mbcache jbd2 ext4
  nvme_core nvme
)

# Host binaries copied (with their shared libraries) into the image, and the
# busybox applets the guest scripts rely on.
HOST_BINS=(/usr/bin/fio /usr/sbin/mke2fs /usr/sbin/e2fsck)
REQUIRED_APPLETS=(sh awk md5sum dd blkdiscard fstrim nc insmod modprobe mount umount
  poweroff head tail wc cat grep sed sync sleep mkdir ls seq cut tr timeout yes
  dmesg mknod ip ping taskset mkfifo nproc basename readlink rm)

for b in "${HOST_BINS[@]}" /bin/busybox; do
  [[ -x $b ]] || die "$b not found (install busybox-static fio e2fsprogs)"
done
for t in cpio depmod modprobe dpkg-deb apt-get apt-cache gzip ldd sha256sum strip; do
  command -v "$t" >/dev/null || die "host tool '$t' not found"
done
[[ -x $NETRR ]] || die "$NETRR not found: the guest image needs netrr (bench/netrr.cpp); build it first (scripts/build.sh, or ninja -C BUILD_DIR netrr)"
# netrr goes in without shared libraries: it must be a static executable.
if ldd "$NETRR" >/dev/null 2>&1; then
  die "$NETRR is dynamically linked (a sanitizer build?): use a release build dir, whose netrr is static"
fi

# ---------------------------------------------------------------------------
# 1. Kernel package
# ---------------------------------------------------------------------------
pick_kernel_pkg() {
  if [[ -n ${VTEST_KERNEL_PKG:-} ]]; then echo "$VTEST_KERNEL_PKG"; return; fi
  local p
  p=$(apt-cache pkgnames linux-image-6.1.0- 2>/dev/null \
        | grep -E '^linux-image-6\.1\.0-[0-9]+-amd64$' | sort -V | tail -n1 || true)
  if [[ -z $p ]]; then
    # No apt lists (offline?): fall back to what is already cached.
    p=$(find "$CACHE" -maxdepth 1 -name 'linux-image-6.1.0-*-amd64_*.deb' -printf '%f\n' \
          | sed 's/_.*//' | sort -V | tail -n1 || true)
  fi
  [[ -n $p ]] || die "no linux-image-6.1.0-*-amd64 package found (run apt-get update?)"
  echo "$p"
}

KPKG=$(pick_kernel_pkg)
KDEB=$(find "$CACHE" -maxdepth 1 -name "${KPKG}_*_amd64.deb" | sort -V | tail -n1)
if [[ -z $KDEB ]]; then
  log "downloading $KPKG into $CACHE"
  # apt-get download as root warns that _apt cannot write there; harmless.
  (cd "$CACHE" && apt-get download -q "$KPKG" >&2) || die "apt-get download $KPKG failed"
  KDEB=$(find "$CACHE" -maxdepth 1 -name "${KPKG}_*_amd64.deb" | sort -V | tail -n1)
  [[ -n $KDEB ]] || die "download of $KPKG produced no .deb"
fi
KVER=${KPKG#linux-image-}

# ---------------------------------------------------------------------------
# 2. Up-to-date check
# ---------------------------------------------------------------------------
compute_stamp() {
  {
    echo "kdeb $(basename "$KDEB") $(stat -c %s "$KDEB")"
    sha256sum "$SCRIPT_DIR/build-guest.sh"
    (cd "$GUEST_SRC" && find . -type f | LC_ALL=C sort | xargs -r sha256sum)
    (cd "$SCRIPT_DIR/../../bench/fio" 2>/dev/null && find . -type f | LC_ALL=C sort | xargs -r sha256sum) || true
    sha256sum /bin/busybox "${HOST_BINS[@]}" "$NETRR"
  } | sha256sum | cut -d' ' -f1
}
STAMP=$(compute_stamp)
if [[ -f $OUT/stamp && $(cat "$OUT/stamp") == "$STAMP" && -s $OUT/vmlinuz \
      && -s $OUT/initramfs.cpio ]]; then
  log "up to date ($KVER) in $OUT"
  exit 0
fi
rm -f "$OUT/stamp"

WORK=$(mktemp -d "$OUT/work.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# ---------------------------------------------------------------------------
# 3. Unpack kernel, produce vmlinuz, resolve module load order
# ---------------------------------------------------------------------------
log "unpacking $(basename "$KDEB")"
KROOT="$WORK/kernel"
dpkg-deb -x "$KDEB" "$KROOT"
# Debian 12 ships /lib/modules; newer releases may use /usr/lib/modules.
if [[ ! -d $KROOT/lib/modules/$KVER && -d $KROOT/usr/lib/modules/$KVER ]]; then
  mkdir -p "$KROOT/lib/modules"
  ln -s "../../usr/lib/modules/$KVER" "$KROOT/lib/modules/$KVER"
fi
KMOD="$KROOT/lib/modules/$KVER"
[[ -d $KMOD ]] || die "no modules directory for $KVER in $KDEB"
[[ -f $KROOT/boot/vmlinuz-$KVER ]] || die "no /boot/vmlinuz-$KVER in $KDEB"
cp "$KROOT/boot/vmlinuz-$KVER" "$WORK/vmlinuz"

# modules.dep is normally generated by the package's postinst; do it here.
depmod -b "$KROOT" "$KVER"

ORDERED=()   # module file paths relative to $KMOD, in load order
declare -A SEEN=()
for m in "${MODULES[@]}"; do
  if ! deps=$(modprobe -d "$KROOT" -S "$KVER" --show-depends "$m" 2>&1); then
    die "module $m not found in $KVER: $deps"
  fi
  while read -r kind path _; do
    [[ $kind == insmod ]] || continue     # "builtin NAME" lines: nothing to load
    rel=${path#"$KMOD"/}
    [[ -n ${SEEN[$rel]:-} ]] && continue
    SEEN[$rel]=1
    ORDERED+=("$rel")
  done <<<"$deps"
done

# ---------------------------------------------------------------------------
# 4. Initramfs tree
# ---------------------------------------------------------------------------
ROOT="$WORK/root"
mkdir -p "$ROOT"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,tmp,mnt,run,tests,lib64}
mkdir -p "$ROOT/lib/modules/$KVER"

# Real (non-busybox) tools.
cp /usr/bin/fio "$ROOT/usr/bin/fio"
cp /usr/sbin/mke2fs /usr/sbin/e2fsck "$ROOT/usr/sbin/"
for n in mkfs.ext4 mkfs.ext2 mkfs.ext3; do ln -s mke2fs "$ROOT/usr/sbin/$n"; done
for n in fsck.ext4 fsck.ext2 fsck.ext3; do ln -s e2fsck "$ROOT/usr/sbin/$n"; done
[[ -f /etc/mke2fs.conf ]] && cp /etc/mke2fs.conf "$ROOT/etc/"

# Shared libraries (+ dynamic loader), copied to the same paths ldd reports.
copy_libs() {
  local bin=$1 lib
  while read -r lib; do
    [[ -n $lib && -e $lib ]] || continue
    [[ -e $ROOT$lib ]] && continue
    mkdir -p "$ROOT$(dirname "$lib")"
    cp -L "$lib" "$ROOT$lib"
  done < <(ldd "$bin" | awk '/=>/ && $3 ~ /^\// {print $3} /^[ \t]*\/[^ ]*ld-linux/ {print $1}')
}
for b in "${HOST_BINS[@]}"; do copy_libs "$b"; done
[[ -e $ROOT/lib64/ld-linux-x86-64.so.2 ]] || die "dynamic loader not copied"

# busybox + applet symlinks (at busybox's preferred paths) unless a real tool
# with that name was installed above.
cp /bin/busybox "$ROOT/bin/busybox"
have_applets=" $(/bin/busybox --list | tr '\n' ' ') "
for a in "${REQUIRED_APPLETS[@]}"; do
  [[ $have_applets == *" $a "* ]] || die "busybox lacks required applet '$a'"
done
while read -r p; do
  name=$(basename "$p")
  [[ $name == busybox ]] && continue
  if [[ -e $ROOT/bin/$name || -e $ROOT/sbin/$name || -e $ROOT/usr/bin/$name \
        || -e $ROOT/usr/sbin/$name || -L $ROOT/usr/sbin/$name ]]; then
    continue
  fi
  mkdir -p "$ROOT/$(dirname "$p")"
  ln -s /bin/busybox "$ROOT/$p"
done < <(/bin/busybox --list-full)

# Kernel modules (decompressed so busybox insmod can load them).
: >"$ROOT/etc/vtest-modules"
for rel in "${ORDERED[@]}"; do
  src="$KMOD/$rel"
  dst_rel=$rel
  case $rel in
    *.ko.xz)  dst_rel=${rel%.xz};  mkdir -p "$ROOT/lib/modules/$KVER/$(dirname "$rel")"
              xz -dc "$src" >"$ROOT/lib/modules/$KVER/$dst_rel" ;;
    *.ko.zst) dst_rel=${rel%.zst}; mkdir -p "$ROOT/lib/modules/$KVER/$(dirname "$rel")"
              zstd -qdc "$src" >"$ROOT/lib/modules/$KVER/$dst_rel" ;;
    *.ko.gz)  dst_rel=${rel%.gz};  mkdir -p "$ROOT/lib/modules/$KVER/$(dirname "$rel")"
              gzip -dc "$src" >"$ROOT/lib/modules/$KVER/$dst_rel" ;;
    *)        mkdir -p "$ROOT/lib/modules/$KVER/$(dirname "$rel")"
              cp "$src" "$ROOT/lib/modules/$KVER/$dst_rel" ;;
  esac
  echo "/lib/modules/$KVER/$dst_rel" >>"$ROOT/etc/vtest-modules"
done
# modules.dep etc. so that kernel-initiated request_module() (busybox modprobe)
# also works for the modules we ship.
cp "$KMOD/modules.builtin" "$KMOD/modules.builtin.modinfo" "$KMOD/modules.order" \
   "$ROOT/lib/modules/$KVER/" 2>/dev/null || true
depmod -b "$ROOT" "$KVER"

# netrr, the TCP request/response benchmark of guest/net.sh (static; debug info stripped).
strip -o "$ROOT/usr/bin/netrr" "$NETRR" || die "strip $NETRR failed"

# Guest test scripts.
cp "$GUEST_SRC"/*.sh "$ROOT/tests/"
chmod +x "$ROOT/tests/"*.sh
# fio job files of bench/guest.sh (the in-guest benchmark)
mkdir -p "$ROOT/bench"
cp "$SCRIPT_DIR/../../bench/fio/"*.fio "$ROOT/bench/" 2>/dev/null || true

ln -s /proc/mounts "$ROOT/etc/mtab"
echo "root:x:0:0:root:/root:/bin/sh" >"$ROOT/etc/passwd"
echo "root:x:0:" >"$ROOT/etc/group"
# The kernel opens /dev/console for init's stdio before init runs, so the node
# must exist in the initramfs itself (devtmpfs is mounted later by /init).
mknod -m 600 "$ROOT/dev/console" c 5 1 2>/dev/null || true
mknod -m 666 "$ROOT/dev/null" c 1 3 2>/dev/null || true

cat >"$ROOT/init" <<'INIT'
#!/bin/sh
# vhostd e2e guest init (generated by tests/e2e/build-guest.sh).
# Runs /tests/$vtest.sh and always powers off.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root

# Whatever happens, power off: the host side waits for QEMU to exit.
finish() {
  sync
  echo "vtest-init: powering off"
  poweroff -f
  # poweroff should not return; if it does, let the kernel panic
  # (panic=-1 + QEMU -no-reboot make QEMU exit too).
  exit 1
}
trap finish EXIT

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec 0</dev/console 1>/dev/console 2>&1
mkdir -p /dev/pts /dev/shm
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
echo /sbin/modprobe >/proc/sys/kernel/modprobe 2>/dev/null

echo "vtest-init: kernel $(uname -r), $(nproc) cpus"
while read -r m; do
  insmod "$m" 2>/tmp/insmod.err || {
    # EEXIST (already loaded by a request_module) is fine; report the rest.
    grep -q 'File exists' /tmp/insmod.err || echo "vtest-init: insmod $m failed: $(cat /tmp/insmod.err)"
  }
done </etc/vtest-modules
# Give the virtio devices a moment to probe.
i=0
while [ $i -lt 50 ] && ! ls /sys/bus/virtio/devices/ 2>/dev/null | grep -q .; do
  sleep 0.1; i=$((i + 1))
done

name=""
for p in $(cat /proc/cmdline); do
  case "$p" in vtest=*) name=${p#vtest=} ;; esac
done

if [ -z "$name" ]; then
  echo "VTEST-RESULT: FAIL no vtest=NAME on the kernel command line"
elif [ ! -f "/tests/$name.sh" ]; then
  echo "VTEST-RESULT: FAIL no such guest test /tests/$name.sh"
else
  echo "vtest-init: running /tests/$name.sh"
  # Stream the output to the console and keep a copy to check for the result
  # line; pipefail makes rc the script's status.
  set -o pipefail
  sh "/tests/$name.sh" 2>&1 | tee /tmp/vtest.out
  rc=$?
  set +o pipefail
  if [ $rc -ne 0 ] || ! grep -q '^VTEST-RESULT: PASS' /tmp/vtest.out; then
    grep -q '^VTEST-RESULT: FAIL' /tmp/vtest.out \
      || echo "VTEST-RESULT: FAIL /tests/$name.sh exited with status $rc"
    echo "vtest-init: last kernel messages:"
    dmesg | tail -n 30
  fi
fi
finish
INIT
chmod +x "$ROOT/init"

log "creating initramfs ($(du -sh "$ROOT" | cut -f1) uncompressed, ${#ORDERED[@]} modules)"
(cd "$ROOT" && find . -print0 | LC_ALL=C sort -z \
   | cpio --null -o -H newc --quiet -R 0:0) >"$WORK/initramfs.cpio"

mv "$WORK/vmlinuz" "$OUT/vmlinuz"
mv "$WORK/initramfs.cpio" "$OUT/initramfs.cpio"
rm -f "$OUT/initramfs.cpio.gz"  # (the compressed image of earlier versions)
echo "$KVER" >"$OUT/kernel-version"
printf '%s\n' "${ORDERED[@]}" >"$OUT/modules.txt"
echo "$STAMP" >"$OUT/stamp"
log "built $OUT/vmlinuz and $OUT/initramfs.cpio (kernel $KVER, $(du -h "$OUT/initramfs.cpio" | cut -f1))"
