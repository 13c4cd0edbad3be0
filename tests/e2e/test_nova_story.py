"""The cloudlet story through Nova on the embedded OpenStack, over HTTP only.

import base package -> POST /servers from the base disk image (memory restored) ->
customize through the nova serial console -> cloudlet-overlay-finish -> download the
overlay from Glance -> serve it over HTTP -> POST /servers with metadata.overlay_url ->
ACTIVE, and the guest's memory and disk state equal the customized VM's.
"""

import os
import uuid

from client.glance_import import wait_active
from cloudlet_compute import imagemodel as model
from tests.compute.test_story import assert_same_guest
from tests.conftest import scratch_root
from tests.support import cloud, story as storymod
from tests.support.httpserve import FileServer


def boot(demo, name, image_id, **kwargs):
    flavor = demo.compute.find_flavor("cl.tiny")
    server = demo.compute.create_server(name=name, image_id=image_id, flavor_id=flavor.id,
                                        networks="none", **kwargs)
    return demo.compute.wait_for_server(server, wait=300)


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


def test_resume_overlay_synthesis_through_nova(clouds, base_images):
    demo, admin = clouds
    tag = "e2e-%s" % uuid.uuid4().hex[:6]
    servers, overlay_id = [], None
    try:
        resumed = boot(demo, tag + "-resumed", base_images[model.BASE_DISK])
        servers.append(resumed.id)
        with cloud.guest_channel(admin, resumed.id) as chan:
            chan.run(storymod.CUSTOMIZE.format(token=uuid.uuid4().hex), timeout=120)
            expected = storymod.parse_observation(chan.run(storymod.OBSERVE))

        resp = cloud.server_action(demo, resumed.id,
                                   {"cloudlet-overlay-finish": {"overlay-name": tag + "-ov"}})
        assert resp.status_code == 202, resp.text
        overlay_id = resp.json()["overlay-id"]
        wait_active(demo, overlay_id, timeout=300)
        cloud.wait_for(lambda: demo.compute.get_server(resumed.id).task_state is None, 120,
                       "the resumed server to finish its task")
        assert demo.compute.get_server(resumed.id).status == "ACTIVE"

        served = scratch_root("e2e-serve")
        demo.image.download_image(overlay_id, output=os.path.join(served, "overlay.zip"))
        with FileServer(served) as server:
            synthesized = boot(demo, tag + "-synth", base_images[model.BASE_DISK],
                               metadata={model.METADATA_OVERLAY_URL: server.url("overlay.zip")})
        servers.append(synthesized.id)
        assert synthesized.status == "ACTIVE"
        with cloud.guest_channel(admin, synthesized.id) as chan:
            observed = storymod.parse_observation(chan.run(storymod.OBSERVE))
        assert_same_guest(expected, observed)
    finally:
        for server_id in servers:
            cloud.delete_server(demo, server_id)
        if overlay_id:
            demo.image.delete_image(overlay_id, ignore_missing=True)
