#!/bin/sh
# The libvirt qemu hook of OpenStack++, installed by scripts/setup-host.sh as
# /etc/libvirt/hooks/qemu.d/cloudlet-ram. libvirt runs every qemu hook at each step of each
# domain start and stop; only "prepare begin" has work, done by cloudlet_compute/host/ramhook.py
# (installed beside it as /etc/libvirt/hooks/cloudlet-ram.py): Python starts only then.
[ "$2 $3" = "prepare begin" ] || exit 0
exec /usr/bin/python3 -I -S /etc/libvirt/hooks/cloudlet-ram.py "$@"
