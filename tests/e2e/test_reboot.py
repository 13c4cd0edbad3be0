"""nova's lifecycle actions on a resumed and a synthesized server, each checked in the guest.

The tiny guest boots with direct kernel boot; its base, imported into Glance, carries the
kernel and ramdisk as images its disk image names (nova's ``kernel_id``, ``ramdisk_id``,
``os_command_line``). A server resumed from it, and one synthesized from an overlay of a
customized server (both on ports of the provider network), are customized on disk (synced):

- pause/unpause and suspend/resume of the synthesized server keep its memory;
- after ``openstack server reboot --hard``, ``openstack server reboot`` (soft: the guest has
  no ACPI handler, so nova falls back to a hard reboot, which its log says) and ``openstack
  server stop``/``start`` the guest answers on its channel from a fresh boot (the RAM-only
  shell variable and tmpfs data gone, uptime restarted) with the customized file on its disk;
- ``openstack server rebuild`` to the base image gives what each server was created as: the
  resumed one a fresh resume of the base, the synthesized one a fresh synthesis of its
  overlay; rebuilt to a plain image, a server boots that image;
- deleting the resumed server releases its port, instance directory and RAM file link,
  while the base cache stays and the synthesized server of the same base runs on.
"""

import glob
import os
import time
import uuid

from cloudlet_compute import imagemodel as model
from cloudlet_compute.host import ramhook
from stack import story as storymod
from stack.guest import guest
from tests.client.conftest import as_json, cloudlet_client, openstack
from tests.compute.test_story import assert_same_guest
from tests.e2e.test_lifecycle import assert_pause_and_suspend_keep_memory, wait_settled
from tests.support import cloud, faults

# A file on the guest's disk (synced) and a shell variable only in its memory.
MARK = "echo {token} > /mnt/reboot-mark; sync; REBOOT_VAR={token}"
READ_MARK = "echo mark=$(cat /mnt/reboot-mark); echo var=$REBOOT_VAR; " \
    "echo uptime=$(cut -d' ' -f1 /proc/uptime)"
# nova's libvirt driver, when the guest did not shut down within wait_soft_reboot_seconds.
SOFT_FALLBACK = "Failed to soft reboot instance. Trying hard reboot."
# Each a sequence of (CLI action, status it ends in).
HARD, SOFT = ((("reboot", "--hard"), "ACTIVE"),), ((("reboot",), "ACTIVE"),)
STOP_START = ((("stop",), "SHUTOFF"), (("start",), "ACTIVE"))


def read_guest(story, server_id):
    with cloud.guest_channel(story.admin, server_id) as chan:
        return storymod.parse_observation(chan.run(READ_MARK))


def assert_fresh_boots_keep_the_disk(story, server_id, rounds):
    """Mark the disk and the memory; then each of ``rounds`` (HARD, SOFT, STOP_START): the
    guest boots again from its disk (mark kept, variable gone, uptime shorter than the
    time since the action began: a restored guest's uptime counts from its base's boot)."""
    token = uuid.uuid4().hex
    with cloud.guest_channel(story.admin, server_id) as chan:
        chan.run(MARK.format(token=token), timeout=60)
    assert read_guest(story, server_id)["var"] == token
    for actions in rounds:
        began, log = time.monotonic(), faults.ServiceLog("nova-compute", server_id)
        for action, status in actions:
            openstack("server", *action, server_id)
            wait_settled(story.demo, server_id, status, " ".join(action))
        after = read_guest(story, server_id)
        assert after["mark"] == token, (actions, after)          # the customized disk
        assert after["var"] == "", (actions, after)              # booted, not restored
        assert float(after["uptime"]) < time.monotonic() - began, (actions, after)
        # What a soft reboot of this guest really is: nova's hard reboot after 5 s.
        assert log.says(SOFT_FALLBACK) == (actions[0][0] == ("reboot",)), log.lines()


def ram_links(instance_name):
    """The RAM file links the libvirt hook made for domain ``instance_name``."""
    return glob.glob(os.path.join(ramhook.backing_dir(), "*-%s" % instance_name[:20],
                                  ramhook.BLOCK))


def assert_delete_releases_only_its_own(story, gone, staying, base_id):
    """Delete server ``gone``: its port, instance directory and RAM file link go, no
    qemu-nbd or scratch entry is left; the base cache stays and ``staying`` (of the same
    base) still answers."""
    admin = story.admin
    name = admin.compute.get_server(gone).instance_name
    instance_dir = faults.nova_state("instances", gone)
    base_dir = os.path.join(faults.cache_dir(), "bases", base_id)
    before = {"port": len(list(admin.network.ports(device_id=gone))),
              "instance dir": os.path.isdir(instance_dir), "ram link": len(ram_links(name))}
    assert before == {"port": 1, "instance dir": True, "ram link": 1}, before
    cloud.delete_server(story.demo, gone)
    after = {"port": list(admin.network.ports(device_id=gone)),
             "instance dir": os.path.exists(instance_dir), "ram link": ram_links(name),
             "qemu-nbd": faults.nbd_processes(), "scratch": faults.entries(faults.scratch_dir())}
    assert after == {"port": [], "instance dir": False, "ram link": [], "qemu-nbd": [],
                     "scratch": []}, after
    assert os.path.isdir(base_dir), faults.entries(faults.cache_dir())
    assert int(story.observe(staying)["tick"]) > 0    # still running


def rebuild(story, server_id, image_id):
    """``openstack server rebuild --image IMAGE``; return nova-compute's log of it."""
    log = faults.ServiceLog("nova-compute", server_id)
    openstack("server", "rebuild", "--image", image_id, server_id)
    server = wait_settled(story.demo, server_id, "ACTIVE", "rebuild to " + image_id)
    assert server.image.id == image_id
    return log


def assert_rebuilds(story, resumed, synthesized, base_disk, expected):
    """Rebuild to the base disk gives what the server was created as: the resumed server
    a fresh resume of the base (customization gone), the synthesized one a fresh synthesis
    of its overlay (the customization, not what came after it)."""
    log = rebuild(story, resumed, base_disk)
    assert log.says("cloudlet spawn: resume from base"), log.lines()
    fresh = story.observe(resumed)
    assert (fresh["var"], fresh["file"] == expected["file"]) == ("", False), fresh
    assert read_guest(story, resumed)["mark"] == ""
    log = rebuild(story, synthesized, base_disk)
    assert log.says("cloudlet spawn: synthesis from base"), log.lines()
    assert_same_guest(expected, story.observe(synthesized))
    assert read_guest(story, synthesized)["mark"] == ""


def assert_rebuild_to_a_plain_image_boots_it(story, server_id):
    uploaded = []
    plain = cloud.upload_guest(story.demo, story.tag, guest.GUEST_DIR, uploaded)
    story.images += [i.id for i in uploaded]
    # rebuild stops the server first, waiting the new image's clean-shutdown timeout.
    story.demo.image.update_image(plain.id, os_shutdown_timeout="2")
    log = rebuild(story, server_id, plain.id)
    assert not log.says("cloudlet spawn"), log.lines()
    booted = read_guest(story, server_id)
    assert (booted["mark"], booted["var"]) == ("", ""), booted
    assert not os.path.exists(os.path.join(faults.nova_state("instances", server_id),
                                           ramhook.MARKER_NAME))


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


def test_lifecycle_of_resumed_and_synthesized_servers(clouds, base_images):
    story = cloud.NovaStory(*clouds)
    base_disk = base_images[model.BASE_DISK]   # stop waits 2 s for it (cloud.imported_base)
    net = story.demo.network.find_network(cloud.stack.cloud("a").provider_network,
                                          ignore_missing=False)
    try:
        resumed = story.boot("resumed", base_disk, networks=[{"uuid": net.id}])
        expected = story.customize(resumed.id)
        overlay_id = story.overlay_finish(resumed.id)
        synthesized = story.boot("synth", base_disk, overlay_image=overlay_id,
                                 networks=[{"uuid": net.id}])
        assert story.observe(synthesized.id)["var"] == expected["var"]   # memory restored
        assert_pause_and_suspend_keep_memory(story, synthesized.id, expected)
        # A soft reboot of this guest is nova's hard reboot (which its log says): the
        # synthesized server's hard reboot is its soft one.
        for server, rounds in ((resumed, (HARD, SOFT, STOP_START)),
                               (synthesized, (SOFT, STOP_START))):
            assert_fresh_boots_keep_the_disk(story, server.id, rounds)
            observed = story.observe(server.id)
            assert observed["file"] == expected["file"]     # the customization's 4 MiB file
            assert observed["rand"] != expected["rand"]     # tmpfs is gone
        assert_rebuilds(story, resumed.id, synthesized.id, base_disk, expected)
        base_id = story.demo.image.get_image(base_disk).properties[model.PROPERTY_BASE_ID]
        assert_delete_releases_only_its_own(story, resumed.id, synthesized.id, base_id)
        assert_rebuild_to_a_plain_image_boots_it(story, synthesized.id)
    finally:
        story.cleanup()
