"""Network namespaces and links of the embedded clouds (see topology.py for the facts).

* ``ensure_link()``: netns ``stk-b`` with lo up, the veth pair ``stkv-a`` (10.251.0.1, root
  namespace) / ``stkv-b`` (10.251.0.2, in ``stk-b``), and the root namespace named
  ``stk-host``. Idempotent and cheap (two ``ip`` calls when everything exists).
* ``ensure_provider_host_side(cloud, ovs_vsctl)``: the host address of a cloud's provider
  network on an OVS internal port of its provider bridge, moved into its netns.
* ``shape_link(rate)`` / ``unshape_link()``: a token bucket on both ends of the veth pair.
"""
import os
import subprocess
import time

from .topology import (HOST_NETNS, LINK_NETNS, LINK_NS_DEV, LINK_NS_IP, LINK_PREFIX,
                       LINK_ROOT_DEV, LINK_ROOT_IP)


class LinkError(Exception):
    pass


def _run(tool, args, ns, check, timeout):
    """``tool [-n ns] args``; ``LinkError`` with its output if it fails and ``check``."""
    argv = [tool] + (["-n", ns] if ns else []) + list(args)
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise LinkError("%s failed (rc %d): %s" % (" ".join(argv), r.returncode,
                                                  (r.stderr or r.stdout).strip()))
    return r


def _ip(*args, check=True, ns=None):
    return _run("ip", args, ns, check, 60)


def netns_list():
    return [line.split()[0] for line in _ip("netns", "list").stdout.splitlines()
            if line.split()]


def ensure_netns(name):
    if not os.path.exists(os.path.join("/run/netns", name)):
        _ip("netns", "add", name, check=False)
        if not os.path.exists(os.path.join("/run/netns", name)):
            raise LinkError("could not create network namespace %s" % name)


def delete_netns(name, ovs_vsctl=None):
    """Delete network namespace NAME; with OVS_VSCTL (ovs-vswitchd keeps running) first the OVS
    ports among its devices: an internal port whose device went with its namespace leaves
    ovs-vswitchd spinning on a dead tap descriptor."""
    if ovs_vsctl is not None and os.path.exists(os.path.join("/run/netns", name)):
        out = _ip("-o", "link", "show", check=False, ns=name).stdout
        for line in out.splitlines():
            parts = line.split(":")
            dev = parts[1].strip().split("@")[0] if len(parts) > 1 else ""
            if dev and dev != "lo":
                ovs_vsctl("--if-exists", "del-port", dev, check=False)
    subprocess.run(["ip", "netns", "delete", name], capture_output=True)


def _ensure_host_netns():
    """/run/netns/stk-host = the namespace we run in (the root one)."""
    path = os.path.join("/run/netns", HOST_NETNS)
    mine = os.stat("/proc/self/ns/net").st_ino
    try:
        if os.stat(path).st_ino == mine:
            return
        delete_netns(HOST_NETNS)
    except OSError:
        pass
    _ip("netns", "attach", HOST_NETNS, str(os.getpid()))


def _has_addr(out, ip):
    return (" %s/%d" % (ip, LINK_PREFIX)) in (" " + out.replace("\n", " ") + " ")


def ensure_link():
    """The veth pair between the root namespace and stk-b (idempotent)."""
    _ensure_host_netns()
    root = _ip("-br", "addr", "show", "dev", LINK_ROOT_DEV, check=False)
    inner = _ip("-br", "addr", "show", "dev", LINK_NS_DEV, check=False, ns=LINK_NETNS) \
        if os.path.exists(os.path.join("/run/netns", LINK_NETNS)) else None
    if (root.returncode == 0 and " UP " in " %s " % root.stdout and
            _has_addr(root.stdout, LINK_ROOT_IP) and inner is not None and
            inner.returncode == 0 and " UP " in " %s " % inner.stdout and
            _has_addr(inner.stdout, LINK_NS_IP)):
        return False
    ensure_netns(LINK_NETNS)
    _ip("link", "set", "lo", "up", ns=LINK_NETNS)
    if root.returncode != 0:
        # A half-made pair (end in the wrong place) is removed and made again.
        _ip("link", "delete", LINK_NS_DEV, check=False, ns=LINK_NETNS)
        _ip("link", "delete", LINK_NS_DEV, check=False)
        _ip("link", "add", LINK_ROOT_DEV, "type", "veth", "peer", "name", LINK_NS_DEV,
            "netns", LINK_NETNS)
    elif _ip("link", "show", LINK_NS_DEV, check=False, ns=LINK_NETNS).returncode != 0:
        if _ip("link", "show", LINK_NS_DEV, check=False).returncode == 0:
            _ip("link", "set", LINK_NS_DEV, "netns", LINK_NETNS)
        else:  # the peer vanished with a deleted namespace: make the pair again
            _ip("link", "delete", LINK_ROOT_DEV, check=False)
            _ip("link", "add", LINK_ROOT_DEV, "type", "veth", "peer", "name", LINK_NS_DEV,
                "netns", LINK_NETNS)
    _ip("addr", "replace", "%s/%d" % (LINK_ROOT_IP, LINK_PREFIX), "dev", LINK_ROOT_DEV)
    _ip("link", "set", LINK_ROOT_DEV, "up")
    _ip("addr", "replace", "%s/%d" % (LINK_NS_IP, LINK_PREFIX), "dev", LINK_NS_DEV,
        ns=LINK_NETNS)
    _ip("link", "set", LINK_NS_DEV, "up", ns=LINK_NETNS)
    return True


def remove_link():
    """Delete the veth pair, netns stk-b and the stk-host name (nothing must run in stk-b)."""
    _ip("link", "delete", LINK_ROOT_DEV, check=False)
    delete_netns(LINK_NETNS)
    delete_netns(HOST_NETNS)


def ensure_provider_host_side(cloud, ovs_vsctl):
    """The provider network's host address on an OVS internal port of the cloud's provider
    bridge, in netns cloud.provider_netns (or on the bridge itself in the root namespace)."""
    ns = cloud.provider_netns
    addr = "%s/%s" % (cloud.provider_host_ip, cloud.provider_cidr.split("/")[1])
    if not ns:
        _ip("link", "set", cloud.provider_bridge, "up")
        _ip("addr", "replace", addr, "dev", cloud.provider_bridge)
        return
    ensure_netns(ns)
    port = cloud.ext_port
    ovs_vsctl("--may-exist", "add-port", cloud.provider_bridge, port, "--", "set", "Interface",
              port, "type=internal")
    t0 = time.time()
    recreated = False
    while True:
        if _ip("link", "show", port, check=False).returncode == 0:
            # The device ovs-vswitchd has open is the one in the root namespace; a namesake in
            # the netns is a stale one (OVS reopened the port): it goes.
            _ip("link", "delete", port, check=False, ns=ns)
            _ip("link", "set", port, "netns", ns)
            break
        inner = _ip("link", "show", port, check=False, ns=ns)
        if inner.returncode == 0 and not ("NO-CARRIER" in inner.stdout and
                                          ",UP" in inner.stdout):
            break
        if not recreated and time.time() > t0 + 3:
            # Its device went with a deleted namespace (or OVS let go of it) while ovs-vswitchd
            # kept running: OVS makes it again for a new port record (separate transactions).
            ovs_vsctl("--if-exists", "del-port", cloud.provider_bridge, port)
            ovs_vsctl("--may-exist", "add-port", cloud.provider_bridge, port, "--", "set",
                      "Interface", port, "type=internal")
            recreated = True
        if time.time() > t0 + 20:
            raise LinkError("timeout after 20s waiting for OVS port %s" % port)
        time.sleep(0.2)
    _ip("link", "set", "lo", "up", ns=ns)
    _ip("addr", "replace", addr, "dev", port, ns=ns)
    _ip("link", "set", port, "up", ns=ns)


def _tc(ns, *args, check=True):
    return _run("tc", args, ns, check, 30)


def shape_link(rate="25mbit", burst="32kbit", latency="400ms"):
    """Token bucket filter RATE on both ends of the veth pair (both directions); idempotent."""
    ensure_link()
    for ns, dev in (("", LINK_ROOT_DEV), (LINK_NETNS, LINK_NS_DEV)):
        _tc(ns, "qdisc", "replace", "dev", dev, "root", "tbf", "rate", rate, "burst", burst,
            "latency", latency)


def unshape_link():
    """Back to the default qdisc on both ends (idempotent)."""
    for ns, dev in (("", LINK_ROOT_DEV), (LINK_NETNS, LINK_NS_DEV)):
        if ns and not os.path.exists(os.path.join("/run/netns", ns)):
            continue
        r = _tc(ns, "qdisc", "show", "dev", dev, check=False)
        if r.returncode == 0 and " tbf " in r.stdout:
            _tc(ns, "qdisc", "del", "dev", dev, "root")


def link_qdiscs():
    """{device: `tc qdisc show` output} of both ends."""
    return {dev: _tc(ns, "qdisc", "show", "dev", dev, check=False).stdout.strip()
            for ns, dev in (("", LINK_ROOT_DEV), (LINK_NETNS, LINK_NS_DEV))}
