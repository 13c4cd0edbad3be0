"""Which domains ``base create`` and ``overlay create`` accept as sources, from the domain XML
alone (``domxml.source_problem``); the same domains on real libvirt: ``test_sources.py``."""

import xml.etree.ElementTree as ET

import pytest

from cloudlet_compute.host import domxml
from tests.support import sources


def source_xml(tmp_path, kind=None, disk_format="qcow2"):
    return sources.domain_xml("cl-src", tmp_path, tmp_path / ("disk." + disk_format),
                              disk_format, kind)


@pytest.mark.parametrize("kind", sorted(sources.REFUSALS))
def test_refused_with_one_line_naming_it(tmp_path, kind):
    problem = domxml.source_problem(source_xml(tmp_path, kind))
    assert problem.startswith("domain cl-src cannot be captured: "), problem
    assert sources.REFUSALS[kind][1] in problem
    assert "\n" not in problem and str(tmp_path) not in problem


@pytest.mark.parametrize("disk_format", ["raw", "qcow2"])
def test_file_disk_accepted(tmp_path, disk_format):
    assert domxml.source_problem(source_xml(tmp_path, disk_format=disk_format)) is None


def test_accepted_variants(tmp_path):
    """KVM, 4 vCPUs, 8 GiB, a qcow2 over a chain of files, a cdrom beside the disk."""
    root = ET.fromstring(source_xml(tmp_path))
    root.set("type", "kvm")
    root.find("vcpu").text = "4"
    root.find("memory").text, root.find("memory").attrib["unit"] = "8", "GiB"
    disk = root.find("devices/disk")
    disk.append(ET.fromstring(
        "<backingStore type='file'><format type='qcow2'/><source file='/b/mid.qcow2'/>"
        "<backingStore type='file'><format type='raw'/><source file='/b/base.raw'/>"
        "<backingStore/></backingStore></backingStore>"))
    root.find("devices").append(ET.fromstring(
        "<disk type='file' device='cdrom'><source file='/b/seed.iso'/><target dev='sda'/>"
        "</disk>"))
    xml = ET.tostring(root, encoding="unicode")
    assert domxml.source_problem(xml) is None
    assert domxml.file_disk(xml) == (str(tmp_path / "disk.qcow2"), "qcow2")


def test_no_disk_refused(tmp_path):
    root = ET.fromstring(source_xml(tmp_path))
    root.find("devices").remove(root.find("devices/disk"))
    assert "it has 0 disks" in domxml.source_problem(ET.tostring(root, encoding="unicode"))
