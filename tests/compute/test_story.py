"""The cloudlet story end to end on real libvirt/QEMU (TCG), through the ``cloudlet`` CLI."""

import os
import shutil

from cloudlet_compute import bases
from cloudlet_compute.host import baseuse, domxml
from stack import story as storymod
from stack.guest import guest
from stack.httpserve import FileServer
from tests.conftest import scratch_root


def assert_same_guest(expected, observed):
    """The synthesized guest holds the customized guest's memory and disk, and kept running."""
    for key in ("var", "rand", "file", "copy"):
        assert observed[key] == expected[key], key
    assert expected["rand"] != expected["file"]
    # The tick counter and uptime continue from where the customized VM was: no reboot.
    assert int(observed["tick"]) >= int(expected["tick"])
    assert float(observed["uptime"]) >= float(expected["uptime"])


def test_base_create_keeps_source_running(story_run, libvirt_conn):
    source = libvirt_conn.lookupByName(story_run.story.name("src"))
    assert source.isActive()


def test_resumed_vm_keeps_its_base_from_eviction(story_run, libvirt_conn):
    """What the compute node's cache eviction asks: the resumed guest uses its base, by its
    metadata and by its disk's backing file alike (nova's rewritten XML keeps only the latter)."""
    store = bases.BaseStore(story_run.story.home)
    assert story_run.base_id in baseuse.bases_in_use(libvirt_conn, store.bases_dir)
    disk, _ = domxml.file_disk(libvirt_conn.lookupByName(story_run.customized).XMLDesc())
    assert baseuse.qcow2_backing(disk) == store.get(story_run.base_id).disk_path


def test_overlay_is_deduplicated(story_run):
    sources = story_run.overlay_json["sources"]
    # The 4 MiB disk file is also in the page cache and in tmpfs: stored once.
    assert sources["self"] >= 1024
    size = os.path.getsize(story_run.overlay_path)
    assert size < 30 << 20   # 16 MiB random + 4 MiB random + a little; not the 64 MiB disk


def test_synthesis_over_http_while_source_runs(story_run, libvirt_conn):
    story = story_run.story
    with FileServer(os.path.dirname(story_run.overlay_path)) as server:
        name, result = story.synthesize(server.url("overlay.zip"), role="http")
        assert any(r and r.startswith("bytes=") for _, r in server.requests)
    assert result["domain"] == name
    assert set(result["timings"]) >= {"fetch_apply", "disk", "memory_restore", "total"}
    assert libvirt_conn.lookupByName(story_run.customized).isActive()
    synthesized = libvirt_conn.lookupByName(name)
    assert synthesized.UUIDString() != libvirt_conn.lookupByName(story_run.customized).UUIDString()
    assert_same_guest(story_run.expected, story.observe(name))
    storymod.cloudlet(story.home, "overlay", "info", story_run.overlay_path)


def test_synthesis_from_server_without_ranges(story_run):
    story = story_run.story
    with FileServer(os.path.dirname(story_run.overlay_path), no_ranges=True) as server:
        name, _ = story.synthesize(server.url("overlay.zip"), role="norange")
    assert_same_guest(story_run.expected, story.observe(name))
    assert os.listdir(os.path.join(story.home, "tmp")) == []


def test_export_import_on_another_cloudlet(story_run):
    story = story_run.story
    package = os.path.join(story.root, "base.zip")
    storymod.cloudlet(story.home, "base", "export", story_run.base_id, package)
    other = scratch_root("cloudlet2")
    try:
        other_home = storymod.make_dir(os.path.join(other, "home"))
        out = storymod.cloudlet(other_home, "base", "import", package)
        assert out.stdout.strip() == story_run.base_id
        listing = storymod.cloudlet(other_home, "base", "list", "--json").stdout
        assert story_run.base_id in listing
        name, _ = story.synthesize(story_run.overlay_path, role="other", home=other_home)
        assert_same_guest(story_run.expected, story.observe(name, home=other_home))
    finally:
        guest.destroy(story.conn, story.name("other"))
        shutil.rmtree(other, ignore_errors=True)
