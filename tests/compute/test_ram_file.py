"""The base RAM file and the delta-only stream, without libvirt: what QEMU would load over
the file equals the whole rebuilt image; a changed file is not used; forged skeletons and
hook inputs fail cleanly."""

import hashlib
import io
import os
import xml.etree.ElementTree as ET
from array import array

import pytest

from cloudlet_compute.errors import FormatError
from cloudlet_compute.format import deltastream, meta as metamod, migstream, saveimage
from cloudlet_compute.format.package import Package
from cloudlet_compute.format.skeleton import Skeleton
from cloudlet_compute.host import domxml, ramfile, ramhook
from cloudlet_compute.progress import NullProgress
from cloudlet_compute.read.fetch import FileSource
from cloudlet_compute.read.synthesis import read_overlay
from bench import synthetic
from tests.compute.test_format import world  # noqa: F401  (a fixture: base, overlay...)

PAGE = 4096


def load(ram, image):
    """What QEMU's loader makes of the stream in ``image`` over RAM ``ram`` (pc.ram):
    ``(pc.ram bytes, {other block's key: page}, device state after the RAM section)``."""
    ram = bytearray(ram)
    header = saveimage.SaveHeader.parse(image)
    layout = migstream.parse(image, header.stream_offset)
    ram_index, others = layout.block_names().index("pc.ram"), {}
    for key, pos in layout.latest.items():
        page = image[pos:pos + PAGE] if pos >= 0 else bytes(PAGE)
        if key >> 48 == ram_index:
            offset = key & ((1 << 48) - 1)
            ram[offset:offset + PAGE] = page
        else:
            others[key] = page
    return bytes(ram), others, image[layout.ram_end:]


def rebuilt(path, base):
    source = FileSource(path)
    package = Package(source)
    metamod.check_against_base(package.meta, base)
    return source, read_overlay(package, base, NullProgress())


def test_delta_stream_over_the_ram_file_loads_the_customized_vm(world):
    base, overlay, _, image, _ = world
    ram = ramfile.build(base)
    with open(ram.path, "rb") as f:
        ram_bytes = f.read()
    assert hashlib.sha256(ram_bytes).hexdigest() == ram.record["sha256"]
    source, rebuild = rebuilt(overlay, base)
    try:
        header = saveimage.SaveHeader.parse(rebuild.skeleton.data)
        start = header.stream_offset
        assert rebuild.ram_block_size(start, "pc.ram") == ram.size == synthetic.RAM_SIZE
        delta = b"".join(rebuild.delta_stream(start, "pc.ram"))
        full = rebuild.memory_image()
    finally:
        rebuild.close()
        source.close()
    assert full == image
    assert load(ram_bytes, header.encode() + delta) == load(bytes(ram.size), image)
    changed = len(rebuild.slots)
    assert len(delta) < (changed + 8) * (PAGE + 16) + 1024 < len(full) // 4


def test_resume_stream_loads_the_base(world):
    base = world[0]
    ram = ramfile.ensure(base)
    with open(ram.path, "rb") as f, open(base.memory_path, "rb") as m:
        ram_bytes, memory = f.read(), m.read()
    header = saveimage.SaveHeader.parse(memory)
    resumed = header.encode() + ram.resume_stream()
    assert load(ram_bytes, resumed) == load(bytes(ram.size), memory)
    assert len(resumed) - header.stream_offset < 4096      # no page payload left


def test_changed_ram_file_is_not_used_but_rebuilt(world):
    base = world[0]
    ram = ramfile.ensure(base)
    good = ram.record["sha256"]
    with open(ram.path, "r+b") as f:
        f.seek(5 * PAGE)
        f.write(b"\xff")
    assert not ram.unchanged()
    again = ramfile.ensure(base)
    assert again.unchanged() and again.record["stat"] != ram.record["stat"]
    with open(again.path, "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == good
    os.utime(again.path)            # a touch changes the times: not trusted either
    assert not again.unchanged()


def _skeleton(pages, device=b"\x04dev"):
    image = synthetic.memory_image(pages, device)
    header = saveimage.SaveHeader.parse(image)
    layout = migstream.parse(image, header.stream_offset)
    cut, prev = [], 0
    for pos in layout.payload_offsets:
        cut.append(image[prev:pos])
        prev = pos + PAGE
    cut.append(image[prev:])
    positions = array("Q", (p - PAGE * i for i, p in enumerate(layout.payload_offsets)))
    return Skeleton(positions, array("q", [-1] * len(positions)), b"".join(cut)), header


def _rename_second(data):
    """``data`` with its second ``pc.ram`` (the first page record's) renamed."""
    at = data.index(b"\x06pc.ram", data.index(b"\x06pc.ram") + 1)
    return data[:at] + b"\x06pc.rom" + data[at + 7:]


@pytest.mark.parametrize("forge, message", [
    (lambda s: Skeleton(s.positions[1:], s.defaults[1:], s.data), "is not where"),
    (lambda s: Skeleton(s.positions, s.defaults, _rename_second(s.data)), "unknown RAM block"),
    (lambda s: Skeleton(s.positions, s.defaults, s.data[:-40]), "truncated or damaged"),
    (lambda s: Skeleton(s.positions + s.positions[-1:], s.defaults + s.defaults[-1:], s.data),
     "slots, its RAM section holds"),
])
def test_forged_skeleton_gives_one_line_format_error(forge, message):
    pages = {a: bytes([a // PAGE % 251 + 1]) * PAGE for a in range(0, synthetic.RAM_SIZE, 3 * PAGE)}
    skel, header = _skeleton(pages)
    with pytest.raises(FormatError, match=message) as err:
        b"".join(deltastream.delta_stream(forge(skel), header.stream_offset, "pc.ram", {0},
                                          lambda slot: bytes(PAGE)))
    assert "\n" not in str(err.value)


def test_kept_record_after_a_dropped_one_names_its_block():
    pages = {PAGE * i: bytes([i + 1]) * PAGE for i in range(6)}
    skel, header = _skeleton(pages)
    # Slot 0 (named pc.ram) is dropped: kept slot 4 (a CONTINUE record) must name it.
    stream = b"".join(deltastream.delta_stream(skel, header.stream_offset, "pc.ram", {4},
                                               lambda slot: b"\xaa" * PAGE))
    image = header.encode() + stream
    ram, _, _ = load(bytes(synthetic.RAM_SIZE), image)
    assert ram[4 * PAGE:5 * PAGE] == b"\xaa" * PAGE
    assert ram[:4 * PAGE] + ram[5 * PAGE:6 * PAGE] == bytes(5 * PAGE)   # left to the file
    assert stream.count(b"\x06pc.ram") == 2                   # the setup's and slot 4's


def test_xml_gets_and_loses_the_ram_file():
    xml = ("<domain type='qemu'><name>d</name><memory>1024</memory><currentMemory>1024"
           "</currentMemory><devices><memballoon model='none'/></devices></domain>")
    assert domxml.ram_file_refusal(xml) is None
    backed = domxml.with_ram_file(xml, "/b/pc.ram", "/i/" + ramhook.MARKER_NAME)
    root = ET.fromstring(backed)
    assert root.find("memoryBacking/source").get("type") == "file"
    assert root.find("memoryBacking/access").get("mode") == "private"
    assert root.find("metadata/{%s}instance" % domxml.NS).get("ram-file") == "/b/pc.ram"
    assert domxml.ram_file_refusal(backed) is None
    plain = ET.fromstring(domxml.with_ram_file(backed))
    assert plain.find("memoryBacking") is None
    assert plain.find("metadata/*").attrib == {}
    ballooned = xml.replace("model='none'", "model='virtio'")
    assert "balloon" in domxml.ram_file_refusal(ballooned)
    assert ramhook.NS == domxml.NS


def test_hook_links_the_file_and_leaves_a_marker(tmp_path, world):
    base = world[0]
    ram = ramfile.ensure(base)
    marker = str(tmp_path / ramhook.MARKER_NAME)
    domain = ("<domain type='qemu' id='17'><name>%s</name><memory>1</memory><devices><disk>"
              "<source file='%s'/></disk></devices></domain>" % ("n" * 30, tmp_path / "disk"))
    xml = domxml.with_ram_file(domain, ram.path, marker)
    directory = str(tmp_path / "ram")
    assert ramhook.main(["hook", "x", "start", "begin"], io.StringIO(xml)) == 0
    assert not os.path.exists(marker)
    link = ramhook.prepare(xml, directory)
    assert link == os.path.join(directory, "17-" + "n" * 20, "pc.ram")
    assert os.readlink(link) == ram.path and open(marker).read().strip() == link
    assert ram.unchanged()


def test_hook_trusts_nothing_in_the_xml(tmp_path, world):
    """Run as root for any domain: only a base's RAM file is linked, and the marker is only
    written, not through a symlink, beside the domain's disk."""
    ram = ramfile.ensure(world[0])
    disk = tmp_path / "inst" / "disk"
    disk.parent.mkdir()
    marker = str(disk.parent / ramhook.MARKER_NAME)
    domain = ("<domain type='qemu' id='3'><name>d</name><memory>1</memory><devices><disk>"
              "<source file='%s'/></disk></devices></domain>" % disk)
    (tmp_path / "pc.ram").write_bytes(b"secret")      # a pc.ram that is no base's
    directory = str(tmp_path / "ram")
    for target, where in (("/etc/passwd", marker), (str(tmp_path / "pc.ram"), marker),
                          ("pc.ram", marker),
                          (ram.path, str(tmp_path / ramhook.MARKER_NAME)),
                          (ram.path, "/etc/" + ramhook.MARKER_NAME),
                          (ram.path, str(disk.parent / "passwd"))):
        assert ramhook.prepare(domxml.with_ram_file(domain, target, where), directory) is None
        assert not os.path.exists(directory), (target, where)
    shaped = tmp_path / "base"                          # shaped as a base's, but writable
    shaped.mkdir()
    (shaped / "pc.ram").write_bytes(b"ram")
    (shaped / "ram.json").write_text("{}")
    os.chmod(shaped / "pc.ram", 0o666)
    xml = domxml.with_ram_file(domain, str(shaped / "pc.ram"), marker)
    assert ramhook.prepare(xml, directory) is None
    os.chmod(shaped / "pc.ram", 0o644)
    assert os.readlink(ramhook.prepare(xml, directory)) == str(shaped / "pc.ram")
    os.unlink(marker)
    os.symlink(str(tmp_path / "victim"), marker)        # a planted marker is not followed
    assert ramhook.main(["hook", "d", "prepare", "begin"],
                        io.StringIO(domxml.with_ram_file(domain, ram.path, marker))) == 0
    assert not os.path.exists(tmp_path / "victim")


def test_nova_placement_keeps_the_ram_file(tmp_path):
    """nova's XML hook runs before the RAM file goes in, and keeps a base's own backing."""
    nova = pytest.importorskip("tests.compute_nova.test_engine_adapter")
    placement = nova.engine_adapter.placement_for_nova(nova.NOVA_XML.format(dir=tmp_path))
    base_xml = domxml.with_ram_file(nova.BASE_XML, "/old/pc.ram", "/old/" + ramhook.MARKER_NAME)
    xml = domxml.with_ram_file(placement.domain_xml(base_xml, nova.base_vm()), "/b/pc.ram",
                               placement.hook_marker)
    root = ET.fromstring(xml)
    assert len(root.findall("memoryBacking")) == 1
    # libvirt keeps one metadata element per namespace: one <cloudlet:instance> with it all.
    instance, = root.findall("metadata/*")
    assert instance.get("ram-file") == "/b/pc.ram"
    assert instance.get("ram-marker") == str(tmp_path / ramhook.MARKER_NAME)
    assert domxml.base_id_of(xml) == "ab" * 32
