"""Parsers and writers of the memory image, on real images: one written by libvirt's
``virDomainSave`` and the story's base, which our live capture wrote."""

import hashlib
import os
import shutil
import subprocess
import uuid

import pytest

from cloudlet_compute import bases
from cloudlet_compute.errors import FormatError
from cloudlet_compute.format import migstream, saveimage
from cloudlet_compute.format.skeleton import Skeleton
from cloudlet_compute.read.apply import Rebuild
from cloudlet_compute.write import delta
from stack.guest import guest
from tests.conftest import scratch_root


@pytest.fixture(scope="module")
def base(story_run):
    return bases.BaseStore(story_run.story.home).get(story_run.base_id)


@pytest.fixture(scope="module")
def image(libvirt_conn):
    """A save image written by libvirt itself (``virsh save``) of the tiny guest."""
    root = scratch_root("saveimage")
    name = "cl-save-%s" % uuid.uuid4().hex[:6]
    disk = os.path.join(root, "disk.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b",
                    str(guest.GUEST_DIR / "disk.raw"), disk], check=True)
    try:
        dom, chan = guest.boot(libvirt_conn, name, root, disk, "qcow2")
        chan.close()
        dom.save(os.path.join(root, "memory.img"))
        with open(os.path.join(root, "memory.img"), "rb") as f:
            return f.read()
    finally:
        guest.destroy(libvirt_conn, name)
        shutil.rmtree(root, ignore_errors=True)


def test_header_parse_and_rewrite_is_identical(image):
    header = saveimage.SaveHeader.parse(image)
    assert "<domain" in header.xml and "<cookie>" in header.cookie
    assert header.encode() == image[:header.stream_offset]


def test_header_with_longer_xml_grows_and_parses_back(image):
    header = saveimage.SaveHeader.parse(image)
    longer = header.xml.replace("</domain>", "<!--" + "x" * 100000 + "--></domain>")
    again = saveimage.SaveHeader.parse(header.encode(longer) + b"QEVM")
    assert again.xml == longer and again.cookie == header.cookie


def test_stream_parse_finds_every_ram_page(image, base):
    header = saveimage.SaveHeader.parse(image)
    layout = migstream.parse(image, header.stream_offset)
    assert layout.ram_size == base.ram_size
    assert len(layout.latest) == layout.ram_size // 4096
    assert layout.blocks[0][0] == "pc.ram"
    assert layout.ram_end < len(image)
    assert image[layout.ram_end:].find(b"QEVM") == -1
    assert all(image[o - 8:o - 5] is not None for o in layout.payload_offsets[:10])


def test_canonical_stream_keeps_each_page_once(image):
    header = saveimage.SaveHeader.parse(image)
    layout = migstream.parse(image, header.stream_offset)
    again = migstream.canonical(image, header.stream_offset, layout)
    relaid = migstream.parse(again, 0)
    assert len(relaid.payload_offsets) == len(set(relaid.page_keys)) == \
        sum(1 for v in layout.latest.values() if v >= 0)
    pages = {k: image[o:o + 4096] for k, o in layout.latest.items() if o >= 0}
    assert all(again[o:o + 4096] == pages[k]
               for k, o in zip(relaid.page_keys, relaid.payload_offsets))
    assert again.endswith(image[layout.ram_end:])


def test_skeleton_splice_gives_back_identical_bytes(base, tmp_path):
    with open(base.memory_path, "rb") as f:
        image = f.read()
    mem = delta.memory_delta(base.memory_path, base, str(tmp_path))
    assert len(mem.changed) == 0
    assert mem.image_sha256 == hashlib.sha256(image).hexdigest()
    skeleton = Skeleton.decode(mem.skeleton.encode(), base.memory_size)
    rebuild = Rebuild(base, {"memory": {"image_sha256": mem.image_sha256,
                                        "image_size": len(image)}})
    rebuild.skeleton = skeleton
    try:
        assert rebuild.memory_image() == image
    finally:
        rebuild.close()


@pytest.mark.parametrize("cut", [10, 91, 200, 70000, 67800, -5000, -1])
def test_truncated_image_is_a_format_error(image, cut):
    with pytest.raises(FormatError):
        header = saveimage.SaveHeader.parse(image[:cut])
        migstream.parse(image[:cut], header.stream_offset)


def test_partial_magic_is_reported(image):
    with pytest.raises(FormatError, match="incomplete"):
        saveimage.SaveHeader.parse(b"LibvirtQemudPart" + image[16:200])
