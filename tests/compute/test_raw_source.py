"""A domain whose disk is raw (``<driver type='raw'/>``) becomes a base VM (issue 13: it ended
in FileNotFoundError, the capture's disk copy and the raw conversion target being one path)."""

import os
import uuid

from cloudlet_compute.write.capture import copy_sparse
from stack import story as storymod
from tests.conftest import scratch_root


def test_copy_sparse_keeps_content_and_holes(tmp_path):
    src, dst = tmp_path / "src.raw", tmp_path / "dst.raw"
    pieces = {0: os.urandom(4096), 5 << 20: os.urandom(100000), (64 << 20) - 4096: b"x" * 4096}
    with open(src, "wb") as f:
        for offset, data in pieces.items():
            f.seek(offset)
            f.write(data)
    with open(src, "r+b") as f:
        f.truncate(80 << 20)                  # ends in a hole
    copy_sparse(src, dst)
    assert dst.read_bytes() == src.read_bytes()
    assert os.path.getsize(dst) == 80 << 20
    assert os.stat(dst).st_blocks * 512 < 2 << 20   # ~120 KiB of data, not 80 MiB


def test_raw_disk_domain_becomes_a_base(libvirt_conn):
    story = storymod.Story(libvirt_conn, scratch_root("rawsrc"))
    try:
        source = story.boot_source(disk_format="raw")
        assert "type='raw'" in libvirt_conn.lookupByName(source).XMLDesc().replace('"', "'")
        marker = uuid.uuid4().hex
        with story.channel(source) as chan:
            chan.run("echo %s > /mnt/marker; sync" % marker)
        base_id = story.create_base(source, name="raw-base")
        listing = storymod.cloudlet(story.home, "base", "list", "--json").stdout
        assert base_id in listing
        base_disk = os.path.join(story.home, "bases", base_id, "disk.raw")
        assert os.path.getsize(base_disk) == os.path.getsize(
            os.path.join(story.image.directory, "disk.raw"))
        assert libvirt_conn.lookupByName(source).isActive()
        resumed = story.resume(base_id)
        with story.channel(resumed) as chan:
            assert chan.run("cat /mnt/marker").strip() == marker
    finally:
        story.cleanup()
