"""The embedded OpenStack with OpenStack++ enabled, as end-to-end tests and the demo use it."""

import os
import shutil
import subprocess
import sys
import time
import uuid

from client.glance_import import import_base_package, wait_active
from cloudlet_compute import imagemodel as model
from tests.guest import guest
from tests.support import story as storymod

sys.path.insert(0, str(guest.REPO_DIR / "stack"))
import stack  # noqa: E402


def up():
    """Start the stack (idempotent) with the cloudlet driver and API router."""
    return stack.up(cloudlet=True)


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
    ports = wait_for(lambda: stack.domain_serial_ports(name), 30, "serial ports of " + name)
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


# Runs in the provider network's namespace: one HTTP GET, prints the body (exit 1 on failure).
HTTP_GET = """
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))
    s.settimeout(float(sys.argv[3]))
    s.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
    data = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    print(data.decode(errors="replace"))
except OSError as exc:
    print("%s: %s" % (type(exc).__name__, exc))
    sys.exit(1)
"""


def http_get(ip, port, timeout=2.0, cloud_name="a"):
    """The body of ``GET /`` from ``ip:port``, asked from cloud ``cloud_name``'s provider
    network; None if the TCP connection or the request failed."""
    r = subprocess.run(stack.netns_argv([sys.executable, "-c", HTTP_GET, ip, str(port),
                                               str(timeout)], name=cloud_name),
                       capture_output=True, text=True, timeout=timeout * 3 + 10)
    return r.stdout if r.returncode == 0 else None


def upload_guest(conn, tag, guest_dir, created):
    """Upload the tiny guest as kernel, ramdisk and disk images named ``tag-*`` (appended to
    ``created`` as they are made, for the caller's cleanup); return the disk image."""
    kernel, ramdisk = upload_kernel(conn, tag, guest_dir, created)
    disk = conn.image.create_image(
        name=tag + "-disk", filename=str(guest_dir / "disk.raw"), disk_format="raw",
        container_format="bare", visibility="private", **boot_properties(kernel, ramdisk))
    created.append(disk)
    return disk


def boot_properties(kernel, ramdisk):
    """Image properties that boot the tiny guest's disk with its kernel and ramdisk."""
    return {"kernel_id": kernel.id, "ramdisk_id": ramdisk.id,
            "os_command_line": guest.KERNEL_CMDLINE}


def upload_kernel(conn, tag, guest_dir, created):
    """Upload the tiny guest's kernel and ramdisk (``tag-kernel``, ``tag-ramdisk``, appended
    to ``created``); return both images."""
    kernel = conn.image.create_image(
        name=tag + "-kernel", filename=str(guest_dir / "vmlinuz"), disk_format="aki",
        container_format="aki", visibility="private")
    created.append(kernel)
    ramdisk = conn.image.create_image(
        name=tag + "-ramdisk", filename=str(guest_dir / "initrd.img"), disk_format="ari",
        container_format="ari", visibility="private")
    created.append(ramdisk)
    return kernel, ramdisk


def env():
    """Environment for CLI runs against the stack (clouds.yaml)."""
    return dict(os.environ, OS_CLIENT_CONFIG_FILE=stack.clouds_yaml_path())


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

    def boot(self, role, image_id, overlay_url=None, networks="none", status="ACTIVE"):
        """POST /servers from a base disk image (resume), or with overlay_url (synthesis).
        ``networks``: nova's value (``"none"``, or ``[{"uuid": net_id}]``); ``status``: the
        state to wait for (``"ERROR"`` for a build that must fail)."""
        metadata = {model.METADATA_OVERLAY_URL: overlay_url} if overlay_url else {}
        server = self.demo.compute.create_server(
            name="%s-%s" % (self.tag, role), image_id=image_id, flavor_id=self.flavor.id,
            networks=networks, metadata=metadata)
        self.servers.append(server.id)
        failures = ["ERROR"] if status != "ERROR" else ["ACTIVE"]
        return self.demo.compute.wait_for_server(server, status=status, failures=failures,
                                                 wait=300)

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
