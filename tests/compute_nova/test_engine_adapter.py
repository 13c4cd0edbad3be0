"""engine_adapter's nova placement: identity, disk, and nova's devices in the base's XML."""

import xml.etree.ElementTree as ET

import pytest

from cloudlet_compute import domxml
from cloudlet_compute.errors import ConflictError
from cloudlet_compute.nova import engine_adapter

BASE_XML = """<domain type='qemu'><name>base</name><uuid>00000000-0000-0000-0000-000000000001</uuid>
<memory>262144</memory><devices>
<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='/b/disk.raw'/>
<target dev='vda' bus='virtio'/></disk>
<interface type='network'><mac address='52:54:00:00:00:01'/><source network='default'/>
<model type='virtio'/><address type='pci' domain='0x0000' bus='0x00' slot='0x03' function='0x0'/></interface>
<serial type='unix'><source mode='bind' path='/b/cmd.sock'/><target port='0'/></serial>
</devices></domain>"""

NOVA_XML = """<domain type='qemu'><name>instance-00000001</name>
<uuid>3f2a1b7c-1111-4222-8333-444455556666</uuid><memory>262144</memory><devices>
<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
<source file='{dir}/disk'/><target dev='vda' bus='virtio'/></disk>
<interface type='ethernet'><mac address='fa:16:3e:aa:bb:cc'/><model type='virtio'/>
<target dev='tap1234'/><address type='pci' domain='0x0000' bus='0x00' slot='0x07' function='0x0'/></interface>
<serial type='tcp'><source mode='bind' host='127.0.0.1' service='10000'/><target port='0'/></serial>
</devices></domain>"""


def test_placement_for_nova(tmp_path):
    nova_xml = NOVA_XML.format(dir=tmp_path)
    (tmp_path / "disk").write_bytes(b"nova's fresh qcow2")
    placement = engine_adapter.placement_for_nova(nova_xml)
    assert not (tmp_path / "disk").exists()  # the engine makes its own over the cached base
    assert (placement.name, placement.uuid, placement.path, placement.disk_path) == (
        "instance-00000001", "3f2a1b7c-1111-4222-8333-444455556666", str(tmp_path),
        str(tmp_path / "disk"))
    assert not placement.owns_dir

    root = ET.fromstring(placement.domain_xml(BASE_XML, "ab" * 32))
    assert root.findtext("name") == "instance-00000001"
    assert root.findtext("uuid") == "3f2a1b7c-1111-4222-8333-444455556666"
    assert root.find("devices/disk/source").get("file") == str(tmp_path / "disk")
    nic = root.find("devices/interface")
    assert nic.get("type") == "ethernet"
    assert nic.find("mac").get("address") == "fa:16:3e:aa:bb:cc"
    assert nic.find("target").get("dev") == "tap1234"
    assert nic.find("address").get("slot") == "0x03"  # the base's PCI slot, not nova's
    assert len(root.findall("devices/interface")) == 1
    assert root.find("devices/serial").get("type") == "tcp"
    assert domxml.base_id_of(ET.tostring(root, encoding="unicode")) == "ab" * 32


def test_more_nova_nics_than_the_base_has(tmp_path):
    two = NOVA_XML.format(dir=tmp_path).replace(
        "</interface>", "</interface><interface type='ethernet'><mac address='fa:16:3e:00:00:02'/>"
        "<target dev='tap2'/></interface>", 1)
    with pytest.raises(ConflictError, match="2 network interfaces, the base VM has 1"):
        engine_adapter.nova_devices_hook(two)(BASE_XML)
