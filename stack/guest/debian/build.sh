#!/usr/bin/env bash
# Build the Debian 12 test guest into OUTDIR (which must not exist yet), from Debian packages:
#   OUTDIR/disk.raw        2 GiB sparse raw, ext4 with 4 KiB blocks on the whole disk (root=/dev/vda):
#                          mmdebstrap minbase bookworm + systemd-sysv udev dbus kmod
#                          linux-image-cloud-amd64 initramfs-tools python3 procps busybox, our
#                          files (rootfs/, hooks.sh) and staged .debs in /opt/cltest/debs/APP/
#   OUTDIR/vmlinuz, OUTDIR/initrd.img   the image's own kernel and initrd, for direct kernel boot
#   OUTDIR/cmdline         the kernel command line to boot them with
#   OUTDIR/kernel-version, OUTDIR/packages.txt   what is in it
# The apt sources are the host's. Downloaded .debs are kept in CACHE/.debs (CACHE = OUTDIR's
# parent), so a rebuild downloads only what changed. Host tools: mmdebstrap, e2fsprogs, flock
# (scripts/setup-host.sh installs them). Run as root (mmdebstrap's root mode, chroot).
# Atomic: built in CACHE/.build.XXXX and renamed to OUTDIR at the end; builders serialize on
# CACHE/.debian.lock, and one that finds OUTDIR built by another while it waited does nothing.
set -euo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 OUTDIR" >&2
  exit 2
fi
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=$(realpath -m "$1")
CACHE=$(dirname "$OUT")
DISK_SIZE=2G
CMDLINE="root=/dev/vda rw console=ttyS0 panic=-1"
SUITE=bookworm
PACKAGES=systemd-sysv,udev,dbus,kmod,linux-image-cloud-amd64,initramfs-tools,python3,procps,busybox

[ -d "$OUT" ] && exit 0
mkdir -p "$CACHE/.debs"
chmod 0755 "$CACHE"
exec 9>"$CACHE/.debian.lock"
flock 9
[ -d "$OUT" ] && exit 0                 # another builder made it while we waited
rm -rf "$CACHE"/.build.*                # leftovers of a killed build (we hold the lock)

SOURCES=/etc/apt/sources.list.d/debian.sources
[ -f "$SOURCES" ] || SOURCES=/etc/apt/sources.list
start=$(date +%s)
TMP=$(mktemp -d "$CACHE/.build.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
R=$TMP/root
LOG=$TMP/build.log
echo "debian/build.sh: building the Debian 12 guest into $OUT (~2 min)" >&2
if ! mmdebstrap --variant=minbase --include="$PACKAGES" \
    --skip=essential/unlink --skip=download/empty \
    --setup-hook='mkdir -p "$1"/var/cache/apt/archives/' \
    --setup-hook="sync-in $CACHE/.debs /var/cache/apt/archives/" \
    --essential-hook="$HERE/hooks.sh essential \"\$1\"" \
    --customize-hook="$HERE/hooks.sh customize \"\$1\"" \
    --customize-hook="sync-out /var/cache/apt/archives $CACHE/.debs" \
    "$SUITE" "$R" "$SOURCES" >"$LOG" 2>&1; then
  tail -n 30 "$LOG" >&2
  echo "debian/build.sh: mmdebstrap failed (log above)" >&2
  exit 1
fi

KVER=$(ls "$R/lib/modules" | head -n1)
for f in "vmlinuz-$KVER" "initrd.img-$KVER"; do
  [ -s "$R/boot/$f" ] || { echo "debian/build.sh: no /boot/$f in the image" >&2; exit 1; }
done
mkdir -p "$TMP/out"
cp "$R/boot/vmlinuz-$KVER" "$TMP/out/vmlinuz"
cp "$R/boot/initrd.img-$KVER" "$TMP/out/initrd.img"
echo "$KVER" >"$TMP/out/kernel-version"
echo "$CMDLINE" >"$TMP/out/cmdline"
cp "$R/opt/cltest/packages.txt" "$TMP/out/packages.txt"
truncate -s "$DISK_SIZE" "$TMP/out/disk.raw"
# 4 KiB blocks: a page-cache page then holds exactly one 4 KiB-aligned disk chunk (dedup).
mkfs.ext4 -q -F -b 4096 -L cltest-debian -d "$R" "$TMP/out/disk.raw"
chmod 0644 "$TMP/out"/*
chmod 0755 "$TMP/out"
mv "$TMP/out" "$OUT"
used=$(du -m "$OUT/disk.raw" | cut -f1)
echo "debian/build.sh: guest $KVER built in $OUT in $(( $(date +%s) - start )) s (disk: ${used} MiB used of $DISK_SIZE)" >&2
