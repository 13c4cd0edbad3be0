"""The agent's commands (probe, install, uninstall), restarting services and verifying the API.

    python3 agent.pyz probe|install|uninstall '<json options>'

Exit codes: 0 done (or nothing to do), 2 refused (nothing changed), 1 failed."""

import base64
import json
import shlex
import subprocess
import sys

from .checks import Api, check_target, wait
from .constants import EXIT_FAILED, EXIT_OK, EXIT_REFUSED, EXTENSION_ALIAS
from .plan import apply_plan, forget, install_plan, load_manifest, uninstall_apply, \
    uninstall_check, utcnow
from .report import Failed, Refused, log
from .target import find_target


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


def probe(opts):
    """The checks of install (read-only; refuses like install) and what the target has."""
    t = find_target(opts)
    f = t.probe()
    if opts.get("check"):
        check_target(t)
    return {"layout": t.layout, "python": t.python, "package": f["package"], "nova": f["nova"],
            "horizon": f["horizon"]}


def install(opts):
    t = find_target(opts)
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


def uninstall(opts):
    t = find_target(opts)
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


def main(argv):
    """Run the command ``argv[0]`` with the JSON options ``argv[1]``; return the exit code."""
    cmd, opts = argv[0], json.loads(argv[1]) if len(argv) > 1 else {}
    for k in ("shim_source", "horizon_enabled"):
        if opts.get(k + "_b64"):
            opts[k] = base64.b64decode(opts.pop(k + "_b64")).decode()
    try:
        if cmd == "probe":
            print(json.dumps(probe(opts)))
            return EXIT_OK
        return {"install": install, "uninstall": uninstall}[cmd](opts)
    except Refused as e:
        print("openstackpp: refused: %s" % e, file=sys.stderr, flush=True)
        return EXIT_REFUSED
    except Failed as e:
        print("openstackpp: failed: %s" % e, file=sys.stderr, flush=True)
        return EXIT_FAILED

