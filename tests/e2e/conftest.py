"""Fixtures of the end-to-end tests on the embedded OpenStack."""

import os
import uuid

import pytest

from client.glance_import import import_base_package
from tests.conftest import scratch_root
from tests.support import cloud, story as storymod


@pytest.fixture(scope="session")
def stack_up():
    return cloud.up()


@pytest.fixture(scope="session")
def clouds(stack_up):
    """openstacksdk connections as the demo user and as admin."""
    return cloud.stack.connect("cloudlet-demo"), cloud.stack.connect("cloudlet-admin")


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
    ids = import_base_package(demo, base_story.package, name="e2e-%s" % uuid.uuid4().hex[:6])
    yield ids
    for image_id in ids.values():
        demo.image.delete_image(image_id, ignore_missing=True)
