"""The embedded OpenStack with OpenStack++ enabled, as the end-to-end tests use it.

The story through Nova and its helpers (``NovaStory``, ``wait_for``, ``server_action``,
``guest_channel``, ``delete_server``) are in ``stack.novastory`` (the demo tells it too); the
tests reach them here as ``cloud.X`` beside the test-only helpers.
"""

import contextlib
import os
import signal
import subprocess
import sys
import uuid

import stack
from client.core.bases import import_base_package
from cloudlet_compute import imagemodel as model
from stack.guest import guest
from stack.novastory import NovaStory, delete_server, guest_channel, server_action, wait_for

__all__ = ["NovaStory", "boot_properties", "delete_server", "env", "guest_channel", "http_get",
           "imported_base", "server_action", "stack", "up", "upload_guest", "upload_kernel",
           "wait_for"]


def up():
    """Start the stack (idempotent) with the cloudlet driver and API router."""
    return stack.up(cloudlet=True)


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


@contextlib.contextmanager
def imported_base(conn, package, prefix):
    """The base package imported into Glance as ``conn``'s user, named ``PREFIX-<random>``:
    ``{cloudlet_type: id}``; its images deleted afterwards. The tiny guest has no ACPI
    power-button handler, so nova's stop would wait the whole clean-shutdown timeout (60 s)
    before forcing it off: its disk image says 2 s (``os_shutdown_timeout``; a soft reboot
    waits the stack's ``[libvirt] wait_soft_reboot_seconds`` instead)."""
    ids = import_base_package(conn, package, name="%s-%s" % (prefix, uuid.uuid4().hex[:6]))
    conn.image.update_image(ids[model.BASE_DISK], os_shutdown_timeout="2")
    try:
        yield ids
    finally:
        for image_id in ids.values():
            conn.image.delete_image(image_id, ignore_missing=True)


@contextlib.contextmanager
def frozen(service, cloud_name="a"):
    """Service ``service`` of the stack stopped (SIGSTOP) inside the block, resumed after."""
    from stack import paths, processes
    pid = processes.running(paths.Paths(stack.cloud(cloud_name)), service)
    assert pid, "%s is not running" % service
    os.kill(pid, signal.SIGSTOP)
    try:
        yield pid
    finally:
        os.kill(pid, signal.SIGCONT)


def env():
    """Environment for CLI runs against the stack (clouds.yaml)."""
    return dict(os.environ, OS_CLIENT_CONFIG_FILE=stack.clouds_yaml_path())
