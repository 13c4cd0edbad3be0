"""The embedded OpenStack with OpenStack++ enabled, as end-to-end tests and the demo use it."""

import os
import sys
import time

from tests.guest import guest

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


def env():
    """Environment for CLI runs against the stack (clouds.yaml)."""
    return dict(os.environ, OS_CLIENT_CONFIG_FILE=stack.clouds_yaml_path())
