#!/usr/bin/env bash
# mmdebstrap hooks of stack/guest/debian/build.sh:  hooks.sh essential|customize ROOT
#   essential  (after the essential packages, before the kernel and the rest are installed):
#              fstab and initramfs-tools' settings, so the initrd gets ext4, its fsck and the
#              virtio disk driver without probing the build host's disks.
#   customize  (everything installed): our files (rootfs/), the channel's command loop
#              (stack/guest/init.sh), services enabled/masked, an empty machine-id, and the
#              application .debs staged under /opt/cltest/debs/APP/ (resolved against the
#              image: exactly what `dpkg -i /opt/cltest/debs/APP/*.deb` needs there).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STAGE=$1
R=$2
APPS=(nginx-light python3-numpy)

case "$STAGE" in
essential)
  install -D -m 0644 "$HERE/rootfs/etc/fstab" "$R/etc/fstab"
  for f in etc/initramfs-tools/conf.d/cltest.conf usr/share/initramfs-tools/modules.d/cltest; do
    install -D -m 0644 "$HERE/rootfs/$f" "$R/$f"
  done
  ;;
customize)
  cp -a --no-preserve=ownership "$HERE/rootfs/." "$R/"
  install -D -m 0755 "$HERE/../init.sh" "$R/usr/local/lib/cltest/init.sh"
  chroot "$R" systemctl enable -q systemd-networkd.service cltest-channel.service \
    cltest-counter.service
  # Timers and services that grab the dpkg lock or do disk work behind the tests' back
  # (e2scrub_reap alone took 9.5 s of the boot); wait-online would
  # hold nginx (After=network-online.target) for 2 min in a guest without a NIC; firstboot
  # could prompt on the console because machine-id is empty.
  chroot "$R" systemctl mask -q apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer \
    e2scrub_all.timer e2scrub_reap.service fstrim.timer systemd-networkd-wait-online.service \
    systemd-firstboot.service
  : >"$R/etc/machine-id"
  rm -f "$R/var/lib/dbus/machine-id"
  for app in "${APPS[@]}"; do
    d=/opt/cltest/debs/$app
    mkdir -p "$R$d/partial"
    chroot "$R" apt-get install -qq --download-only --no-install-recommends -y \
      -o Dir::Cache::archives="$d/" "$app" >/dev/null
    rm -rf "$R$d/partial" "$R$d/lock"
    ls "$R$d"/*.deb >/dev/null
  done
  chroot "$R" dpkg-query -W -f '${Package} ${Version}\n' >"$R/opt/cltest/packages.txt"
  ;;
*)
  echo "usage: $0 essential|customize ROOT" >&2
  exit 2 ;;
esac
