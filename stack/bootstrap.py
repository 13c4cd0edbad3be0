"""What a cloud holds once its services run: keys, identity, compute host, flavors, network.

Keystone's key repositories, STATE/clouds.yaml and the openstacksdk connections it gives
(``connect``), the service users, projects and endpoints, nova-compute's registration and cell
mapping, the flavors, the shared provider network and its DHCP, the demo security group. Each
step is idempotent (markers in STATE/done for the first-run ones).
"""
import os
import socket
import time

from .configs import nova_conf_args
from .paths import VBIN, clouds_yaml_path
from .processes import fail, service_env, sh, wait
from .topology import (ADMIN_PASSWORD, DEMO_PASSWORD, FLAVORS, REGION, SERVICE_PASSWORD,
                       SERVICE_USERS)


def connect(cloud="cloudlet-demo", state_dir=None, name="a"):
    """An openstacksdk Connection for cloud 'cloudlet-admin' or 'cloudlet-demo' of stack NAME
    (or of the stack whose state dir is STATE_DIR)."""
    import openstack.config.loader
    import openstack.connection
    cfg = openstack.config.loader.OpenStackConfig(
        config_files=[clouds_yaml_path(state_dir, name)])
    return openstack.connection.Connection(config=cfg.get_one(cloud=cloud))


# --- identity (first run) --------------------------------------------------------------------
def ensure_keystone_keys(p):
    """What `keystone-manage fernet_setup` / `credential_setup` make: a key repository with a
    staged key 0 and a primary key 1 (32 random bytes, urlsafe base64), mode 0600."""
    import base64
    for sub in ("fernet-keys", "credential-keys"):
        d = os.path.join(p.state, "keystone", sub)
        if os.path.exists(os.path.join(d, "1")):
            continue
        os.makedirs(d, mode=0o700, exist_ok=True)
        for n in ("0", "1"):
            fd = os.open(os.path.join(d, n), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(base64.urlsafe_b64encode(os.urandom(32)))


def write_clouds_yaml(p):
    def cloud(user, pw, project):
        return ("  cloudlet-%s:\n    auth:\n      auth_url: %s\n      username: %s\n"
                "      password: %s\n      project_name: %s\n      user_domain_name: Default\n"
                "      project_domain_name: Default\n    region_name: %s\n"
                "    identity_api_version: 3\n    interface: public\n"
                % (user, p.c.keystone_url, user, pw, project, REGION))
    text = "# Written by the embedded stack (python -m stack). Use: OS_CLIENT_CONFIG_FILE=" \
           "<this file> openstack --os-cloud cloudlet-demo ...\nclouds:\n" \
           + cloud("admin", ADMIN_PASSWORD, "admin") + cloud("demo", DEMO_PASSWORD, "demo")
    with open(os.path.join(p.state, "clouds.yaml"), "w") as f:
        f.write(text)


def ensure_identity(p, conn):
    if os.path.exists(p.marker("identity")):
        return
    idt = conn.identity

    def role(name):
        return idt.find_role(name) or idt.create_role(name=name)

    def project(name):
        return idt.find_project(name, domain_id="default") or idt.create_project(
            name=name, domain_id="default", description="OpenStack++ embedded stack")

    def user(name, pw, proj):
        u = idt.find_user(name, domain_id="default")
        if u is None:
            u = idt.create_user(name=name, password=pw, domain_id="default",
                                default_project_id=proj.id)
        return u

    admin_r, member_r, service_r = role("admin"), role("member"), role("service")
    service_p, demo_p = project("service"), project("demo")
    for name in SERVICE_USERS:
        u = user(name, SERVICE_PASSWORD, service_p)
        for r in (admin_r, service_r):
            idt.assign_project_role_to_user(service_p, u, r)
    demo_u = user("demo", DEMO_PASSWORD, demo_p)
    idt.assign_project_role_to_user(demo_p, demo_u, member_r)
    for stype, (sname, url) in p.c.endpoints.items():
        svc = next(iter(idt.services(type=stype)), None) or idt.create_service(
            name=sname, type=stype)
        have = {ep.interface for ep in idt.endpoints(service_id=svc.id)}
        for iface in ("public", "internal"):
            if iface not in have:
                idt.create_endpoint(service_id=svc.id, interface=iface, url=url,
                                    region_id=REGION)
    open(p.marker("identity"), "w").close()


# --- nova ------------------------------------------------------------------------------------
def _nova_host_mapped(p, host):
    import pymysql
    c = pymysql.connect(unix_socket=p.infra.mysql_sock, user="root",
                        database=p.c.db("nova_api"))
    try:
        with c.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM host_mappings WHERE host=%s", (host,))
            return cur.fetchone()[0] > 0
    finally:
        c.close()


_PREREGISTER = r"""
import sys, uuid
from nova import config, context, objects
from nova.virt import node
config.parse_args(["nova-compute"] + sys.argv[2:])
objects.register_all()
ctx = context.get_admin_context()
if objects.Service.get_by_host_and_binary(ctx, sys.argv[1], "nova-compute") is None:
    objects.Service(ctx, host=sys.argv[1], binary="nova-compute", topic="compute",
                    report_count=0).create()
if node.read_local_node_uuid() is None:
    node.write_local_node_uuid(str(uuid.uuid4()))
"""


def preregister_compute(p, settings):
    """Create nova-compute's service record (and node identity) before its first start.

    On a new service record nova-compute refuses to start when the hypervisor already runs
    domains (_sanity_check_new_host), and the libvirtd here is shared with other users' domains.
    With the record present nova-compute starts as on any later start of an existing host.
    """
    if os.path.exists(p.marker("compute-registered")):
        return
    _, nova_args = nova_conf_args(p, settings, compute=True)
    sh([os.path.join(VBIN, "python"), "-c", _PREREGISTER, p.c.nova_host] + nova_args,
       env=service_env(p))
    open(p.marker("compute-registered"), "w").close()


def ensure_compute_ready(p, conn, settings):
    """nova-compute created its compute node (seen as its resource provider), reports up, and
    its host is mapped to cell1 (discover_hosts maps hosts that have a compute node)."""
    host = p.c.nova_host
    node = socket.gethostname()  # libvirt's hostname: the compute node's name
    wait(lambda: any(True for _ in conn.placement.resource_providers(name=node)), 150, p,
         "nova-compute", "its resource provider in placement")

    # A report from the running process: later than its start (a record's age alone says "up"
    # for a minute after a restart or pre-registration).
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(
        os.stat(p.pidfile("nova-compute")).st_mtime - 1))

    def compute_up():
        return any(s.state == "up" and s.host == host and (s.updated_at or "") >= since
                   for s in conn.compute.services(binary="nova-compute"))
    wait(compute_up, 90, p, "nova-compute", "nova-compute to report up")
    if not _nova_host_mapped(p, host):
        _, nova_args = nova_conf_args(p, settings)
        sh([os.path.join(VBIN, "nova-manage")] + nova_args + ["cell_v2", "discover_hosts"],
           env=service_env(p))
        if not _nova_host_mapped(p, host):
            fail(p, "nova-compute", "nova-manage cell_v2 discover_hosts did not map host %s"
                 % host)


def ensure_flavors(conn):
    for name, vcpus, ram, disk, specs in FLAVORS:
        fl = conn.compute.find_flavor(name, ignore_missing=True)
        if fl is None:
            fl = conn.compute.create_flavor(name=name, vcpus=vcpus, ram=ram, disk=disk,
                                            is_public=True)
            conn.compute.create_flavor_extra_specs(fl, specs)


# --- neutron ---------------------------------------------------------------------------------
def ensure_provider_network(conn, c):
    net = conn.network.find_network(c.provider_network)
    if net is None:
        net = conn.network.create_network(
            name=c.provider_network, is_shared=True, provider_network_type="flat",
            provider_physical_network="physnet1")
    if conn.network.find_subnet(c.provider_subnet) is None:
        conn.network.create_subnet(
            name=c.provider_subnet, network_id=net.id, ip_version=4, cidr=c.provider_cidr,
            gateway_ip=c.provider_host_ip, enable_dhcp=True,
            allocation_pools=[{"start": c.provider_pool[0], "end": c.provider_pool[1]}])
    return net


def ensure_demo_security_group(p):
    """The demo project's default group accepts ICMP, TCP and UDP (the tests reach guests)."""
    if os.path.exists(p.marker("demo-secgroup")):
        return
    demo = connect("cloudlet-demo", p.state)
    sg = next(iter(demo.network.security_groups(name="default",
                                                 project_id=demo.current_project_id)))
    have = {(r.direction, r.protocol, r.ether_type) for r in
            demo.network.security_group_rules(security_group_id=sg.id)}
    for proto in ("icmp", "tcp", "udp"):
        if ("ingress", proto, "IPv4") not in have:
            demo.network.create_security_group_rule(
                security_group_id=sg.id, direction="ingress", ether_type="IPv4",
                protocol=proto, remote_ip_prefix="0.0.0.0/0")
    open(p.marker("demo-secgroup"), "w").close()


def agents_alive(conn, agent_type):
    return any(a.is_alive and a.agent_type == agent_type for a in conn.network.agents())


def ensure_dhcp_hosting(conn, net):
    if not list(conn.network.network_hosting_dhcp_agents(net)):
        for a in conn.network.agents(agent_type="DHCP agent"):
            if a.is_alive:
                conn.network.add_dhcp_agent_to_network(a, net)
                return


def dhcp_port_active(conn, net):
    ports = list(conn.network.ports(network_id=net.id, device_owner="network:dhcp"))
    return any(pt.status == "ACTIVE" for pt in ports)
