"""A second, independent cloud ("b") beside the main one (`python -m stack --name b`).

Starts cloud b (and a, idempotent) with OpenStack++ enabled; b's services run in netns stk-b on
10.251.0.2 and are reached from the root namespace over the veth link. Checks that the two
clouds' catalogs, hosts and projects are separate, then boots a cl.tiny server on b's provider
network from the tiny test guest (as b's demo user), sees it ACTIVE as libvirt domain stkb-*,
its port ACTIVE and bound to b's integration bridge, and reaches the guest's DHCP address over
TCP from netns stk-ext-b. Deletes everything it created; leaves both clouds running.
"""
import os
import subprocess
import time
import uuid

import pytest

import stack
from stack.guest import guest
from tests.support import cloud

B = stack.cloud("b")


@pytest.fixture(scope="module")
def clouds_ab():
    stack.up(cloudlet=True)
    summary = stack.up(name="b", cloudlet=True)
    assert summary["netns"] == "stk-b" and summary["host"] == "10.251.0.2"
    return {n: (stack.connect("cloudlet-demo", name=n), stack.connect("cloudlet-admin", name=n))
            for n in ("a", "b")}


def test_endpoints_are_separate(clouds_ab):
    (a_demo, a_admin), (b_demo, b_admin) = clouds_ab["a"], clouds_ab["b"]
    urls = {}
    for n, admin in (("a", a_admin), ("b", b_admin)):
        urls[n] = {ep.url for ep in admin.identity.endpoints()}
        assert len(urls[n]) >= 5, urls[n]
    assert all(u.startswith("http://127.0.0.1:") for u in urls["a"]), urls["a"]
    assert all(u.startswith("http://10.251.0.2:") for u in urls["b"]), urls["b"]
    assert b_demo.session.get_endpoint(service_type="compute").startswith("http://10.251.0.2:")
    # Own keystone (projects), own nova (compute host), own neutron (network).
    assert a_demo.current_project_id != b_demo.current_project_id
    b_hosts = {s.host for s in b_admin.compute.services(binary="nova-compute")}
    a_hosts = {s.host for s in a_admin.compute.services(binary="nova-compute")}
    assert b_hosts == {"cloudlet-b"}, b_hosts
    assert "cloudlet-b" not in a_hosts
    a_net = a_demo.network.find_network(stack.cloud("a").provider_network, ignore_missing=False)
    b_net = b_demo.network.find_network(B.provider_network, ignore_missing=False)
    assert a_net.id != b_net.id
    assert [s.cidr for s in b_demo.network.subnets(network_id=b_net.id)] == [B.provider_cidr]
    # b's handoff address on the link, a's on the root side.
    for c, want in ((stack.cloud("a"), "10.251.0.1"), (B, "10.251.0.2")):
        with open(os.path.join(c.state, "etc", "nova", "nova.conf")) as f:
            text = f.read()
        assert "handoff_host = %s\n" % want in text
        assert "cloudlet_compute.nova.weigher.CachedBaseWeigher\n" in text


def test_server_on_cloud_b(clouds_ab):
    demo, admin = clouds_ab["b"]
    gdir = guest.ensure_built(guest.GUEST_DIR)
    tag = "stk-b-" + uuid.uuid4().hex[:8]
    images, server = [], None
    try:
        t0 = time.monotonic()
        disk = cloud.upload_guest(demo, tag, gdir, images)
        flavor = demo.compute.find_flavor("cl.tiny", ignore_missing=False)
        net = demo.network.find_network(B.provider_network, ignore_missing=False)

        t1 = time.monotonic()
        server = demo.compute.create_server(name=tag, image_id=disk.id, flavor_id=flavor.id,
                                            networks=[{"uuid": net.id}])
        server = demo.compute.wait_for_server(server, status="ACTIVE", failures=["ERROR"],
                                              interval=1, wait=240)
        t_active = time.monotonic() - t1
        details = admin.compute.get_server(server.id)
        assert details.instance_name.startswith("stkb-"), details.instance_name
        assert details.compute_host == "cloudlet-b"

        ports = list(demo.network.ports(device_id=server.id))
        assert len(ports) == 1, ports
        port = cloud.wait_for(lambda: (lambda pt: pt if pt.status == "ACTIVE" else None)(
            demo.network.get_port(ports[0].id)), 60, "port ACTIVE")
        bound = admin.network.get_port(port.id)
        assert bound.binding_host_id == "cloudlet-b"
        assert bound.binding_vif_details.get("bridge_name") == B.integration_bridge, \
            bound.binding_vif_details
        fixed_ip = port.fixed_ips[0]["ip_address"]
        assert fixed_ip.startswith("10.252.0."), fixed_ip

        # The guest's shell on its second serial port (QEMU listens in the root namespace).
        serial = stack.domain_serial_ports(details.instance_name)
        assert len(serial) == 2 and all(10400 <= p <= 10499 for p in serial), serial
        token = uuid.uuid4().hex
        with guest.GuestChannel(tcp=("127.0.0.1", serial[1])) as ch:
            ch.wait_ready(timeout=120)
            cloud.wait_for(
                lambda: ch.run("cat /run/net/*/ip 2>/dev/null; true").split() == [fixed_ip],
                120, "the guest to take %s by DHCP" % fixed_ip)
            ch.run("mkdir -p /tmp/www && echo %s >/tmp/www/index.html && "
                   "httpd -p 8080 -h /tmp/www" % token)

        def http():
            return token in (cloud.http_get(fixed_ip, 8080, cloud_name="b") or "")
        cloud.wait_for(http, 60, "HTTP from %s:8080 in netns %s" % (fixed_ip, B.provider_netns))
        t_tcp = time.monotonic() - t1
        # Not from cloud a's provider namespace: the networks are separate.
        r = subprocess.run(stack.netns_argv(["ping", "-c", "1", "-W", "1", fixed_ip]),
                           capture_output=True)
        assert r.returncode != 0

        demo.compute.delete_server(server)
        demo.compute.wait_for_delete(server, interval=1, wait=120)
        server = None
        cloud.wait_for(lambda: demo.network.find_port(port.id) is None, 60, "port released")
        print("\ncloud b: upload %.1fs, boot to ACTIVE %.1fs, to TCP answer %.1fs" % (
            t1 - t0, t_active, t_tcp))
    finally:
        if server is not None:
            cloud.delete_server(demo, server.id)
        for img in images:
            demo.image.delete_image(img, ignore_missing=True)


def test_shape_link():
    stack.shape_link("25mbit")
    stack.shape_link("25mbit")  # idempotent
    try:
        q = stack.links.link_qdiscs()
        assert all("tbf" in v and "25Mbit" in v for v in q.values()), q
    finally:
        stack.unshape_link()
        stack.unshape_link()
    assert not any("tbf" in v for v in stack.links.link_qdiscs().values())
