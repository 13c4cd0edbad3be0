"""The cloudlet story through Nova on the embedded OpenStack, as the demo and the tests tell it.

``NovaStory``: import a base package into Glance, boot it (resume), customize the guest over
nova's serial console, ``cloudlet-overlay-finish``, boot with ``overlay_url`` (synthesis),
read the guest's state back; and the helpers it is made of.
"""

import shutil
import time
import uuid

from client.core.bases import import_base_package
from client.core.waiting import wait_image_active as wait_active
from cloudlet_compute import imagemodel as model

from . import story as storymod
from .control import domain_serial_ports
from .guest import guest


def wait_for(condition, timeout, what, interval=1.0):
    """Poll ``condition`` until it returns something true; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %d s waiting for %s" % (timeout, what))
        time.sleep(interval)


def server_action(conn, server_id, body):
    """POST a server action; return the keystoneauth response (no raise on 4xx)."""
    return conn.compute.post("/servers/%s/action" % server_id, json=body,
                             raise_exc=False)


def guest_channel(admin, server_id, timeout=120):
    """A ready command channel to the server's guest shell: its second serial port, a
    nova TCP serial console on 127.0.0.1 (found through the domain's XML)."""
    name = admin.compute.get_server(server_id).instance_name
    ports = wait_for(lambda: domain_serial_ports(name), 30, "serial ports of " + name)
    chan = guest.GuestChannel(tcp=("127.0.0.1", ports[1]))
    chan.wait_ready(timeout)
    return chan


def delete_server(conn, server_id):
    """Delete a server and wait until it is gone (best effort)."""
    try:
        conn.compute.delete_server(server_id, ignore_missing=True)
        conn.compute.wait_for_delete(conn.compute.get_server(server_id), wait=120)
    except Exception:  # noqa: BLE001 - cleanup
        pass


class NovaStory:
    """The cloudlet story through Nova (HTTP only, as the demo user), step by step."""

    def __init__(self, demo, admin, flavor="cl.tiny"):
        self.demo, self.admin = demo, admin
        self.flavor = demo.compute.find_flavor(flavor)
        self.tag = "story-%s" % uuid.uuid4().hex[:6]
        self.servers, self.images = [], []
        self.scratch = None   # a directory of the caller's, removed by cleanup()

    def import_base(self, package):
        """Import a base package; return ``{cloudlet_type: image id}``."""
        ids = import_base_package(self.demo, package, name=self.tag)
        self.images += ids.values()
        return ids

    def boot(self, role, image_id, overlay_url=None, networks="none", status="ACTIVE",
             overlay_image=None):
        """POST /servers from a base disk image (resume), or with overlay_url or
        overlay_image (synthesis). ``networks``: nova's value (``"none"``, or
        ``[{"uuid": net_id}]``); ``status``: the state to wait for (``"ERROR"`` for a build
        that must fail)."""
        return self.boot_many([role], image_id, overlay_url, networks, status,
                              overlay_image)[0]

    def boot_many(self, roles, image_id, overlay_url=None, networks="none", status="ACTIVE",
                  overlay_image=None):
        """``boot`` one server per role, all POSTed before the first is waited for."""
        metadata = {model.METADATA_OVERLAY_URL: overlay_url} if overlay_url else {}
        if overlay_image:
            metadata[model.METADATA_OVERLAY_IMAGE] = overlay_image
        servers = []
        for role in roles:
            servers.append(self.demo.compute.create_server(
                name="%s-%s" % (self.tag, role), image_id=image_id, flavor_id=self.flavor.id,
                networks=networks, metadata=metadata))
            self.servers.append(servers[-1].id)
        failures = ["ERROR"] if status != "ERROR" else ["ACTIVE"]
        return [self.demo.compute.wait_for_server(server, status=status, failures=failures,
                                                  wait=300) for server in servers]

    def customize(self, server_id):
        """Change memory and disk in the guest; return what it then reports."""
        with guest_channel(self.admin, server_id) as chan:
            chan.run(storymod.CUSTOMIZE.format(token=uuid.uuid4().hex), timeout=120)
            return storymod.parse_observation(chan.run(storymod.OBSERVE))

    def observe(self, server_id):
        """What the guest reports (``story.OBSERVE``)."""
        with guest_channel(self.admin, server_id) as chan:
            return storymod.parse_observation(chan.run(storymod.OBSERVE))

    def overlay_finish(self, server_id):
        """cloudlet-overlay-finish; wait for the overlay image; return its id."""
        resp = server_action(self.demo, server_id,
                             {"cloudlet-overlay-finish": {"overlay-name": self.tag + "-ov"}})
        if resp.status_code != 202:
            raise AssertionError("cloudlet-overlay-finish: %d %s" % (resp.status_code, resp.text))
        overlay_id = resp.json()["overlay-id"]
        self.images.append(overlay_id)
        wait_active(self.demo, overlay_id, timeout=300)
        wait_for(lambda: self.demo.compute.get_server(server_id).task_state is None, 120,
                 "server %s to finish its task" % server_id)
        return overlay_id

    def download(self, image_id, path):
        """Download an image's data to ``path``."""
        self.demo.image.download_image(image_id, output=path)
        return path

    def cleanup(self):
        """Delete the servers and images this story made."""
        for server_id in self.servers:
            delete_server(self.demo, server_id)
        for image_id in self.images:
            self.demo.image.delete_image(image_id, ignore_missing=True)
        if self.scratch:
            shutil.rmtree(self.scratch, ignore_errors=True)
