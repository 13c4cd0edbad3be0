"""Which spawn the driver makes of the image nova boots and the server's metadata."""

import types

from nova.compute import task_states

from cloudlet_compute.nova import driver, glance

BASE_IMAGE = {"id": "disk-1", "properties": {glance.PROPERTY_TYPE: glance.BASE_DISK,
                                             glance.PROPERTY_BASE_ID: "b" * 64,
                                             glance.BASE_MEMORY: "mem-1"}}
HANDED_OFF = {glance.METADATA_HANDOFF_SOURCE: "tcp://10.0.0.1:5000",
              glance.METADATA_HANDOFF_SECRET: "s3cret"}


def plan(metadata, task_state=task_states.SPAWNING, image=BASE_IMAGE):
    return driver.spawn_plan(types.SimpleNamespace(metadata=metadata, task_state=task_state),
                             image)


def test_a_handed_off_server_is_received_when_built():
    built = plan(HANDED_OFF)
    assert (built.mode, built.handoff_source, built.handoff_secret) == (
        driver.HANDOFF, "tcp://10.0.0.1:5000", "s3cret")


def test_a_rebuild_of_a_handed_off_server_resumes_its_base():
    rebuilt = plan(HANDED_OFF, task_state=task_states.REBUILD_SPAWNING)
    assert (rebuilt.mode, rebuilt.base_id, rebuilt.handoff_source) == (
        driver.RESUME, "b" * 64, None)


def test_a_rebuild_of_a_synthesized_server_synthesizes_its_overlay_again():
    rebuilt = plan({glance.METADATA_OVERLAY_IMAGE: "ov-1"},
                   task_state=task_states.REBUILD_SPAWNING)
    assert (rebuilt.mode, rebuilt.overlay_image_id) == (driver.SYNTHESIS, "ov-1")


def test_a_rebuild_to_a_plain_image_is_nova_s_boot():
    assert plan(HANDED_OFF, task_state=task_states.REBUILD_SPAWNING,
                image={"id": "plain", "properties": {}}) is None
