"""The OpenStack services of a cloud: their names, command lines and environments.

``table(p, settings)`` gives every service's (argv, env, config files, port);
``ensure_service`` starts one unless it already runs with the same configuration.
"""
import hashlib
import os

from . import processes
from .configs import nova_conf_args
from .paths import VBIN, WSGI_DIR, StackError, log
from .topology import PORTS

# Start order; `down` goes backwards. INFRA is shared by the clouds (cloud a's state dir).
INFRA = ["mariadb", "rabbitmq", "ovsdb-server", "ovs-vswitchd"]
SERVICES = ["keystone", "placement", "glance", "neutron-api", "neutron-rpc-server", "nova-api",
            "nova-conductor", "nova-scheduler", "nova-compute", "neutron-openvswitch-agent",
            "neutron-dhcp-agent"]
ORDER = INFRA + SERVICES

# Names `restart` accepts besides the services' own.
SERVICE_GROUPS = {
    "nova": [s for s in SERVICES if s.startswith("nova-")],
    "neutron": [s for s in SERVICES if s.startswith("neutron-")],
    "all": list(SERVICES),
}


def table(p, settings):
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
        svc[name] = (p.c.ns_argv(argv), processes.service_env(p, env_extra), cfg_files,
                     PORTS[name])

    gunicorn("keystone", "wsgi_keystone",
             {"OS_KEYSTONE_CONFIG_DIR": os.path.join(e, "keystone")},
             [os.path.join(e, "keystone", "keystone.conf")])
    gunicorn("placement", "wsgi_placement",
             {"OS_PLACEMENT_CONFIG_DIR": os.path.join(e, "placement")},
             [os.path.join(e, "placement", "placement.conf")])
    gunicorn("glance", "wsgi_glance", {"OS_GLANCE_CONFIG_DIR": os.path.join(e, "glance")},
             [os.path.join(e, "glance", "glance-api.conf")])
    nova_files, nova_args = nova_conf_args(p, settings)
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
        svc[name] = (p.c.ns_argv(argv), processes.service_env(p), files, None)

    cli("nova-conductor", "nova-conductor", nova_files, ["--log-file", p.log("nova-conductor")])
    cli("nova-scheduler", "nova-scheduler", nova_files, ["--log-file", p.log("nova-scheduler")])
    comp_files, _ = nova_conf_args(p, settings, compute=True)
    cli("nova-compute", "nova-compute", comp_files)
    cli("neutron-rpc-server", "neutron-rpc-server", nconf,
        ["--log-file", p.log("neutron-rpc-server")])
    cli("neutron-openvswitch-agent", "neutron-openvswitch-agent",
        [nconf[0], os.path.join(e, "neutron", "openvswitch_agent.ini")])
    cli("neutron-dhcp-agent", "neutron-dhcp-agent",
        [nconf[0], os.path.join(e, "neutron", "dhcp_agent.ini")])
    return svc


def service_hash(services, name):
    """What a running service's configuration is compared with: its files and command line."""
    argv, _env, cfg_files, _port = services[name]
    h = processes.cfg_hash(cfg_files) + " " + " ".join(argv)
    return hashlib.sha256(h.encode()).hexdigest()


def ensure_service(p, services, name):
    """Start NAME unless running with the same configuration; True if (re)started."""
    argv, env, cfg_files, _port = services[name]
    h = service_hash(services, name)
    pid = processes.running(p, name)
    if pid:
        try:
            old = open(os.path.join(p.run, name + ".hash")).read()
        except OSError:
            old = ""
        if old == h:
            return False
        log("%s: configuration changed, restarting" % name)
        processes.stop(p, name)
    port = services[name][3]
    if port and processes.port_open(port, p.c.host):
        raise StackError("%s: port %d on %s is already taken by a process this stack did not "
                         "start (see `ss -ltnp`)" % (name, port, p.c.host))
    processes.start(p, name, argv, env, h)
    return True
