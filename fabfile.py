"""Put OpenStack++ onto a running OpenStack, and take it off again (Fabric 3).

    fab -H root@HOST install [options]       # over SSH
    fab local-install [options]              # on this machine
    fab -H root@HOST uninstall [options]     # / fab local-uninstall

Options (all tasks): --layout auto|embedded|devstack|packages, --state-dir DIR (embedded stack),
--python PATH (the target's OpenStack python), --backup-dir DIR (default
/var/lib/openstackpp/install), --libvirt-uri URI, --cloud NAME, --clouds-yaml PATH,
--horizon auto|skip, --restart-hook CMD, --no-restart, --timeout SECONDS.
See doc/install.md.

This one file has two halves:

* the *agent* (stdlib only, no Fabric): the checks, the plan, applying it with backups and a
  manifest, uninstalling from the manifest, restarting services and checking the API. Fabric
  copies this file to a temporary directory on the target and runs it there with the target's
  /usr/bin/python3 (``python3 fabfile.py agent install '<json options>'``). The functions are
  unit-tested in tests/fab.
* the *tasks* (``install``, ``uninstall``, ``local-install``, ``local-uninstall``): thin
  wrappers that build our wheel when the target lacks the package, copy it and the agent over,
  and run the agent.

Exit codes of the agent (and so of ``fab``): 0 done (or nothing to do), 2 refused (nothing
changed), 1 failed.
"""

import base64
import datetime
import hashlib
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

# --- what OpenStack++ needs (kept equal to the package's constants by tests/fab) -----------------
SUPPORTED_NOVA = ("34.0.0",)
SUPPORTED_HORIZON = ("27.0.0",)
PACKAGE = "openstackpp"
PASTE_SECTION = "app:osapi_compute_app_v21"
PASTE_KEY = "paste.app_factory"
PASTE_APP_FACTORY = "cloudlet_api.router:APIRouter.factory"   # cloudlet_api.PASTE_APP_FACTORY
COMPUTE_DRIVER = "cloudlet.CloudletDriver"                     # cloudlet_compute.nova.shim.DRIVER
EXTENSION_ALIAS = "os-cloudlet"
HORIZON_ENABLED_NAME = "_1920_project_cloudlet_panel.py"
DEFAULT_BACKUP_DIR = "/var/lib/openstackpp/install"
DEFAULT_LIBVIRT_URI = "qemu:///system"
CLOUDLET_OPTIONS = ("handoff_host", "cache_dir", "overlay_url_schemes")   # [cloudlet] in nova.conf
CLOUDLET_COMMENTS = {   # written above an option that install adds
    "handoff_host": "# Address of this cloud on the veth link between the clouds (VM hand-off).",
}

EXIT_OK, EXIT_FAILED, EXIT_REFUSED = 0, 1, 2

HERE = os.path.dirname(os.path.abspath(__file__))


class Refused(Exception):
    """A check failed before anything was changed: one line saying what is wrong."""


class Failed(Exception):
    """Something went wrong while changing the target."""


def log(msg):
    print("openstackpp: " + msg, flush=True)


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def file_sha256(path):
    try:
        with open(path, "rb") as f:
            return sha256(f.read())
    except FileNotFoundError:
        return None


def utcnow():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


# --- line-preserving INI edits -------------------------------------------------------------------
_SECTION = re.compile(r"^\s*\[\s*([^\]]+?)\s*\]\s*$")


def _key_re(key):
    return re.compile(r"^(\s*" + re.escape(key) + r"\s*[=:][ \t]*)(.*?)([ \t]*)(\r?\n)?$")


def _sections(lines):
    """[(name, header index, end index)] in file order; end is exclusive."""
    out = []
    for i, line in enumerate(lines):
        m = _SECTION.match(line.rstrip("\r\n"))
        if m:
            if out:
                out[-1][2] = i
            out.append([m.group(1), i, len(lines)])
    return out


def ini_get(text, section, key):
    """The last value of ``key`` in ``section`` (as oslo.config and paste read it), or None."""
    lines = text.splitlines(keepends=True)
    value = None
    rx = _key_re(key)
    for name, start, end in _sections(lines):
        if name != section:
            continue
        for line in lines[start + 1:end]:
            m = rx.match(line)
            if m:
                value = m.group(2)
    return value


def ini_set(text, section, key, value, comment=None):
    """``text`` with ``key = value`` in ``section``; every other byte unchanged.

    Replaces the value of the last ``key`` line of the section (keeping its spacing), else adds
    ``key = value`` after the section's last non-blank line, else appends the section."""
    lines = text.splitlines(keepends=True)
    rx = _key_re(key)
    secs = [s for s in _sections(lines) if s[0] == section]
    hit = None
    for _, start, end in secs:
        for i in range(start + 1, end):
            if rx.match(lines[i]):
                hit = i
    eol = "\r\n" if lines and lines[0].endswith("\r\n") else "\n"
    if hit is not None:
        m = rx.match(lines[hit])
        lines[hit] = m.group(1) + value + m.group(3) + (m.group(4) or "")
    elif secs:
        _, start, end = secs[-1]
        at = start + 1
        for i in range(start + 1, end):
            if lines[i].strip():
                at = i + 1
        if at > 0 and not lines[at - 1].endswith("\n"):
            lines[at - 1] += eol
        lines[at:at] = (["%s%s" % (comment, eol)] if comment else []) + [
            "%s = %s%s" % (key, value, eol)]
    else:
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += eol
        if lines and lines[-1].strip():
            lines.append(eol)
        lines += ["[%s]%s" % (section, eol)] + (["%s%s" % (comment, eol)] if comment else []) \
            + ["%s = %s%s" % (key, value, eol)]
    return "".join(lines)


# --- the target ----------------------------------------------------------------------------------
def _read(path):
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


def _sh(argv, timeout=120, env=None, cwd="/"):
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
    """What the agent found on this machine: layout, files, python, how to restart."""

    def __init__(self, opts):
        self.opts = opts
        self.layout = opts.get("layout") or "auto"
        self.state_dir = opts.get("state_dir")
        if self.layout == "auto":
            self.layout = self._detect_layout()
        self.restart_cwd = "/"
        getattr(self, "_init_" + self.layout)()
        self.python = opts.get("python") or self.python
        if not self.python or not os.path.exists(self.python):
            raise Refused("cannot find the Python of the target's OpenStack (nova-compute's "
                          "interpreter); give --python")
        self.backup_dir = opts.get("backup_dir") or DEFAULT_BACKUP_DIR
        self.manifest_path = os.path.join(self.backup_dir, "manifest.json")
        self.paste_ini = ini_get(_read(self.nova_conf), "wsgi", "api_paste_config") \
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
            self.restart_cmd = lambda services: ["sh", "-c", opts["restart_hook"], "restart-hook"
                                                 ] + list(services)
        self.facts = None

    # layouts
    def _detect_layout(self):
        if self.state_dir:
            if not os.path.exists(os.path.join(self.state_dir, "settings.json")):
                raise Refused("%s is not a state directory of the embedded stack (no "
                              "settings.json)" % self.state_dir)
            return "embedded"
        if os.path.exists("/etc/nova/nova.conf"):
            if os.path.isdir("/opt/stack") and (_unit_exists("devstack@n-api")
                                               or _unit_exists("devstack@n-cpu")):
                return "devstack"
            return "packages"
        raise Refused("no OpenStack found here: no /etc/nova/nova.conf (for the embedded stack "
                      "give --state-dir)")

    def _init_embedded(self):
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

        def restart(services):
            name = self.embedded().get("name")
            return [self.opts.get("python") or self.python, "-m", "stack", "restart",
                    "--state-dir", s] + (["--name", name] if name and name != "a" else []) + [
                        x for x in services if x != "horizon"]
        self.restart_cmd = restart

    def _init_devstack(self):
        self.nova_conf = "/etc/nova/nova.conf"
        self.compute_confs = [self.nova_conf, "/etc/nova/nova-cpu.conf"]
        self.default_paste_ini = "/etc/nova/api-paste.ini"
        self.clouds_yaml, self.cloud = "/etc/openstack/clouds.yaml", "devstack-admin"
        self.python = None
        for p in ("/opt/stack/data/venv/bin/nova-compute", "/usr/local/bin/nova-compute"):
            self.python = self.python or _shebang_python(p)
        self.units = {"nova-api": "devstack@n-api", "nova-compute": "devstack@n-cpu"}
        self.horizon_units = [u for u in ("apache2", "httpd") if _unit_exists(u)][:1]
        self.restart_cmd = self._systemctl_restart

    def _init_packages(self):
        self.nova_conf = "/etc/nova/nova.conf"
        self.compute_confs = [self.nova_conf, "/etc/nova/nova-compute.conf"]
        self.default_paste_ini = "/etc/nova/api-paste.ini"
        self.clouds_yaml, self.cloud = "/etc/openstack/clouds.yaml", "admin"
        self.python = _shebang_python("/usr/bin/nova-compute") or _shebang_python(
            shutil.which("nova-compute") or "/nonexistent")
        web = [u for u in ("apache2", "httpd") if _unit_exists(u)][:1]
        self.units = {"nova-api": "nova-api" if _unit_exists("nova-api") else
                      (web[0] if web else "nova-api"), "nova-compute": "nova-compute"}
        self.horizon_units = web
        self.restart_cmd = self._systemctl_restart

    def _systemctl_restart(self, services):
        units = []
        for s in services:
            for u in (self.horizon_units if s == "horizon" else [self.units[s]]):
                if u not in units:
                    units.append(u)
        return ["systemctl", "restart"] + units if units else None

    def _compute_conf(self):
        """The file whose [DEFAULT] compute_driver nova-compute uses: the last of its config
        files that sets it, else its own file (or nova.conf)."""
        existing = [f for f in self.compute_confs if os.path.exists(f)]
        setting = [f for f in existing if ini_get(_read(f), "DEFAULT", "compute_driver")]
        if setting:
            return setting[-1]
        return existing[-1] if existing else self.compute_confs[-1]

    # facts from the OpenStack python
    def probe(self):
        if self.facts is None:
            r = _sh([self.python, "-c", _PROBE, self.clouds_yaml or ""], timeout=120)
            if r.returncode != 0:
                raise Refused("the target's python %s does not run the probe: %s" % (
                    self.python, (r.stderr.strip().splitlines() or ["?"])[-1]))
            self.facts = json.loads(r.stdout.strip().splitlines()[-1])
        return self.facts

    def cloudlet_options(self):
        """[(key, value, comment)] for nova.conf's [cloudlet]: the options given, and for the
        embedded stack its hand-off address and overlay fetch policy (as `python -m stack up
        --cloudlet` writes them)."""
        out = []
        for key in CLOUDLET_OPTIONS:
            value = self.opts.get(key)
            if not value and key == "handoff_host" and self.layout == "embedded":
                value = self.embedded().get("link_ip")
            if value:
                out.append((key, value, CLOUDLET_COMMENTS.get(key)))
        if self.layout == "embedded":
            out += [tuple(o) for o in self.embedded().get("cloudlet_options", ())]
        return out

    def embedded(self):
        """The embedded stack's facts from stack/topology.py: its name and link address."""
        if getattr(self, "_embedded", None) is None:
            self._embedded = {"name": self.opts.get("stack_name")}
            r = _sh([self.python, "-c", _EMBEDDED, self.state_dir,
                     self.opts.get("stack_name") or ""], cwd=os.path.dirname(self.stack_dir))
            if r.returncode == 0 and r.stdout.strip():
                self._embedded = json.loads(r.stdout.strip().splitlines()[-1])
        return self._embedded

    def compute_host(self):
        for f in self.compute_confs:
            if os.path.exists(f):
                h = ini_get(_read(f), "DEFAULT", "host")
                if h:
                    return h
        return socket.gethostname()

    def compute_process_alive(self):
        """(alive, why-not)."""
        if self.layout == "embedded":
            pf = os.path.join(self.state_dir, "run", "nova-compute.pid")
            pid = _pid_from(pf)
            if not _pid_alive(pid):
                return False, "nova-compute is not running (%s: %s)" % (
                    pf, "pid %d is gone" % pid if pid else "no pid file")
            return True, ""
        unit = self.units["nova-compute"]
        if shutil.which("systemctl"):
            r = _sh(["systemctl", "is-active", unit])
            if r.stdout.strip() != "active":
                return False, "nova-compute is not running (systemctl is-active %s: %s)" % (
                    unit, r.stdout.strip() or r.stderr.strip())
        return True, ""

    def libvirt_uri(self):
        if self.opts.get("libvirt_uri"):
            return self.opts["libvirt_uri"]
        for f in reversed(self.compute_confs):
            if os.path.exists(f):
                uri = ini_get(_read(f), "libvirt", "connection_uri")
                if uri:
                    return uri
        return DEFAULT_LIBVIRT_URI

    def describe(self):
        return "%s layout (%s), python %s" % (
            self.layout, self.state_dir if self.layout == "embedded" else "/etc/nova",
            self.python)


# --- the API -------------------------------------------------------------------------------------
class Api:
    """Keystone password auth and nova calls with urllib (credentials from clouds.yaml)."""

    def __init__(self, clouds, cloud):
        if not clouds or cloud not in (clouds.get("clouds") or {}):
            raise Refused("no cloud %r in the target's clouds.yaml (give --cloud/--clouds-yaml)"
                          % cloud)
        self.cfg = clouds["clouds"][cloud]
        self.token, self.compute = None, None

    def _req(self, method, url, body=None, headers=None, timeout=30):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method, headers=dict(
            {"Content-Type": "application/json", "Accept": "application/json"},
            **(headers or {})))
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), json.loads(r.read() or b"null")

    def login(self):
        a = self.cfg["auth"]
        url = a["auth_url"].rstrip("/")
        if not url.endswith("/v3"):
            url += "/v3"
        body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
            "name": a["username"], "password": a["password"],
            "domain": {"name": a.get("user_domain_name", "Default")}}}},
            "scope": {"project": {"name": a["project_name"],
                                  "domain": {"name": a.get("project_domain_name", "Default")}}}}}
        try:
            _, headers, doc = self._req("POST", url + "/auth/tokens", body)
        except (urllib.error.URLError, OSError) as e:
            raise Refused("keystone at %s does not answer: %s" % (url, e))
        self.token = headers.get("X-Subject-Token") or headers.get("x-subject-token")
        region = self.cfg.get("region_name")
        iface = self.cfg.get("interface", "public")
        for svc in doc["token"].get("catalog", []):
            if svc["type"] == "compute":
                for ep in svc["endpoints"]:
                    if ep["interface"] == iface and (not region or ep.get("region_id") in
                                                     (region, None) or ep.get("region") == region):
                        self.compute = ep["url"].rstrip("/")
        if not self.compute:
            raise Refused("no compute endpoint in keystone's catalog")
        return self

    def get(self, path):
        try:
            return self._req("GET", self.compute + path, headers={"X-Auth-Token": self.token})[2]
        except urllib.error.HTTPError as e:
            if e.code == 401:
                self.login()
                return self._req("GET", self.compute + path,
                                 headers={"X-Auth-Token": self.token})[2]
            raise

    def extensions(self):
        return [e["alias"] for e in self.get("/extensions")["extensions"]]

    def compute_services(self):
        return self.get("/os-services?binary=nova-compute")["services"]


def wait(cond, timeout, what, interval=1.0):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            if cond():
                return
        except Exception as e:  # noqa: BLE001 - services restarting
            last = e
        time.sleep(interval)
    raise Failed("timeout after %ds waiting for %s%s" % (timeout, what, (
        " (last error: %s)" % last) if last else ""))


# --- checks --------------------------------------------------------------------------------------
def check_target(t, need_compute=True):
    """Refuse (one line) unless the target is something we support, running. Changes nothing."""
    facts = t.probe()
    if not facts["nova"]:
        raise Refused("nova is not installed in %s's environment" % t.python)
    if facts["nova"] not in SUPPORTED_NOVA:
        raise Refused("nova %s is not supported (supported: %s)" % (
            facts["nova"], ", ".join(SUPPORTED_NOVA)))
    if facts["horizon"] and facts["horizon"] not in SUPPORTED_HORIZON and \
            t.opts.get("horizon", "auto") != "skip":
        raise Refused("horizon %s is not supported (supported: %s; --horizon skip leaves "
                      "Horizon alone)" % (facts["horizon"], ", ".join(SUPPORTED_HORIZON)))
    for f in (t.paste_ini, t.compute_conf):
        if not os.path.exists(f):
            raise Refused("%s does not exist" % f)
    paste = _read(t.paste_ini)
    if ini_get(paste, PASTE_SECTION, PASTE_KEY) is None:
        raise Refused("%s has no [%s] %s" % (t.paste_ini, PASTE_SECTION, PASTE_KEY))
    uri = t.libvirt_uri()
    if shutil.which("virsh"):
        r = _sh(["virsh", "-c", uri, "version"], timeout=60)
        err = "; ".join(re.sub(r"^error:\s*", "", x.strip()) for x in r.stderr.splitlines()
                        if x.strip()) if r.returncode else None
    else:
        r = _sh([t.python, "-c", "import libvirt,sys; libvirt.open(sys.argv[1]).close()", uri])
        err = (r.stderr.strip().splitlines() or [""])[-1] if r.returncode else None
    if err is not None:
        raise Refused("libvirt is not reachable at %s: %s" % (uri, err.strip() or "error"))
    alive, why = t.compute_process_alive()
    if not alive:
        raise Refused(why)
    if facts.get("clouds_error"):
        raise Refused("cannot read %s: %s" % (t.clouds_yaml, facts["clouds_error"]))
    api = Api(facts["clouds"], t.cloud).login()
    try:
        services = api.compute_services()
    except Exception as e:  # noqa: BLE001
        raise Refused("nova-api at %s does not answer GET /os-services: %s" % (api.compute, e))
    host = t.compute_host()
    mine = [s for s in services if s.get("host") == host]
    if need_compute and not any(s.get("state") == "up" for s in mine):
        raise Refused("nova-compute on host %s is %s" % (
            host, "down (nova's service list says so)" if mine else
            "not registered with nova"))
    return api


# --- plan / apply / uninstall --------------------------------------------------------------------
def desired_files(t, opts):
    """[(path, new bytes or None to leave as is, services to restart)] for the target now."""
    facts = t.probe()
    out = []
    paste = _read(t.paste_ini)
    out.append((t.paste_ini, ini_set(paste, PASTE_SECTION, PASTE_KEY, PASTE_APP_FACTORY),
                ["nova-api"]))
    comp = ini_set(_read(t.compute_conf), "DEFAULT", "compute_driver", COMPUTE_DRIVER)
    options = t.cloudlet_options()
    if t.compute_conf == t.nova_conf:
        for key, value, comment in options:
            comp = ini_set(comp, "cloudlet", key, value, comment)
    elif options:
        nova = _read(t.nova_conf)
        for key, value, comment in options:
            nova = ini_set(nova, "cloudlet", key, value, comment)
        out.append((t.nova_conf, nova, ["nova-api", "nova-compute"]))
    out.append((t.compute_conf, comp, ["nova-compute"]))
    if opts.get("shim_source") and facts.get("nova_virt"):
        out.append((os.path.join(facts["nova_virt"], "cloudlet", "__init__.py"),
                    opts["shim_source"], ["nova-compute"]))
    if facts.get("dashboard") and opts.get("horizon", "auto") != "skip" and \
            opts.get("horizon_enabled"):
        out.append((os.path.join(facts["dashboard"], "local", "enabled", HORIZON_ENABLED_NAME),
                    opts["horizon_enabled"], ["horizon"]))
    return out


def install_plan(t, opts):
    """The changes install would make, as data: [{path, action, content, services}]. Empty when
    everything is as OpenStack++ needs it (the second install)."""
    plan = []
    for path, text, services in desired_files(t, opts):
        data = text.encode("utf-8", "surrogateescape")
        if os.path.exists(path):
            with open(path, "rb") as f:
                if f.read() == data:
                    continue
            action = "modify"
        else:
            action = "create"
        plan.append({"path": path, "action": action, "content": data, "services": services})
    facts = t.probe()
    if not facts["package"]:
        plan.append({"package": PACKAGE, "action": "pip-install", "wheel": opts.get("wheel"),
                     "services": ["nova-api", "nova-compute"]})
    return plan


def _pip(t, args):
    """pip of the target's python; a distribution's python (PEP 668: externally managed, as
    Debian's /usr/bin/python3 for packaged OpenStack) gets --break-system-packages."""
    argv = [t.python, "-m", "pip", "--disable-pip-version-check"] + args
    r = _sh(argv, timeout=900)
    if r.returncode != 0 and "externally-managed-environment" in r.stderr:
        r = _sh(argv + ["--break-system-packages"], timeout=900)
    return r


def load_manifest(t):
    try:
        with open(t.manifest_path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def save_manifest(t, m):
    tmp = t.manifest_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(m, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(tmp, t.manifest_path)


def _write_like(path, data, like=None, mode=0o644):
    """Write ``data`` to ``path`` atomically, with the mode and owner of ``like``."""
    st = os.stat(like) if like and os.path.exists(like) else None
    tmp = path + ".openstackpp-tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.chmod(tmp, st.st_mode & 0o7777 if st else mode)
    if st:
        try:
            os.chown(tmp, st.st_uid, st.st_gid)
        except OSError:
            pass
    os.replace(tmp, path)


def apply_plan(t, plan, manifest=None):
    """Make the changes, recording each (sha256 before/after, backup) in the manifest.
    Returns (manifest, services to restart)."""
    os.makedirs(os.path.join(t.backup_dir, "files"), mode=0o700, exist_ok=True)
    m = manifest or {"version": 1, "installed_at": utcnow(), "layout": t.layout,
                     "target": t.describe(), "python": t.python, "changes": [],
                     "package": None}
    services = []
    for step in plan:
        for s in step["services"]:
            if s not in services:
                services.append(s)
        if "package" in step:
            if not step.get("wheel"):
                raise Failed("%s is not installed in %s and no wheel was given" % (
                    PACKAGE, t.python))
            log("pip install %s into %s" % (os.path.basename(step["wheel"]), t.python))
            r = _pip(t, ["install", "--no-input", step["wheel"]])
            if r.returncode != 0:
                raise Failed("pip install failed: %s" % r.stderr.strip()[-1500:])
            m["package"] = {"name": PACKAGE, "before": None, "installed_by_us": True}
            save_manifest(t, m)
            continue
        path, data = step["path"], step["content"]
        entry = {"path": path, "action": step["action"], "sha256_after": sha256(data),
                 "services": step["services"], "backup": None, "sha256_before": None,
                 "created_dirs": []}
        if step["action"] == "modify":
            with open(path, "rb") as f:
                old = f.read()
            backup = os.path.join(t.backup_dir, "files", "%02d-%s" % (
                len(m["changes"]), os.path.basename(path)))
            shutil.copy2(path, backup)
            entry.update(backup=backup, sha256_before=sha256(old))
        else:
            d, missing = os.path.dirname(path), []
            while not os.path.isdir(d):
                missing.append(d)
                d = os.path.dirname(d)
            for d in reversed(missing):
                os.mkdir(d, 0o755)
            entry["created_dirs"] = missing
        m["changes"].append(entry)
        save_manifest(t, m)   # before the write: a crash leaves a restorable record
        _write_like(path, data, like=path if step["action"] == "modify" else None)
        log("%s %s" % ("changed" if step["action"] == "modify" else "created", path))
    if m["package"] is None:
        m["package"] = {"name": PACKAGE, "before": t.probe()["package"], "installed_by_us": False}
    save_manifest(t, m)
    return m, services


def uninstall_check(m):
    """Refuse unless every file is still exactly what install wrote."""
    for c in m["changes"]:
        now = file_sha256(c["path"])
        if now != c["sha256_after"]:
            raise Refused("%s was changed after install (sha256 %s, install wrote %s); "
                          "restore or remove it by hand, nothing was changed" % (
                              c["path"], now and now[:12], c["sha256_after"][:12]))


def uninstall_apply(t, m):
    """Restore every file from its backup (or remove what install created); pip uninstall the
    package if install put it there. Returns the services to restart."""
    services = []
    for c in reversed(m["changes"]):
        for s in c["services"]:
            if s not in services:
                services.append(s)
        if c["action"] == "modify":
            shutil.copy2(c["backup"], c["path"])
            log("restored %s" % c["path"])
        else:
            os.unlink(c["path"])
            cache = os.path.join(os.path.dirname(c["path"]), "__pycache__")
            stem = os.path.splitext(os.path.basename(c["path"]))[0] + "."
            if os.path.isdir(cache):
                for n in os.listdir(cache):
                    if n.startswith(stem):
                        os.unlink(os.path.join(cache, n))
            for d in c.get("created_dirs", []):   # deepest first
                sub = os.path.join(d, "__pycache__")
                if os.path.isdir(sub) and not os.listdir(sub):
                    os.rmdir(sub)
                if os.path.isdir(d) and not os.listdir(d):
                    os.rmdir(d)
            log("removed %s" % c["path"])
    pkg = m.get("package") or {}
    if pkg.get("installed_by_us"):
        r = _pip(t, ["uninstall", "-y", PACKAGE])
        if r.returncode != 0:
            raise Failed("pip uninstall failed: %s" % r.stderr.strip()[-1500:])
        log("pip uninstalled %s from %s" % (PACKAGE, t.python))
        services += [s for s in ("nova-api", "nova-compute") if s not in services]
    return services


def forget(t, m):
    """Remove the manifest and the backups (after a complete uninstall)."""
    for c in m["changes"]:
        if c.get("backup") and os.path.exists(c["backup"]):
            os.unlink(c["backup"])
    os.unlink(t.manifest_path)
    for d in (os.path.join(t.backup_dir, "files"), t.backup_dir):
        if os.path.isdir(d) and not os.listdir(d):
            os.rmdir(d)


# --- restart and verify --------------------------------------------------------------------------
def restart(t, services, opts):
    services = [s for s in ("nova-api", "nova-compute", "horizon") if s in services]
    if not services:
        return None
    if opts.get("no_restart"):
        log("not restarting %s (--no-restart): do it yourself" % " ".join(services))
        return None
    if "horizon" in services and not opts.get("restart_hook") and not t.horizon_units:
        services.remove("horizon")
        log("no Horizon service here to restart; restart your Horizon to see the panel")
    argv = t.restart_cmd(services) if services else None
    if not argv:
        return None
    since = utcnow()
    log("restarting %s: %s%s" % (" ".join(services), " ".join(shlex.quote(a) for a in argv),
                                 " (in %s)" % t.restart_cwd if t.restart_cwd != "/" else ""))
    r = subprocess.run(argv, cwd=t.restart_cwd, timeout=opts.get("timeout", 300))
    if r.returncode != 0:
        raise Failed("restart command exited %d: %s" % (r.returncode, " ".join(argv)))
    return since if "nova-compute" in services else None


def verify(t, api, want, compute_since, timeout):
    """Wait for os-cloudlet to be listed (want=True) or gone, and nova-compute up again."""
    wait(lambda: (EXTENSION_ALIAS in api.extensions()) == want, timeout,
         "%s to be %s GET /extensions" % (EXTENSION_ALIAS, "listed by" if want else "gone from"))
    log("GET /extensions %s %s" % ("lists" if want else "does not list", EXTENSION_ALIAS))
    host = t.compute_host()
    if compute_since:
        def up():
            return any(s.get("host") == host and s.get("state") == "up" and
                       (s.get("updated_at") or "") >= compute_since
                       for s in api.compute_services())
        wait(up, timeout, "nova-compute on %s to report up after its restart" % host, 2.0)
        log("nova-compute on %s is up" % host)


# --- the agent's commands ------------------------------------------------------------------------
def agent_probe(opts):
    """The checks of install (read-only; refuses like install) and what the target has."""
    t = Target(opts)
    f = t.probe()
    if opts.get("check"):
        check_target(t)
    return {"layout": t.layout, "python": t.python, "package": f["package"], "nova": f["nova"],
            "horizon": f["horizon"]}


def agent_install(opts):
    t = Target(opts)
    log("target: %s" % t.describe())
    m = load_manifest(t)
    if m:
        uninstall_check(m)   # files we wrote must still be ours before we add to the record
    api = check_target(t)
    log("checks passed: nova %s, horizon %s, libvirt %s, nova-compute up" % (
        t.probe()["nova"], t.probe()["horizon"] or "(none)", t.libvirt_uri()))
    plan = install_plan(t, opts)
    if not plan:
        log("nothing to change: OpenStack++ is installed (%s)" % (
            t.manifest_path if m else "configured before us, no manifest"))
        verify(t, api, True, None, opts.get("timeout", 300))
        return EXIT_OK
    for step in plan:
        log("plan: %s %s" % (step["action"], step.get("path") or step.get("package")))
    m, services = apply_plan(t, plan, m)
    since = restart(t, services, opts)
    if not opts.get("no_restart"):
        verify(t, api, True, since, opts.get("timeout", 300))
    log("installed; manifest %s (undo: fab uninstall)" % t.manifest_path)
    return EXIT_OK


def agent_uninstall(opts):
    t = Target(opts)
    m = load_manifest(t)
    if not m:
        log("nothing to uninstall: no manifest at %s" % t.manifest_path)
        return EXIT_OK
    uninstall_check(m)
    api = None if opts.get("no_restart") else Api(t.probe()["clouds"], t.cloud).login()
    services = uninstall_apply(t, m)
    forget(t, m)
    since = restart(t, services, opts)
    if not opts.get("no_restart"):
        verify(t, api, False, since, opts.get("timeout", 300))
    log("uninstalled: every file is as before install")
    return EXIT_OK


def agent_main(argv):
    cmd, opts = argv[0], json.loads(argv[1]) if len(argv) > 1 else {}
    for k in ("shim_source", "horizon_enabled"):
        if opts.get(k + "_b64"):
            opts[k] = base64.b64decode(opts.pop(k + "_b64")).decode()
    try:
        if cmd == "probe":
            print(json.dumps(agent_probe(opts)))
            return EXIT_OK
        return {"install": agent_install, "uninstall": agent_uninstall}[cmd](opts)
    except Refused as e:
        print("openstackpp: refused: %s" % e, file=sys.stderr, flush=True)
        return EXIT_REFUSED
    except Failed as e:
        print("openstackpp: failed: %s" % e, file=sys.stderr, flush=True)
        return EXIT_FAILED


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "agent":
    sys.exit(agent_main(sys.argv[2:]))


# --- the Fabric tasks ----------------------------------------------------------------------------
try:
    from fabric import Connection, task
    from invoke.exceptions import Exit
except ImportError:  # on the target, as the agent
    task = None

OPTION_HELP = {
    "layout": "auto (default), embedded, devstack or packages",
    "state_dir": "state directory of the embedded stack (python -m stack); implies embedded",
    "python": "the target's OpenStack python (default: nova-compute's interpreter)",
    "backup_dir": "where the manifest and backups live on the target (default %s)"
                  % DEFAULT_BACKUP_DIR,
    "libvirt_uri": "libvirt URI to check (default: nova's [libvirt] connection_uri or %s)"
                   % DEFAULT_LIBVIRT_URI,
    "cloud": "cloud in clouds.yaml with admin credentials (default per layout)",
    "clouds_yaml": "clouds.yaml on the target (default per layout)",
    "horizon": "auto (install the panel's enabled file if Horizon is there) or skip",
    "restart_hook": "shell command restarting services; gets them as $@ (nova-api, "
                    "nova-compute, horizon)",
    "no_restart": "change files only; restart the services yourself",
    "timeout": "seconds to wait for the API after a restart (default 300)",
    "stack_name": "embedded stack: its name (a or b; default from the state dir)",
    "handoff_host": "install only: nova.conf [cloudlet] handoff_host (embedded: the stack's "
                    "link address)",
    "cache_dir": "install only: nova.conf [cloudlet] cache_dir",
    "overlay_url_schemes": "install only: nova.conf [cloudlet] overlay_url_schemes "
                           "(e.g. http,https)",
}


def _local_payload():
    """Contents from this checkout that install puts on the target."""
    sys.path.insert(0, HERE)
    from cloudlet_compute.nova import shim
    with open(os.path.join(HERE, "dashboard_panel", "enabled", HORIZON_ENABLED_NAME), "rb") as f:
        enabled = f.read()
    return {"shim_source_b64": base64.b64encode(shim.SHIM_SOURCE.encode()).decode(),
            "horizon_enabled_b64": base64.b64encode(enabled).decode()}


WHEEL_SOURCES = ("setup.py", "README.md", "cloudlet_compute", "cloudlet_api", "dashboard_panel",
                 "client")


def build_wheel(dest):
    """``pip wheel --no-deps`` of this checkout's package into ``dest`` (built from a copy, so
    the checkout gets no build/ directory); return the wheel's path."""
    src = os.path.join(dest, "src")
    os.makedirs(src)
    for name in WHEEL_SOURCES:
        path = os.path.join(HERE, name)
        if os.path.isdir(path):
            shutil.copytree(path, os.path.join(src, name),
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif os.path.exists(path):
            shutil.copy2(path, src)
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", dest, src],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise Failed("pip wheel failed: %s" % r.stderr.strip()[-1500:])
    wheels = [n for n in os.listdir(dest) if n.startswith(PACKAGE) and n.endswith(".whl")]
    return os.path.join(dest, sorted(wheels)[-1])


class _Side:
    """Run commands and copy files on the target: over SSH (a Connection) or here."""

    def __init__(self, c):
        self.c = c
        self.remote = isinstance(c, Connection)
        self.prefix = ""
        if self.remote and c.run("id -u", hide=True).stdout.strip() != "0":
            self.prefix = "sudo -n "

    def run(self, cmd, **kw):
        return self.c.run(self.prefix + cmd, warn=True, **kw)

    def put(self, local, remote):
        if self.remote:
            self.c.put(local, remote)
        else:
            shutil.copyfile(local, remote)


def _opts(kw):
    opts = {k: v for k, v in kw.items() if k != "c" and v not in (None, "", False)}
    if "timeout" in opts:
        opts["timeout"] = int(opts["timeout"])
    return opts


def _run_agent(c, cmd, opts):
    side = _Side(c)
    tmp = side.run("mktemp -d /tmp/openstackpp-fab.XXXXXX", hide=True).stdout.strip()
    if not tmp:
        raise Exit("cannot make a temporary directory on the target\n", code=EXIT_FAILED)
    agent = tmp + "/agent.py"
    try:
        side.put(os.path.abspath(__file__), agent)
        if cmd == "install":
            opts.update(_local_payload())
            # The checks first: a refusal must not wait for a wheel to be built.
            r = side.run("python3 %s agent probe %s" % (agent, shlex.quote(json.dumps(
                dict(opts, check=True)))), hide="stdout")
            if r.exited != 0:
                raise Exit(code=r.exited)
            facts = json.loads(r.stdout.strip().splitlines()[-1])
            if not facts["package"]:
                with tempfile.TemporaryDirectory() as d:
                    wheel = build_wheel(d)
                    print("openstackpp: %s is not in %s: copying %s" % (
                        PACKAGE, facts["python"], os.path.basename(wheel)), flush=True)
                    opts["wheel"] = tmp + "/" + os.path.basename(wheel)
                    side.put(wheel, opts["wheel"])
        r = side.run("python3 %s agent %s %s" % (agent, cmd, shlex.quote(json.dumps(opts))),
                     pty=False)
        if r.exited != 0:
            raise Exit(code=r.exited)
    finally:
        side.run("rm -rf %s" % shlex.quote(tmp), hide=True)


def _need_host(c, name):
    if not isinstance(c, Connection):
        raise Exit("fab %s needs a host (-H root@HOST); on this machine use fab local-%s\n"
                   % (name, name), code=EXIT_FAILED)


if task is not None:
    UNINSTALL_HELP = {k: v for k, v in OPTION_HELP.items()
                      if k not in ("handoff_host", "cache_dir", "overlay_url_schemes")}

    @task(help=OPTION_HELP, auto_shortflags=False)
    def install(c, layout="auto", state_dir=None, python=None, backup_dir=None,
                libvirt_uri=None, cloud=None, clouds_yaml=None, horizon="auto",
                restart_hook=None, no_restart=False, timeout=300, stack_name=None,
                handoff_host=None, cache_dir=None, overlay_url_schemes=None):
        """Put OpenStack++ onto the OpenStack of each -H host (see doc/install.md)."""
        _need_host(c, "install")
        _run_agent(c, "install", _opts(locals()))

    @task(help=UNINSTALL_HELP, auto_shortflags=False)
    def uninstall(c, layout="auto", state_dir=None, python=None, backup_dir=None,
                  libvirt_uri=None, cloud=None, clouds_yaml=None, horizon="auto",
                  restart_hook=None, no_restart=False, timeout=300, stack_name=None):
        """Restore every file install changed on each -H host, from the manifest."""
        _need_host(c, "uninstall")
        _run_agent(c, "uninstall", _opts(locals()))

    @task(help=OPTION_HELP, auto_shortflags=False)
    def local_install(c, layout="auto", state_dir=None, python=None, backup_dir=None,
                      libvirt_uri=None, cloud=None, clouds_yaml=None, horizon="auto",
                      restart_hook=None, no_restart=False, timeout=300, stack_name=None,
                      handoff_host=None, cache_dir=None, overlay_url_schemes=None):
        """install on this machine (no SSH)."""
        _run_agent(c, "install", _opts(locals()))

    @task(help=UNINSTALL_HELP, auto_shortflags=False)
    def local_uninstall(c, layout="auto", state_dir=None, python=None, backup_dir=None,
                        libvirt_uri=None, cloud=None, clouds_yaml=None, horizon="auto",
                        restart_hook=None, no_restart=False, timeout=300, stack_name=None):
        """uninstall on this machine (no SSH)."""
        _run_agent(c, "uninstall", _opts(locals()))
