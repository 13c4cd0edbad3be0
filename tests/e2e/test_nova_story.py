"""The cloudlet story through Nova on the embedded OpenStack, over HTTP only.

import base package -> POST /servers from the base disk image (memory restored) ->
customize through the nova serial console -> cloudlet-overlay-finish -> download the
overlay from Glance -> serve it over HTTP -> POST /servers with metadata.overlay_url ->
ACTIVE, and the guest's memory and disk state equal the customized VM's; then four at once
from the overlay image in Glance (metadata.overlay_image: nova-compute fetches it through
Glance) on a host that no longer caches the base: it fetches the base once, and each of the
four is the customized VM.
"""

import os

from cloudlet_compute import imagemodel as model
from stack.httpserve import FileServer
from tests.compute.test_story import assert_same_guest
from tests.conftest import scratch_root
from tests.support import cloud, faults


def test_import_base_makes_linked_images(clouds, base_images, base_story):
    demo, _ = clouds
    disk = demo.image.get_image(base_images[model.BASE_DISK])
    assert disk.properties[model.PROPERTY_TYPE] == model.BASE_DISK
    assert disk.properties[model.PROPERTY_BASE_ID] == base_story.base_id
    for image_type in model.LINKED_TYPES:
        assert disk.properties[image_type] == base_images[image_type]
        linked = demo.image.get_image(base_images[image_type])
        assert linked.status == "active"
        assert linked.properties[model.PROPERTY_TYPE] == image_type


def test_resume_overlay_and_concurrent_syntheses_through_nova(clouds, base_images):
    story = cloud.NovaStory(*clouds)
    base_disk = base_images[model.BASE_DISK]
    try:
        resumed = story.boot("resumed", base_disk)
        expected = story.customize(resumed.id)
        overlay_id = story.overlay_finish(resumed.id)
        assert clouds[0].compute.get_server(resumed.id).status == "ACTIVE"
        served = story.scratch = scratch_root("e2e-serve")
        story.download(overlay_id, os.path.join(served, "overlay.zip"))
        with FileServer(served) as server:
            synthesized = story.boot("synth", base_disk,
                                     overlay_url=server.url("overlay.zip"))
        assert synthesized.status == "ACTIVE"
        assert_same_guest(expected, story.observe(synthesized.id))
        # The build's progress followed the overlay's fetch (a resume fetches nothing).
        assert (resumed.progress, synthesized.progress) == (0, 100)
        for server in (resumed, synthesized):
            cloud.delete_server(story.demo, server.id)
        base_id = story.demo.image.get_image(base_disk).properties[model.PROPERTY_BASE_ID]
        faults.evict_base(base_id)
        log = faults.ServiceLog("nova-compute")
        from_glance = story.boot_many(["glance-%d" % i for i in range(4)], base_disk,
                                      overlay_image=overlay_id)
        for server in from_glance:
            assert (server.status, server.progress) == ("ACTIVE", 100)
            assert_same_guest(expected, story.observe(server.id))
        fetches = log.count("fetching base VM %s from Glance" % base_id)
        assert fetches == 1, fetches
    finally:
        story.cleanup()
