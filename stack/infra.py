"""The host and the shared infrastructure: Debian packages, libvirtd, MariaDB, RabbitMQ, OVS.

One MariaDB, one RabbitMQ and one Open vSwitch serve every cloud; their state is in cloud a's
state dir (``p.infra``).
"""
import hashlib
import json
import os
import subprocess

from . import links, topology
from .paths import ROOT, StackError, log, prepare_dirs
from .processes import cfg_hash, port_open, running, service_env, sh, start, stop, wait
from .topology import OVS_SOCK, PORTS

# dnsmasq-utils: the DHCP agent releases a deleted port's lease with its dhcp_release. Without
# it the lease (one day) outlives the port, and when Neutron hands the freed address to a new
# port dnsmasq refuses it to the new MAC ("not using configured address ... because it is
# leased to ..."): that VM never gets an address.
PACKAGES = ["rabbitmq-server", "mariadb-server", "openvswitch-switch", "dnsmasq-base",
            "dnsmasq-utils", "iproute2", "iputils-ping"]


# --- host preparation ------------------------------------------------------------------------
def ensure_packages():
    missing = []
    for pkg in PACKAGES:
        r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True,
                           text=True)
        if "install ok installed" not in r.stdout:
            missing.append(pkg)
    if missing:
        log("installing Debian packages: " + " ".join(missing))
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        sh(["apt-get", "update", "-qq"], env=env, timeout=600)
        sh(["apt-get", "install", "-y", "-qq", "--no-install-recommends"] + missing, env=env,
           timeout=900)


def ensure_libvirt():
    r = subprocess.run(["virsh", "-c", "qemu:///system", "version"], capture_output=True)
    if r.returncode != 0:
        log("libvirtd not answering: running scripts/setup-host.sh")
        sh([os.path.join(ROOT, "scripts", "setup-host.sh")], timeout=900)


# --- MariaDB ---------------------------------------------------------------------------------
def mysql(p, sql):
    return sh(["mariadb", "--no-defaults", "-S", p.infra.mysql_sock, "-uroot", "-e", sql])


def ensure_mariadb(p):
    if running(p, "mariadb"):
        return
    if not os.path.isdir(os.path.join(p.mysql, "mysql")):
        sh(["mariadb-install-db", "--no-defaults", "--datadir=" + p.mysql, "--user=root",
            "--auth-root-authentication-method=normal", "--skip-test-db"], timeout=300)
    argv = ["mariadbd", "--no-defaults", "--datadir=" + p.mysql, "--socket=" + p.mysql_sock,
            "--pid-file=" + os.path.join(p.run, "mariadbd.pid"), "--user=root",
            "--skip-networking", "--skip-name-resolve", "--log-error=" + p.log("mariadb"),
            "--max-connections=1000", "--innodb-buffer-pool-size=128M",
            "--innodb-flush-log-at-trx-commit=0", "--innodb-doublewrite=0",
            "--character-set-server=utf8mb3", "--collation-server=utf8mb3_general_ci"]
    start(p, "mariadb", argv, service_env(p))
    wait(lambda: os.path.exists(p.mysql_sock) and mysql(p, "SELECT 1"), 60, p, "mariadb",
         "its socket")


# --- RabbitMQ --------------------------------------------------------------------------------
def rabbit_password_hash(user, password):
    """RabbitMQ's rabbit_password_hashing_sha256: base64(salt + sha256(salt + password)); the
    salt is derived from the user name so that the definitions file is stable."""
    import base64
    salt = hashlib.sha256(user.encode()).digest()[:4]
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def rabbit_definitions():
    """Users, vhosts and permissions of every cloud (loaded by RabbitMQ at boot)."""
    users, vhosts, perms = [], [], []
    for c in topology.clouds():
        vhost = c.rabbit_vhost or "/"
        users.append({"name": c.rabbit_user, "tags": "administrator" if c.is_main else "",
                      "hashing_algorithm": "rabbit_password_hashing_sha256",
                      "password_hash": rabbit_password_hash(c.rabbit_user, c.rabbit_password)})
        vhosts.append({"name": vhost})
        perms.append({"user": c.rabbit_user, "vhost": vhost, "configure": ".*",
                      "write": ".*", "read": ".*"})
    return json.dumps({"users": users, "vhosts": vhosts, "permissions": perms}, indent=1)


def ensure_rabbitmq(p):
    """One RabbitMQ for every cloud: listens on 127.0.0.1 and on the root side of the veth link
    (cloud b connects from netns stk-b); one vhost and user per cloud (definitions file).
    Restarted when its configuration changed (e.g. started by an older stack)."""
    rdir = os.path.join(p.state, "rabbitmq")
    port = PORTS["rabbitmq"]
    files = {
        "enabled_plugins": "[].\n",
        "advanced.config": "[].\n",
        "definitions.json": rabbit_definitions(),
        "rabbitmq.conf": "loopback_users.guest = true\nlisteners.tcp.1 = 127.0.0.1:%d\n"
                         "listeners.tcp.2 = %s:%d\ndisk_free_limit.absolute = 50MB\n"
                         "load_definitions = %s\n" % (port, topology.LINK_ROOT_IP, port,
                                                      os.path.join(rdir, "definitions.json")),
    }
    for fname, text in files.items():
        path = os.path.join(rdir, fname)
        if not os.path.exists(path) or open(path).read() != text:
            with open(path, "w") as f:
                f.write(text)
    h = cfg_hash([os.path.join(rdir, f) for f in sorted(files)])
    if running(p, "rabbitmq"):
        try:
            old = open(os.path.join(p.run, "rabbitmq.hash")).read()
        except OSError:
            old = ""
        if old == h:
            return
        log("rabbitmq: configuration changed (listeners, vhosts), restarting")
        stop(p, "rabbitmq")
    if port_open(port):
        raise StackError("rabbitmq: port %d already taken by a process this stack did not start"
                         % port)
    env = service_env(p, {
        "HOME": rdir, "RABBITMQ_NODENAME": "stk@localhost",
        "RABBITMQ_DIST_PORT": "25673", "ERL_EPMD_ADDRESS": topology.Cloud("a").host,
        "RABBITMQ_MNESIA_BASE": os.path.join(rdir, "mnesia"), "RABBITMQ_LOG_BASE": p.logs,
        "RABBITMQ_LOGS": "-", "RABBITMQ_ENABLED_PLUGINS_FILE": os.path.join(rdir, "enabled_plugins"),
        "RABBITMQ_PLUGINS_EXPAND_DIR": os.path.join(rdir, "plugins-expand"),
        "RABBITMQ_PID_FILE": os.path.join(rdir, "rabbit.pid"),
        "RABBITMQ_CONFIG_FILE": os.path.join(rdir, "rabbitmq"),
        "RABBITMQ_ADVANCED_CONFIG_FILE": os.path.join(rdir, "advanced.config"),
    })
    start(p, "rabbitmq", ["/usr/lib/rabbitmq/bin/rabbitmq-server"], env, h)
    wait(lambda: port_open(port) and port_open(port, topology.LINK_ROOT_IP), 90, p,
         "rabbitmq", "AMQP port")


# --- Open vSwitch ----------------------------------------------------------------------------
def ovs_vsctl(*args, check=True):
    return sh(["ovs-vsctl", "--timeout=20"] + list(args), check=check)


def ensure_ovs(p):
    db = os.path.join(p.state, "ovs", "conf.db")
    if not running(p, "ovsdb-server"):
        if os.path.exists(OVS_SOCK):
            r = subprocess.run(["ovs-vsctl", "--timeout=2", "show"], capture_output=True)
            if r.returncode == 0:
                raise StackError("an ovsdb-server this stack did not start is serving %s; "
                                 "stop it first" % OVS_SOCK)
        if not os.path.exists(db):
            sh(["ovsdb-tool", "create", db, "/usr/share/openvswitch/vswitch.ovsschema"])
        elif sh(["ovsdb-tool", "needs-conversion", db,
                 "/usr/share/openvswitch/vswitch.ovsschema"]).stdout.strip() == "yes":
            sh(["ovsdb-tool", "convert", db, "/usr/share/openvswitch/vswitch.ovsschema"])
        sh(["ovsdb-server", db, "--remote=punix:" + OVS_SOCK,
            "--remote=db:Open_vSwitch,Open_vSwitch,manager_options",
            "--pidfile=" + p.pidfile("ovsdb-server"), "--detach",
            "--log-file=" + p.log("ovsdb-server")])
        wait(lambda: running(p, "ovsdb-server") and os.path.exists(OVS_SOCK), 20,
             p, "ovsdb-server", "its socket")
        ovs_vsctl("--no-wait", "init")
        # Without TSO support in the userspace datapath guests' TCP replies get bad checksums.
        ovs_vsctl("--no-wait", "set", "Open_vSwitch", ".",
                  "other_config:userspace-tso-enable=true")
        ovs_vsctl("--no-wait", "set-manager", "ptcp:6640:127.0.0.1")
    if not running(p, "ovs-vswitchd"):
        sh(["ovs-vswitchd", "unix:" + OVS_SOCK, "--pidfile=" + p.pidfile("ovs-vswitchd"),
            "--detach", "--log-file=" + p.log("ovs-vswitchd")])
        wait(lambda: running(p, "ovs-vswitchd"), 20, p, "ovs-vswitchd", "its pidfile")


def ensure_bridges(c):
    """The cloud's provider bridge (the OVS agent makes its integration bridge)."""
    ovs_vsctl("--may-exist", "add-br", c.provider_bridge, "--", "set", "Bridge",
              c.provider_bridge, "datapath_type=netdev")


def ensure_infra(p):
    """The shared MariaDB (state in cloud a's state dir) and the link between the clouds
    (RabbitMQ listens on its root side); `up` then starts RabbitMQ and OVS."""
    if p.infra is not p:
        prepare_dirs(p.infra)
    links.ensure_link()
    ensure_mariadb(p.infra)
