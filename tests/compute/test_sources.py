"""Any file-backed domain is a source (issue 13): a raw disk; a qcow2 over a chain of files,
with 2 vCPUs on 2 NUMA cells. What a capture cannot take is refused with one line, the domain
untouched, nothing left in ``$CLOUDLET_HOME`` (the XML cases alone: ``test_sources_xml.py``)."""

import os
import shutil
import subprocess
import uuid

import libvirt
import pytest

from cloudlet_compute import bases
from cloudlet_compute.write import capture
from cloudlet_compute.write.capture import copy_sparse
from stack import story as storymod
from stack.guest import guest
from tests.compute.test_story import assert_same_guest
from tests.conftest import scratch_root
from tests.support import sources


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


def _qemu_img(cwd, *args):
    subprocess.run(["qemu-img", "create", "-q"] + list(args), check=True, cwd=cwd)


def test_probe_gives_the_chain_by_absolute_path(tmp_path):
    with open(tmp_path / "base.raw", "wb") as f:
        f.truncate(8 << 20)
    _qemu_img(tmp_path, "-f", "qcow2", "-F", "raw", "-b", "base.raw", "mid.qcow2")
    _qemu_img(tmp_path, "-f", "qcow2", "-F", "qcow2", "-b", "mid.qcow2", "top.qcow2")
    assert capture.probe_disk(str(tmp_path / "top.qcow2"), "qcow2") == (
        None, (str(tmp_path / "mid.qcow2"), "qcow2"))
    assert capture.probe_disk(str(tmp_path / "base.raw"), "raw") == (None, None)


def test_probe_refuses_what_a_capture_cannot_take(tmp_path):
    with open(tmp_path / "odd.raw", "wb") as f:
        f.truncate((8 << 20) + 1024)
    _qemu_img(tmp_path, "-f", "qcow2", "-o", "data_file=data.raw", "split.qcow2", "8M")
    odd, _ = capture.probe_disk(str(tmp_path / "odd.raw"), "raw")
    assert odd == "its disk is 8389632 bytes, not a whole number of 4 KiB chunks"
    split, _ = capture.probe_disk(str(tmp_path / "split.qcow2"), "qcow2")
    assert "separate file" in split
    missing, _ = capture.probe_disk(str(tmp_path / "missing.qcow2"), "qcow2")
    assert missing == "qemu-img cannot read its disk"


@pytest.fixture
def story(libvirt_conn):
    story = storymod.Story(libvirt_conn, scratch_root("sources"))
    yield story
    story.cleanup()


def _boot_raw_source(story):
    """The tiny guest on a raw disk whose ext4 has 1 KiB blocks (what mke2fs picks for small
    file systems): the customization's file is then in the page cache as disk windows at
    1 KiB offsets, which the overlay takes from its disk (format version 2)."""
    story.image = guest.tiny_with_blocks(os.path.join(story.root, "guest-1k"), 1024)
    source = story.boot_source(disk_format="raw")
    assert "type='raw'" in story.conn.lookupByName(source).XMLDesc().replace('"', "'")
    marker = uuid.uuid4().hex
    with story.channel(source) as chan:
        chan.run("echo %s > /mnt/marker; sync" % marker)
    return source, marker


@pytest.mark.parametrize("boot", [_boot_raw_source, sources.boot_chain_source],
                         ids=["raw", "qcow2-chain"])
def test_source_becomes_base_overlay_and_synthesis(story, boot):
    source, marker = boot(story)
    base_id = story.create_base(source, name="src-base")
    assert base_id in storymod.cloudlet(story.home, "base", "list", "--json").stdout
    base_disk = os.path.join(story.home, "bases", base_id, "disk.raw")
    assert os.path.getsize(base_disk) == os.path.getsize(
        os.path.join(story.image.directory, "disk.raw"))
    assert story.conn.lookupByName(source).state()[0] == libvirt.VIR_DOMAIN_RUNNING
    blocks = bases.BaseStore(story.home).get(base_id).memory_pages(digests=False)[0]
    assert ("ram-node1" in blocks) == (boot is sources.boot_chain_source), blocks
    plain = storymod.cloudlet(story.home, "overlay", "create", source, "-o",
                              os.path.join(story.root, "x.zip"), check=False)
    assert plain.returncode == 5 and "was not resumed from a base VM" in plain.stderr
    customized = story.resume(base_id)
    expected = story.customize(customized)
    overlay = os.path.join(story.root, "overlay.zip")
    sources_used = story.create_overlay(customized, overlay)["sources"]
    if boot is _boot_raw_source:   # the 4 MiB file's page-cache pages and its tmpfs copy
        assert sources_used["overlay_disk"] >= 2 * 1024 - 16, sources_used
    synthesized, _ = story.synthesize(overlay)
    assert_same_guest(expected, story.observe(synthesized))
    with story.channel(synthesized) as chan:
        assert chan.run("cat /mnt/marker").strip() == marker
    assert os.listdir(os.path.join(story.home, "tmp")) == []


def assert_refused(story, domain, phrase):
    """``base create`` and ``overlay create`` of ``domain`` fail with one line naming
    ``phrase``; the domain is as it was, never touched through its monitor; nothing is left."""
    dom = story.conn.lookupByName(domain)
    state, xml = dom.state()[0], dom.XMLDesc()
    out = os.path.join(story.root, "refused.zip")
    for args in (("base", "create", domain, "--name", "refused"),
                 ("overlay", "create", domain, "-o", out)):
        proc = storymod.cloudlet(story.home, *args, check=False)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode not in (0, 1, 2), proc.stderr
        assert len(lines) == 1 and lines[0].startswith("cloudlet: error: "), proc.stderr
        assert phrase in lines[0], lines[0]
        assert story.root not in lines[0]
    assert (dom.state()[0], dom.XMLDesc()) == (state, xml)
    if state == libvirt.VIR_DOMAIN_RUNNING:    # its QEMU log names any use of the monitor
        with open(sources.LIBVIRT_LOG % domain) as log:
            assert "custom-monitor" not in log.read()
    assert not os.path.exists(out)
    assert os.listdir(os.path.join(story.home, "tmp")) == []
    assert os.listdir(os.path.join(story.home, "bases")) == []


@pytest.mark.parametrize("kind", sources.DEFINABLE)
def test_defined_domain_refused(story, kind):
    name = story.name(kind)
    workdir = storymod.make_dir(os.path.join(story.root, kind))
    xml = sources.domain_xml(name, workdir, os.path.join(workdir, "disk.qcow2"), kind=kind)
    story.domains.append(name)
    story.conn.defineXML(xml)
    assert_refused(story, name, sources.REFUSALS[kind][1])


def test_running_domains_refused(story):
    """Two disks; a raw disk that is not whole 4 KiB chunks: refused while they run, and they
    run on, never paused."""
    workdir = storymod.make_dir(os.path.join(story.root, "src"))
    raw = os.path.join(workdir, "disk.raw")
    shutil.copyfile(os.path.join(story.image.directory, "disk.raw"), raw)
    name = story.name("two")
    sources.boot_xml(story, name, sources.domain_xml(name, workdir, raw, "raw", "two-disks"), workdir)
    assert_refused(story, name, sources.REFUSALS["two-disks"][1])
    guest.destroy(story.conn, name)

    with open(raw, "r+b") as f:
        f.truncate(os.path.getsize(raw) + 1024)
    name = story.name("odd")
    sources.boot_xml(story, name, sources.domain_xml(name, workdir, raw, "raw"), workdir)
    assert_refused(story, name, "not a whole number of 4 KiB chunks")
    guest.destroy(story.conn, name)
