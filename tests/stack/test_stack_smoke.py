"""Smoke test of the embedded OpenStack (the `stack` package): a real server on real Neutron.

Starts the stack if it is not running (and leaves it running for later tests). Through
openstacksdk only (HTTP), as the non-admin user `demo`: uploads the tiny test guest as
kernel (aki) + ramdisk (ari) + raw disk images, boots a cl.tiny server on the provider
network, checks that its Neutron port is ACTIVE and that the guest configured its fixed IP
over DHCP (ping from the provider network's host side, and the guest's own answer on its
second serial port, a nova TCP serial console), deletes the server and checks that the port
is released. Removes everything it created.
"""
import subprocess
import time
import uuid

import pytest

import stack
from stack.guest import guest
from tests.support import cloud, faults


@pytest.fixture(scope="module")
def running_stack():
    summary = stack.up(cloudlet=True)
    return summary


@pytest.fixture(scope="module")
def guest_dir():
    d = guest.GUEST_DIR
    if not (d / "disk.raw").exists():
        guest.ensure_built(d)
    for f in ("vmlinuz", "initrd.img", "disk.raw"):
        assert (d / f).is_file(), "guest file %s missing in %s" % (f, d)
    return d


def test_server_on_provider_network(running_stack, guest_dir):
    demo = stack.connect("cloudlet-demo")
    admin = stack.connect("cloudlet-admin")
    tag = "stk-smoke-" + uuid.uuid4().hex[:8]
    created_images, server = [], None
    try:
        t0 = time.monotonic()
        disk = cloud.upload_guest(demo, tag, guest_dir, created_images)
        for img in created_images:
            assert demo.image.get_image(img.id).status == "active"
        t_upload = time.monotonic() - t0

        flavor = demo.compute.find_flavor("cl.tiny", ignore_missing=False)
        assert flavor.extra_specs.get("hw:serial_port_count") == "2", flavor.extra_specs
        net = demo.network.find_network(stack.cloud("a").provider_network, ignore_missing=False)

        t1 = time.monotonic()
        server = demo.compute.create_server(name=tag, image_id=disk.id, flavor_id=flavor.id,
                                            networks=[{"uuid": net.id}])
        server = demo.compute.wait_for_server(server, status="ACTIVE", failures=["ERROR"],
                                              interval=1, wait=240)
        t_active = time.monotonic() - t1

        ports = list(demo.network.ports(device_id=server.id))
        assert len(ports) == 1, ports
        port = ports[0]
        assert port.network_id == net.id
        fixed_ip = port.fixed_ips[0]["ip_address"]
        port = cloud.wait_for(lambda: (lambda pt: pt if pt.status == "ACTIVE" else None)(
            demo.network.get_port(port.id)), 60, "port %s ACTIVE" % port.id)
        bound = admin.network.get_port(port.id)  # binding details are admin-only
        assert bound.binding_vif_type == "ovs", bound.binding_vif_type
        assert bound.binding_host_id == admin.compute.get_server(server.id).compute_host

        # The host side of the provider network reaches the guest at its fixed IP.
        def pings():
            r = subprocess.run(stack.netns_argv(["ping", "-c", "1", "-W", "1", fixed_ip]),
                               capture_output=True)
            return r.returncode == 0
        cloud.wait_for(pings, 90, "ping %s from the provider network" % fixed_ip, interval=0.2)
        t_ping = time.monotonic() - t1

        # The guest itself reports the address it got over DHCP (its shell on ttyS1, here
        # nova's TCP serial port #2 on 127.0.0.1).
        instance_name = admin.compute.get_server(server.id).instance_name
        assert instance_name.startswith("stk-")
        serial = stack.domain_serial_ports(instance_name)
        assert len(serial) == 2, serial
        with guest.GuestChannel(tcp=("127.0.0.1", serial[1])) as ch:
            ch.wait_ready(timeout=60)
            assert ch.run("cat /run/net/*/ip").split() == [fixed_ip]

        t2 = time.monotonic()
        demo.compute.delete_server(server)
        demo.compute.wait_for_delete(server, interval=1, wait=120)
        server = None
        cloud.wait_for(lambda: demo.network.find_port(port.id) is None, 60,
              "port %s released" % port.id)
        t_delete = time.monotonic() - t2
        print("\nsmoke timings: upload %.1fs, boot to ACTIVE %.1fs, to ping %.1fs, "
              "delete %.1fs" % (t_upload, t_active, t_ping, t_delete))
    finally:
        if server is not None:
            cloud.delete_server(demo, server.id)
        for img in created_images:
            demo.image.delete_image(img, ignore_missing=True)


STALE_DOMAIN_XML = """<domain type='qemu'><name>%s</name><memory unit='MiB'>16</memory>
<os><type arch='x86_64'>hvm</type></os></domain>"""


def test_domains_no_instance_owns_are_removed(running_stack, tmp_path):
    """A domain named like one of nova's, left by a stack that was killed (nova would fail to
    define its own of that name), goes; the domains of nova's instances stay."""
    name = stack.cloud("a").instance_name_template % 0x7ffffff0
    xml = tmp_path / "stale.xml"
    xml.write_text(STALE_DOMAIN_XML % name)
    virsh = ["virsh", "-c", "qemu:///system"]
    subprocess.run(virsh + ["define", str(xml)], check=True, capture_output=True)
    try:
        before = set(faults.stack_domains())
        assert name in before
        removed = stack.control.remove_stale_domains()
        assert name in removed
        after = set(faults.stack_domains())
        assert after == before - set(removed)
        admin = stack.connect("cloudlet-admin")
        owned = {s.instance_name for s in admin.compute.servers(all_projects=True)}
        assert after <= owned, after - owned
    finally:
        subprocess.run(virsh + ["undefine", name], capture_output=True)
