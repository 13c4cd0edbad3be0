"""Where things are: the repository's stack/ files, the venv's programs, a state dir's layout.

``Paths(cloud)`` names the files and directories of one cloud's state dir (its ``.infra`` those
of the shared infrastructure: MariaDB, RabbitMQ, OVS live in cloud a's state dir);
``prepare_dirs`` makes them.
"""
import os
import sys

from . import topology

HERE = os.path.dirname(os.path.abspath(__file__))   # stack/
ROOT = os.path.dirname(HERE)                          # the repository
TEMPLATES = os.path.join(HERE, "templates")
WSGI_DIR = os.path.join(HERE, "wsgi")
# The OpenStack programs: next to this Python (the venv's), else in the repository's venv.
VBIN = os.path.dirname(os.path.abspath(sys.executable))
if not os.path.exists(os.path.join(VBIN, "nova-manage")):
    VBIN = os.path.join(ROOT, ".venv", "bin")
VPREFIX = os.path.dirname(VBIN)

OVS_RUN = "/var/run/openvswitch"


class StackError(Exception):
    pass


def log(msg):
    print("stack: " + msg, flush=True)


class Paths:
    """Paths of a state dir; .c is its Cloud, .infra the Paths of the shared infrastructure
    (MariaDB, RabbitMQ, OVS: in cloud a's state dir)."""

    def __init__(self, c):
        self.c = c
        self.state = c.state
        self.etc = os.path.join(self.state, "etc")
        self.logs = os.path.join(self.state, "logs")
        self.run = os.path.join(self.state, "run")
        self.bin = os.path.join(self.state, "bin")
        self.done = os.path.join(self.state, "done")
        self.mysql = os.path.join(self.state, "mysql")
        self.mysql_sock = os.path.join(self.state, "run", "mysqld.sock")
        self.infra = self if c.infra_state == c.state else Paths(
            topology.Cloud("a", c.infra_state))

    def log(self, name):
        return os.path.join(self.logs, name + ".log")

    def pidfile(self, name):
        return os.path.join(self.run, name + ".pid")

    def marker(self, name):
        return os.path.join(self.done, name)


def state_path(state_dir=None, name="a"):
    return topology.Cloud(name, state_dir).state


def clouds_yaml_path(state_dir=None, name="a"):
    return os.path.join(state_path(state_dir, name), "clouds.yaml")


def prepare_dirs(p):
    for d in (p.state, p.etc, p.logs, p.run, p.bin, p.done, p.mysql,
              os.path.join(p.state, "nova"), os.path.join(p.state, "nova", "instances"),
              os.path.join(p.state, "glance", "images"), os.path.join(p.state, "glance", "staging"),
              os.path.join(p.state, "glance", "tasks"), os.path.join(p.state, "neutron"),
              os.path.join(p.state, "keystone"), os.path.join(p.state, "rabbitmq"),
              os.path.join(p.state, "ovs"), os.path.join(p.state, "lock"),
              os.path.join(p.etc, "nova"), os.path.join(p.etc, "glance"),
              os.path.join(p.etc, "neutron"), os.path.join(p.etc, "keystone"),
              os.path.join(p.etc, "placement"), OVS_RUN):
        os.makedirs(d, exist_ok=True)
    # libvirt-qemu must traverse down to nova's instances path.
    d = os.path.join(p.state, "nova", "instances")
    while True:
        try:
            mode = os.stat(d).st_mode
            if mode & 0o005 != 0o005:
                os.chmod(d, mode | 0o005)
        except OSError:
            pass
        parent = os.path.dirname(d)
        if parent == d:
            break
        d = parent
    sudo = os.path.join(p.bin, "sudo")
    # In a cloud whose services run in a netns, privileged commands (privsep daemons, dnsmasq,
    # `ip`) run in the host's namespace, where ovs-vswitchd creates the OVS internal ports
    # (the DHCP agent moves its port into qdhcp-*) and where libvirt makes the guests' taps.
    run = ('exec nsenter --net=/run/netns/%s -- "$@"' % topology.HOST_NETNS) \
        if p.c.netns else 'exec "$@"'
    text = ("#!/bin/sh\n# stack: services run as root; this `sudo` drops its options and"
            " runs the command%s.\n"
            "while [ $# -gt 0 ]; do case \"$1\" in --) shift; break;;"
            " -u|-g|-C) shift 2;; -*) shift;; *) break;; esac; done\n"
            "%s\n") % (" in the host's network namespace" if p.c.netns else "", run)
    if not os.path.exists(sudo) or open(sudo).read() != text:
        with open(sudo, "w") as f:
            f.write(text)
    os.chmod(sudo, 0o755)
