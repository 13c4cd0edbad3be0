"""nova's own actions on a cloudlet server, on the embedded stack: nothing loses the VM.

- createImage of a server resumed from a base VM gives a plain image of its disk: no base VM
  labels, not listed as a base VM, and a server booted from it boots that disk (a fresh boot
  with the customized files), never the base VM.
- pause/unpause and suspend/resume keep the guest's memory; after a restart of nova-compute
  the server is still ACTIVE and running, in sync, and nova's actions still work on it.
- ``openstack server shelve`` of such a server stores its VM overlay in Glance; ``openstack
  server unshelve`` synthesizes it: the guest's memory and disk are as they were, its
  counter goes on (no reboot).
"""

import datetime
import time

from client.core.waiting import wait_image_active as wait_active
from cloudlet_compute import imagemodel as model
from cloudlet_compute.nova.snapshots import LABELS
from stack.guest import guest
from tests.client.conftest import cloudlet_client, openstack
from tests.compute.test_story import assert_same_guest
from tests.support import cloud


def test_snapshot_is_the_servers_disk_and_boots_as_a_plain_server(clouds, base_images):
    demo, _ = clouds
    story = cloud.NovaStory(*clouds)
    try:
        resumed = story.boot("resumed", base_images[model.BASE_DISK])
        expected = story.customize(resumed.id)
        snapshot = demo.compute.create_server_image(resumed.id, story.tag + "-snap")
        image_id = snapshot.id if hasattr(snapshot, "id") else snapshot
        story.images.append(image_id)
        image = wait_active(demo, image_id)
        assert not LABELS & set(image.properties), image.properties
        assert image_id not in cloudlet_client("list-base").stdout

        # The tiny guest's disk has no boot loader: give the snapshot the guest's kernel,
        # as one does for any image of such a disk.
        uploaded = []
        kernel, ramdisk = cloud.upload_kernel(demo, story.tag, guest.GUEST_DIR, uploaded)
        story.images += [i.id for i in uploaded]
        demo.image.update_image(image_id, **cloud.boot_properties(kernel, ramdisk))

        booted = story.boot("fromsnap", image_id)
        observed = story.observe(booted.id)
        assert observed["file"] == expected["file"]         # the customized disk
        assert observed["var"] == ""                          # a fresh boot, not a restore
        assert float(observed["uptime"]) < float(expected["uptime"])
        assert demo.compute.get_server(resumed.id).status == "ACTIVE"
    finally:
        story.cleanup()


def settled(conn, server_id):
    """The server once no task runs on it any more, else None."""
    server = conn.compute.get_server(server_id)
    return server if server.task_state is None else None


def wait_settled(conn, server_id, status, what):
    """Wait until ``what`` (an action) ended; the server must then be ``status``."""
    server = cloud.wait_for(lambda: settled(conn, server_id), 300, what, interval=0.3)
    assert server.status == status, (what, server.status, server.fault)
    return server


def assert_pause_and_suspend_keep_memory(story, server_id, expected):
    """pause/unpause, then suspend/resume: each time the guest goes on with the memory and
    disk it reported as ``expected`` (counter continued, no reboot)."""
    for stop, start, stopped in (("pause", "unpause", "PAUSED"),
                                 ("suspend", "resume", "SUSPENDED")):
        openstack("server", stop, server_id)
        wait_settled(story.demo, server_id, stopped, stop)
        openstack("server", start, server_id)
        wait_settled(story.demo, server_id, "ACTIVE", start)
        assert_same_guest(expected, story.observe(server_id))


def test_shelve_and_unshelve_keep_memory_and_disk(clouds, base_images):
    demo, _ = clouds
    story = cloud.NovaStory(*clouds)
    try:
        resumed = story.boot("shelve", base_images[model.BASE_DISK])
        expected = story.customize(resumed.id)
        t0 = time.monotonic()
        openstack("server", "shelve", resumed.id)   # returns once task_state is shelving
        server = wait_settled(demo, resumed.id, "SHELVED_OFFLOADED", "shelve")
        t_shelve = time.monotonic() - t0
        shelved = [i for i in demo.image.images() if i.name == resumed.name + "-shelved"]
        assert len(shelved) == 1, shelved
        story.images.append(shelved[0].id)
        props = shelved[0].properties
        assert props[model.PROPERTY_TYPE] == model.OVERLAY
        assert props[model.BASE_DISK] == base_images[model.BASE_DISK]
        assert props[model.BASE_MEMORY] == base_images[model.BASE_MEMORY]
        assert shelved[0].size < 30 << 20   # the overlay, not the disk plus memory
        assert shelved[0].id not in cloudlet_client("list-base").stdout

        t0 = time.monotonic()
        openstack("server", "unshelve", resumed.id)
        server = demo.compute.wait_for_server(server, status="ACTIVE", failures=["ERROR"],
                                              wait=300, interval=0.3)
        print("\nshelve %.1fs (overlay image %.1f MiB), unshelve %.1fs (CLI to ACTIVE)"
              % (t_shelve, shelved[0].size / 2**20, time.monotonic() - t0))
        assert_same_guest(expected, story.observe(server.id))
        # nova removes the shelved image once the server runs again.
        cloud.wait_for(lambda: demo.image.find_image(shelved[0].id) is None, 60,
                       "the shelved image to be deleted")
    finally:
        story.cleanup()


def test_pause_suspend_and_a_compute_restart_keep_the_guest(clouds, base_images):
    demo, admin = clouds
    story = cloud.NovaStory(*clouds)
    try:
        server = story.boot("life", base_images[model.BASE_DISK])
        expected = story.customize(server.id)
        assert_pause_and_suspend_keep_memory(story, server.id, expected)

        restarted = datetime.datetime.now(datetime.timezone.utc)
        cloud.stack.restart(["nova-compute"])
        # The new process reports only after init_host (which clears a task state left
        # pending): until then an action sent to it would be reset.
        cloud.wait_for(lambda: compute_reported_since(admin, restarted), 120,
                       "the restarted nova-compute to report", interval=0.5)
        after = admin.compute.get_server(server.id)
        assert (after.status, after.power_state) == ("ACTIVE", 1), after
        assert_same_guest(expected, story.observe(server.id))
        # nova's actions still reach the server afterwards.
        openstack("server", "pause", server.id)
        wait_settled(demo, server.id, "PAUSED", "pause after the restart")
        openstack("server", "unpause", server.id)
        wait_settled(demo, server.id, "ACTIVE", "unpause after the restart")
        assert_same_guest(expected, story.observe(server.id))
    finally:
        story.cleanup()


def compute_reported_since(admin, when):
    """Every nova-compute is up and has reported after ``when`` (UTC)."""
    services = list(admin.compute.services(binary="nova-compute"))
    return services and all(
        s.state == "up" and s.updated_at and datetime.datetime.fromisoformat(
            s.updated_at.replace("Z", "")).replace(tzinfo=datetime.timezone.utc) > when
        for s in services)
