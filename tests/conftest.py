"""Shared fixtures: real libvirt, the tiny guest, and one run of the cloudlet story."""

import os
import subprocess
import uuid

import pytest

from tests.guest import guest
from tests.support import story as storymod

TMP_ROOT = guest.REPO_DIR / ".state" / "tmp"


@pytest.fixture(scope="session")
def libvirt_conn():
    """A connection to the system libvirtd, started (with the guest built) if needed."""
    subprocess.run([str(guest.REPO_DIR / "scripts" / "setup-host.sh")], check=True)
    guest.ensure_built(guest.GUEST_DIR)
    from cloudlet_compute import domains
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
