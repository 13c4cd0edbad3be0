"""Host taps of a guest's NICs: bring up a tap its switch has left down.

With Open vSwitch's userspace datapath, os-vif delegates the tap to libvirt: nova's NIC is an
``<interface type='ethernet'>`` whose tap libvirt creates, gives a MAC and sets UP, while the
OVS port waits for it. When the tap appears, ovs-vswitchd adds it to the datapath and turns
IFF_PROMISC on from the flags it had cached (netdev-linux ``update_flags``: cached flags |
PROMISC, written back whole). If libvirt's UP lands between that read and that write, the
write takes the UP away: the tap stays ``PROMISC`` but down and drops every frame the guest
sends, so the guest never gets its DHCP lease. Hot-plugged NICs (restore, synthesis, handoff)
and booted guests are both exposed; ``settle`` closes the race after the fact: once the
switch has taken a tap (PROMISC set, so its one flag write is done), a tap that is not UP is
brought up.
"""

import os
import time
from xml.etree import ElementTree as ET

from oslo_log import log as logging

LOG = logging.getLogger(__name__)

SYSFS_NET = "/sys/class/net"
IFF_UP = 0x1
IFF_PROMISC = 0x100
SETTLE_TIMEOUT = 10.0
POLL_INTERVAL = 0.05


def ethernet_taps(domain_xml):
    """Names of the host taps behind the domain's ``type='ethernet'`` NICs."""
    names = []
    for nic in ET.fromstring(domain_xml).iter("interface"):
        target = nic.find("target")
        if nic.get("type") == "ethernet" and target is not None and target.get("dev"):
            names.append(target.get("dev"))
    return names


def _flags(name, sysfs):
    """The device's interface flags, or None when there is no such device."""
    try:
        with open(os.path.join(sysfs, name, "flags")) as f:
            return int(f.read().strip(), 16)
    except FileNotFoundError:
        return None


def _enable_with_privsep(name):
    import nova.privsep.linux_net
    nova.privsep.linux_net.set_device_enabled(name)


def settle(names, enable=_enable_with_privsep, timeout=SETTLE_TIMEOUT, sysfs=SYSFS_NET):
    """Wait until each tap in ``names`` is taken by its switch; bring up any left down.

    Returns the taps that had to be brought up. A tap that does not exist is skipped (not
    ours to manage); one the switch has not taken within ``timeout`` is logged and left.
    """
    pending = list(names)
    enabled = []
    deadline = time.monotonic() + timeout
    while pending:
        for name in list(pending):
            flags = _flags(name, sysfs)
            if flags is None or flags & IFF_PROMISC:
                pending.remove(name)
            if flags is not None and flags & IFF_PROMISC and not flags & IFF_UP:
                LOG.warning("tap %s was left down when its switch took it (flags %#x); "
                            "bringing it up", name, flags)
                enable(name)
                enabled.append(name)
        if pending and time.monotonic() >= deadline:
            LOG.warning("taps %s not taken by their switch within %.0f s",
                        ", ".join(pending), timeout)
            break
        if pending:
            time.sleep(POLL_INTERVAL)
    for name in enabled:
        flags = _flags(name, sysfs)
        if flags is not None and not flags & IFF_UP:
            LOG.error("tap %s is still down after bringing it up (flags %#x)", name, flags)
    return enabled
