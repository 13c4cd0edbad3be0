#!/usr/bin/env bash
# Build the tiny real test guest into OUTDIR, offline from Debian packages (no install):
#   OUTDIR/vmlinuz         Debian cloud kernel (the package linux-image-cloud-amd64 depends on)
#   OUTDIR/initrd.img      busybox-static + virtio modules (virtio_blk/pci/console/net + deps,
#                          resolved with depmod/modprobe --show-depends) + stack/guest/init.sh
#   OUTDIR/disk.raw        64 MiB ext4 with 4 KiB blocks (mkfs.ext4 -d), holding /hello.txt
#   OUTDIR/kernel-version  e.g. 6.1.0-56-cloud-amd64
# Debian packages are fetched with `apt-get download` into OUTDIR/.cache (reused on reruns) and
# unpacked with dpkg-deb -x. Host tools used: apt-get, dpkg-deb, cpio, kmod (depmod/modprobe),
# e2fsprogs (mkfs.ext4 -d), gzip, flock; scripts/setup-host.sh installs them.
# Idempotent: does nothing when all outputs are newer than this script and init.sh.
# Atomic: everything is built in a temporary directory inside OUTDIR and renamed into place
# (disk.raw last); concurrent runs serialize on OUTDIR/.lock.
set -euo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 OUTDIR" >&2
  exit 2
fi
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
INIT_SH=$HERE/init.sh
SELF=$HERE/build.sh
OUT=$1
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
OUTPUTS=(vmlinuz initrd.img kernel-version disk.raw)

up_to_date() {
  local f
  for f in "${OUTPUTS[@]}"; do
    [ -s "$OUT/$f" ] && [ "$OUT/$f" -nt "$SELF" ] && [ "$OUT/$f" -nt "$INIT_SH" ] || return 1
  done
}
up_to_date && exit 0

exec 9>"$OUT/.lock"
flock 9
up_to_date && exit 0          # another run built it while we waited
rm -rf "$OUT"/.build.*        # leftovers of a killed run (we hold the lock)

start=$(date +%s.%N)
CACHE=$OUT/.cache
mkdir -p "$CACHE"
chmod 0755 "$OUT"
TMP=$(mktemp -d "$OUT/.build.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

# --- fetch ------------------------------------------------------------------------------------
apt_resolve() {  # print the concrete kernel package name
  apt-cache depends linux-image-cloud-amd64 2>/dev/null |
    awk '/Depends: linux-image-[0-9]/ {print $2; exit}'
}
fetch() {  # PKG -> path of its .deb in the cache
  local pkg=$1 deb
  deb=$(ls -t "$CACHE/${pkg}"_*.deb 2>/dev/null | head -n1 || true)
  if [ -z "$deb" ]; then
    (cd "$CACHE" && apt-get download -q -o APT::Sandbox::User=root "$pkg" >/dev/null 2>&1) || {
      apt-get update -qq >/dev/null
      (cd "$CACHE" && apt-get download -q -o APT::Sandbox::User=root "$pkg" >/dev/null)
    }
    deb=$(ls -t "$CACHE/${pkg}"_*.deb | head -n1)
  fi
  echo "$deb"
}

# Use a cached kernel if there is one (reruns stay offline); else ask apt which one is current.
KPKG=$(ls -t "$CACHE"/linux-image-*-cloud-amd64_*.deb 2>/dev/null | head -n1 | xargs -r basename |
       cut -d_ -f1 || true)
if [ -z "$KPKG" ]; then
  KPKG=$(apt_resolve)
  if [ -z "$KPKG" ]; then
    apt-get update -qq >/dev/null
    KPKG=$(apt_resolve)
  fi
  [ -n "$KPKG" ] || { echo "build.sh: cannot resolve linux-image-cloud-amd64" >&2; exit 1; }
fi
KDEB=$(fetch "$KPKG")
BBDEB=$(fetch busybox-static)

# --- unpack -----------------------------------------------------------------------------------
mkdir -p "$TMP/k" "$TMP/bb"
dpkg-deb -x "$KDEB" "$TMP/k"
dpkg-deb -x "$BBDEB" "$TMP/bb"
KVER=$(ls "$TMP/k/lib/modules" | head -n1)
[ -f "$TMP/k/boot/vmlinuz-$KVER" ] || { echo "build.sh: no vmlinuz in $KDEB" >&2; exit 1; }
BUSYBOX=$TMP/bb/bin/busybox
[ -x "$BUSYBOX" ] || BUSYBOX=$(find "$TMP/bb" -name busybox -type f | head -n1)

# --- initramfs --------------------------------------------------------------------------------
R=$TMP/root
mkdir -p "$R"/{bin,sbin,etc,proc,sys,dev,run,mnt,tmp,var,lib/modules/"$KVER"}
cp "$BUSYBOX" "$R/bin/busybox"
for a in $("$R/bin/busybox" --list); do
  [ "$a" = busybox ] || ln -s busybox "$R/bin/$a"
done
install -m 0755 "$INIT_SH" "$R/init"

depmod -b "$TMP/k" "$KVER"
: >"$R/etc/modules"
for m in virtio_pci virtio_blk virtio_console virtio_net ext4; do
  # One module per call: extra arguments would be taken as module parameters.
  modprobe -d "$TMP/k" -S "$KVER" --show-depends "$m" | while read -r kind path _; do
    [ "$kind" = insmod ] || continue                        # "builtin ext4"
    rel=${path#"$TMP/k"/}
    dst=$R/$rel
    case "$dst" in
      *.ko.xz) dst=${dst%.xz} ;;
      *.ko.zst) dst=${dst%.zst} ;;
      *.ko.gz) dst=${dst%.gz} ;;
    esac
    grep -qxF "/${dst#"$R"/}" "$R/etc/modules" && continue
    mkdir -p "$(dirname "$dst")"
    case "$path" in
      *.ko.xz) xz -dc "$path" >"$dst" ;;
      *.ko.zst) zstd -qdc "$path" >"$dst" ;;
      *.ko.gz) gzip -dc "$path" >"$dst" ;;
      *) cp "$path" "$dst" ;;
    esac
    echo "/${dst#"$R"/}" >>"$R/etc/modules"
  done
done
(cd "$R" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) | gzip -1 >"$TMP/initrd.img"

# --- disk -------------------------------------------------------------------------------------
D=$TMP/disk
mkdir -p "$D"
echo "hello from the cloudlet test disk" >"$D/hello.txt"
truncate -s 64M "$TMP/disk.raw"
# 4 KiB blocks (mke2fs picks 1 KiB for a file system this small): a page-cache page then
# holds exactly one 4 KiB-aligned disk chunk, so the overlay dedups disk against memory.
mkfs.ext4 -q -F -b 4096 -L cltest -d "$D" "$TMP/disk.raw"

cp "$TMP/k/boot/vmlinuz-$KVER" "$TMP/vmlinuz"
echo "$KVER" >"$TMP/kernel-version"
chmod 0644 "$TMP/vmlinuz" "$TMP/initrd.img" "$TMP/disk.raw" "$TMP/kernel-version"

for f in "${OUTPUTS[@]}"; do         # disk.raw last: it is the Makefile's target
  mv -f "$TMP/$f" "$OUT/$f"
done
awk -v s="$start" -v e="$(date +%s.%N)" -v k="$KVER" -v o="$OUT" \
  'BEGIN {printf "build.sh: guest %s built in %s in %.1f s\n", k, o, e - s}' >&2
