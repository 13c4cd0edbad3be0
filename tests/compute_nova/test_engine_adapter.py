"""engine_adapter's nova placement: identity, disk, and nova's devices in the base's XML."""

import xml.etree.ElementTree as ET
from types import SimpleNamespace

import pytest

from cloudlet_compute.host import domxml
from cloudlet_compute.nova import engine_adapter

BASE_XML = """<domain type='qemu'><name>base</name><uuid>00000000-0000-0000-0000-000000000001</uuid>
<memory>262144</memory><os><type arch='x86_64' machine='pc-i440fx-7.2'>hvm</type>
<kernel>/b/vmlinuz</kernel><initrd>/b/initrd.img</initrd><cmdline>console=ttyS0</cmdline>
</os><devices>
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



def base_vm(kernel=None, initrd=None):
    """What the placement reads of a ``bases.BaseVM``."""
    return SimpleNamespace(id="ab" * 32, boot_files=lambda: {"kernel": kernel, "initrd": initrd})


NOVA_OS = """<os><type arch='x86_64' machine='pc-i440fx-9.0'>hvm</type><kernel>{dir}/kernel</kernel>
<initrd>{dir}/ramdisk</initrd><cmdline>console=ttyS0 panic=-1</cmdline></os><devices>"""


def test_restored_domain_boots_novas_kernel_else_the_stores(tmp_path):
    """nova fetched the image's kernel_id/ramdisk_id into the instance directory: the restored
    domain boots those (the next hard reboot boots them too); else the base store's copies.
    The base's machine type stays (the saved memory needs it)."""
    store = base_vm("/store/kernel", "/store/initrd")
    nova_xml = NOVA_XML.replace("<devices>", NOVA_OS, 1).format(dir=tmp_path)
    root = ET.fromstring(engine_adapter.placement_for_nova(nova_xml).domain_xml(BASE_XML, store))
    assert (root.findtext("os/kernel"), root.findtext("os/initrd"),
            root.findtext("os/cmdline")) == (str(tmp_path / "kernel"),
                                             str(tmp_path / "ramdisk"), "console=ttyS0 panic=-1")
    assert root.find("os/type").get("machine") == "pc-i440fx-7.2"

    placement = engine_adapter.placement_for_nova(NOVA_XML.format(dir=tmp_path))
    root = ET.fromstring(placement.domain_xml(BASE_XML, store))
    assert (root.findtext("os/kernel"), root.findtext("os/initrd"),
            root.findtext("os/cmdline")) == ("/store/kernel", "/store/initrd", "console=ttyS0")
    # A base without copies (made before bases kept them) keeps the paths it was made with.
    root = ET.fromstring(placement.domain_xml(BASE_XML, base_vm()))
    assert root.findtext("os/kernel") == "/b/vmlinuz"


def test_placement_for_nova(tmp_path):
    nova_xml = NOVA_XML.format(dir=tmp_path)
    (tmp_path / "disk").write_bytes(b"nova's fresh qcow2")
    placement = engine_adapter.placement_for_nova(nova_xml)
    assert not (tmp_path / "disk").exists()  # the engine makes its own over the cached base
    assert (placement.name, placement.uuid, placement.path, placement.disk_path) == (
        "instance-00000001", "3f2a1b7c-1111-4222-8333-444455556666", str(tmp_path),
        str(tmp_path / "disk"))
    assert not placement.owns_dir

    root = ET.fromstring(placement.domain_xml(BASE_XML, base_vm()))
    assert root.findtext("name") == "instance-00000001"
    assert root.findtext("uuid") == "3f2a1b7c-1111-4222-8333-444455556666"
    assert root.find("devices/disk/source").get("file") == str(tmp_path / "disk")
    nic = root.find("devices/interface")  # the snapshot's NIC: same device, disconnected
    assert len(root.findall("devices/interface")) == 1
    assert nic.get("type") == "ethernet"
    assert nic.find("source") is None and nic.find("target") is None
    assert nic.find("mac").get("address") == "52:54:00:00:00:01"
    assert nic.find("model").get("type") == "virtio"
    assert nic.find("address").get("slot") == "0x03"
    assert nic.find("link").get("state") == "down"
    assert nic.find("alias").get("name") == "ua-cloudlet-snapshot-nic0"
    assert root.find("devices/serial").get("type") == "tcp"
    assert domxml.base_id_of(ET.tostring(root, encoding="unicode")) == "ab" * 32


TWO_NICS = NOVA_XML.replace(
    "</interface>", "</interface><interface type='ethernet'><mac address='fa:16:3e:00:00:02'/>"
    "<target dev='tap2'/><alias name='net1'/></interface>", 1)


def test_nova_nic_xmls_without_addresses(tmp_path):
    nics = [ET.fromstring(x) for x in engine_adapter.nova_nic_xmls(TWO_NICS.format(dir=tmp_path))]
    assert [n.find("mac").get("address") for n in nics] == ["fa:16:3e:aa:bb:cc",
                                                            "fa:16:3e:00:00:02"]
    assert [n.find("target").get("dev") for n in nics] == ["tap1234", "tap2"]
    assert all(n.find("address") is None and n.find("alias") is None for n in nics)


class FakeDom:
    def __init__(self, xml):
        self.xml, self.calls = xml, []

    def name(self):
        return "instance-00000001"

    def XMLDesc(self, flags=0):
        return self.xml

    def attachDeviceFlags(self, xml, flags):
        self.calls.append(("attach", ET.fromstring(xml).find("mac").get("address"), flags))

    def detachDeviceAlias(self, alias, flags):
        self.calls.append(("detach", alias, flags))


@pytest.fixture
def libvirt_consts():
    """LIVE | CONFIG (``domains`` imports libvirt; nothing else of it is used here)."""
    import libvirt
    return libvirt.VIR_DOMAIN_AFFECT_LIVE | libvirt.VIR_DOMAIN_AFFECT_CONFIG


def test_plug_replaces_snapshot_nics_by_nova_nics(tmp_path, libvirt_consts):
    """More nova NICs than the base had is fine: the snapshot's are detached, nova's attached."""
    restored = engine_adapter.nova_devices_hook(TWO_NICS.format(dir=tmp_path))(BASE_XML)
    dom = FakeDom(restored)
    engine_adapter.plug_nova_nics(dom, TWO_NICS.format(dir=tmp_path))
    both = libvirt_consts
    assert dom.calls == [("detach", "ua-cloudlet-snapshot-nic0", both),
                         ("attach", "fa:16:3e:aa:bb:cc", both),
                         ("attach", "fa:16:3e:00:00:02", both)]


def test_plug_without_nova_nics_only_detaches(tmp_path, libvirt_consts):
    no_nic = NOVA_XML.format(dir=tmp_path)
    no_nic = no_nic[:no_nic.index("<interface")] + no_nic[no_nic.index("</interface>") + 12:]
    dom = FakeDom(engine_adapter.nova_devices_hook(no_nic)(BASE_XML))
    engine_adapter.plug_nova_nics(dom, no_nic)
    assert dom.calls == [("detach", "ua-cloudlet-snapshot-nic0", libvirt_consts)]


def test_overlay_url_policy_checks_schemes_and_options():
    """One policy of the ``[cloudlet] overlay_*`` options serves nova-api and nova-compute."""
    policy = engine_adapter.OverlayURLPolicy(["http", "https"], [], ["10.0.0.0/8"], ["80"], 600)
    assert policy.check_scheme("https://overlays.example/o.zip") == "https"
    assert policy.fetch.ports == frozenset({80})
    assert policy.fetch.time_limit == 600
    assert engine_adapter.OverlayURLPolicy(["http"], [], [], [], 0).fetch.time_limit is None
    with pytest.raises(engine_adapter.RefusedScheme) as err:
        policy.check_scheme("file:///etc/passwd")
    assert str(err.value) == ("overlay_url scheme 'file' is not allowed by this cloud "
                              "(allowed: http, https)")
    with pytest.raises(ValueError, match="^overlay_url_schemes: unknown ftp$"):
        engine_adapter.OverlayURLPolicy(["http", "ftp"], [], [], [])
    with pytest.raises(ValueError, match="^overlay_allowed_ports: "):
        engine_adapter.OverlayURLPolicy(["http"], [], [], ["eighty"])


def test_synthesis_progress_reaches_nova_in_steps(monkeypatch):
    """The engine's fetch progress becomes nova's percent, in steps of 5, once its total is
    known."""
    from cloudlet_compute.read import synthesis

    def synthesize(conn, store, location, placement, progress_factory, **kwargs):
        fetched = progress_factory("fetching", None)
        fetched.update(10)                   # the meta: the total is not known yet
        fetched.total = 1000
        for _ in range(33):
            fetched.update(30)
        return {}
    monkeypatch.setattr(synthesis, "synthesize", synthesize)
    monkeypatch.setattr(engine_adapter, "placement_for_nova",
                        lambda xml: SimpleNamespace(name="instance-1"))
    monkeypatch.setattr(engine_adapter, "_finish_restore", lambda *args: None)
    seen = []
    engine_adapter.synthesize_into(None, None, "http://o/ov.zip", "b", "<domain/>",
                                   progress=seen.append)
    assert seen == [7, 13, 19, 25, 31, 37, 43, 49, 55, 61, 67, 73, 79, 85, 91, 97, 100]
