"""The operations on a cloud: up, down, status, restart, and the small facts callers ask for.

Everything here is re-exported by the package (``stack.up(...)``, ``stack.netns_argv(...)``).
"""
import json
import os
import re
import shutil
import subprocess
import threading
import time

from . import bootstrap, databases, infra, links, processes, topology
from .bootstrap import connect
from .configs import settings as make_settings, write_configs
from .paths import Paths, StackError, log, prepare_dirs
from .processes import fail, http_status, running, wait
from .services import (INFRA, ORDER, SERVICE_GROUPS, SERVICES, ensure_service,
                       service_hash, table as service_table)
from .topology import Cloud


def cloud(name="a", state_dir=None):
    """The facts of cloud NAME ('a', the main one, or 'b'): a topology.Cloud."""
    return Cloud(name, state_dir)


def provider_netns(name="a"):
    """Name of the network namespace holding the provider network's host address ('' = root)."""
    return Cloud(name).provider_netns


def netns_argv(argv, name="a"):
    """argv prefixed so that it runs where cloud NAME's provider network is reachable."""
    return Cloud(name).provider_argv(argv)


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
    p = Paths(c)
    settings = make_settings(compute_driver, api_router, nova_extra_conf, cloudlet)
    already = all(running(p.infra, n) for n in INFRA) and all(
        running(p, n) for n in SERVICES)
    infra.ensure_packages()
    infra.ensure_libvirt()
    prepare_dirs(p)
    write_configs(p, settings)
    svc = service_table(p, settings)
    infra.ensure_infra(p)
    chains = databases.ensure_databases(p, settings)  # first run only; in the background
    infra.ensure_rabbitmq(p.infra)
    infra.ensure_ovs(p.infra)
    infra.ensure_bridges(c)
    links.ensure_provider_host_side(c, infra.ovs_vsctl)
    bootstrap.write_clouds_yaml(p)

    bootstrap.ensure_keystone_keys(p)

    # Each service starts as soon as its database is ready (nova's once its service users
    # exist: nova-compute would otherwise wait a periodic-task interval to report to placement).
    started = []

    def start(*names):
        for name in names:
            if ensure_service(p, svc, name):
                started.append(name)

    def start_nova():
        bootstrap.preregister_compute(p, settings)
        if not running(p, "nova-compute"):
            remove_stale_domains(state_dir, name)
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
        if admin is None and running(p, "keystone") and http_status(c.keystone_url) == 200:
            bootstrap.ensure_identity(p, connect("cloudlet-admin", p.state))
            admin = connect("cloudlet-admin", p.state)  # a new token: the full catalog
            continue
        if "keystone" in started and not running(p, "keystone"):
            fail(p, "keystone", "process exited")
        if time.time() > deadline:
            raise StackError("timeout waiting for the databases")
        time.sleep(0.2)
    chains.wait_all()
    # The DHCP agent loses 60 s on its first RPC call if the RPC server does not listen yet: the
    # OVS agent reporting alive proves that it does.
    wait(lambda: bootstrap.agents_alive(admin, "Open vSwitch agent"), 120, p,
         "neutron-openvswitch-agent", "the OVS agent to report alive")
    start("neutron-dhcp-agent")
    wait(lambda: bootstrap.agents_alive(admin, "DHCP agent"), 120, p, "neutron-dhcp-agent",
         "the DHCP agent to report alive")
    # Created once the DHCP agent is alive, so that neutron schedules the network to it.
    net = bootstrap.ensure_provider_network(admin, c)
    bootstrap.ensure_dhcp_hosting(admin, net)
    bootstrap.ensure_demo_security_group(p)
    for name in ("placement", "glance", "neutron-api", "nova-api"):
        url = c.url(name)
        wait(lambda: http_status(url) in (200, 300), 120, p, name, "GET /")
    bootstrap.ensure_flavors(admin)
    bootstrap.ensure_compute_ready(p, admin, settings)
    wait(lambda: bootstrap.dhcp_port_active(admin, net), 120, p, "neutron-dhcp-agent",
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
    log("%s%s in %.1fs: keystone/placement/glance/nova/neutron on %s%s, provider net %s "
        "(host %s%s), clouds %s, logs %s" % (
            "" if c.is_main else "cloud %s " % c.name, state, elapsed, c.host,
            " in netns " + c.netns if c.netns else "", c.provider_cidr, c.provider_host_ip,
            " in netns " + c.provider_netns if c.provider_netns else "",
            summary["clouds_yaml"], p.logs))
    return summary


def _domains(prefix):
    r = _virsh("list", "--all", "--name")
    return [d for d in r.stdout.split() if d.startswith(prefix)]


def _virsh(*args):
    return subprocess.run(["virsh", "-c", "qemu:///system"] + list(args),
                          capture_output=True, text=True)


def _remove_domain(name):
    _virsh("destroy", name)
    _virsh("undefine", "--nvram", name)


def remove_stale_domains(state_dir=None, name="a"):
    """Remove the domains named like cloud NAME's instances that no instance in its nova
    database owns, and return their names. They are left by a stack killed rather than taken
    down (here, or on the machine this one was copied from), and nova would fail to define a
    domain of the same name. `up` calls this before it starts nova-compute."""
    c = Cloud(name, state_dir)
    doms = _domains(c.domain_prefix)
    if not doms:
        return []
    r = infra.mysql(Paths(c), "SELECT uuid FROM %s.instances WHERE deleted=0" % c.db("nova"))
    owned = set(r.stdout.split()[1:])
    stale = [d for d in doms if _virsh("domuuid", d).stdout.strip() not in owned]
    for dom in stale:
        _remove_domain(dom)
    if stale:
        log("removed domains no instance of cloud %s owns: %s" % (c.name, " ".join(stale)))
    return stale


def _stop_all(p, names):
    """Stop NAMES in parallel; return those that were running."""
    out = []
    lock = threading.Lock()

    def one(n):
        if processes.stop(p, n):
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
        op = Paths(Cloud(n))
        if op.state != c.state and any(running(op, s) for s in SERVICES):
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
    p = Paths(c)
    others = _others_running(c)
    if purge and c.is_main and others:
        raise StackError("cloud(s) %s run on the infrastructure in %s: take them down before "
                         "purging it" % (", ".join(others), p.state))
    stopped = []
    infra_pids = {processes.read_pid(p.infra, n) for n in INFRA} - {None}
    if os.path.isdir(p.run):
        # OpenStack services first (in parallel), then the domains nova made (libvirt unplugs
        # their OVS ports), leftovers (dnsmasq, privsep helpers), then the infrastructure.
        stopped += _stop_all(p, list(reversed(SERVICES)))
        for dom in _domains(c.domain_prefix):
            _remove_domain(dom)
            stopped.append("domain " + dom)
        for pid in processes.state_processes(p, epmd=False):
            try:
                pgid = os.getpgid(pid)
            except OSError:
                continue
            if pid not in infra_pids and pgid not in infra_pids:
                processes.stop_pid(pid, group=False, timeout=3)
                stopped.append("pid %d" % pid)
    namespaces = [c.provider_netns] + _dhcp_netns(p)
    if purge and not c.is_main and running(p.infra, "mariadb"):
        infra.mysql(p, " ".join("DROP DATABASE IF EXISTS %s;" % c.db(n)
                                for n in topology.DATABASES))
    if not others:
        ip = p.infra
        if os.path.isdir(ip.run):
            stopped += _stop_all(ip, ["ovs-vswitchd", "rabbitmq", "mariadb"])
            stopped += _stop_all(ip, ["ovsdb-server"])
            for pid in processes.state_processes(ip):
                processes.stop_pid(pid, group=False, timeout=3)
                stopped.append("pid %d" % pid)
        try:
            os.unlink(ip.mysql_sock)
        except OSError:
            pass
        # Nothing runs any more: every qdhcp-* namespace, the link and its namespaces go.
        namespaces += [n for n in links.netns_list() if n.startswith("qdhcp-")]
        links.remove_link()
    vsctl = infra.ovs_vsctl if running(p.infra, "ovs-vswitchd") else None
    for ns in set(namespaces):
        if ns:
            links.delete_netns(ns, vsctl)
    if purge and os.path.isdir(p.state):
        shutil.rmtree(p.state)
    log("%sdown in %.1fs (%s)%s" % (
        "" if c.is_main else "cloud %s " % c.name, time.time() - t0,
        ", ".join(stopped) or "nothing was running",
        "; infrastructure kept for cloud %s" % ", ".join(others) if others else ""))
    return stopped


def status(state_dir=None, quiet=False, name="a"):
    """Dict name -> {pid, running, rss_kb, port, log}; prints a table unless quiet. The shared
    infrastructure's rows are those of cloud a's state dir."""
    c = Cloud(name, state_dir)
    p = Paths(c)
    res = {}
    for svc in ORDER:
        sp = p.infra if svc in INFRA else p
        pid = running(sp, svc)
        port = topology.PORTS.get(svc)
        res[svc] = {"pid": pid, "running": bool(pid), "port": port, "log": sp.log(svc),
                    "rss_kb": processes.rss_kb(pid) if pid else 0}
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


def restart(services, state_dir=None, name="a", timeout=120):
    """Restart SERVICES (names from SERVICES, or nova / neutron / all) of stack NAME with the
    configuration files as they are in its state dir (nothing is re-rendered: edit
    STATE/etc/nova/nova.conf, api-paste.ini, ... then call this). Waits until the API services
    answer. A later `up` renders the templates again (overwriting such edits) and restarts
    what changed. Returns the names restarted."""
    c = Cloud(name, state_dir)
    p = Paths(c)
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
    if not all(running(p.infra, n) for n in INFRA):
        raise StackError("the infrastructure (%s) is not running: use `up`" % ", ".join(INFRA))
    t0 = time.time()
    svc = service_table(p, settings)
    _stop_all(p, names)
    # Copies the pidfiles no longer name (concurrent restarts).
    for pid in processes.strays(p, names):
        processes.stop_pid(pid)
    for n in names:
        argv, env, _files, _port = svc[n]
        processes.start(p, n, argv, env, service_hash(svc, n))
    for n in names:
        port = svc[n][3]
        if port:
            wait(lambda: http_status(c.url(n)) in (200, 300), timeout, p, n, "GET /")
    time.sleep(1.0)
    for n in names:
        if not running(p, n):
            fail(p, n, "process exited after restart")
    log("%srestarted %s in %.1fs" % ("" if c.is_main else "cloud %s: " % c.name,
                                     " ".join(names), time.time() - t0))
    return names
