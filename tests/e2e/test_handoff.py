"""VM handoff between two embedded OpenStacks (cloud a -> cloud b), over HTTP and the veth link.

Cloud b runs every service in network namespace ``stk-b``; a's compute node reaches b's
compute API and b's compute node reaches a's handoff listener only through the veth pair.
A VM synthesized on a, on a's provider network, is changed inside, handed off with the
client (``client.core.handoff.handoff``, what both CLIs run), and must then run on b with the
same memory and disk, on its new port on b's provider network, while a's server is gone.
Failures (a token b refuses, a base b lacks, b's compute node killed mid-stream) leave a's
VM running with its state.
"""

import os
import signal
import subprocess
import time
import uuid

import pytest

from client.core import handoff as handoff_ops
from cloudlet_compute import imagemodel as model
from cloudlet_compute.errors import CloudletError
from cloudlet_compute.handoff import wire
from stack import story as storymod
from stack.httpserve import FileServer
from tests.compute.test_story import assert_same_guest
from tests.conftest import scratch_root
from tests.e2e.test_networking import check_on_its_port
from tests.support import cloud

CHANGE = "STORY_VAR=handed-{token}; head -c 2097152 /dev/urandom > /mnt/after; sync"
AFTER = "echo after=$(md5sum < /mnt/after)"


@pytest.fixture(scope="module")
def base_images_b(cloud_b, base_story):
    """The base package imported into cloud b's Glance as b's demo user."""
    demo_b, _ = cloud_b
    with cloud.imported_base(demo_b, base_story.package, "ho") as ids:
        yield ids


def _observe(admin, server_id):
    with cloud.guest_channel(admin, server_id) as chan:
        seen = storymod.parse_observation(chan.run(storymod.OBSERVE))
        seen.update(storymod.parse_observation(chan.run(AFTER)))
    return seen


@pytest.fixture(scope="module")
def source(clouds, base_images, base_story):
    """A VM synthesized on a (on a's provider network), then changed inside."""
    demo, admin = clouds
    story = cloud.NovaStory(demo, admin)
    story.scratch = scratch_root("e2e-handoff")
    try:
        net = demo.network.find_network(cloud.stack.cloud("a").provider_network,
                                        ignore_missing=False)
        with FileServer(os.path.dirname(base_story.overlay)) as server:
            vm = story.boot("ho", base_images[model.BASE_DISK], networks=[{"uuid": net.id}],
                            overlay_url=server.url(os.path.basename(base_story.overlay)))
        with cloud.guest_channel(admin, vm.id) as chan:
            chan.run(storymod.CUSTOMIZE.format(token=uuid.uuid4().hex), timeout=120)
            chan.run(CHANGE.format(token=uuid.uuid4().hex[:8]), timeout=60)
        yield story, vm, _observe(admin, vm.id)
    finally:
        story.cleanup()


def _assert_source_intact(clouds, vm, expected):
    demo, admin = clouds
    server = demo.compute.get_server(vm.id)
    assert (server.status, server.task_state) == ("ACTIVE", None)
    seen = _observe(admin, vm.id)
    assert_same_guest(expected, seen)
    assert seen["after"] == expected["after"]


def _servers_named(conn, name):
    return [s for s in conn.compute.servers() if s.name == name]


def test_refusals_create_nothing(clouds, cloud_b, base_images_b, source):
    demo, _ = clouds
    demo_b, _ = cloud_b
    story, vm, expected = source
    url = demo_b.endpoint_for("compute", interface="public")
    name = story.tag + "-refused"
    resp = cloud.server_action(demo, vm.id, {"cloudlet-handoff": {
        "handoff_url": url, "dest_token": "not-a-token", "dest_vmname": name}})
    assert resp.status_code == 400 and "dest_token was rejected" in resp.text, resp.text
    # A base VM b does not hold: hide b's base image from the demo user for a moment.
    hidden = base_images_b[model.BASE_DISK]
    demo_b.image.deactivate_image(hidden)
    try:
        resp = cloud.server_action(demo, vm.id, {"cloudlet-handoff": {
            "handoff_url": url, "dest_token": demo_b.auth_token, "dest_vmname": name}})
    finally:
        demo_b.image.reactivate_image(hidden)
    assert resp.status_code == 409 and "has no base VM" in resp.text, resp.text
    assert _servers_named(demo_b, name) == []
    _assert_source_intact(clouds, vm, expected)


def test_destination_killed_mid_stream(clouds, cloud_b, base_images_b, source):
    demo, admin = clouds
    demo_b, _ = cloud_b
    story, vm, expected = source
    name = story.tag + "-killed"
    started = handoff_ops.handoff(demo, vm.id, dest_conn=demo_b, dest_vmname=name)
    assert started
    # Kill b's compute node once the VM's memory is on its way.
    cloud.wait_for(lambda: (demo.compute.get_server(vm.id).progress or 0) > 0, 300,
                   "the handoff to start streaming", interval=0.2)
    pids = subprocess.run(["pgrep", "-f", "nova-compute.*stack-b/"], capture_output=True,
                          text=True).stdout.split()
    assert len(pids) == 1, pids
    os.kill(int(pids[0]), signal.SIGKILL)
    try:
        cloud.wait_for(lambda: demo.compute.get_server(vm.id).task_state is None, 300,
                       "the source to give up", interval=1)
        reason = handoff_ops.handoff_failure(demo, vm.id)
        assert reason and "handoff" in reason.lower(), reason
        _assert_source_intact(clouds, vm, expected)
    finally:
        cloud.stack.restart(["nova-compute"], name="b")
    # b's compute node, back, finishes the delete the source asked for.
    cloud.wait_for(lambda: not _servers_named(demo_b, name), 300,
                   "the destination server to be deleted")


def test_handoff_moves_the_vm_to_cloud_b(clouds, cloud_b, base_images_b, source):
    demo, admin = clouds
    demo_b, admin_b = cloud_b
    story, vm, expected = source
    name = story.tag + "-moved"
    t0 = time.monotonic()
    moved = handoff_ops.handoff(demo, vm.id, dest_conn=demo_b, dest_vmname=name, wait=True,
                               timeout=600)
    elapsed = time.monotonic() - t0
    dest = demo_b.compute.get_server(_servers_named(demo_b, name)[0].id)
    try:
        assert dest.status == "ACTIVE"
        assert dest.metadata[model.METADATA_HANDOFF_FROM] == vm.id
        with pytest.raises(CloudletError):   # the secret was for one connection only
            wire.connect(dest.metadata[model.METADATA_HANDOFF_SOURCE], dest.id,
                         wire.parse_secret(
                             dest.metadata[model.METADATA_HANDOFF_SECRET]), timeout=5)
        assert admin_b.compute.get_server(dest.id).instance_name.startswith("stkb-")
        assert demo.compute.find_server(vm.id) is None          # a's server is gone
        seen = _observe(admin_b, dest.id)
        assert_same_guest(expected, seen)
        assert seen["after"] == expected["after"]
        # On its new port, on b's provider network (issue 8).
        net_b = demo_b.network.find_network(cloud.stack.cloud("b").provider_network,
                                            ignore_missing=False)
        _port, ip, timings = check_on_its_port(cloud_b, dest, net_b, time.monotonic(), 8082,
                                               cloud_name="b")
        assert ip.startswith("10.252.")
        print("\nhandoff a -> b: %.1f s until the client saw it; %s" % (elapsed, moved))
    finally:
        cloud.delete_server(demo_b, dest.id)
