"""nova's hard reboot and stop/start of cloudlet servers boot the guest from its own disk.

The tiny guest boots with direct kernel boot; its base, imported into Glance, carries the
kernel and ramdisk as images its disk image names (nova's ``kernel_id``, ``ramdisk_id``,
``os_command_line``). A server resumed from it, and one synthesized from an overlay of a
customized server, are customized on disk (synced); after ``openstack server reboot --hard``
and after ``openstack server stop``/``start`` the guest answers on its channel from a fresh
boot (the RAM-only shell variable and tmpfs data gone, uptime restarted) with the customized
file still on its disk.
"""

import time
import uuid

from cloudlet_compute import imagemodel as model
from stack import story as storymod
from stack.guest import guest
from tests.client.conftest import as_json, cloudlet_client, openstack
from tests.e2e.test_lifecycle import wait_settled
from tests.support import cloud

# A file on the guest's disk (synced) and a shell variable only in its memory.
MARK = "echo {token} > /mnt/reboot-mark; sync; REBOOT_VAR={token}"
READ_MARK = "echo mark=$(cat /mnt/reboot-mark); echo var=$REBOOT_VAR; " \
    "echo uptime=$(cut -d' ' -f1 /proc/uptime)"


def read_guest(story, server_id):
    with cloud.guest_channel(story.admin, server_id) as chan:
        return storymod.parse_observation(chan.run(READ_MARK))


def assert_fresh_boots_keep_the_disk(story, server_id):
    """Mark the disk and the memory; hard reboot, then stop/start: each time the guest
    boots again from its disk (mark kept, variable gone, uptime shorter than the time since
    the action began: a restored guest's uptime counts from its base's boot)."""
    token = uuid.uuid4().hex
    with cloud.guest_channel(story.admin, server_id) as chan:
        chan.run(MARK.format(token=token), timeout=60)
    assert read_guest(story, server_id)["var"] == token
    for actions in ((("reboot", "--hard"), "ACTIVE"),), ((("stop",), "SHUTOFF"),
                                                       (("start",), "ACTIVE")):
        began = time.monotonic()
        for action, status in actions:
            openstack("server", *action, server_id)
            wait_settled(story.demo, server_id, status, " ".join(action))
        after = read_guest(story, server_id)
        assert after["mark"] == token, (actions, after)          # the customized disk
        assert after["var"] == "", (actions, after)              # booted, not restored
        assert float(after["uptime"]) < time.monotonic() - began, (actions, after)


def test_base_images_name_the_kernel_and_ramdisk(clouds, base_images):
    demo, _ = clouds
    disk = demo.image.get_image(base_images[model.BASE_DISK])
    assert (disk.kernel_id, disk.ramdisk_id, disk.os_command_line) == (
        base_images[model.BASE_KERNEL], base_images[model.BASE_RAMDISK], guest.KERNEL_CMDLINE)
    for image_type, fmt in model.BOOT_FORMATS.items():
        image = demo.image.get_image(base_images[image_type])
        assert (image.disk_format, image.container_format, image.status) == (fmt, fmt, "active")
        assert image.properties[model.PROPERTY_TYPE] == image_type
    listed = {row["id"] for row in as_json(cloudlet_client("--json", "list-base"))}
    assert base_images[model.BASE_DISK] in listed
    assert not listed & {base_images[model.BASE_KERNEL], base_images[model.BASE_RAMDISK]}


def test_hard_reboot_and_stop_start_of_resumed_and_synthesized_servers(clouds, base_images):
    story = cloud.NovaStory(*clouds)
    try:
        resumed = story.boot("resumed", base_images[model.BASE_DISK])
        expected = story.customize(resumed.id)
        overlay_id = story.overlay_finish(resumed.id)
        synthesized = story.boot("synth", base_images[model.BASE_DISK],
                                 overlay_image=overlay_id)
        assert story.observe(synthesized.id)["var"] == expected["var"]   # memory restored
        for server in (resumed, synthesized):
            assert_fresh_boots_keep_the_disk(story, server.id)
            observed = story.observe(server.id)
            assert observed["file"] == expected["file"]     # the customization's 4 MiB file
            assert observed["rand"] != expected["rand"]     # tmpfs is gone
    finally:
        story.cleanup()
