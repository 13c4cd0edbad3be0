"""Failures through Nova: a clear 4xx at the API, or ERROR with a fault saying why, and
nothing left behind on the compute node."""

import http.server
import os
import shutil
import threading
import uuid

import pytest

from cloudlet_compute import imagemodel as model
from cloudlet_compute.read import fetchpolicy
from stack.httpserve import FileServer
from tests.compute.test_bad_input import flipped_copy, rewrite
from tests.conftest import scratch_root
from tests.support import cloud


@pytest.fixture(scope="module")
def served(base_story):
    """A FileServer over a directory of good and crafted overlays."""
    root = scratch_root("e2e-bad")

    def other_base(meta):
        meta["base_vm_sha256"] = "ab" * 32
    shutil.copyfile(base_story.overlay, os.path.join(root, "good.zip"))
    rewrite(base_story.overlay, os.path.join(root, "other-base.zip"), other_base)
    flipped_copy(base_story.overlay, os.path.join(root, "flipped.zip"))
    with open(os.path.join(root, "notzip.zip"), "w") as f:
        f.write("not an overlay\n" * 100)
    with FileServer(root) as server:
        yield server
    shutil.rmtree(root, ignore_errors=True)


def boot_and_wait(demo, image_id, metadata):
    flavor = demo.compute.find_flavor("cl.tiny")
    server = demo.compute.create_server(name="e2e-bad-%s" % uuid.uuid4().hex[:6],
                                        image_id=image_id, flavor_id=flavor.id,
                                        networks="none", metadata=metadata)
    return demo.compute.wait_for_server(server, status="ERROR", failures=["ACTIVE"], wait=300)


@pytest.mark.parametrize("name, reason", [
    ("missing.zip", "404"),
    ("notzip.zip", "not a zip package"),
    ("flipped.zip", "blob-00000"),
    ("other-base.zip", "ab" * 32),
])
def test_bad_overlay_ends_in_error_with_reason(clouds, base_images, served, name, reason):
    demo, admin = clouds
    server = boot_and_wait(demo, base_images[model.BASE_DISK],
                           {model.METADATA_OVERLAY_URL: served.url(name)})
    try:
        fault = admin.compute.get_server(server.id).fault or {}
        assert "VM synthesis failed" in fault.get("message", ""), fault
        assert reason in fault["message"], fault
        instance = admin.compute.get_server(server.id).instance_name
        assert instance not in [d.name() for d in cloud_domains()]
    finally:
        cloud.delete_server(demo, server.id)


def test_unreachable_overlay_url(clouds, base_images):
    demo, admin = clouds
    server = boot_and_wait(demo, base_images[model.BASE_DISK],
                           {model.METADATA_OVERLAY_URL: "http://127.0.0.1:9/overlay.zip"})
    try:
        fault = admin.compute.get_server(server.id).fault or {}
        assert "cannot fetch http://127.0.0.1:9/overlay.zip" in fault.get("message", ""), fault
    finally:
        cloud.delete_server(demo, server.id)


class _Redirect(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        self.send_response(302)
        self.send_header("Location", "http://127.0.0.1:9/elsewhere.zip")
        self.send_header("Content-Length", "0")
        self.end_headers()


def test_fetch_policy_refusals_through_nova(clouds, base_images, served):
    """Issue 16, on the real stack (which allows exactly 127.0.0.1, any port): another loopback
    address, the metadata address and a closed port there are 400 at ``POST /servers`` with
    the same one line (no port oracle) and create nothing; a redirect from an allowed server
    is not followed: ERROR with that reason."""
    demo, admin = clouds
    flavor = demo.compute.find_flavor("cl.tiny")
    before = {s.id for s in demo.compute.servers()}
    port = served.server_address[1]
    for url in ("http://127.0.0.2:%d/good.zip" % port, "http://127.0.0.2:9/good.zip",
                "http://169.254.169.254/latest/meta-data", "http://[::1]:%d/good.zip" % port):
        resp = demo.compute.post("/servers", raise_exc=False, json={"server": {
            "name": "e2e-refused", "imageRef": base_images[model.BASE_DISK],
            "flavorRef": flavor.id, "networks": "none",
            "metadata": {model.METADATA_OVERLAY_URL: url}}})
        assert resp.status_code == 400, (url, resp.text)
        assert resp.json()["badRequest"]["message"] == fetchpolicy.REFUSED, resp.text
    assert {s.id for s in demo.compute.servers()} == before

    redirector = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Redirect)
    threading.Thread(target=redirector.serve_forever, daemon=True).start()
    try:
        server = boot_and_wait(demo, base_images[model.BASE_DISK], {
            model.METADATA_OVERLAY_URL: "http://127.0.0.1:%d/o.zip" % redirector.server_address[1]})
        try:
            fault = admin.compute.get_server(server.id).fault or {}
            assert "redirects are not followed" in fault.get("message", ""), fault
        finally:
            cloud.delete_server(demo, server.id)
    finally:
        redirector.shutdown()
        redirector.server_close()


def test_api_errors(clouds, base_images):
    """404 for an unknown server, 400 with a message for a bad body, 409 for a server
    in the wrong state (stopped)."""
    demo, _ = clouds
    resp = cloud.server_action(demo, str(uuid.uuid4()),
                               {"cloudlet-overlay-finish": {"overlay-name": "x"}})
    assert resp.status_code == 404, resp.text
    flavor = demo.compute.find_flavor("cl.tiny")
    server = demo.compute.wait_for_server(demo.compute.create_server(
        name="e2e-409-%s" % uuid.uuid4().hex[:6], image_id=base_images[model.BASE_DISK],
        flavor_id=flavor.id, networks="none"), wait=300)
    try:
        resp = cloud.server_action(demo, server.id, {"cloudlet-overlay-finish": {"bogus": 1}})
        assert resp.status_code == 400 and "bogus" in resp.text, resp.text
        demo.compute.stop_server(server)
        demo.compute.wait_for_server(server, status="SHUTOFF", wait=120)
        resp = cloud.server_action(demo, server.id,
                                   {"cloudlet-overlay-finish": {"overlay-name": "x"}})
        assert resp.status_code == 409, resp.text
        assert "state" in resp.json()["conflictingRequest"]["message"], resp.text
    finally:
        cloud.delete_server(demo, server.id)


def cloud_domains():
    import libvirt
    conn = libvirt.open("qemu:///system")
    try:
        return conn.listAllDomains()
    finally:
        conn.close()


def test_cloudlet_base_from_running_instance(clouds, base_images):
    """Snapshot a running (resumed) server into a new base; a server resumed from that
    base has the first server's memory (a shell variable) and disk."""
    demo, admin = clouds
    tag = "e2e-base-%s" % uuid.uuid4().hex[:6]
    servers, new_ids = [], {}
    flavor = demo.compute.find_flavor("cl.tiny")
    try:
        first = demo.compute.wait_for_server(demo.compute.create_server(
            name=tag + "-a", image_id=base_images[model.BASE_DISK], flavor_id=flavor.id,
            networks="none"), wait=300)
        servers.append(first.id)
        token = uuid.uuid4().hex
        with cloud.guest_channel(admin, first.id) as chan:
            chan.run("BASE_VAR=%s; echo %s > /mnt/base-marker; sync" % (token, token))
        resp = cloud.server_action(demo, first.id, {"cloudlet-base": {"name": tag}})
        assert resp.status_code == 202, resp.text
        new_ids = {t: resp.json()[k] for t, k in model.RESPONSE_KEYS.items()}
        for image_id in new_ids.values():
            cloud.wait_for(lambda i=image_id: demo.image.get_image(i).status == "active", 300,
                           "image %s active" % image_id)
        disk = demo.image.get_image(new_ids[model.BASE_DISK])
        assert disk.properties[model.PROPERTY_BASE_ID]
        assert disk.properties[model.BASE_MEMORY] == new_ids[model.BASE_MEMORY]
        cloud.wait_for(lambda: demo.compute.get_server(first.id).task_state is None, 120,
                       "the first server to finish cloudlet-base")
        assert demo.compute.get_server(first.id).status == "ACTIVE"

        second = demo.compute.wait_for_server(demo.compute.create_server(
            name=tag + "-b", image_id=new_ids[model.BASE_DISK], flavor_id=flavor.id,
            networks="none"), wait=300)
        servers.append(second.id)
        with cloud.guest_channel(admin, second.id) as chan:
            assert chan.run("echo $BASE_VAR; cat /mnt/base-marker").split() == [token, token]
    finally:
        for server_id in servers:
            cloud.delete_server(demo, server_id)
        for image_id in new_ids.values():
            demo.image.delete_image(image_id, ignore_missing=True)
