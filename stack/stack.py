#!/usr/bin/env python3
"""The embedded OpenStack of OpenStack++: a real single-host cloud on 127.0.0.1.

    stack.py [--name a|b] up [--cloudlet] [--compute-driver X] [--api-router Y]
                             [--nova-extra-conf FILE]
    stack.py [--name a|b] down [--purge]
    stack.py [--name a|b] status
    stack.py [--name a|b] restart SERVICE...   # without re-rendering configuration files
    stack.py [--name a|b] netns-exec CMD...    # run CMD where the provider network lives
    stack.py shape-link [RATE] | unshape-link  # token bucket on the veth link between a and b

Cloud "a" (default) is the main one; "b" is a second, independent cloud whose services run in
netns stk-b on 10.251.0.2 (see topology.py). Both share MariaDB, RabbitMQ, Open vSwitch and
libvirtd.

Importable: up(state_dir=None, ..., name="a"), down(state_dir=None, name="a"),
status(state_dir=None, name="a"), restart(services, name="a"), clouds_yaml_path(state_dir=None,
name="a"), connect(cloud, state_dir=None, name="a"), cloud(name), provider_netns(name="a"),
netns_argv(argv, name="a"), domain_serial_ports(domain_name), shape_link(rate),
unshape_link(). See stack/README.md.

Everything runs as processes started here (no systemd); their PIDs are in STATE/run, their logs
in STATE/logs. `down` stops them by PID and leaves data and logs; `down --purge` also deletes the
state directory.
"""
import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import string
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TEMPLATES = os.path.join(HERE, "templates")
WSGI_DIR = os.path.join(HERE, "wsgi")
VBIN = os.path.dirname(os.path.abspath(sys.executable))
if not os.path.exists(os.path.join(VBIN, "nova-manage")):
    VBIN = os.path.join(ROOT, ".venv", "bin")
VPREFIX = os.path.dirname(VBIN)

sys.path.insert(0, HERE)
import links  # noqa: E402
import topology  # noqa: E402
from links import shape_link, unshape_link  # noqa: E402,F401 (API)
from topology import (ADMIN_PASSWORD, DEFAULT_STATE, DEMO_PASSWORD, FLAVORS,  # noqa: E402,F401
                      PORTS, REGION, SERVICE_PASSWORD, SERVICE_USERS, Cloud)

# --- the main cloud's facts, as module constants (every per-cloud fact is in topology.Cloud) --
_A = Cloud("a")
HOST = _A.host
SERIAL_PORT_RANGE = _A.serial_port_range
KEYSTONE_URL = _A.keystone_url
ENDPOINTS = _A.endpoints
PROVIDER_NETWORK = _A.provider_network
PROVIDER_SUBNET = _A.provider_subnet
PROVIDER_CIDR = _A.provider_cidr
PROVIDER_HOST_IP = _A.provider_host_ip
PROVIDER_POOL = _A.provider_pool
EXT_PORT = _A.ext_port
DOMAIN_PREFIX = _A.domain_prefix

DEFAULT_COMPUTE_DRIVER = "libvirt.LibvirtDriver"
DEFAULT_API_ROUTER = "nova.api.openstack.compute:APIRouterV21.factory"

# dnsmasq-utils: the DHCP agent releases a deleted port's lease with its dhcp_release. Without
# it the lease (one day) outlives the port, and when Neutron hands the freed address to a new
# port dnsmasq refuses it to the new MAC ("not using configured address ... because it is
# leased to ..."): that VM never gets an address.
PACKAGES = ["rabbitmq-server", "mariadb-server", "openvswitch-switch", "dnsmasq-base",
            "dnsmasq-utils", "iproute2", "iputils-ping"]

OVS_RUN = "/var/run/openvswitch"
OVS_SOCK = topology.OVS_SOCK

# Start order; `down` goes backwards. INFRA is shared by the clouds (cloud a's state dir).
INFRA = ["mariadb", "rabbitmq", "ovsdb-server", "ovs-vswitchd"]
SERVICES = ["keystone", "placement", "glance", "neutron-api", "neutron-rpc-server", "nova-api",
            "nova-conductor", "nova-scheduler", "nova-compute", "neutron-openvswitch-agent",
            "neutron-dhcp-agent"]
ORDER = INFRA + SERVICES


class StackError(Exception):
    pass


def cloud(name="a", state_dir=None):
    """The facts of cloud NAME ('a', the main one, or 'b'): a topology.Cloud."""
    return Cloud(name, state_dir)


def provider_netns(name="a"):
    """Name of the network namespace holding the provider network's host address ('' = root)."""
    return Cloud(name).provider_netns


def netns_argv(argv, name="a"):
    """argv prefixed so that it runs where cloud NAME's provider network is reachable."""
    return Cloud(name).provider_argv(argv)


def state_path(state_dir=None, name="a"):
    return Cloud(name, state_dir).state


def clouds_yaml_path(state_dir=None, name="a"):
    return os.path.join(state_path(state_dir, name), "clouds.yaml")


def connect(cloud="cloudlet-demo", state_dir=None, name="a"):
    """An openstacksdk Connection for cloud 'cloudlet-admin' or 'cloudlet-demo' of stack NAME
    (or of the stack whose state dir is STATE_DIR)."""
    import openstack.config.loader
    import openstack.connection
    cfg = openstack.config.loader.OpenStackConfig(
        config_files=[clouds_yaml_path(state_dir, name)])
    return openstack.connection.Connection(config=cfg.get_one(cloud=cloud))


def domain_serial_ports(domain_name):
    """TCP ports of a libvirt domain's serial devices on 127.0.0.1, in device order."""
    xml = subprocess.run(["virsh", "-c", "qemu:///system", "dumpxml", domain_name], check=True,
                         capture_output=True, text=True).stdout
    ports = []
    for m in re.finditer(r"<serial type='tcp'>(.*?)</serial>", xml, re.S):
        s = re.search(r"<source mode='bind' host='[^']*' service='(\d+)'", m.group(1))
        if s:
            ports.append(int(s.group(1)))
    return ports


# --- small helpers ---------------------------------------------------------------------------
def _log(msg):
    print("stack: " + msg, flush=True)


class _Paths:
    """Paths of a state dir; .c is its Cloud, .infra the _Paths of the shared infrastructure
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
        self.infra = self if c.infra_state == c.state else _Paths(Cloud("a", c.infra_state))

    def log(self, name):
        return os.path.join(self.logs, name + ".log")

    def pidfile(self, name):
        return os.path.join(self.run, name + ".pid")

    def marker(self, name):
        return os.path.join(self.done, name)


def _sh(argv, check=True, env=None, timeout=300, quiet=True):
    r = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout)
    if check and r.returncode != 0:
        raise StackError("%s failed (rc %d): %s" % (" ".join(argv[:4]), r.returncode,
                                                   (r.stderr or r.stdout).strip()[-2000:]))
    return r


def _port_open(port, host=HOST):
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def _http_status(url, timeout=5):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except Exception:
        return None


def _pid_alive(pid):
    if not pid:
        return False
    try:
        os.waitpid(pid, os.WNOHANG)  # reap if it is our dead child
    except ChildProcessError:
        pass
    except OSError:
        pass
    try:
        with open("/proc/%d/stat" % pid) as f:
            st = f.read().rsplit(")", 1)[1].split()[0]
        return st not in ("Z", "X")
    except OSError:
        return False


def _read_pid(p, name):
    try:
        with open(p.pidfile(name)) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


_CHILDREN = {}  # pid -> Popen of the processes this Python process started


def _running(p, name):
    pid = _read_pid(p, name)
    if pid in _CHILDREN:  # our child: right after fork its cmdline is still ours
        return pid if _CHILDREN[pid].poll() is None else None
    if pid and _pid_alive(pid):
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                cmd = f.read()
        except OSError:
            return None
        # Guard against PID reuse: our processes name the state dir or their program.
        if p.state.encode() in cmd or name.encode() in cmd or b"mariadbd" in cmd \
                or b"beam" in cmd:
            return pid
    return None


def _tail(path, n=25):
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 16384))
            lines = f.read().decode("utf-8", "replace").splitlines()
        return "\n".join(lines[-n:])
    except OSError:
        return "(no log at %s)" % path


def _fail(p, name, reason):
    log = p.log(name)
    msg = "---- tail of %s ----\n%s\n----\nstack: %s failed: %s" % (log, _tail(log), name, reason)
    raise StackError(msg)


def _wait(cond, timeout, p=None, name=None, what=""):
    deadline = time.time() + timeout
    last = None
    while True:
        try:
            if cond():
                return
        except StackError:
            raise
        except Exception as e:
            last = e
        if p is not None and name and not _running(p, name):
            _fail(p, name, "process exited while waiting for %s" % what)
        if time.time() > deadline:
            if last is not None:
                what += " (last error: %s: %s)" % (type(last).__name__, str(last)[:300])
            if p is not None and name:
                _fail(p, name, "timeout after %ds waiting for %s" % (timeout, what))
            raise StackError("timeout after %ds waiting for %s" % (timeout, what))
        time.sleep(0.3)


def _service_env(p, extra=None):
    env = dict(os.environ)
    for k in list(env):
        if k.startswith("OS_") or k in ("PYTHONPATH",):
            env.pop(k)
    env["PATH"] = ":".join([p.bin, VBIN, "/usr/local/sbin", "/usr/local/bin", "/usr/sbin",
                            "/usr/bin", "/sbin", "/bin"])
    env["HOME"] = p.state
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    if extra:
        env.update(extra)
    return env


def _start(p, name, argv, env=None, cfg_hash=""):
    """Start argv in its own session, output appended to its log, PID in run/NAME.pid."""
    logf = open(p.log(name), "ab")
    logf.write(("\n==== %s stack.py starts %s\n" % (time.strftime("%F %T"), name)).encode())
    logf.flush()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                            env=env or _service_env(p), cwd=p.state, start_new_session=True,
                            close_fds=True)
    logf.close()
    _CHILDREN[proc.pid] = proc
    with open(p.pidfile(name), "w") as f:
        f.write("%d\n" % proc.pid)
    with open(os.path.join(p.run, name + ".hash"), "w") as f:
        f.write(cfg_hash)
    return proc.pid


def _kill(pid, group, sig):
    try:
        if group:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _stop_pid(pid, group=True, timeout=10.0):
    if not _pid_alive(pid):
        return
    _kill(pid, group, signal.SIGTERM)
    deadline = time.time() + timeout
    while time.time() < deadline and _pid_alive(pid):
        time.sleep(0.1)
    if _pid_alive(pid):
        _kill(pid, group, signal.SIGKILL)
        for _ in range(50):
            if not _pid_alive(pid):
                break
            time.sleep(0.1)
    if group:  # leftovers of the process group
        _kill(pid, True, signal.SIGKILL)


# Seconds between SIGTERM and SIGKILL (nova-compute ignores SIGTERM; the other OpenStack
# services often hang in thread joins after it).
STOP_TIMEOUT = {"mariadb": 30.0, "rabbitmq": 20.0, "ovsdb-server": 5.0, "ovs-vswitchd": 5.0}
DEFAULT_STOP_TIMEOUT = 3.0
DETACHED = {"ovsdb-server", "ovs-vswitchd", "epmd"}  # they daemonize themselves and write the pidfile


def _stop(p, name):
    pid = _running(p, name)
    if pid:
        _stop_pid(pid, group=name not in DETACHED, timeout=STOP_TIMEOUT.get(name, DEFAULT_STOP_TIMEOUT))
    for suffix in (".pid", ".hash"):
        try:
            os.unlink(os.path.join(p.run, name + suffix))
        except OSError:
            pass
    return pid


def _cfg_hash(paths):
    h = hashlib.sha256()
    for path in paths:
        try:
            with open(path, "rb") as f:
                h.update(f.read())
        except OSError:
            pass
    return h.hexdigest()


# --- host preparation ------------------------------------------------------------------------
def _ensure_packages():
    missing = []
    for pkg in PACKAGES:
        r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True,
                           text=True)
        if "install ok installed" not in r.stdout:
            missing.append(pkg)
    if missing:
        _log("installing Debian packages: " + " ".join(missing))
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        _sh(["apt-get", "update", "-qq"], env=env, timeout=600)
        _sh(["apt-get", "install", "-y", "-qq", "--no-install-recommends"] + missing, env=env,
            timeout=900)


def _ensure_libvirt():
    r = subprocess.run(["virsh", "-c", "qemu:///system", "version"], capture_output=True)
    if r.returncode != 0:
        _log("libvirtd not answering: running scripts/setup-host.sh")
        _sh([os.path.join(ROOT, "scripts", "setup-host.sh")], timeout=900)


def _prepare_dirs(p):
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
    text = ("#!/bin/sh\n# stack.py: services run as root; this `sudo` drops its options and"
            " runs the command%s.\n"
            "while [ $# -gt 0 ]; do case \"$1\" in --) shift; break;;"
            " -u|-g|-C) shift 2;; -*) shift;; *) break;; esac; done\n"
            "%s\n") % (" in the host's network namespace" if p.c.netns else "", run)
    if not os.path.exists(sudo) or open(sudo).read() != text:
        with open(sudo, "w") as f:
            f.write(text)
    os.chmod(sudo, 0o755)


# --- configuration ---------------------------------------------------------------------------
def _settings(compute_driver=None, api_router=None, nova_extra_conf=None, cloudlet=False):
    return {
        "cloudlet": bool(cloudlet),
        "compute_driver": compute_driver or os.environ.get("CLOUDLET_COMPUTE_DRIVER")
        or DEFAULT_COMPUTE_DRIVER,
        "api_router": api_router or os.environ.get("CLOUDLET_API_ROUTER") or DEFAULT_API_ROUTER,
        "nova_extra_conf": os.path.abspath(nova_extra_conf or os.environ.get(
            "CLOUDLET_NOVA_EXTRA_CONF")) if (nova_extra_conf or os.environ.get(
                "CLOUDLET_NOVA_EXTRA_CONF")) else "",
    }


def _render(name, values, dest):
    with open(os.path.join(TEMPLATES, name)) as f:
        text = string.Template(f.read()).substitute(values)
    if os.path.exists(dest):
        with open(dest) as f:
            if f.read() == text:
                return
    with open(dest, "w") as f:
        f.write(text)


def _db_url(p):
    """(prefix, suffix) around a database name: the shared MariaDB over its unix socket."""
    return ("mysql+pymysql://root@localhost/",
            "%s?unix_socket=%s&charset=utf8" % (p.c.db_suffix, p.infra.mysql_sock))


def _write_configs(p, settings):
    prefix, suffix = _db_url(p)
    c = p.c
    cloudlet = ""
    if settings.get("cloudlet"):
        cloudlet = ("[cloudlet]\n# Address of this cloud on the veth link between the clouds"
                    " (VM hand-off).\nhandoff_host = %s\n" % c.link_ip)
    base = {
        "state": p.state, "etc": p.etc, "logs": p.logs, "host": c.nova_host,
        "my_ip": c.host, "rabbit_url": c.rabbit_url,
        "keystone_url": c.keystone_url, "service_password": SERVICE_PASSWORD,
        "db_prefix": prefix, "db_suffix": suffix, "serial_port_range": c.serial_port_range,
        "compute_driver": settings["compute_driver"],
        "instance_name_template": c.instance_name_template,
        "integration_bridge": c.integration_bridge, "provider_bridge": c.provider_bridge,
        "ovsdb_connection": c.ovsdb_connection, "of_listen_address": c.of_listen_address,
        "cloudlet_section": cloudlet,
    }
    with open(os.path.join(TEMPLATES, "_authtoken.inc")) as f:
        authtoken = f.read()

    def vals(user):
        v = dict(base)
        v["authtoken"] = string.Template(authtoken).substitute(
            dict(base, service_user=user))
        return v

    e = p.etc
    _render("keystone.conf", vals("keystone"), os.path.join(e, "keystone", "keystone.conf"))
    _render("placement.conf", vals("placement"), os.path.join(e, "placement", "placement.conf"))
    _render("glance-api.conf", vals("glance"), os.path.join(e, "glance", "glance-api.conf"))
    _render("nova.conf", vals("nova"), os.path.join(e, "nova", "nova.conf"))
    _render("nova-compute.conf", vals("nova"), os.path.join(e, "nova", "nova-compute.conf"))
    _render("neutron.conf", vals("neutron"), os.path.join(e, "neutron", "neutron.conf"))
    for n in ("ml2_conf.ini", "openvswitch_agent.ini", "dhcp_agent.ini"):
        _render(n, vals("neutron"), os.path.join(e, "neutron", n))
    small = {
        os.path.join(e, "nova", "nova-api.conf"): "[DEFAULT]\nlog_file = %s\n" % p.log("nova-api"),
        os.path.join(e, "neutron", "neutron-api.conf"):
            "[DEFAULT]\nlog_file = %s\n" % p.log("neutron-api"),
    }
    for path, text in small.items():
        with open(path, "w") as f:
            f.write(text)
    # Stock paste files from the venv; nova's gets the API router switch.
    shutil.copyfile(os.path.join(VPREFIX, "etc", "glance", "glance-api-paste.ini"),
                    os.path.join(e, "glance", "glance-api-paste.ini"))
    shutil.copyfile(os.path.join(VPREFIX, "etc", "neutron", "api-paste.ini"),
                    os.path.join(e, "neutron", "api-paste.ini"))
    with open(os.path.join(VPREFIX, "etc", "nova", "api-paste.ini")) as f:
        paste = f.read()
    stock = "[app:osapi_compute_app_v21]\npaste.app_factory = %s\n" % DEFAULT_API_ROUTER
    if stock not in paste:
        raise StackError("nova's api-paste.ini has no stock [app:osapi_compute_app_v21]")
    paste = paste.replace(stock, (
        "[app:osapi_compute_app_v21]\n"
        "# >>> CLOUDLET api_router: default stock %s.\n"
        "# Override: `stack.py up --api-router module:Class.factory` or CLOUDLET_API_ROUTER.\n"
        "paste.app_factory = %s\n"
        "# <<< CLOUDLET api_router\n") % (DEFAULT_API_ROUTER, settings["api_router"]))
    path = os.path.join(e, "nova", "api-paste.ini")
    if not os.path.exists(path) or open(path).read() != paste:
        with open(path, "w") as f:
            f.write(paste)
    with open(os.path.join(p.state, "settings.json"), "w") as f:
        json.dump(settings, f, indent=1)


def _nova_conf_args(p, settings, compute=False):
    files = [os.path.join(p.etc, "nova", "nova.conf")]
    if compute:
        files.append(os.path.join(p.etc, "nova", "nova-compute.conf"))
    if settings["nova_extra_conf"]:
        files.append(settings["nova_extra_conf"])
    args = []
    for f in files:
        args += ["--config-file", f]
    return files, args


def _services(p, settings):
    """name -> (argv, env, config files whose change means restart, port or None)."""
    e = p.etc
    svc = {}

    def gunicorn(name, module, env_extra, cfg_files):
        argv = [os.path.join(VBIN, "gunicorn"), "--bind", "%s:%d" % (p.c.host, PORTS[name]),
                "--workers", "1", "--worker-class", "gthread", "--threads", "8",
                "--timeout", "300", "--graceful-timeout", "3", "--chdir", WSGI_DIR,
                # Clients keep connections in a pool: with gunicorn's 2 s keep-alive a
                # request sent as the server closes an idle one fails with
                # RemoteDisconnected (seen in tests). Keep idle connections 10 minutes.
                "--keep-alive", "600",
                "--error-logfile", "-", "--name", p.c.domain_prefix + name,
                module + ":application"]
        svc[name] = (p.c.ns_argv(argv), _service_env(p, env_extra), cfg_files, PORTS[name])

    gunicorn("keystone", "wsgi_keystone",
             {"OS_KEYSTONE_CONFIG_DIR": os.path.join(e, "keystone")},
             [os.path.join(e, "keystone", "keystone.conf")])
    gunicorn("placement", "wsgi_placement",
             {"OS_PLACEMENT_CONFIG_DIR": os.path.join(e, "placement")},
             [os.path.join(e, "placement", "placement.conf")])
    gunicorn("glance", "wsgi_glance", {"OS_GLANCE_CONFIG_DIR": os.path.join(e, "glance")},
             [os.path.join(e, "glance", "glance-api.conf")])
    nova_files, nova_args = _nova_conf_args(p, settings)
    api_files = [os.path.join(e, "nova", "api-paste.ini")] + nova_files + [
        os.path.join(e, "nova", "nova-api.conf")]
    gunicorn("nova-api", "wsgi_nova_api", {"OS_NOVA_CONFIG_DIR": os.path.join(e, "nova"),
                                           "OS_NOVA_CONFIG_FILES": ";".join(api_files)},
             api_files)
    nconf = [os.path.join(e, "neutron", f) for f in ("neutron.conf", "ml2_conf.ini")]
    gunicorn("neutron-api", "wsgi_neutron_api", {
        "OS_NEUTRON_CONFIG_DIR": os.path.join(e, "neutron"),
        "OS_NEUTRON_CONFIG_FILES": "neutron.conf;ml2_conf.ini;neutron-api.conf"},
        nconf + [os.path.join(e, "neutron", "neutron-api.conf")])

    def cli(name, prog, files, extra=()):
        argv = [os.path.join(VBIN, prog)]
        for f in files:
            argv += ["--config-file", f]
        argv += list(extra)
        svc[name] = (p.c.ns_argv(argv), _service_env(p), files, None)

    cli("nova-conductor", "nova-conductor", nova_files, ["--log-file", p.log("nova-conductor")])
    cli("nova-scheduler", "nova-scheduler", nova_files, ["--log-file", p.log("nova-scheduler")])
    comp_files, _ = _nova_conf_args(p, settings, compute=True)
    cli("nova-compute", "nova-compute", comp_files)
    cli("neutron-rpc-server", "neutron-rpc-server", nconf,
        ["--log-file", p.log("neutron-rpc-server")])
    cli("neutron-openvswitch-agent", "neutron-openvswitch-agent",
        [nconf[0], os.path.join(e, "neutron", "openvswitch_agent.ini")])
    cli("neutron-dhcp-agent", "neutron-dhcp-agent",
        [nconf[0], os.path.join(e, "neutron", "dhcp_agent.ini")])
    return svc


def _service_hash(services, name):
    """What a running service's configuration is compared with: its files and command line."""
    argv, _env, cfg_files, _port = services[name]
    h = _cfg_hash(cfg_files) + " " + " ".join(argv)
    return hashlib.sha256(h.encode()).hexdigest()


def _ensure_service(p, services, name):
    """Start NAME unless running with the same configuration; True if (re)started."""
    argv, env, cfg_files, _port = services[name]
    h = _service_hash(services, name)
    pid = _running(p, name)
    if pid:
        try:
            old = open(os.path.join(p.run, name + ".hash")).read()
        except OSError:
            old = ""
        if old == h:
            return False
        _log("%s: configuration changed, restarting" % name)
        _stop(p, name)
    port = services[name][3]
    if port and _port_open(port, p.c.host):
        raise StackError("%s: port %d on %s is already taken by a process this stack did not "
                         "start (see `ss -ltnp`)" % (name, port, p.c.host))
    _start(p, name, argv, env, h)
    return True


# --- infrastructure: MariaDB, RabbitMQ, Open vSwitch ------------------------------------------
def _mysql(p, sql):
    return _sh(["mariadb", "--no-defaults", "-S", p.infra.mysql_sock, "-uroot", "-e", sql])


def _ensure_mariadb(p):
    if _running(p, "mariadb"):
        return
    if not os.path.isdir(os.path.join(p.mysql, "mysql")):
        _sh(["mariadb-install-db", "--no-defaults", "--datadir=" + p.mysql, "--user=root",
             "--auth-root-authentication-method=normal", "--skip-test-db"], timeout=300)
    argv = ["mariadbd", "--no-defaults", "--datadir=" + p.mysql, "--socket=" + p.mysql_sock,
            "--pid-file=" + os.path.join(p.run, "mariadbd.pid"), "--user=root",
            "--skip-networking", "--skip-name-resolve", "--log-error=" + p.log("mariadb"),
            "--max-connections=1000", "--innodb-buffer-pool-size=128M",
            "--innodb-flush-log-at-trx-commit=0", "--innodb-doublewrite=0",
            "--character-set-server=utf8mb3", "--collation-server=utf8mb3_general_ci"]
    _start(p, "mariadb", argv, _service_env(p))
    _wait(lambda: os.path.exists(p.mysql_sock) and _mysql(p, "SELECT 1"), 60, p, "mariadb",
          "its socket")


def _rabbit_password_hash(user, password):
    """RabbitMQ's rabbit_password_hashing_sha256: base64(salt + sha256(salt + password)); the
    salt is derived from the user name so that the definitions file is stable."""
    import base64
    salt = hashlib.sha256(user.encode()).digest()[:4]
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def _rabbit_definitions():
    """Users, vhosts and permissions of every cloud (loaded by RabbitMQ at boot)."""
    users, vhosts, perms = [], [], []
    for c in topology.clouds():
        vhost = c.rabbit_vhost or "/"
        users.append({"name": c.rabbit_user, "tags": "administrator" if c.is_main else "",
                      "hashing_algorithm": "rabbit_password_hashing_sha256",
                      "password_hash": _rabbit_password_hash(c.rabbit_user, c.rabbit_password)})
        vhosts.append({"name": vhost})
        perms.append({"user": c.rabbit_user, "vhost": vhost, "configure": ".*",
                      "write": ".*", "read": ".*"})
    return json.dumps({"users": users, "vhosts": vhosts, "permissions": perms}, indent=1)


def _ensure_rabbitmq(p):
    """One RabbitMQ for every cloud: listens on 127.0.0.1 and on the root side of the veth link
    (cloud b connects from netns stk-b); one vhost and user per cloud (definitions file).
    Restarted when its configuration changed (e.g. started by an older stack.py)."""
    rdir = os.path.join(p.state, "rabbitmq")
    port = PORTS["rabbitmq"]
    files = {
        "enabled_plugins": "[].\n",
        "advanced.config": "[].\n",
        "definitions.json": _rabbit_definitions(),
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
    h = _cfg_hash([os.path.join(rdir, f) for f in sorted(files)])
    if _running(p, "rabbitmq"):
        try:
            old = open(os.path.join(p.run, "rabbitmq.hash")).read()
        except OSError:
            old = ""
        if old == h:
            return
        _log("rabbitmq: configuration changed (listeners, vhosts), restarting")
        _stop(p, "rabbitmq")
    if _port_open(port):
        raise StackError("rabbitmq: port %d already taken by a process this stack did not start"
                         % port)
    env = _service_env(p, {
        "HOME": rdir, "RABBITMQ_NODENAME": "stk@localhost",
        "RABBITMQ_DIST_PORT": "25673", "ERL_EPMD_ADDRESS": HOST,
        "RABBITMQ_MNESIA_BASE": os.path.join(rdir, "mnesia"), "RABBITMQ_LOG_BASE": p.logs,
        "RABBITMQ_LOGS": "-", "RABBITMQ_ENABLED_PLUGINS_FILE": os.path.join(rdir, "enabled_plugins"),
        "RABBITMQ_PLUGINS_EXPAND_DIR": os.path.join(rdir, "plugins-expand"),
        "RABBITMQ_PID_FILE": os.path.join(rdir, "rabbit.pid"),
        "RABBITMQ_CONFIG_FILE": os.path.join(rdir, "rabbitmq"),
        "RABBITMQ_ADVANCED_CONFIG_FILE": os.path.join(rdir, "advanced.config"),
    })
    _start(p, "rabbitmq", ["/usr/lib/rabbitmq/bin/rabbitmq-server"], env, h)
    _wait(lambda: _port_open(port) and _port_open(port, topology.LINK_ROOT_IP), 90, p,
          "rabbitmq", "AMQP port")


def _ovs_vsctl(*args, check=True):
    return _sh(["ovs-vsctl", "--timeout=20"] + list(args), check=check)


def _ensure_ovs(p):
    db = os.path.join(p.state, "ovs", "conf.db")
    if not _running(p, "ovsdb-server"):
        if os.path.exists(OVS_SOCK):
            r = subprocess.run(["ovs-vsctl", "--timeout=2", "show"], capture_output=True)
            if r.returncode == 0:
                raise StackError("an ovsdb-server this stack did not start is serving %s; "
                                 "stop it first" % OVS_SOCK)
        if not os.path.exists(db):
            _sh(["ovsdb-tool", "create", db, "/usr/share/openvswitch/vswitch.ovsschema"])
        elif _sh(["ovsdb-tool", "needs-conversion", db,
                  "/usr/share/openvswitch/vswitch.ovsschema"]).stdout.strip() == "yes":
            _sh(["ovsdb-tool", "convert", db, "/usr/share/openvswitch/vswitch.ovsschema"])
        _sh(["ovsdb-server", db, "--remote=punix:" + OVS_SOCK,
             "--remote=db:Open_vSwitch,Open_vSwitch,manager_options",
             "--pidfile=" + p.pidfile("ovsdb-server"), "--detach",
             "--log-file=" + p.log("ovsdb-server")])
        _wait(lambda: _running(p, "ovsdb-server") and os.path.exists(OVS_SOCK), 20,
              p, "ovsdb-server", "its socket")
        _ovs_vsctl("--no-wait", "init")
        # Without TSO support in the userspace datapath guests' TCP replies get bad checksums.
        _ovs_vsctl("--no-wait", "set", "Open_vSwitch", ".",
                   "other_config:userspace-tso-enable=true")
        _ovs_vsctl("--no-wait", "set-manager", "ptcp:6640:127.0.0.1")
    if not _running(p, "ovs-vswitchd"):
        _sh(["ovs-vswitchd", "unix:" + OVS_SOCK, "--pidfile=" + p.pidfile("ovs-vswitchd"),
             "--detach", "--log-file=" + p.log("ovs-vswitchd")])
        _wait(lambda: _running(p, "ovs-vswitchd"), 20, p, "ovs-vswitchd", "its pidfile")


def _ensure_bridges(c):
    """The cloud's provider bridge (the OVS agent makes its integration bridge)."""
    _ovs_vsctl("--may-exist", "add-br", c.provider_bridge, "--", "set", "Bridge",
               c.provider_bridge, "datapath_type=netdev")


# --- databases and identity (first run) -------------------------------------------------------
class _Chains:
    """Lists of commands, each list in its own thread (one per component's database setup)."""

    def __init__(self, p, chains):
        self.p, self.errors, self.threads = p, {}, {}
        self.t0 = time.time()
        for name, cmds in chains.items():
            if not os.path.exists(p.marker("db-" + name)):
                t = threading.Thread(target=self._run, args=(name, cmds), daemon=True)
                t.start()
                self.threads[name] = t

    def _run(self, name, cmds):
        p = self.p
        with open(p.log("init-" + name), "ab") as logf:
            for argv, ok_codes in cmds:
                logf.write(("%s $ %s\n" % (time.strftime("%T"), " ".join(argv))).encode())
                logf.flush()
                r = subprocess.run(argv, stdout=logf, stderr=subprocess.STDOUT,
                                   env=_service_env(p), cwd=p.state)
                if r.returncode not in ok_codes:
                    self.errors[name] = "%s exited %d" % (" ".join(argv[:3]), r.returncode)
                    return
        with open(p.log("init-" + name), "ab") as logf:
            logf.write(("%s done\n" % time.strftime("%T")).encode())
        open(p.marker("db-" + name), "w").close()

    def done(self, *names):
        """True when the named chains finished (raises if one failed)."""
        for name in names:
            t = self.threads.get(name)
            if t is not None and t.is_alive():
                return False
        self.wait(*names)
        return True

    def wait(self, *names):
        for name in names:
            t = self.threads.get(name)
            if t is None:
                continue
            t.join()
            if name in self.errors:
                log = self.p.log("init-" + name)
                raise StackError("---- tail of %s ----\n%s\n----\nstack: %s database setup "
                                 "failed: %s" % (log, _tail(log), name, self.errors[name]))

    def wait_all(self):
        self.wait(*list(self.threads))
        if self.threads:
            last = max(os.path.getmtime(self.p.marker("db-" + n)) for n in self.threads)
            _log("databases initialised in %.1fs" % (last - self.t0))


# `nova-manage cell_v2 map_cell0` and `create_cell --name cell1` in one process (one start-up
# of nova's Python less on the critical path of a cold `up`).
_MAP_CELLS = r"""
import sys
from nova import config, objects
from nova.cmd import manage
config.parse_args(["nova-manage"] + sys.argv[1:])
objects.register_all()
cells = manage.CellV2Commands()
if cells.map_cell0() != 0:
    sys.exit("map_cell0 failed")
rc = cells.create_cell(name="cell1")
sys.exit(0 if rc in (0, 2) else "create_cell failed: %s" % rc)
"""


# Schema templates: the databases right after their migrations, dumped by the first cloud that
# ran them (per set of installed service versions) and loaded by the next cold cloud instead of
# running the migrations again (seconds instead of a minute).
TEMPLATE_DISTS = ("keystone", "glance", "openstack-placement", "nova", "neutron")


def _db_template_dir(p):
    try:
        from importlib import metadata
        key = " ".join("%s=%s" % (d, metadata.version(d)) for d in TEMPLATE_DISTS)
    except Exception:  # noqa: BLE001 - no templates then, migrations as always
        return None
    d = os.path.join(p.infra.state, "dbtemplates", hashlib.sha256(key.encode()).hexdigest()[:16])
    os.makedirs(d, exist_ok=True)
    return d


def _ensure_databases(p, settings):
    c = p.c
    sock = p.infra.mysql_sock
    markers = [os.path.exists(p.marker("db-" + n)) for n in
               ("keystone", "glance", "placement", "nova_api", "nova", "neutron")]
    if not all(markers):
        if not c.is_main and not any(markers):
            # A cold cloud sharing the MariaDB: leftovers of a purged state dir go.
            _mysql(p, " ".join("DROP DATABASE IF EXISTS %s;" % c.db(n)
                               for n in topology.DATABASES))
        _mysql(p, " ".join("CREATE DATABASE IF NOT EXISTS %s CHARACTER SET utf8;" % c.db(n)
                           for n in topology.DATABASES))
    e = p.etc
    k = ["--config-file", os.path.join(e, "keystone", "keystone.conf")]
    b = os.path.join
    _, nova_args = _nova_conf_args(p, settings)
    nm = [b(VBIN, "nova-manage")] + nova_args
    neutron = [b(VBIN, "neutron-db-manage"), "--config-file", b(e, "neutron", "neutron.conf"),
               "--config-file", b(e, "neutron", "ml2_conf.ini")]
    ok = (0,)
    tdir = _db_template_dir(p)

    def sh(cmd):
        return (["bash", "-o", "pipefail", "-c", cmd], ok)

    def schema(db, migrate, targets=None):
        """Steps that give database(s) TARGETS (default DB) the migrated schema of DB."""
        targets = targets or [db]
        t = os.path.join(tdir, db + ".sql") if tdir else None
        if t and os.path.exists(t):
            return [sh("mariadb --no-defaults -S %s -uroot %s < %s" % (sock, c.db(x), t))
                    for x in targets]
        steps = [(migrate, ok)]
        if t:
            steps.append(sh("mariadb-dump --no-defaults -S %s -uroot --skip-comments %s > %s.%d"
                            " && mv %s.%d %s" % (sock, c.db(db), t, os.getpid(), t,
                                                 os.getpid(), t)))
        # cell0 gets a copy of the cell schema (same migrations, so the same result as
        # `db sync` without --local_cell, faster).
        for x in targets[1:]:
            steps.append(sh("mariadb-dump --no-defaults -S %s -uroot %s | mariadb --no-defaults"
                            " -S %s -uroot %s" % (sock, c.db(db), sock, c.db(x))))
        return steps

    chains = {
        "keystone": schema("keystone", [b(VBIN, "keystone-manage")] + k + ["db_sync"]) + [
            ([b(VBIN, "keystone-manage")] + k + [
                "bootstrap", "--bootstrap-password", ADMIN_PASSWORD,
                "--bootstrap-username", "admin", "--bootstrap-project-name", "admin",
                "--bootstrap-role-name", "admin", "--bootstrap-service-name", "keystone",
                "--bootstrap-region-id", REGION, "--bootstrap-admin-url", c.keystone_url,
                "--bootstrap-public-url", c.keystone_url, "--bootstrap-internal-url",
                c.keystone_url], ok)],
        "glance": schema("glance", [b(VBIN, "glance-manage"), "--config-file",
                                    b(e, "glance", "glance-api.conf"), "db_sync"]),
        "placement": schema("placement", [b(VBIN, "placement-manage"), "--config-file",
                                          b(e, "placement", "placement.conf"), "db", "sync"]),
        # nova_api and the cell database in parallel.
        "nova_api": schema("nova_api", nm + ["api_db", "sync"]) + [
            ([b(VBIN, "python"), "-c", _MAP_CELLS] + nova_args, ok)],
        "nova": schema("nova", nm + ["db", "sync", "--local_cell"], ["nova", "nova_cell0"]),
        "neutron": schema("neutron", neutron + ["upgrade", "heads"]),
    }
    return _Chains(p, chains)


def _ensure_keystone_keys(p):
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


def _write_clouds_yaml(p):
    def cloud(user, pw, project):
        return ("  cloudlet-%s:\n    auth:\n      auth_url: %s\n      username: %s\n"
                "      password: %s\n      project_name: %s\n      user_domain_name: Default\n"
                "      project_domain_name: Default\n    region_name: %s\n"
                "    identity_api_version: 3\n    interface: public\n"
                % (user, p.c.keystone_url, user, pw, project, REGION))
    text = "# Written by stack/stack.py. Use: OS_CLIENT_CONFIG_FILE=<this file> openstack " \
           "--os-cloud cloudlet-demo ...\nclouds:\n" + cloud("admin", ADMIN_PASSWORD, "admin") \
           + cloud("demo", DEMO_PASSWORD, "demo")
    with open(os.path.join(p.state, "clouds.yaml"), "w") as f:
        f.write(text)


def _ensure_identity(p, conn):
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


# --- nova and neutron resources ---------------------------------------------------------------
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


def _preregister_compute(p, settings):
    """Create nova-compute's service record (and node identity) before its first start.

    On a new service record nova-compute refuses to start when the hypervisor already runs
    domains (_sanity_check_new_host), and the libvirtd here is shared with other users' domains.
    With the record present nova-compute starts as on any later start of an existing host.
    """
    if os.path.exists(p.marker("compute-registered")):
        return
    _, nova_args = _nova_conf_args(p, settings, compute=True)
    _sh([os.path.join(VBIN, "python"), "-c", _PREREGISTER, p.c.nova_host] + nova_args,
        env=_service_env(p))
    open(p.marker("compute-registered"), "w").close()


def _ensure_compute_ready(p, conn, settings):
    """nova-compute created its compute node (seen as its resource provider), reports up, and
    its host is mapped to cell1 (discover_hosts maps hosts that have a compute node)."""
    host = p.c.nova_host
    node = socket.gethostname()  # libvirt's hostname: the compute node's name
    _wait(lambda: any(True for _ in conn.placement.resource_providers(name=node)), 150, p,
          "nova-compute", "its resource provider in placement")

    # A report from the running process: later than its start (a record's age alone says "up"
    # for a minute after a restart or pre-registration).
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(
        os.stat(p.pidfile("nova-compute")).st_mtime - 1))

    def compute_up():
        return any(s.state == "up" and s.host == host and (s.updated_at or "") >= since
                   for s in conn.compute.services(binary="nova-compute"))
    _wait(compute_up, 90, p, "nova-compute", "nova-compute to report up")
    if not _nova_host_mapped(p, host):
        _, nova_args = _nova_conf_args(p, settings)
        _sh([os.path.join(VBIN, "nova-manage")] + nova_args + ["cell_v2", "discover_hosts"],
            env=_service_env(p))
        if not _nova_host_mapped(p, host):
            _fail(p, "nova-compute", "nova-manage cell_v2 discover_hosts did not map host %s"
                  % host)


def _ensure_flavors(conn):
    for name, vcpus, ram, disk, specs in FLAVORS:
        fl = conn.compute.find_flavor(name, ignore_missing=True)
        if fl is None:
            fl = conn.compute.create_flavor(name=name, vcpus=vcpus, ram=ram, disk=disk,
                                            is_public=True)
            conn.compute.create_flavor_extra_specs(fl, specs)


def _ensure_provider_network(conn, c):
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


def _ensure_demo_security_group(p):
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


def _agents_alive(conn, agent_type):
    return any(a.is_alive and a.agent_type == agent_type for a in conn.network.agents())


def _ensure_dhcp_hosting(conn, net):
    if not list(conn.network.network_hosting_dhcp_agents(net)):
        for a in conn.network.agents(agent_type="DHCP agent"):
            if a.is_alive:
                conn.network.add_dhcp_agent_to_network(a, net)
                return


def _dhcp_port_active(conn, net):
    ports = list(conn.network.ports(network_id=net.id, device_owner="network:dhcp"))
    return any(pt.status == "ACTIVE" for pt in ports)


# --- commands ---------------------------------------------------------------------------------
def _ensure_infra(p):
    """The shared MariaDB, RabbitMQ and Open vSwitch (state in cloud a's state dir), the link
    between the clouds (RabbitMQ listens on its root side) and this cloud's OVS bridges and
    provider network host side."""
    if p.infra is not p:
        _prepare_dirs(p.infra)
    links.ensure_link()
    _ensure_mariadb(p.infra)


def up(state_dir=None, compute_driver=None, api_router=None, nova_extra_conf=None,
       cloudlet=False, name="a"):
    """Start (or complete) stack NAME ('a', the main one, or 'b'); return a summary dict.
    Idempotent.

    ``cloudlet=True`` enables OpenStack++: installs the ``nova.virt.cloudlet`` shim and
    uses our compute driver and API router (unless given explicitly), and sets nova's
    ``[cloudlet] handoff_host``.
    """
    t0 = time.time()
    if cloudlet:
        import cloudlet_api
        from cloudlet_compute.nova import shim
        shim.install()
        compute_driver = compute_driver or shim.DRIVER
        api_router = api_router or cloudlet_api.PASTE_APP_FACTORY
    c = Cloud(name, state_dir)
    p = _Paths(c)
    settings = _settings(compute_driver, api_router, nova_extra_conf, cloudlet)
    already = all(_running(p.infra, n) for n in INFRA) and all(
        _running(p, n) for n in SERVICES)
    _ensure_packages()
    _ensure_libvirt()
    _prepare_dirs(p)
    _write_configs(p, settings)
    services = _services(p, settings)
    _ensure_infra(p)
    chains = _ensure_databases(p, settings)  # first run only; in the background
    _ensure_rabbitmq(p.infra)
    _ensure_ovs(p.infra)
    _ensure_bridges(c)
    links.ensure_provider_host_side(c, _ovs_vsctl)
    _write_clouds_yaml(p)

    _ensure_keystone_keys(p)

    # Each service starts as soon as its database is ready (nova's once its service users
    # exist: nova-compute would otherwise wait a periodic-task interval to report to placement).
    started = []

    def start(*names):
        for name in names:
            if _ensure_service(p, services, name):
                started.append(name)

    def start_nova():
        _preregister_compute(p, settings)
        start("nova-api", "nova-conductor", "nova-scheduler", "nova-compute")

    groups = [(("keystone",), lambda: start("keystone")),
              (("placement",), lambda: start("placement")),
              (("glance",), lambda: start("glance")),
              (("neutron",), lambda: start("neutron-api", "neutron-rpc-server",
                                           "neutron-openvswitch-agent")),
              (("nova_api", "nova", "identity"), start_nova)]
    admin = None
    deadline = time.time() + 600
    while groups:
        for g in list(groups):
            chains_of = [n for n in g[0] if n != "identity"]
            if chains.done(*chains_of) and ("identity" not in g[0] or admin is not None):
                g[1]()
                groups.remove(g)
        if admin is None and _running(p, "keystone") and _http_status(c.keystone_url) == 200:
            _ensure_identity(p, connect("cloudlet-admin", p.state))
            admin = connect("cloudlet-admin", p.state)  # a new token: the full catalog
            continue
        if "keystone" in started and not _running(p, "keystone"):
            _fail(p, "keystone", "process exited")
        if time.time() > deadline:
            raise StackError("timeout waiting for the databases")
        time.sleep(0.2)
    chains.wait_all()
    # The DHCP agent loses 60 s on its first RPC call if the RPC server does not listen yet: the
    # OVS agent reporting alive proves that it does.
    _wait(lambda: _agents_alive(admin, "Open vSwitch agent"), 120, p,
          "neutron-openvswitch-agent", "the OVS agent to report alive")
    start("neutron-dhcp-agent")
    _wait(lambda: _agents_alive(admin, "DHCP agent"), 120, p, "neutron-dhcp-agent",
          "the DHCP agent to report alive")
    # Created once the DHCP agent is alive, so that neutron schedules the network to it.
    net = _ensure_provider_network(admin, c)
    _ensure_dhcp_hosting(admin, net)
    _ensure_demo_security_group(p)
    for name in ("placement", "glance", "neutron-api", "nova-api"):
        url = c.url(name)
        _wait(lambda: _http_status(url) in (200, 300), 120, p, name, "GET /")
    _ensure_flavors(admin)
    _ensure_compute_ready(p, admin, settings)
    _wait(lambda: _dhcp_port_active(admin, net), 120, p, "neutron-dhcp-agent",
          "the provider network's DHCP port to become ACTIVE")
    elapsed = time.time() - t0
    summary = {
        "name": c.name, "state_dir": p.state, "clouds_yaml": os.path.join(p.state, "clouds.yaml"),
        "elapsed": elapsed, "started": started, "already_running": already and not started,
        "compute_driver": settings["compute_driver"], "api_router": settings["api_router"],
        "cloudlet": settings["cloudlet"],
        "endpoints": {k: v[1] for k, v in c.endpoints.items()}, "identity": c.keystone_url,
        "provider_netns": c.provider_netns, "netns": c.netns, "host": c.host,
    }
    state = "already running" if summary["already_running"] else "up"
    _log("%s%s in %.1fs: keystone/placement/glance/nova/neutron on %s%s, provider net %s "
         "(host %s%s), clouds %s, logs %s" % (
             "" if c.is_main else "cloud %s " % c.name, state, elapsed, c.host,
             " in netns " + c.netns if c.netns else "", c.provider_cidr, c.provider_host_ip,
             " in netns " + c.provider_netns if c.provider_netns else "",
             summary["clouds_yaml"], p.logs))
    return summary


def _domains(prefix=DOMAIN_PREFIX):
    r = subprocess.run(["virsh", "-c", "qemu:///system", "list", "--all", "--name"],
                       capture_output=True, text=True)
    return [d for d in r.stdout.split() if d.startswith(prefix)]


def _strays(p, names):
    """PIDs of this state dir's processes that run one of the service binaries ``names``."""
    strays = []
    for pid in _state_processes(p, epmd=False):
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if any(os.path.basename(a).decode(errors="replace") in names for a in argv[:2]):
            strays.append(pid)
    return strays


def _state_processes(p, epmd=True):
    """PIDs of processes that name this state dir on their command line (privsep helpers,
    dnsmasq, ...), excluding ourselves; with EPMD also RabbitMQ's epmd started from it."""
    pids = []
    needle = p.state.encode() + b"/"
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            with open("/proc/%s/cmdline" % d, "rb") as f:
                cmd = f.read()
            if needle in cmd:
                pids.append(int(d))
            elif epmd and os.path.basename(cmd.split(b"\0")[0]) == b"epmd":
                # RabbitMQ's epmd daemonizes; ours inherited HOME=STATE/rabbitmq.
                with open("/proc/%s/environ" % d, "rb") as f:
                    if b"\0HOME=" + p.state.encode() + b"/rabbitmq\0" in b"\0" + f.read():
                        pids.append(int(d))
        except OSError:
            pass
    return pids


def _stop_all(p, names):
    """Stop NAMES in parallel; return those that were running."""
    out = []
    lock = threading.Lock()

    def one(n):
        if _stop(p, n):
            with lock:
                out.append(n)
    threads = [threading.Thread(target=one, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sorted(out, key=lambda n: ORDER.index(n) if n in ORDER else 99)


def _others_running(c):
    """Names of the other clouds that have an OpenStack service running."""
    out = []
    for n in topology.NAMES:
        if n == c.name:
            continue
        op = _Paths(Cloud(n))
        if op.state != c.state and any(_running(op, s) for s in SERVICES):
            out.append(n)
    return out


def _dhcp_netns(p):
    """qdhcp-* namespaces of the networks this cloud's DHCP agent serves."""
    try:
        return ["qdhcp-" + d for d in os.listdir(os.path.join(p.state, "neutron", "dhcp"))]
    except OSError:
        return []


def down(state_dir=None, purge=False, name="a"):
    """Stop everything stack NAME started (by PID); keep data and logs unless purge.

    The shared infrastructure (MariaDB, RabbitMQ, OVS, the veth link) stays up while another
    cloud still runs: the `down` of the last cloud stops it.
    """
    t0 = time.time()
    c = Cloud(name, state_dir)
    p = _Paths(c)
    others = _others_running(c)
    if purge and c.is_main and others:
        raise StackError("cloud(s) %s run on the infrastructure in %s: take them down before "
                         "purging it" % (", ".join(others), p.state))
    stopped = []
    infra_pids = {_read_pid(p.infra, n) for n in INFRA} - {None}
    if os.path.isdir(p.run):
        # OpenStack services first (in parallel), then the domains nova made (libvirt unplugs
        # their OVS ports), leftovers (dnsmasq, privsep helpers), then the infrastructure.
        stopped += _stop_all(p, list(reversed(SERVICES)))
        for dom in _domains(c.domain_prefix):
            subprocess.run(["virsh", "-c", "qemu:///system", "destroy", dom],
                           capture_output=True)
            subprocess.run(["virsh", "-c", "qemu:///system", "undefine", "--nvram", dom],
                           capture_output=True)
            stopped.append("domain " + dom)
        for pid in _state_processes(p, epmd=False):
            try:
                pgid = os.getpgid(pid)
            except OSError:
                continue
            if pid not in infra_pids and pgid not in infra_pids:
                _stop_pid(pid, group=False, timeout=3)
                stopped.append("pid %d" % pid)
    namespaces = [c.provider_netns] + _dhcp_netns(p)
    if purge and not c.is_main and _running(p.infra, "mariadb"):
        _mysql(p, " ".join("DROP DATABASE IF EXISTS %s;" % c.db(n) for n in topology.DATABASES))
    if not others:
        ip = p.infra
        if os.path.isdir(ip.run):
            stopped += _stop_all(ip, ["ovs-vswitchd", "rabbitmq", "mariadb"])
            stopped += _stop_all(ip, ["ovsdb-server"])
            for pid in _state_processes(ip):
                _stop_pid(pid, group=False, timeout=3)
                stopped.append("pid %d" % pid)
        try:
            os.unlink(ip.mysql_sock)
        except OSError:
            pass
        # Nothing runs any more: every qdhcp-* namespace, the link and its namespaces go.
        namespaces += [n for n in links.netns_list() if n.startswith("qdhcp-")]
        links.remove_link()
    vsctl = _ovs_vsctl if _running(p.infra, "ovs-vswitchd") else None
    for ns in set(namespaces):
        if ns:
            links.delete_netns(ns, vsctl)
    if purge and os.path.isdir(p.state):
        shutil.rmtree(p.state)
    _log("%sdown in %.1fs (%s)%s" % (
        "" if c.is_main else "cloud %s " % c.name, time.time() - t0,
        ", ".join(stopped) or "nothing was running",
        "; infrastructure kept for cloud %s" % ", ".join(others) if others else ""))
    return stopped


def _rss_kb(pid):
    """RSS of a process and its process group (shared pages count once per process)."""
    total = 0
    out = subprocess.run(["ps", "-e", "-o", "pid=,pgid=,rss="], capture_output=True,
                         text=True).stdout
    for line in out.splitlines():
        a, g, r = line.split()
        if int(g) == pid or int(a) == pid:
            total += int(r)
    return total


def status(state_dir=None, quiet=False, name="a"):
    """Dict name -> {pid, running, rss_kb, port, log}; prints a table unless quiet. The shared
    infrastructure's rows are those of cloud a's state dir."""
    c = Cloud(name, state_dir)
    p = _Paths(c)
    res = {}
    for svc in ORDER:
        sp = p.infra if svc in INFRA else p
        pid = _running(sp, svc)
        port = PORTS.get(svc)
        res[svc] = {"pid": pid, "running": bool(pid), "port": port, "log": sp.log(svc),
                    "rss_kb": _rss_kb(pid) if pid else 0}
    if not quiet:
        total = 0
        print("cloud %s: services on %s%s" % (c.name, c.host,
                                               " in netns " + c.netns if c.netns else ""))
        for svc, st in res.items():
            total += st["rss_kb"]
            print("%-27s %-8s %-6s %7.0f MB  %s" % (
                svc, st["pid"] or "-", st["port"] or "", st["rss_kb"] / 1024.0,
                "running" if st["running"] else "STOPPED"))
        doms = _domains(c.domain_prefix)
        print("domains: %s" % (" ".join(doms) or "none"))
        print("total RSS of stack processes: %.0f MB (state %s)" % (total / 1024.0, p.state))
    return res


# Names `restart` accepts besides the services' own.
SERVICE_GROUPS = {
    "nova": [s for s in SERVICES if s.startswith("nova-")],
    "neutron": [s for s in SERVICES if s.startswith("neutron-")],
    "all": list(SERVICES),
}


def restart(services, state_dir=None, name="a", timeout=120):
    """Restart SERVICES (names from SERVICES, or nova / neutron / all) of stack NAME with the
    configuration files as they are in its state dir (nothing is re-rendered: edit
    STATE/etc/nova/nova.conf, api-paste.ini, ... then call this). Waits until the API services
    answer. A later `up` renders the templates again (overwriting such edits) and restarts
    what changed. Returns the names restarted."""
    c = Cloud(name, state_dir)
    p = _Paths(c)
    try:
        with open(os.path.join(p.state, "settings.json")) as f:
            settings = json.load(f)
    except OSError:
        raise StackError("cloud %s has no settings in %s: run `up` first" % (c.name, p.state))
    settings.setdefault("cloudlet", False)
    names = []
    for n in services:
        for m in SERVICE_GROUPS.get(n, [n]):
            if m not in SERVICES:
                raise StackError("unknown service %r (known: %s, or %s)" % (
                    m, " ".join(SERVICES), " ".join(SERVICE_GROUPS)))
            if m not in names:
                names.append(m)
    names.sort(key=SERVICES.index)
    if not all(_running(p.infra, n) for n in INFRA):
        raise StackError("the infrastructure (%s) is not running: use `up`" % ", ".join(INFRA))
    t0 = time.time()
    svc = _services(p, settings)
    _stop_all(p, names)
    for pid in _strays(p, names):   # a copy the pidfile no longer names (concurrent restarts)
        _stop_pid(pid)
    for n in names:
        argv, env, _files, _port = svc[n]
        _start(p, n, argv, env, _service_hash(svc, n))
    for n in names:
        port = svc[n][3]
        if port:
            _wait(lambda: _http_status(c.url(n)) in (200, 300), timeout, p, n, "GET /")
    time.sleep(1.0)
    for n in names:
        if not _running(p, n):
            _fail(p, n, "process exited after restart")
    _log("%srestarted %s in %.1fs" % ("" if c.is_main else "cloud %s: " % c.name,
                                      " ".join(names), time.time() - t0))
    return names


def main(argv=None):
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--name", default=argparse.SUPPRESS, choices=topology.NAMES,
                        help="which cloud: a (main, default) or b")
    common.add_argument("--state-dir", default=argparse.SUPPRESS,
                        help="default $CLOUDLET_STACK_DIR or %s for a, .state/stack-NAME "
                        "otherwise" % DEFAULT_STATE)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], parents=[common])
    sub = ap.add_subparsers(dest="cmd", required=True)
    u = sub.add_parser("up", help="start the stack (idempotent)", parents=[common])
    u.add_argument("--compute-driver", help="nova [DEFAULT] compute_driver (env "
                   "CLOUDLET_COMPUTE_DRIVER; default %s)" % DEFAULT_COMPUTE_DRIVER)
    u.add_argument("--api-router", help="paste.app_factory of [app:osapi_compute_app_v21] (env "
                   "CLOUDLET_API_ROUTER; default %s)" % DEFAULT_API_ROUTER)
    u.add_argument("--cloudlet", action="store_true",
                   help="enable OpenStack++ (shim, CloudletDriver, cloudlet_api router, "
                   "[cloudlet] handoff_host)")
    u.add_argument("--nova-extra-conf", help="extra config file for every nova service (env "
                   "CLOUDLET_NOVA_EXTRA_CONF)")
    d = sub.add_parser("down", help="stop everything the stack started", parents=[common])
    d.add_argument("--purge", action="store_true", help="also delete the state directory")
    sub.add_parser("status", help="show processes, RSS and domains", parents=[common])
    r = sub.add_parser("restart", parents=[common],
                       help="restart services without re-rendering their configuration")
    r.add_argument("services", nargs="+", metavar="SERVICE",
                   help="%s, or %s" % (" ".join(SERVICES), " ".join(SERVICE_GROUPS)))
    n = sub.add_parser("netns-exec", help="run a command in the provider network's namespace",
                       parents=[common])
    n.add_argument("command", nargs=argparse.REMAINDER)
    sl = sub.add_parser("shape-link", help="token bucket on the veth link between a and b")
    sl.add_argument("rate", nargs="?", default="25mbit")
    sub.add_parser("unshape-link", help="remove the token bucket from the link")
    a = ap.parse_args(argv)
    name = getattr(a, "name", "a")
    state_dir = getattr(a, "state_dir", None)
    try:
        if a.cmd == "up":
            up(state_dir, a.compute_driver, a.api_router, a.nova_extra_conf, a.cloudlet,
               name=name)
        elif a.cmd == "down":
            down(state_dir, a.purge, name=name)
        elif a.cmd == "status":
            status(state_dir, name=name)
        elif a.cmd == "restart":
            restart(a.services, state_dir, name=name)
        elif a.cmd == "netns-exec":
            cmd = Cloud(name).provider_argv(a.command)
            os.execvp(cmd[0], cmd)
        elif a.cmd == "shape-link":
            shape_link(a.rate)
            print("\n".join("%s: %s" % kv for kv in links.link_qdiscs().items()))
        elif a.cmd == "unshape-link":
            unshape_link()
    except (StackError, links.LinkError) as e:
        print(str(e), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
