"""Bad input: each case fails with a one-line error and a non-zero exit, leaving nothing behind."""

import json
import os
import shutil
import subprocess
import uuid
import zipfile

import msgpack
import pytest

from stack import story as storymod
from stack.httpserve import FileServer


@pytest.fixture
def crafted(story_run):
    """A directory for crafted overlays, removed afterwards."""
    path = storymod.make_dir(os.path.join(story_run.story.root, "bad-%s" % uuid.uuid4().hex[:6]))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def rewrite(src, dst, meta_change=None, extra_member=None):
    """Copy overlay ``src`` to ``dst`` with its meta changed and/or a member added."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename == "overlay-meta" and meta_change:
                meta = msgpack.unpackb(data)
                meta_change(meta)
                data = msgpack.packb(meta)
            if info.filename == "overlay-meta" and extra_member:
                zout.writestr(extra_member, b"x")
            zout.writestr(info.filename, data)
    return dst


def assert_fails_cleanly(story_run, location, phrase, name=None, home=None):
    """Run synthesis of ``location``; check the error and that nothing was left behind."""
    story = story_run.story
    home = home or story.home
    name = name or story.name("bad-%s" % uuid.uuid4().hex[:6])
    ours = lambda: sorted(d.name() for d in story.conn.listAllDomains()  # noqa: E731
                          if d.name().startswith(story.prefix))
    before = ours()
    proc = storymod.cloudlet(home, "synthesis", location, "--name", name, check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode not in (0, 1, 2), proc.stderr
    assert len(lines) == 1 and lines[0].startswith("cloudlet: error: "), proc.stderr
    assert phrase in lines[0], lines[0]
    assert ours() == before
    # A name in use keeps its own directory; any other name gets none.
    assert os.path.exists(os.path.join(home, "instances", name)) == (name in before)
    assert os.listdir(os.path.join(home, "tmp")) == []
    assert subprocess.run(["pgrep", "-f", "qemu-nbd.*instances/%s/" % name]).returncode == 1
    return lines[0]


def test_truncated_overlay(story_run, crafted):
    path = os.path.join(crafted, "truncated.zip")
    with open(story_run.overlay_path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[:len(data) // 2])
    assert_fails_cleanly(story_run, path, "truncated")


def flipped_copy(src, dst, member="blob-00000", at=1000):
    """Copy overlay ``src`` to ``dst`` with one bit flipped ``at`` bytes into ``member``."""
    shutil.copyfile(src, dst)
    with zipfile.ZipFile(dst) as zf:
        info = zf.getinfo(member)
    with open(dst, "r+b") as f:
        f.seek(info.header_offset + 30 + len(info.filename) + at)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0x40]))
    return dst


def test_flipped_byte_in_blob(story_run, crafted):
    path = flipped_copy(story_run.overlay_path, os.path.join(crafted, "flipped.zip"))
    assert_fails_cleanly(story_run, path, "blob-00000")


def test_overlay_of_another_base(story_run, crafted):
    def other_base(meta):
        meta["base_vm_sha256"] = "ab" * 32
    path = rewrite(story_run.overlay_path, os.path.join(crafted, "other.zip"), other_base)
    assert_fails_cleanly(story_run, path, "needs base VM " + "ab" * 32)


def test_not_a_zip(story_run, crafted):
    path = os.path.join(crafted, "notzip.zip")
    with open(path, "w") as f:
        f.write("this is not an overlay\n" * 100)
    assert_fails_cleanly(story_run, path, "not a zip package")


def test_member_named_dot_dot(story_run, crafted):
    path = rewrite(story_run.overlay_path, os.path.join(crafted, "dotdot.zip"),
                   extra_member="../x")
    assert_fails_cleanly(story_run, path, "unexpected zip member '../x'")


def test_meta_disk_size_beyond_base(story_run, crafted):
    def grow(meta):
        meta["disk"]["size"] += 4096
    path = rewrite(story_run.overlay_path, os.path.join(crafted, "disk.zip"), grow)
    assert_fails_cleanly(story_run, path, "differs from the base disk size")


def test_meta_memory_size_beyond_sane_limit(story_run, crafted):
    def huge(meta):
        meta["memory"]["image_size"] = 1 << 50
    path = rewrite(story_run.overlay_path, os.path.join(crafted, "mem.zip"), huge)
    assert_fails_cleanly(story_run, path, "exceeds the base's RAM")


def test_http_404(story_run, crafted):
    with FileServer(crafted) as server:
        assert_fails_cleanly(story_run, server.url("missing.zip"), "HTTP 404")


def test_server_closes_mid_transfer(story_run):
    with FileServer(os.path.dirname(story_run.overlay_path), cut_after=200000) as server:
        assert_fails_cleanly(story_run, server.url("overlay.zip"), "closed after")


def test_name_already_in_use(story_run):
    line = assert_fails_cleanly(story_run, story_run.overlay_path, "already exists",
                                name=story_run.customized)
    assert story_run.customized in line
    assert story_run.story.conn.lookupByName(story_run.customized).isActive()


def test_corrupted_base_package(story_run, crafted):
    story = story_run.story
    package = os.path.join(crafted, "base.zip")
    storymod.cloudlet(story.home, "base", "export", story_run.base_id, package)
    with zipfile.ZipFile(package) as zf:
        info = zf.getinfo("memory.img")
    with open(package, "r+b") as f:
        f.seek(info.header_offset + 30 + len(info.filename) + 20 + info.compress_size // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
    home = storymod.make_dir(os.path.join(crafted, "home"))
    proc = storymod.cloudlet(home, "base", "import", package, check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 3 and len(lines) == 1, proc.stderr
    assert "base package" in lines[0] and "corrupt" in lines[0], lines[0]
    assert os.listdir(os.path.join(home, "bases")) == []
    assert os.listdir(os.path.join(home, "tmp")) == []


def test_wrong_hash_in_base_package(story_run, crafted):
    story = story_run.story
    package = os.path.join(crafted, "base.zip")
    storymod.cloudlet(story.home, "base", "export", story_run.base_id, package)
    forged = os.path.join(crafted, "forged.zip")
    with zipfile.ZipFile(package) as zin, zipfile.ZipFile(forged, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename == "manifest.json":
                manifest = json.loads(data)
                manifest["memory_sha256"] = "cd" * 32
                data = json.dumps(manifest).encode()
            zout.writestr(info, data)
    home = storymod.make_dir(os.path.join(crafted, "home2"))
    proc = storymod.cloudlet(home, "base", "import", forged, check=False)
    assert proc.returncode == 3, proc.stderr
    assert "memory_sha256" in proc.stderr
    assert os.listdir(os.path.join(home, "bases")) == []
