"""Put OpenStack++ onto a running OpenStack, and take it off again (Fabric 3).

    fab -H root@HOST install [options]       # over SSH
    fab local-install [options]              # on this machine
    fab -H root@HOST uninstall [options]     # / fab local-uninstall

Options (all tasks): --layout auto|embedded|devstack|packages, --state-dir DIR (embedded stack),
--python PATH (the target's OpenStack python), --backup-dir DIR (default
/var/lib/openstackpp/install), --libvirt-uri URI, --cloud NAME, --clouds-yaml PATH,
--horizon auto|skip, --restart-hook CMD, --no-restart, --timeout SECONDS.
See doc/install.md.

This file holds the *tasks*: thin wrappers that build our wheel when the target lacks the
package, copy it and the agent over, and run the agent. The *agent* (the checks, the plan,
applying it with backups and a manifest, uninstalling, restarting services and checking the API)
is the stdlib-only package scripts/install_agent/. A task ships it as one zipapp file to a
temporary directory on the target and runs it there with the target's /usr/bin/python3
(``python3 agent.pyz install '<json options>'``).

Exit codes of the agent (and so of ``fab``): 0 done (or nothing to do), 2 refused (nothing
changed), 1 failed.
"""

import base64
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import zipapp

from fabric import Connection, task
from invoke.exceptions import Exit

from scripts.install_agent.constants import DEFAULT_BACKUP_DIR, DEFAULT_LIBVIRT_URI, \
    EXIT_FAILED, HORIZON_ENABLED_NAME, PACKAGE
from scripts.install_agent.report import Failed

HERE = os.path.dirname(os.path.abspath(__file__))
AGENT_MAIN = "import sys\nfrom install_agent.agent import main\nsys.exit(main(sys.argv[1:]))\n"

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


def build_agent(dest):
    """The agent as one file, ``dest/agent.pyz``: a zipapp of scripts/install_agent/ (its
    sources) whose ``__main__`` runs it as ``python3 agent.pyz COMMAND '<json>'``."""
    src = os.path.join(dest, "agent")
    shutil.copytree(os.path.join(HERE, "scripts", "install_agent"), os.path.join(
        src, "install_agent"), ignore=shutil.ignore_patterns("__pycache__"))
    with open(os.path.join(src, "__main__.py"), "w") as f:
        f.write(AGENT_MAIN)
    path = os.path.join(dest, "agent.pyz")
    zipapp.create_archive(src, path)
    return path


def _run_agent(c, cmd, opts):
    side = _Side(c)
    tmp = side.run("mktemp -d /tmp/openstackpp-fab.XXXXXX", hide=True).stdout.strip()
    if not tmp:
        raise Exit("cannot make a temporary directory on the target\n", code=EXIT_FAILED)
    agent = tmp + "/agent.pyz"
    try:
        with tempfile.TemporaryDirectory() as d:
            side.put(build_agent(d), agent)
        if cmd == "install":
            opts.update(_local_payload())
            # The checks first: a refusal must not wait for a wheel to be built.
            r = side.run("python3 %s probe %s" % (agent, shlex.quote(json.dumps(
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
        r = side.run("python3 %s %s %s" % (agent, cmd, shlex.quote(json.dumps(opts))),
                     pty=False)
        if r.exited != 0:
            raise Exit(code=r.exited)
    finally:
        side.run("rm -rf %s" % shlex.quote(tmp), hide=True)


def _need_host(c, name):
    if not isinstance(c, Connection):
        raise Exit("fab %s needs a host (-H root@HOST); on this machine use fab local-%s\n"
                   % (name, name), code=EXIT_FAILED)


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
