"""Shared fixtures: real libvirt, the tiny guest, and one run of the cloudlet story."""

import os
import subprocess
import uuid

import pytest

from stack import story as storymod
from stack.guest import guest
from tests.support import cloud

TMP_ROOT = guest.REPO_DIR / ".state" / "tmp"


@pytest.fixture(scope="session")
def libvirt_conn():
    """A connection to the system libvirtd, started (with the guest built) if needed."""
    subprocess.run([str(guest.REPO_DIR / "scripts" / "setup-host.sh")], check=True)
    guest.ensure_built(guest.GUEST_DIR)
    from cloudlet_compute.host import domains
    conn = domains.connect()
    yield conn
    conn.close()


def scratch_root(label):
    """A fresh directory under .state/tmp that the QEMU user can reach."""
    for d in (guest.REPO_DIR / ".state", TMP_ROOT):
        os.makedirs(d, exist_ok=True)
        os.chmod(d, 0o755)
    return storymod.make_dir(str(TMP_ROOT / ("%s-%s" % (label, uuid.uuid4().hex[:8]))))


class StoryRun:
    """What the session's story produced, for the tests to synthesize from."""

    def __init__(self, story, base_id, customized, expected, overlay_path, overlay_json):
        self.story, self.base_id, self.customized = story, base_id, customized
        self.expected, self.overlay_path, self.overlay_json = expected, overlay_path, overlay_json


@pytest.fixture(scope="session")
def story_run(libvirt_conn):
    """Boot -> base create -> resume -> customize -> overlay create, once per session."""
    story = storymod.Story(libvirt_conn, scratch_root("story"))
    try:
        source = story.boot_source()
        base_id = story.create_base(source)
        customized = story.resume(base_id)
        expected = story.customize(customized)
        overlay_path = os.path.join(story.root, "overlay.zip")
        overlay_json = story.create_overlay(customized, overlay_path)
        yield StoryRun(story, base_id, customized, expected, overlay_path, overlay_json)
    finally:
        story.cleanup()


@pytest.fixture(scope="session")
def stack_up():
    return cloud.up()


@pytest.fixture(scope="session")
def clouds(stack_up):
    """openstacksdk connections as the demo user and as admin."""
    return cloud.stack.connect("cloudlet-demo"), cloud.stack.connect("cloudlet-admin")


@pytest.fixture(scope="session")
def cloud_b():
    """Cloud b started (idempotent; beside a, whose infrastructure it shares) with OpenStack++:
    openstacksdk connections as the demo user and as admin."""
    cloud.up()
    cloud.stack.up(name="b", cloudlet=True)
    return (cloud.stack.connect("cloudlet-demo", name="b"),
            cloud.stack.connect("cloudlet-admin", name="b"))


@pytest.fixture(scope="session")
def base_story(libvirt_conn):
    """The tiny guest's base VM made with the ``cloudlet`` CLI, exported as a package, plus
    a local overlay of it (for crafting bad overlays)."""
    story = storymod.Story(libvirt_conn, scratch_root("e2e"))
    try:
        base_id = story.create_base(story.boot_source())
        package = os.path.join(story.root, "base.zip")
        storymod.cloudlet(story.home, "base", "export", base_id, package)
        customized = story.resume(base_id)
        story.customize(customized)
        overlay = os.path.join(story.root, "overlay.zip")
        story.create_overlay(customized, overlay)
        for name in list(story.domains):
            storymod.guest.destroy(libvirt_conn, name)
        story.package, story.base_id, story.overlay = package, base_id, overlay
        yield story
    finally:
        story.cleanup()


@pytest.fixture(scope="session")
def base_images(clouds, base_story):
    """The base package imported into Glance as the demo user: ``{cloudlet_type: id}``."""
    demo, _ = clouds
    with cloud.imported_base(demo, base_story.package, "e2e") as ids:
        yield ids
