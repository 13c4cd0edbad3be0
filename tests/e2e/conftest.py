"""Fixtures of the end-to-end tests on the embedded OpenStack (more in tests/conftest.py)."""

import uuid

import pytest

from client.glance_import import import_base_package


@pytest.fixture(scope="session")
def base_images(clouds, base_story):
    """The base package imported into Glance as the demo user: ``{cloudlet_type: id}``."""
    demo, _ = clouds
    ids = import_base_package(demo, base_story.package, name="e2e-%s" % uuid.uuid4().hex[:6])
    yield ids
    for image_id in ids.values():
        demo.image.delete_image(image_id, ignore_missing=True)
