#!/usr/bin/env bash
# Prepare this machine for OpenStack++: Debian packages, /dev/kvm permissions, libvirt daemons.
# Idempotent: installs only what is missing and starts only what is not running.
set -euo pipefail

PACKAGES=(libvirt-daemon-system libvirt-clients qemu-system-x86 qemu-utils libvirt-dev pkg-config
          busybox-static cpio kmod e2fsprogs xz-utils zstd curl)
# openssh-server: tests/fab run `fab install` over a private sshd on 127.0.0.1:2222.
PACKAGES+=(openssh-server)
# mmdebstrap: stack/guest/debian/build.sh (the Debian 12 test guest).
PACKAGES+=(mmdebstrap)
# python3: the libvirt hook below (/usr/bin/python3, standard library only).
PACKAGES+=(python3)
PACKAGES+=(${EXTRA_PACKAGES:-})

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup-host: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Without udev /dev/kvm is root-only, and libvirt then re-probes QEMU on every call (4-8 s each).
if [ -e /dev/kvm ]; then
  chgrp kvm /dev/kvm 2>/dev/null || true
  chmod 0660 /dev/kvm 2>/dev/null || true
fi

# The libvirt hook that links a base's RAM file where QEMU maps a restored domain's RAM
# (cloudlet_compute/host/ramhook.py, behind the shell filter scripts/cloudlet-ram-hook.sh;
# doc/overlay-format.md). libvirtd looks for hooks when it starts and on SIGHUP (no restart
# needed): signal it only when the hook is new or changed.
REPO="$(cd "$(dirname "$0")/.." && pwd)"
hook_changed=0
for pair in "$REPO/cloudlet_compute/host/ramhook.py:/etc/libvirt/hooks/cloudlet-ram.py" \
            "$REPO/scripts/cloudlet-ram-hook.sh:/etc/libvirt/hooks/qemu.d/cloudlet-ram"; do
  src=${pair%%:*} dest=${pair#*:}
  if ! cmp -s "$src" "$dest"; then
    install -D -m 0755 "$src" "$dest"
    hook_changed=1
    echo "setup-host: installed $dest"
  fi
done

# No systemd here: start the daemons directly when they are not running.
pgrep -x virtlogd >/dev/null || virtlogd -d
if pgrep -x libvirtd >/dev/null; then
  if [ "$hook_changed" = 1 ] && [ -s /run/libvirtd.pid ]; then
    kill -HUP "$(cat /run/libvirtd.pid)"
    sleep 1
  fi
else
  libvirtd -d
fi
for _ in $(seq 1 50); do
  virsh -c qemu:///system version >/dev/null 2>&1 && exit 0
  sleep 0.2
done
echo "setup-host: libvirtd does not answer on qemu:///system" >&2
exit 1
