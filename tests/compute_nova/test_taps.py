"""taps.settle: a tap its switch took with UP lost is brought up; others are left alone."""

import os
import subprocess
import threading
import uuid
from unittest import mock

import pytest

from cloudlet_compute.nova import driver
from cloudlet_compute.nova import taps

UP, BROADCAST, MULTICAST, PROMISC = 0x1, 0x2, 0x1000, 0x100
TAKEN_DOWN = BROADCAST | MULTICAST | PROMISC        # what the failing CI run showed
TAKEN_UP = TAKEN_DOWN | UP
FRESH = BROADCAST | MULTICAST                       # created, not yet in the switch

DOMAIN = """<domain><devices>
  <interface type='ethernet'><mac address='fa:16:3e:00:00:01'/><target dev='tapaaaa'/></interface>
  <interface type='bridge'><source bridge='br0'/><target dev='vnet7'/></interface>
  <interface type='ethernet'><mac address='fa:16:3e:00:00:02'/></interface>
</devices></domain>"""


def write_flags(sysfs, name, flags):
    os.makedirs(os.path.join(sysfs, name), exist_ok=True)
    with open(os.path.join(sysfs, name, "flags"), "w") as f:
        f.write("%#06x\n" % flags)


def test_ethernet_taps_are_the_targets_of_ethernet_nics():
    assert taps.ethernet_taps(DOMAIN) == ["tapaaaa"]


def test_a_tap_taken_down_is_brought_up_and_an_up_one_left_alone(tmp_path):
    write_flags(tmp_path, "tapdown", TAKEN_DOWN)
    write_flags(tmp_path, "tapup", TAKEN_UP)
    enable = mock.Mock()
    assert taps.settle(["tapdown", "tapup"], enable=enable, sysfs=tmp_path) == ["tapdown"]
    enable.assert_called_once_with("tapdown")


def test_it_waits_for_the_switch_before_judging(tmp_path):
    """A fresh tap is down only because the switch has not taken it yet: no enable then."""
    write_flags(tmp_path, "tapslow", FRESH)
    enable = mock.Mock()
    timer = threading.Timer(0.3, write_flags, (tmp_path, "tapslow", TAKEN_DOWN))
    timer.start()
    try:
        assert taps.settle(["tapslow"], enable=enable, sysfs=tmp_path) == ["tapslow"]
    finally:
        timer.join()
    enable.assert_called_once_with("tapslow")


def test_missing_and_never_taken_taps_are_left(tmp_path):
    write_flags(tmp_path, "tapalone", FRESH)
    enable = mock.Mock()
    assert taps.settle(["tapgone", "tapalone"], enable=enable, timeout=0.2,
                       sysfs=tmp_path) == []
    enable.assert_not_called()


def test_create_guest_settles_the_taps_of_nova_xml():
    self = mock.Mock(spec=driver.CloudletDriver)
    with mock.patch.object(taps, "settle") as settle:
        guest = driver.CloudletDriver._create_guest(self, None, DOMAIN, mock.sentinel.inst)
    assert guest is self._start_guest.return_value
    settle.assert_called_once_with(["tapaaaa"])


@pytest.fixture
def real_tap():
    """A real host tap in the state the race leaves: in promiscuous mode, administratively down."""
    name = "tapct%s" % uuid.uuid4().hex[:6]
    subprocess.run(["ip", "tuntap", "add", "dev", name, "mode", "tap"], check=True)
    try:
        subprocess.run(["ip", "link", "set", name, "promisc", "on"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "link", "delete", name], check=True)


def test_a_real_tap_left_down_is_brought_up_by_nova_s_own_command(real_tap):
    import nova.privsep.linux_net
    # The privsep entrypoint's body (the daemon is nova-compute's, not this test's).
    enabled = taps.settle([real_tap], enable=nova.privsep.linux_net._set_device_enabled_inner)
    assert enabled == [real_tap]
    with open("/sys/class/net/%s/flags" % real_tap) as f:
        assert int(f.read(), 16) & UP
