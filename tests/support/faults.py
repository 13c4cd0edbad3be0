"""Faults injected into the embedded stack's real parts, and what a fault may leave behind.

Everything acts on cloud a: its services by PID (``kill``, ``stopped``), RabbitMQ
(``restart_rabbitmq``), nova-compute's cloudlet cache (``tmpfs_over``, ``evict_base``), and
reads what is left: libvirt domains, qemu-nbd processes, scratch entries, instance
directories, ports; and what a service logged (``ServiceLog``).
"""

import contextlib
import datetime
import os
import re
import signal
import subprocess
import time

import stack
from stack import infra, paths, processes
from stack.novastory import wait_for
from tests.e2e.test_lifecycle import compute_reported_since

# An instance directory: the server's UUID, or with a suffix nova gives it on the way out
# (``_del``, ``_resize``).
INSTANCE_DIR = re.compile(r"([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
                          r"(_\w+)?\Z")


def stack_paths():
    return paths.Paths(stack.cloud("a"))


def nova_state(*parts):
    """A path under nova-compute's ``state_path``."""
    return os.path.join(stack_paths().state, "nova", *parts)


def cache_dir():
    """nova-compute's ``[cloudlet] cache_dir`` (the stack's default: state_path/cloudlet)."""
    return nova_state("cloudlet")


def scratch_dir():
    return os.path.join(cache_dir(), "tmp")


def evict_base(base_id):
    """Remove base ``base_id`` from nova-compute's cache if it is there, as its LRU eviction
    would (refused while a domain uses it)."""
    from cloudlet_compute import bases
    from cloudlet_compute.host import domains
    store = bases.BaseStore(cache_dir())
    if base_id not in {base.id for base in store.list()}:
        return
    conn = domains.connect()
    try:
        store.delete(base_id, conn)
    finally:
        conn.close()


class ServiceLog:
    """The lines a service of cloud a logged since this object was made (those naming
    ``about`` only, if given)."""

    def __init__(self, service, about=None):
        self.path = stack_paths().log(service)
        self.about, self.offset = about, os.path.getsize(self.path)

    def lines(self):
        with open(self.path, errors="replace") as f:
            f.seek(self.offset)
            return [line for line in f.read().splitlines()
                    if self.about is None or self.about in line]

    def count(self, text):
        return sum(text in line for line in self.lines())

    def says(self, text):
        return self.count(text) > 0


def kill(service):
    """SIGKILL the main process of ``service`` (a crash: its children stay); return its PID."""
    pid = processes.running(stack_paths(), service)
    assert pid, "%s is not running" % service
    os.kill(pid, signal.SIGKILL)
    processes.wait(lambda: not processes.pid_alive(pid), 30, what="%s to die" % service)
    return pid


@contextlib.contextmanager
def stopped(service):
    """``service`` down inside the block: its process group frozen at once (SIGSTOP: it
    accepts no more work), ``down()`` (yielded) kills it; restarted after the block."""
    p = stack_paths()
    pid = processes.running(p, service)
    assert pid, "%s is not running" % service
    os.killpg(pid, signal.SIGSTOP)
    try:
        yield lambda: processes.stop(p, service)
    finally:
        processes.stop(p, service)
        stack.restart([service])


def restart_rabbitmq():
    """Stop the shared RabbitMQ and start it again (as after a crash of its host)."""
    p = stack_paths().infra
    processes.stop(p, "rabbitmq")
    infra.ensure_rabbitmq(p)


def restart_compute(admin):
    """Start nova-compute again and wait until it reported (after its init_host)."""
    since = datetime.datetime.now(datetime.timezone.utc)
    stack.restart(["nova-compute"])
    wait_for(lambda: compute_reported_since(admin, since), 180,
                             "the restarted nova-compute to report", interval=0.5)


@contextlib.contextmanager
def tmpfs_over(path, size):
    """A tmpfs of ``size`` (``mount -o size=``) over directory ``path`` inside the block,
    with the store's ``bases/`` and ``tmp/`` when ``path`` is the whole cache; yields it."""
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=0755" % size, "tmpfs", path],
                   check=True)
    try:
        if path == cache_dir():
            for d in ("bases", "tmp"):
                os.mkdir(os.path.join(path, d), 0o755)
        yield path
    finally:
        for _ in range(50):
            if subprocess.run(["umount", path]).returncode == 0:
                break
            time.sleep(0.2)   # a file still open by nova-compute's cleanup
        else:
            raise AssertionError("cannot unmount the tmpfs over %s" % path)


def entries(path):
    """Every file and directory below ``path``, relative to it."""
    found = []
    for root, dirs, files in os.walk(path):
        found += [os.path.relpath(os.path.join(root, n), path) for n in dirs + files]
    return sorted(found)


def nbd_processes():
    """PIDs of qemu-nbd processes serving a file of this stack."""
    out = []
    for pid in processes.state_processes(stack_paths(), epmd=False):
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                argv0 = f.read().split(b"\0")[0]
        except OSError:
            continue
        if os.path.basename(argv0) == b"qemu-nbd":
            out.append(pid)
    return out


def stack_domains():
    """Names of the libvirt domains of cloud a (nova's)."""
    r = subprocess.run(["virsh", "-c", "qemu:///system", "list", "--all", "--name"],
                       capture_output=True, text=True, check=True)
    prefix = stack.cloud("a").domain_prefix
    return sorted(n for n in r.stdout.split() if n.startswith(prefix))


def leftovers(admin):
    """What no server of the cloud accounts for: ``{kind: [...]}``, empty lists when clean.

    Domains without a server, qemu-nbd processes, scratch entries in the cloudlet cache,
    instance directories without a server, ports bound to no server."""
    servers = list(admin.compute.servers(all_projects=True))
    names = {s.instance_name for s in servers}
    ids = {s.id for s in servers}
    instances = nova_state("instances")
    ports = [p.id for p in admin.network.ports()
             if (p.device_owner or "").startswith("compute:") and p.device_id not in ids]
    return {
        "domains": [d for d in stack_domains() if d not in names],
        "qemu-nbd": nbd_processes(),
        "scratch": entries(scratch_dir()),
        "instance dirs": sorted(d for d in os.listdir(instances) if _stray_dir(d, ids)),
        "ports": ports,
    }


def _stray_dir(name, server_ids):
    match = INSTANCE_DIR.match(name)
    return bool(match) and (bool(match.group(2)) or match.group(1) not in server_ids)


def nothing_left(admin):
    """``leftovers`` once they are all empty (cleanups may lag a little), else the last."""
    deadline = time.monotonic() + 30
    while True:
        left = leftovers(admin)
        if not any(left.values()) or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


def fault_messages(server_id):
    """The messages of every instance fault of ``server_id``, oldest first (nova's API
    shows the last one of ERROR servers only; a failed action on an ACTIVE server records
    one too)."""
    r = infra.mysql(stack_paths(), "SELECT message FROM %s.instance_faults WHERE "
                    "instance_uuid='%s' ORDER BY id" % (stack.cloud("a").db("nova"), server_id))
    return r.stdout.splitlines()[1:]
