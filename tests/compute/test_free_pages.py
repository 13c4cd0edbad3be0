"""A deleted, trimmed file does not grow the overlay (issue 13 item 7), on real libvirt: the
run of ``bench/freepages.py``, smaller (a 64 MiB file in the tiny guest at 256 MiB of RAM and
128 MiB of disk; the bench's run is the issue's 256 MiB file)."""

import xml.etree.ElementTree as ET

import pytest

from bench import freepages
from cloudlet_compute.host import domxml
from stack.guest import guest
from tests.compute.test_story import assert_same_guest
from tests.conftest import scratch_root

MiB = 1 << 20
FILE_MIB = 64


@pytest.fixture(scope="module")
def case(libvirt_conn):
    return freepages.measure(libvirt_conn, scratch_root("freepages"), file_mib=FILE_MIB,
                             memory_mib=256, disk_mib=128)


def test_deleted_trimmed_file_adds_less_than_8_mib(case):
    assert case["plain_bytes"] > 16 * MiB      # the customization's 20 MiB of random data
    assert case["growth_bytes"] < 8 * MiB, case
    trimmed = int(case["fstrim"].split()[1])           # "/mnt: 506650624 bytes trimmed"
    assert trimmed >= FILE_MIB * MiB, case["fstrim"]


def test_synthesis_of_the_overlay_after_the_trim_is_the_customized_guest(case):
    assert_same_guest(case["expected"], case["observed"])


def test_instance_disks_pass_discards_through():
    xml = guest.domain_xml("d", "/w", "/w/disk.qcow2", "qcow2")
    disk = ET.fromstring(domxml.for_instance(xml, "n", "/i/disk.qcow2", "/i", "b")).find(
        "devices/disk")
    assert disk.find("driver").attrib == {"name": "qemu", "type": "qcow2", "discard": "unmap",
                                          "detect_zeroes": "unmap"}
    assert disk.find("source").get("file") == "/i/disk.qcow2"
