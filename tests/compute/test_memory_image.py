"""Parsers and writers of the memory image, on a real libvirt save image (the story's base)."""

import hashlib

import pytest

from cloudlet_compute import bases, delta, migstream, saveimage
from cloudlet_compute.apply import Rebuild
from cloudlet_compute.errors import FormatError
from cloudlet_compute.skeleton import Skeleton


@pytest.fixture(scope="module")
def base(story_run):
    return bases.BaseStore(story_run.story.home).get(story_run.base_id)


@pytest.fixture(scope="module")
def image(base):
    with open(base.memory_path, "rb") as f:
        return f.read()


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
    assert layout.blocks[0][0] == "pc.ram"
    assert layout.ram_end < len(image)
    assert image[layout.ram_end:].find(b"QEVM") == -1
    assert all(image[o - 8:o - 5] is not None for o in layout.payload_offsets[:10])


def test_skeleton_splice_gives_back_identical_bytes(base, image):
    mem = delta.memory_delta(base.memory_path, base)
    assert mem.changed == []
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
