"""Restores over the base's RAM file on real libvirt/QEMU (TCG): synthesis on the delta and
the full path gives the customized guest; VMs sharing one base RAM file keep their own
memory and leave the file unchanged; a changed RAM file is not used."""

import hashlib
import os
import threading
import xml.etree.ElementTree as ET
import zipfile

import msgpack
import pytest

from cloudlet_compute import bases
from cloudlet_compute.format import blobcodec
from cloudlet_compute.host import domxml, ramfile, ramhook
from tests.compute.test_bad_input import assert_fails_cleanly
from tests.compute.test_story import assert_same_guest

pytestmark = pytest.mark.skipif(not ramhook.installed(),
                                reason="the libvirt hook is not installed (setup-host.sh)")


def _base(story_run):
    return bases.BaseStore(story_run.story.home).get(story_run.base_id)


def _file_sha(path):
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _maps_ram_file(conn, name):
    live = ET.fromstring(conn.lookupByName(name).XMLDesc())
    return live.find("memoryBacking/source") is not None and \
        live.find("metadata/{%s}instance" % domxml.NS).get("ram-file") is not None


def test_synthesis_on_both_paths_gives_the_customized_guest(story_run, libvirt_conn,
                                                           monkeypatch):
    story = story_run.story
    name, out = story.synthesize(story_run.overlay_path, role="delta")
    assert out["timings"]["restore_path"] == "delta", out["timings"]
    assert _maps_ram_file(libvirt_conn, name)
    assert_same_guest(story_run.expected, story.observe(name))
    monkeypatch.setenv(ramfile.FORCE_FULL, "full")
    name, out = story.synthesize(story_run.overlay_path, role="full")
    assert out["timings"]["restore_path"] == "full"
    assert "CLOUDLET_RESTORE" in out["timings"]["restore_why"]
    assert not _maps_ram_file(libvirt_conn, name)
    assert_same_guest(story_run.expected, story.observe(name))


def test_two_vms_from_one_base_at_once_keep_their_own_memory(story_run, libvirt_conn):
    story, ram = story_run.story, ramfile.ensure(_base(story_run))
    before = _file_sha(ram.path)
    assert before == ram.record["sha256"]
    results = {}

    def synthesize(role):
        results[role] = story.synthesize(story_run.overlay_path, role=role)

    threads = [threading.Thread(target=synthesize, args=(r,)) for r in ("twin-a", "twin-b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    (a, out_a), (b, out_b) = results["twin-a"], results["twin-b"]
    assert out_a["timings"]["restore_path"] == out_b["timings"]["restore_path"] == "delta"
    with story.channel(a) as chan_a, story.channel(b) as chan_b:
        chan_a.run("STORY_VAR=only-a; head -c 8388608 /dev/urandom > /run/rand")
        assert chan_b.run("echo $STORY_VAR").strip() == story_run.expected["var"]
    assert_same_guest(story_run.expected, story.observe(b))
    assert story.observe(a)["var"] == "only-a"
    assert ram.unchanged() and _file_sha(ram.path) == before


def test_changed_ram_file_is_not_used(story_run, libvirt_conn):
    story, base = story_run.story, _base(story_run)
    old = ramfile.ensure(base)
    os.utime(old.path)        # new times: a changed file (its content stays: VMs map it)
    assert not old.unchanged()
    name, out = story.synthesize(story_run.overlay_path, role="rebuilt")
    assert out["timings"]["restore_path"] == "delta"
    new = ramfile.RamFile(base)
    assert new.unchanged() and new.record["stat"]["st_ino"] != old.record["stat"]["st_ino"]
    assert new.record["sha256"] == old.record["sha256"]
    assert_same_guest(story_run.expected, story.observe(name))


def test_resume_maps_the_ram_file(story_run, libvirt_conn):
    # The story's customized VM was resumed from the base with ``cloudlet resume``.
    assert _maps_ram_file(libvirt_conn, story_run.customized)


def _forge_skeleton(src, dst):
    """Copy overlay ``src`` to ``dst`` with the first page record of its skeleton naming an
    unknown RAM block, the skeleton's hashes and sizes in the meta made to match."""
    with zipfile.ZipFile(src) as zin:
        meta = msgpack.unpackb(zin.read("overlay-meta"))
        memory = meta["memory"]
        plain = bytearray(blobcodec.decompress(zin.read("memory-skeleton"),
                                               memory["skeleton_raw_size"]))
        first = plain.index(b"\x06pc.ram")
        second = plain.index(b"\x06pc.ram", first + 1)
        plain[second + 1:second + 7] = b"xx.ram"
        stored = blobcodec.compress(bytes(plain))
        memory["skeleton_size"] = len(stored)
        memory["skeleton_sha256"] = hashlib.sha256(stored).hexdigest()
        with zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
            for info in zin.infolist():
                data = {"memory-skeleton": stored,
                        "overlay-meta": msgpack.packb(meta)}.get(info.filename)
                zout.writestr(info.filename, data if data is not None else zin.read(info))


def test_forged_skeleton_on_the_delta_path_fails_cleanly(story_run, tmp_path):
    forged = str(tmp_path / "forged.zip")
    _forge_skeleton(story_run.overlay_path, forged)
    assert_fails_cleanly(story_run, forged, "names an unknown RAM block")
