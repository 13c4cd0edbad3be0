"""On real libvirt: a base of the direct-kernel-boot tiny guest keeps its kernel and initrd,
so it resumes after the files it was booted from are gone, and on another cloudlet (a second
store) after export and import."""

import hashlib
import os
import shutil
import xml.etree.ElementTree as ET

import pytest

from cloudlet_compute import bases
from stack import story as storymod
from stack.guest import guest
from tests.compute.test_base_kernel import rewrite_package, without_boot_keys
from tests.conftest import scratch_root


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def booted_files(conn, name):
    os_node = ET.fromstring(conn.lookupByName(name).XMLDesc(0)).find("os")
    return os_node.findtext("kernel"), os_node.findtext("initrd"), os_node.findtext("cmdline")


@pytest.fixture
def story(libvirt_conn):
    """A story whose source boots copies of the guest's kernel and initrd in ``kernel_dir``."""
    root = scratch_root("kernel")
    kernel_dir = storymod.make_dir(os.path.join(root, "boot"))
    for name in ("vmlinuz", "initrd.img"):
        shutil.copyfile(guest.GUEST_DIR / name, os.path.join(kernel_dir, name))
    os.symlink(guest.GUEST_DIR / "disk.raw", os.path.join(kernel_dir, "disk.raw"))
    story = storymod.Story(libvirt_conn, root, image=guest.Image(kernel_dir))
    story.kernel_dir = kernel_dir
    try:
        yield story
    finally:
        story.cleanup()


def test_base_resumes_without_the_files_it_was_booted_from(story, libvirt_conn):
    source = story.boot_source()
    base_id = story.create_base(source, name="kernel-base")
    guest.destroy(libvirt_conn, source)
    shutil.rmtree(story.kernel_dir)

    base = bases.BaseStore(story.home).get(base_id)
    assert base.cmdline == guest.KERNEL_CMDLINE
    for member, original in (("kernel", "vmlinuz"), ("initrd", "initrd.img")):
        assert base.manifest[member + "_sha256"] == sha256(guest.GUEST_DIR / original)
        assert sha256(base.boot_paths[member]) == base.manifest[member + "_sha256"]

    resumed = story.resume(base_id)
    assert booted_files(libvirt_conn, resumed) == (base.boot_paths["kernel"],
                                                   base.boot_paths["initrd"],
                                                   guest.KERNEL_CMDLINE)
    assert story.observe(resumed)["tick"]

    # Another cloudlet: the package carries kernel and initrd; its store's copies boot.
    package = os.path.join(story.root, "base.zip")
    storymod.cloudlet(story.home, "base", "export", base_id, package)
    other_home = storymod.make_dir(os.path.join(story.root, "other"))
    assert storymod.cloudlet(other_home, "base", "import", package).stdout.strip() == base_id
    other = bases.BaseStore(other_home).get(base_id)
    name = story.name("other")
    story.domains.append(name)
    storymod.cloudlet(other_home, "resume", base_id, "--name", name)
    assert booted_files(libvirt_conn, name)[:2] == (other.boot_paths["kernel"],
                                                    other.boot_paths["initrd"])
    assert story.observe(name, home=other_home)["tick"]


def test_unreadable_kernel_file_fails_in_one_line_and_the_source_runs(story, libvirt_conn):
    source = story.boot_source()
    os.unlink(os.path.join(story.kernel_dir, "initrd.img"))
    proc = storymod.cloudlet(story.home, "base", "create", source, "--name", "nope",
                             check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 4 and lines == [
        "cloudlet: error: the domain's initrd initrd.img cannot be read: "
        "No such file or directory"], proc.stderr
    assert bases.BaseStore(story.home).list() == []
    assert os.listdir(os.path.join(story.home, "tmp")) == []
    assert libvirt_conn.lookupByName(source).isActive()
    with story.channel(source) as chan:
        assert chan.run("echo alive").strip() == "alive"


def test_old_base_whose_kernel_is_gone_fails_in_one_line(story, libvirt_conn):
    """What this fixes: a base without copies (an old package) names the files its domain
    booted; once they are gone, resume fails, in one line, leaving nothing behind."""
    source = story.boot_source()
    base_id = story.create_base(source, name="old-style")
    guest.destroy(libvirt_conn, source)
    package = os.path.join(story.root, "base.zip")
    storymod.cloudlet(story.home, "base", "export", base_id, package)
    old = rewrite_package(package, os.path.join(story.root, "old.zip"), without_boot_keys,
                          ("kernel", "initrd"))
    home = storymod.make_dir(os.path.join(story.root, "old-home"))
    storymod.cloudlet(home, "base", "import", old)
    shutil.rmtree(story.kernel_dir)
    name = story.name("old")
    story.domains.append(name)
    proc = storymod.cloudlet(home, "resume", base_id, "--name", name, check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 7 and len(lines) == 1, proc.stderr
    assert "vmlinuz: No such file or directory" in lines[0], lines[0]
    assert os.listdir(os.path.join(home, "instances")) == []
    assert os.listdir(os.path.join(home, "tmp")) == []
    assert name not in [d.name() for d in libvirt_conn.listAllDomains()]
