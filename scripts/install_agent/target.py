"""What is on this machine: the layout, its files, the OpenStack python, how to restart."""

import json
import os
import shutil
import socket
import subprocess

from .constants import CLOUDLET_COMMENTS, CLOUDLET_OPTIONS, DEFAULT_BACKUP_DIR, \
    DEFAULT_LIBVIRT_URI, PACKAGE
from .ini import ini_get
from .report import Refused


def read_text(path):
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        return f.read()


def _shebang_python(path):
    """The interpreter of a console script (its ``#!`` line), or None."""
    try:
        with open(path, "rb") as f:
            first = f.readline().decode("utf-8", "replace").strip()
    except OSError:
        return None
    if not first.startswith("#!"):
        return None
    parts = first[2:].split()
    if parts and os.path.basename(parts[0]) == "env" and len(parts) > 1:
        return shutil.which(parts[1])
    return parts[0] if parts else None


def _pid_from(pidfile):
    try:
        with open(pidfile) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _pid_alive(pid):
    if not pid:
        return False
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def _cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return [a.decode("utf-8", "replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def _unit_exists(name):
    for d in ("/etc/systemd/system", "/lib/systemd/system", "/usr/lib/systemd/system"):
        if os.path.exists(os.path.join(d, name + ".service")):
            return True
    return False


def sh(argv, timeout=120, env=None, cwd="/"):
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)


_PROBE = r"""
import importlib.metadata as md, importlib.util, json, os, sys
def version(name):
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None
def pkgdir(name):
    try:
        spec = importlib.util.find_spec(name)
    except Exception:
        return None
    locations = spec.submodule_search_locations if spec else None
    return list(locations)[0] if locations else None
out = {"python": sys.executable, "nova": version("nova"), "horizon": version("horizon"),
       "package": version("@PACKAGE@"),
       "nova_virt": pkgdir("nova.virt") if version("nova") else None,
       "dashboard": pkgdir("openstack_dashboard") if version("horizon") else None,
       "clouds": None}
if len(sys.argv) > 1 and os.path.exists(sys.argv[1]):
    try:
        import yaml
        with open(sys.argv[1]) as f:
            out["clouds"] = yaml.safe_load(f)
    except Exception as e:
        out["clouds_error"] = "%s: %s" % (type(e).__name__, e)
print(json.dumps(out))
""".replace("@PACKAGE@", PACKAGE)


_EMBEDDED = r"""
import json, os, sys
from stack import topology
state, name = os.path.abspath(sys.argv[1]), sys.argv[2]
if not name:
    name = next((n for n in topology.NAMES if topology.Cloud(n).state == state), "a")
print(json.dumps({"name": name, "link_ip": topology.Cloud(name, state).link_ip,
                  "cloudlet_options": topology.EMBEDDED_CLOUDLET_OPTIONS}))
"""


class Target:
    """What the agent found on this machine: layout, files, python, how to restart.

    The shared part; one subclass per install layout (``Embedded``, ``Devstack``,
    ``Packages``) says where that layout keeps its files, which python runs nova-compute and
    how its services restart. ``find_target(opts)`` picks the subclass (detecting it for
    ``--layout auto``)."""

    layout = None
    restart_cwd = "/"

    def __init__(self, opts):
        self.opts = opts
        self.state_dir = opts.get("state_dir")
        self._locate()
        self.python = opts.get("python") or self.python
        if not self.python or not os.path.exists(self.python):
            raise Refused("cannot find the Python of the target's OpenStack (nova-compute's "
                          "interpreter); give --python")
        self.backup_dir = opts.get("backup_dir") or DEFAULT_BACKUP_DIR
        self.manifest_path = os.path.join(self.backup_dir, "manifest.json")
        self.paste_ini = ini_get(read_text(self.nova_conf), "wsgi", "api_paste_config") \
            if os.path.exists(self.nova_conf) else None
        if not self.paste_ini or not os.path.isabs(self.paste_ini):
            self.paste_ini = self.default_paste_ini
        self.compute_conf = self._compute_conf()
        if opts.get("clouds_yaml"):
            self.clouds_yaml = opts["clouds_yaml"]
        if opts.get("cloud"):
            self.cloud = opts["cloud"]
        if opts.get("restart_hook"):
            self.restart_cwd = "/"
        self.facts = None

    # what differs per layout
    def _locate(self):
        """Set nova_conf, compute_confs, default_paste_ini, clouds_yaml, cloud, python (None
        when not found) and what restart needs."""
        raise NotImplementedError

    def _restart(self, services):
        """The argv that restarts ``services`` in this layout, or None."""
        raise NotImplementedError

    def compute_process_alive(self):
        """(alive, why-not)."""
        raise NotImplementedError

    def _config_dir(self):
        return "/etc/nova"

    # shared
    def restart_cmd(self, services):
        hook = self.opts.get("restart_hook")
        if hook:
            return ["sh", "-c", hook, "restart-hook"] + list(services)
        return self._restart(services)

    def _compute_conf(self):
        """The file whose [DEFAULT] compute_driver nova-compute uses: the last of its config
        files that sets it, else its own file (or nova.conf)."""
        existing = [f for f in self.compute_confs if os.path.exists(f)]
        setting = [f for f in existing if ini_get(read_text(f), "DEFAULT", "compute_driver")]
        if setting:
            return setting[-1]
        return existing[-1] if existing else self.compute_confs[-1]

    # facts from the OpenStack python
    def probe(self):
        if self.facts is None:
            r = sh([self.python, "-c", _PROBE, self.clouds_yaml or ""], timeout=120)
            if r.returncode != 0:
                raise Refused("the target's python %s does not run the probe: %s" % (
                    self.python, (r.stderr.strip().splitlines() or ["?"])[-1]))
            self.facts = json.loads(r.stdout.strip().splitlines()[-1])
        return self.facts

    def cloudlet_options(self):
        """[(key, value, comment)] for nova.conf's [cloudlet]: the options given, and what the
        layout adds (for the embedded stack its hand-off address and overlay fetch policy)."""
        out = []
        for key in CLOUDLET_OPTIONS:
            value = self.opts.get(key) or self._default_cloudlet_option(key)
            if value:
                out.append((key, value, CLOUDLET_COMMENTS.get(key)))
        return out + self._extra_cloudlet_options()

    def _default_cloudlet_option(self, key):
        """The layout's value for a [cloudlet] option not given, or None."""
        return None

    def _extra_cloudlet_options(self):
        """[(key, value, comment)] the layout always adds to [cloudlet]."""
        return []

    def compute_host(self):
        for f in self.compute_confs:
            if os.path.exists(f):
                h = ini_get(read_text(f), "DEFAULT", "host")
                if h:
                    return h
        return socket.gethostname()

    def libvirt_uri(self):
        if self.opts.get("libvirt_uri"):
            return self.opts["libvirt_uri"]
        for f in reversed(self.compute_confs):
            if os.path.exists(f):
                uri = ini_get(read_text(f), "libvirt", "connection_uri")
                if uri:
                    return uri
        return DEFAULT_LIBVIRT_URI

    def describe(self):
        return "%s layout (%s), python %s" % (self.layout, self._config_dir(), self.python)


class Embedded(Target):
    """The embedded stack (``python -m stack``): everything below its state directory."""

    layout = "embedded"

    def _locate(self):
        s = self.state_dir = os.path.abspath(self.state_dir or "")
        if not os.path.exists(os.path.join(s, "settings.json")):
            raise Refused("%s is not a state directory of the embedded stack (no settings.json)"
                          % s)
        etc = os.path.join(s, "etc", "nova")
        self.nova_conf = os.path.join(etc, "nova.conf")
        self.compute_confs = [self.nova_conf, os.path.join(etc, "nova-compute.conf")]
        self.default_paste_ini = os.path.join(etc, "api-paste.ini")
        self.clouds_yaml, self.cloud = os.path.join(s, "clouds.yaml"), "cloudlet-admin"
        # nova-compute's (or nova-api's gunicorn) interpreter; the stack package (stack/, run
        # as `python -m stack` from the repository) holds stack/wsgi.
        self.python, stack_dir = None, os.path.join(os.path.dirname(os.path.dirname(s)),
                                                    "stack")
        for name in ("nova-compute", "nova-conductor", "nova-scheduler", "nova-api"):
            pid = _pid_from(os.path.join(s, "run", name + ".pid")) or 0
            argv = _cmdline(pid)
            if argv and not self.python:
                self.python = argv[0] if os.path.basename(argv[0]).startswith("python") \
                    else _shebang_python(argv[0])
            try:   # nova-api's gunicorn runs in stack/wsgi (--chdir)
                cwd = os.readlink("/proc/%d/cwd" % pid)
                if name == "nova-api" and os.path.basename(cwd) == "wsgi":
                    stack_dir = os.path.dirname(cwd)
            except OSError:
                pass
        self.stack_dir = self.opts.get("stack_dir") or stack_dir
        self.restart_cwd = repo = os.path.dirname(self.stack_dir)
        venv_python = os.path.join(repo, ".venv", "bin", "python")   # the stack's own fallback
        if not self.python and os.path.exists(venv_python):
            self.python = venv_python
        self.horizon_units = []

    def _restart(self, services):
        name = self.embedded().get("name")
        return [self.opts.get("python") or self.python, "-m", "stack", "restart",
                "--state-dir", self.state_dir] + (
                    ["--name", name] if name and name != "a" else []) + [
                        x for x in services if x != "horizon"]

    def compute_process_alive(self):
        pf = os.path.join(self.state_dir, "run", "nova-compute.pid")
        pid = _pid_from(pf)
        if not _pid_alive(pid):
            return False, "nova-compute is not running (%s: %s)" % (
                pf, "pid %d is gone" % pid if pid else "no pid file")
        return True, ""

    def _default_cloudlet_option(self, key):
        # as `python -m stack up --cloudlet` writes it
        return self.embedded().get("link_ip") if key == "handoff_host" else None

    def _extra_cloudlet_options(self):
        return [tuple(o) for o in self.embedded().get("cloudlet_options", ())]

    def _config_dir(self):
        return self.state_dir

    def embedded(self):
        """The embedded stack's facts from stack/topology.py: its name and link address."""
        if getattr(self, "_embedded", None) is None:
            self._embedded = {"name": self.opts.get("stack_name")}
            r = sh([self.python, "-c", _EMBEDDED, self.state_dir,
                     self.opts.get("stack_name") or ""], cwd=os.path.dirname(self.stack_dir))
            if r.returncode == 0 and r.stdout.strip():
                self._embedded = json.loads(r.stdout.strip().splitlines()[-1])
        return self._embedded


class _Systemd(Target):
    """A layout in /etc/nova whose services are systemd units (``self.units``,
    ``self.horizon_units``); a subclass says its compute config file, its admin cloud, where
    its nova-compute is and its units."""

    compute_conf_name = admin_cloud = None

    def _locate(self):
        self.nova_conf = "/etc/nova/nova.conf"
        self.compute_confs = [self.nova_conf, os.path.join("/etc/nova", self.compute_conf_name)]
        self.default_paste_ini = "/etc/nova/api-paste.ini"
        self.clouds_yaml, self.cloud = "/etc/openstack/clouds.yaml", self.admin_cloud
        self.python = self._find_python()
        self.units, self.horizon_units = self._find_units()

    def _find_python(self):
        raise NotImplementedError

    def _find_units(self):
        """({"nova-api": unit, "nova-compute": unit}, [Horizon's unit] or [])."""
        raise NotImplementedError

    def _restart(self, services):
        units = []
        for s in services:
            for u in (self.horizon_units if s == "horizon" else [self.units[s]]):
                if u not in units:
                    units.append(u)
        return ["systemctl", "restart"] + units if units else None

    def compute_process_alive(self):
        unit = self.units["nova-compute"]
        if shutil.which("systemctl"):
            r = sh(["systemctl", "is-active", unit])
            if r.stdout.strip() != "active":
                return False, "nova-compute is not running (systemctl is-active %s: %s)" % (
                    unit, r.stdout.strip() or r.stderr.strip())
        return True, ""


def _web_units():
    """Horizon's web server unit here, if any: [apache2] or [httpd] or []."""
    return [u for u in ("apache2", "httpd") if _unit_exists(u)][:1]


class Devstack(_Systemd):
    """DevStack: /etc/nova, its venv under /opt/stack, devstack@ units."""

    layout = "devstack"
    compute_conf_name, admin_cloud = "nova-cpu.conf", "devstack-admin"

    def _find_python(self):
        python = None
        for p in ("/opt/stack/data/venv/bin/nova-compute", "/usr/local/bin/nova-compute"):
            python = python or _shebang_python(p)
        return python

    def _find_units(self):
        return {"nova-api": "devstack@n-api", "nova-scheduler": "devstack@n-sch",
                "nova-compute": "devstack@n-cpu"}, _web_units()


class Packages(_Systemd):
    """A distribution's packages: /etc/nova, /usr/bin/nova-compute, nova-* units."""

    layout = "packages"
    compute_conf_name, admin_cloud = "nova-compute.conf", "admin"

    def _find_python(self):
        return _shebang_python("/usr/bin/nova-compute") or _shebang_python(
            shutil.which("nova-compute") or "/nonexistent")

    def _find_units(self):
        web = _web_units()
        return {"nova-api": "nova-api" if _unit_exists("nova-api") else
                (web[0] if web else "nova-api"), "nova-scheduler": "nova-scheduler",
                "nova-compute": "nova-compute"}, web


LAYOUTS = {cls.layout: cls for cls in (Embedded, Devstack, Packages)}


def detect_layout(state_dir):
    """The layout of this machine: embedded when given a state directory, else devstack or
    packages by what /etc/nova, /opt/stack and the systemd units show."""
    if state_dir:
        if not os.path.exists(os.path.join(state_dir, "settings.json")):
            raise Refused("%s is not a state directory of the embedded stack (no "
                          "settings.json)" % state_dir)
        return "embedded"
    if os.path.exists("/etc/nova/nova.conf"):
        if os.path.isdir("/opt/stack") and (_unit_exists("devstack@n-api")
                                           or _unit_exists("devstack@n-cpu")):
            return "devstack"
        return "packages"
    raise Refused("no OpenStack found here: no /etc/nova/nova.conf (for the embedded stack "
                  "give --state-dir)")


def find_target(opts):
    """The Target for ``opts``: of the layout given (``--layout``), or detected for auto."""
    layout = opts.get("layout") or "auto"
    if layout == "auto":
        layout = detect_layout(opts.get("state_dir"))
    return LAYOUTS[layout](opts)
