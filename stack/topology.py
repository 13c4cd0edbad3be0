"""Every per-cloud fact of the embedded OpenStack, as one object: ``Cloud(name)``.

Two clouds can run side by side on this host, sharing one MariaDB, one RabbitMQ, one Open
vSwitch and one libvirtd:

* ``a``, the main one: services on 127.0.0.1 in the root network namespace, state dir
  ``.state/stack`` (or ``$CLOUDLET_STACK_DIR``), provider network 10.250.0.0/24 reached from
  netns ``stk-ext``.
* ``b``: every OpenStack service inside netns ``stk-b`` on 10.251.0.2 (same ports), reached from
  the root namespace through the veth pair ``stkv-a`` (10.251.0.1, root side) / ``stkv-b``
  (10.251.0.2, in ``stk-b``); state dir ``.state/stack-b``; databases ``<db>_b``; RabbitMQ vhost
  ``b``; bridges ``br-int-b`` / ``br-ex-b``; provider network 10.252.0.0/24 reached from netns
  ``stk-ext-b``; libvirt domains ``stkb-*``; serial ports 10400-10499.

Nothing here touches the system: the rest of the package acts on these facts.
"""
import os
import socket

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEFAULT_STATE = os.path.join(ROOT, ".state", "stack")

NAMES = ("a", "b")
PORTS = {
    "rabbitmq": 5672,
    "keystone": 5000,
    "placement": 8778,
    "glance": 9292,
    "nova-api": 8774,
    "neutron-api": 9696,
}
OVS_SOCK = "/var/run/openvswitch/db.sock"

# The link between the clouds: a veth pair, root namespace <-> netns of cloud b.
LINK_NETNS = "stk-b"            # where b's services run
LINK_ROOT_DEV = "stkv-a"        # root-namespace end
LINK_NS_DEV = "stkv-b"          # end inside LINK_NETNS
LINK_ROOT_IP = "10.251.0.1"
LINK_NS_IP = "10.251.0.2"
LINK_PREFIX = 24
# The root namespace under a name: b's root helper (STATE/bin/sudo) runs privileged commands
# (privsep daemons, dnsmasq) there, where ovs-vswitchd creates the OVS internal ports.
HOST_NETNS = "stk-host"

REGION = "RegionOne"
ADMIN_PASSWORD = "cloudlet-admin"
DEMO_PASSWORD = "cloudlet-demo"
SERVICE_PASSWORD = "cloudlet-service"
SERVICE_USERS = ("nova", "glance", "placement", "neutron")
FLAVORS = [  # name, vcpus, ram MiB, disk GB, extra specs
    ("cl.tiny", 1, 256, 1, {"hw:serial_port_count": "2"}),
    ("cl.small", 1, 512, 2, {"hw:serial_port_count": "2"}),
]
# nova.conf [cloudlet] of an embedded cloud besides handoff_host: (key, value, comment above).
# The tests and the demo serve overlays from this host's loopback on ephemeral ports.
EMBEDDED_CLOUDLET_OPTIONS = (
    ("overlay_allowed_hosts", "127.0.0.1",
     "# The tests and the demo serve overlays from this host's loopback, on ephemeral ports:\n"
     "# allow exactly that (the product default refuses loopback and ports other than 80/443)."),
    ("overlay_allowed_ports", "", None),
)
DATABASES = ("keystone", "glance", "placement", "nova_api", "nova", "nova_cell0", "neutron")


def default_state_dir():
    """Cloud a's state dir; the shared infrastructure (MariaDB, RabbitMQ, OVS) lives there."""
    return os.path.abspath(os.environ.get("CLOUDLET_STACK_DIR") or DEFAULT_STATE)


class Cloud:
    """The facts of one cloud, built from its name ('a' or 'b')."""

    def __init__(self, name="a", state_dir=None):
        name = name or "a"
        if name not in NAMES:
            raise ValueError("unknown cloud %r (known: %s)" % (name, ", ".join(NAMES)))
        self.name = name
        main = name == "a"
        self.is_main = main
        self.state = os.path.abspath(state_dir) if state_dir else (
            default_state_dir() if main else os.path.join(ROOT, ".state", "stack-" + name))
        # Shared infrastructure: a's state dir (a with a custom state dir keeps its own).
        self.infra_state = self.state if main else default_state_dir()

        # Where the OpenStack services run and listen.
        self.netns = "" if main else LINK_NETNS
        self.host = "127.0.0.1" if main else LINK_NS_IP
        self.link_ip = LINK_ROOT_IP if main else LINK_NS_IP   # [cloudlet] handoff_host
        self.ports = dict(PORTS)
        self.keystone_url = "http://%s:%d/v3" % (self.host, PORTS["keystone"])
        self.endpoints = {  # service type -> (name, url)
            "compute": ("nova", "http://%s:%d/v2.1" % (self.host, PORTS["nova-api"])),
            "placement": ("placement", "http://%s:%d" % (self.host, PORTS["placement"])),
            "image": ("glance", "http://%s:%d" % (self.host, PORTS["glance"])),
            "network": ("neutron", "http://%s:%d" % (self.host, PORTS["neutron-api"])),
        }

        # Databases (one MariaDB, over its unix socket) and messaging (one RabbitMQ).
        self.db_suffix = "" if main else "_" + name
        self.rabbit_vhost = "" if main else name
        self.rabbit_user = "guest" if main else "stack-" + name
        self.rabbit_password = "guest" if main else SERVICE_PASSWORD
        rabbit_ip = "127.0.0.1" if main else LINK_ROOT_IP
        self.rabbit_url = "rabbit://%s:%s@%s:%d/%s" % (
            self.rabbit_user, self.rabbit_password, rabbit_ip, PORTS["rabbitmq"],
            self.rabbit_vhost)

        # nova / neutron host and what this cloud owns on the shared libvirtd.
        self.nova_host = socket.gethostname() if main else "cloudlet-" + name
        self.domain_prefix = "stk-" if main else "stk%s-" % name
        self.instance_name_template = self.domain_prefix + "%08x"
        self.serial_port_range = "10300:10399" if main else "10400:10499"

        # Open vSwitch (shared daemons, own bridges).
        self.integration_bridge = "br-int" if main else "br-int-" + name
        self.provider_bridge = "br-ex" if main else "br-ex-" + name
        # In netns stk-b 127.0.0.1:6640 (the OVS manager) is not the host's: use the socket.
        self.ovsdb_connection = "tcp:127.0.0.1:6640" if main else "unix:" + OVS_SOCK
        # The OVS agent's OpenFlow controller; ovs-vswitchd (root namespace) connects to it.
        self.of_listen_address = self.host

        # The provider network and where its host side lives.
        third = 250 if main else 252
        self.provider_network = "provider"
        self.provider_subnet = "provider-subnet"
        self.provider_cidr = "10.%d.0.0/24" % third
        self.provider_host_ip = "10.%d.0.1" % third
        self.provider_pool = ("10.%d.0.10" % third, "10.%d.0.250" % third)
        self.ext_port = "stk-ext0" if main else "stk-ext%s0" % name
        self.provider_netns = (os.environ.get("CLOUDLET_STACK_NETNS", "stk-ext") if main
                               else "stk-ext-" + name)

    def db(self, name):
        """This cloud's name of database NAME (keystone, nova, ...): nova_b, ...; the cell0
        database is named as `nova-manage cell_v2 map_cell0` derives it (nova_b_cell0)."""
        if name == "nova_cell0":
            return self.db("nova") + "_cell0"
        return name + self.db_suffix

    def ns_argv(self, argv):
        """argv prefixed to run where this cloud's services run. nsenter, not `ip netns exec`:
        that one also makes a mount namespace, and the network namespaces that the services'
        privileged helpers then create (qdhcp-*, bind mounts in /run/netns) would be visible
        in it only."""
        if not self.netns:
            return list(argv)
        return ["nsenter", "--net=/run/netns/" + self.netns, "--"] + list(argv)

    def provider_argv(self, argv):
        """argv prefixed to run where this cloud's provider network is reachable."""
        ns = self.provider_netns
        return (["ip", "netns", "exec", ns] + list(argv)) if ns else list(argv)

    def url(self, service):
        return "http://%s:%d/" % (self.host, PORTS[service])

    def __repr__(self):
        return "Cloud(%r, state=%r)" % (self.name, self.state)


def clouds():
    """Every known cloud with its default state dir."""
    return [Cloud(n) for n in NAMES]
